// One kernel per IR op, with ONNX semantics, on dense host tensors. This table defines
// what the ops mean: the interpreter, constant folding and pass tests all run it.
//
// Numerics: float32 results are computed in float64 from the float32 operands and
// rounded once when stored (elementwise ops are therefore correctly rounded, or within
// an ulp for transcendental ones); MatMul, Gemm, reductions and softmaxes accumulate in
// float64 and round once at the end. This is at least as accurate as ONNX Runtime,
// which accumulates in float32. float16 tensors (Uint16Array bit patterns) move through
// the shape and indexing kernels as they are; every other kernel widens them exactly to
// float32, computes as above, and rounds its float results to half (viaFloat32).
// Kernels never mutate their inputs, so shape-only ops (Reshape, Squeeze, Unsqueeze,
// Identity) share the input's data.

import { InvariantError, assertNever, invariant } from "../../core/diagnostics.ts";
import { type DType, type Tensor, allocData, floatToHalf, halfToFloat, numel } from "../../core/tensor.ts";
import { attrInt, attrInts, attrString, normAxis } from "../../ir/infer.ts";
import type { Attrs, OpKind } from "../../ir/ops.ts";
import { erf, gelu } from "./erf.ts";

export type Kernel = (inputs: Tensor[], attrs: Attrs) => Tensor[];

/** Indexed read/write over any TensorData; element types match because dtypes are checked first. */
type Elements = { [index: number]: number | bigint; length: number };
type Floats = Float32Array | Float64Array;

// ---------------------------------------------------------------- helpers

function checkDtype(t: Tensor, op: string): void {
  invariant(
    t.data.length === numel(t.shape),
    () => `${op}: tensor holds ${t.data.length} values, shape [${t.shape}] needs ${numel(t.shape)}`,
  );
}

function requireFloat(t: Tensor, op: string): Floats {
  checkDtype(t, op);
  if (t.dtype !== "float32" && t.dtype !== "float64") throw new InvariantError(`${op}: expects a float tensor, got ${t.dtype}`);
  return t.data as Floats;
}

function requireSameDtype(ts: Tensor[], op: string): DType {
  for (const t of ts) checkDtype(t, op);
  const dt = ts[0]!.dtype;
  for (const t of ts) if (t.dtype !== dt) throw new InvariantError(`${op}: operands must share a dtype, got ${ts.map((x) => x.dtype).join(", ")}`);
  return dt;
}

function requireIndices(t: Tensor, op: string): BigInt64Array | Int32Array {
  checkDtype(t, op);
  if (t.dtype !== "int64" && t.dtype !== "int32") throw new InvariantError(`${op}: indices must be int64 or int32, got ${t.dtype}`);
  return t.data as BigInt64Array | Int32Array;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/** Row-major strides of a shape. */
function stridesOf(shape: readonly number[]): number[] {
  const st = new Array<number>(shape.length);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    st[i] = s;
    s *= shape[i]!;
  }
  return st;
}

/** Numpy broadcasting of concrete shapes. */
export function broadcastShape(shapes: readonly (readonly number[])[], op = "broadcast"): number[] {
  const rank = Math.max(0, ...shapes.map((s) => s.length));
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    let d = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d === 1) d = x;
      else if (d !== x) throw new InvariantError(`${op}: cannot broadcast ${shapes.map((s) => `[${s}]`).join(" with ")}`);
    }
    out.push(d);
  }
  return out;
}

/**
 * For each element of `out` (row-major), the offset of the element of a tensor of shape
 * `shape` that broadcasts onto it; null when the shapes are equal (the identity map).
 * The map is computed once per op, so the arithmetic loops are plain indexed reads.
 */
export function broadcastIndex(out: readonly number[], shape: readonly number[]): Int32Array | null {
  if (sameShape(out, shape)) return null;
  const R = out.length;
  const st = new Array<number>(R).fill(0);
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    const r = R - shape.length + i;
    st[r] = shape[i] === 1 ? 0 : s;
    s *= shape[i]!;
  }
  return walkOffsets(out, st, 0);
}

/**
 * Offsets `base + Σ_d c_d·strides[d]` for every multi-index c of `shape`, in row-major
 * order: the strided walk behind broadcasting, transposes, slices and reductions.
 */
function walkOffsets(shape: readonly number[], strides: readonly number[], base: number): Int32Array {
  const n = numel(shape);
  const idx = new Int32Array(n);
  if (n === 0) return idx;
  const R = shape.length;
  const inner = R ? shape[R - 1]! : 1;
  const sInner = R ? strides[R - 1]! : 0;
  const counter = new Array<number>(Math.max(R - 1, 0)).fill(0);
  let off = base;
  for (let o = 0; o < n; o += inner) {
    for (let j = 0; j < inner; j++) idx[o + j] = off + j * sInner;
    for (let d = R - 2; d >= 0; d--) {
      counter[d]!++;
      off += strides[d]!;
      if (counter[d]! < shape[d]!) break;
      off -= strides[d]! * shape[d]!;
      counter[d] = 0;
    }
  }
  return idx;
}

function normAxes(axes: readonly number[], rank: number, op: string): number[] {
  const out = axes.map((a) => normAxis(a, rank));
  if (new Set(out).size !== out.length) throw new InvariantError(`${op}: repeated axis in [${axes}]`);
  return out;
}

function reshaped(t: Tensor, shape: number[]): Tensor {
  return { dtype: t.dtype, shape, data: t.data };
}

// ---------------------------------------------------------------- float16

/** Every half bit pattern as a number (exact): 256 KiB, built on first use. */
let halfTable: Float32Array | null = null;

function halfValues(): Float32Array {
  if (!halfTable) {
    halfTable = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloat(h);
  }
  return halfTable;
}

/**
 * The half nearest `x`, ties to even, rounded once from `x` itself: floatToHalf rounds
 * through float32 first, which can land on a half tie that `x` is not on (a float64 Cast).
 */
export function roundToHalf(x: number): number {
  const h = floatToHalf(x);
  if (x === Math.fround(x) || !Number.isFinite(x)) return h; // float32: floatToHalf rounds once
  const v = halfToFloat(h);
  if (v === x) return h;
  const sign = h & 0x8000;
  const mag = Math.abs(x);
  if (!Number.isFinite(v)) return mag >= 65520 ? h : sign | 0x7bff; // 65520 is the tie between 65504 and ∞
  // the other candidate: one half step on x's side of v (away from 0 when |v| < |x|)
  const other = Math.abs(v) < mag ? h + 1 : h - 1;
  const w = halfToFloat(other);
  const dv = Math.abs(x - v);
  const dw = Math.abs(x - w);
  if (dw < dv || (dw === dv && (other & 1) === 0)) return other;
  return h;
}

