// A two-gate layer's specific ArgMax and shared ArgMin as one ArgMax over two rows. After
// merge-contractions such a layer has Zi and the gate gap s as the two rows of one linear
// value Y [.., 2, E], split apart, and its mask is
//   Max(OneHot(ArgMax(s, −1)), OneHot(ArgMin(Abs(s), −1)))            6 kernels after the Split
// The producer of Y is linear in its rows, so it can as well compute the rows
// [Zi; s; s; s; −s] (weight rows or columns copied and negated). Then
//   %zi, %p, %q = Split(Y', [1, 2, 2])      %p = [s; s], %q = [s; −s]
//   %t = Min(%p, %q)                        [s; −|s|]
//   %mask = ReduceMax(OneHot(ArgMax(%t, −1)), [−2], keepdims 1)        4 kernels
// Exact: a copied row is the same sum of the same products, a negated one is that sum with
// every term's sign flipped (rounding is symmetric), and min(s, −s) = −|s|. ArgMax of −|s|
// takes the first of equal values, as ArgMin of |s| does, so ties keep the lower index; the
// mask is the Max of the two one-hot rows either way.
//
// Y's producer: MatMul(L, Z) with the rows in L (a constant, or Gather of a constant table),
// or Reshape(X, [.., 2, E]) of a linear X (MatMuls by constant weights, Adds, constant
// biases) whose last axis holds the rows as column blocks of E.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { onlyUser } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

/** The new rows: each an old row (0 or 1) and a sign. */
type Rows = { row: number; sign: 1 | -1 }[];

/** `t` with its axis `axis` (size 2, or 2·block when `block` > 1) rebuilt from `rows`. */
function restack(t: Tensor, axis: number, rows: Rows, block = 1): Tensor {
  const shape = [...t.shape];
  const outer = shape.slice(0, axis).reduce((a, b) => a * b, 1);
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1) * block;
  const src = t.data as Float32Array;
  const data = new Float32Array(outer * rows.length * inner);
  for (let o = 0; o < outer; o++)
    rows.forEach(({ row, sign }, j) => {
      const from = src.subarray((o * 2 + row) * inner, (o * 2 + row + 1) * inner);
      const at = (o * rows.length + j) * inner;
      for (let i = 0; i < inner; i++) data[at + i] = sign * from[i]!;
    });
  shape[axis] = (rows.length * (shape[axis] as number)) / 2;
  return { dtype: "float32", shape, data };
}

const f32Constant = (v: Value) => v.isConstant && v.type.dtype === "float32";

/** X [.., 2E] linear in its column blocks of E: the same expression over [.., rows·E], or null. */
function extendColumns(g: Graph, X: Value, E: number, rows: Rows, scope: string): Value | null {
  const n = X.producer;
  if (!n || onlyUser(g, X) === null) return null;
  const cols = (c: Value): Value | null => {
    const r = c.type.shape.length;
    if (!f32Constant(c) || c.type.shape[r - 1] !== 2 * E) return null;
    return g.addConstant(`${c.name}.pair_rows`, restack(c.data!, r - 1, rows, E));
  };
  if (n.op === "MatMul") {
    const W = cols(n.inputs[1]!);
    return W && g.op("MatMul", [n.inputs[0]!, W], {}, { scope, names: [`${X.name}.pair_rows`] });
  }
  if (n.op === "Add") {
    const parts = n.inputs.map((v) => (v.isConstant ? cols(v) : extendColumns(g, v, E, rows, scope)));
    if (parts.some((p) => p === null)) return null;
    return g.op("Add", parts as Value[], {}, { scope, names: [`${X.name}.pair_rows`] });
  }
  return null;
}

/** Y [.., 2, E] from its producer, with its row axis rebuilt from `rows`; null if the producer is not linear in its rows. */
function extendRows(g: Graph, Y: Value, rows: Rows): Value | null {
  const n = Y.producer;
  const r = Y.type.shape.length;
  if (!n || Y.type.dtype !== "float32") return null;
  const name = `${Y.name}.pair_rows`;
  if (n.op === "MatMul") {
    const L = n.inputs[0]!;
    const lr = L.type.shape.length;
    if (lr !== r || L.type.shape[lr - 2] !== 2) return null;
    if (f32Constant(L)) return g.op("MatMul", [g.addConstant(`${L.name}.pair_rows`, restack(L.data!, lr - 2, rows)), n.inputs[1]!], {}, { scope: n.scope, names: [name] });
    const gather = L.producer;
    if (!gather || gather.op !== "Gather" || attrInt(gather.attrs, "axis", 0) !== 0 || !f32Constant(gather.inputs[0]!)) return null;
    const tab = gather.inputs[0]!;
    const axis = lr - 2 - gather.inputs[1]!.type.shape.length + 1; // the rows' axis in the table
    if (axis < 1 || tab.type.shape[axis] !== 2) return null;
    const tab2 = g.addConstant(`${tab.name}.pair_rows`, restack(tab.data!, axis, rows));
    const L2 = g.op("Gather", [tab2, gather.inputs[1]!], { axis: 0 }, { scope: gather.scope, names: [`${L.name}.pair_rows`] });
    return g.op("MatMul", [L2, n.inputs[1]!], {}, { scope: n.scope, names: [name] });
  }
  if (n.op === "Reshape") {
    const X = n.inputs[0]!;
    const E = Y.type.shape[r - 1];
    const shape = attrInts(n.attrs, "shape");
    if (typeof E !== "number" || shape.length !== r || shape[r - 2] !== 2 || shape[r - 1] !== E || shape.slice(0, r - 2).some((d) => d !== 0)) return null;
    if (X.type.shape.length !== r - 1 || X.type.shape[r - 2] !== 2 * E) return null;
    const X2 = extendColumns(g, X, E, rows, n.scope);
    return X2 && g.op("Reshape", [X2], { shape: [...shape.slice(0, r - 2), rows.length, E] }, { scope: n.scope, names: [name] });
  }
  return null;
}

