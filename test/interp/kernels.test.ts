import { describe, expect, it } from "vitest";
import { type Tensor, f32, tensor } from "../../src/core/tensor.ts";
import { KERNELS, runKernel } from "../../src/backends/interp/index.ts";
import { erf as refErf, erfc as refErfc, gelu as refGelu } from "../../src/reference/numerics.ts";
import { erf, erfc, gelu } from "../../src/backends/interp/erf.ts";
import { OP_KINDS } from "../../src/ir/ops.ts";

const i64 = (shape: number[], data: number[]): Tensor => tensor("int64", shape, data);
const bool = (shape: number[], data: number[]): Tensor => tensor("bool", shape, data);

function run(op: Parameters<typeof runKernel>[0], inputs: Tensor[], attrs = {}): Tensor {
  return runKernel(op, inputs, attrs)[0]!;
}

/** Shape and values as plain arrays (bigints become numbers). */
function plain(t: Tensor): { shape: number[]; data: number[] } {
  return { shape: t.shape, data: Array.from(t.data as ArrayLike<number | bigint>, Number) };
}

describe("kernel table", () => {
  it("has a kernel for every op", () => {
    for (const op of OP_KINDS) expect(typeof KERNELS[op]).toBe("function");
  });
});

describe("elementwise binary", () => {
  it("broadcasts numpy-style and rounds float32 results", () => {
    const a = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    const b = f32([3], [10, 20, 30]);
    expect(plain(run("Add", [a, b]))).toEqual({ shape: [2, 3], data: [11, 22, 33, 14, 25, 36] });
    const col = f32([2, 1], [2, 4]);
    expect(plain(run("Div", [a, col]))).toEqual({ shape: [2, 3], data: [0.5, 1, 1.5, 1, 1.25, 1.5] });
    // [2,1] with [1,3] → [2,3]
    const row = f32([1, 3], [1, 2, 3]);
    expect(plain(run("Sub", [col, row]))).toEqual({ shape: [2, 3], data: [1, 0, -1, 3, 2, 1] });
    const t = run("Mul", [f32([], [0.1]), f32([], [3])]);
    expect(t.data).toBeInstanceOf(Float32Array);
    expect(t.data[0]).toBe(Math.fround(Math.fround(0.1) * 3));
    expect(plain(run("Max", [a, f32([], [3.5])])).data).toEqual([3.5, 3.5, 3.5, 4, 5, 6]);
    expect(plain(run("Min", [a, f32([], [3.5])])).data).toEqual([1, 2, 3, 3.5, 3.5, 3.5]);
  });

  it("works on int64, wrapping like int64 and truncating division", () => {
    const a = i64([3], [7, -7, 9]);
    expect(plain(run("Add", [a, i64([], [1])]))).toEqual({ shape: [3], data: [8, -6, 10] });
    expect(plain(run("Mul", [a, i64([], [0])])).data).toEqual([0, 0, 0]);
    expect(plain(run("Div", [a, i64([], [2])])).data).toEqual([3, -3, 4]);
    expect(plain(run("Max", [a, i64([3], [0, 0, 10])])).data).toEqual([7, 0, 10]);
    expect(plain(run("Min", [a, i64([3], [0, 0, 10])])).data).toEqual([0, -7, 9]);
    const big = run("Add", [tensor("int64", [1], new BigInt64Array([0x7fffffffffffffffn])), i64([], [1])]);
    expect((big.data as BigInt64Array)[0]).toBe(-0x8000000000000000n);
    expect(() => run("Div", [a, i64([], [0])])).toThrow("division by zero");
  });

  it("rejects mixed dtypes and bad broadcasts", () => {
    expect(() => run("Add", [f32([2], [1, 2]), i64([2], [1, 2])])).toThrow("share a dtype");
    expect(() => run("Add", [f32([2], [1, 2]), f32([3], [1, 2, 3])])).toThrow("cannot broadcast [2] with [3]");
  });

  // float16: test/interp/fp16.test.ts
});