/** A float16 tensor as float32 (exact); any other tensor as it is. */
function widenHalf(t: Tensor): Tensor {
  if (t.dtype !== "float16") return t;
  checkDtype(t, "float16");
  const table = halfValues();
  const X = t.data as Uint16Array;
  const out = new Float32Array(X.length);
  for (let i = 0; i < X.length; i++) out[i] = table[X[i]!]!;
  return { dtype: "float32", shape: t.shape, data: out };
}

/**
 * float32 values as half bit patterns, each rounded to nearest even: floatToHalf's rule, with
 * the common case (a normal half) done on the float32 bits in the loop.
 */
export function halvesOf(X: Float32Array): Uint16Array {
  const B = new Uint32Array(X.buffer, X.byteOffset, X.length);
  const out = new Uint16Array(X.length);
  for (let i = 0; i < B.length; i++) {
    const b = B[i]!;
    const e = ((b >>> 23) & 0xff) - 112; // half exponent field
    if (e <= 0 || e >= 31) {
      out[i] = floatToHalf(X[i]!); // zero, subnormal, overflow, infinity, NaN
      continue;
    }
    const mant = b & 0x7fffff;
    let r = (e << 10) | (mant >>> 13);
    const rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest === 0x1000 && r & 1)) r++; // a carry into the exponent is right, up to ∞
    out[i] = ((b >>> 16) & 0x8000) | r;
  }
  return out;
}

function narrowToHalf(t: Tensor): Tensor {
  return { dtype: "float16", shape: t.shape, data: halvesOf(t.data as Float32Array) };
}

/**
 * float16 through a float32 kernel: half operands are widened exactly, the kernel computes
 * in float64 and rounds to float32, and its float results are rounded again to half (the
 * IR gives an op on half operands half results). Double rounding through float32 is off
 * by one half ULP only when the float32 result lands exactly on a half tie, and is what ONNX
 * Runtime's CPU provider does where it runs a half op as float32 between casts.
 */
function viaFloat32(k: Kernel): Kernel {
  return (ins, attrs) => {
    if (!ins.some((t) => t.dtype === "float16")) return k(ins, attrs);
    return k(ins.map(widenHalf), attrs).map((t) => (t.dtype === "float32" ? narrowToHalf(t) : t));
  };
}

// ---------------------------------------------------------------- elementwise

type BinaryOp = "Add" | "Sub" | "Mul" | "Div" | "Max" | "Min";

function binary(op: BinaryOp): Kernel {
  return ([a, b]) => {
    const dtype = requireSameDtype([a!, b!], op);
    if (dtype === "bool") throw new InvariantError(`${op}: bool operands are not supported`);
    const shape = broadcastShape([a!.shape, b!.shape], op);
    const n = numel(shape);
    const ia = broadcastIndex(shape, a!.shape);
    const ib = broadcastIndex(shape, b!.shape);
    const out = allocData(dtype, n);
    if (dtype === "int64") binaryBigInt(op, a!.data as BigInt64Array, b!.data as BigInt64Array, ia, ib, out as BigInt64Array);
    else if (dtype === "int32") binaryInt32(op, a!.data as Int32Array, b!.data as Int32Array, ia, ib, out as Int32Array);
    else binaryFloat(op, a!.data as Floats, b!.data as Floats, ia, ib, out as Floats);
    return [{ dtype, shape, data: out }];
  };
}

function binaryFloat(op: BinaryOp, A: Floats, B: Floats, ia: Int32Array | null, ib: Int32Array | null, out: Floats): void {
  const n = out.length;
  for (let i = 0; i < n; i++) {
    const x = A[ia ? ia[i]! : i]!;
    const y = B[ib ? ib[i]! : i]!;
    switch (op) {
      case "Add":
        out[i] = x + y;
        break;
      case "Sub":
        out[i] = x - y;
        break;
      case "Mul":
        out[i] = x * y;
        break;
      case "Div":
        out[i] = x / y;
        break;
      case "Max":
        out[i] = Math.max(x, y);
        break;
      case "Min":
        out[i] = Math.min(x, y);
        break;
    }
  }
}

/** Clip(x, lo, hi) = Min(Max(x, lo), hi), as ONNX defines it (lo > hi gives hi everywhere). */
function clipKernel(ins: Tensor[], attrs: Attrs): Tensor[] {
  const [x, lo, hi] = ins as [Tensor, Tensor, Tensor];
  if (lo.shape.length !== 0 || hi.shape.length !== 0) throw new InvariantError("Clip: min and max must be scalars");
  const [raised] = binary("Max")([x, lo], attrs);
  return binary("Min")([raised!, hi], attrs);
}

/** int64 arithmetic wraps modulo 2⁶⁴ (BigInt64Array stores do), as in ONNX Runtime; division truncates. */
function binaryBigInt(op: BinaryOp, A: BigInt64Array, B: BigInt64Array, ia: Int32Array | null, ib: Int32Array | null, out: BigInt64Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) {
    const x = A[ia ? ia[i]! : i]!;
    const y = B[ib ? ib[i]! : i]!;
    switch (op) {
      case "Add":
        out[i] = x + y;
        break;
      case "Sub":
        out[i] = x - y;
        break;
      case "Mul":
        out[i] = x * y;
        break;
      case "Div":
        if (y === 0n) throw new InvariantError("Div: integer division by zero");
        out[i] = x / y;
        break;
      case "Max":
        out[i] = x > y ? x : y;
        break;
      case "Min":
        out[i] = x < y ? x : y;
        break;
    }
  }
}

function binaryInt32(op: BinaryOp, A: Int32Array, B: Int32Array, ia: Int32Array | null, ib: Int32Array | null, out: Int32Array): void {
  const n = out.length;
  for (let i = 0; i < n; i++) {
    const x = A[ia ? ia[i]! : i]!;
    const y = B[ib ? ib[i]! : i]!;
    switch (op) {
      case "Add":
        out[i] = x + y;
        break;
      case "Sub":
        out[i] = x - y;
        break;
      case "Mul":
        out[i] = Math.imul(x, y);
        break;
      case "Div":
        if (y === 0) throw new InvariantError("Div: integer division by zero");
        out[i] = Math.trunc(x / y);
        break;
      case "Max":
        out[i] = Math.max(x, y);
        break;
      case "Min":
        out[i] = Math.min(x, y);
        break;
    }
  }
}

type CompareOp = "Less" | "Greater" | "GreaterOrEqual" | "Equal";

