// ONNX ModelProto → IR graph, the reverse of emit.ts: reads our own output and the ONNX
// node-test models. Constant side inputs (axes, shape, k, …) fold back into IR attributes.

import { readFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import onnxProto from "onnx-proto";
import { AesmError, InvariantError, userError } from "../../core/diagnostics.ts";
import { readExternalTensorData } from "./external.ts";
import { numel, type Tensor, type TensorData } from "../../core/tensor.ts";
import { Graph, type Value } from "../../ir/graph.ts";
import { normAxis } from "../../ir/infer.ts";
import type { AttrValue, Attrs, OpKind } from "../../ir/ops.ts";
import type { Dim, ValueType } from "../../ir/types.ts";
import {
  OUTPUT_ALIAS_DOC,
  dtypeFromOnnx,
  onnxDtypeName,
  reduceAxesAsInput,
  reshapeShapeAsInput,
  sliceBoundsAsInputs,
  softmaxIsSingleAxis,
  squeezeAxesAsInput,
  topKAsInput,
} from "./opsets.ts";

const { onnx } = onnxProto;
type ModelProto = onnxProto.onnx.ModelProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type ITypeProto = onnxProto.onnx.ITypeProto;
type Long = { toNumber(): number; toString(): string };

export interface ReadOptions {
  /**
   * Graph inputs to read as constants. ONNX node tests feed side inputs such as Reshape's
   * `shape` or TopK's `k` at run time; the IR needs them known.
   */
  constantInputs?: Record<string, Tensor>;
}

/** Codes: AESM3003 not ONNX; AESM3004 op or form the IR lacks; AESM3007 dtype the IR lacks; AESM3008 malformed graph. */
function notOnnx(reason: string, file?: string): AesmError {
  return userError("AESM3003", "", `not an ONNX model: ${reason}`, file);
}

const num = (x: number | Long | null | undefined): number => (x == null ? 0 : typeof x === "number" ? x : x.toNumber());

/** int64 values as numbers; "to the end" sentinels (±2^63) clamp to the safe-integer range, which means the same. */
function int64Numbers(t: Tensor): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, (v) => {
    const n = Number(v);
    return Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, n));
  });
}

/** The shortest decimal that is the same float32: ONNX float attributes are float32, the IR's are decimals. */
function float32Decimal(x: number): number {
  if (!Number.isFinite(x)) return x;
  for (let p = 1; p <= 9; p++) {
    const d = Number(x.toPrecision(p));
    if (Math.fround(d) === x) return d;
  }
  return x;
}

/** Decode bytes as a ModelProto; AESM3003 for anything that is not one. */
export function decodeModel(bytes: Uint8Array, file?: string): ModelProto {
  let model: ModelProto;
  try {
    model = onnx.ModelProto.decode(bytes);
  } catch (e) {
    throw notOnnx((e as Error).message.split("\n")[0]!, file);
  }
  // Arbitrary bytes sometimes decode as a protobuf; a model has an IR version and a graph.
  if (num(model.irVersion) <= 0) throw notOnnx("no IR version", file);
  if (!model.graph) throw notOnnx("no graph", file);
  return model;
}

function copyBytes(raw: Uint8Array, bytesPer: number, n: number, where: string, file?: string): ArrayBuffer {
  if (raw.length !== bytesPer * n)
    throw userError("AESM3008", where, `raw_data has ${raw.length} bytes for ${n} values of ${bytesPer} bytes`, file);
  const buf = new ArrayBuffer(raw.length);
  new Uint8Array(buf).set(raw);
  return buf;
}

