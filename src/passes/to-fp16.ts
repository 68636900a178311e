// Mixed precision: the model's expert, tower and embedding arithmetic in float16, with float32
// kept where half would change which experts are selected, or cannot hold the numbers.

import { halvesOf } from "../backends/interp/kernels.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrString } from "../ir/infer.ts";
import type { OpKind } from "../ir/ops.ts";
import { DTYPE_SHORT } from "../ir/types.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** Graph metadata key naming the compiled precision; parity reads it to pick its tolerances. */
export const PRECISION_METADATA_KEY = "aesm.precision";

/**
 * Per op, on the data path: "half", or why it stays float32 (gates and selection stay float32
 * whatever their ops). Half has an 11-bit significand and a range of ±65504: fine for linear
 * layers, activations, mixtures and data movement. A Record, so a new op needs a decision here.
 */
const ON_DATA_PATH: Record<OpKind, "half" | string> = {
  Add: "half",
  Sub: "half",
  Mul: "half",
  Div: "half",
  Max: "half",
  Min: "half",
  ArgMax: "half",
  ArgMin: "half",
  Clip: "half",
  Less: "half",
  Greater: "half",
  GreaterOrEqual: "half",
  Equal: "half",
  And: "bool only",
  Or: "bool only",
  Not: "bool only",
  Where: "half",
  Identity: "half",
  Neg: "half",
  Abs: "half",
  Exp: "overflows half past 11.1",
  Log: "of a half-rounded probability: absolute error ~2⁻¹¹ near 1",
  Sqrt: "half",
  Relu: "half",
  LeakyRelu: "half",
  Tanh: "half",
  Sigmoid: "half",
  Erf: "half",
  Gelu: "half",
  Cast: "left as written",
  MatMul: "half",
  Gemm: "half",
  Softmax: "exp inside",
  LogSoftmax: "exp and log inside",
  ReduceSum: "half",
  ReduceMax: "half",
  ReduceMin: "half",
  ReduceMean: "half",
  ReduceLogSumExp: "exp and log inside",
  Concat: "half",
  Gather: "half",
  GatherElements: "half",
  Unsqueeze: "half",
  Squeeze: "half",
  Reshape: "half",
  Transpose: "half",
  Split: "half",
  Slice: "half",
  TopK: "picks experts: half ties would change the choice",
  OneHot: "float32 by definition in the IR",
  NonZero: "half",
  // reduction "add" (sparse dispatch's accumulator) is kept: see keptForKernel
  ScatterND: "half",
};

/** ScatterND with reduction "add": onnxruntime's CPU provider has no half kernel for it (a run-time error). */
function keptForKernel(n: Node): boolean {
  return n.op === "ScatterND" && attrString(n.attrs, "reduction", "none") !== "none";
}

/**
 * The selection subgraph of a layer: `<scenario layer>.gates…`, `<scenario layer>.select…`,
 * `task_layers.<i>.<task>.gates…` and `….select…` (the scopes lowering and the passes give).
 * Level and task names sit in fixed places, so a level named `gates` does not match.
 */
const SELECTION_SCOPE = /^(scenario_layers\.[^.]+\.\d+|task_layers\.\d+\.[^.]+)\.(gates|select)(\.|$)/;

export function isSelectionScope(scope: string): boolean {
  return SELECTION_SCOPE.test(scope);
}

/** The largest finite magnitude of half (0x7bff). */
const HALF_MAX = 65504;

function fitsHalf(t: Tensor): boolean {
  const X = t.data as Float32Array;
  for (let i = 0; i < X.length; i++) if (Number.isFinite(X[i]!) && Math.abs(X[i]!) > HALF_MAX) return false;
  return true;
}

function toHalf(t: Tensor): Tensor {
  return { dtype: "float16", shape: [...t.shape], data: halvesOf(t.data as Float32Array) };
}

const hasFloat32 = (vs: readonly Value[]) => vs.some((v) => v.type.dtype === "float32");

/**
 * Which nodes run in float32 because they are selection: the gate and select scopes, and any
 * node all of whose readers are selection (the scenario indicator and task embeddings, which
 * feed gates only), so that gates see them unrounded.
 */
function selectionNodes(graph: Graph): Set<Node> {
  const sel = new Set<Node>(graph.nodes.filter((n) => isSelectionScope(n.scope)));
  for (let i = graph.nodes.length - 1; i >= 0; i--) {
    const n = graph.nodes[i]!;
    if (sel.has(n)) continue;
    const readers = n.outputs.flatMap((o) => [...o.users]);
    if (readers.length > 0 && readers.every((u) => sel.has(u)) && !n.outputs.some((o) => graph.isGraphOutput(o))) sel.add(n);
  }
  return sel;
}

