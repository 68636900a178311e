// The two weighted sums over the gates of a two-gate layer — Zi (the row's own gate) and the
// gate gap s — as one MatMul of a [.., 2, G] weight block and Z, split in two.
//
//   before                                                  after
//     %Zi = MatMul(Gather(%rows, %i), %Z)      [B, 1, E]       %both = MatMul(Gather([%rows; %signs], %i), %Z)   [B, 2, E]
//     %s  = ReduceSum(Mul(%Z, Gather(%signs, %i)), [1])        %Zi, %s' = Split(%both, axis −2)                   [B, 1, E] each
//     ArgMax(%s, −1, keepdims 1), ArgMin(Abs(%s), −1, …)       ArgMax(%s', −1, keepdims 0), ArgMin(Abs(%s'), …)   [B, 1]
//
// 1. A sum over the gate axis read only by ArgMax / ArgMin over the experts (directly or
//    through Abs) is taken as a MatMul of the weight row, keeping a unit axis that the
//    Arg ops then drop (keepdims 0): the same indices, [.., 1] as before.
// 2. MatMuls of the same Z by weight rows looked up with the same index (or constant rows)
//    become one MatMul of the stacked rows, and a Split.
// 3. In the stacked task layers, where each stream's row is a constant, both are folded into
//    the gate's weights: the gate computes [Zi | s] directly, then a Reshape and a Split.
// Exact in 1–2: the weights are one-hot or ±1, so every sum has one or two non-zero terms,
// rounded once. Step 3 rounds the folded weights once (float32 reassociation).

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { rowOf } from "./contract-as-matmul.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

const isArg = (n: Node) => (n.op === "ArgMax" || n.op === "ArgMin") && attrInt(n.attrs, "keepdims", 1) === 1;

/** Readers of an [.., E] score: Arg ops over its last axis, or Abs read only by such. */
function argReaders(g: Graph, v: Value): Node[] | null {
  if (g.isGraphOutput(v) || v.users.size === 0) return null;
  const rank = v.type.shape.length;
  const out: Node[] = [];
  for (const u of v.users) {
    if (isArg(u) && normAxis(attrInt(u.attrs, "axis", 0), rank) === rank - 1) out.push(u);
    else if (u.op === "Abs" && u.inputs[0] === v) {
      const inner = argReaders(g, u.outputs[0]!);
      if (!inner || inner.some((x) => x.op === "Abs")) return null;
      out.push(u);
    } else return null;
  }
  return out;
}

/** Step 1: s = ReduceSum(Mul(Z, c), [−2]) read by Arg ops → MatMul(c_row, Z), the Arg ops with keepdims 0. */
function scoreAsRow(g: Graph, sum: Node): boolean {
  if (sum.op !== "ReduceSum" || attrInt(sum.attrs, "keepdims", 1) !== 0) return false;
  const t = sum.inputs[0]!;
  const mul = t.producer;
  const rank = t.type.shape.length;
  const axes = attrInts(sum.attrs, "axes");
  if (!mul || mul.op !== "Mul" || t.users.size !== 1 || rank < 3 || axes.length !== 1 || normAxis(axes[0]!, rank) !== rank - 2) return false;
  const readers = argReaders(g, sum.outputs[0]!);
  if (!readers) return false;
  for (const k of [1, 0]) {
    const Z = mul.inputs[1 - k]!;
    if (Z.type.shape.length !== rank || Z.type.shape.some((d, i) => d !== t.type.shape[i])) continue;
    const row = rowOf(g, mul.inputs[k]!, sum.scope);
    if (!row) continue;
    const s = g.op("MatMul", [row, Z], {}, { scope: sum.scope, names: [`${sum.outputs[0]!.name}.row`] });
    const rebuild = (n: Node, x: Value) => {
      if (n.op === "Abs") {
        const a = g.op("Abs", [x], {}, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`] });
        for (const u of [...n.outputs[0]!.users]) rebuild(u, a);
        return;
      }
      const arg = g.op(n.op, [x], { ...n.attrs, axis: -1, keepdims: 0 }, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`] });
      g.replaceAllUsesWith(n.outputs[0]!, arg);
    };
    for (const r of readers) rebuild(r, s);
    return true;
  }
  return false;
}

