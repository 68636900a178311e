// The stacked task streams laid out batch-first: every value [T, B, …] of stack-streams
// becomes [B, T, …] (the same numbers, axes 0 and 1 swapped). Batch-first, the streams of a
// row sit side by side, so what the leading-T layout needs batched kernels and a Transpose
// for becomes plain 2-D work:
//
//   T-first                                          batch-first
//     MatMul(x [B, K], W [T, K, N]) → [T, B, N]         Reshape(MatMul(x, W' [K, T·N]), [0, T, N])
//     MatMul(h [T, B, K], W [T, K, N])                  Reshape(MatMul(Reshape(h, [0, T·K]), blockdiag(W)), [0, T, N])
//     MatMul(w [T, B, 1, E], X [B, E, D])               MatMul(w [B, T, 1, E], Unsqueeze(X, [1]))
//     Transpose(y [T, B, …], [1, 0, …])                 y itself
//     Gather(y, t, axis 0)                              Gather(y, t, axis 1)
//
// and the axes of reductions, softmaxes, Split, Concat, OneHot, Squeeze… stay where they are
// (all ≥ 2). Each connected group of [T, B, …] values is rewritten as a whole or not at all.
// Then the Reshapes it leaves meet: Reshape(Reshape(x)) and Reshape(Squeeze(x)) become one
// Reshape of x; a batched MatMul by a 2-D weight with a bias becomes a 2-D MatMul between
// two Reshapes (onnxruntime fuses MatMul + Add (+ Relu) into one Gemm only in 2-D); and
// MatMul(a, Wa) + MatMul(b, Wb) of 2-D inputs becomes MatMul(Concat(a, b), [Wa; Wb]).
// Exact except for that last rewrite (one sum instead of two, float32 reassociation) and the
// block-diagonal products, whose zero blocks add exact zeros.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { type Attrs, ELEMENTWISE_OPS } from "../ir/ops.ts";
import { eliminateDeadCode } from "./dce.ts";
import { BLOCK_DIAGONAL_LIMIT } from "./fusion-chains.ts";
import { blockDiagonal } from "./streams-block-diagonal.ts";
import { onlyUser } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

/** A stream-stacked value: [T, B, …] with T ≥ 2 a number and B symbolic. */
function stacked(v: Value): boolean {
  const s = v.type.shape;
  return !v.isConstant && s.length >= 2 && typeof s[0] === "number" && s[0] >= 2 && typeof s[1] === "string";
}

/** Axes 0 and 1 swapped (an axis of a stacked value, normalised). */
const swap = (a: number) => (a === 0 ? 1 : a === 1 ? 0 : a);

/** A constant with axes 0 and 1 swapped. */
function swapConstant(t: Tensor): Tensor {
  const [a, b, ...rest] = t.shape as number[];
  const inner = rest.reduce((x, y) => x * y, 1);
  const Ctor = t.data.constructor as new (n: number) => Tensor["data"];
  const data = new Ctor(t.data.length);
  for (let i = 0; i < a!; i++)
    for (let j = 0; j < b!; j++)
      for (let k = 0; k < inner; k++) (data as Float32Array)[(j * a! + i) * inner + k] = (t.data as Float32Array)[(i * b! + j) * inner + k]!;
  return { ...t, shape: [b!, a!, ...rest], data } as Tensor;
}

class Bail extends Error {}

/** Rewrites one connected group of stacked values; throws Bail when an op has no batch-first rule. */
class Layout {
  /** old stacked value → its batch-first value */
  readonly bf = new Map<Value, Value>();
  constructor(
    readonly g: Graph,
    readonly group: Set<Value>,
  ) {}

  private op(n: Node, op: Node["op"], inputs: Value[], attrs: Attrs, suffix = "bf", outputs = 1): Value[] {
    const names = Array.from({ length: outputs }, (_, i) => `${n.outputs[i]?.name ?? n.outputs[0]!.name}.${suffix}`);
    return this.g.addNode(op, inputs, attrs, { scope: n.scope, names });
  }

