// A Concat of a Concat, flattened, where the inner one's other readers are MatMuls by
// constant weights: those read the flat Concat with zero rows added to their weights.
//
//   before                                        after
//     %x0 = Concat(%a, %b, %c)        [B, F]        %x0' = Concat(%a, %b, %c, %e)   [B, F + d]
//     %g  = Concat(%x0, %e)           [B, F + d]    MatMul(%x0', [%W; 0])           [B, N]
//     MatMul(%x0, %W)                 [B, N]        (the gate reads %x0' as it read %g)
//
// The first scenario layer's gate reads [x0; emb(s_0)] and its experts read x0: one Concat
// instead of two. The extra products are 0·e = 0, so the MatMul's sums are the same.

import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

const isConcat1 = (n: Node | null): n is Node =>
  !!n && n.op === "Concat" && n.outputs[0]!.type.shape.length === 2 && normAxis(attrInt(n.attrs, "axis"), 2) === 1;

/** Readers of `v` other than `except`: all MatMul(v, W const [F, N]) in float32, or null. */
function constantMatMuls(g: Graph, v: Value, except: Node): Node[] | null {
  if (g.isGraphOutput(v)) return null;
  const others = [...v.users].filter((u) => u !== except);
  for (const u of others)
    if (u.op !== "MatMul" || u.inputs[0] !== v || u.inputs[1] === v || !u.inputs[1]!.isConstant || u.inputs[1]!.type.shape.length !== 2 || u.inputs[1]!.type.dtype !== "float32")
      return null;
  return others;
}

export const flattenConcats: Pass = {
  id: "flatten-concats",
  summary: "flatten Concat(Concat(…), e) where the inner Concat otherwise feeds MatMuls by constants (zero rows added)",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const outer of [...graph.nodes]) {
      if (!isConcat1(outer) || !graph.nodes.includes(outer)) continue;
      const inner = outer.inputs[0]!.producer;
      if (!isConcat1(inner) || outer.inputs.slice(1).includes(outer.inputs[0]!)) continue;
      const x0 = inner.outputs[0]!;
      const mms = constantMatMuls(graph, x0, outer);
      if (!mms || mms.length === 0) continue;
      const F = x0.type.shape[1] as number;
      const total = outer.outputs[0]!.type.shape[1];
      if (typeof total !== "number") continue;
      const flat = graph.op("Concat", [...inner.inputs, ...outer.inputs.slice(1)], { axis: 1 }, { scope: inner.scope, names: [`${x0.name}.with_${outer.outputs[0]!.name}`] });
      for (const mm of mms) {
        const W = mm.inputs[1]!;
        const N = W.type.shape[1] as number;
        const padded = new Float32Array(total * N);
        padded.set((W.data!.data as Float32Array).subarray(0, F * N));
        const Wp = graph.addConstant(`${W.name}.padded`, { dtype: "float32", shape: [total, N], data: padded });
        const out = graph.op("MatMul", [flat, Wp], {}, { scope: mm.scope, names: [`${mm.outputs[0]!.name}.flat`] });
        graph.replaceAllUsesWith(mm.outputs[0]!, out);
      }
      graph.replaceAllUsesWith(outer.outputs[0]!, flat);
      eliminateDeadCode(graph);
      bump(ctx, "concats-flattened");
      changed = true;
    }
    if (changed) graph.toposort();
    return { graph, changed };
  },
};