/** A TensorProto as a host tensor. `baseDir` resolves external data. */
export function tensorFromProto(t: ITensorProto, options: { file?: string; baseDir?: string } = {}): Tensor {
  const { file } = options;
  const name = t.name ?? "";
  const where = name;
  const code = t.dataType ?? 0;
  const dtype = dtypeFromOnnx(code);
  if (!dtype)
    throw userError("AESM3007", where, `tensor "${name}" has dtype ${onnxDtypeName(code)}, which the IR does not carry`, file);
  const shape = (t.dims ?? []).map(num);
  const n = numel(shape);
  let raw = t.rawData && t.rawData.length > 0 ? t.rawData : null;
  if (t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL) {
    if (!options.baseDir)
      throw userError("AESM3008", where, `tensor "${name}" keeps its data in an external file; read the model from its path`, file);
    // Only the tensor's own range, after checking it against the data file (external.ts).
    raw = readExternalTensorData(t, options.baseDir, file);
  }
  const count = (k: number) => {
    if (k !== n) throw userError("AESM3008", where, `tensor "${name}" has ${k} values for shape [${shape}]`, file);
  };
  let data: TensorData;
  switch (dtype) {
    case "float32":
      if (raw) data = new Float32Array(copyBytes(raw, 4, n, where, file));
      else count((data = Float32Array.from(t.floatData ?? [])).length);
      break;
    case "float64":
      if (raw) data = new Float64Array(copyBytes(raw, 8, n, where, file));
      else count((data = Float64Array.from(t.doubleData ?? [])).length);
      break;
    case "int64":
      if (raw) data = new BigInt64Array(copyBytes(raw, 8, n, where, file));
      else count((data = BigInt64Array.from(t.int64Data ?? [], (v) => BigInt(v.toString()))).length);
      break;
    case "int32":
      if (raw) data = new Int32Array(copyBytes(raw, 4, n, where, file));
      else count((data = Int32Array.from(t.int32Data ?? [])).length);
      break;
    case "bool":
      if (raw) data = new Uint8Array(copyBytes(raw, 1, n, where, file));
      else count((data = Uint8Array.from(t.int32Data ?? [], (v) => (v ? 1 : 0))).length);
      break;
    case "float16":
      // Without raw_data, float16 bit patterns sit in int32_data.
      if (raw) data = new Uint16Array(copyBytes(raw, 2, n, where, file));
      else count((data = Uint16Array.from(t.int32Data ?? [])).length);
      break;
  }
  return { dtype, shape, data };
}

function typeFromProto(name: string, tp: ITypeProto | null | undefined, file?: string): ValueType {
  const tt = tp?.tensorType;
  if (!tt) throw userError("AESM3007", name, `value "${name}" is not a tensor (sequences, maps and optionals are not in the IR)`, file);
  const code = tt.elemType ?? 0;
  const dtype = dtypeFromOnnx(code);
  if (!dtype) throw userError("AESM3007", name, `value "${name}" has dtype ${onnxDtypeName(code)}, which the IR does not carry`, file);
  const dims = tt.shape?.dim ?? [];
  const shape: Dim[] = dims.map((d, i) => {
    if (d.dimParam) return d.dimParam;
    if (d.dimValue != null) return num(d.dimValue);
    return `${name}_dim${i}`; // an unnamed unknown dim becomes its own symbol
  });
  return { dtype, shape };
}

/** Input positions that are side inputs, read as constants into IR attributes. */
export const SIDE_INPUTS: Readonly<Record<string, readonly number[]>> = {
  ReduceSum: [1],
  ReduceMax: [1],
  ReduceMin: [1],
  ReduceMean: [1],
  ReduceLogSumExp: [1],
  Squeeze: [1],
  Unsqueeze: [1],
  Reshape: [1],
  Slice: [1, 2, 3, 4],
  TopK: [1],
  OneHot: [1, 2],
  Split: [1],
};

/** Recover the scope from a node name the emitter wrote (`scope/Op_n`); other names are kept whole. */
function scopeOf(name: string, op: string): string {
  const m = new RegExp(`^(?:(.*)/)?${op}_\\d+(?:_\\d+)?$`).exec(name);
  return m ? (m[1] ?? "") : name;
}

