// The unit layer act(BN(Linear(x))) (act relu or none) as WebAssembly SIMD kernels: the sums
// of the JS kernels in evaluate.ts, in the same order, two float64 channels per f64x2 or four
// float32 channels per f32x4.

// Each output is one sequential sum over k of x[r, k]·W[o, k] (a lane holds one output's sum;
// lanes never mix), then + b[o], then γ·((y − μ)/denom) + β, then relu as pmax(y, 0)
// (y < 0 ? 0 : y, which keeps NaN and −0). WebAssembly floating point is IEEE 754 with
// round-to-nearest and no fused multiply-add, so the float64 kernel's numbers equal the JS
// kernel's bit for bit. The float32 kernel equals the emulation, which rounds every operation
// with Math.fround: its operands are float32 values, and a float32 sum, difference, product or
// quotient computed in double and rounded once to float32 is the correctly rounded float32
// result (53 ≥ 2·24 + 2 bits: double rounding is innocuous). test/reference/golden.test.ts
// runs both kernels against the JS ones. The module is assembled here, byte by byte, from the
// instruction lists below: there is no toolchain and no binary to trust.

export type UnitPrecision = "float64" | "float32";

/** A unit layer's parameters in an engine's memory (byte offsets), laid out for the kernel. */
export interface WasmUnit {
  inW: number;
  outW: number;
  /** outW rounded up to a whole block of channels (4 float64, 8 float32): the kernel computes a block at a time. */
  outPad: number;
  /** W transposed, [inW, outPad] (zeros past outW), then bias, γ, μ, denom, β [outPad] each. */
  weights: number;
  bias: number;
  gamma: number;
  mean: number;
  denom: number;
  beta: number;
  /** FLAG_BIAS | FLAG_BN, as the layer has them. */
  flags: number;
}

const FLAG_BIAS = 1;
const FLAG_BN = 2;
const FLAG_RELU = 4;

// ---------------------------------------------------------------------------------------
// A minimal WebAssembly encoder: LEB128 integers, the few opcodes the kernel uses.

function u32(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n !== 0) b |= 0x80;
    out.push(b);
  } while (n !== 0);
  return out;
}

function s32(n: number): number[] {
  const out: number[] = [];
  for (;;) {
    const b = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (b & 0x40) === 0) || (n === -1 && (b & 0x40) !== 0)) {
      out.push(b);
      return out;
    }
    out.push(b | 0x80);
  }
}

const name = (s: string): number[] => [...u32(s.length), ...Array.from(s, (c) => c.charCodeAt(0))];
const section = (id: number, body: number[]): number[] => [id, ...u32(body.length), ...body];
const vec = (items: number[][]): number[] => [...u32(items.length), ...items.flat()];

const T = { i32: 0x7f, v128: 0x7b, void: 0x40 } as const;
const simd = (op: number): number[] => [0xfd, ...u32(op)];
/** memarg of a v128 load or store: alignment hint 2^3 (8 bytes), offset. */
const mem = (offset: number): number[] => [3, ...u32(offset)];

const I = {
  block: [0x02, T.void],
  loop: [0x03, T.void],
  if: [0x04, T.void],
  end: [0x0b],
  br: (depth: number) => [0x0c, ...u32(depth)],
  brIf: (depth: number) => [0x0d, ...u32(depth)],
  get: (local: number) => [0x20, ...u32(local)],
  set: (local: number) => [0x21, ...u32(local)],
  i32: (v: number) => [0x41, ...s32(v)],
  i32Add: [0x6a],
  i32Mul: [0x6c],
  i32And: [0x71],
  i32Shl: [0x74],
  i32GeU: [0x4f],
  v128Load: (offset: number) => [...simd(0), ...mem(offset)],
  v128Store: (offset: number) => [...simd(11), ...mem(offset)],
  v128Zero: [...simd(12), ...new Array<number>(16).fill(0)],
};

// ---------------------------------------------------------------------------------------
// The kernels: unit64 and unit32(x, wt, bias, gamma, mean, denom, beta, out, n, inW, outPad,
// flags). x [n, inW], out [n, outPad]; pointers are byte offsets. Two rows (an odd last row
// paired with itself, as in the JS kernels) by a block of channels (two vectors): four vector
// sums, the loads of x and W shared.

const PARAMS = ["x", "wt", "bias", "gamma", "mean", "denom", "beta", "out", "n", "inW", "outPad", "flags"] as const;
const I32_LOCALS = ["r", "o", "k", "xa", "xb", "wp", "oa", "ob", "oBytes", "rowW", "outRowW"] as const;
const V128_LOCALS = ["a0", "a1", "b0", "b1", "u", "v", "w0", "w1"] as const;
type Local = (typeof PARAMS)[number] | (typeof I32_LOCALS)[number] | (typeof V128_LOCALS)[number];
const L = Object.fromEntries([...PARAMS, ...I32_LOCALS, ...V128_LOCALS].map((n, i) => [n, i])) as Record<Local, number>;
const get = (l: Local) => I.get(L[l]);
const set = (l: Local) => I.set(L[l]);