/** Comparisons of any dtype (numbers or bigints; both operands share one) into bool. */
function compare(op: CompareOp): Kernel {
  return ([a, b]) => {
    requireSameDtype([a!, b!], op);
    const shape = broadcastShape([a!.shape, b!.shape], op);
    const n = numel(shape);
    const ia = broadcastIndex(shape, a!.shape);
    const ib = broadcastIndex(shape, b!.shape);
    // Both arrays hold numbers, or both bigints: the relational operators compare either.
    const A = a!.data as unknown as ArrayLike<number>;
    const B = b!.data as unknown as ArrayLike<number>;
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) {
      const x = A[ia ? ia[i]! : i]!;
      const y = B[ib ? ib[i]! : i]!;
      switch (op) {
        case "Less":
          out[i] = x < y ? 1 : 0;
          break;
        case "Greater":
          out[i] = x > y ? 1 : 0;
          break;
        case "GreaterOrEqual":
          out[i] = x >= y ? 1 : 0;
          break;
        case "Equal":
          out[i] = x === y ? 1 : 0;
          break;
      }
    }
    return [{ dtype: "bool", shape, data: out }];
  };
}

function logic(op: "And" | "Or"): Kernel {
  return ([a, b]) => {
    for (const t of [a!, b!]) if (t.dtype !== "bool") throw new InvariantError(`${op}: operands must be bool, got ${t.dtype}`);
    const shape = broadcastShape([a!.shape, b!.shape], op);
    const n = numel(shape);
    const ia = broadcastIndex(shape, a!.shape);
    const ib = broadcastIndex(shape, b!.shape);
    const A = a!.data as Uint8Array;
    const B = b!.data as Uint8Array;
    const out = new Uint8Array(n);
    if (op === "And") for (let i = 0; i < n; i++) out[i] = A[ia ? ia[i]! : i]! && B[ib ? ib[i]! : i]! ? 1 : 0;
    else for (let i = 0; i < n; i++) out[i] = A[ia ? ia[i]! : i]! || B[ib ? ib[i]! : i]! ? 1 : 0;
    return [{ dtype: "bool", shape, data: out }];
  };
}

const notKernel: Kernel = ([a]) => {
  if (a!.dtype !== "bool") throw new InvariantError(`Not: operand must be bool, got ${a!.dtype}`);
  const A = a!.data as Uint8Array;
  const out = new Uint8Array(A.length);
  for (let i = 0; i < A.length; i++) out[i] = A[i] ? 0 : 1;
  return [{ dtype: "bool", shape: [...a!.shape], data: out }];
};

const whereKernel: Kernel = ([c, x, y]) => {
  if (c!.dtype !== "bool") throw new InvariantError(`Where: condition must be bool, got ${c!.dtype}`);
  const dtype = requireSameDtype([x!, y!], "Where");
  const shape = broadcastShape([c!.shape, x!.shape, y!.shape], "Where");
  const n = numel(shape);
  const ic = broadcastIndex(shape, c!.shape);
  const ix = broadcastIndex(shape, x!.shape);
  const iy = broadcastIndex(shape, y!.shape);
  const C = c!.data as Uint8Array;
  const X = x!.data as unknown as Elements;
  const Y = y!.data as unknown as Elements;
  const data = allocData(dtype, n);
  const out = data as unknown as Elements;
  for (let i = 0; i < n; i++) out[i] = C[ic ? ic[i]! : i] ? X[ix ? ix[i]! : i]! : Y[iy ? iy[i]! : i]!;
  return [{ dtype, shape, data }];
};

type UnaryFloatOp = "Exp" | "Log" | "Sqrt" | "Relu" | "LeakyRelu" | "Tanh" | "Sigmoid" | "Erf" | "Gelu";

function unaryFloat(op: UnaryFloatOp): Kernel {
  return ([a], attrs) => {
    const X = requireFloat(a!, op);
    const n = X.length;
    const out = a!.dtype === "float32" ? new Float32Array(n) : new Float64Array(n);
    switch (op) {
      case "Exp":
        for (let i = 0; i < n; i++) out[i] = Math.exp(X[i]!);
        break;
      case "Log":
        for (let i = 0; i < n; i++) out[i] = Math.log(X[i]!);
        break;
      case "Sqrt":
        for (let i = 0; i < n; i++) out[i] = Math.sqrt(X[i]!);
        break;
      case "Relu":
        for (let i = 0; i < n; i++) out[i] = X[i]! < 0 ? 0 : X[i]!; // NaN stays NaN
        break;
      case "LeakyRelu": {
        // ONNX float attributes are float32: the slope is the float32 nearest alpha.
        const alpha = Math.fround(attrInt(attrs, "alpha", 0.01));
        for (let i = 0; i < n; i++) out[i] = X[i]! < 0 ? alpha * X[i]! : X[i]!;
        break;
      }
      case "Tanh":
        for (let i = 0; i < n; i++) out[i] = Math.tanh(X[i]!);
        break;
      case "Sigmoid":
        for (let i = 0; i < n; i++) out[i] = 1 / (1 + Math.exp(-X[i]!));
        break;
      case "Erf":
        for (let i = 0; i < n; i++) out[i] = erf(X[i]!);
        break;
      case "Gelu": {
        const approx = attrs["approximate"];
        if (approx !== undefined && approx !== "none") throw new InvariantError(`Gelu: approximate=${JSON.stringify(approx)} is not supported (exact form only)`);
        for (let i = 0; i < n; i++) out[i] = gelu(X[i]!);
        break;
      }
      default:
        assertNever(op, "unary op");
    }
    return [{ dtype: a!.dtype, shape: [...a!.shape], data: out }];
  };
}

function negAbs(op: "Neg" | "Abs"): Kernel {
  return ([a]) => {
    checkDtype(a!, op);
    const n = a!.data.length;
    const data = allocData(a!.dtype, n);
    if (a!.dtype === "int64") {
      const X = a!.data as BigInt64Array;
      const out = data as BigInt64Array;
      for (let i = 0; i < n; i++) out[i] = op === "Neg" || X[i]! < 0n ? -X[i]! : X[i]!;
    } else if (a!.dtype === "bool") {
      throw new InvariantError(`${op}: bool operand is not supported`);
    } else {
      const X = a!.data as Float32Array | Float64Array | Int32Array;
      const out = data as Float32Array | Float64Array | Int32Array;
      if (op === "Neg") for (let i = 0; i < n; i++) out[i] = -X[i]!;
      else for (let i = 0; i < n; i++) out[i] = Math.abs(X[i]!);
    }
    return [{ dtype: a!.dtype, shape: [...a!.shape], data }];
  };
}

/**
 * Cast between float32/float64/float16/int64/int32/bool: floats to integers truncate toward
 * zero (a non-finite value is an error rather than ONNX's undefined result); anything to
 * bool is `≠ 0`; int64 to float rounds to nearest.
 */
