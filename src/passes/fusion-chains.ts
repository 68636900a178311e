// Parallel linear chains (the experts of a layer, the gates of a layer): K chains of
// MatMul(x, W_k) followed by elementwise ops, matched structurally and rebuilt as one wide
// MatMul plus block-diagonal or expert-batched MatMuls. Shared by fuse-experts and fuse-gates.

import { invariant } from "../core/diagnostics.ts";
import { type Tensor, numel } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import type { Attrs, OpKind } from "../ir/ops.ts";
import { type Dim, formatType } from "../ir/types.ts";

/** Elementwise unary ops that may follow a chain's MatMul (activations and friends). */
const UNARY: ReadonlySet<OpKind> = new Set<OpKind>([
  "Relu",
  "LeakyRelu",
  "Tanh",
  "Sigmoid",
  "Gelu",
  "Erf",
  "Exp",
  "Log",
  "Sqrt",
  "Neg",
  "Abs",
  "Identity",
]);

/** Elementwise binary ops that may follow a chain's MatMul when one operand is a per-channel constant (bias, batch norm). */
const BINARY: ReadonlySet<OpKind> = new Set<OpKind>(["Add", "Sub", "Mul", "Div", "Max", "Min"]);

/** One elementwise op after a chain layer's MatMul: unary, or binary with a per-channel constant. */
export interface TailOp {
  node: Node;
  /** The constant operand of a binary op (shape [], [1], [H] or [1, H]); null for unary ops. */
  constant: Value | null;
  /** Whether the constant is the first operand (Sub(c, x) differs from Sub(x, c)). */
  constantFirst: boolean;
}

/** One unit layer of a chain: MatMul(x, W [in, out]) then elementwise ops. */
export interface ChainLayer {
  matmul: Node;
  weight: Value;
  tail: TailOp[];
}

/** K of these that read one input and agree in signature fuse into one computation. */
export interface Chain {
  /** What the first MatMul reads, [..., B, in]. */
  input: Value;
  layers: ChainLayer[];
  /** The chain's result [..., B, out]; the only value of the chain others may read. */
  out: Value;
  /** Every node of the chain, first to last. */
  nodes: Node[];
}

export type Match<T> = { ok: true; value: T } | { ok: false; reason: string };

const fail = (reason: string): { ok: false; reason: string } => ({ ok: false, reason });

function lastDim(v: Value): Dim {
  return v.type.shape[v.type.shape.length - 1]!;
}

/** A float32 constant that broadcasts along the last axis only: numel 1 or `width`, leading dims 1. */
function isPerChannel(c: Value, width: Dim, rank: number): boolean {
  if (!c.data || c.type.dtype !== "float32" || typeof width !== "number") return false;
  const s = c.data.shape;
  if (s.length > Math.min(rank, 2) || s.slice(0, -1).some((d) => d !== 1)) return false;
  const n = numel(s);
  return n === 1 || (n === width && s[s.length - 1] === width);
}

/** `n` as a chain tail op with the chain value `x` it reads, or null when it is not one. */
function asTailOp(n: Node): (TailOp & { x: Value }) | null {
  if (n.outputs.length !== 1 || n.outputs[0]!.type.dtype !== "float32") return null;
  if (UNARY.has(n.op)) return { node: n, constant: null, constantFirst: false, x: n.inputs[0]! };
  if (!BINARY.has(n.op) || n.inputs.length !== 2) return null;
  const [a, b] = n.inputs as [Value, Value];
  const out = n.outputs[0]!;
  const x = b.isConstant && !a.isConstant ? a : a.isConstant && !b.isConstant ? b : null;
  if (!x) return null;
  const c = x === a ? b : a;
  // The result must have x's type: the constant only broadcasts along channels, never widens.
  if (out.type.shape.length !== x.type.shape.length || out.type.shape.some((d, i) => d !== x.type.shape[i])) return null;
  if (!isPerChannel(c, lastDim(x), x.type.shape.length)) return null;
  return { node: n, constant: c, constantFirst: c === a, x };
}

/**
 * The chain ending at `out`, walked backwards: per layer, elementwise tail ops, then
 * MatMul(x, W) with W a 2-D float32 constant. Values inside the chain must have a single
 * reader and not be graph outputs; the walk stops at the first value that does not (the
 * chain's input), or where no further MatMul completes a layer.
 */
