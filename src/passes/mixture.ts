// The mixture-of-experts structure the selection passes rewrite, matched in the IR: the
// mixing weights w, the per-expert terms of the mix, and the selection subgraph behind w.

import { invariant } from "../core/diagnostics.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import type { OpKind } from "../ir/ops.ts";

/** A match, or the reason it failed (rewrites say why they did not apply). */
export type Match<T> = { ok: true; value: T } | { ok: false; why: string };

const ok = <T>(value: T): Match<T> => ({ ok: true, value });
const no = <T>(why: string): Match<T> => ({ ok: false, why });

/** One expert's term of a mix: t = Mul(y, Slice(w, [e], [e+1], axes=[1])). */
export interface MixTerm {
  expert: number;
  /** The expert's output y_e [batch, D]. */
  y: Value;
  slice: Node;
  mul: Node;
}

/**
 * h' = Σ_e w[:, e] · y_e as the lowering writes it (layers.ts, lowerMixture): terms in
 * expert order summed left to right, ((t_a + t_b) + t_c) + …
 */
export interface Mixture {
  w: Value;
  /** Terms in summation (= expert) order. */
  terms: MixTerm[];
  /** adds[j] adds terms[j + 1] to the running sum. */
  adds: Node[];
  out: Value;
  /** The layer path (`scenario_layers.page.0`, `task_layers.0.ctr`). */
  path: string;
}

/** The single element of a constant, or null. */
export function scalarOf(v: Value): number | null {
  if (!v.data || v.data.data.length !== 1) return null;
  return Number(v.data.data[0]);
}

/** The expert a Slice of w selects, or null when it is not a one-column slice of axis 1. */
function slicedExpert(n: Node): number | null {
  if (n.op !== "Slice") return null;
  const axes = attrInts(n.attrs, "axes");
  const starts = attrInts(n.attrs, "starts");
  const ends = attrInts(n.attrs, "ends");
  const rank = n.inputs[0]!.type.shape.length;
  if (rank !== 2 || axes.length !== 1 || normAxis(axes[0]!, 2) !== 1) return null;
  const s = starts[0]!;
  if (s < 0 || ends[0] !== s + 1) return null;
  return s;
}

/** The other input of a binary node, given one of them. */
function otherInput(n: Node, v: Value): Value | null {
  if (n.inputs.length !== 2) return null;
  if (n.inputs[0] === v) return n.inputs[1]!;
  if (n.inputs[1] === v) return n.inputs[0]!;
  return null;
}

/** The single node reading `v`, when `v` is read by exactly one node and is no graph output. */
export function onlyUser(g: Graph, v: Value): Node | null {
  if (v.users.size !== 1 || g.isGraphOutput(v)) return null;
  return [...v.users][0]!;
}

/** The layer path of a mixture: from its `select:<path>` output, else from the mix nodes' scope `<path>.mix`. */
function pathOf(g: Graph, w: Value, terms: MixTerm[]): string {
  const out = g.outputs.find((o) => o.value === w && o.name.startsWith("select:"));
  if (out) return out.name.slice("select:".length);
  const scope = terms[0]!.slice.scope;
  return scope.endsWith(".mix") ? scope.slice(0, -".mix".length) : scope;
}

