// float16 in the interpreter: Cast rounding (once, to nearest even), arithmetic computed wide and
// rounded to half, shape and indexing kernels moving bit patterns untouched, and a half graph run.

import { describe, expect, it } from "vitest";
import { KERNELS, runGraph, runKernel } from "../../src/backends/interp/index.ts";
import { halvesOf, roundToHalf } from "../../src/backends/interp/kernels.ts";
import { type Tensor, f32, floatToHalf, halfToFloat, tensor } from "../../src/core/tensor.ts";
import { Graph, OP_KINDS } from "../../src/ir/index.ts";

/** A float16 tensor of the halves nearest `values`. */
const h16 = (shape: number[], values: number[]): Tensor => tensor("float16", shape, new Uint16Array(values.map(floatToHalf)));
const bits = (shape: number[], b: number[]): Tensor => tensor("float16", shape, new Uint16Array(b));
const i64 = (shape: number[], data: number[]): Tensor => tensor("int64", shape, data);
const bool = (shape: number[], data: number[]): Tensor => tensor("bool", shape, data);

function run(op: Parameters<typeof runKernel>[0], inputs: Tensor[], attrs = {}): Tensor {
  return runKernel(op, inputs, attrs)[0]!;
}

/** The values of a tensor (halves decoded), with its dtype and shape. */
function values(t: Tensor): { dtype: string; shape: number[]; data: number[] } {
  const data = t.dtype === "float16" ? Array.from(t.data as Uint16Array, halfToFloat) : Array.from(t.data as ArrayLike<number | bigint>, Number);
  return { dtype: t.dtype, shape: t.shape, data };
}

/** The half nearest x, as a number. */
const half = (x: number) => halfToFloat(roundToHalf(x));

describe("Cast to and from float16", () => {
  it("rounds float32 to the nearest half, ties to even, past 65504 to infinity, into subnormals", () => {
    const x = [1, 1 + 2 ** -11, 1 + 3 * 2 ** -11, 65504, 65519, 65520, -70000, 2 ** -24, 2 ** -25, 1.5 * 2 ** -25, 0.1, -0];
    const t = run("Cast", [f32([x.length], x)], { to: "float16" });
    expect(t.dtype).toBe("float16");
    expect(t.data).toBeInstanceOf(Uint16Array);
    // 1 + 2⁻¹¹ is the tie between 1 and 1 + 2⁻¹⁰: even is 1; 1 + 3·2⁻¹¹ ties up to 1 + 2⁻⁹
    expect(values(t).data).toEqual([1, 1, 1 + 2 ** -9, 65504, 65504, Infinity, -Infinity, 2 ** -24, 0, 2 ** -24, 0.0999755859375, -0]);
    expect((t.data as Uint16Array)[11]).toBe(0x8000); // −0 keeps its sign
    expect((t.data as Uint16Array)[0]).toBe(0x3c00);
  });

  it("rounds float64 once, not through float32 (which would land on a half tie)", () => {
    // 1 + 2⁻¹¹ + 2⁻⁴⁰ rounds to float32 1 + 2⁻¹¹, a tie that would go down; the float64 is above it
    const x = tensor("float64", [2], new Float64Array([1 + 2 ** -11 + 2 ** -40, 65519.99]));
    expect(values(run("Cast", [x], { to: "float16" })).data).toEqual([1 + 2 ** -10, 65504]);
    for (const v of [1 + 2 ** -11 + 2 ** -40, -3.000732421875001, 1e-7, 6.1e-5, 12345.678, 2 ** -25 + 2 ** -60]) {
      const want = Math.abs(half(v) - v); // nothing nearer: the neighbours are no closer
      const hb = roundToHalf(v);
      for (const n of [hb - 1, hb + 1]) expect(Math.abs(halfToFloat(n) - v)).toBeGreaterThanOrEqual(want);
    }
  });

  it("widens half exactly, and casts it to integers (truncating) and bool", () => {
    const x = h16([5], [1.5, -2.75, 0, 65504, -0.5]);
    const f = run("Cast", [x], { to: "float32" });
    expect(f.data).toBeInstanceOf(Float32Array);
    expect(values(f).data).toEqual([1.5, -2.75, 0, 65504, -0.5]);
    expect(values(run("Cast", [x], { to: "float64" })).data).toEqual([1.5, -2.75, 0, 65504, -0.5]);
    expect(values(run("Cast", [x], { to: "int64" })).data).toEqual([1, -2, 0, 65504, 0]);
    expect(values(run("Cast", [x], { to: "bool" })).data).toEqual([1, 1, 0, 1, 1]);
    expect(values(run("Cast", [i64([3], [3, -2049, 100000])], { to: "float16" })).data).toEqual([3, -2048, Infinity]);
    expect(values(run("Cast", [bool([2], [1, 0])], { to: "float16" })).data).toEqual([1, 0]);
    expect(() => run("Cast", [bits([1], [0x7c00])], { to: "int64" })).toThrow("cannot cast Infinity");
  });
});