  /** The batch-first operand for `v` read by an op whose (T-first) output has rank `rank`. */
  private operand(n: Node, v: Value, rank: number): Value {
    const mine = this.bf.get(v);
    if (mine) return mine;
    if (stacked(v)) throw new Bail(`${v.name} is outside the group`);
    const r = v.type.shape.length;
    if (v.isConstant) {
      // right-aligned to the trailing axes (a constant's dim facing B is 1, and broadcasts over T as well)
      if (r < rank) return v;
      return this.g.addConstant(`${v.name}.bf`, swapConstant(v.data!));
    }
    if (r === rank - 1 && typeof v.type.shape[0] === "string") return this.unsqueezed(v, n.scope);
    if (r <= rank - 2 && v.type.shape.every((d) => typeof d === "number")) return v;
    throw new Bail(`operand ${v.name}`);
  }

  /** A value [B, …] shared by every stream, given a unit stream axis: [B, 1, …]. */
  private unsqueezed(v: Value, scope: string): Value {
    return this.g.op("Unsqueeze", [v], { axes: [1] }, { scope, names: [`${v.name}.per_stream`] });
  }

  /** The batch-first outputs of `n` (a node with a stacked input or output). */
  node(n: Node): void {
    const outRank = n.outputs[0]!.type.shape.length;
    const inRank = n.inputs[0]!.type.shape.length;
    const grouped = n.outputs.map((o) => this.group.has(o));
    const set = (outs: Value[]) => n.outputs.forEach((o, i) => this.bf.set(o, outs[i]!));
    if (grouped.some((x) => x !== grouped[0])) throw new Bail(`${n.op} with mixed outputs`);
    if (!grouped[0]) return this.exit(n);
    if (this.g.isGraphOutput(n.outputs[0]!)) throw new Bail("a stacked graph output");
    const axis = (a: number, rank: number) => {
      const m = swap(normAxis(a, rank));
      if (m < 2) throw new Bail(`${n.op} over the stream or batch axis`);
      return m;
    };
    if (ELEMENTWISE_OPS.has(n.op)) return set(this.op(n, n.op, n.inputs.map((v) => this.operand(n, v, outRank)), { ...n.attrs }));
    switch (n.op) {
      case "MatMul":
        return set([this.matmul(n)]);
      case "Reshape": {
        const shape = attrInts(n.attrs, "shape");
        if (shape[0] !== 0 || shape[1] !== 0 || !this.bf.has(n.inputs[0]!)) throw new Bail("Reshape of the stream or batch axis");
        return set(this.op(n, "Reshape", [this.bf.get(n.inputs[0]!)!], { shape }));
      }
      case "Softmax":
      case "LogSoftmax":
      case "ArgMax":
      case "ArgMin":
        return set(this.op(n, n.op, [this.operand(n, n.inputs[0]!, inRank)], { ...n.attrs, axis: axis(attrInt(n.attrs, "axis", n.op.startsWith("Arg") ? 0 : -1), inRank) }));
      case "TopK":
      case "Split":
        return set(this.op(n, n.op, n.inputs.map((v, i) => (i === 0 ? this.operand(n, v, inRank) : v)), { ...n.attrs, axis: axis(attrInt(n.attrs, "axis", n.op === "TopK" ? -1 : 0), inRank) }, "bf", n.outputs.length));
      case "Concat":
        if (!n.inputs.every((v) => this.bf.has(v))) return set([this.boundary(n)]);
        return set(this.op(n, "Concat", n.inputs.map((v) => this.bf.get(v)!), { axis: axis(attrInt(n.attrs, "axis"), outRank) }));
      case "ReduceSum":
      case "ReduceMax":
      case "ReduceMin":
      case "ReduceMean":
      case "Squeeze":
        return set(this.op(n, n.op, [this.operand(n, n.inputs[0]!, inRank)], { ...n.attrs, axes: attrInts(n.attrs, "axes").map((a) => axis(a, inRank)) }));
      case "Unsqueeze":
        return set(this.op(n, n.op, [this.operand(n, n.inputs[0]!, inRank)], { ...n.attrs, axes: attrInts(n.attrs, "axes").map((a) => axis(a, outRank)) }));
      case "OneHot": // the new axis is the last one
        if (normAxis(attrInt(n.attrs, "axis", -1), outRank) !== outRank - 1) throw new Bail("OneHot with an inner axis");
        return set(this.op(n, n.op, [this.operand(n, n.inputs[0]!, inRank)], { ...n.attrs }));
      case "Gather": {
        if (!this.bf.has(n.inputs[0]!) || stacked(n.inputs[1]!)) throw new Bail("Gather by stacked indices");
        return set(this.op(n, "Gather", [this.bf.get(n.inputs[0]!)!, n.inputs[1]!], { axis: axis(attrInt(n.attrs, "axis", 0), inRank) }));
      }
      case "Transpose": {
        // out[i] = in[perm[i]], both sides with axes 0 and 1 swapped
        const perm = attrInts(n.attrs, "perm");
        // fuse-experts' expert-batched layers ([B, E, H] → [E, B, H]) keep their layout
        if (!this.bf.has(n.inputs[0]!)) throw new Bail("expert-batched layers");
        return set(this.op(n, "Transpose", [this.operand(n, n.inputs[0]!, inRank)], { perm: perm.map((_, i) => swap(perm[swap(i)]!)) }));
      }
      default:
        throw new Bail(`no batch-first rule for ${n.op}`);
    }
  }