/** Match the mix that reads `w`: every one-column Slice of w is a term, and the terms are summed in order. */
export function matchMixture(g: Graph, w: Value): Match<Mixture> {
  if (w.type.shape.length !== 2) return no("w is not [batch, E]");
  const terms: MixTerm[] = [];
  for (const u of w.users) {
    const e = slicedExpert(u);
    if (e === null) continue;
    const mul = onlyUser(g, u.outputs[0]!);
    if (!mul || mul.op !== "Mul") return no(`w[:, ${e}] is not read by one Mul`);
    const y = otherInput(mul, u.outputs[0]!);
    if (!y || y === u.outputs[0]) return no(`w[:, ${e}] is squared, not mixed`);
    // w[:, e] times a constant (sparse dispatch's zero accumulator) mixes no expert
    if (y.isConstant || y.type.shape.length !== 2 || y.type.shape[0] !== w.type.shape[0]) continue;
    terms.push({ expert: e, y, slice: u, mul });
  }
  if (terms.length === 0) return no("w has no one-column slices");
  terms.sort((a, b) => a.expert - b.expert);
  for (let j = 1; j < terms.length; j++)
    if (terms[j]!.expert === terms[j - 1]!.expert) return no(`w[:, ${terms[j]!.expert}] is sliced twice`);
  const adds: Node[] = [];
  let acc = terms[0]!.mul.outputs[0]!;
  for (let j = 1; j < terms.length; j++) {
    const add = onlyUser(g, acc);
    const t = terms[j]!.mul.outputs[0]!;
    if (!add || add.op !== "Add" || add.inputs[0] !== acc || add.inputs[1] !== t)
      return no("the terms are not summed left to right in expert order");
    adds.push(add);
    acc = add.outputs[0]!;
  }
  return ok({ w, terms, adds, out: acc, path: pathOf(g, w, terms) });
}

/** Every mixture of the graph (candidates: values with one-column Slice users), and the candidates that did not match. */
export function findMixtures(g: Graph): { mixtures: Mixture[]; skipped: { w: Value; why: string }[] } {
  const seen = new Set<Value>();
  const mixtures: Mixture[] = [];
  const skipped: { w: Value; why: string }[] = [];
  for (const n of g.nodes) {
    const w = n.inputs[0];
    if (!w || seen.has(w) || slicedExpert(n) === null) continue;
    seen.add(w);
    const m = matchMixture(g, w);
    if (m.ok) mixtures.push(m.value);
    else skipped.push({ w, why: m.why });
  }
  return { mixtures, skipped };
}

/**
 * Drop the terms of `experts` from a matched mixture (their weight is exactly 0 on every
 * row, so the sum is unchanged): the kept terms are summed again in the same order,
 * ((t_a + t_c) + t_d) + …, under the old sum's name. The dropped experts' subgraphs become
 * dead unless something else reads them. The Mixture is stale afterwards.
 */
export function removeTerms(g: Graph, m: Mixture, experts: ReadonlySet<number>): number {
  const kept = m.terms.filter((t) => !experts.has(t.expert));
  const removed = m.terms.length - kept.length;
  if (removed === 0) return 0;
  invariant(kept.length > 0, `${m.path}: cannot remove every term of a mix`);
  const scope = (m.adds[0] ?? m.terms[0]!.mul).scope;
  const last = kept[kept.length - 1]!.mul.outputs[0]!;
  if (kept.length === 1 || !m.out.producer || m.out.producer.outputs.length !== 1) {
    let acc = kept[0]!.mul.outputs[0]!;
    for (const t of kept.slice(1)) acc = g.op("Add", [acc, t.mul.outputs[0]!], {}, { scope, names: [`${m.out.name}.kept`] });
    g.replaceAllUsesWith(m.out, acc);
    return removed;
  }
  let acc = kept[0]!.mul.outputs[0]!;
  for (const t of kept.slice(1, -1)) acc = g.op("Add", [acc, t.mul.outputs[0]!], {}, { scope, names: [`${scope}.kept_sum`] });
  const before = acc;
  replaceKeepingName(g, m.out, before, (name) => g.op("Add", [before, last], {}, { scope, names: [name] }));
  return removed;
}

/**
 * The selection subgraph behind w: its backward cone, not crossing MatMul or Gemm (the
 * gates' and experts' projections), so it stops at this layer's gate logits and index.
 */
export function selectionCone(w: Value): Node[] {
  const seen = new Set<Node>();
  const stack = w.producer ? [w.producer] : [];
  while (stack.length) {
    const n = stack.pop()!;
    if (seen.has(n) || n.op === "MatMul" || n.op === "Gemm") continue;
    seen.add(n);
    for (const v of n.inputs) if (v.producer) stack.push(v.producer);
  }
  return [...seen];
}

