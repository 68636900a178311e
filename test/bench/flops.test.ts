// The benchmark's measure of useful work: MatMul FLOPs per row, where a constant weight's
// exact zeros (block-diagonal layouts, padded rows) are not work.

import { describe, expect, it } from "vitest";
import { matmulFlops } from "../../bench/flops.ts";
import { Graph } from "../../src/ir/index.ts";

const f32 = (shape: number[], f: (i: number) => number) => ({ dtype: "float32" as const, shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)) });

describe("matmulFlops", () => {
  it("counts 2 FLOPs per multiply-add by a non-zero weight, per row", () => {
    const g = new Graph("flops");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 4] });
    // dense [4, 3]: 12 multiply-adds per row; block-diagonal [4, 6] with two 2×3 blocks: 12 of 24 non-zero
    const dense = g.op("MatMul", [x, g.addConstant("W", f32([4, 3], (i) => i + 1))]);
    const block = g.op("MatMul", [x, g.addConstant("D", f32([4, 6], (i) => (Math.floor(i / 6) < 2) === (i % 6 < 3) ? 1 : 0))]);
    // per-stream weights [2, 3, 5] over a shared [batch, 3]: two 3×5 products per row, one weight zero
    const streams = g.op("MatMul", [dense, g.addConstant("S", f32([2, 3, 5], (i) => (i === 7 ? 0 : 0.5)))]);
    // two computed operands: the shapes count, [batch, 1, 6] × [batch, 6, 2]
    const w = g.op("Reshape", [block], { shape: [0, 1, 6] });
    const e = g.op("Reshape", [g.op("Concat", [block, block], { axis: 1 })], { shape: [0, 6, 2] });
    g.setOutput("a", streams);
    g.setOutput("b", g.op("MatMul", [w, e]));
    expect(matmulFlops(g, 1)).toBe(2 * (12 + 12 + 29 + 12));
    expect(matmulFlops(g, 10)).toBe(10 * 2 * (12 + 12 + 29 + 12));
  });
});