describe("comparisons, logic and Where", () => {
  it("compares floats and int64 with broadcasting into bool", () => {
    const a = i64([4], [-1, 0, 5, 9]);
    expect(plain(run("GreaterOrEqual", [a, i64([], [0])])).data).toEqual([0, 1, 1, 1]);
    expect(plain(run("Less", [a, i64([], [5])])).data).toEqual([1, 1, 0, 0]);
    expect(run("Less", [a, i64([], [5])]).dtype).toBe("bool");
    expect(plain(run("Greater", [f32([2, 1], [0, 2]), f32([2], [1, -1])]))).toEqual({ shape: [2, 2], data: [0, 1, 1, 1] });
    expect(plain(run("Equal", [a, i64([4], [-1, 1, 5, 0])])).data).toEqual([1, 0, 1, 0]);
  });

  it("And, Or, Not", () => {
    const a = bool([4], [0, 0, 1, 1]);
    const b = bool([4], [0, 1, 0, 1]);
    expect(plain(run("And", [a, b])).data).toEqual([0, 0, 0, 1]);
    expect(plain(run("Or", [a, b])).data).toEqual([0, 1, 1, 1]);
    expect(plain(run("Not", [a])).data).toEqual([1, 1, 0, 0]);
    expect(plain(run("And", [bool([2, 1], [1, 0]), bool([2], [1, 1])]))).toEqual({ shape: [2, 2], data: [1, 1, 0, 0] });
  });

  it("Where broadcasts all three operands, for floats and int64", () => {
    const c = bool([2, 1], [1, 0]);
    const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    expect(plain(run("Where", [c, x, f32([], [0])]))).toEqual({ shape: [2, 3], data: [1, 2, 3, 0, 0, 0] });
    const ids = i64([3], [4, -1, 2]);
    expect(plain(run("Where", [bool([3], [1, 0, 1]), ids, i64([], [0])])).data).toEqual([4, 0, 2]);
  });
});

