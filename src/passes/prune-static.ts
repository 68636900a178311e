// Static top-k pruning: a selection that always selects every expert is dropped, and experts
// that no row can select (a `fixed` policy that names them nowhere) are removed with their
// gate logit columns. Exact: it only removes terms whose weight is exactly 0.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Mixture, findMixtures, isMaskFill, removeTerms, replaceKeepingName, scalarOf } from "./mixture.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** TopK's indices output when it ranks all of its axis (k = size): every expert exactly once. */
function isFullRanking(v: Value): boolean {
  const t = v.producer;
  if (!t || t.op !== "TopK" || t.outputs[1] !== v) return false;
  const x = t.inputs[0]!.type.shape;
  return x[normAxis(attrInt(t.attrs, "axis", -1), x.length)] === attrInt(t.attrs, "k");
}

/** count = ReduceSum(OneHot(indices, depth=E), [1]) — the lowering's expert multiplicities; returns indices. */
function countedIndices(count: Value): Value | null {
  const sum = count.producer;
  if (!sum || sum.op !== "ReduceSum" || attrInts(sum.attrs, "axes").length !== 1) return null;
  const hot = sum.inputs[0]!.producer;
  if (!hot || hot.op !== "OneHot" || hot.inputs[0]!.type.shape.length !== 2) return null;
  if (normAxis(attrInts(sum.attrs, "axes")[0]!, 3) !== 1) return null;
  return hot.inputs[0]!;
}

/** Whether a bool mask [batch, E] is true everywhere, by construction. */
function alwaysTrue(mask: Value): boolean {
  if (mask.data) return Array.from(mask.data.data as Uint8Array).every((x) => x !== 0);
  const n = mask.producer;
  if (!n) return false;
  switch (n.op) {
    case "Greater": {
      // count > 0 where some ranking in the count covers every expert (topK with k = E, an aesm set with K ≥ E)
      if (scalarOf(n.inputs[1]!) !== 0) return false;
      const idx = countedIndices(n.inputs[0]!);
      if (!idx) return false;
      const parts = idx.producer?.op === "Concat" ? idx.producer.inputs : [idx];
      return parts.some(isFullRanking);
    }
    case "Gather":
      return n.inputs[0]!.data !== null && alwaysTrue(n.inputs[0]!);
    case "And":
      return alwaysTrue(n.inputs[0]!) && alwaysTrue(n.inputs[1]!);
    default:
      return false;
  }
}

/**
 * (a) A selection of every expert:
 *   masked     Softmax(Where(mask, Zi, fill))          → Softmax(Zi)        (mask always true)
 *   reference  Softmax(Mul(Zi, Where(mask, count, m)))  → Softmax(Zi)        (count ≡ 1: one full ranking)
 * after which the scores, TopKs and masks are dead. A reference-mask aesm with both sets
 * keeps its selection: an expert in both sets has its logit doubled (MODEL.md §7).
 */
function dropFullSelections(g: Graph, ctx: PassContext): boolean {
  let changed = false;
  for (const sm of [...g.nodes]) {
    if (sm.op !== "Softmax") continue;
    const logits = sm.inputs[0]!;
    const n = logits.producer;
    if (!n) continue;
    let Zi: Value | null = null;
    if (n.op === "Where" && isMaskFill(n.inputs[2]!) && alwaysTrue(n.inputs[0]!)) Zi = n.inputs[1]!;
    if (n.op === "Mul") {
      for (const [z, m] of [n.inputs, [...n.inputs].reverse()] as [Value, Value][]) {
        const where = m.producer;
        if (!where || where.op !== "Where" || !alwaysTrue(where.inputs[0]!)) continue;
        const idx = countedIndices(where.inputs[1]!);
        if (idx && isFullRanking(idx)) Zi = z;
      }
    }
    if (!Zi) continue;
    g.setNodeInput(sm, 0, Zi);
    bump(ctx, "selections-dropped");
    changed = true;
  }
  return changed;
}

