// Calibrated top-k pruning (opt-in): remove the experts that calibration rows never selected
// (PassOptions.prunedExperts, recorded by calibrate.ts). Exact on rows like the calibration
// rows; elsewhere a row that would have selected a pruned expert gets the next-ranked one.

import { userError } from "../core/diagnostics.ts";
import type { Graph, Node } from "../ir/graph.ts";
import { attrInt } from "../ir/infer.ts";
import { MASK_FILL } from "../lower/select.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Mixture, findMixtures, placedColumns, removeTerms, selectionCone } from "./mixture.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** The mixture of each layer path (several streams never share one: each has its own w). */
function mixturesByPath(g: Graph): Map<string, Mixture> {
  const out = new Map<string, Mixture>();
  for (const m of findMixtures(g).mixtures) out.set(m.path, m);
  return out;
}

/**
 * Prune `pruned` from the layer of mixture `m`:
 *   rankings   TopK(score) → TopK(Where(keep, score, ±inf))     the worst score: a pruned expert
 *                                                               is chosen only when k exceeds the kept count
 *   weights    Softmax(L)  → Softmax(Where(keep, L, MASK_FILL))  w = 0 exactly for pruned experts
 *   mix        the pruned experts' terms are removed             (their subgraphs die)
 * On a row whose selection had no pruned expert, each ranking keeps its top k (the kept
 * experts' scores and their index order are unchanged), so w and the output are unchanged.
 */
function pruneLayer(g: Graph, m: Mixture, pruned: number[], ctx: PassContext): void {
  // After prune-static the weights are w = MatMul(w', S) over the experts a `fixed` policy can select.
  const placed = placedColumns(m.w);
  const w = placed ? placed.inner : m.w;
  const column = (e: number) => (placed ? placed.columns.indexOf(e) : e);
  const E = w.type.shape[1] as number;
  const keep = new Uint8Array(E).fill(1);
  for (const e of pruned) if (column(e) >= 0) keep[column(e)] = 0;
  const sm = w.producer;
  if (!sm || sm.op !== "Softmax")
    throw userError("AESM1903", m.path, `cannot prune calibrated experts: the layer's weights are not a softmax (got ${sm?.op ?? "an input"})`);
  const scope = sm.scope;
  const keepMask = g.addConstant(`${scope}.calibrated_keep`, { dtype: "bool", shape: [E], data: keep });
  const tops = selectionCone(w).filter((n: Node) => n.op === "TopK" && n.inputs[0]!.type.shape[1] === E);
  for (const t of tops) {
    const worst = g.addConstant(`${scope}.rank_last`, { dtype: "float32", shape: [], data: new Float32Array([attrInt(t.attrs, "largest", 1) ? -Infinity : Infinity]) });
    const score = g.op("Where", [keepMask, t.inputs[0]!, worst], {}, { scope: t.scope, names: [`${t.inputs[0]!.name}.calibrated`] });
    g.setNodeInput(t, 0, score);
  }
  const fill = g.addConstant(`${scope}.calibrated_fill`, { dtype: "float32", shape: [], data: new Float32Array([MASK_FILL]) });
  const logits = g.op("Where", [keepMask, sm.inputs[0]!, fill], {}, { scope, names: [`${sm.inputs[0]!.name}.calibrated`] });
  g.setNodeInput(sm, 0, logits);
  const removed = removeTerms(g, m, new Set(pruned));
  bump(ctx, "experts-removed", removed);
  bump(ctx, `pruned ${m.path}`, removed);
}

export const pruneCalibrated: Pass = {
  id: "prune-calibrated",
  summary: "remove experts that calibration rows never selected (opt-in: PassOptions.prunedExperts)",
  run(graph: Graph, ctx) {
    const plan = ctx.options.prunedExperts;
    if (!plan) return { graph, changed: false };
    const byPath = mixturesByPath(graph);
    let changed = false;
    for (const [path, experts] of Object.entries(plan)) {
      if (experts.length === 0) continue;
      const m = byPath.get(path);
      if (!m) throw userError("AESM1902", path, `prunedExperts names a layer this graph does not have (layers: ${[...byPath.keys()].join(", ")})`);
      const E = m.w.type.shape[1] as number;
      const bad = experts.filter((e) => !Number.isInteger(e) || e < 0 || e >= E);
      if (bad.length) throw userError("AESM1902", path, `prunedExperts names experts [${bad.join(", ")}] outside [0, ${E})`);
      const present = new Set(m.terms.map((t) => t.expert));
      const pruned = [...new Set(experts)].filter((e) => present.has(e)).sort((a, b) => a - b);
      if (pruned.length === 0) continue;
      if (pruned.length === present.size) throw userError("AESM1902", path, "prunedExperts would remove every expert of the layer");
      pruneLayer(graph, m, pruned, ctx);
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