/** `addr + c` with addr a local. */
const plus = (l: Local, c: number) => [...get(l), ...I.i32(c), ...I.i32Add];
/** `a + b` of two locals. */
const add = (a: Local, b: Local) => [...get(a), ...get(b), ...I.i32Add];

/** The lane arithmetic of one precision: f64x2 (8-byte elements) or f32x4 (4-byte elements). */
interface Lanes {
  /** log2 of the element size in bytes. */
  shift: number;
  /** Channels per block: two vectors. */
  block: number;
  splat: (offset: number) => number[];
  add: number[];
  sub: number[];
  mul: number[];
  div: number[];
  pmax: number[];
}

const LANES: Record<UnitPrecision, Lanes> = {
  float64: {
    shift: 3,
    block: 4,
    splat: (offset) => [...simd(10), 3, ...u32(offset)], // v128.load64_splat
    add: simd(0xf0),
    sub: simd(0xf1),
    mul: simd(0xf2),
    div: simd(0xf3),
    pmax: simd(0xf7),
  },
  float32: {
    shift: 2,
    block: 8,
    splat: (offset) => [...simd(9), 2, ...u32(offset)], // v128.load32_splat
    add: simd(0xe4),
    sub: simd(0xe5),
    mul: simd(0xe6),
    div: simd(0xe7),
    pmax: simd(0xeb),
  },
};

/** The epilogue of one vector sum `acc` for the channels `lane` bytes past o: bias, BN, relu; then stored at `row` + o. */
function finishAndStore(v: Lanes, acc: Local, row: Local, lane: number): number[] {
  const at = (param: Local) => [...add(param, "oBytes"), ...I.v128Load(lane)];
  return [
    // if (flags & BIAS) acc = acc + b
    ...get("flags"), ...I.i32(FLAG_BIAS), ...I.i32And, ...I.if,
    ...get(acc), ...at("bias"), ...v.add, ...set(acc),
    ...I.end,
    // if (flags & BN) acc = γ·((acc − μ) / denom) + β
    ...get("flags"), ...I.i32(FLAG_BN), ...I.i32And, ...I.if,
    ...at("gamma"), ...get(acc), ...at("mean"), ...v.sub, ...at("denom"), ...v.div, ...v.mul, ...at("beta"), ...v.add, ...set(acc),
    ...I.end,
    // if (flags & RELU) acc = acc < 0 ? 0 : acc
    ...get("flags"), ...I.i32(FLAG_RELU), ...I.i32And, ...I.if,
    ...get(acc), ...I.v128Zero, ...v.pmax, ...set(acc),
    ...I.end,
    ...add(row, "oBytes"), ...get(acc), ...I.v128Store(lane),
  ];
}