/** One ONNX node being read: typed access to its inputs and attributes, errors that name it. */
class NodeReader {
  private readonly used = new Set<string>();
  readonly attrs: Map<string, IAttributeProto>;
  readonly op: string;
  readonly label: string;
  constructor(
    readonly r: ModelReader,
    readonly node: INodeProto,
  ) {
    this.op = node.opType ?? "";
    this.attrs = new Map((node.attribute ?? []).map((a) => [a.name ?? "", a]));
    this.label = `node "${node.name || node.output?.[0] || "?"}" (${this.op})`;
  }

  get opset(): number {
    return this.r.opset;
  }

  fail(code: string, message: string): AesmError {
    return userError(code, this.node.name || this.node.output?.[0] || "", `${this.label}: ${message}`, this.r.file);
  }

  unsupported(message: string): AesmError {
    return this.fail("AESM3004", message);
  }

  /** Outputs the node declares (trailing "" are absent optional outputs). */
  get outputCount(): number {
    const outs = this.node.output ?? [];
    let n = outs.length;
    while (n > 0 && outs[n - 1] === "") n--;
    return n;
  }

  get inputCount(): number {
    const ins = this.node.input ?? [];
    let n = ins.length;
    while (n > 0 && ins[n - 1] === "") n--; // trailing "" are absent optional inputs
    return n;
  }

  has(i: number): boolean {
    return (this.node.input?.[i] ?? "") !== "";
  }

  input(i: number): Value {
    const name = this.node.input?.[i] ?? "";
    if (name === "") throw this.fail("AESM3008", `input ${i} is missing`);
    const v = this.r.valueOf(name);
    if (!v) throw this.fail("AESM3008", `input ${i} "${name}" is not defined before this node`);
    return v;
  }

  /** A side input that must be constant; undefined when absent. */
  constant(i: number, what: string): Tensor | undefined {
    const name = this.node.input?.[i] ?? "";
    if (name === "") return undefined;
    const t = this.r.constants.get(name);
    if (!t)
      throw this.unsupported(
        `input ${i} (${what}) "${name}" is not a constant; the IR needs ${what} known when the model is read`,
      );
    return t;
  }

  constantInts(i: number, what: string): number[] | undefined {
    const t = this.constant(i, what);
    if (!t) return undefined;
    if (t.dtype !== "int64" && t.dtype !== "int32") throw this.unsupported(`${what} must be integers, got ${t.dtype}`);
    return int64Numbers(t);
  }

  private attr(name: string): IAttributeProto | undefined {
    this.used.add(name);
    return this.attrs.get(name);
  }

  int(name: string): number | undefined {
    const a = this.attr(name);
    return a ? num(a.i) : undefined;
  }

  float(name: string): number | undefined {
    const a = this.attr(name);
    return a ? float32Decimal(a.f ?? 0) : undefined;
  }

  ints(name: string): number[] | undefined {
    const a = this.attr(name);
    return a ? (a.ints ?? []).map(num) : undefined;
  }

  string(name: string): string | undefined {
    const a = this.attr(name);
    return a ? new TextDecoder().decode(a.s ?? new Uint8Array()) : undefined;
  }

  /** Attributes this reader did not ask for are forms the IR does not model. */
  checkAttrsUsed(): void {
    const extra = [...this.attrs.keys()].filter((k) => !this.used.has(k));
    if (extra.length > 0) throw this.unsupported(`unsupported attribute ${extra.map((k) => `"${k}"`).join(", ")}`);
  }

  /** Add an IR node; the last one added by a reader carries the ONNX output names. */
  add(op: OpKind, inputs: Value[], attrs: Attrs = {}, outputNames?: string[]): Value[] {
    const scope = scopeOf(this.node.name ?? "", this.op);
    try {
      const outs = this.r.graph.addNode(op, inputs, attrs, { scope, ...(outputNames ? { names: outputNames } : {}) });
      return outs;
    } catch (e) {
      if (e instanceof InvariantError) throw this.fail("AESM3008", e.message);
      throw e;
    }
  }