const castKernel: Kernel = ([input], attrs) => {
  checkDtype(input!, "Cast");
  // half → float32 is exact, so a cast from half is a cast from its float32 value
  const a = widenHalf(input!);
  const to = attrString(attrs, "to") as DType;
  const n = a.data.length;
  const data = allocData(to, n);
  const from = a.dtype;
  if (to === "float16") {
    // rounded once to nearest even (float64 too: roundToHalf does not go through float32)
    const out = data as Uint16Array;
    if (from === "int64") {
      const X = a.data as BigInt64Array;
      for (let i = 0; i < n; i++) out[i] = roundToHalf(Number(X[i]!));
    } else {
      const X = a.data as Float32Array | Float64Array | Int32Array | Uint8Array;
      for (let i = 0; i < n; i++) out[i] = roundToHalf(X[i]!);
    }
  } else if (to === "int64") {
    const out = data as BigInt64Array;
    if (from === "int64") out.set(a!.data as BigInt64Array);
    else {
      const X = a!.data as Float32Array | Float64Array | Int32Array | Uint8Array;
      for (let i = 0; i < n; i++) {
        const v = X[i]!;
        if (!Number.isFinite(v)) throw new InvariantError(`Cast: cannot cast ${v} to int64`);
        out[i] = BigInt(Math.trunc(v));
      }
    }
  } else if (to === "bool") {
    const out = data as Uint8Array;
    if (from === "int64") {
      const X = a!.data as BigInt64Array;
      for (let i = 0; i < n; i++) out[i] = X[i] !== 0n ? 1 : 0;
    } else {
      const X = a!.data as Float32Array | Float64Array | Int32Array | Uint8Array;
      for (let i = 0; i < n; i++) out[i] = X[i] !== 0 ? 1 : 0; // NaN → true, as in C++
    }
  } else {
    const out = data as Float32Array | Float64Array | Int32Array;
    if (from === "int64") {
      const X = a!.data as BigInt64Array;
      for (let i = 0; i < n; i++) out[i] = Number(X[i]!);
    } else {
      const X = a!.data as Float32Array | Float64Array | Int32Array | Uint8Array;
      if (to === "int32") {
        for (let i = 0; i < n; i++) {
          if (!Number.isFinite(X[i]!)) throw new InvariantError(`Cast: cannot cast ${X[i]} to int32`);
          out[i] = Math.trunc(X[i]!);
        }
      } else out.set(X); // typed-array set converts (rounding to float32 where needed)
    }
  }
  return [{ dtype: to, shape: [...a!.shape], data }];
};

const identityKernel: Kernel = ([a]) => {
  checkDtype(a!, "Identity");
  return [reshaped(a!, [...a!.shape])];
};

// ---------------------------------------------------------------- linear algebra

/**
 * Numpy matmul: 1-D operands are promoted (and the added dim dropped again), leading
 * dims broadcast. i-k-j loop order over a float64 row accumulator, rounded once per output.
 */
const matmulKernel: Kernel = ([a, b]) => {
  const A = requireFloat(a!, "MatMul");
  const B = requireFloat(b!, "MatMul");
  requireSameDtype([a!, b!], "MatMul");
  const aS = a!.shape.length === 1 ? [1, a!.shape[0]!] : a!.shape;
  const bS = b!.shape.length === 1 ? [b!.shape[0]!, 1] : b!.shape;
  if (aS.length < 2 || bS.length < 2) throw new InvariantError("MatMul: operands must have rank ≥ 1");
  const M = aS[aS.length - 2]!;
  const K = aS[aS.length - 1]!;
  const N = bS[bS.length - 1]!;
  if (bS[bS.length - 2] !== K) throw new InvariantError(`MatMul: inner dims differ: [${a!.shape}] × [${b!.shape}]`);
  const aBatch = aS.slice(0, -2);
  const bBatch = bS.slice(0, -2);
  const batch = broadcastShape([aBatch, bBatch], "MatMul");
  const nb = numel(batch);
  const ia = broadcastIndex(batch, aBatch);
  const ib = broadcastIndex(batch, bBatch);
  const out = a!.dtype === "float32" ? new Float32Array(nb * M * N) : new Float64Array(nb * M * N);
  const acc = new Float64Array(N);
  for (let p = 0; p < nb; p++) {
    const aOff = (ia ? ia[p]! : p) * M * K;
    const bOff = (ib ? ib[p]! : p) * K * N;
    const oOff = p * M * N;
    for (let i = 0; i < M; i++) {
      acc.fill(0);
      const aRow = aOff + i * K;
      for (let k = 0; k < K; k++) {
        const av = A[aRow + k]!;
        const bRow = bOff + k * N;
        for (let j = 0; j < N; j++) acc[j]! += av * B[bRow + j]!;
      }
      const oRow = oOff + i * N;
      for (let j = 0; j < N; j++) out[oRow + j] = acc[j]!;
    }
  }
  const shape = [...batch, M, N];
  if (a!.shape.length === 1) shape.splice(shape.length - 2, 1);
  if (b!.shape.length === 1) shape.splice(shape.length - 1, 1);
  return [{ dtype: a!.dtype, shape, data: out }];
};

/** Y = alpha·op(A)·op(B) + beta·C, with C broadcast to [M, N] (ONNX Gemm). */
const gemmKernel: Kernel = (ins, attrs) => {
  const [a, b, c] = ins;
  const A = requireFloat(a!, "Gemm");
  const B = requireFloat(b!, "Gemm");
  requireSameDtype(ins, "Gemm");
  if (a!.shape.length !== 2 || b!.shape.length !== 2) throw new InvariantError("Gemm: operands must be 2-D");
  const tA = attrInt(attrs, "transA", 0) !== 0;
  const tB = attrInt(attrs, "transB", 0) !== 0;
  const alpha = Math.fround(attrInt(attrs, "alpha", 1));
  const beta = Math.fround(attrInt(attrs, "beta", 1));
  const [M, K] = tA ? [a!.shape[1]!, a!.shape[0]!] : [a!.shape[0]!, a!.shape[1]!];
  const [K2, N] = tB ? [b!.shape[1]!, b!.shape[0]!] : [b!.shape[0]!, b!.shape[1]!];
  if (K !== K2) throw new InvariantError(`Gemm: inner dims differ: ${K} vs ${K2}`);
  // element strides of op(A)[i,k] and op(B)[k,j]
  const [aI, aK] = tA ? [1, M] : [K, 1];
  const [bK, bJ] = tB ? [1, K] : [N, 1];
  const ic = c ? broadcastIndex([M, N], c.shape) : null;
  if (c) broadcastShape([[M, N], c.shape], "Gemm");
  const C = c ? (c.data as Floats) : null;
  const out = a!.dtype === "float32" ? new Float32Array(M * N) : new Float64Array(M * N);
  const acc = new Float64Array(N);
  for (let i = 0; i < M; i++) {
    acc.fill(0);
    for (let k = 0; k < K; k++) {
      const av = A[i * aI + k * aK]!;
      const bRow = k * bK;
      for (let j = 0; j < N; j++) acc[j]! += av * B[bRow + j * bJ]!;
    }
    for (let j = 0; j < N; j++) {
      const o = i * N + j;
      out[o] = alpha * acc[j]! + (C ? beta * C[ic ? ic[o]! : o]! : 0);
    }
  }
  return [{ dtype: a!.dtype, shape: [M, N], data: out }];
};

