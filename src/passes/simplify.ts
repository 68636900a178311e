// Removal of no-op shape and type ops: Identity, Reshape to the same shape, identity
// Transposes, Casts to the same dtype, Unsqueeze followed by the matching Squeeze,
// and Transpose pairs that cancel.

import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInts, normAxis } from "../ir/infer.ts";
import { sameType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

/** The value a no-op node forwards, or null when the node does real work. */
function forwarded(n: Node): Value | null {
  const x = n.inputs[0]!;
  const y = n.outputs[0]!;
  switch (n.op) {
    case "Identity":
      return x;
    case "Reshape":
    case "Cast":
      return sameType(x.type, y.type) ? x : null;
    case "Transpose": {
      const perm = attrInts(n.attrs, "perm");
      if (perm.every((p, i) => p === i)) return x;
      const p = x.producer;
      if (p && p.op === "Transpose") {
        const inner = attrInts(p.attrs, "perm");
        if (perm.every((q, i) => inner[q] === i)) return p.inputs[0]!;
      }
      return null;
    }
    case "Squeeze": {
      const p = x.producer;
      if (p && p.op === "Unsqueeze") {
        const rank = x.type.shape.length;
        const a = attrInts(n.attrs, "axes").map((v) => normAxis(v, rank)).sort();
        const b = attrInts(p.attrs, "axes").map((v) => normAxis(v, rank)).sort();
        if (a.length === b.length && a.every((v, i) => v === b[i])) return p.inputs[0]!;
      }
      return null;
    }
    default:
      return null;
  }
}

export const simplify: Pass = {
  id: "remove-noops",
  summary: "remove identity reshapes, transposes, casts and cancelling unsqueeze/squeeze pairs",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of graph.nodes) {
      const src = forwarded(n);
      if (!src) continue;
      const out = n.outputs[0]!;
      // A graph output must keep its name and type: forwarding a graph input or
      // constant there would change the model's interface.
      if (graph.isGraphOutput(out) && (src.isInput || src.isConstant || graph.isGraphOutput(src))) continue;
      graph.replaceAllUsesWith(out, src);
      bump(ctx, `removed-${n.op.toLowerCase()}`);
      changed = true;
    }
    if (changed) eliminateDeadCode(graph);
    return { graph, changed };
  },
};