  /** Add the node that defines this ONNX node's outputs. */
  finish(op: OpKind, inputs: Value[], attrs: Attrs = {}): void {
    this.checkAttrsUsed();
    const names = (this.node.output ?? []).map((n, i) => n || `${this.node.name || this.op}_out${i}`);
    const outs = this.add(op, inputs, attrs, names);
    outs.forEach((v, i) => {
      const n = this.node.output?.[i];
      if (n) this.r.define(n, v);
    });
  }
}

type OpReader = (n: NodeReader) => void;

const setIf = (attrs: Attrs, name: string, v: AttrValue | undefined) => {
  if (v !== undefined) attrs[name] = v;
};

function direct(op: OpKind, arity: number): OpReader {
  return (n) => n.finish(op, Array.from({ length: arity }, (_, i) => n.input(i)));
}

function argIndex(op: OpKind): OpReader {
  return (n) => {
    const attrs: Attrs = {};
    setIf(attrs, "axis", n.int("axis"));
    setIf(attrs, "keepdims", n.int("keepdims"));
    setIf(attrs, "select_last_index", n.int("select_last_index"));
    n.finish(op, [n.input(0)], attrs);
  };
}

/** ONNX Max/Min are variadic; the IR's are binary. */
function variadic(op: OpKind): OpReader {
  return (n) => {
    const ins = Array.from({ length: n.inputCount }, (_, i) => n.input(i));
    if (ins.length === 1) return n.finish("Identity", ins);
    let acc = ins[0]!;
    for (let i = 1; i < ins.length - 1; i++) acc = n.add(op, [acc, ins[i]!])[0]!;
    n.finish(op, [acc, ins[ins.length - 1]!]);
  };
}

function softmax(op: OpKind): OpReader {
  return (n) => {
    const x = n.input(0);
    const attrs: Attrs = {};
    const axis = n.int("axis");
    if (softmaxIsSingleAxis(n.opset)) setIf(attrs, "axis", axis);
    else {
      // Before opset 13 the op flattens [axis, rank) into one axis: the same only for the last axis.
      const rank = x.type.shape.length;
      const a = axis ?? 1;
      if ((a < 0 ? a + rank : a) !== rank - 1)
        throw n.unsupported(`opset ${n.opset} ${op} over axes [${a}, ${rank}) (the IR normalises over one axis)`);
      attrs.axis = a;
    }
    n.finish(op, [x], attrs);
  };
}

function reduce(op: OpKind): OpReader {
  return (n) => {
    const x = n.input(0);
    const axes = reduceAxesAsInput(op, n.opset) ? n.constantInts(1, "axes") : n.ints("axes");
    const noop = n.int("noop_with_empty_axes") === 1;
    const attrs: Attrs = {};
    const keepdims = n.int("keepdims");
    if (axes === undefined || axes.length === 0) {
      if (noop) return n.finish("Identity", [x]);
      attrs.axes = x.type.shape.map((_, i) => i); // no axes: all of them
    } else attrs.axes = axes;
    setIf(attrs, "keepdims", keepdims);
    n.finish(op, [x], attrs);
  };
}

function squeeze(op: "Squeeze" | "Unsqueeze"): OpReader {
  return (n) => {
    const x = n.input(0);
    let axes = squeezeAxesAsInput(n.opset) ? n.constantInts(1, "axes") : n.ints("axes");
    if (axes === undefined) {
      if (op === "Unsqueeze") throw n.fail("AESM3008", "Unsqueeze needs axes");
      if (x.type.shape.some((d) => typeof d !== "number")) throw n.unsupported("Squeeze without axes on a symbolic shape");
      axes = x.type.shape.flatMap((d, i) => (d === 1 ? [i] : []));
    }
    n.finish(op, [x], { axes });
  };
}