/** The number of `true` entries per row of a constant bool [G, E] table, at most. */
function maxRowCount(t: Tensor): number {
  const E = t.shape[t.shape.length - 1]!;
  let best = 0;
  for (let r = 0; r * E < t.data.length; r++) {
    let c = 0;
    for (let e = 0; e < E; e++) if (t.data[r * E + e]) c++;
    best = Math.max(best, c);
  }
  return best;
}

/** A logit this small is a mask fill: exp of it underflows to exactly 0 (lower/select.ts, MASK_FILL). */
export function isMaskFill(v: Value): boolean {
  const x = scalarOf(v);
  return x !== null && x <= -1e29;
}

/**
 * At most how many experts a row's mask `mask` [batch, E] (bool) can select, from its
 * structure; E when unknown.
 *   Greater(ReduceSum(OneHot(indices [batch, K]), [1]), 0) → K     (aesm, topK)
 *   Gather(table [G, E], index)                          → max row count (fixed)
 *   And(a, b) → min;  a constant → its row count
 */
export function maxMaskCount(mask: Value, E: number): number {
  if (mask.data) return maxRowCount(mask.data);
  const n = mask.producer;
  if (!n) return E;
  switch (n.op) {
    case "Greater": {
      if (scalarOf(n.inputs[1]!) !== 0) return E;
      const sum = n.inputs[0]!.producer;
      if (!sum || sum.op !== "ReduceSum") return E;
      const hot = sum.inputs[0]!.producer;
      if (!hot || hot.op !== "OneHot") return E;
      const k = hot.inputs[0]!.type.shape[1];
      return typeof k === "number" ? Math.min(k, E) : E;
    }
    case "Gather":
      return n.inputs[0]!.data ? maxRowCount(n.inputs[0]!.data) : E;
    case "And":
      return Math.min(maxMaskCount(n.inputs[0]!, E), maxMaskCount(n.inputs[1]!, E));
    default:
      return E;
  }
}

/**
 * At most how many experts get a non-zero weight on one row: w = Softmax(Where(mask, logits,
 * fill)) with a mask fill (nested Wheres intersect); E for anything else (all(), and the
 * reference mask, whose unselected experts can win).
 */
export function maxSelected(w: Value): number {
  const E = w.type.shape[1];
  if (typeof E !== "number") return Infinity;
  const placed = placedColumns(w);
  if (placed) return maxSelected(placed.inner);
  const sm = w.producer;
  if (!sm || sm.op !== "Softmax") return E;
  let bound = E;
  let x = sm.inputs[0]!;
  while (x.producer && x.producer.op === "Where" && isMaskFill(x.producer.inputs[2]!)) {
    bound = Math.min(bound, maxMaskCount(x.producer.inputs[0]!, E));
    x = x.producer.inputs[1]!;
  }
  return bound;
}

/**
 * w = MatMul(w', S) with S a constant 0/1 [E', E] that puts column j of w' at column
 * columns[j] of w and leaves the others 0 (prune-static's re-expansion); null otherwise.
 */
export function placedColumns(w: Value): { inner: Value; columns: number[] } | null {
  const n = w.producer;
  if (!n || n.op !== "MatMul" || !n.inputs[1]!.data || n.inputs[0]!.type.shape.length !== 2) return null;
  const S = n.inputs[1]!.data;
  if (S.shape.length !== 2 || S.dtype !== "float32") return null;
  const [rows, E] = S.shape as [number, number];
  const columns: number[] = [];
  const used = new Set<number>();
  for (let j = 0; j < rows; j++) {
    let at = -1;
    for (let e = 0; e < E; e++) {
      const x = S.data[j * E + e]!;
      if (x === 1 && at < 0 && !used.has(e)) at = e;
      else if (x !== 0) return null;
    }
    if (at < 0) return null;
    columns.push(at);
    used.add(at);
  }
  return { inner: n.inputs[0]!, columns };
}