/** The nodes that compute in half, counting why the others on the data path do not. */
function halfNodes(graph: Graph, ctx: PassContext): Set<Node> {
  const selection = selectionNodes(graph);
  const half = new Set<Node>();
  for (const n of graph.nodes) {
    if (!hasFloat32(n.inputs) && !hasFloat32(n.outputs)) continue; // nothing float32 to convert
    if (selection.has(n)) {
      bump(ctx, "kept-f32:selection");
      continue;
    }
    if (ON_DATA_PATH[n.op] !== "half" || keptForKernel(n)) {
      bump(ctx, `kept-f32:${n.op}`);
      continue;
    }
    // outputs keep their float32 contract: the producer of a graph output casts its inputs instead
    if (n.outputs.some((o) => graph.isGraphOutput(o))) {
      bump(ctx, "kept-f32:graph-output");
      continue;
    }
    if (n.inputs.some((v) => v.isConstant && v.type.dtype === "float32" && !fitsHalf(v.data!))) {
      bump(ctx, "kept-f32:constant-beyond-half");
      continue;
    }
    half.add(n);
  }
  return half;
}

/**
 * to-fp16: the data path (embeddings, dense inputs after entry, experts, mixtures, towers) in
 * float16; gates and expert selection in float32, so selection scores are float32 scores of
 * float32 logits; graph inputs and outputs unchanged (MODEL.md §8).
 *
 * ```
 * before                                 after
 * %x0  : f32 = Concat(%emb, %dense)      %dense.f16 : f16 = Cast(%dense)
 *                                        %x0  : f16 = Concat(%emb, %dense.f16)     (tables: f16)
 * %h   : f32 = MatMul(%x0, %W)           %h   : f16 = MatMul(%x0, %W)              (%W: f16)
 * %gi  : f32 = Concat(%x0, %c)  # gates  %x0.f32 : f32 = Cast(%x0)
 *                                        %gi  : f32 = Concat(%x0.f32, %c)          (gate weights: f32)
 * %w   : f32 = Softmax(…)       # select %w   : f32 = Softmax(…)
 * %m   : f32 = MatMul(%w, %H)   # mix    %w.f16 : f16 = Cast(%w); %m : f16 = MatMul(%w.f16, %H)
 * %p   : f32 = Sigmoid(%l)               %p   : f16 = Sigmoid(%l); %p.f32 : f32 = Cast(%p)
 * %ctr : f32 = Squeeze(%p)               %ctr : f32 = Squeeze(%p.f32)
 * ```
 *
 * Kept float32 on the data path (counted as `kept-f32:<why>`): the ops ON_DATA_PATH keeps, and
 * ScatterND with reduction "add" (sparse dispatch's accumulator: no half kernel on onnxruntime's
 * CPU provider); the producer of a graph output; a node reading a constant beyond half's range.
 * Float constants read only by half nodes are converted in place (names kept); one read by both
 * gets a `<name>.f16` twin. Each value is cast at most once per direction (`<name>.f16`,
 * `<name>.f32`). Values are retyped in place: names, producers and readers do not change.
 * Records `aesm.precision = fp16` in the graph metadata. Running it again changes nothing.
 */
export const toFp16: Pass = {
  id: "to-fp16",
  summary: "float16 weights and arithmetic on the data path; gates, selection, inputs and outputs stay float32",
  run(graph, ctx) {
    const half = halfNodes(graph, ctx);
    let changed = false;
    const retype = (v: Value) => {
      v.type = { dtype: "float16", shape: [...v.type.shape] };
    };

    // Constants: in place when only half nodes read them, else a twin for the half readers.
    const constantTwins = new Map<Value, Value>();
    for (const c of [...graph.constants]) {
      if (c.type.dtype !== "float32") continue;
      const readers = [...c.users];
      const halfReaders = readers.filter((u) => half.has(u));
      if (halfReaders.length === 0) continue;
      if (halfReaders.length === readers.length && !graph.isGraphOutput(c)) {
        c.data = toHalf(c.data!);
        retype(c);
      } else constantTwins.set(c, graph.addConstant(`${c.name}.f16`, toHalf(c.data!)));
      bump(ctx, "constants-to-f16");
      changed = true;
    }

    // Half nodes' float32 results become half.
    for (const n of half) {
      for (const o of n.outputs) if (o.type.dtype === "float32") retype(o);
      bump(ctx, "nodes-to-f16");
      changed = true;
    }

    // Every edge whose two ends now differ gets a Cast, one per value and direction.
    const casts = new Map<string, Value>();
    const castOf = (v: Value, to: "float16" | "float32", reader: Node): Value => {
      const key = `${v.id}:${to}`;
      let c = casts.get(key);
      if (!c) {
        const scope = v.producer?.scope ?? reader.scope;
        c = graph.op("Cast", [v], { to }, { scope, names: [`${v.name}.${DTYPE_SHORT[to]}`] });
        casts.set(key, c);
        bump(ctx, "casts-inserted");
        changed = true;
      }
      return c;
    };
    for (const n of [...graph.nodes]) {
      if (n.op === "Cast") continue; // reads any dtype
      const want = half.has(n) ? "float16" : "float32";
      n.inputs.forEach((v, i) => {
        if (v.type.dtype === want || (v.type.dtype !== "float32" && v.type.dtype !== "float16")) return;
        const twin = constantTwins.get(v);
        // a half node reading float32, or a float32 node reading a value this pass made half
        if (want === "float16") graph.setNodeInput(n, i, twin ?? castOf(v, "float16", n));
        else if (v.producer && half.has(v.producer)) graph.setNodeInput(n, i, castOf(v, "float32", n));
      });
    }
    if (changed) {
      graph.metadata[PRECISION_METADATA_KEY] = "fp16";
      graph.toposort();
    }
    return { graph, changed };
  },
};
