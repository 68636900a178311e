// IR graph → ONNX ModelProto (MODEL.md §8). The only place that knows operator forms per
// opset: side inputs (axes, shape, k, …) become int64 initializers, Gelu is decomposed below 20.

import { endianness } from "node:os";
import onnxProto from "onnx-proto";
import { InvariantError, invariant } from "../../core/diagnostics.ts";
import { writeFileAtomic } from "../../core/atomic.ts";
import { AUTO_EXTERNAL_THRESHOLD, type ExternalDataOptions, exceedsProtobufLimit, writeModelWithExternalData } from "./external.ts";
import { floatToHalf, type DType, type Tensor, type TensorData } from "../../core/tensor.ts";
import type { Graph, Node, Value } from "../../ir/graph.ts";
import { attrInt, attrInts, attrString } from "../../ir/infer.ts";
import type { AttrValue, OpKind } from "../../ir/ops.ts";
import type { Shape, ValueType } from "../../ir/types.ts";
import {
  ATTR_KINDS,
  DEFAULT_OPSET,
  ONNX_DTYPE,
  OUTPUT_ALIAS_DOC,
  hasNativeGelu,
  irVersionFor,
  reduceAxesAsInput,
  scatterReductionAsAttr,
  squeezeAxesAsInput,
  type AttrKind,
} from "./opsets.ts";

const { onnx } = onnxProto;
export type ModelProto = onnxProto.onnx.ModelProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;

export interface EmitOptions {
  /** Default-domain opset, 13–21 (default 17). */
  opset?: number;
  producerVersion?: string;
  docString?: string;
  /** Write value_info (IR types) for intermediate values, so checkers compare them with ONNX inference (default true). */
  valueInfo?: boolean;
}

// Raw tensor bytes are little-endian in ONNX; typed arrays use the host order.
invariant(endianness() === "LE", "aesm writes ONNX raw_data from typed arrays and needs a little-endian host");

/** A host tensor as a TensorProto with little-endian raw_data. */
export function tensorToProto(name: string, t: Tensor): ITensorProto {
  const d = t.data;
  return {
    name,
    dataType: ONNX_DTYPE[t.dtype],
    dims: [...t.shape],
    // A view, not a copy: constants are immutable and encoding copies the bytes anyway.
    rawData: new Uint8Array(d.buffer, d.byteOffset, d.byteLength),
  };
}

function shapeProto(shape: Shape): onnxProto.onnx.ITensorShapeProto {
  return { dim: shape.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) };
}

function valueInfo(name: string, t: ValueType): IValueInfoProto {
  return { name, type: { tensorType: { elemType: ONNX_DTYPE[t.dtype], shape: shapeProto(t.shape) } } };
}

function attrProto(name: string, kind: AttrKind, v: AttrValue, where: string): IAttributeProto {
  const bad = () => new InvariantError(`${where}: attribute ${name} must be ${kind}, got ${JSON.stringify(v)}`);
  const T = onnx.AttributeProto.AttributeType;
  switch (kind) {
    case "int":
      if (typeof v !== "number" || !Number.isInteger(v)) throw bad();
      return { name, type: T.INT, i: v };
    case "float":
      if (typeof v !== "number") throw bad();
      return { name, type: T.FLOAT, f: v };
    case "ints":
      if (!Array.isArray(v) || v.some((x) => !Number.isInteger(x))) throw bad();
      return { name, type: T.INTS, ints: [...v] };
  }
}

function floatScalar(dtype: DType, v: number): TensorData {
  switch (dtype) {
    case "float32":
      return new Float32Array([v]);
    case "float64":
      return new Float64Array([v]);
    case "float16":
      return new Uint16Array([floatToHalf(v)]);
    default:
      throw new InvariantError(`no float constant of dtype ${dtype}`);
  }
}

function int64s(values: number[], shape: number[] = [values.length]): Tensor {
  return { dtype: "int64", shape, data: BigInt64Array.from(values, (x) => BigInt(x)) };
}