  /** Concat(Unsqueeze(x_t, [0]) …, axis 0): the streams stacked at the boundary → Concat(Unsqueeze(x_t, [1]) …, axis 1). */
  private boundary(n: Node): Value {
    if (normAxis(attrInt(n.attrs, "axis"), n.outputs[0]!.type.shape.length) !== 0) throw new Bail("Concat of stacked and other values");
    const parts = n.inputs.map((v) => {
      const u = v.producer;
      if (!u || u.op !== "Unsqueeze" || attrInts(u.attrs, "axes").join() !== "0" || stacked(u.inputs[0]!)) throw new Bail("Concat of stacked and other values");
      return this.op(u, "Unsqueeze", [u.inputs[0]!], { axes: [1] })[0]!;
    });
    return this.op(n, "Concat", parts, { axis: 1 })[0]!;
  }

  private matmul(n: Node): Value {
    const [A, W] = n.inputs as [Value, Value];
    const out = n.outputs[0]!;
    const rank = out.type.shape.length;
    const T = out.type.shape[0] as number;
    const a = this.bf.get(A);
    const w = this.bf.get(W);
    if (!a && w) {
      // constant or shared rows times the streams' matrices: [T, 1, M, K] → [1, T, M, K], [B, M, K] → [B, 1, M, K]
      if (rank < 4) throw new Bail("MatMul into the streams");
      return this.op(n, "MatMul", [this.operand(n, A, rank), w], {})[0]!;
    }
    const perStream = W.isConstant && W.type.shape.length === 3 && W.type.shape[0] === T && W.type.dtype === "float32";
    if (!a) {
      // entry: a shared 2-D input times per-stream weights [T, K, N] → the weights side by side
      if (A.type.shape.length !== 2 || !perStream) throw new Bail("MatMul into the streams");
      const [, K, N] = W.type.shape as [number, number, number];
      const w = W.data!.data as Float32Array;
      const data = new Float32Array(K * T * N);
      for (let t = 0; t < T; t++) for (let k = 0; k < K; k++) data.set(w.subarray((t * K + k) * N, (t * K + k + 1) * N), k * T * N + t * N);
      const side = this.op(n, "MatMul", [A, this.g.addConstant(`${W.name}.side_by_side`, { dtype: "float32", shape: [K, T * N], data })], {}, "flat")[0]!;
      return this.op(n, "Reshape", [side], { shape: [0, T, N] })[0]!;
    }
    if (rank === 3 && perStream) {
      const [, K, N] = W.type.shape as [number, number, number];
      if (T * K * T * N <= BLOCK_DIAGONAL_LIMIT) {
        const flat = this.op(n, "Reshape", [a], { shape: [0, T * K] }, "rows")[0]!;
        const prod = this.op(n, "MatMul", [flat, this.g.addConstant(`${W.name}.block_diagonal`, blockDiagonal(W.data!))], {}, "flat")[0]!;
        return this.op(n, "Reshape", [prod], { shape: [0, T, N] })[0]!;
      }
      // [B, T, 1, K] × [T, K, N] would be B·T vector products instead of T matrix products
      throw new Bail("per-stream weights too large for a block diagonal");
    }
    // a matrix (the same for every row and stream), the other side's own batch-first value, or
    // a shared [B, …, K, N] given a unit stream axis
    if (W.type.shape.length === 2) return this.op(n, "MatMul", [a, W], {})[0]!;
    if (rank >= 4 && this.bf.has(W)) return this.op(n, "MatMul", [a, this.bf.get(W)!], {})[0]!;
    if (rank >= 4 && !W.isConstant && !stacked(W) && W.type.shape.length === rank - 1 && typeof W.type.shape[0] === "string")
      return this.op(n, "MatMul", [a, this.unsqueezed(W, n.scope)], {})[0]!;
    throw new Bail("MatMul by a stacked-rank weight");
  }