const READERS: Readonly<Record<string, OpReader>> = {
  Add: direct("Add", 2),
  Sub: direct("Sub", 2),
  Mul: direct("Mul", 2),
  Div: direct("Div", 2),
  Max: variadic("Max"),
  Min: variadic("Min"),
  ArgMax: argIndex("ArgMax"),
  ArgMin: argIndex("ArgMin"),
  Clip: (n) => {
    if (!n.has(1) || !n.has(2)) throw n.unsupported("Clip without both bounds (the IR's Clip takes min and max)");
    n.finish("Clip", [n.input(0), n.input(1), n.input(2)]);
  },
  Less: direct("Less", 2),
  Greater: direct("Greater", 2),
  GreaterOrEqual: direct("GreaterOrEqual", 2),
  // a ≤ b is b ≥ a, NaN included (both false).
  LessOrEqual: (n) => n.finish("GreaterOrEqual", [n.input(1), n.input(0)]),
  Equal: direct("Equal", 2),
  And: direct("And", 2),
  Or: direct("Or", 2),
  Not: direct("Not", 1),
  Where: direct("Where", 3),
  Identity: direct("Identity", 1),
  Neg: direct("Neg", 1),
  Abs: direct("Abs", 1),
  Exp: direct("Exp", 1),
  Log: direct("Log", 1),
  Sqrt: direct("Sqrt", 1),
  Relu: direct("Relu", 1),
  Tanh: direct("Tanh", 1),
  Sigmoid: direct("Sigmoid", 1),
  Erf: direct("Erf", 1),
  LeakyRelu: (n) => {
    const attrs: Attrs = {};
    setIf(attrs, "alpha", n.float("alpha"));
    n.finish("LeakyRelu", [n.input(0)], attrs);
  },
  Gelu: (n) => {
    const approximate = n.string("approximate") ?? "none";
    if (approximate !== "none") throw n.unsupported(`approximate="${approximate}" (the IR's Gelu is the exact erf form)`);
    n.finish("Gelu", [n.input(0)]);
  },
  Cast: (n) => {
    const code = n.int("to") ?? 0;
    const to = dtypeFromOnnx(code);
    if (!to) throw n.fail("AESM3007", `Cast to ${onnxDtypeName(code)}, which the IR does not carry`);
    n.int("saturate"); // only affects float8 targets, which the IR lacks
    n.finish("Cast", [n.input(0)], { to });
  },
  MatMul: direct("MatMul", 2),
  Gemm: (n) => {
    const attrs: Attrs = {};
    for (const k of ["transA", "transB"]) setIf(attrs, k, n.int(k));
    for (const k of ["alpha", "beta"]) setIf(attrs, k, n.float(k));
    const ins = [n.input(0), n.input(1)];
    if (n.has(2)) ins.push(n.input(2));
    n.finish("Gemm", ins, attrs);
  },
  Softmax: softmax("Softmax"),
  LogSoftmax: softmax("LogSoftmax"),
  ReduceSum: reduce("ReduceSum"),
  ReduceMax: reduce("ReduceMax"),
  ReduceMin: reduce("ReduceMin"),
  ReduceMean: reduce("ReduceMean"),
  ReduceLogSumExp: reduce("ReduceLogSumExp"),
  Concat: (n) => {
    const axis = n.int("axis");
    if (axis === undefined) throw n.fail("AESM3008", "Concat needs an axis");
    n.finish("Concat", Array.from({ length: n.inputCount }, (_, i) => n.input(i)), { axis });
  },
  Gather: (n) => {
    const attrs: Attrs = {};
    setIf(attrs, "axis", n.int("axis"));
    n.finish("Gather", [n.input(0), n.input(1)], attrs);
  },
  GatherElements: (n) => {
    const attrs: Attrs = {};
    setIf(attrs, "axis", n.int("axis"));
    n.finish("GatherElements", [n.input(0), n.input(1)], attrs);
  },
  Unsqueeze: squeeze("Unsqueeze"),
  Squeeze: squeeze("Squeeze"),
  Reshape: (n) => {
    const x = n.input(0);
    const shape = reshapeShapeAsInput(n.opset) ? n.constantInts(1, "shape") : n.ints("shape");
    if (!shape) throw n.fail("AESM3008", "Reshape needs a shape");
    // allowzero=1 makes a 0 mean "size 0" rather than "copy"; without zeros the two agree.
    if (n.int("allowzero") === 1 && shape.includes(0)) throw n.unsupported("allowzero=1 with a 0 in the shape");
    n.finish("Reshape", [x], { shape });
  },
  Split: (n) => {
    const x = n.input(0);
    const axis = normAxis(n.int("axis") ?? 0, x.type.shape.length);
    const outs = n.outputCount;
    let split = n.has(1) ? n.constantInts(1, "split") : n.ints("split");
    if (!split) {
      const d = x.type.shape[axis];
      if (typeof d !== "number" || d % outs !== 0) throw n.unsupported(`Split into ${outs} equal parts of a dim ${String(d)}`);
      split = new Array<number>(outs).fill(d / outs);
    }
    n.int("num_outputs");
    n.finish("Split", [x], { axis, split });
  },
  Transpose: (n) => {
    const x = n.input(0);
    const perm = n.ints("perm") ?? x.type.shape.map((_, i) => x.type.shape.length - 1 - i);
    n.finish("Transpose", [x], { perm });
  },
  Slice: (n) => {
    const x = n.input(0);
    let starts: number[] | undefined, ends: number[] | undefined, axes: number[] | undefined, steps: number[] | undefined;
    if (sliceBoundsAsInputs(n.opset)) {
      starts = n.constantInts(1, "starts");
      ends = n.constantInts(2, "ends");
      axes = n.constantInts(3, "axes");
      steps = n.constantInts(4, "steps");
    } else {
      starts = n.ints("starts");
      ends = n.ints("ends");
      axes = n.ints("axes");
    }
    if (!starts || !ends) throw n.fail("AESM3008", "Slice needs starts and ends");
    if (steps && steps.some((s) => s !== 1)) throw n.unsupported(`steps [${steps}] (the IR slices with step 1)`);
    n.finish("Slice", [x], { starts, ends, axes: axes ?? starts.map((_, i) => i) });
  },
  TopK: (n) => {
    const x = n.input(0);
    const kv = topKAsInput(n.opset) ? n.constantInts(1, "k") : [n.int("k") ?? NaN];
    if (!kv || kv.length !== 1 || !Number.isFinite(kv[0])) throw n.fail("AESM3008", "TopK needs one k");
    const attrs: Attrs = { k: kv[0]! };
    setIf(attrs, "axis", n.int("axis"));
    setIf(attrs, "largest", n.int("largest"));
    // sorted=0 leaves the order unspecified; the IR's sorted order is one valid answer.
    n.int("sorted");
    n.finish("TopK", [x], attrs);
  },
  OneHot: (n) => {
    const x = n.input(0);
    const depthT = n.constant(1, "depth");
    const values = n.constant(2, "values");
    if (!depthT || depthT.data.length !== 1) throw n.fail("AESM3008", "OneHot needs a single depth");
    const depth = Number(depthT.data[0]!);
    const axis = n.int("axis");
    const rank = x.type.shape.length;
    if (axis !== undefined && axis !== -1 && axis !== rank)
      throw n.unsupported(`axis=${axis} (the IR puts the one-hot axis last)`);
    if (!values || values.dtype !== "float32" || values.data.length !== 2)
      throw n.unsupported(
        `values ${values ? `${values.dtype} [${Array.from(values.data as ArrayLike<number>).join(", ")}]` : "?"} (the IR's OneHot writes float32 values)`,
      );
    if (x.type.dtype !== "int64") throw n.unsupported(`indices of dtype ${x.type.dtype} (the IR's OneHot takes int64)`);
    const [off, on] = [Number(values.data[0]), Number(values.data[1])];
    n.finish("OneHot", [x], { depth: Math.trunc(depth), ...(off !== 0 ? { off } : {}), ...(on !== 1 ? { on } : {}) });
  },
  NonZero: (n) => {
    const x = n.input(0);
    // The count's symbol: the one our emitter wrote in value_info, else one named after the output.
    const out = n.node.output?.[0] ?? "";
    const dim = n.r.declaredDim(out, 1) ?? `${out || "nonzero"}_count`;
    n.finish("NonZero", [x], { dim });
  },
  ScatterND: (n) => {
    const reduction = n.string("reduction") ?? "none";
    if (reduction !== "none" && reduction !== "add") throw n.unsupported(`reduction="${reduction}" (the IR's ScatterND replaces or adds)`);
    n.finish("ScatterND", [n.input(0), n.input(1), n.input(2)], reduction === "add" ? { reduction } : {});
  },
};

