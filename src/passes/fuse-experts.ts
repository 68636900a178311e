// Expert fusion: the E experts of a layer read the same input, so they run as one wide
// MatMul (and batched ones for later unit layers), and the weighted sum over experts
// becomes one batched contraction; task streams that share experts run them together.

import { invariant } from "../core/diagnostics.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInts, normAxis } from "../ir/infer.ts";
import { sameType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Chain, buildFusedChains, chainSignature, commonScope, incompatibility, matchChain, scalarIndex, weightPrefix } from "./fusion-chains.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** One term w[:, e] · y_e of a mixture. */
interface MixtureTerm {
  y: Value;
  expert: number;
  mul: Node;
}

/** h' = Σ_e w[:, e] · y_e as the lowering writes it: Slice(w) per expert, Mul, a tree of Adds. */
interface Mixture {
  out: Value;
  w: Value;
  /** Sorted by expert index. */
  terms: MixtureTerm[];
  /** The Add and Mul nodes of the sum (not the Slices, which may be shared). */
  nodes: Node[];
  /** The final Add's scope (`task_layers.0.ctr.mix`). */
  scope: string;
}

type Match<T> = { ok: true; value: T } | { ok: false; reason: string };

/** `v` = Slice(w, [e], [e+1], axes=[1]) of a [B, E] w: returns w and e. */
function matchWeightSlice(v: Value): { w: Value; expert: number } | null {
  const s = v.producer;
  if (!s || s.op !== "Slice") return null;
  const w = s.inputs[0]!;
  if (w.type.shape.length !== 2 || w.type.dtype !== "float32") return null;
  const axes = attrInts(s.attrs, "axes");
  const starts = attrInts(s.attrs, "starts");
  const ends = attrInts(s.attrs, "ends");
  const E = w.type.shape[1];
  if (axes.length !== 1 || typeof E !== "number" || normAxis(axes[0]!, 2) !== 1) return null;
  const e = starts[0]! < 0 ? starts[0]! + E : starts[0]!;
  const end = ends[0]! < 0 ? ends[0]! + E : ends[0]!;
  if (!(e >= 0 && e < E && end === e + 1)) return null;
  return { w, expert: e };
}

/** Mul(y, Slice(w, e)) or Mul(Slice(w, e), y) with y [B, D] and the result of y's type. */
function matchTerm(v: Value): (MixtureTerm & { w: Value }) | null {
  const m = v.producer;
  if (!m || m.op !== "Mul") return null;
  for (const i of [1, 0]) {
    const s = matchWeightSlice(m.inputs[i]!);
    const y = m.inputs[1 - i]!;
    if (s && y !== m.inputs[i] && y.type.shape.length === 2 && sameType(y.type, v.type)) return { y, expert: s.expert, mul: m, w: s.w };
  }
  return null;
}

/** The mixture whose final Add is `root`: its Add tree flattened, every leaf a term over one w. */
function matchMixture(graph: Graph, root: Node): Match<Mixture> {
  const single = (v: Value) => v.users.size === 1 && !graph.isGraphOutput(v);
  const nodes: Node[] = [];
  const leaves: Value[] = [];
  const stack = [root];
  while (stack.length) {
    const a = stack.pop()!;
    nodes.push(a);
    for (const v of a.inputs) {
      if (v.producer?.op === "Add" && single(v)) stack.push(v.producer);
      else leaves.push(v);
    }
  }
  const terms: MixtureTerm[] = [];
  let w: Value | null = null;
  for (const leaf of leaves) {
    const t = leaf.producer && single(leaf) ? matchTerm(leaf) : null;
    if (!t) return { ok: false, reason: "not-a-mixture" };
    if (w && t.w !== w) return { ok: false, reason: "mixed-weights" };
    w = t.w;
    terms.push({ y: t.y, expert: t.expert, mul: t.mul });
    nodes.push(t.mul);
  }
  terms.sort((a, b) => a.expert - b.expert);
  if (terms.some((t, i) => i > 0 && t.expert === terms[i - 1]!.expert)) return { ok: false, reason: "repeated-expert" };
  return { ok: true, value: { out: root.outputs[0]!, w: w!, terms, nodes, scope: root.scope || `${root.outputs[0]!.name}.fused` } };
}

/** Every mixture of the graph, last first; each node belongs to at most one. */
function findMixtures(graph: Graph, ctx: PassContext): Mixture[] {
  const claimed = new Set<Node>();
  const found: Mixture[] = [];
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i]!;
    if (claimed.has(n)) continue;
    if (n.op === "Mul" && matchTerm(n.outputs[0]!)) {
      // a lone term: a one-expert layer, nothing to fuse
      bump(ctx, "skipped:single-expert");
      continue;
    }
    if (n.op !== "Add") continue;
    const m = matchMixture(graph, n);
    if (!m.ok) continue; // most Adds are not mixtures: not worth a counter
    for (const x of m.value.nodes) claimed.add(x);
    found.push(m.value);
  }
  return found;
}