// ---------------------------------------------------------------- normalisation and reductions

/** Softmax / LogSoftmax along one axis (opset ≥ 13), max-subtracted, in float64. */
function softmaxKernel(log: boolean): Kernel {
  const op = log ? "LogSoftmax" : "Softmax";
  return ([a], attrs) => {
    const X = requireFloat(a!, op);
    const shape = a!.shape;
    const axis = normAxis(attrInt(attrs, "axis", -1), shape.length);
    const n = shape[axis]!;
    const inner = numel(shape.slice(axis + 1));
    const outer = numel(shape.slice(0, axis));
    const out = a!.dtype === "float32" ? new Float32Array(X.length) : new Float64Array(X.length);
    for (let o = 0; o < outer; o++)
      for (let q = 0; q < inner; q++) {
        const base = o * n * inner + q;
        let max = -Infinity;
        for (let k = 0; k < n; k++) {
          const v = X[base + k * inner]!;
          if (v > max || Number.isNaN(v)) max = v;
        }
        let sum = 0;
        for (let k = 0; k < n; k++) sum += Math.exp(X[base + k * inner]! - max);
        if (log) {
          const ls = Math.log(sum);
          for (let k = 0; k < n; k++) out[base + k * inner] = X[base + k * inner]! - max - ls;
        } else for (let k = 0; k < n; k++) out[base + k * inner] = Math.exp(X[base + k * inner]! - max) / sum;
      }
    return [{ dtype: a!.dtype, shape: [...shape], data: out }];
  };
}

type ReduceOp = "ReduceSum" | "ReduceMax" | "ReduceMin" | "ReduceMean" | "ReduceLogSumExp";

/**
 * Reductions over `axes` with `keepdims` (default 1). An empty axes list reduces
 * nothing, matching the IR's shape rule (ONNX would reduce all axes).
 */
function reduce(op: ReduceOp): Kernel {
  return ([a], attrs) => {
    const X = requireFloat(a!, op);
    const shape = a!.shape;
    const axes = normAxes(attrInts(attrs, "axes"), shape.length, op);
    const keep = attrInt(attrs, "keepdims", 1) === 1;
    const kept = shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const outShape = keep ? kept : shape.filter((_, i) => !axes.includes(i));
    const nOut = numel(kept);
    const count = numel(shape) / Math.max(nOut, 1);
    // dest[i]: the output element input element i reduces into
    const dest = walkOffsets(shape, stridesOf(kept).map((s, i) => (axes.includes(i) ? 0 : s)), 0);
    const acc = new Float64Array(nOut);
    const n = X.length;
    switch (op) {
      case "ReduceSum":
      case "ReduceMean":
        for (let i = 0; i < n; i++) acc[dest[i]!]! += X[i]!;
        if (op === "ReduceMean") for (let o = 0; o < nOut; o++) acc[o]! /= count;
        break;
      case "ReduceMax":
        acc.fill(-Infinity);
        for (let i = 0; i < n; i++) acc[dest[i]!] = Math.max(acc[dest[i]!]!, X[i]!);
        break;
      case "ReduceMin":
        acc.fill(Infinity);
        for (let i = 0; i < n; i++) acc[dest[i]!] = Math.min(acc[dest[i]!]!, X[i]!);
        break;
      case "ReduceLogSumExp": {
        const max = new Float64Array(nOut).fill(-Infinity);
        for (let i = 0; i < n; i++) max[dest[i]!] = Math.max(max[dest[i]!]!, X[i]!);
        for (let i = 0; i < n; i++) {
          const m = max[dest[i]!]!;
          if (Number.isFinite(m)) acc[dest[i]!]! += Math.exp(X[i]! - m);
        }
        for (let o = 0; o < nOut; o++) acc[o] = Number.isFinite(max[o]!) ? max[o]! + Math.log(acc[o]!) : max[o]!;
        break;
      }
      default:
        assertNever(op, "reduction");
    }
    const out = a!.dtype === "float32" ? Float32Array.from(acc) : acc;
    return [{ dtype: a!.dtype, shape: outShape, data: out }];
  };
}

// ---------------------------------------------------------------- shape and indexing

const concatKernel: Kernel = (ins, attrs) => {
  const dtype = requireSameDtype(ins, "Concat");
  const rank = ins[0]!.shape.length;
  const axis = normAxis(attrInt(attrs, "axis"), rank);
  const shape = [...ins[0]!.shape];
  let total = 0;
  for (const t of ins) {
    if (t.shape.length !== rank || t.shape.some((d, i) => i !== axis && d !== shape[i]))
      throw new InvariantError(`Concat: shapes differ off axis ${axis}: ${ins.map((x) => `[${x.shape}]`).join(", ")}`);
    total += t.shape[axis]!;
  }
  shape[axis] = total;
  const outer = numel(shape.slice(0, axis));
  const inner = numel(shape.slice(axis + 1));
  const data = allocData(dtype, numel(shape));
  const out = data as unknown as { set(src: ArrayLike<number | bigint>, offset: number): void };
  let col = 0;
  for (const t of ins) {
    const chunk = t.shape[axis]! * inner;
    const src = t.data as Float32Array; // any TensorData: subarray/set work alike
    for (let o = 0; o < outer; o++) out.set(src.subarray(o * chunk, (o + 1) * chunk), o * total * inner + col);
    col += chunk;
  }
  return [{ dtype, shape, data }];
};

function readIndex(I: BigInt64Array | Int32Array, i: number): number {
  return Number(I[i]!);
}

/** Gather along `axis` (default 0); negative indices wrap, others out of range are an error (as in ONNX Runtime). */
const gatherKernel: Kernel = ([data, idx], attrs) => {
  checkDtype(data!, "Gather");
  const I = requireIndices(idx!, "Gather");
  const axis = normAxis(attrInt(attrs, "axis", 0), data!.shape.length);
  const s = data!.shape[axis]!;
  const outer = numel(data!.shape.slice(0, axis));
  const inner = numel(data!.shape.slice(axis + 1));
  const shape = [...data!.shape.slice(0, axis), ...idx!.shape, ...data!.shape.slice(axis + 1)];
  const nIdx = I.length;
  const pos = new Int32Array(nIdx);
  for (let j = 0; j < nIdx; j++) {
    const v = readIndex(I, j);
    if (v < -s || v >= s) throw new InvariantError(`Gather: index ${v} out of range [${-s}, ${s})`);
    pos[j] = v < 0 ? v + s : v;
  }
  const out = allocData(data!.dtype, numel(shape));
  const src = data!.data as Float32Array;
  const dst = out as Float32Array; // any TensorData: subarray/set work alike
  for (let o = 0; o < outer; o++)
    for (let j = 0; j < nIdx; j++) {
      const from = (o * s + pos[j]!) * inner;
      dst.set(src.subarray(from, from + inner), (o * nIdx + j) * inner);
    }
  return [{ dtype: data!.dtype, shape, data: out }];
};