describe("halvesOf (float32 arrays to half, as constants and kernel results are rounded)", () => {
  it("agrees with floatToHalf at every half, every midpoint between halves, and one float32 ULP either side", () => {
    const xs: number[] = [];
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    const nudge = (x: number, d: number) => {
      f[0] = x;
      u[0] = u[0]! + d;
      return f[0];
    };
    for (let h = 0; h < 0x10000; h++) {
      const v = halfToFloat(h);
      const next = halfToFloat((h & 0x7fff) === 0x7c00 ? h : h + 1);
      xs.push(v);
      if (Number.isFinite(v) && Number.isFinite(next) && (h & 0x7fff) < 0x7c00) {
        const mid = (v + next) / 2; // exact in float32
        xs.push(mid, nudge(mid, 1), nudge(mid, -1));
      }
    }
    xs.push(65520, 65519.996, 1e-8, -1e-8, 3e38, -3e38, NaN);
    const X = Float32Array.from(xs);
    const got = halvesOf(X);
    const bad = xs.map((x, i) => [x, got[i]!, floatToHalf(X[i]!)] as const).filter(([, g, w]) => g !== w);
    expect(bad.slice(0, 5)).toEqual([]);
  });
});

describe("arithmetic on float16", () => {
  it("computes wide and rounds each result to half", () => {
    const a = h16([3], [1, 2048, 0.1]);
    const b = h16([3], [2 ** -11, 1, 0.2]);
    const add = run("Add", [a, b]);
    expect(add.dtype).toBe("float16");
    // 1 + 2⁻¹¹ ties to 1; 2049 is not a half (ULP 2 at 2048): ties to even 2048
    expect(values(add).data).toEqual([1, 2048, half(halfToFloat(floatToHalf(0.1)) + halfToFloat(floatToHalf(0.2)))]);
    expect(values(run("Mul", [h16([1], [300]), h16([1], [300])])).data).toEqual([Infinity]); // 90000 > 65504
    expect(values(run("Div", [h16([2], [1, -1]), h16([], [3])])).data).toEqual([half(1 / 3), half(-1 / 3)]);
    expect(values(run("Max", [h16([2], [-1, 2]), h16([], [0])])).data).toEqual([0, 2]);
    expect(values(run("Neg", [h16([2], [1.5, -0])])).data).toEqual([-1.5, 0]);
  });

  it("activations: each the half of the exact function of the half operand", () => {
    const xs = [-3, -0.5, -0, 0.25, 2, 11];
    const x = h16([xs.length], xs);
    const check = (op: Parameters<typeof runKernel>[0], f: (v: number) => number, attrs = {}) => {
      const got = run(op, [x], attrs);
      expect(got.dtype).toBe("float16");
      // computed in float64 from the (exact) operand, rounded to float32, then to half
      expect(values(got).data, op).toEqual(xs.map((v) => halfToFloat(floatToHalf(Math.fround(f(v))))));
    };
    check("Relu", (v) => (v < 0 ? 0 : v)); // −0 stays −0, as in ONNX Runtime
    check("Tanh", Math.tanh);
    check("Sigmoid", (v) => 1 / (1 + Math.exp(-v)));
    check("Exp", Math.exp); // e¹¹ ≈ 59874 still fits
    check("LeakyRelu", (v) => (v < 0 ? Math.fround(0.01) * v : v), { alpha: 0.01 });
  });

  it("MatMul accumulates wide and rounds once per output", () => {
    // 2048 + 1 + 1: a running half sum would stick at 2048 (2049 ties to even); wide gives 2050
    const a = h16([1, 3], [2048, 1, 1]);
    const w = h16([3, 1], [1, 1, 1]);
    const y = run("MatMul", [a, w]);
    expect(values(y)).toEqual({ dtype: "float16", shape: [1, 1], data: [2050] });
    expect(values(run("ReduceSum", [a], { axes: [1], keepdims: 0 })).data).toEqual([2050]);
    const g = run("Gemm", [a, w, h16([1], [0.5])]);
    expect(values(g).data).toEqual([2050]); // 2050.5 rounds to the half 2050
  });

  it("Softmax and TopK on half", () => {
    const s = run("Softmax", [h16([1, 3], [0, 1, 2])], { axis: 1 });
    const e = [0, 1, 2].map(Math.exp);
    const sum = e.reduce((p, q) => p + q);
    expect(values(s).data).toEqual(e.map((v) => halfToFloat(floatToHalf(Math.fround(v / sum)))));
    // negative halves have larger bit patterns: TopK must compare values, not bits
    const [v, i] = runKernel("TopK", [h16([4], [-2, 0.5, -0.25, 3])], { k: 2, axis: -1, largest: 1 });
    expect(values(v!).data).toEqual([3, 0.5]);
    expect(values(i!)).toEqual({ dtype: "int64", shape: [2], data: [3, 1] });
  });

  it("comparisons and NonZero read values: −2 < 1, and −0 is zero", () => {
    expect(values(run("Less", [h16([3], [-2, 1, -0]), h16([3], [1, -2, 0])])).data).toEqual([1, 0, 0]);
    expect(values(run("Equal", [bits([2], [0x8000, 0x7e00]), bits([2], [0x0000, 0x7e00])])).data).toEqual([1, 0]); // −0 = 0; NaN ≠ NaN
    expect(values(run("NonZero", [bits([4], [0x8000, 0x3c00, 0, 0x7e00])], { dim: "n" }))).toEqual({ dtype: "int64", shape: [1, 2], data: [1, 3] });
  });

  it("ScatterND adds in half", () => {
    const data = h16([3, 2], [1, 2, 3, 4, 5, 6]);
    const out = run("ScatterND", [data, i64([1, 1], [1]), h16([1, 2], [0.5, 2048])], { reduction: "add" });
    expect(values(out).data).toEqual([1, 2, 3.5, 2052, 5, 6]);
  });
});

