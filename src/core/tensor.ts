// Dense host tensors shared by weights, the interpreter, the reference and parity.

export type DType = "float32" | "float16" | "float64" | "int64" | "int32" | "bool";

export type TensorData =
  | Float32Array
  | Float64Array
  | BigInt64Array
  | Int32Array
  | Uint8Array // bool, one byte per element
  | Uint16Array; // float16 bit patterns

export interface Tensor {
  dtype: DType;
  shape: number[];
  data: TensorData;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function allocData(dtype: DType, n: number): TensorData {
  switch (dtype) {
    case "float32":
      return new Float32Array(n);
    case "float64":
      return new Float64Array(n);
    case "int64":
      return new BigInt64Array(n);
    case "int32":
      return new Int32Array(n);
    case "bool":
      return new Uint8Array(n);
    case "float16":
      return new Uint16Array(n);
  }
}

export function tensor(dtype: DType, shape: number[], data?: TensorData | number[]): Tensor {
  const n = numel(shape);
  if (data === undefined) return { dtype, shape, data: allocData(dtype, n) };
  if (Array.isArray(data)) {
    const out = allocData(dtype, n);
    if (out instanceof BigInt64Array) data.forEach((v, i) => (out[i] = BigInt(v)));
    else data.forEach((v, i) => ((out as Float32Array)[i] = v));
    return { dtype, shape, data: out };
  }
  return { dtype, shape, data };
}

export function f32(shape: number[], data?: Float32Array | number[]): Tensor {
  return tensor("float32", shape, data);
}

/** IEEE half → float (exact). */
export function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

const f32Scratch = new Float32Array(1);
const u32Scratch = new Uint32Array(f32Scratch.buffer);

/** float → IEEE half, round to nearest even. */
export function floatToHalf(x: number): number {
  f32Scratch[0] = x;
  const b = u32Scratch[0]!;
  const sign = (b >>> 16) & 0x8000;
  const exp = (b >>> 23) & 0xff;
  let mant = b & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    const half = 1 << (shift - 1);
    let r = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = mant >> 13;
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) {
    r++;
    if (r === 0x400) {
      r = 0;
      e++;
      if (e >= 31) return sign | 0x7c00;
    }
  }
  return sign | (e << 10) | r;
}

/** bfloat16 bits → float (exact). */
export function bf16ToFloat(h: number): number {
  u32Scratch[0] = (h & 0xffff) << 16;
  return f32Scratch[0]!;
}
