// The data-dependent indexing ops sparse dispatch uses: NonZero (coordinates, a symbolic
// count) and ScatterND (replace or add, unique index tuples), kernels and shape rules.

import { describe, expect, it } from "vitest";
import { type Tensor, f32, tensor } from "../../src/core/tensor.ts";
import { runGraph, runKernel } from "../../src/backends/interp/index.ts";
import { Graph, formatType, inferTypes, verifyGraph } from "../../src/ir/index.ts";

const i64 = (shape: number[], data: number[]): Tensor => tensor("int64", shape, data);
const bool = (shape: number[], data: number[]): Tensor => tensor("bool", shape, data);

function plain(t: Tensor): { shape: number[]; data: number[] } {
  return { shape: t.shape, data: Array.from(t.data as ArrayLike<number | bigint>, Number) };
}

describe("NonZero", () => {
  it("lists coordinates of non-zero elements in row-major order, one row per axis", () => {
    expect(plain(runKernel("NonZero", [bool([2, 3], [1, 0, 1, 0, 0, 1])], { dim: "n" })[0]!)).toEqual({
      shape: [2, 3],
      data: [0, 0, 1, 0, 2, 2],
    });
    expect(plain(runKernel("NonZero", [f32([4], [0, -0.5, 0, 2])], { dim: "n" })[0]!)).toEqual({ shape: [1, 2], data: [1, 3] });
    expect(plain(runKernel("NonZero", [i64([3], [0, 0, 7])], { dim: "n" })[0]!)).toEqual({ shape: [1, 1], data: [2] });
  });

  it("gives an empty [rank, 0] result when nothing is set", () => {
    expect(plain(runKernel("NonZero", [bool([3], [0, 0, 0])], { dim: "n" })[0]!)).toEqual({ shape: [1, 0], data: [] });
  });

  it("types its count with the node's own symbol", () => {
    const [t] = inferTypes("NonZero", [{ dtype: "bool", shape: ["batch"] }], { dim: "rows_e3" });
    expect(formatType(t!)).toBe("i64[1,rows_e3]");
    expect(() => inferTypes("NonZero", [{ dtype: "bool", shape: ["batch"] }], {})).toThrow("dim");
  });
});

describe("ScatterND", () => {
  const data = f32([4, 2], [1, 2, 3, 4, 5, 6, 7, 8]);

  it("replaces the addressed slices of a copy (negative indices wrap)", () => {
    const out = runKernel("ScatterND", [data, i64([2, 1], [2, -4]), f32([2, 2], [10, 20, 30, 40])])[0]!;
    expect(plain(out)).toEqual({ shape: [4, 2], data: [30, 40, 3, 4, 10, 20, 7, 8] });
    expect(Array.from(data.data as Float32Array)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]); // input untouched
  });

  it("addresses single elements when the tuples are as long as the rank", () => {
    const out = runKernel("ScatterND", [data, i64([2, 2], [0, 1, 3, 0]), f32([2], [-1, -2])])[0]!;
    expect(plain(out).data).toEqual([1, -1, 3, 4, 5, 6, -2, 8]);
  });

  it("adds to the addressed slices with reduction add, rounding as float32", () => {
    const out = runKernel("ScatterND", [data, i64([2, 1], [3, 1]), f32([2, 2], [0.1, 0.2, 1, 1])], { reduction: "add" })[0]!;
    expect(out.data).toBeInstanceOf(Float32Array);
    expect(Array.from(out.data as Float32Array)).toEqual([1, 2, 4, 5, 5, 6, Math.fround(7 + Math.fround(0.1)), Math.fround(8 + Math.fround(0.2))]);
  });

  it("accepts no update at all", () => {
    const out = runKernel("ScatterND", [data, i64([0, 1], []), f32([0, 2], [])], { reduction: "add" })[0]!;
    expect(plain(out).data).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
  });

  it("rejects repeated tuples, indices out of range and unknown reductions", () => {
    expect(() => runKernel("ScatterND", [data, i64([2, 1], [1, 1]), f32([2, 2], [0, 0, 0, 0])])).toThrow("repeats");
    expect(() => runKernel("ScatterND", [data, i64([1, 1], [4]), f32([1, 2], [0, 0])])).toThrow("out of range");
    expect(() => runKernel("ScatterND", [data, i64([1, 1], [0]), f32([1, 2], [0, 0])], { reduction: "mul" })).toThrow("reduction");
  });

  it("checks the updates' shape, symbolic dims included", () => {
    const d = { dtype: "float32" as const, shape: ["batch", 3] };
    const idx = { dtype: "int64" as const, shape: ["n", 1] };
    expect(formatType(inferTypes("ScatterND", [d, idx, { dtype: "float32", shape: ["n", 3] }], { reduction: "add" })[0]!)).toBe("f32[batch,3]");
    expect(() => inferTypes("ScatterND", [d, idx, { dtype: "float32", shape: ["m", 3] }], {})).toThrow("updates must be [n,3]");
    expect(() => inferTypes("ScatterND", [d, idx, { dtype: "float32", shape: ["n", 3] }], { reduction: "max" })).toThrow("reduction");
  });
});

describe("gather the selected rows, scatter them back", () => {
  it("runs in a graph whose data-dependent dims the interpreter binds per run", () => {
    const g = new Graph("dispatch");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
    const w = g.addInput("w", { dtype: "float32", shape: ["batch"] });
    const zero = g.addConstant("zero", f32([], [0]));
    const nz = g.op("NonZero", [g.op("Greater", [w, zero])], { dim: "n" });
    const list = g.op("Squeeze", [nz], { axes: [0] });
    const rows = g.op("Transpose", [nz], { perm: [1, 0] });
    const picked = g.op("Mul", [g.op("Gather", [x, list], { axis: 0 }), g.op("Gather", [w, rows], { axis: 0 })]);
    g.setOutput("y", g.op("ScatterND", [x, rows, picked], { reduction: "add" }));
    verifyGraph(g);
    expect(formatType(picked.type)).toBe("f32[n,2]");
    const y = runGraph(g, { x: f32([3, 2], [1, 2, 3, 4, 5, 6]), w: f32([3], [0.5, 0, 2]) })["y"]!;
    // y = x + w·x on the rows where w > 0
    expect(plain(y).data).toEqual([1.5, 3, 3, 4, 15, 18]);
    const none = runGraph(g, { x: f32([1, 2], [1, 2]), w: f32([1], [0]) })["y"]!;
    expect(plain(none).data).toEqual([1, 2]);
  });
});