/** Ops that act on each row on its own, given constant side operands. */
const UNARY_ROWWISE: ReadonlySet<OpKind> = new Set<OpKind>([
  "Identity", "Neg", "Abs", "Exp", "Log", "Sqrt", "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Erf", "Gelu", "Cast",
]);
const BINARY_ROWWISE: ReadonlySet<OpKind> = new Set<OpKind>(["Add", "Sub", "Mul", "Div", "Max", "Min"]);

/** The one non-constant input through which a node computes row by row, or null when it mixes rows or reads two of them. */
export function rowwiseInput(n: Node): Value | null {
  const varying = n.inputs.filter((v) => !v.isConstant);
  if (varying.length !== 1) return null;
  const x = varying[0]!;
  if (x.type.shape.length < 2) return null;
  if (UNARY_ROWWISE.has(n.op)) return x;
  if (BINARY_ROWWISE.has(n.op)) {
    // A constant operand that broadcasts along the rows (rank < 2, or leading dims 1).
    const c = n.inputs.find((v) => v !== x)!;
    const lead = c.type.shape.slice(0, Math.max(0, c.type.shape.length - 1));
    return c.type.shape.length < x.type.shape.length || lead.every((d) => d === 1) ? x : null;
  }
  if (n.op === "MatMul") return n.inputs[0] === x && x.type.shape.length === 2 && n.inputs[1]!.type.shape.length === 2 ? x : null;
  if (n.op === "Gemm") return n.inputs[0] === x && attrInt(n.attrs, "transA", 0) === 0 ? x : null;
  return null;
}

/**
 * An expert's computation as a chain of row-wise nodes from its input (the layer input h,
 * read by other nodes too) to y. Empty when y is h itself (an expert without units).
 */
export function expertChain(y: Value): { root: Value; nodes: Node[] } {
  const nodes: Node[] = [];
  let v = y;
  for (;;) {
    const n = v.producer;
    if (!n) break;
    const x = rowwiseInput(n);
    if (!x) break;
    nodes.unshift(n);
    v = x;
    if (x.users.size > 1) break; // the layer input: the other experts and the gates read it too
  }
  return { root: v, nodes };
}

/** Floating-point operations per row of a row-wise chain (2·K·N per matrix product, one per output element otherwise). */
export function flopsPerRow(nodes: Node[]): number {
  let f = 0;
  for (const n of nodes) {
    const out = n.outputs[0]!.type.shape;
    const width = out.slice(1).reduce<number>((a, d) => a * (typeof d === "number" ? d : 1), 1);
    if (n.op === "MatMul" || n.op === "Gemm") {
      const x = n.inputs[0]!.type.shape;
      const k = x[x.length - 1];
      f += 2 * (typeof k === "number" ? k : 1) * width;
    } else f += width;
  }
  return f;
}

/**
 * Replace every use of `old` (a node result) by the value `build` makes, under old's name:
 * the name is freed by removing old's producer first, so graph outputs keep their value
 * names and the emitter needs no alias. `build` receives the name to give its last node.
 */
export function replaceKeepingName(g: Graph, old: Value, anchor: Value, build: (name: string) => Value): Value {
  const producer = old.producer;
  invariant(producer !== null && producer.outputs.length === 1, `replaceKeepingName: %${old.name} is not a single-output node result`);
  const name = old.name;
  // A placeholder holds old's readers while its producer is removed.
  const hold = g.op("Identity", [anchor], {}, { scope: producer.scope, names: [`${name}.hold`] });
  g.replaceAllUsesWith(old, hold);
  g.removeNodes([producer]);
  const fresh = build(name);
  g.replaceAllUsesWith(hold, fresh);
  g.removeNodes([hold.producer!]);
  return fresh;
}
