// Constant folding: a node whose inputs are all constants is evaluated once, at
// compile time, with the interpreter's own kernels, and becomes a constant.

import { KERNELS } from "../backends/interp/kernels.ts";
import { numel } from "../core/tensor.ts";
import type { Graph } from "../ir/graph.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

/** Results larger than this many elements stay computed at run time (they would bloat the file). */
const MAX_FOLDED_ELEMENTS = 1 << 22;

export const foldConstants: Pass = {
  id: "fold-constants",
  summary: "evaluate nodes whose inputs are all constants with the interpreter's kernels",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of graph.nodes) {
      if (!n.inputs.every((v) => v.isConstant)) continue;
      const sizes = n.outputs.map((o) => (o.type.shape.every((d) => typeof d === "number") ? numel(o.type.shape as number[]) : Infinity));
      if (sizes.some((s) => s > MAX_FOLDED_ELEMENTS)) continue;
      const results = KERNELS[n.op](n.inputs.map((v) => v.data!), n.attrs);
      n.outputs.forEach((o, i) => {
        const c = graph.addConstant(`${o.name}_folded`, results[i]!);
        graph.replaceAllUsesWith(o, c);
      });
      bump(ctx, "nodes-folded");
      changed = true;
    }
    if (changed) eliminateDeadCode(graph);
    return { graph, changed };
  },
};