/** Collects nodes and initialisers for one graph; names every generated entity uniquely. */
class Emitter {
  readonly nodes: INodeProto[] = [];
  readonly initializers: ITensorProto[] = [];
  private counter = 0;
  constructor(
    readonly opset: number,
    private readonly taken: Set<string>,
  ) {}

  fresh(base: string): string {
    let name = base;
    for (let i = 1; this.taken.has(name); i++) name = `${base}_${i}`;
    this.taken.add(name);
    return name;
  }

  /** `scope/Op_n`: unique, and the reader recovers the scope from it. */
  nodeName(scope: string, op: string): string {
    return this.fresh(`${scope ? `${scope}/` : ""}${op}_${this.counter++}`);
  }

  node(op: string, inputs: string[], outputs: string[], attribute: IAttributeProto[], scope: string, docString?: string): void {
    this.nodes.push({
      name: this.nodeName(scope, op),
      opType: op,
      domain: "",
      input: inputs,
      output: outputs,
      attribute,
      ...(docString !== undefined ? { docString } : {}),
    });
  }

  /** A side input (axes, shape, k, …) as its own initialiser; returns its name. */
  constant(base: string, t: Tensor): string {
    const name = this.fresh(base);
    this.initializers.push(tensorToProto(name, t));
    return name;
  }
}

/** IR attributes as ONNX attributes, except those the op form turns into inputs. */
function plainAttrs(n: Node, skip: string[] = []): IAttributeProto[] {
  const kinds = ATTR_KINDS[n.op] ?? {};
  const where = `${n.op}#${n.id}${n.scope ? ` (${n.scope})` : ""}`;
  return Object.keys(n.attrs)
    .filter((k) => !skip.includes(k))
    .sort()
    .map((k) => {
      const kind = kinds[k];
      if (!kind) throw new InvariantError(`${where}: the ONNX emitter does not know attribute ${k}`);
      return attrProto(k, kind, n.attrs[k]!, where);
    });
}

type OpEmitter = (e: Emitter, n: Node, ins: string[], outs: string[]) => void;

const plain: OpEmitter = (e, n, ins, outs) => e.node(n.op, ins, outs, plainAttrs(n), n.scope);

const reduce: OpEmitter = (e, n, ins, outs) => {
  const axes = attrInts(n.attrs, "axes");
  const attrs = plainAttrs(n, ["axes"]);
  const T = onnx.AttributeProto.AttributeType;
  if (reduceAxesAsInput(n.op, e.opset)) {
    // An empty axes input means "all axes" unless noop_with_empty_axes says otherwise.
    if (axes.length === 0) attrs.push({ name: "noop_with_empty_axes", type: T.INT, i: 1 });
    const a = e.constant(`${outs[0]}_axes`, int64s(axes));
    e.node(n.op, [ins[0]!, a], outs, attrs, n.scope);
  } else if (axes.length === 0) {
    // An empty axes attribute also means "all axes"; reducing over none is the identity.
    e.node("Identity", [ins[0]!], outs, [], n.scope);
  } else {
    attrs.push({ name: "axes", type: T.INTS, ints: axes });
    attrs.sort((a, b) => (a.name! < b.name! ? -1 : 1));
    e.node(n.op, [ins[0]!], outs, attrs, n.scope);
  }
};

const squeeze: OpEmitter = (e, n, ins, outs) => {
  const axes = attrInts(n.attrs, "axes");
  invariant(squeezeAxesAsInput(e.opset), `${n.op}: opset ${e.opset} below the supported range`);
  plainAttrs(n, ["axes"]); // rejects unknown attributes
  e.node(n.op, [ins[0]!, e.constant(`${outs[0]}_axes`, int64s(axes))], outs, [], n.scope);
};