describe("shape and indexing kernels move half bit patterns as they are", () => {
  // −0, a NaN with a payload, a subnormal, infinity: a float round trip could lose any of them
  const odd = [0x8000, 0x7e01, 0x0001, 0xfc00, 0x3c00, 0x4000];
  const x = bits([2, 3], odd);
  const same = (t: Tensor, want: number[]) => {
    expect(t.dtype).toBe("float16");
    expect(Array.from(t.data as Uint16Array)).toEqual(want);
  };

  it("Identity, Reshape, Squeeze, Unsqueeze, Transpose, Slice, Concat, Gather, GatherElements, Where", () => {
    same(run("Identity", [x]), odd);
    same(run("Reshape", [x], { shape: [3, 2] }), odd);
    same(run("Squeeze", [run("Unsqueeze", [x], { axes: [0] })], { axes: [0] }), odd);
    same(run("Transpose", [x], { perm: [1, 0] }), [0x8000, 0xfc00, 0x7e01, 0x3c00, 0x0001, 0x4000]);
    same(run("Slice", [x], { starts: [1], ends: [3], axes: [1] }), [0x7e01, 0x0001, 0x3c00, 0x4000]);
    same(run("Concat", [x, x], { axis: 0 }), [...odd, ...odd]);
    same(run("Gather", [x, i64([2], [1, 0])], { axis: 0 }), [0xfc00, 0x3c00, 0x4000, 0x8000, 0x7e01, 0x0001]);
    same(run("GatherElements", [x, i64([2, 1], [2, 0])], { axis: 1 }), [0x0001, 0xfc00]);
    same(run("Where", [bool([3], [1, 0, 1]), x, bits([], [0x5555])]), [0x8000, 0x5555, 0x0001, 0xfc00, 0x5555, 0x4000]);
    same(run("ScatterND", [x, i64([1, 1], [0]), bits([1, 3], [1, 2, 3])]), [1, 2, 3, 0xfc00, 0x3c00, 0x4000]);
  });
});