/** An ArgMax / ArgMin over the last axis, keepdims 0, first index on ties, read by one OneHot. */
function argOf(g: Graph, idx: Value, hot: Node): Node | null {
  const a = idx.producer;
  if (!a || (a.op !== "ArgMax" && a.op !== "ArgMin") || onlyUser(g, idx) !== hot) return null;
  const rank = a.inputs[0]!.type.shape.length;
  if (attrInt(a.attrs, "keepdims", 1) !== 0 || attrInt(a.attrs, "select_last_index", 0) !== 0 || normAxis(attrInt(a.attrs, "axis", 0), rank) !== rank - 1) return null;
  return a;
}

function rewrite(g: Graph, max: Node): boolean {
  // (a Max already rewritten is left without readers until the dead-code pass at the end)
  if (max.inputs.length !== 2 || (max.outputs[0]!.users.size === 0 && !g.isGraphOutput(max.outputs[0]!))) return false;
  const hots = max.inputs.map((v) => (v.producer?.op === "OneHot" && onlyUser(g, v) === max ? v.producer : null));
  if (hots.some((h) => h === null) || JSON.stringify(hots[0]!.attrs) !== JSON.stringify(hots[1]!.attrs)) return false;
  const hot = hots[0]!;
  if (attrInt(hot.attrs, "axis", -1) !== -1) return false;
  const args = hots.map((h) => argOf(g, h!.inputs[0]!, h!));
  const top = args.find((a) => a?.op === "ArgMax");
  const bottom = args.find((a) => a?.op === "ArgMin");
  if (!top || !bottom) return false;
  const s = top.inputs[0]!;
  const abs = bottom.inputs[0]!.producer;
  if (!abs || abs.op !== "Abs" || abs.inputs[0] !== s || onlyUser(g, bottom.inputs[0]!) !== bottom) return false;
  if (g.isGraphOutput(s) || s.users.size !== 2) return false;
  const split = s.producer;
  const r = s.type.shape.length;
  if (!split || split.op !== "Split" || split.outputs.length !== 2 || r < 2 || s.type.shape[r - 2] !== 1) return false;
  if (normAxis(attrInt(split.attrs, "axis", 0), r) !== r - 2 || attrInts(split.attrs, "split").join() !== "1,1") return false;
  const Y = split.inputs[0]!;
  if (onlyUser(g, Y) !== split) return false;
  const own = split.outputs.indexOf(s);
  const zi = split.outputs[1 - own]!;
  const rows: Rows = [
    { row: 1 - own, sign: 1 },
    { row: own, sign: 1 },
    { row: own, sign: 1 },
    { row: own, sign: 1 },
    { row: own, sign: -1 },
  ];
  const Y2 = extendRows(g, Y, rows);
  if (!Y2) return false;
  const at = (n: Node, suffix: string) => ({ scope: n.scope, names: [`${n.outputs[0]!.name}.${suffix}`] });
  const [zi2, p, q] = g.addNode("Split", [Y2], { axis: r - 2, split: [1, 2, 2] }, { scope: split.scope, names: [`${zi.name}.paired`, `${s.name}.twice`, `${s.name}.signed`] });
  const t = g.op("Min", [p!, q!], {}, { scope: abs.scope, names: [`${s.name}.and_neg_abs`] });
  const idx = g.op("ArgMax", [t], { axis: -1, keepdims: 0 }, at(top, "and_shared"));
  const hot2 = g.op("OneHot", [idx], { ...hot.attrs }, at(max, "rows"));
  const mask = g.op("ReduceMax", [hot2], { axes: [r - 2], keepdims: 1 }, at(max, "paired"));
  g.replaceAllUsesWith(zi, zi2!);
  g.replaceAllUsesWith(max.outputs[0]!, mask);
  return true;
}

export const argmaxPair: Pass = {
  id: "argmax-pair",
  summary: "a two-gate layer's specific ArgMax and shared ArgMin as one ArgMax over [s; −|s|], the rows its gate computes",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes]) {
      if (n.op !== "Max") continue;
      const before = new Set(graph.nodes);
      if (!rewrite(graph, n)) {
        // a producer that turned out not to be linear: drop what was built for it
        graph.removeNodes(graph.nodes.filter((x) => !before.has(x)));
        graph.removeUnusedConstants();
        continue;
      }
      bump(ctx, "pairs");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