/** A mixture with the expert chains its terms read. */
interface MixtureChains {
  mixture: Mixture;
  chains: Chain[];
  /** Same key ⇒ same experts (same constants, same ops), possibly on another stream. */
  key: string;
}

function matchMixtureChains(graph: Graph, m: Mixture): Match<MixtureChains> {
  const chains: Chain[] = [];
  for (const t of m.terms) {
    const c = matchChain(graph, t.y);
    if (!c.ok) return c;
    chains.push(c.value);
  }
  const why = incompatibility(chains);
  if (why) return { ok: false, reason: why };
  const constants = chains.map((c) =>
    c.layers.map((l) => [l.weight.id, ...l.tail.map((t) => t.constant?.id ?? "u")].join(",")).join(";"),
  );
  const key = `${chainSignature(chains[0]!)} @ ${m.terms.map((t, i) => `${t.expert}:${constants[i]}`).join(" ")}`;
  return { ok: true, value: { mixture: m, chains, key } };
}

/** `<layer>.experts` from the weights' canonical names, else the chains' common scope. */
function expertsScope(chains: Chain[]): string {
  const prefix = weightPrefix(chains, "experts");
  if (prefix) return prefix;
  const common = commonScope(chains.flatMap((c) => c.nodes.map((n) => n.scope)));
  return common.endsWith(".experts") ? common : `${common || "fused"}.experts`;
}

/**
 * [S, B, F] from S streams [B, F]: Concat of Unsqueeze(·, [0]); or, when the streams are
 * Gather(M, s, axis 0) for s = 0…S−1 of one M (the split output of a previous fused
 * layer), M itself.
 */
function stackStreams(graph: Graph, streams: Value[], scope: string): Value {
  const sources = streams.map((v) => {
    const g = v.producer;
    if (!g || g.op !== "Gather" || (g.attrs["axis"] ?? 0) !== 0) return null;
    const idx = g.inputs[1]!;
    if (!idx.isConstant || idx.type.shape.length !== 0) return null;
    return { M: g.inputs[0]!, index: Number((idx.data!.data as BigInt64Array | Int32Array)[0]) };
  });
  const M = sources[0]?.M;
  if (M && M.type.shape[0] === streams.length && sources.every((s, i) => s && s.M === M && s.index === i)) return M;
  const parts = streams.map((v, s) => graph.op("Unsqueeze", [v], { axes: [0] }, { scope, names: [`${scope}.stream${s}`] }));
  return graph.op("Concat", parts, { axis: 0 }, { scope, names: [`${scope}.streams`] });
}

/**
 * Fuses the experts of each layer and the weighted sum over them:
 *
 *   before (per expert e, per stream):         after (per layer):
 *     %y_e = act(MatMul(%h, %W_e) + %b_e) …      %Y  = Reshape(act(MatMul(%h, %W_cat) + %b_cat), [0, E, H])   [B, E, H]
 *     %w_e = Slice(%w, [e], [e+1], axes=[1])      %w3 = Unsqueeze(%w, [1])                                     [B, 1, E]
 *     %t_e = Mul(%y_e, %w_e)                      %h' = Squeeze(MatMul(%w3, %Y), [1])                          [B, D]
 *     %h'  = ((%t_0 + %t_1) + …)
 *
 * Later unit layers of the experts become one block-diagonal or expert-batched MatMul (see
 * buildFusedChains). Task layers: the T streams of a layer share the experts, so they run
 * once over the streams stacked on a new leading axis ([T, B, F] → [T, B, E, H]), mixed
 * with the stacked weights ([T, B, 1, E]), and each task reads Gather(·, t, axis 0); the
 * next task layer reads the stacked result directly. Where every stream has the same
 * input (the first task layer), the experts run once on [B, F] and only the mixture is
 * stacked. Experts must match structurally (same ops, widths, one shared input, outputs
 * read only by the mixture); anything else is left unfused and counted as `skipped:<reason>`.
 */
