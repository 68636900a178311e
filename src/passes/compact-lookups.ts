// Embedding lookups with out-of-range ids (MODEL.md §1) in two nodes instead of seven:
// the table gets one zero row at the end, and the id is clamped onto it.
//
//   before (lower/features.ts)                        after
//     %valid = And(id >= 0, id < V)                    %idx = Clip(%id, −1, V)            [B]
//     %rows  = Gather(%T, Where(%valid, %id, 0))        %emb = Gather(%T_pad, %idx)        [B, d]
//     %emb   = Where(Unsqueeze(%valid, [1]), %rows, 0)  %T_pad = [%T; 0]                   [V + 1, d]
//
// Exact: an id in [0, V) reads its row; an id ≥ V reads row V and a negative one row −1
// (= V, Gather wraps negative indices), the zero row, +0.0 like the Where it replaces.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { scalarOf } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

interface Lookup {
  /** The final Where: its output is replaced. */
  emb: Value;
  id: Value;
  table: Value;
  vocab: number;
}

function producedBy(v: Value, op: string): Node | null {
  return v.producer && v.producer.op === op ? v.producer : null;
}

/** A scalar constant equal to `x` (+0.0 for 0: −0.0 would change the sign of the zero rows). */
function isScalar(v: Value, x: number): boolean {
  const s = scalarOf(v);
  return s !== null && Object.is(s, x);
}

/** `emb` = Where(Unsqueeze(valid, [1]), Gather(T, Where(valid, id, 0)), 0.0), valid = id ∈ [0, V). */
function matchLookup(emb: Node): Lookup | null {
  if (emb.op !== "Where" || emb.outputs[0]!.type.dtype !== "float32") return null;
  const [cond, rowsV, zero] = emb.inputs as [Value, Value, Value];
  if (!isScalar(zero, 0)) return null;
  const unsq = producedBy(cond, "Unsqueeze");
  const rows = producedBy(rowsV, "Gather");
  if (!unsq || !rows || attrInt(rows.attrs, "axis", 0) !== 0 || attrInts(unsq.attrs, "axes").join() !== "1") return null;
  const valid = unsq.inputs[0]!;
  const [table, safeV] = rows.inputs as [Value, Value];
  const safe = producedBy(safeV, "Where");
  if (!table.isConstant || table.type.shape.length !== 2 || !safe || safe.inputs[0] !== valid || !isScalar(safe.inputs[2]!, 0)) return null;
  const id = safe.inputs[1]!;
  if (id.type.dtype !== "int64" || id.type.shape.length !== 1) return null;
  const and = producedBy(valid, "And");
  if (!and) return null;
  const vocab = table.type.shape[0] as number;
  let lower = false;
  let upper = false;
  for (const v of and.inputs) {
    const n = v.producer;
    if (n?.op === "GreaterOrEqual" && n.inputs[0] === id && isScalar(n.inputs[1]!, 0)) lower = true;
    if (n?.op === "Less" && n.inputs[0] === id && isScalar(n.inputs[1]!, vocab)) upper = true;
  }
  return lower && upper ? { emb: emb.outputs[0]!, id, table, vocab } : null;
}

/** [T; 0]: the table with one zero row appended, built once per table. */
function paddedTable(graph: Graph, table: Value, cache: Map<Value, Value>): Value {
  let padded = cache.get(table);
  if (!padded) {
    const [V, d] = table.type.shape as [number, number];
    const data = new Float32Array((V + 1) * d);
    data.set(table.data!.data as Float32Array);
    const t: Tensor = { dtype: "float32", shape: [V + 1, d], data };
    padded = graph.addConstant(`${table.name}.padded`, t);
    cache.set(table, padded);
  }
  return padded;
}

export const compactLookups: Pass = {
  id: "compact-lookups",
  summary: "embedding lookups with out-of-range ids as Clip and one Gather into the table plus a zero row",
  run(graph: Graph, ctx) {
    const cache = new Map<Value, Value>();
    let changed = false;
    for (const n of [...graph.nodes]) {
      const m = matchLookup(n);
      if (!m || m.table.type.dtype !== "float32") continue;
      const scope = n.scope;
      const i64 = (x: number) => graph.addConstant(`${scope}.clamp_${x < 0 ? "neg" : ""}${Math.abs(x)}`, { dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(x)) });
      const idx = graph.op("Clip", [m.id, i64(-1), i64(m.vocab)], {}, { scope, names: [`${scope}.row`] });
      const emb = graph.op("Gather", [paddedTable(graph, m.table, cache), idx], { axis: 0 }, { scope, names: [`${scope}.lookup`] });
      graph.replaceAllUsesWith(m.emb, emb);
      bump(ctx, "lookups-compacted");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