  /** A node reading stacked values whose outputs are not stacked. */
  private exit(n: Node): void {
    const x = n.inputs[0]!;
    const a = this.bf.get(x);
    if (n.inputs.slice(1).some((v) => this.group.has(v)) || !a) throw new Bail(`${n.op} out of the streams`);
    const rank = x.type.shape.length;
    let out: Value;
    if (n.op === "Gather" && normAxis(attrInt(n.attrs, "axis", 0), rank) === 0 && n.inputs[1]!.type.shape.length === 0)
      out = this.op(n, "Gather", [a, n.inputs[1]!], { axis: 1 })[0]!;
    else if (n.op === "Transpose") {
      const perm = attrInts(n.attrs, "perm").map((p) => swap(p));
      out = perm.every((p, i) => p === i) ? a : this.op(n, "Transpose", [a], { perm })[0]!;
    } else throw new Bail(`${n.op} out of the streams`);
    this.exits.push([n.outputs[0]!, out]);
  }

  readonly exits: [Value, Value][] = [];
}

/** The connected groups of stacked values (linked through the nodes that read or write them). */
function groups(g: Graph): Set<Value>[] {
  const parent = new Map<Value, Value>();
  const find = (v: Value): Value => {
    let r = v;
    while (parent.get(r) !== r) r = parent.get(r)!;
    parent.set(v, r);
    return r;
  };
  for (const n of g.nodes)
    for (const v of [...n.inputs, ...n.outputs]) if (stacked(v) && !parent.has(v)) parent.set(v, v);
  for (const n of g.nodes) {
    const vs = [...n.inputs, ...n.outputs].filter((v) => parent.has(v));
    for (const v of vs.slice(1)) parent.set(find(v), find(vs[0]!));
  }
  const out = new Map<Value, Set<Value>>();
  for (const v of parent.keys()) {
    const r = find(v);
    if (!out.has(r)) out.set(r, new Set());
    out.get(r)!.add(v);
  }
  return [...out.values()];
}

/** Rewrite one group; false (and nothing changed) when some node has no rule. */
function toBatchFirst(g: Graph, group: Set<Value>, ctx: Parameters<Pass["run"]>[1]): boolean {
  const before = new Set(g.nodes);
  const layout = new Layout(g, group);
  try {
    for (const n of [...g.nodes]) if (before.has(n) && [...n.inputs, ...n.outputs].some((v) => group.has(v))) layout.node(n);
  } catch (e) {
    if (!(e instanceof Bail)) throw e;
    g.removeNodes(g.nodes.filter((n) => !before.has(n)));
    g.removeUnusedConstants();
    bump(ctx, `skipped:${e.message.replace(/ \S*\d\S*/g, "")}`);
    return false;
  }
  for (const [old, now] of layout.exits) g.replaceAllUsesWith(old, now);
  return true;
}

/** The output shape of a Reshape as a shape attribute for a Reshape of `x`, or null. */
function shapeFrom(x: Value, out: Value): number[] | null {
  const attr = out.type.shape.map((d, i) => (typeof d === "number" ? d : x.type.shape[i] === d ? 0 : -1));
  return attr.filter((d) => d === -1).length <= 1 ? attr : null;
}

const SHAPE_OPS = new Set(["Reshape", "Squeeze", "Unsqueeze"]);

