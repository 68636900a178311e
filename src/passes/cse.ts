// Common subexpression elimination: nodes with the same op, the same inputs and the
// same attributes compute the same values; keep the first. Constants with identical
// bytes are merged first, so that duplicated weights also expose shared work.

import { createHash } from "node:crypto";
import type { Graph, Value } from "../ir/graph.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

function constantKey(v: Value): string {
  const d = v.data!;
  const bytes = new Uint8Array(d.data.buffer, d.data.byteOffset, d.data.byteLength);
  return `${d.dtype}[${d.shape.join(",")}]:${createHash("sha1").update(bytes).digest("hex")}`;
}

export const cse: Pass = {
  id: "cse",
  summary: "merge identical constants and nodes that compute the same value",
  run(graph: Graph, ctx) {
    let changed = false;
    const byKey = new Map<string, Value>();
    for (const c of [...graph.constants]) {
      const key = constantKey(c);
      const first = byKey.get(key);
      if (first) {
        graph.replaceAllUsesWith(c, first);
        bump(ctx, "constants-merged");
        changed = true;
      } else byKey.set(key, c);
    }
    const seen = new Map<string, Value[]>();
    for (const n of graph.nodes) {
      const key = `${n.op}(${n.inputs.map((v) => v.id).join(",")})${JSON.stringify(n.attrs, Object.keys(n.attrs).sort())}`;
      const first = seen.get(key);
      if (first) {
        n.outputs.forEach((o, i) => graph.replaceAllUsesWith(o, first[i]!));
        bump(ctx, "nodes-merged");
        changed = true;
      } else seen.set(key, n.outputs);
    }
    if (changed) eliminateDeadCode(graph);
    return { graph, changed };
  },
};