describe("elementwise unary", () => {
  it("computes each function on float32", () => {
    const x = f32([5], [-2, -0.5, 0, 0.5, 2]);
    const near = (t: Tensor, f: (v: number) => number) =>
      Array.from(t.data as Float32Array).forEach((v, i) => expect(v).toBe(Math.fround(f((x.data as Float32Array)[i]!))));
    near(run("Exp", [x]), Math.exp);
    near(run("Tanh", [x]), Math.tanh);
    near(run("Sigmoid", [x]), (v) => 1 / (1 + Math.exp(-v)));
    near(run("Relu", [x]), (v) => Math.max(v, 0));
    near(run("Neg", [x]), (v) => -v);
    near(run("Abs", [x]), Math.abs);
    near(run("LeakyRelu", [x], { alpha: 0.01 }), (v) => (v < 0 ? Math.fround(0.01) * v : v));
    near(run("LeakyRelu", [x], { alpha: 0.2 }), (v) => (v < 0 ? Math.fround(0.2) * v : v));
    near(run("Erf", [x]), refErf);
    near(run("Gelu", [x]), refGelu);
    const p = f32([3], [4, 0.25, 0]);
    expect(plain(run("Sqrt", [p])).data).toEqual([2, 0.5, 0]);
    expect(plain(run("Log", [p])).data).toEqual([Math.fround(Math.log(4)), Math.fround(Math.log(0.25)), -Infinity]);
    expect(plain(run("Neg", [i64([2], [3, -4])])).data).toEqual([-3, 4]);
    expect(plain(run("Abs", [i64([2], [3, -4])])).data).toEqual([3, 4]);
    expect(plain(run("Identity", [i64([2], [3, -4])]))).toEqual({ shape: [2], data: [3, -4] });
  });

  it("erf and erfc agree with the reference's to ~1e-15 and with known values", () => {
    for (let x = -7; x <= 7; x += 0.01) {
      expect(Math.abs(erf(x) - refErf(x))).toBeLessThan(2e-15);
      const c = refErfc(x);
      expect(Math.abs(erfc(x) - c)).toBeLessThanOrEqual(1e-12 * Math.abs(c) + 1e-300); // 1 − erf cancels below x = 2.5
      expect(Math.abs(gelu(x) - refGelu(x))).toBeLessThanOrEqual(2e-15 * (Math.abs(x) + 1));
    }
    expect(erf(0.5)).toBeCloseTo(0.5204998778130465, 15);
    expect(erf(1)).toBeCloseTo(0.8427007929497149, 15);
    expect(erf(2.5)).toBeCloseTo(0.9995930479825550, 15);
    expect(erfc(5) / 1.5374597944280349e-12).toBeCloseTo(1, 13);
    expect(erfc(10) / 2.0884875837625447e-45).toBeCloseTo(1, 12);
    expect(erf(-3)).toBeCloseTo(-0.9999779095030014, 15);
    expect(Number.isNaN(erf(NaN))).toBe(true);
  });

  it("Cast converts between float32, int64 and bool", () => {
    expect(plain(run("Cast", [f32([4], [1.7, -1.7, 0, 3])], { to: "int64" }))).toEqual({ shape: [4], data: [1, -1, 0, 3] });
    const c = run("Cast", [i64([2], [3, -4])], { to: "float32" });
    expect(c.data).toBeInstanceOf(Float32Array);
    expect(plain(c).data).toEqual([3, -4]);
    expect(plain(run("Cast", [f32([3], [0, 2, -0.5])], { to: "bool" })).data).toEqual([0, 1, 1]);
    expect(plain(run("Cast", [bool([2], [1, 0])], { to: "float32" })).data).toEqual([1, 0]);
    expect(plain(run("Cast", [i64([2], [0, 5])], { to: "bool" })).data).toEqual([0, 1]);
    expect(run("Cast", [f32([1], [0.1])], { to: "float64" }).data[0]).toBe(Math.fround(0.1));
    expect(() => run("Cast", [f32([1], [NaN])], { to: "int64" })).toThrow("cannot cast NaN");
  });
});

describe("MatMul and Gemm", () => {
  it("multiplies 2-D matrices", () => {
    const a = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    const b = f32([3, 2], [7, 8, 9, 10, 11, 12]);
    expect(plain(run("MatMul", [a, b]))).toEqual({ shape: [2, 2], data: [58, 64, 139, 154] });
  });

  it("broadcasts batch dims and promotes 1-D operands", () => {
    const a = f32([2, 1, 2], [1, 2, 3, 4]); // two 1×2 matrices
    const b = f32([2, 1], [10, 100]);
    expect(plain(run("MatMul", [a, b]))).toEqual({ shape: [2, 1, 1], data: [210, 430] });
    const bb = f32([3, 2, 1], [1, 0, 0, 1, 1, 1]); // batch 3 vs batch of a = [2,1] broadcast → [2,3]
    const out = run("MatMul", [f32([2, 1, 1, 2], [1, 2, 3, 4]), bb]);
    expect(plain(out)).toEqual({ shape: [2, 3, 1, 1], data: [1, 2, 3, 3, 4, 7] });
    expect(plain(run("MatMul", [f32([2], [1, 2]), f32([2, 2], [1, 2, 3, 4])]))).toEqual({ shape: [2], data: [7, 10] });
    expect(plain(run("MatMul", [f32([2, 2], [1, 2, 3, 4]), f32([2], [1, 2])]))).toEqual({ shape: [2], data: [5, 11] });
    expect(plain(run("MatMul", [f32([2], [1, 2]), f32([2], [3, 4])]))).toEqual({ shape: [], data: [11] });
    expect(() => run("MatMul", [f32([2, 3]), f32([2, 3])])).toThrow("inner dims differ");
  });

  it("accumulates in float64 and rounds once", () => {
    // 1 + 1e-8 − 1 is 0 in float32 step by step, but 1e-8 rounded once
    const a = f32([1, 3], [1, Math.fround(1e-8), -1]);
    const b = f32([3, 1], [1, 1, 1]);
    expect(run("MatMul", [a, b]).data[0]).toBe(Math.fround(Math.fround(1e-8)));
  });

  it("Gemm honours transA, transB, alpha, beta and a broadcast C", () => {
    const a = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    const bt = f32([2, 3], [7, 9, 11, 8, 10, 12]); // Bᵀ of the MatMul case
    const c = f32([2], [1, -1]);
    expect(plain(run("Gemm", [a, bt, c], { transB: 1 }))).toEqual({ shape: [2, 2], data: [59, 63, 140, 153] });
    expect(plain(run("Gemm", [a, bt, c], { transB: 1, alpha: 2, beta: 0.5 })).data).toEqual([116.5, 127.5, 278.5, 307.5]);
    const at = f32([3, 2], [1, 4, 2, 5, 3, 6]);
    const b = f32([3, 2], [7, 8, 9, 10, 11, 12]);
    expect(plain(run("Gemm", [at, b], { transA: 1 })).data).toEqual([58, 64, 139, 154]);
    expect(plain(run("Gemm", [a, b, f32([2, 1], [1, 2])])).data).toEqual([59, 65, 141, 156]);
  });
});