const EMIT: Record<OpKind, OpEmitter> = {
  Add: plain,
  Sub: plain,
  Mul: plain,
  Div: plain,
  Max: plain,
  Min: plain,
  ArgMax: plain,
  ArgMin: plain,
  Clip: plain,
  Less: plain,
  Greater: plain,
  GreaterOrEqual: plain,
  Equal: plain,
  And: plain,
  Or: plain,
  Not: plain,
  Where: plain,
  Identity: plain,
  Neg: plain,
  Abs: plain,
  Exp: plain,
  Log: plain,
  Sqrt: plain,
  Relu: plain,
  LeakyRelu: plain,
  Tanh: plain,
  Sigmoid: plain,
  Erf: plain,
  Gelu: (e, n, ins, outs) => {
    plainAttrs(n); // rejects unknown attributes
    if (hasNativeGelu(e.opset)) return e.node("Gelu", ins, outs, [], n.scope);
    // Exact (erf) form, in the node order ORT's Gelu fusion recognises:
    //   y = (x · (1 + Erf(x / √2))) · 0.5
    const x = ins[0]!;
    const y = outs[0]!;
    const dt = n.inputs[0]!.type.dtype;
    const scalar = (v: number): Tensor => ({ dtype: dt, shape: [], data: floatScalar(dt, v) });
    const sqrt2 = e.constant(`${y}_sqrt2`, scalar(Math.SQRT2));
    const one = e.constant(`${y}_one`, scalar(1));
    const half = e.constant(`${y}_half`, scalar(0.5));
    const t1 = e.fresh(`${y}_div`);
    const t2 = e.fresh(`${y}_erf`);
    const t3 = e.fresh(`${y}_add`);
    const t4 = e.fresh(`${y}_mul`);
    e.node("Div", [x, sqrt2], [t1], [], n.scope);
    e.node("Erf", [t1], [t2], [], n.scope);
    e.node("Add", [t2, one], [t3], [], n.scope);
    e.node("Mul", [x, t3], [t4], [], n.scope);
    e.node("Mul", [t4, half], [y], [], n.scope);
  },
  Cast: (e, n, ins, outs) => {
    const to = attrString(n.attrs, "to");
    const code = ONNX_DTYPE[to as keyof typeof ONNX_DTYPE];
    if (code === undefined) throw new InvariantError(`Cast#${n.id}: unknown dtype ${to}`);
    plainAttrsExcept(n, ["to"]);
    e.node("Cast", ins, outs, [{ name: "to", type: onnx.AttributeProto.AttributeType.INT, i: code }], n.scope);
  },
  MatMul: plain,
  Gemm: plain,
  Softmax: plain,
  LogSoftmax: plain,
  ReduceSum: reduce,
  ReduceMax: reduce,
  ReduceMin: reduce,
  ReduceMean: reduce,
  ReduceLogSumExp: reduce,
  Concat: plain,
  Gather: plain,
  GatherElements: plain,
  Unsqueeze: squeeze,
  Squeeze: squeeze,
  Reshape: (e, n, ins, outs) => {
    const shape = attrInts(n.attrs, "shape");
    plainAttrsExcept(n, ["shape"]);
    e.node("Reshape", [ins[0]!, e.constant(`${outs[0]}_shape`, int64s(shape))], outs, [], n.scope);
  },
  Transpose: plain,
  Slice: (e, n, ins, outs) => {
    const y = outs[0]!;
    const starts = e.constant(`${y}_starts`, int64s(attrInts(n.attrs, "starts")));
    const ends = e.constant(`${y}_ends`, int64s(attrInts(n.attrs, "ends")));
    const axes = e.constant(`${y}_axes`, int64s(attrInts(n.attrs, "axes")));
    plainAttrsExcept(n, ["starts", "ends", "axes"]);
    e.node("Slice", [ins[0]!, starts, ends, axes], outs, [], n.scope);
  },
  Split: (e, n, ins, outs) => {
    const split = e.constant(`${outs[0]}_split`, int64s(attrInts(n.attrs, "split")));
    e.node("Split", [ins[0]!, split], outs, plainAttrs(n, ["split"]), n.scope);
  },
  TopK: (e, n, ins, outs) => {
    const k = e.constant(`${outs[0]}_k`, int64s([attrInt(n.attrs, "k")]));
    e.node("TopK", [ins[0]!, k], outs, plainAttrs(n, ["k"]), n.scope);
  },
  OneHot: (e, n, ins, outs) => {
    const y = outs[0]!;
    const depth = e.constant(`${y}_depth`, int64s([attrInt(n.attrs, "depth")], []));
    const off = n.attrs["off"] === undefined ? 0 : Number(n.attrs["off"]);
    const on = n.attrs["on"] === undefined ? 1 : Number(n.attrs["on"]);
    const values = e.constant(`${y}_values`, { dtype: "float32", shape: [2], data: new Float32Array([off, on]) });
    plainAttrsExcept(n, ["depth", "off", "on"]);
    // axis stays at its default (-1): the IR puts the one-hot axis last.
    e.node("OneHot", [ins[0]!, depth, values], outs, [], n.scope);
  },
  NonZero: (e, n, ins, outs) => {
    // `dim` names the IR's data-dependent symbol; ONNX carries it only in value_info.
    plainAttrsExcept(n, ["dim"]);
    e.node("NonZero", ins, outs, [], n.scope);
  },
  ScatterND: (e, n, ins, outs) => {
    const reduction = attrString(n.attrs, "reduction", "none");
    plainAttrsExcept(n, ["reduction"]);
    if (reduction === "none") return e.node("ScatterND", ins, outs, [], n.scope);
    invariant(reduction === "add", `ScatterND#${n.id}: unknown reduction ${reduction}`);
    if (scatterReductionAsAttr(e.opset))
      return e.node("ScatterND", ins, outs, [{ name: "reduction", type: onnx.AttributeProto.AttributeType.STRING, s: new TextEncoder().encode("add") }], n.scope);
    // Before opset 16: data[rows] + updates, written back. The same numbers, because IR
    // ScatterND index tuples never repeat. Written for row indices [n, 1] only.
    const idx = n.inputs[1]!.type.shape;
    invariant(idx.length === 2 && idx[1] === 1, `ScatterND#${n.id}: reduction add below opset 16 needs indices [n, 1]`);
    const rows = e.fresh(`${outs[0]}_rows`);
    const prev = e.fresh(`${outs[0]}_prev`);
    const sum = e.fresh(`${outs[0]}_sum`);
    e.node("Squeeze", [ins[1]!, e.constant(`${rows}_axes`, int64s([1]))], [rows], [], n.scope);
    e.node("Gather", [ins[0]!, rows], [prev], [{ name: "axis", type: onnx.AttributeProto.AttributeType.INT, i: 0 }], n.scope);
    e.node("Add", [prev, ins[2]!], [sum], [], n.scope);
    e.node("ScatterND", [ins[0]!, ins[1]!, sum], outs, [], n.scope);
  },
};

