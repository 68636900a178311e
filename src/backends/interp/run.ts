// Executes an IR graph on host tensors, node by node in graph order, with the kernels
// of kernels.ts. Feeds and every node result are checked against the recorded types.

import { InvariantError } from "../../core/diagnostics.ts";
import { type DType, type Tensor, type TensorData, numel } from "../../core/tensor.ts";
import type { Graph, Node, Value } from "../../ir/graph.ts";
import { type ValueType, formatType } from "../../ir/types.ts";
import { KERNELS } from "./kernels.ts";

/** Bindings of symbolic dims (`batch`) to sizes, fixed by the first tensor that shows one. */
type DimBindings = Map<string, number>;

const ARRAY_OF: Record<DType, { new (n: number): TensorData; name: string }> = {
  float32: Float32Array,
  float64: Float64Array,
  int64: BigInt64Array,
  int32: Int32Array,
  bool: Uint8Array,
  float16: Uint16Array,
};

/** Throw naming `what` unless `t` has `type`'s dtype and rank, its static dims, and consistent symbolic dims. */
function checkTensor(t: Tensor, type: ValueType, what: string, dims: DimBindings): void {
  const shown = `[${t.shape.join(",")}] ${t.dtype}`;
  if (t.dtype !== type.dtype) throw new InvariantError(`${what}: expected ${formatType(type)}, got ${shown}`);
  if (t.shape.length !== type.shape.length) throw new InvariantError(`${what}: expected ${formatType(type)}, got rank ${t.shape.length} ${shown}`);
  type.shape.forEach((d, i) => {
    const got = t.shape[i]!;
    if (typeof d === "number") {
      if (d !== got) throw new InvariantError(`${what}: expected ${formatType(type)}, got ${shown} (dim ${i})`);
    } else {
      const bound = dims.get(d);
      if (bound === undefined) dims.set(d, got);
      else if (bound !== got)
        throw new InvariantError(`${what}: dim ${i} (${d}) is ${got}, but ${d} = ${bound} elsewhere; expected ${formatType(type)}`);
    }
  });
  if (!(t.data instanceof ARRAY_OF[t.dtype]))
    throw new InvariantError(`${what}: ${t.dtype} data must be a ${ARRAY_OF[t.dtype].name}, got ${t.data.constructor.name}`);
  if (t.data.length !== numel(t.shape))
    throw new InvariantError(`${what}: holds ${t.data.length} values, shape [${t.shape}] needs ${numel(t.shape)}`);
}

/** Check feeds against the graph inputs (names, dtypes, dims) and seed the environment. */
function bindInputs(graph: Graph, feeds: Record<string, Tensor>, env: Map<Value, Tensor>, dims: DimBindings): void {
  const names = new Set(graph.inputs.map((v) => v.name));
  for (const name of Object.keys(feeds))
    if (!names.has(name)) throw new InvariantError(`feed ${name} is not an input of graph ${graph.name} (inputs: ${[...names].join(", ")})`);
  for (const v of graph.inputs) {
    const t = feeds[v.name];
    if (t === undefined) throw new InvariantError(`graph input ${v.name} (${formatType(v.type)}) has no feed`);
    checkTensor(t, v.type, `graph input ${v.name}`, dims);
    env.set(v, t);
  }
  for (const c of graph.constants) env.set(c, c.data!);
}

function runNode(node: Node, env: Map<Value, Tensor>, dims: DimBindings): Tensor[] {
  const ins = node.inputs.map((v) => {
    const t = env.get(v);
    if (t === undefined) throw new InvariantError(`${describe(node)}: input %${v.name} has no value (graph not in topological order?)`);
    return t;
  });
  let outs: Tensor[];
  try {
    outs = KERNELS[node.op](ins, node.attrs);
  } catch (e) {
    if (e instanceof InvariantError) throw new InvariantError(`${describe(node)}: ${e.message}`);
    throw e;
  }
  if (outs.length !== node.outputs.length)
    throw new InvariantError(`${describe(node)}: kernel returned ${outs.length} outputs, node has ${node.outputs.length}`);
  node.outputs.forEach((o, i) => checkTensor(outs[i]!, o.type, `${describe(node)} output %${o.name}`, dims));
  return outs;
}

function describe(node: Node): string {
  return `${node.op} -> %${node.outputs.map((o) => o.name).join(", %")}${node.scope ? ` (${node.scope})` : ""}`;
}

/** Memory statistics of one run, for tests and debugging. */
export interface RunStats {
  /** Most node results alive at once (graph inputs and constants not counted). */
  peakLiveValues: number;
  /** Bytes of those results at that point. */
  peakLiveBytes: number;
}

export interface RunOptions {
  /** Filled in with the run's memory statistics. */
  stats?: RunStats;
}

/**
 * Run `graph` on `feeds` (one tensor per graph input, by name) and return its outputs by
 * output name. Each intermediate tensor is released after its last reader runs, so peak
 * memory is the live set, not the whole graph.
 */
export function runGraph(graph: Graph, feeds: Record<string, Tensor>, options: RunOptions = {}): Record<string, Tensor> {
  const env = new Map<Value, Tensor>();
  const dims: DimBindings = new Map();
  bindInputs(graph, feeds, env, dims);

  const keep = new Set<Value>(graph.outputs.map((o) => o.value));
  const remaining = new Map<Value, number>();
  for (const n of graph.nodes) for (const v of new Set(n.inputs)) remaining.set(v, (remaining.get(v) ?? 0) + 1);

  let liveValues = 0;
  let liveBytes = 0;
  const stats = options.stats;
  if (stats) {
    stats.peakLiveValues = 0;
    stats.peakLiveBytes = 0;
  }
  for (const node of graph.nodes) {
    const outs = runNode(node, env, dims);
    node.outputs.forEach((o, i) => {
      if ((remaining.get(o) ?? 0) > 0 || keep.has(o)) {
        env.set(o, outs[i]!);
        liveValues++;
        liveBytes += outs[i]!.data.byteLength;
      }
    });
    if (stats && liveValues > stats.peakLiveValues) stats.peakLiveValues = liveValues;
    if (stats && liveBytes > stats.peakLiveBytes) stats.peakLiveBytes = liveBytes;
    for (const v of new Set(node.inputs)) {
      const left = remaining.get(v)! - 1;
      remaining.set(v, left);
      // inputs and constants belong to the caller and the graph; only node results are freed
      if (left === 0 && v.producer && !keep.has(v)) {
        liveValues--;
        liveBytes -= env.get(v)!.data.byteLength;
        env.delete(v);
      }
    }
  }

  const result: Record<string, Tensor> = {};
  for (const o of graph.outputs) {
    const t = env.get(o.value);
    if (t === undefined) throw new InvariantError(`graph output ${o.name} (%${o.value.name}) was not computed`);
    result[o.name] = t;
  }
  return result;
}

/** Run `graph` and keep every value (inputs, constants, all node results): for debugging and bisection. */
export function runGraphAll(graph: Graph, feeds: Record<string, Tensor>): Map<Value, Tensor> {
  const env = new Map<Value, Tensor>();
  const dims: DimBindings = new Map();
  bindInputs(graph, feeds, env, dims);
  for (const node of graph.nodes) {
    const outs = runNode(node, env, dims);
    node.outputs.forEach((o, i) => env.set(o, outs[i]!));
  }
  return env;
}