/** Two shape ops in a row, one of them a Reshape (Reshape(Squeeze(x)), Unsqueeze(Reshape(x)), …) → one Reshape of x. */
function mergeReshapes(g: Graph): number {
  let merged = 0;
  for (const n of [...g.nodes]) {
    if (!SHAPE_OPS.has(n.op) || !g.nodes.includes(n)) continue;
    const inner = n.inputs[0]!.producer;
    if (!inner || !SHAPE_OPS.has(inner.op) || (n.op !== "Reshape" && inner.op !== "Reshape")) continue;
    const x = inner.inputs[0]!;
    const shape = shapeFrom(x, n.outputs[0]!);
    if (!shape) continue;
    g.replaceAllUsesWith(n.outputs[0]!, g.op("Reshape", [x], { shape }, { scope: n.scope, names: [`${n.outputs[0]!.name}.direct`] }));
    merged++;
  }
  return merged;
}

/** Add(Reshape(a, s), Reshape(b, s)) of two values of one type, each Reshape read only there → Reshape(Add(a, b), s). */
function sinkReshapes(g: Graph): number {
  let sunk = 0;
  for (const add of [...g.nodes]) {
    const rs = addOf(g, add, "Reshape");
    if (!rs) continue;
    const [r0, r1] = rs;
    const [a, b] = [r0.inputs[0]!, r1.inputs[0]!];
    if (a.type.shape.join() !== b.type.shape.join() || attrInts(r0.attrs, "shape").join() !== attrInts(r1.attrs, "shape").join()) continue;
    const sum = g.op("Add", [a, b], {}, { scope: add.scope, names: [`${add.outputs[0]!.name}.flat`] });
    g.replaceAllUsesWith(add.outputs[0]!, g.op("Reshape", [sum], { ...r0.attrs }, { scope: add.scope, names: [`${add.outputs[0]!.name}.shaped`] }));
    sunk++;
  }
  return sunk;
}

/** R copies of W [K, N] on the diagonal of [R·K, R·N]. */
function repeatDiagonal(W: Tensor, R: number): Tensor {
  const w = W.data as Float32Array;
  const copies = new Float32Array(R * w.length);
  for (let r = 0; r < R; r++) copies.set(w, r * w.length);
  return blockDiagonal({ dtype: "float32", shape: [R, ...W.shape], data: copies });
}

/** The producers of an Add's two operands when both are `op` nodes read only by the Add. */
function addOf(g: Graph, add: Node, op: Node["op"]): [Node, Node] | null {
  if (add.op !== "Add" || !g.nodes.includes(add) || add.inputs.length !== 2) return null;
  const ns = add.inputs.map((v) => (v.producer?.op === op && onlyUser(g, v) === add ? v.producer : null));
  return ns[0] && ns[1] ? [ns[0], ns[1]] : null;
}

/**
 * MatMul(x [B, T, K], W [K, N]) + b [N] (→ unary): as 2-D layers over [B, T·K] with T copies
 * of W on a block diagonal, so that the bias (and activation) fuse into one Gemm; where x
 * comes from a Squeeze or Reshape and the result goes to Reshapes (the new Reshapes merge
 * with those), and the block-diagonal weight stays small.
 */
