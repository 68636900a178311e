// What changes with the ONNX opset: supported range, IR version per opset, and the
// per-operator forms (attribute vs input). Only the ONNX backend consults this file.

import { userError } from "../../core/diagnostics.ts";
import type { DType } from "../../core/tensor.ts";

export const MIN_OPSET = 13;
export const MAX_OPSET = 21;
export const DEFAULT_OPSET = 17;

/**
 * IR version released together with each default-domain opset (ONNX docs/Versioning.md:
 * 1.8 → 7/13, 1.9 → 7/14, 1.10 → 8/15, 1.11 → 8/16, 1.12 → 8/17, 1.13 → 8/18,
 * 1.14 → 9/19, 1.15 → 9/20, 1.16 → 10/21). Pairing each opset with the oldest IR version
 * that carries it keeps the model loadable by the oldest runtimes that know the opset.
 */
export const IR_VERSION_FOR_OPSET: Readonly<Record<number, number>> = {
  13: 7,
  14: 7,
  15: 8,
  16: 8,
  17: 8,
  18: 8,
  19: 9,
  20: 9,
  21: 10,
};

/** Throws AESM3002 unless `opset` is one the emitter can target. */
export function checkOpset(opset: number): void {
  if (!Number.isInteger(opset) || opset < MIN_OPSET || opset > MAX_OPSET)
    throw userError("AESM3002", "opset", `unsupported opset ${opset} (supported: ${MIN_OPSET}–${MAX_OPSET})`);
}

export function irVersionFor(opset: number): number {
  checkOpset(opset);
  return IR_VERSION_FOR_OPSET[opset]!;
}

/** ReduceSum took `axes` as an input from opset 13; the other reductions only from 18. */
export function reduceAxesAsInput(op: string, opset: number): boolean {
  return op === "ReduceSum" ? opset >= 13 : opset >= 18;
}

/** Squeeze/Unsqueeze `axes` became an input in opset 13. */
export function squeezeAxesAsInput(opset: number): boolean {
  return opset >= 13;
}

/** Gelu joined the default domain in opset 20; below that the emitter writes 0.5·x·(1+Erf(x/√2)). */
export function hasNativeGelu(opset: number): boolean {
  return opset >= 20;
}

/** ScatterND gained its `reduction` attribute (none, add, mul) in opset 16. */
export function scatterReductionAsAttr(opset: number): boolean {
  return opset >= 16;
}

/** Softmax/LogSoftmax switched from "flatten to 2-D at axis" to a single-axis op in opset 13. */
export function softmaxIsSingleAxis(opset: number): boolean {
  return opset >= 13;
}

/** Slice read starts/ends/axes from attributes before opset 10. */
export function sliceBoundsAsInputs(opset: number): boolean {
  return opset >= 10;
}

/** TopK read `k` from an attribute before opset 10. */
export function topKAsInput(opset: number): boolean {
  return opset >= 10;
}

/** Reshape read `shape` from an attribute before opset 5. */
export function reshapeShapeAsInput(opset: number): boolean {
  return opset >= 5;
}

/** TensorProto.DataType codes of the dtypes the IR carries. */
export const ONNX_DTYPE: Readonly<Record<DType, number>> = {
  float32: 1,
  int32: 6,
  int64: 7,
  bool: 9,
  float16: 10,
  float64: 11,
};

/** Names of every TensorProto.DataType code, for messages about ones the IR lacks. */
export const ONNX_DTYPE_NAMES: Readonly<Record<number, string>> = {
  0: "undefined",
  1: "float32",
  2: "uint8",
  3: "int8",
  4: "uint16",
  5: "int16",
  6: "int32",
  7: "int64",
  8: "string",
  9: "bool",
  10: "float16",
  11: "float64",
  12: "uint32",
  13: "uint64",
  14: "complex64",
  15: "complex128",
  16: "bfloat16",
};

export function dtypeFromOnnx(code: number): DType | undefined {
  for (const [k, v] of Object.entries(ONNX_DTYPE)) if (v === code) return k as DType;
  return undefined;
}

export function onnxDtypeName(code: number): string {
  return ONNX_DTYPE_NAMES[code] ?? `data type ${code}`;
}

/** Kind of each ONNX attribute an IR attribute maps to (inputs such as axes/shape/k are not listed). */
export type AttrKind = "int" | "float" | "ints";

export const ATTR_KINDS: Readonly<Partial<Record<string, Readonly<Record<string, AttrKind>>>>> = {
  LeakyRelu: { alpha: "float" },
  Gemm: { transA: "int", transB: "int", alpha: "float", beta: "float" },
  Softmax: { axis: "int" },
  LogSoftmax: { axis: "int" },
  ReduceSum: { keepdims: "int" },
  ReduceMax: { keepdims: "int" },
  ReduceMin: { keepdims: "int" },
  ReduceMean: { keepdims: "int" },
  ReduceLogSumExp: { keepdims: "int" },
  Concat: { axis: "int" },
  Gather: { axis: "int" },
  GatherElements: { axis: "int" },
  Transpose: { perm: "ints" },
  Split: { axis: "int" },
  TopK: { axis: "int", largest: "int" },
  ArgMax: { axis: "int", keepdims: "int", select_last_index: "int" },
  ArgMin: { axis: "int", keepdims: "int", select_last_index: "int" },
};

/** Marks the Identity nodes the emitter adds so that every graph output is produced by a node. */
export const OUTPUT_ALIAS_DOC = "aesm: graph output alias";
