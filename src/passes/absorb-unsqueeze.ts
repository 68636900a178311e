// An Unsqueeze after a chain that removed that very axis is undone where the axis went:
//
//   before                                              after
//     %z  = ReduceSum(%x, [1], keepdims=0)  [B, E]        %z' = ReduceSum(%x, [1], keepdims=1)  [B, 1, E]
//     %m  = ReduceMax(%y, [1], keepdims=0)  [B, E]        %m' = ReduceMax(%y, [1], keepdims=1)  [B, 1, E]
//     %w  = Softmax(Add(%z, %m), axis=1)    [B, E]        %w' = Softmax(Add(%z', %m'), axis=2)  [B, 1, E]
//     %w3 = Unsqueeze(%w, [1])              [B, 1, E]     (%w3 is %w')
//
// The selection's mixing weights are unsqueezed for the mixture's MatMul; the reductions that
// made them (Zi, the mask) can keep the axis instead. Through elementwise ops (operands of the
// same rank, or scalars), Softmax/LogSoftmax (axis renumbered) and Gather of one index on that
// axis (the index becomes a 1-element list). Every value of the chain must be read only by the
// next one; a graph output among them (a select: output) reads a Squeeze of the new value.
// Same numbers, bit for bit: only shapes change.

import type { Graph, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { ELEMENTWISE_OPS, type OpKind } from "../ir/ops.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

const ELEMENTWISE = ELEMENTWISE_OPS;
const REDUCE = new Set<OpKind>(["ReduceSum", "ReduceMax", "ReduceMin", "ReduceMean", "ReduceLogSumExp"]);

/** Whether Unsqueeze(v, [a]) can be had without an Unsqueeze (see the header); below the root, every value is read once. */
function absorbable(g: Graph, v: Value, a: number, root: boolean): boolean {
  if (v.isConstant) return true;
  const p = v.producer;
  if (!p || p.outputs.length !== 1) return false;
  if (!root && (v.users.size !== 1 || g.isGraphOutput(v))) return false;
  const rank = v.type.shape.length;
  if (REDUCE.has(p.op)) {
    const axes = attrInts(p.attrs, "axes");
    const inRank = p.inputs[0]!.type.shape.length;
    return attrInt(p.attrs, "keepdims", 1) === 0 && axes.length === 1 && normAxis(axes[0]!, inRank) === a;
  }
  if (p.op === "Softmax" || p.op === "LogSoftmax") return absorbable(g, p.inputs[0]!, a, false);
  if (p.op === "Gather") {
    const idx = p.inputs[1]!;
    return normAxis(attrInt(p.attrs, "axis", 0), p.inputs[0]!.type.shape.length) === a && idx.isConstant && idx.type.shape.length === 0;
  }
  if (ELEMENTWISE.has(p.op)) return p.inputs.every((x) => x.type.shape.length === 0 || (x.type.shape.length === rank && absorbable(g, x, a, false)));
  return false;
}

/** Build the unsqueezed value of an absorbable `v`. */
function absorb(g: Graph, v: Value, a: number): Value {
  if (v.isConstant) {
    if (v.type.shape.length === 0) return v;
    const shape = [...(v.type.shape as number[])];
    shape.splice(a, 0, 1);
    return g.addConstant(`${v.name}.unsqueezed`, { ...v.data!, shape });
  }
  const p = v.producer!;
  const opts = { scope: p.scope, names: [`${v.name}.kept_axis`] };
  if (REDUCE.has(p.op)) return g.op(p.op, [p.inputs[0]!], { ...p.attrs, keepdims: 1 }, opts);
  if (p.op === "Softmax" || p.op === "LogSoftmax") {
    const c = normAxis(attrInt(p.attrs, "axis", -1), v.type.shape.length);
    return g.op(p.op, [absorb(g, p.inputs[0]!, a)], { ...p.attrs, axis: c >= a ? c + 1 : c }, opts);
  }
  if (p.op === "Gather") {
    const idx = p.inputs[1]!;
    const list = g.addConstant(`${idx.name}.list`, { ...idx.data!, shape: [1] });
    return g.op("Gather", [p.inputs[0]!, list], { ...p.attrs }, opts);
  }
  return g.op(p.op, p.inputs.map((x) => (x.type.shape.length === 0 ? x : absorb(g, x, a))), { ...p.attrs }, opts);
}

export const absorbUnsqueeze: Pass = {
  id: "absorb-unsqueeze",
  summary: "drop an Unsqueeze whose axis the reductions before it removed: they keep it (keepdims)",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes]) {
      if (n.op !== "Unsqueeze" || !graph.nodes.includes(n)) continue;
      const axes = attrInts(n.attrs, "axes");
      const out = n.outputs[0]!;
      if (axes.length !== 1) continue;
      const a = normAxis(axes[0]!, out.type.shape.length);
      const v = n.inputs[0]!;
      if (v.isConstant || v.users.size !== 1 || !absorbable(graph, v, a, true)) continue;
      const kept = absorb(graph, v, a);
      if (graph.isGraphOutput(v)) {
        const sq = graph.op("Squeeze", [kept], { axes: [a] }, { scope: v.producer!.scope, names: [`${v.name}.squeezed`] });
        graph.replaceAllUsesWith(v, sq);
      }
      graph.replaceAllUsesWith(out, kept);
      bump(ctx, "unsqueezes-absorbed");
      changed = true;
      eliminateDeadCode(graph);
    }
    if (changed) graph.toposort();
    return { graph, changed };
  },
};