function flattenBiasedMatMuls(g: Graph): number {
  let done = 0;
  for (const mm of [...g.nodes]) {
    if (mm.op !== "MatMul" || !g.nodes.includes(mm)) continue;
    const [x, W] = mm.inputs as [Value, Value];
    if (x.type.shape.length !== 3 || !W.isConstant || W.type.shape.length !== 2 || W.type.dtype !== "float32") continue;
    const [B, T, K] = x.type.shape;
    if (typeof B !== "string" || typeof T !== "number" || typeof K !== "number") continue;
    const N = W.type.shape[1] as number;
    if (T * K * T * N > BLOCK_DIAGONAL_LIMIT) continue;
    const add = onlyUser(g, mm.outputs[0]!);
    if (!add || add.op !== "Add") continue;
    const b = add.inputs[add.inputs[0] === mm.outputs[0] ? 1 : 0]!;
    if (!b.isConstant || b.type.shape.join() !== `${N}` || b.type.dtype !== "float32") continue;
    const act = onlyUser(g, add.outputs[0]!);
    const tail = act && ["Relu", "Sigmoid", "Tanh", "LeakyRelu"].includes(act.op) ? act : add;
    const y = tail.outputs[0]!;
    const before = x.producer;
    if (!before || !["Squeeze", "Reshape"].includes(before.op)) continue;
    if (y.users.size === 0 || g.isGraphOutput(y) || [...y.users].some((u) => u.op !== "Reshape")) continue;
    const scope = mm.scope;
    const bias = new Float32Array(T * N);
    for (let t = 0; t < T; t++) bias.set(b.data!.data as Float32Array, t * N);
    const rows = g.op("Reshape", [x], { shape: [0, T * K] }, { scope, names: [`${x.name}.flat`] });
    let h = g.op("MatMul", [rows, g.addConstant(`${W.name}.repeated`, repeatDiagonal(W.data!, T))], {}, { scope, names: [`${mm.outputs[0]!.name}.2d`] });
    h = g.op("Add", [h, g.addConstant(`${b.name}.repeated`, { dtype: "float32", shape: [T * N], data: bias })], {}, { scope, names: [`${add.outputs[0]!.name}.2d`] });
    if (tail !== add) h = g.op(tail.op, [h], { ...tail.attrs }, { scope, names: [`${y.name}.2d`] });
    g.replaceAllUsesWith(y, g.op("Reshape", [h], { shape: [0, T, N] }, { scope, names: [`${y.name}.stacked`] }));
    done++;
  }
  return done;
}

/** MatMul(a, Wa) + MatMul(b, Wb), a and b [B, ·], each read only there → MatMul(Concat(a, b), [Wa; Wb]). */
function concatMatMuls(g: Graph): number {
  let done = 0;
  for (const add of [...g.nodes]) {
    const mms = addOf(g, add, "MatMul");
    if (!mms) continue;
    const [m0, m1] = mms;
    const ok = (m: Node) => m.inputs[0]!.type.shape.length === 2 && m.inputs[1]!.isConstant && m.inputs[1]!.type.shape.length === 2 && m.inputs[1]!.type.dtype === "float32";
    if (!ok(m0) || !ok(m1) || m0.inputs[1]!.type.shape[1] !== m1.inputs[1]!.type.shape[1]) continue;
    const w0 = m0.inputs[1]!.data!;
    const w1 = m1.inputs[1]!.data!;
    const data = new Float32Array(w0.data.length + w1.data.length);
    data.set(w0.data as Float32Array);
    data.set(w1.data as Float32Array, w0.data.length);
    const W = g.addConstant(`${m0.inputs[1]!.name}.stacked_rows`, { dtype: "float32", shape: [(w0.shape[0] as number) + (w1.shape[0] as number), w0.shape[1]!], data });
    const x = g.op("Concat", [m0.inputs[0]!, m1.inputs[0]!], { axis: 1 }, { scope: add.scope, names: [`${add.outputs[0]!.name}.inputs`] });
    g.replaceAllUsesWith(add.outputs[0]!, g.op("MatMul", [x, W], {}, { scope: add.scope, names: [`${add.outputs[0]!.name}.one_matmul`] }));
    done++;
  }
  return done;
}

export const streamsBatchFirst: Pass = {
  id: "streams-batch-first",
  summary: "the stacked task streams laid out [B, T, …]: per-stream weights side by side or block-diagonal, 2-D MatMuls, no Transpose",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const group of groups(graph))
      if (toBatchFirst(graph, group, ctx)) {
        bump(ctx, "groups-batch-first");
        changed = true;
      }
    if (!changed) return { graph, changed };
    eliminateDeadCode(graph);
    bump(ctx, "reshapes-sunk", sinkReshapes(graph));
    eliminateDeadCode(graph);
    bump(ctx, "reshapes-merged", mergeReshapes(graph));
    eliminateDeadCode(graph);
    bump(ctx, "matmuls-2d", flattenBiasedMatMuls(graph));
    eliminateDeadCode(graph);
    bump(ctx, "reshapes-merged", mergeReshapes(graph));
    bump(ctx, "matmuls-concatenated", concatMatMuls(graph));
    eliminateDeadCode(graph);
    graph.toposort();
    return { graph, changed };
  },
};
