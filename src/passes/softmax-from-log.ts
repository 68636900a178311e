// A softmax over an inner axis from the log-softmax of the same logits: where a graph takes
// both Softmax(Z, a) and LogSoftmax(Z, a) (the AESM scores of a layer with three or more
// gates: P for the specific score, log P for the shared one) and a is not the last axis,
// P becomes Exp(LogSoftmax(Z, a)). onnxruntime runs either op over an inner axis as a
// transpose, the op and a transpose back (measured on [1, 3, 8]: 1.39 µs against 0.54 µs
// over the last axis, at batch 1; more at large batches); Exp is a plain elementwise kernel.
// Equal in real arithmetic; in float32 P moves by about |log P| + 2 ulps (exp turns the
// log-softmax's last-place rounding into a relative error), which can flip a selection only
// on a near-tie.

import type { Graph, Node } from "../ir/graph.ts";
import { attrInt, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

export const softmaxFromLog: Pass = {
  id: "softmax-from-log",
  summary: "Softmax(Z, a) as Exp(LogSoftmax(Z, a)) where the graph takes both over an inner axis a: one transposing kernel instead of two",
  run(graph: Graph, ctx) {
    let changed = false;
    const axisOf = (n: Node) => normAxis(attrInt(n.attrs, "axis", -1), n.inputs[0]!.type.shape.length);
    for (const sm of [...graph.nodes]) {
      if (sm.op !== "Softmax") continue;
      const Z = sm.inputs[0]!;
      const a = axisOf(sm);
      if (a === Z.type.shape.length - 1) continue;
      const log = [...Z.users].find((u) => u.op === "LogSoftmax" && axisOf(u) === a);
      if (!log) continue;
      graph.replaceAllUsesWith(sm.outputs[0]!, graph.op("Exp", [log.outputs[0]!], {}, { scope: sm.scope, names: [`${sm.outputs[0]!.name}.from_log`] }));
      bump(ctx, "softmaxes-from-log");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