/** The weight rows of a MatMul(A, Z): A constant [.., 1, G], or Gather(table [S, 1, G], index). */
interface RowSource {
  mm: Node;
  table: Tensor;
  index: Value | null;
}

function rowSource(mm: Node): RowSource | null {
  const A = mm.inputs[0]!;
  const r = A.type.shape.length;
  if (r < 3 || A.type.shape[r - 2] !== 1 || A.type.dtype !== "float32") return null;
  if (A.isConstant) return { mm, table: A.data!, index: null };
  const p = A.producer;
  if (p && p.op === "Gather" && attrInt(p.attrs, "axis", 0) === 0 && p.inputs[0]!.isConstant && p.inputs[0]!.type.shape.length === 3)
    return { mm, table: p.inputs[0]!.data!, index: p.inputs[1]! };
  return null;
}

/** Stack tables [.., 1, G] on their row axis: [.., m, G]. */
function stackRows(tables: Tensor[]): Tensor {
  const shape = [...tables[0]!.shape];
  const r = shape.length;
  const G = shape[r - 1]!;
  const lead = shape.slice(0, r - 2).reduce((a, b) => a * b, 1);
  const m = tables.length;
  const data = new Float32Array(lead * m * G);
  for (let l = 0; l < lead; l++) tables.forEach((t, j) => data.set((t.data as Float32Array).subarray(l * G, (l + 1) * G), (l * m + j) * G));
  shape[r - 2] = m;
  return { dtype: "float32", shape, data };
}

/** Step 2: MatMuls of one Z by rows of the same index (or constant rows of one shape) → one MatMul + Split. */
function mergeOn(g: Graph, Z: Value): boolean {
  const sources = [...Z.users].filter((u) => u.op === "MatMul" && u.inputs[1] === Z).map(rowSource).filter((s): s is RowSource => s !== null);
  const groups = new Map<string, RowSource[]>();
  for (const s of sources) {
    const key = `${s.index?.id ?? "const"}:${s.table.shape.join("x")}`;
    groups.set(key, [...(groups.get(key) ?? []), s]);
  }
  let changed = false;
  for (const group of groups.values()) {
    if (group.length < 2) continue;
    const scope = group[0]!.mm.scope;
    const stacked = stackRows(group.map((s) => s.table));
    const c = g.addConstant(`${group[0]!.mm.inputs[0]!.name}.stacked`, stacked);
    const A = group[0]!.index ? g.op("Gather", [c, group[0]!.index], { axis: 0 }, { scope, names: [`${c.name}.lookup`] }) : c;
    const both = g.op("MatMul", [A, Z], {}, { scope, names: [`${Z.name}.contracted`] });
    const r = both.type.shape.length;
    const parts = g.addNode("Split", [both], { axis: r - 2, split: group.map(() => 1) }, { scope, names: group.map((s) => `${s.mm.outputs[0]!.name}.part`) });
    group.forEach((s, j) => g.replaceAllUsesWith(s.mm.outputs[0]!, parts[j]!));
    changed = true;
  }
  return changed;
}

