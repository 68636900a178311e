// cse: identical constants (same dtype, shape and bytes) merged, then the nodes that read
// them; constants that differ stay; the digest of a constant is the same fed in slices (so
// that constants past node's 2 GiB hash-update limit can be hashed).

import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { Graph, verifyGraph } from "../../src/ir/index.ts";
import { cse, digestOf } from "../../src/passes/cse.ts";
import type { PassContext } from "../../src/passes/pass.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const f32 = (shape: number[], data: number[]) => ({ dtype: "float32" as const, shape, data: Float32Array.from(data) });

describe("cse", () => {
  it("merges constants with the same bytes and the nodes reading them; keeps constants that differ", () => {
    const g = new Graph("tiny_cse");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
    const a = g.op("MatMul", [x, g.addConstant("W1", f32([2, 2], [1, 2, 3, 4]))], {}, { names: ["a"] });
    const b = g.op("MatMul", [x, g.addConstant("W2", f32([2, 2], [1, 2, 3, 4]))], {}, { names: ["b"] });
    const c = g.op("MatMul", [x, g.addConstant("W3", f32([2, 2], [1, 2, 3, 5]))], {}, { names: ["c"] });
    const d = g.op("Add", [g.op("Add", [a, b], {}, { names: ["ab"] }), c], {}, { names: ["d"] });
    g.setOutput("y", g.op("Add", [d, g.addConstant("bias", f32([2], [0.5, -0.5]))], {}, { names: ["y"] }));
    const feeds = { x: f32([3, 2], [1, 0, 0, 1, -2, 3]) };
    const before = runGraph(g, feeds);
    const c2 = ctx();
    expect(cse.run(g, c2).changed).toBe(true);
    verifyGraph(g);
    expect(c2.stats).toEqual({ "constants-merged": 1, "nodes-merged": 1 });
    expect(g.constants.map((k) => k.name).sort()).toEqual(["W1", "W3", "bias"]);
    expect(g.nodes.filter((n) => n.op === "MatMul")).toHaveLength(2);
    expect(Array.from(runGraph(g, feeds)["y"]!.data as Float32Array)).toEqual(Array.from(before["y"]!.data as Float32Array));
  });

  it("hashes a constant in slices to the digest of the whole", () => {
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 37) % 251);
    const whole = createHash("sha1").update(bytes).digest("hex");
    expect(digestOf(bytes)).toBe(whole);
    for (const slice of [1, 7, 999, 1000, 4096]) expect(digestOf(bytes, slice), `slice ${slice}`).toBe(whole);
    expect(digestOf(new Uint8Array(0), 7)).toBe(createHash("sha1").digest("hex"));
  });
});