/** For ops whose every IR attribute becomes an input or a special form: reject any other. */
function plainAttrsExcept(n: Node, handled: string[]): void {
  const extra = Object.keys(n.attrs).filter((k) => !handled.includes(k));
  if (extra.length > 0)
    throw new InvariantError(`${n.op}#${n.id}: the ONNX emitter does not know attribute ${extra.join(", ")}`);
}

/**
 * ONNX names for IR values. IR names are unique already; what remains is a value named
 * like a graph output that it does not produce directly (an input, a constant, or a node
 * result exported under another name): it is renamed so that the output's name is free.
 */
function assignNames(graph: Graph, taken: Set<string>): Map<Value, string> {
  const outputByName = new Map(graph.outputs.map((o) => [o.name, o.value]));
  const names = new Map<Value, string>();
  const all = [...graph.inputs, ...graph.constants, ...graph.nodes.flatMap((n) => n.outputs)];
  for (const v of all) taken.add(v.name);
  for (const n of outputByName.keys()) taken.add(n);
  for (const v of all) {
    const clash = outputByName.has(v.name) && !(v.producer !== null && outputByName.get(v.name) === v);
    if (!clash) {
      names.set(v, v.name);
      continue;
    }
    if (v.isInput) throw new InvariantError(`graph output ${v.name} has the name of graph input %${v.name} but reads another value`);
    let name = `${v.name}_1`;
    for (let i = 2; taken.has(name); i++) name = `${v.name}_${i}`;
    taken.add(name);
    names.set(v, name);
  }
  return names;
}