/** `fixed`: w = Softmax(Where(Gather(allowed [G, E], index), Zi, fill)), Zi = ReduceSum(Mul(Z, onehot3), [1]). */
interface FixedSelection {
  softmax: Node;
  where: Node;
  allowed: Tensor;
  index: Value;
  Z: Value;
  onehot3: Value;
  /** Z first in the Mul (the lowering's order). */
  zFirst: boolean;
}

function matchFixed(w: Value): FixedSelection | null {
  const softmax = w.producer;
  if (!softmax || softmax.op !== "Softmax") return null;
  const where = softmax.inputs[0]!.producer;
  if (!where || where.op !== "Where" || !isMaskFill(where.inputs[2]!)) return null;
  const gather = where.inputs[0]!.producer;
  if (!gather || gather.op !== "Gather" || !gather.inputs[0]!.data || attrInt(gather.attrs, "axis", 0) !== 0) return null;
  const sum = where.inputs[1]!.producer;
  if (!sum || sum.op !== "ReduceSum" || attrInt(sum.attrs, "keepdims", 1) !== 0) return null;
  const mul = sum.inputs[0]!.producer;
  if (!mul || mul.op !== "Mul") return null;
  const zFirst = mul.inputs[0]!.type.shape[2] !== 1;
  const [Z, onehot3] = zFirst ? mul.inputs : [mul.inputs[1]!, mul.inputs[0]!];
  if (Z!.type.shape.length !== 3) return null;
  return { softmax, where, allowed: gather.inputs[0]!.data!, index: gather.inputs[1]!, Z: Z!, onehot3: onehot3!, zFirst };
}

/** Keep only the columns `keep` of the last axis of a constant. */
function gatherColumns(t: Tensor, keep: number[]): Tensor {
  const E = t.shape[t.shape.length - 1]!;
  const rows = t.data.length / E;
  const out = new (t.data.constructor as new (n: number) => Tensor["data"])(rows * keep.length);
  const src = t.data as unknown as ArrayLike<number>;
  const dst = out as unknown as { [i: number]: number };
  for (let r = 0; r < rows; r++) keep.forEach((e, j) => (dst[r * keep.length + j] = src[r * E + e]!));
  return { dtype: t.dtype, shape: [...t.shape.slice(0, -1), keep.length], data: out };
}

/**
 * The value `v` with only the columns `keep` of its last axis, rebuilt from its producers
 * where they act column by column (the gates' projection, bias and batch norm, their stacking
 * into Z): constants lose those columns, so the gates no longer compute them. null where the
 * structure is not understood (the caller then gathers the columns instead).
 */
function pruneColumns(g: Graph, v: Value, keep: number[], E: number, memo: Map<Value, Value | null>): Value | null {
  if (memo.has(v)) return memo.get(v)!;
  const shape = v.type.shape;
  let out: Value | null = null;
  if (shape.length === 0 || shape[shape.length - 1] === 1) out = v; // broadcasts along the columns
  else if (shape[shape.length - 1] !== E) out = null;
  else if (v.data) out = g.addConstant(`${v.name}.pruned`, gatherColumns(v.data, keep));
  else if (v.producer) {
    const n = v.producer;
    const rank = shape.length;
    const rebuild = (inputs: (Value | null)[]): Value | null =>
      inputs.every((x) => x !== null) ? g.op(n.op, inputs as Value[], n.attrs, { scope: n.scope, names: [`${v.name}.pruned`] }) : null;
    const lastInserted = n.op === "Unsqueeze" && attrInts(n.attrs, "axes").some((a) => normAxis(a, rank) === rank - 1);
    switch (n.op) {
      case "MatMul":
        out = n.inputs[1]!.data && n.inputs[1]!.type.shape.length === 2 ? rebuild([n.inputs[0]!, pruneColumns(g, n.inputs[1]!, keep, E, memo)]) : null;
        break;
      case "Add":
      case "Sub":
      case "Mul":
      case "Div":
        out = rebuild(n.inputs.map((x) => pruneColumns(g, x, keep, E, memo)));
        break;
      case "Unsqueeze":
        out = lastInserted ? null : rebuild([pruneColumns(g, n.inputs[0]!, keep, E, memo)]);
        break;
      case "Concat":
        out = normAxis(attrInt(n.attrs, "axis"), rank) === rank - 1 ? null : rebuild(n.inputs.map((x) => pruneColumns(g, x, keep, E, memo)));
        break;
      default:
        out = null;
    }
  }
  memo.set(v, out);
  return out;
}