/** State of one model being read: ONNX names → IR values, known constant tensors. */
class ModelReader {
  readonly graph: Graph;
  readonly constants = new Map<string, Tensor>();
  private readonly values = new Map<string, Value>();
  private readonly aliases = new Map<string, Value>();
  readonly opset: number;
  readonly baseDir: string | undefined;

  constructor(
    readonly model: ModelProto,
    readonly file: string | undefined,
    readonly options: ReadOptions,
  ) {
    const g = model.graph!;
    this.graph = new Graph(g.name || "model");
    const imports = model.opsetImport ?? [];
    const def = imports.find((o) => (o.domain ?? "") === "" || o.domain === "ai.onnx");
    // Models without an opset import predate opset imports (IR < 3): opset 1.
    this.opset = def ? num(def.version) : 1;
    this.baseDir = file !== undefined ? dirname(resolve(file)) : undefined;
  }

  valueOf(name: string): Value | undefined {
    return this.values.get(name);
  }

  /** The symbolic dim `axis` of `name` as declared in value_info or the graph outputs, if any. */
  declaredDim(name: string, axis: number): string | undefined {
    const g = this.model.graph!;
    const vi = [...(g.valueInfo ?? []), ...(g.output ?? [])].find((v) => v.name === name);
    const d = vi?.type?.tensorType?.shape?.dim?.[axis];
    return d?.dimParam || undefined;
  }