export function matchChain(graph: Graph, out: Value): Match<Chain> {
  const inner = (v: Value) => v.users.size === 1 && !graph.isGraphOutput(v);
  const layers: ChainLayer[] = [];
  const nodes: Node[] = [];
  let v = out;
  while (v === out || inner(v)) {
    // tail ops of one layer, last first; committed only when a MatMul completes the layer
    const tail: TailOp[] = [];
    let cur = v;
    let t = cur.producer ? asTailOp(cur.producer) : null;
    let open = true;
    while (t) {
      tail.unshift({ node: t.node, constant: t.constant, constantFirst: t.constantFirst });
      cur = t.x;
      if (!inner(cur)) {
        open = false;
        break;
      }
      t = cur.producer ? asTailOp(cur.producer) : null;
    }
    const mm = cur.producer;
    const w = mm?.inputs[1];
    const isLayer =
      open &&
      mm !== null &&
      mm.op === "MatMul" &&
      w !== undefined &&
      w.data !== null &&
      w.type.dtype === "float32" &&
      w.type.shape.length === 2 &&
      mm.inputs[0]!.type.shape.length >= 2 &&
      !mm.inputs[0]!.isConstant;
    if (!isLayer) break;
    layers.unshift({ matmul: mm, weight: w, tail });
    nodes.unshift(mm, ...tail.map((x) => x.node));
    v = mm.inputs[0]!;
  }
  if (layers.length === 0) return fail("no-linear");
  return { ok: true, value: { input: layers[0]!.matmul.inputs[0]!, layers, out, nodes } };
}

/** What must agree between chains for them to fuse: widths, ops, attributes, operand order. */
export function chainSignature(c: Chain): string {
  return c.layers
    .map((l) => {
      const tail = l.tail.map((t) =>
        t.constant ? `${t.node.op}(${t.constantFirst ? "c,x" : "x,c"})` : `${t.node.op}${JSON.stringify(t.node.attrs, Object.keys(t.node.attrs).sort())}`,
      );
      return [`MatMul[${l.weight.type.shape.join(",")}]`, ...tail].join(" ");
    })
    .join(" | ");
}

/** A reason the chains cannot fuse, or null when they can (same input, same signature). */
export function incompatibility(chains: Chain[]): string | null {
  const sig = chainSignature(chains[0]!);
  if (chains.some((c) => chainSignature(c) !== sig)) return "chains-differ";
  if (chains.some((c) => c.input !== chains[0]!.input)) return "inputs-differ";
  if (chains[0]!.input.type.dtype !== "float32") return "not-float32";
  return null;
}

/** A per-channel constant's values broadcast to `width` entries, as float32. */
function channelValues(c: Value, width: number): Float32Array {
  const src = c.data!.data as Float32Array;
  if (src.length === width) return src;
  return new Float32Array(width).fill(src[0]!);
}

export interface FuseChainsOptions {
  scope: string;
  /** Name of the result; the values of layer j are named `<name>.layers.<j>.…`. */
  name: string;
  /** Base of the fused constants' names (default `name`): `<base>.layers.<j>.weight`, `.bias`, … */
  constantName?: string;
  /**
   * Later layers become one block-diagonal MatMul [K·in, K·out] while it has at most this
   * many elements (no reshapes, the fastest form on onnxruntime CPU for small layers),
   * and an expert-batched MatMul [K, B, in] × [K, in, out] above it.
   */
  blockDiagonalLimit?: number;
  /**
   * Fused constants already built, by the identity of the constants they stack: chains
   * that share weights (the gates of every task stream) then share the fused weights too.
   */
  cache?: Map<string, Value>;
}

/**
 * Elements of the largest block-diagonal weight. onnxruntime CPU (1 thread, batch 256)
 * ran block-diagonal MatMul + Add + Relu about 2.5× faster than the reshape / transpose /
 * expert-batched form at [32, 20] and [24, 18], and 1.3–1.7× slower at [256, 256], where
 * the zero blocks' wasted work (K× the useful MACs) dominates; at batch 1 they were even.
 */