describe("every op with a float operand accepts float16", () => {
  // the ops whose IR rule takes float operands, with attributes and operands that suit them
  const x = h16([2, 2], [0.5, -1, 2, 0.25]);
  const cases: Partial<Record<(typeof OP_KINDS)[number], Tensor[] | [Tensor[], object]>> = {
    Sqrt: [h16([2], [4, 0.25])],
    Log: [h16([2], [4, 0.25])],
    Abs: [x],
    Erf: [x],
    Gelu: [x],
    Sub: [x, x],
    Min: [x, x],
    Greater: [x, x],
    GreaterOrEqual: [x, x],
    LogSoftmax: [[x], { axis: 1 }],
    ReduceMax: [[x], { axes: [1], keepdims: 1 }],
    ReduceMin: [[x], { axes: [1], keepdims: 1 }],
    ReduceMean: [[x], { axes: [1], keepdims: 1 }],
    ReduceLogSumExp: [[x], { axes: [1], keepdims: 1 }],
  };
  it.each(Object.entries(cases))("%s: the half of its float32 result", (op, c) => {
    const [ins, attrs] = Array.isArray(c) && Array.isArray(c[0]) ? (c as [Tensor[], object]) : [c as Tensor[], {}];
    const got = KERNELS[op as (typeof OP_KINDS)[number]](ins, attrs as never)[0]!;
    const wide = KERNELS[op as (typeof OP_KINDS)[number]](
      ins.map((t) => f32(t.shape, Array.from(t.data as Uint16Array, halfToFloat))),
      attrs as never,
    )[0]!;
    if (wide.dtype === "bool") expect(values(got)).toEqual(values(wide));
    else {
      expect(got.dtype).toBe("float16");
      expect(Array.from(got.data as Uint16Array)).toEqual(Array.from(wide.data as Float32Array, floatToHalf));
    }
  });
});

describe("a float16 graph", () => {
  it("runs: float32 in, half inside, float32 out", () => {
    const g = new Graph("half");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
    const w = g.addConstant("w", h16([2, 2], [1, -1, 0.5, 2]));
    const b = g.addConstant("b", h16([2], [0.25, 0]));
    const xh = g.op("Cast", [x], { to: "float16" });
    const y = g.op("Relu", [g.op("Add", [g.op("MatMul", [xh, w]), b])]);
    expect(y.type.dtype).toBe("float16");
    g.setOutput("y", g.op("Cast", [y], { to: "float32" }));
    const out = runGraph(g, { x: f32([2, 2], [1, 2, 0.1, -3]) })["y"]!;
    expect(out.data).toBeInstanceOf(Float32Array);
    const h = (v: number) => halfToFloat(floatToHalf(v));
    const x1 = h(0.1);
    expect(Array.from(out.data as Float32Array)).toEqual([
      h(h(1 + 1) + 0.25),
      h(h(-1 + 4) + 0),
      h(h(x1 - 1.5) + 0.25) > 0 ? h(h(x1 - 1.5) + 0.25) : 0,
      h(h(-x1 - 6) + 0) > 0 ? h(h(-x1 - 6)) : 0,
    ]);
  });
});