/** The kernel's instructions for one lane type. */
function kernel(v: Lanes): number[] {
  /** acc = acc + s·w */
  const mulAdd = (acc: Local, s: Local, w: Local) => [...get(acc), ...get(s), ...get(w), ...v.mul, ...v.add, ...set(acc)];
  return [
    // rowW = inW·size, outRowW = outPad·size (bytes)
    ...get("inW"), ...I.i32(v.shift), ...I.i32Shl, ...set("rowW"),
    ...get("outPad"), ...I.i32(v.shift), ...I.i32Shl, ...set("outRowW"),
    ...I.i32(0), ...set("r"),
    ...I.block, ...I.loop,
    ...get("r"), ...get("n"), ...I.i32GeU, ...I.brIf(1),
    // xa = x + r·rowW; oa = out + r·outRowW; the second row, or the first again when r + 1 = n
    ...get("x"), ...get("r"), ...get("rowW"), ...I.i32Mul, ...I.i32Add, ...set("xa"),
    ...get("out"), ...get("r"), ...get("outRowW"), ...I.i32Mul, ...I.i32Add, ...set("oa"),
    ...add("xa", "rowW"), ...set("xb"),
    ...add("oa", "outRowW"), ...set("ob"),
    ...plus("r", 1), ...get("n"), ...I.i32GeU, ...I.if,
    ...get("xa"), ...set("xb"),
    ...get("oa"), ...set("ob"),
    ...I.end,
    ...I.i32(0), ...set("o"),
    ...I.block, ...I.loop,
    ...get("o"), ...get("outPad"), ...I.i32GeU, ...I.brIf(1),
    ...I.v128Zero, ...set("a0"), ...I.v128Zero, ...set("a1"), ...I.v128Zero, ...set("b0"), ...I.v128Zero, ...set("b1"),
    // oBytes = o·size; wp = wt + oBytes walks W's block of columns down k
    ...get("o"), ...I.i32(v.shift), ...I.i32Shl, ...set("oBytes"),
    ...add("wt", "oBytes"), ...set("wp"),
    ...I.i32(0), ...set("k"),
    ...I.block, ...I.loop,
    ...get("k"), ...get("rowW"), ...I.i32GeU, ...I.brIf(1),
    ...add("xa", "k"), ...v.splat(0), ...set("u"),
    ...add("xb", "k"), ...v.splat(0), ...set("v"),
    ...get("wp"), ...I.v128Load(0), ...set("w0"),
    ...get("wp"), ...I.v128Load(16), ...set("w1"),
    ...mulAdd("a0", "u", "w0"),
    ...mulAdd("a1", "u", "w1"),
    ...mulAdd("b0", "v", "w0"),
    ...mulAdd("b1", "v", "w1"),
    ...add("wp", "outRowW"), ...set("wp"),
    ...plus("k", 1 << v.shift), ...set("k"),
    ...I.br(0),
    ...I.end, ...I.end,
    ...finishAndStore(v, "a0", "oa", 0),
    ...finishAndStore(v, "a1", "oa", 16),
    ...finishAndStore(v, "b0", "ob", 0),
    ...finishAndStore(v, "b1", "ob", 16),
    ...plus("o", v.block), ...set("o"),
    ...I.br(0),
    ...I.end, ...I.end,
    ...plus("r", 2), ...set("r"),
    ...I.br(0),
    ...I.end, ...I.end,
    ...I.end,
  ];
}

function moduleBytes(): Uint8Array {
  const type = [0x60, ...vec(PARAMS.map(() => [T.i32])), ...vec([])];
  const locals = vec([
    [...u32(I32_LOCALS.length), T.i32],
    [...u32(V128_LOCALS.length), T.v128],
  ]);
  const code = (v: Lanes) => {
    const body = [...locals, ...kernel(v)];
    return [...u32(body.length), ...body];
  };
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00], // "\0asm", version 1
    ...section(1, vec([type])), // types
    ...section(2, vec([[...name("env"), ...name("memory"), 0x02, 0x00, ...u32(1)]])), // import env.memory (min 1 page)
    ...section(3, vec([u32(0), u32(0)])), // functions: two of type 0
    ...section(7, vec([[...name("unit64"), 0x00, ...u32(0)], [...name("unit32"), 0x00, ...u32(1)]])), // exports
    ...section(10, vec([code(LANES.float64), code(LANES.float32)])), // code
  ]);
}

/** The part of the WebAssembly JS API used here (the project's lib, ES2022, declares none of it). */
interface WasmModule {
  readonly __brand?: "WebAssembly.Module";
}
declare const WebAssembly: {
  validate(bytes: Uint8Array): boolean;
  Module: new (bytes: Uint8Array) => WasmModule;
  Instance: new (module: WasmModule, imports: Record<string, Record<string, unknown>>) => { exports: Record<string, unknown> };
  Memory: new (descriptor: { initial: number }) => { buffer: ArrayBuffer };
};

let compiled: WasmModule | null | undefined;

/** The compiled module, or null where WebAssembly SIMD is not available. */
function kernelModule(): WasmModule | null {
  if (compiled === undefined) {
    const bytes = moduleBytes();
    compiled = typeof WebAssembly === "object" && WebAssembly.validate(bytes) ? new WebAssembly.Module(bytes) : null;
  }
  return compiled;
}

/** Whether the WebAssembly kernel can run here. */
export function wasmUnitsAvailable(): boolean {
  return kernelModule() !== null;
}

const PAGE = 65536;

/** Channels a unit's output is padded to: a whole number of the kernel's blocks. */
function padded(outW: number, precision: UnitPrecision): number {
  const b = LANES[precision].block;
  return Math.ceil(outW / b) * b;
}

/** Elements a unit's parameters take in an engine's memory. */
export function unitParamElements(inW: number, outW: number, precision: UnitPrecision): number {
  const outPad = padded(outW, precision);
  return inW * outPad + 5 * outPad;
}

/**
 * One evaluation's kernel instance for one precision: its memory holds every unit's parameters
 * (uploaded once), then an input and an output buffer for up to `rows` rows.
 */
export class WasmUnitEngine {
  private readonly kernel: (...args: number[]) => void;
  /** The memory as elements of the precision. */
  private readonly mem: Float64Array | Float32Array;
  private readonly bytes: number;
  private next = 0; // in elements
  private readonly xBuf: number;
  private readonly outBuf: number;