export const BLOCK_DIAGONAL_LIMIT = 16384;

/**
 * Rebuild K compatible chains over `x` [..., B, in] as one computation whose result is
 * [..., B, K, out] (chain k at index k of the K axis):
 *
 *   layer 0:    MatMul(x, [W_0 | W_1 | …])  [..., B, K·h]  → tail ops with stacked constants [K·h]
 *   layer j>0:  small:  MatMul(·, blockdiag(W_k)) [K·h, K·h']  → tail ops [K·h']
 *               large:  Reshape [..., B, K, h] → Transpose [K, ..., B, h] (once)
 *                       → MatMul(·, [K, 1…, h, h'])  → tail ops [K, 1…, 1, h']
 *   result:     Reshape [..., B, K, out]  (or Transpose back from [K, ..., B, out])
 *
 * Constants are concatenated exactly (no arithmetic), and zero blocks add exact zeros,
 * so each chain's numbers are the same up to the order of float32 accumulation.
 */
export function buildFusedChains(graph: Graph, x: Value, chains: Chain[], opts: FuseChainsOptions): Value {
  const K = chains.length;
  const L = chains[0]!.layers.length;
  const rank = x.type.shape.length;
  invariant(rank >= 2, () => `fusion: chain input %${x.name} must have rank ≥ 2, got ${formatType(x.type)}`);
  const lead = rank - 2; // dims before the batch dim (stacked streams)
  const limit = opts.blockDiagonalLimit ?? BLOCK_DIAGONAL_LIMIT;
  const at = (j: number) => `${opts.name}.layers.${j}`;
  const constAt = (j: number) => `${opts.constantName ?? opts.name}.layers.${j}`;
  const node = (op: OpKind, inputs: Value[], attrs: Attrs, name: string) =>
    graph.op(op, inputs, attrs, { scope: opts.scope, names: [name] });
  // Fused constants depend only on the stacked constants and the layout; build each once.
  const constant = (name: string, sources: Value[], layoutKey: string, make: () => Tensor): Value => {
    const key = `${layoutKey}:${sources.map((v) => v.id).join(",")}`;
    let c = opts.cache?.get(key);
    if (!c) {
      c = graph.addConstant(name, make());
      opts.cache?.set(key, c);
    }
    return c;
  };

  // "wide": [..., B, K·h];  "batched": [K, ..., B, h]
  let layout: "wide" | "batched" = "wide";
  let h = x;
  for (let j = 0; j < L; j++) {
    const weights = chains.map((c) => c.layers[j]!.weight);
    const Ws = weights.map((w) => w.data!.data as Float32Array);
    const [inDim, outDim] = chains[0]!.layers[j]!.weight.type.shape as [number, number];
    if (j > 0 && layout === "wide" && K * inDim * K * outDim > limit) {
      const split = node("Reshape", [h], { shape: [...zeros(lead + 1), K, inDim] }, `${at(j)}.split`);
      const perm = [lead + 1, ...range(lead + 1), lead + 2];
      h = node("Transpose", [split], { perm }, `${at(j)}.by_chain`);
      layout = "batched";
    }
    const form = j === 0 ? "wide" : layout === "wide" ? "blockdiag" : `batched${lead}`;
    const W = constant(`${constAt(j)}.weight`, weights, form, () =>
      form === "wide"
        ? wideWeight(Ws, inDim, outDim)
        : form === "blockdiag"
          ? blockDiagonalWeight(Ws, inDim, outDim)
          : batchedWeight(Ws, inDim, outDim, lead),
    );
    h = node("MatMul", [h, W], {}, `${at(j)}.matmul`);
    chains[0]!.layers[j]!.tail.forEach((t0, i) => {
      if (!t0.constant) {
        h = node(t0.node.op, [h], { ...t0.node.attrs }, `${at(j)}.${t0.node.op.toLowerCase()}`);
        return;
      }
      const sources = chains.map((c) => c.layers[j]!.tail[i]!.constant!);
      const shape = layout === "wide" ? [K * outDim] : [K, ...ones(lead + 1), outDim];
      const role = t0.node.op === "Add" ? "bias" : `${t0.node.op.toLowerCase()}_operand`;
      const c = constant(`${constAt(j)}.${role}`, sources, shape.join("x"), () => {
        const data = new Float32Array(K * outDim);
        sources.forEach((v, k) => data.set(channelValues(v, outDim), k * outDim));
        return { dtype: "float32", shape, data };
      });
      h = node(t0.node.op, t0.constantFirst ? [c, h] : [h, c], {}, `${at(j)}.${t0.node.op.toLowerCase()}`);
    });
  }
  const outDim = chains[0]!.layers[L - 1]!.weight.type.shape[1] as number;
  if (layout === "wide") return node("Reshape", [h], { shape: [...zeros(lead + 1), K, outDim] }, opts.name);
  // [K, ..., B, out] → [..., B, K, out]
  return node("Transpose", [h], { perm: [...range(lead + 2).slice(1), 0, lead + 2] }, opts.name);
}