  define(name: string, v: Value): void {
    if (this.values.has(name)) throw userError("AESM3008", name, `value "${name}" is defined twice`, this.file);
    this.values.set(name, v);
  }

  read(): Graph {
    const g = this.model.graph!;
    const file = this.file;
    // Names read as data by some node (or as a graph output); constants read only as side
    // inputs (axes, shape, …) fold into attributes and do not become IR constants.
    const dataUse = new Set<string>((g.output ?? []).map((o) => o.name ?? ""));
    const sideUse = new Set<string>();
    for (const node of g.node ?? []) {
      const side = SIDE_INPUTS[node.opType ?? ""] ?? [];
      (node.input ?? []).forEach((name, i) => (side.includes(i) ? sideUse : dataUse).add(name));
    }
    const keep = (name: string) => dataUse.has(name) || !sideUse.has(name);

    const initNames = new Set((g.initializer ?? []).map((t) => t.name ?? ""));
    const fed = this.options.constantInputs ?? {};
    for (const vi of g.input ?? []) {
      const name = vi.name ?? "";
      if (initNames.has(name)) continue; // IR < 4 lists initialisers as inputs too
      if (name in fed) continue;
      this.define(name, this.graph.addInput(name, typeFromProto(name, vi.type, file)));
    }
    for (const [name, t] of Object.entries(fed)) {
      if (!(g.input ?? []).some((vi) => vi.name === name))
        throw userError("AESM3008", name, `constantInputs names "${name}", which is not a graph input`, file);
      this.constants.set(name, t);
      if (keep(name)) this.define(name, this.graph.addConstant(name, t));
    }
    for (const tp of g.initializer ?? []) {
      const name = tp.name ?? "";
      const t = tensorFromProto(tp, { ...(file !== undefined ? { file } : {}), ...(this.baseDir ? { baseDir: this.baseDir } : {}) });
      this.constants.set(name, t);
      if (keep(name)) this.define(name, this.graph.addConstant(name, t));
    }

    const outputNames = new Set((g.output ?? []).map((o) => o.name ?? ""));
    for (const node of g.node ?? []) {
      const op = node.opType ?? "";
      const domain = node.domain ?? "";
      const label = node.name || node.output?.[0] || "?";
      if (domain !== "" && domain !== "ai.onnx")
        throw userError("AESM3004", label, `node "${label}": unsupported op "${domain}.${op}"`, file);
      if (op === "Constant") {
        this.readConstant(node, keep);
        continue;
      }
      // Identities the emitter added so each output has a producer: read back as output aliases.
      const out0 = node.output?.[0] ?? "";
      if (op === "Identity" && node.docString === OUTPUT_ALIAS_DOC && outputNames.has(out0)) {
        const src = this.values.get(node.input?.[0] ?? "");
        if (src) {
          this.aliases.set(out0, src);
          continue;
        }
      }
      const reader = READERS[op];
      if (!reader) throw userError("AESM3004", label, `node "${label}": unsupported op "${op}"`, file);
      reader(new NodeReader(this, node));
    }

    for (const o of g.output ?? []) {
      const name = o.name ?? "";
      const v = this.aliases.get(name) ?? this.values.get(name);
      if (!v) throw userError("AESM3008", name, `graph output "${name}" is not produced by any node`, file);
      this.graph.setOutput(name, v);
    }
    for (const p of this.model.metadataProps ?? []) this.graph.metadata[p.key ?? ""] = p.value ?? "";
    return this.graph;
  }

