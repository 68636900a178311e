// TopK with k = 1 whose values nobody reads is ArgMax (largest) or ArgMin (smallest) with
// keepdims: the same int64 [.., 1, ..] index, the first of equal values in both (TopK keeps
// the lower index first on ties; ArgMax/ArgMin take the first occurrence by default). One
// cheaper kernel: onnxruntime's TopK sorts into a heap and writes values too.

import type { Graph } from "../ir/graph.ts";
import { attrInt } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

export const topOneAsArgmax: Pass = {
  id: "top-one-as-argmax",
  summary: "a TopK of one whose values are unused as ArgMax / ArgMin (keepdims), the same index",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes]) {
      if (n.op !== "TopK" || attrInt(n.attrs, "k") !== 1) continue;
      const [values, indices] = n.outputs as [(typeof n.outputs)[0], (typeof n.outputs)[0]];
      if (values!.users.size > 0 || graph.isGraphOutput(values!)) continue;
      const op = attrInt(n.attrs, "largest", 1) === 0 ? "ArgMin" : "ArgMax";
      const arg = graph.op(op, [n.inputs[0]!], { axis: attrInt(n.attrs, "axis", -1), keepdims: 1 }, { scope: n.scope, names: [`${indices!.name}.arg`] });
      graph.replaceAllUsesWith(indices!, arg);
      bump(ctx, op === "ArgMax" ? "argmax" : "argmin");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