const zeros = (n: number) => new Array<number>(n).fill(0);
const ones = (n: number) => new Array<number>(n).fill(1);
const range = (n: number) => Array.from({ length: n }, (_, i) => i);

/** [in, K·out]: chain k's W in columns k·out … (k+1)·out − 1. */
function wideWeight(Ws: Float32Array[], inDim: number, outDim: number): Tensor {
  const K = Ws.length;
  const data = new Float32Array(inDim * K * outDim);
  Ws.forEach((w, k) => {
    for (let i = 0; i < inDim; i++) data.set(w.subarray(i * outDim, (i + 1) * outDim), i * K * outDim + k * outDim);
  });
  return { dtype: "float32", shape: [inDim, K * outDim], data };
}

/** [K·in, K·out] with chain k's W on the diagonal block k, exact zeros elsewhere. */
function blockDiagonalWeight(Ws: Float32Array[], inDim: number, outDim: number): Tensor {
  const K = Ws.length;
  const data = new Float32Array(K * inDim * K * outDim);
  Ws.forEach((w, k) => {
    for (let i = 0; i < inDim; i++) data.set(w.subarray(i * outDim, (i + 1) * outDim), (k * inDim + i) * K * outDim + k * outDim);
  });
  return { dtype: "float32", shape: [K * inDim, K * outDim], data };
}

/** [K, 1 (per lead dim), in, out]: the chains' weights stacked on a leading axis. */
function batchedWeight(Ws: Float32Array[], inDim: number, outDim: number, lead: number): Tensor {
  const K = Ws.length;
  const data = new Float32Array(K * inDim * outDim);
  Ws.forEach((w, k) => data.set(w, k * inDim * outDim));
  return { dtype: "float32", shape: [K, ...ones(lead), inDim, outDim], data };
}

/** A rank-0 int64 constant holding `value`: an existing one if the graph has it, else a new one. */
export function scalarIndex(graph: Graph, value: number): Value {
  const found = graph.constants.find(
    (c) => c.type.dtype === "int64" && c.type.shape.length === 0 && (c.data!.data as BigInt64Array)[0] === BigInt(value),
  );
  return found ?? graph.addConstant(`const.i64.${value}`, { dtype: "int64", shape: [], data: new BigInt64Array([BigInt(value)]) });
}

/**
 * The prefix the chains' weights share by their canonical names (`<layer>.experts` for
 * `<layer>.experts.<e>.layers.…`, `<layer>.gates` for `<layer>.gates.<g>.…`), or null.
 */
export function weightPrefix(chains: Chain[], part: "experts" | "gates"): string | null {
  const re = new RegExp(`^(.*\\.${part})\\.\\d+\\.`);
  const prefixes = chains.map((c) => re.exec(c.layers[0]!.weight.name)?.[1]);
  return prefixes[0] && prefixes.every((p) => p === prefixes[0]) ? prefixes[0] : null;
}

/** The longest common dotted prefix of scopes (`a.b.0.experts.1`, `a.b.0.experts.2` → `a.b.0.experts`). */
export function commonScope(scopes: string[]): string {
  const parts = scopes.map((s) => s.split("."));
  const first = parts[0] ?? [];
  let n = 0;
  while (n < first.length && parts.every((p) => p[n] === first[n])) n++;
  return first.slice(0, n).join(".");
}