describe("softmax and reductions", () => {
  it("Softmax and LogSoftmax along one axis, negative axes too", () => {
    const x = f32([2, 3], [1, 2, 3, 1, 1, 1]);
    const s = run("Softmax", [x], { axis: 1 });
    const e = [Math.exp(-2), Math.exp(-1), 1];
    const z = e[0]! + e[1]! + e[2]!;
    expect(Array.from(s.data as Float32Array)).toEqual([...e.map((v) => Math.fround(v / z)), ...[1, 1, 1].map(() => Math.fround(1 / 3))]);
    expect(plain(run("Softmax", [x], { axis: -1 }))).toEqual(plain(s));
    const s0 = run("Softmax", [x], { axis: 0 });
    expect(plain(s0).data).toEqual([0.5, Math.fround(Math.exp(1) / (1 + Math.exp(1))), Math.fround(Math.exp(2) / (1 + Math.exp(2))), 0.5, Math.fround(1 / (1 + Math.exp(1))), Math.fround(1 / (1 + Math.exp(2)))]);
    const ls = run("LogSoftmax", [x], { axis: 1 });
    expect((ls.data as Float32Array)[2]).toBe(Math.fround(-Math.log(z)));
    // a very negative fill gives exactly zero weight
    const m = run("Softmax", [f32([1, 3], [2, -1e30, 1])], { axis: 1 });
    expect((m.data as Float32Array)[1]).toBe(0);
    // the middle axis of a rank-3 tensor
    const r3 = run("Softmax", [f32([1, 2, 2], [0, 0, Math.log(3), 0])], { axis: 1 });
    expect(plain(r3).data).toEqual([0.25, 0.5, 0.75, 0.5]);
  });

  it("reduces over axes with keepdims 0 and 1", () => {
    const x = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    expect(plain(run("ReduceSum", [x], { axes: [1], keepdims: 0 }))).toEqual({ shape: [2], data: [6, 15] });
    expect(plain(run("ReduceSum", [x], { axes: [0] }))).toEqual({ shape: [1, 3], data: [5, 7, 9] });
    expect(plain(run("ReduceSum", [x], { axes: [-1], keepdims: 1 }))).toEqual({ shape: [2, 1], data: [6, 15] });
    expect(plain(run("ReduceSum", [x], { axes: [0, 1], keepdims: 0 }))).toEqual({ shape: [], data: [21] });
    expect(plain(run("ReduceMax", [x], { axes: [0], keepdims: 0 })).data).toEqual([4, 5, 6]);
    expect(plain(run("ReduceMin", [x], { axes: [1], keepdims: 0 })).data).toEqual([1, 4]);
    expect(plain(run("ReduceMean", [x], { axes: [1], keepdims: 0 })).data).toEqual([2, 5]);
    const lse = run("ReduceLogSumExp", [x], { axes: [1], keepdims: 0 });
    expect((lse.data as Float32Array)[0]).toBe(Math.fround(Math.log(Math.exp(1) + Math.exp(2) + Math.exp(3))));
    const big = run("ReduceLogSumExp", [f32([2], [1000, 1000])], { axes: [0], keepdims: 0 });
    expect(big.data[0]).toBe(Math.fround(1000 + Math.log(2)));
    const r3 = f32([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(plain(run("ReduceSum", [r3], { axes: [1], keepdims: 0 }))).toEqual({ shape: [2, 2], data: [4, 6, 12, 14] });
    expect(plain(run("ReduceMax", [r3], { axes: [0, 2], keepdims: 1 }))).toEqual({ shape: [1, 2, 1], data: [6, 8] });
  });
});

describe("shape and indexing", () => {
  it("Concat along any axis, for floats and int64", () => {
    const a = f32([2, 1], [1, 2]);
    const b = f32([2, 2], [3, 4, 5, 6]);
    expect(plain(run("Concat", [a, b], { axis: 1 }))).toEqual({ shape: [2, 3], data: [1, 3, 4, 2, 5, 6] });
    expect(plain(run("Concat", [b, b], { axis: -2 }))).toEqual({ shape: [4, 2], data: [3, 4, 5, 6, 3, 4, 5, 6] });
    expect(plain(run("Concat", [i64([2], [1, 2]), i64([1], [3])], { axis: 0 })).data).toEqual([1, 2, 3]);
  });

  it("Gather rows and columns, negative indices wrap, out of range throws", () => {
    const t = f32([3, 2], [1, 2, 3, 4, 5, 6]);
    expect(plain(run("Gather", [t, i64([4], [2, 0, -1, 1])]))).toEqual({ shape: [4, 2], data: [5, 6, 1, 2, 5, 6, 3, 4] });
    expect(plain(run("Gather", [t, i64([], [1])]))).toEqual({ shape: [2], data: [3, 4] });
    expect(plain(run("Gather", [t, i64([1], [1])], { axis: 1 }))).toEqual({ shape: [3, 1], data: [2, 4, 6] });
    expect(plain(run("Gather", [t, i64([2, 1], [0, 2])]))).toEqual({ shape: [2, 1, 2], data: [1, 2, 5, 6] });
    expect(plain(run("Gather", [bool([2, 2], [1, 0, 0, 1]), i64([2], [1, 1])])).data).toEqual([0, 1, 0, 1]);
    expect(() => run("Gather", [t, i64([1], [3])])).toThrow("index 3 out of range [-3, 3)");
  });

  it("GatherElements", () => {
    const t = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    expect(plain(run("GatherElements", [t, i64([2, 2], [2, 0, 1, 1])], { axis: 1 }))).toEqual({ shape: [2, 2], data: [3, 1, 5, 5] });
    expect(plain(run("GatherElements", [t, i64([1, 3], [1, 0, -1])], { axis: 0 }))).toEqual({ shape: [1, 3], data: [4, 2, 6] });
  });

  it("Unsqueeze, Squeeze, Reshape (0 copies, −1 infers), Transpose", () => {
    const t = f32([2, 3], [1, 2, 3, 4, 5, 6]);
    expect(run("Unsqueeze", [t], { axes: [1] }).shape).toEqual([2, 1, 3]);
    expect(run("Unsqueeze", [t], { axes: [-1, 0] }).shape).toEqual([1, 2, 3, 1]);
    expect(run("Squeeze", [f32([2, 1, 3, 1])], { axes: [1, -1] }).shape).toEqual([2, 3]);
    expect(() => run("Squeeze", [t], { axes: [0] })).toThrow("is not 1");
    expect(run("Reshape", [t], { shape: [0, -1, 1] }).shape).toEqual([2, 3, 1]);
    expect(run("Reshape", [t], { shape: [-1] }).shape).toEqual([6]);
    expect(plain(run("Reshape", [t], { shape: [3, -1] }))).toEqual({ shape: [3, 2], data: [1, 2, 3, 4, 5, 6] });
    expect(() => run("Reshape", [t], { shape: [3, 0] })).toThrow("cannot reshape"); // 0 copies dim 1 = 3
    expect(() => run("Reshape", [t], { shape: [4, -1] })).toThrow("cannot reshape");
    expect(plain(run("Transpose", [t], { perm: [1, 0] }))).toEqual({ shape: [3, 2], data: [1, 4, 2, 5, 3, 6] });
    const r3 = f32([2, 2, 2], [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(plain(run("Transpose", [r3], { perm: [2, 0, 1] }))).toEqual({ shape: [2, 2, 2], data: [1, 3, 5, 7, 2, 4, 6, 8] });
  });

  it("Slice clamps like ONNX", () => {
    const t = f32([2, 4], [1, 2, 3, 4, 5, 6, 7, 8]);
    expect(plain(run("Slice", [t], { starts: [1], ends: [3], axes: [1] }))).toEqual({ shape: [2, 2], data: [2, 3, 6, 7] });
    expect(plain(run("Slice", [t], { starts: [-2], ends: [1000], axes: [-1] }))).toEqual({ shape: [2, 2], data: [3, 4, 7, 8] });
    expect(plain(run("Slice", [t], { starts: [-100, 3], ends: [1, 2 ** 31 - 1], axes: [0, 1] }))).toEqual({ shape: [1, 1], data: [4] });
    expect(run("Slice", [t], { starts: [3], ends: [1], axes: [1] }).shape).toEqual([2, 0]);
    expect(plain(run("Slice", [t], { starts: [1, 0], ends: [2, 2] }))).toEqual({ shape: [1, 2], data: [5, 6] });
  });

  it("TopK: largest and smallest, ties keep the lower index first, int64 indices", () => {
    const x = f32([2, 4], [1, 3, 3, 2, 5, 5, 5, 5]);
    const [v, i] = runKernel("TopK", [x], { k: 2, axis: -1, largest: 1 });
    expect(plain(v!)).toEqual({ shape: [2, 2], data: [3, 3, 5, 5] });
    expect(i!.dtype).toBe("int64");
    expect(plain(i!).data).toEqual([1, 2, 0, 1]);
    const [sv, si] = runKernel("TopK", [x], { k: 3, axis: 1, largest: 0 });
    expect(plain(sv!).data).toEqual([1, 2, 3, 5, 5, 5]);
    expect(plain(si!).data).toEqual([0, 3, 1, 0, 1, 2]);
    // along axis 0
    const [, i0] = runKernel("TopK", [f32([3, 2], [1, 9, 4, 9, 2, 0])], { k: 1, axis: 0 });
    expect(plain(i0!)).toEqual({ shape: [1, 2], data: [1, 0] });
    expect(plain(runKernel("TopK", [i64([3], [5, -1, 7])], { k: 2 })[1]!).data).toEqual([2, 0]);
  });

  it("OneHot: float32 rows, negative indices wrap, out of range gives zeros", () => {
    const t = run("OneHot", [i64([5], [0, 2, -1, 3, -4])], { depth: 3 });
    expect(t.dtype).toBe("float32");
    expect(plain(t)).toEqual({ shape: [5, 3], data: [1, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0] });
    expect(run("OneHot", [i64([2, 2], [0, 1, 1, 0])], { depth: 2 }).shape).toEqual([2, 2, 2]);
  });
});