/** X = Σ_k MatMul(h_k, W_k [F_k, N]) + b (b constant [.., 1, N] or [N]): the terms, or null. */
function linearTerms(g: Graph, X: Value): { terms: { h: Value; W: Tensor }[]; bias: Tensor; nodes: Node[] } | null {
  const add = X.producer;
  if (!add || add.op !== "Add") return null;
  const [l, b] = add.inputs[1]!.isConstant ? [add.inputs[0]!, add.inputs[1]!] : [add.inputs[1]!, add.inputs[0]!];
  if (!b.isConstant || b.type.dtype !== "float32") return null;
  const terms: { h: Value; W: Tensor }[] = [];
  const nodes: Node[] = [add];
  const walk = (v: Value): boolean => {
    const n = v.producer;
    if (!n || v.users.size !== 1 || g.isGraphOutput(v)) return false;
    if (n.op === "MatMul" && n.inputs[1]!.isConstant && n.inputs[1]!.type.shape.length === 2 && n.inputs[1]!.type.dtype === "float32") {
      terms.push({ h: n.inputs[0]!, W: n.inputs[1]!.data! });
      nodes.push(n);
      return true;
    }
    if (n.op === "Add") {
      nodes.push(n);
      return walk(n.inputs[0]!) && walk(n.inputs[1]!);
    }
    return false;
  };
  return walk(l) ? { terms, bias: b.data!, nodes } : null;
}

/**
 * Step 3 (stacked task layers, one constant row per stream): Zi = MatMul(R [T, 1, 1, G], Reshape(X))
 * and s = MatMul(X, M [T, G·E, E]) with X = Σ MatMul(h_k, W_k) + b. Both are linear in X, so
 * the gate computes them directly: W_k·[Mi | M] per stream [T, F_k, 2E] (Mi picks row t's gate),
 * then one Reshape to [.., 2, E] and a Split. The products are formed in float64 and rounded
 * once: Zi's columns are the gate's own (copies), s's are W_i − W_other.
 */
function foldIntoGate(g: Graph, zi: Node): boolean {
  const R = zi.inputs[0]!;
  const Z = zi.inputs[1]!;
  const reshape = Z.producer;
  if (!R.isConstant || R.type.shape.length !== 4 || R.type.shape[1] !== 1 || R.type.shape[2] !== 1 || !reshape || reshape.op !== "Reshape") return false;
  if (Z.users.size !== 1 || g.isGraphOutput(Z)) return false;
  const X = reshape.inputs[0]!;
  const [T, , G, E] = Z.type.shape as [number, string, number, number];
  if (typeof T !== "number" || R.type.shape[0] !== T || R.type.shape[3] !== G || X.type.shape.length !== 3 || X.type.shape[2] !== G * E) return false;
  const others = [...X.users].filter((u) => u !== reshape);
  if (others.length !== 1 || g.isGraphOutput(X)) return false;
  const sm = others[0]!;
  const M = sm.inputs[1]!;
  if (sm.op !== "MatMul" || sm.inputs[0] !== X || !M.isConstant || M.type.shape.join() !== [T, G * E, E].join()) return false;
  const readers = argReaders(g, sm.outputs[0]!);
  const lin = linearTerms(g, X);
  if (!readers || !lin) return false;
  const N = G * E;
  // P [T, N, 2E]: columns [0, E) pick gate t's block (R), columns [E, 2E) are M
  const r = R.data!.data as Float32Array;
  const m = M.data!.data as Float32Array;
  const P = new Float64Array(T * N * 2 * E);
  for (let t = 0; t < T; t++)
    for (let n = 0; n < N; n++) {
      const gate = Math.floor(n / E);
      P[(t * N + n) * 2 * E + (n % E)] = r[t * G + gate]!;
      for (let e = 0; e < E; e++) P[(t * N + n) * 2 * E + E + e] = m[(t * N + n) * E + e]!;
    }
  const times = (W: Float32Array, rows: number, lead: (t: number) => number): Float32Array => {
    const out = new Float32Array(T * rows * 2 * E);
    for (let t = 0; t < T; t++)
      for (let i = 0; i < rows; i++)
        for (let c = 0; c < 2 * E; c++) {
          let acc = 0;
          for (let n = 0; n < N; n++) acc += W[lead(t) + i * N + n]! * P[(t * N + n) * 2 * E + c]!;
          out[(t * rows + i) * 2 * E + c] = acc;
        }
    return out;
  };
  const scope = zi.scope;
  let sum: Value | null = null;
  for (const { h, W } of lin.terms) {
    const F = W.shape[0]!;
    const Wf = g.addConstant(`${zi.outputs[0]!.name}.gate_weight`, { dtype: "float32", shape: [T, F, 2 * E], data: times(W.data as Float32Array, F, () => 0) });
    const term = g.op("MatMul", [h, Wf], {}, { scope, names: [`${zi.outputs[0]!.name}.gate`] });
    sum = sum ? g.op("Add", [sum, term], {}, { scope, names: [`${zi.outputs[0]!.name}.gate_sum`] }) : term;
  }
  const b = lin.bias;
  const bT = b.shape.length === 1 ? 0 : N; // per-stream bias [T, 1, N] or one [N]
  if (!(b.shape.length === 1 || (b.shape.length === 3 && b.shape[0] === T && b.shape[1] === 1))) return false;
  const bias = g.addConstant(`${zi.outputs[0]!.name}.gate_bias`, { dtype: "float32", shape: [T, 1, 2 * E], data: times(b.data as Float32Array, 1, (t) => t * bT) });
  const X2 = g.op("Add", [sum!, bias], {}, { scope, names: [`${zi.outputs[0]!.name}.gate_logits`] });
  const both = g.op("Reshape", [X2], { shape: [0, 0, 2, E] }, { scope, names: [`${zi.outputs[0]!.name}.both`] });
  const [zi2, s2] = g.addNode("Split", [both], { axis: 2, split: [1, 1] }, { scope, names: [`${zi.outputs[0]!.name}.picked`, `${sm.outputs[0]!.name}.row`] });
  g.replaceAllUsesWith(zi.outputs[0]!, zi2!);
  const rebuild = (n: Node, x: Value) => {
    if (n.op === "Abs") {
      const a = g.op("Abs", [x], {}, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`] });
      for (const u of [...n.outputs[0]!.users]) rebuild(u, a);
      return;
    }
    g.replaceAllUsesWith(n.outputs[0]!, g.op(n.op, [x], { ...n.attrs, axis: -1, keepdims: 0 }, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`] }));
  };
  for (const rd of readers) rebuild(rd, s2!);
  return true;
}