/** The ONNX model of `graph`. Does not verify the graph; run verifyGraph first where in doubt. */
export function emitModel(graph: Graph, options: EmitOptions = {}): ModelProto {
  const opset = options.opset ?? DEFAULT_OPSET;
  const irVersion = irVersionFor(opset);
  const taken = new Set<string>();
  const names = assignNames(graph, taken);
  const nameOf = (v: Value) => names.get(v)!;
  const e = new Emitter(opset, taken);

  for (const n of graph.nodes) EMIT[n.op](e, n, n.inputs.map(nameOf), n.outputs.map(nameOf));

  // Every output name must be produced by a node: a value that is an input, a constant,
  // or already another output (or named differently) gets an Identity marked as an alias.
  const outputs: IValueInfoProto[] = [];
  for (const o of graph.outputs) {
    const direct = o.value.producer !== null && nameOf(o.value) === o.name;
    if (!direct) e.node("Identity", [nameOf(o.value)], [o.name], [], "", OUTPUT_ALIAS_DOC);
    outputs.push(valueInfo(o.name, o.value.type));
  }

  // Intermediate types, so checkers and runtimes compare ONNX inference with the IR's.
  const outputNames = new Set(graph.outputs.map((o) => o.name));
  const intermediate: IValueInfoProto[] = [];
  if (options.valueInfo !== false)
    for (const n of graph.nodes)
      for (const v of n.outputs) if (!outputNames.has(nameOf(v))) intermediate.push(valueInfo(nameOf(v), v.type));

  const model = onnx.ModelProto.create({
    irVersion,
    opsetImport: [{ domain: "", version: opset }],
    producerName: "aesm",
    ...(options.producerVersion !== undefined ? { producerVersion: options.producerVersion } : {}),
    ...(options.docString !== undefined ? { docString: options.docString } : {}),
    graph: {
      name: graph.name,
      node: e.nodes,
      initializer: [...graph.constants.map((c) => tensorToProto(nameOf(c), c.data!)), ...e.initializers],
      input: graph.inputs.map((v) => valueInfo(nameOf(v), v.type)),
      output: outputs,
      valueInfo: intermediate,
    },
    metadataProps: Object.entries(graph.metadata).map(([key, value]) => ({ key, value })),
  });
  return model;
}

export function encodeModel(model: ModelProto): Uint8Array {
  return onnx.ModelProto.encode(model).finish();
}

export interface WriteOnnxOptions extends EmitOptions {
  /**
   * Keep initialisers of `threshold` bytes or more in one data file beside the model (external.ts).
   * Without it, external data is used anyway (threshold AUTO_EXTERNAL_THRESHOLD) when the model
   * would pass protobuf's 2 GiB limit.
   */
  externalData?: ExternalDataOptions;
}

/**
 * Emit, encode and write atomically (temp file, then rename; with external data, the data file
 * first and the model last). Returns the number of bytes written, data file included.
 */
export function writeOnnx(path: string, graph: Graph, options: WriteOnnxOptions = {}): number {
  const model = emitModel(graph, options);
  const external = options.externalData ?? (exceedsProtobufLimit(model) ? { threshold: AUTO_EXTERNAL_THRESHOLD } : undefined);
  if (external) {
    const r = writeModelWithExternalData(path, model, external);
    return r.modelBytes + r.dataBytes;
  }
  const bytes = encodeModel(model);
  writeFileAtomic(path, bytes);
  return bytes.length;
}