  private readConstant(node: INodeProto, keep: (name: string) => boolean): void {
    const name = node.output?.[0] ?? "";
    const a = node.attribute?.[0];
    const label = node.name || name;
    if (!a || (node.attribute?.length ?? 0) !== 1)
      throw userError("AESM3008", label, `node "${label}" (Constant): needs exactly one value attribute`, this.file);
    let t: Tensor;
    switch (a.name) {
      case "value":
        t = tensorFromProto({ ...a.t!, name }, this.file !== undefined ? { file: this.file } : {});
        break;
      case "value_float":
        t = { dtype: "float32", shape: [], data: new Float32Array([a.f ?? 0]) };
        break;
      case "value_floats":
        t = { dtype: "float32", shape: [a.floats?.length ?? 0], data: Float32Array.from(a.floats ?? []) };
        break;
      case "value_int":
        t = { dtype: "int64", shape: [], data: new BigInt64Array([BigInt(String(a.i ?? 0))]) };
        break;
      case "value_ints":
        t = { dtype: "int64", shape: [a.ints?.length ?? 0], data: BigInt64Array.from(a.ints ?? [], (v) => BigInt(String(v))) };
        break;
      default:
        throw userError("AESM3004", label, `node "${label}" (Constant): unsupported attribute "${a.name}"`, this.file);
    }
    this.constants.set(name, t);
    if (keep(name)) this.define(name, this.graph.addConstant(name, t));
  }
}

/**
 * An ONNX model as an IR graph. Errors name the node: AESM3003 (not ONNX), AESM3004 (op,
 * attribute or non-constant side input the IR lacks), AESM3007 (dtype), AESM3008 (malformed).
 */
export function readModel(bytes: Uint8Array, file?: string, options: ReadOptions = {}): Graph {
  return new ModelReader(decodeModel(bytes, file), file, options).read();
}

/** Read an ONNX file (external data resolves next to it). */
export function readOnnxFile(path: string, options: ReadOptions = {}): Graph {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw userError("AESM4001", "", code === "ENOENT" ? "no such file" : `cannot read: ${code ?? String(e)}`, path);
  }
  return readModel(bytes, path, options);
}