const gatherElementsKernel: Kernel = ([data, idx], attrs) => {
  checkDtype(data!, "GatherElements");
  const I = requireIndices(idx!, "GatherElements");
  const rank = data!.shape.length;
  if (idx!.shape.length !== rank) throw new InvariantError("GatherElements: indices must have the data's rank");
  const axis = normAxis(attrInt(attrs, "axis", 0), rank);
  const s = data!.shape[axis]!;
  const st = stridesOf(data!.shape);
  // offset of each output element with the axis coordinate zeroed, then add index·stride
  const base = walkOffsets(idx!.shape, st.map((x, i) => (i === axis ? 0 : x)), 0);
  const n = base.length;
  const X = data!.data as unknown as Elements;
  const out = allocData(data!.dtype, n);
  const O = out as unknown as Elements;
  for (let i = 0; i < n; i++) {
    const v = readIndex(I, i);
    if (v < -s || v >= s) throw new InvariantError(`GatherElements: index ${v} out of range [${-s}, ${s})`);
    O[i] = X[base[i]! + (v < 0 ? v + s : v) * st[axis]!]!;
  }
  return [{ dtype: data!.dtype, shape: [...idx!.shape], data: out }];
};

const unsqueezeKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Unsqueeze");
  const rank = a!.shape.length + attrInts(attrs, "axes").length;
  const axes = normAxes(attrInts(attrs, "axes"), rank, "Unsqueeze");
  const shape: number[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : a!.shape[j++]!);
  return [reshaped(a!, shape)];
};

const squeezeKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Squeeze");
  const axes = attrs["axes"] === undefined
    ? a!.shape.flatMap((d, i) => (d === 1 ? [i] : []))
    : normAxes(attrInts(attrs, "axes"), a!.shape.length, "Squeeze");
  for (const ax of axes) if (a!.shape[ax] !== 1) throw new InvariantError(`Squeeze: dim ${ax} of [${a!.shape}] is not 1`);
  return [reshaped(a!, a!.shape.filter((_, i) => !axes.includes(i)))];
};

/** Reshape with ONNX's allowzero = 0: 0 copies the input dim, one −1 is inferred. */
const reshapeKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Reshape");
  const target = attrInts(attrs, "shape");
  const shape = target.map((d, i) => {
    if (d !== 0) return d;
    const copied = a!.shape[i];
    if (copied === undefined) throw new InvariantError(`Reshape: 0 at position ${i} but the input has rank ${a!.shape.length}`);
    return copied;
  });
  const n = numel(a!.shape);
  const inferAt = shape.indexOf(-1);
  if (inferAt >= 0) {
    if (shape.indexOf(-1, inferAt + 1) >= 0) throw new InvariantError("Reshape: at most one -1");
    const known = shape.reduce((p, d, i) => (i === inferAt ? p : p * d), 1);
    if (known === 0 || n % known !== 0) throw new InvariantError(`Reshape: cannot reshape [${a!.shape}] to [${target}]`);
    shape[inferAt] = n / known;
  }
  if (shape.some((d) => d < 0) || numel(shape) !== n) throw new InvariantError(`Reshape: cannot reshape [${a!.shape}] to [${target}]`);
  return [reshaped(a!, shape)];
};

const transposeKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Transpose");
  const rank = a!.shape.length;
  const perm = attrs["perm"] === undefined ? [...Array(rank).keys()].reverse() : attrInts(attrs, "perm");
  if (perm.length !== rank || [...perm].sort((x, y) => x - y).some((p, i) => p !== i))
    throw new InvariantError(`Transpose: bad perm [${perm}] for rank ${rank}`);
  const st = stridesOf(a!.shape);
  const shape = perm.map((p) => a!.shape[p]!);
  const src = walkOffsets(shape, perm.map((p) => st[p]!), 0);
  const X = a!.data as unknown as Elements;
  const data = allocData(a!.dtype, src.length);
  const O = data as unknown as Elements;
  for (let i = 0; i < src.length; i++) O[i] = X[src[i]!]!;
  return [{ dtype: a!.dtype, shape, data }];
};

/** Split along `axis` into consecutive parts of the sizes in `split`. */
const splitKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Split");
  const shape = a!.shape;
  const axis = normAxis(attrInt(attrs, "axis", 0), shape.length);
  const sizes = attrInts(attrs, "split");
  if (sizes.reduce((x, y) => x + y, 0) !== shape[axis]) throw new InvariantError(`Split: sizes [${sizes}] do not add up to ${shape[axis]}`);
  const outer = numel(shape.slice(0, axis));
  const inner = numel(shape.slice(axis + 1));
  const n = shape[axis]!;
  const X = a!.data as unknown as Elements;
  let start = 0;
  return sizes.map((s) => {
    const data = allocData(a!.dtype, outer * s * inner);
    const O = data as unknown as Elements;
    for (let o = 0; o < outer; o++)
      for (let j = 0; j < s * inner; j++) O[o * s * inner + j] = X[(o * n + start) * inner + j]!;
    start += s;
    return { dtype: a!.dtype, shape: shape.map((d, i) => (i === axis ? s : d)), data };
  });
};

/**
 * Slice with unit steps: per axis, negative starts/ends count from the end, then both
 * are clamped to [0, dim] (ONNX's rule for positive steps); an empty range gives 0.
 */
const sliceKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "Slice");
  const rank = a!.shape.length;
  const starts = attrInts(attrs, "starts");
  const ends = attrInts(attrs, "ends");
  const axes = normAxes(attrs["axes"] === undefined ? starts.map((_, i) => i) : attrInts(attrs, "axes"), rank, "Slice");
  if (attrs["steps"] !== undefined && attrInts(attrs, "steps").some((s) => s !== 1))
    throw new InvariantError("Slice: only unit steps are supported");
  if (starts.length !== axes.length || ends.length !== axes.length)
    throw new InvariantError(`Slice: starts, ends and axes differ in length`);
  const shape = [...a!.shape];
  const begin = new Array<number>(rank).fill(0);
  axes.forEach((ax, i) => {
    const d = a!.shape[ax]!;
    const clamp = (x: number) => Math.min(Math.max(x < 0 ? x + d : x, 0), d);
    const s = clamp(starts[i]!);
    begin[ax] = s;
    shape[ax] = Math.max(0, clamp(ends[i]!) - s);
  });
  const st = stridesOf(a!.shape);
  const base = begin.reduce((p, b, i) => p + b * st[i]!, 0);
  const src = walkOffsets(shape, st, base);
  const X = a!.data as unknown as Elements;
  const data = allocData(a!.dtype, src.length);
  const O = data as unknown as Elements;
  for (let i = 0; i < src.length; i++) O[i] = X[src[i]!]!;
  return [{ dtype: a!.dtype, shape, data }];
};