/**
 * (b) Experts that a `fixed` policy names for no value and not as shared have w = 0 on every
 * row. Their terms leave the mix (and their subgraphs die), and the selection is rebuilt
 * over the E' kept experts, so the gates stop computing their logit columns:
 *   before  Z [B,G,E] → Zi → Where(Gather(allowed [G,E], i), Zi, fill) → w = Softmax   → mix over E
 *   after   Z' [B,G,E'] → Zi' → Where(Gather(allowed' [G,E'], i), Zi', fill) → w' = Softmax
 *           w = MatMul(w', S [E',E])   → mix over the kept experts
 *   (S places column j at kept[j]: each element of w is one product by 1 plus zeros, exact.)
 * The softmax over the allowed set is unchanged: the removed columns only ever held the fill.
 */
function pruneUnselectable(g: Graph, m: Mixture, ctx: PassContext): boolean {
  const fixed = matchFixed(m.w);
  if (!fixed) return false;
  const { allowed } = fixed;
  const E = allowed.shape[1]!;
  const keep: number[] = [];
  for (let e = 0; e < E; e++) {
    let any = false;
    for (let r = 0; r < allowed.shape[0]!; r++) if (allowed.data[r * E + e]) any = true;
    if (any) keep.push(e);
  }
  if (keep.length === E || keep.length === 0) return false;
  const scope = fixed.softmax.scope;
  const memo = new Map<Value, Value | null>();
  let Zp = pruneColumns(g, fixed.Z, keep, E, memo);
  if (!Zp) {
    const idx = g.addConstant(`${scope}.kept_experts`, { dtype: "int64", shape: [keep.length], data: BigInt64Array.from(keep, BigInt) });
    Zp = g.op("Gather", [fixed.Z, idx], { axis: 2 }, { scope, names: [`${fixed.Z.name}.pruned`] });
    bump(ctx, "gate-columns-gathered");
  } else bump(ctx, "gate-columns-removed", E - keep.length);
  const picked = g.op("Mul", fixed.zFirst ? [Zp, fixed.onehot3] : [fixed.onehot3, Zp], {}, { scope, names: [`${scope}.Z_picked.pruned`] });
  const Zi = g.op("ReduceSum", [picked], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.Zi.pruned`] });
  const table = g.addConstant(`${scope}.allowed.pruned`, gatherColumns(allowed, keep));
  const mask = g.op("Gather", [table, fixed.index], { axis: 0 }, { scope, names: [`${scope}.selected.pruned`] });
  const logits = g.op("Where", [mask, Zi, fixed.where.inputs[2]!], {}, { scope, names: [`${scope}.masked_logits.pruned`] });
  const wp = g.op("Softmax", [logits], fixed.softmax.attrs, { scope, names: [`${m.w.name}.pruned`] });

  // The mix keeps reading w, now the re-expansion of w' (the MatMul is [B, E'] × [E', E]).
  const dead = new Set(m.terms.map((t) => t.expert).filter((e) => !keep.includes(e)));
  bump(ctx, "experts-removed", removeTerms(g, m, dead));
  const S = new Float32Array(keep.length * E);
  keep.forEach((e, j) => (S[j * E + e] = 1));
  const place = g.addConstant(`${scope}.expand`, { dtype: "float32", shape: [keep.length, E], data: S });
  replaceKeepingName(g, m.w, wp, (name) => g.op("MatMul", [wp, place], {}, { scope, names: [name] }));
  return true;
}

export const pruneStatic: Pass = {
  id: "prune-static",
  summary: "drop selections that select every expert, and remove experts no row can select",
  run(graph: Graph, ctx) {
    let changed = dropFullSelections(graph, ctx);
    for (const m of findMixtures(graph).mixtures) if (pruneUnselectable(graph, m, ctx)) changed = true;
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
