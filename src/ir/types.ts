// Value types of the IR: a dtype and a shape whose dims are sizes or symbols (`batch`).

import type { DType } from "../core/tensor.ts";

export type Dim = number | string;
export type Shape = Dim[];

export interface ValueType {
  dtype: DType;
  shape: Shape;
}

export const DTYPE_SHORT: Record<DType, string> = {
  float32: "f32",
  float16: "f16",
  float64: "f64",
  int64: "i64",
  int32: "i32",
  bool: "bool",
};

export function formatType(t: ValueType): string {
  return `${DTYPE_SHORT[t.dtype]}[${t.shape.join(",")}]`;
}

export function sameType(a: ValueType, b: ValueType): boolean {
  return a.dtype === b.dtype && a.shape.length === b.shape.length && a.shape.every((d, i) => d === b.shape[i]);
}

export function isFloat(dtype: DType): boolean {
  return dtype === "float32" || dtype === "float16" || dtype === "float64";
}