  /** `paramElements`: room for every unit's parameters (the sum of unitParamElements). */
  constructor(
    readonly precision: UnitPrecision,
    rows: number,
    maxIn: number,
    maxOut: number,
    paramElements: number,
  ) {
    const module = kernelModule();
    if (!module) throw new Error("WebAssembly SIMD is not available");
    this.bytes = 1 << LANES[precision].shift;
    const elements = paramElements + rows * maxIn + rows * padded(maxOut, precision);
    const memory = new WebAssembly.Memory({ initial: Math.max(1, Math.ceil((elements * this.bytes) / PAGE)) });
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    this.kernel = instance.exports[precision === "float64" ? "unit64" : "unit32"] as (...args: number[]) => void;
    this.mem = precision === "float64" ? new Float64Array(memory.buffer) : new Float32Array(memory.buffer);
    this.xBuf = this.alloc(rows * maxIn);
    this.outBuf = this.alloc(rows * padded(maxOut, precision));
  }

  private alloc(elements: number): number {
    const at = this.next;
    this.next += elements;
    if (this.next > this.mem.length) throw new Error("WasmUnitEngine: memory exhausted");
    return at;
  }

  /**
   * Upload a unit's Linear (W [outW, inW] row-major, bias) and batch norm (null when absent).
   * In float32 the values must be float32 already (the emulation rounds its parameters).
   */
  upload(
    lin: { inW: number; outW: number; weight: Float64Array; bias: Float64Array | null },
    bn: { gamma: Float64Array; mean: Float64Array; denom: Float64Array; beta: Float64Array } | null,
  ): WasmUnit {
    const { inW, outW, weight, bias } = lin;
    const outPad = padded(outW, this.precision);
    const m = this.mem;
    const w = this.alloc(inW * outPad);
    for (let k = 0; k < inW; k++) for (let o = 0; o < outW; o++) m[w + k * outPad + o] = weight[o * inW + k]!;
    const channel = (values: Float64Array | null, fill: number): number => {
      const at = this.alloc(outPad);
      m.fill(fill, at, at + outPad);
      if (values) m.set(values.subarray(0, outW), at);
      return at * this.bytes;
    };
    return {
      inW,
      outW,
      outPad,
      weights: w * this.bytes,
      bias: channel(bias, 0),
      gamma: channel(bn ? bn.gamma : null, 1),
      mean: channel(bn ? bn.mean : null, 0),
      denom: channel(bn ? bn.denom : null, 1),
      beta: channel(bn ? bn.beta : null, 0),
      flags: (bias ? FLAG_BIAS : 0) | (bn ? FLAG_BN : 0),
    };
  }

  /** The input buffer as n rows of width inW, to be written in place and run with applyToInput. */
  input(n: number, inW: number): Float64Array | Float32Array {
    return this.mem.subarray(this.xBuf, this.xBuf + n * inW);
  }

  /** apply() on the rows already in the input buffer (see input()). */
  applyToInput(u: WasmUnit, n: number, relu: boolean, out: Float64Array): void {
    this.runAndRead(u, n, relu, out);
  }

  /**
   * out[r, o] = act(BN(Σ_k x[i, k]·W[o, k] + b[o])) for i = rows[r] (or r when rows is null),
   * r < n; act is relu when `relu`, else none. x and out are float64 arrays either way (in
   * float32, of float32 values).
   */
  apply(u: WasmUnit, x: Float64Array, rows: Int32Array | null, n: number, relu: boolean, out: Float64Array): void {
    const { inW } = u;
    const m = this.mem;
    const xb = this.xBuf;
    if (rows === null) m.set(x.subarray(0, n * inW), xb);
    else
      for (let j = 0; j < n; j++) {
        const src = rows[j]! * inW;
        const dst = xb + j * inW;
        for (let k = 0; k < inW; k++) m[dst + k] = x[src + k]!;
      }
    this.runAndRead(u, n, relu, out);
  }

  private runAndRead(u: WasmUnit, n: number, relu: boolean, out: Float64Array): void {
    const { inW, outW, outPad } = u;
    const m = this.mem;
    const b = this.bytes;
    this.kernel(this.xBuf * b, u.weights, u.bias, u.gamma, u.mean, u.denom, u.beta, this.outBuf * b, n, inW, outPad, u.flags | (relu ? FLAG_RELU : 0));
    const ob = this.outBuf;
    if (outPad === outW) out.set(m.subarray(ob, ob + n * outW));
    else
      for (let r = 0; r < n; r++) {
        const src = ob + r * outPad;
        const dst = r * outW;
        for (let o = 0; o < outW; o++) out[dst + o] = m[src + o]!;
      }
  }
}