export const fuseExperts: Pass = {
  id: "fuse-experts",
  summary: "run a layer's experts as one wide MatMul and mix them with one batched MatMul, task streams stacked",
  run(graph: Graph, ctx: PassContext) {
    const groups = new Map<string, MixtureChains[]>();
    for (const m of findMixtures(graph, ctx).reverse()) {
      const mc = matchMixtureChains(graph, m);
      if (!mc.ok) {
        bump(ctx, `skipped:${mc.reason}`);
        continue;
      }
      const list = groups.get(mc.value.key) ?? [];
      list.push(mc.value);
      groups.set(mc.value.key, list);
    }
    let changed = false;
    // Map iteration follows first insertion, which follows graph order: earlier layers
    // are rewritten first, so a later layer sees their stacked outputs.
    for (const group of groups.values()) {
      const reason = fuseGroup(graph, group, ctx);
      if (reason) bump(ctx, `skipped:${reason}`);
      else changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};

/** Whether any of `values` is computed from a node in `nodes`. */
function reachesAny(values: Value[], nodes: Set<Node>): boolean {
  const seen = new Set<Node>();
  const stack = values.map((v) => v.producer).filter((n): n is Node => n !== null);
  while (stack.length) {
    const n = stack.pop()!;
    if (nodes.has(n)) return true;
    if (seen.has(n)) continue;
    seen.add(n);
    for (const v of n.inputs) if (v.producer) stack.push(v.producer);
  }
  return false;
}

/** Rewrite one group of mixtures over the same experts; returns why not, or null when done. */
function fuseGroup(graph: Graph, group: MixtureChains[], ctx: PassContext): string | null {
  const template = group[0]!.chains;
  // The experts' outputs may be read only by the terms being replaced.
  const terms = new Set(group.flatMap((g) => g.mixture.terms.map((t) => t.mul)));
  for (const g of group)
    for (const c of g.chains) if (graph.isGraphOutput(c.out) || [...c.out.users].some((u) => !terms.has(u))) return "expert-output-escapes";
  // Inputs are read live: an earlier rewrite in this run may have replaced them.
  const inputs = group.map((g) => g.chains[0]!.layers[0]!.matmul.inputs[0]!);
  const streams = [...new Set(inputs)];
  if (streams.length > 1 && streams.length !== group.length) return "stream-layout";
  if (streams.some((s) => !sameType(s.type, streams[0]!.type))) return "stream-types-differ";
  if (group.some((g) => !sameType(g.mixture.w.type, group[0]!.mixture.w.type))) return "weight-types-differ";
  // Equal weights in two layers (constants merged by value) must not stack a layer with its own successor.
  const own = new Set(group.flatMap((g) => [...g.mixture.nodes, ...g.chains.flatMap((c) => c.nodes)]));
  if (reachesAny(streams, own)) return "streams-depend-on-each-other";

  const scope = expertsScope(template);
  const mixScope = scope.replace(/\.experts$/, ".mix");
  const stacked = streams.length > 1;
  const x = stacked ? stackStreams(graph, streams, scope) : streams[0]!;
  const Y = buildFusedChains(graph, x, template, { scope, name: scope }); // [(S,) B, K, D]

  // Mixing weights [(n,) B, 1, E], one row block per mixture in stream order.
  const ws = group.map((g) => g.mixture.w);
  let W: Value;
  if (group.length === 1) W = graph.op("Unsqueeze", [ws[0]!], { axes: [1] }, { scope: mixScope, names: [`${mixScope}.w`] });
  else {
    const parts = ws.map((w, i) => graph.op("Unsqueeze", [w], { axes: [0, 2] }, { scope: mixScope, names: [`${mixScope}.w${i}`] }));
    W = graph.op("Concat", parts, { axis: 0 }, { scope: mixScope, names: [`${mixScope}.w`] });
  }
  // Experts a pruning pass removed are absent from the sum: keep their weights' columns out.
  const experts = group[0]!.mixture.terms.map((t) => t.expert);
  const E = ws[0]!.type.shape[1] as number;
  if (experts.length !== E || experts.some((e, i) => e !== i)) {
    const idx = graph.addConstant(`${mixScope}.experts`, { dtype: "int64", shape: [experts.length], data: BigInt64Array.from(experts, BigInt) });
    W = graph.op("Gather", [W, idx], { axis: -1 }, { scope: mixScope, names: [`${mixScope}.w_kept`] });
  }
  const mixed = graph.op("MatMul", [W, Y], {}, { scope: mixScope, names: [`${mixScope}.weighted`] }); // [(n,) B, 1, D]
  const out = graph.op("Squeeze", [mixed], { axes: [-2] }, { scope: mixScope, names: [`${mixScope}.mixed`] });

  group.forEach((g, i) => {
    const old = g.mixture.out;
    // each stream's result is named after its old mixture's scope (`task_layers.0.ctr.mix`)
    const mine =
      group.length === 1
        ? out
        : graph.op("Gather", [out, scalarIndex(graph, i)], { axis: 0 }, { scope: mixScope, names: [g.mixture.scope] });
    invariant(sameType(mine.type, old.type), () => `fuse-experts: ${mixScope} gives ${mine.type.shape}, mixture had ${old.type.shape}`);
    graph.replaceAllUsesWith(old, mine);
  });
  bump(ctx, "layers-fused");
  bump(ctx, "experts-fused", template.length);
  if (group.length > 1) bump(ctx, "streams-mixed-together", group.length);
  if (stacked) bump(ctx, "streams-stacked", streams.length);
  return null;
}