/**
 * ArgMax/ArgMin along `axis` (default 0): the index of the largest (smallest) value, the first
 * of equal ones (the last with select_last_index = 1), as int64; keepdims (default 1) keeps the
 * axis as 1. NaN compares as larger than every number, as in TopK.
 */
function argIndexKernel(largest: boolean): Kernel {
  return ([a], attrs) => {
    checkDtype(a!, largest ? "ArgMax" : "ArgMin");
    if (a!.dtype === "bool") throw new InvariantError("ArgMax/ArgMin: bool input is not supported");
    const shape = a!.shape;
    const axis = normAxis(attrInt(attrs, "axis", 0), shape.length);
    const keep = attrInt(attrs, "keepdims", 1) === 1;
    const last = attrInt(attrs, "select_last_index", 0) === 1;
    const n = shape[axis]!;
    const inner = numel(shape.slice(axis + 1));
    const outer = numel(shape.slice(0, axis));
    const X = a!.data as unknown as ArrayLike<number>;
    const out = new BigInt64Array(outer * inner);
    // better(x, y): x should replace the current best y (ties only when select_last_index)
    const better = (x: number, y: number): boolean => {
      if (x !== x) return y === y || last; // NaN wins (largest) — and is never beaten by a number
      if (y !== y) return false;
      if (largest) return last ? x >= y : x > y;
      return last ? x <= y : x < y;
    };
    for (let o = 0; o < outer; o++)
      for (let q = 0; q < inner; q++) {
        const base = o * n * inner + q;
        let best = 0;
        for (let i = 1; i < n; i++) if (better(X[base + i * inner]!, X[base + best * inner]!)) best = i;
        out[o * inner + q] = BigInt(best);
      }
    const outShape = shape.filter((_, i) => i !== axis || keep).map((d, i) => (keep && i === axis ? 1 : d));
    return [{ dtype: "int64", shape: outShape, data: out }];
  };
}

/**
 * TopK along `axis` (default −1): the k largest (largest = 1, default) or smallest
 * values, sorted, with equal values in ascending index order; indices are int64.
 * NaN compares as larger than every number (so it is picked first by largest = 1).
 */
const topKKernel: Kernel = ([a], attrs) => {
  checkDtype(a!, "TopK");
  if (a!.dtype === "bool") throw new InvariantError("TopK: bool input is not supported");
  const shape = a!.shape;
  const axis = normAxis(attrInt(attrs, "axis", -1), shape.length);
  const k = attrInt(attrs, "k");
  const largest = attrInt(attrs, "largest", 1) !== 0;
  if (attrs["sorted"] !== undefined && attrInt(attrs, "sorted") === 0)
    throw new InvariantError("TopK: sorted = 0 is not supported");
  const n = shape[axis]!;
  if (k < 0 || k > n) throw new InvariantError(`TopK: k = ${k} out of range [0, ${n}]`);
  const inner = numel(shape.slice(axis + 1));
  const outer = numel(shape.slice(0, axis));
  const outShape = [...shape];
  outShape[axis] = k;
  const X = a!.data as unknown as ArrayLike<number>; // numbers or bigints; only compared
  const values = allocData(a!.dtype, numel(outShape));
  const V = values as unknown as Elements;
  const indices = new BigInt64Array(numel(outShape));
  const order = new Array<number>(n);
  const key = new Array<number>(n);
  const sign = largest ? -1 : 1;
  // ascending by (sign·value, index); NaN first when largest, last otherwise
  const cmp = (i: number, j: number): number => {
    const x = key[i]!;
    const y = key[j]!;
    const xn = x !== x;
    const yn = y !== y;
    if (xn || yn) {
      if (xn && yn) return i - j;
      return (xn ? -1 : 1) * (largest ? 1 : -1);
    }
    if (x < y) return -sign;
    if (x > y) return sign;
    return i - j;
  };
  for (let o = 0; o < outer; o++)
    for (let q = 0; q < inner; q++) {
      const base = o * n * inner + q;
      for (let j = 0; j < n; j++) {
        order[j] = j;
        key[j] = X[base + j * inner]!;
      }
      order.sort(cmp);
      const oBase = o * k * inner + q;
      for (let j = 0; j < k; j++) {
        V[oBase + j * inner] = X[base + order[j]! * inner]!;
        indices[oBase + j * inner] = BigInt(order[j]!);
      }
    }
  return [
    { dtype: a!.dtype, shape: outShape, data: values },
    { dtype: "int64", shape: [...outShape], data: indices },
  ];
};

/**
 * OneHot on a new last axis of size `depth`, float32: index v in [−depth, depth) sets
 * position v (mod depth) to `on` (default 1), every other position is `off` (default 0); any
 * other index gives a row of `off` (ONNX's rule).
 */
const oneHotKernel: Kernel = ([a], attrs) => {
  const I = requireIndices(a!, "OneHot");
  const depth = attrInt(attrs, "depth");
  const off = Math.fround(attrs["off"] === undefined ? 0 : Number(attrs["off"]));
  const on = Math.fround(attrs["on"] === undefined ? 1 : Number(attrs["on"]));
  const n = I.length;
  const out = new Float32Array(n * depth);
  if (off !== 0) out.fill(off);
  for (let i = 0; i < n; i++) {
    const v = readIndex(I, i);
    if (v >= -depth && v < depth) out[i * depth + (v < 0 ? v + depth : v)] = on;
  }
  return [{ dtype: "float32", shape: [...a!.shape, depth], data: out }];
};

// ---------------------------------------------------------------- data-dependent indexing

/** NonZero: the coordinates of the non-zero (true) elements in row-major order, as int64 [rank, n]. */
const nonZeroKernel: Kernel = ([a]) => {
  checkDtype(a!, "NonZero");
  const X = a!.data as unknown as ArrayLike<number | bigint>;
  const hits: number[] = [];
  for (let i = 0; i < X.length; i++) if (X[i] !== 0 && X[i] !== 0n) hits.push(i); // NaN counts as non-zero
  const rank = a!.shape.length;
  const st = stridesOf(a!.shape);
  const n = hits.length;
  const out = new BigInt64Array(rank * n);
  hits.forEach((flat, j) => {
    let rest = flat;
    for (let d = 0; d < rank; d++) {
      out[d * n + j] = BigInt(Math.floor(rest / st[d]!));
      rest %= st[d]!;
    }
  });
  return [{ dtype: "int64", shape: [rank, n], data: out }];
};

