// Common subexpression elimination: nodes with the same op, the same inputs and the
// same attributes compute the same values; keep the first. Constants with identical
// bytes are merged first, so that duplicated weights also expose shared work; their bytes
// are hashed only where another constant has the same dtype and shape.

import { createHash } from "node:crypto";
import type { Graph, Value } from "../ir/graph.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

/** Largest piece hashed in one call: node's hash update takes at most 2 GiB at once. */
const HASH_SLICE = 1 << 30;

/** SHA-1 of `bytes`, fed in slices of at most `slice` bytes (the same digest as in one piece). */
export function digestOf(bytes: Uint8Array, slice = HASH_SLICE): string {
  const h = createHash("sha1");
  for (let at = 0; at < bytes.length; at += slice) h.update(bytes.subarray(at, Math.min(bytes.length, at + slice)));
  return h.digest("hex");
}

const typeKey = (v: Value) => `${v.data!.dtype}[${v.data!.shape.join(",")}]`;

function constantKey(v: Value): string {
  const d = v.data!.data;
  return `${typeKey(v)}:${digestOf(new Uint8Array(d.buffer, d.byteOffset, d.byteLength))}`;
}

export const cse: Pass = {
  id: "cse",
  summary: "merge identical constants and nodes that compute the same value",
  run(graph: Graph, ctx) {
    let changed = false;
    const byKey = new Map<string, Value>();
    // only constants that share their dtype and shape with another can be duplicates: the
    // others (big embedding tables, usually) are never hashed
    const perType = new Map<string, number>();
    for (const c of graph.constants) perType.set(typeKey(c), (perType.get(typeKey(c)) ?? 0) + 1);
    for (const c of [...graph.constants]) {
      if (perType.get(typeKey(c))! < 2) continue;
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