/**
 * Step 0 (any policy with ranked sets, e.g. three gates): the mask
 *   ReduceMax(OneHot(Concat(TopK(s_1).idx, ArgMax(s_2), …, axis 1)), [1], keepdims 1)   [B, 1, E]
 * over scores s_j [B, E] that are sums over the gate axis (ReduceSum(Mul(c, X)) with a looked-up
 * or constant weight column, or ReduceMean) is built from the scores with the unit axis kept:
 * the weighted sum becomes MatMul(c_row, X), the ranking ops keep their axis −1, the Concat and
 * the ReduceMax move one axis in. The same indices, one node fewer per weighted sum.
 */
function liftMask(g: Graph, red: Node): boolean {
  if (red.op !== "ReduceMax" || attrInt(red.attrs, "keepdims", 1) !== 1) return false;
  const hotV = red.inputs[0]!;
  const hot = hotV.producer;
  if (!hot || hot.op !== "OneHot" || hotV.users.size !== 1 || hotV.type.shape.length !== 3) return false;
  if (attrInts(red.attrs, "axes").map((a) => normAxis(a, 3)).join() !== "1") return false;
  const catV = hot.inputs[0]!;
  const cat = catV.producer;
  if (!cat || cat.op !== "Concat" || catV.users.size !== 1 || normAxis(attrInt(cat.attrs, "axis"), 2) !== 1) return false;
  // each part: indices [B, k] of TopK(score, axis −1) or ArgMax/ArgMin(score, axis −1, keepdims 1), score [B, E]
  const parts = cat.inputs.map((v) => {
    const n = v.producer;
    if (!n || v.users.size !== 1) return null;
    const score = n.inputs[0]!;
    if (score.type.shape.length !== 2 || score.users.size !== 1 || g.isGraphOutput(score)) return null;
    if (n.op === "TopK" && n.outputs[1] === v && n.outputs[0]!.users.size === 0 && normAxis(attrInt(n.attrs, "axis", -1), 2) === 1) return { n, score };
    if (isArg(n) && normAxis(attrInt(n.attrs, "axis", 0), 2) === 1) return { n, score };
    return null;
  });
  if (parts.some((p) => p === null)) return false;
  // every score must be liftable: ReduceSum(Mul(c, X), [1]) with a row-able c, or ReduceMean(Y, [1])
  const lifted: (() => Value)[] = [];
  let saves = 0;
  for (const p of parts as { n: Node; score: Value }[]) {
    const r = p.score.producer;
    if (!r || attrInt(r.attrs, "keepdims", 1) !== 0 || attrInts(r.attrs, "axes").map((a) => normAxis(a, 3)).join() !== "1" || r.inputs[0]!.type.shape.length !== 3) return false;
    if (r.op === "ReduceMean") {
      lifted.push(() => g.op("ReduceMean", [r.inputs[0]!], { ...r.attrs, keepdims: 1 }, { scope: r.scope, names: [`${p.score.name}.row`] }));
      continue;
    }
    const mul = r.inputs[0]!.producer;
    if (r.op !== "ReduceSum" || !mul || mul.op !== "Mul" || r.inputs[0]!.users.size !== 1) return false;
    const k = mul.inputs[0]!.type.shape[2] === 1 ? 0 : mul.inputs[1]!.type.shape[2] === 1 ? 1 : -1;
    if (k < 0) return false;
    const c = mul.inputs[k]!;
    const X = mul.inputs[1 - k]!;
    if (!c.isConstant && !(c.producer?.op === "Gather" && c.producer.inputs[0]!.isConstant)) return false;
    lifted.push(() => g.op("MatMul", [rowOf(g, c, r.scope)!, X], {}, { scope: r.scope, names: [`${p.score.name}.row`] }));
    saves++;
  }
  if (saves === 0) return false;
  const idx = (parts as { n: Node; score: Value }[]).map((p, j) => {
    const s2 = lifted[j]!();
    const n = p.n;
    if (n.op === "TopK") return g.addNode("TopK", [s2], { ...n.attrs, axis: -1 }, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`, `${n.outputs[1]!.name}.row`] })[1]!;
    return g.op(n.op, [s2], { ...n.attrs, axis: -1, keepdims: 1 }, { scope: n.scope, names: [`${n.outputs[0]!.name}.row`] });
  });
  const cat2 = g.op("Concat", idx, { axis: -1 }, { scope: cat.scope, names: [`${catV.name}.row`] });
  const hot2 = g.op("OneHot", [cat2], { ...hot.attrs }, { scope: hot.scope, names: [`${hotV.name}.row`] });
  const red2 = g.op("ReduceMax", [hot2], { axes: [2], keepdims: 0 }, { scope: red.scope, names: [`${red.outputs[0]!.name}.row`] });
  g.replaceAllUsesWith(red.outputs[0]!, red2);
  return true;
}

export const mergeContractions: Pass = {
  id: "merge-contractions",
  summary: "a two-gate layer's Zi and gate gap as one MatMul of stacked weight rows and Z, then a Split",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes])
      if (graph.nodes.includes(n) && liftMask(graph, n)) {
        bump(ctx, "masks-lifted");
        changed = true;
      }
    if (changed) eliminateDeadCode(graph);
    for (const n of [...graph.nodes])
      if (graph.nodes.includes(n) && scoreAsRow(graph, n)) {
        bump(ctx, "scores-as-rows");
        changed = true;
      }
    for (const n of [...graph.nodes])
      if (graph.nodes.includes(n) && n.op === "MatMul" && foldIntoGate(graph, n)) {
        bump(ctx, "folded-into-gates");
        changed = true;
      }
    if (changed) eliminateDeadCode(graph);
    const Zs = new Set(graph.nodes.filter((n) => n.op === "MatMul").map((n) => n.inputs[1]!));
    for (const Z of Zs)
      if (mergeOn(graph, Z)) {
        bump(ctx, "contractions-merged");
        changed = true;
      }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