/**
 * ScatterND: a copy of `data` whose slices addressed by the k-tuples of `indices` [..., k]
 * are replaced by `updates` (reduction "none", the default) or have them added (reduction
 * "add"; float32 sums rounded once, as a float32 add is). Negative indices wrap; others out
 * of range are an error, and so is a repeated index tuple: ONNX leaves repeats undefined
 * without reduction, and the IR requires unique tuples in both modes (so that "add" equals
 * data[i] + updates written back, the emitter's form below opset 16).
 */
const scatterNDKernel: Kernel = ([data, idx, upd], attrs) => {
  checkDtype(data!, "ScatterND");
  const I = requireIndices(idx!, "ScatterND");
  requireSameDtype([data!, upd!], "ScatterND");
  const reduction = attrString(attrs, "reduction", "none");
  if (reduction !== "none" && reduction !== "add") throw new InvariantError(`ScatterND: reduction ${JSON.stringify(reduction)} is not supported`);
  if (reduction === "add" && data!.dtype === "bool") throw new InvariantError("ScatterND: reduction add on bool is not supported");
  const q = idx!.shape.length;
  const k = idx!.shape[q - 1]!;
  const shape = data!.shape;
  if (q < 1 || k > shape.length) throw new InvariantError(`ScatterND: indices [${idx!.shape}] do not fit data [${shape}]`);
  const want = [...idx!.shape.slice(0, -1), ...shape.slice(k)];
  if (!sameShape(want, upd!.shape)) throw new InvariantError(`ScatterND: updates are [${upd!.shape}], expected [${want}]`);
  const st = stridesOf(shape);
  const slice = numel(shape.slice(k));
  const tuples = k === 0 ? numel(idx!.shape.slice(0, -1)) : I.length / k;
  const out = allocData(data!.dtype, numel(shape));
  const O = out as Float32Array; // any TensorData: subarray/set work alike
  O.set(data!.data as Float32Array);
  const U = upd!.data as Float32Array;
  const written = new Set<number>();
  for (let t = 0; t < tuples; t++) {
    let off = 0;
    for (let d = 0; d < k; d++) {
      const s = shape[d]!;
      const v = readIndex(I, t * k + d);
      if (v < -s || v >= s) throw new InvariantError(`ScatterND: index ${v} out of range [${-s}, ${s}) on axis ${d}`);
      off += (v < 0 ? v + s : v) * st[d]!;
    }
    if (written.has(off)) throw new InvariantError(`ScatterND: index tuple ${t} repeats an earlier one (the IR requires unique indices)`);
    written.add(off);
    if (reduction === "none") O.set(U.subarray(t * slice, (t + 1) * slice), off);
    else {
      // Elements of one dtype: numbers or bigints, never mixed.
      const Oe = out as unknown as { [i: number]: number };
      const Ue = upd!.data as unknown as ArrayLike<number>;
      for (let i = 0; i < slice; i++) Oe[off + i] = Oe[off + i]! + Ue[t * slice + i]!;
    }
  }
  return [{ dtype: data!.dtype, shape: [...shape], data: out }];
};

// ---------------------------------------------------------------- the table

// Shape and indexing kernels (and Where, Cast) take float16 as it is; the others go through
// viaFloat32. Logic and OneHot never see a float.
export const KERNELS: Record<OpKind, Kernel> = {
  Add: viaFloat32(binary("Add")),
  Sub: viaFloat32(binary("Sub")),
  Mul: viaFloat32(binary("Mul")),
  Div: viaFloat32(binary("Div")),
  Max: viaFloat32(binary("Max")),
  Clip: viaFloat32(clipKernel),
  Min: viaFloat32(binary("Min")),
  Less: viaFloat32(compare("Less")),
  Greater: viaFloat32(compare("Greater")),
  GreaterOrEqual: viaFloat32(compare("GreaterOrEqual")),
  Equal: viaFloat32(compare("Equal")),
  And: logic("And"),
  Or: logic("Or"),
  Not: notKernel,
  Where: whereKernel,
  Identity: identityKernel,
  Neg: viaFloat32(negAbs("Neg")),
  Abs: viaFloat32(negAbs("Abs")),
  Exp: viaFloat32(unaryFloat("Exp")),
  Log: viaFloat32(unaryFloat("Log")),
  Sqrt: viaFloat32(unaryFloat("Sqrt")),
  Relu: viaFloat32(unaryFloat("Relu")),
  LeakyRelu: viaFloat32(unaryFloat("LeakyRelu")),
  Tanh: viaFloat32(unaryFloat("Tanh")),
  Sigmoid: viaFloat32(unaryFloat("Sigmoid")),
  Erf: viaFloat32(unaryFloat("Erf")),
  Gelu: viaFloat32(unaryFloat("Gelu")),
  Cast: castKernel,
  MatMul: viaFloat32(matmulKernel),
  Gemm: viaFloat32(gemmKernel),
  Softmax: viaFloat32(softmaxKernel(false)),
  LogSoftmax: viaFloat32(softmaxKernel(true)),
  ReduceSum: viaFloat32(reduce("ReduceSum")),
  ReduceMax: viaFloat32(reduce("ReduceMax")),
  ReduceMin: viaFloat32(reduce("ReduceMin")),
  ReduceMean: viaFloat32(reduce("ReduceMean")),
  ReduceLogSumExp: viaFloat32(reduce("ReduceLogSumExp")),
  Concat: concatKernel,
  Gather: gatherKernel,
  GatherElements: gatherElementsKernel,
  Unsqueeze: unsqueezeKernel,
  Squeeze: squeezeKernel,
  Reshape: reshapeKernel,
  Transpose: transposeKernel,
  Split: splitKernel,
  Slice: sliceKernel,
  TopK: viaFloat32(topKKernel),
  ArgMax: viaFloat32(argIndexKernel(true)),
  ArgMin: viaFloat32(argIndexKernel(false)),
  OneHot: oneHotKernel,
  NonZero: viaFloat32(nonZeroKernel),
  ScatterND: viaFloat32(scatterNDKernel),
};

/** Run one op on host tensors (constant folding and tests call this). */
export function runKernel(op: OpKind, inputs: Tensor[], attrs: Attrs = {}): Tensor[] {
  const k = KERNELS[op];
  if (!k) assertNever(op as never, "op");
  return k(inputs, attrs);
}

