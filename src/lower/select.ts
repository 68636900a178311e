// Selection policies (MODEL.md §5, and §7's reference mask): gate logits Z [batch, G, E]
// and each row's scenario (or task) index in, mixing weights w [batch, E] out.

import { assertNever, invariant } from "../core/diagnostics.ts";
import type { SelectSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";

/**
 * Logit given to unselected experts before the masked softmax. exp(MASK_FILL − max)
 * underflows to exactly 0 in float32 and float64 for any real logit, so unselected
 * experts get w = 0 exactly. It is finite and far from float32's limit (3.4e38), so
 * sums and differences of it (as later rewrites may form) stay finite: no ±inf, no
 * inf − inf = NaN, and no dependence on how a runtime treats −inf in Softmax.
 */
export const MASK_FILL = -1e30;

/** The multiplier the TensorFlow reference code gives unselected experts (MODEL.md §7). */
export const REFERENCE_UNSELECTED = -1e9;

export interface SelectArgs {
  /** Gate logits Z [batch, G, E]. */
  Z: Value;
  /** Row index i [batch] int64: the scenario value at this level, or the task. */
  index: Value;
  select: SelectSpec;
  /** Names of the G gates' values (scenario values or task names), for `fixed`. */
  groups: readonly string[];
  experts: number;
  /** Prefix of constants shared by every stream of a layer (the layer's weight prefix). */
  layerPrefix: string;
  scope: string;
  /** Name of the result w. */
  name: string;
}

/**
 * w [batch, E] for one layer and stream. Common to every policy:
 *   onehot = OneHot(i, depth=G)                         [batch, G]
 *   Zi     = ReduceSum(Z · Unsqueeze(onehot, [2]), [1])  [batch, E]   = Z[b, i_b, :]
 * (exact: the other gates' terms are 0·finite = 0). Then:
 *   all    → Softmax(Zi)
 *   topK   → mask of TopK(Zi, k) indices        → masked softmax
 *   fixed  → Gather(allowed [G, E], i)          → masked softmax
 *   aesm   → mask of the specific and shared sets → masked softmax, or §7's multiplier
 */
export function lowerSelect(cx: Lowering, a: SelectArgs): Value {
  const { scope } = a;
  const G = a.groups.length;
  const oneHot = cx.op("OneHot", [a.index], { depth: G }, scope, `${scope}.onehot`);
  const oneHot3 = cx.op("Unsqueeze", [oneHot], { axes: [2] }, scope, `${scope}.onehot3`);
  const picked = cx.op("Mul", [a.Z, oneHot3], {}, scope, `${scope}.Z_picked`);
  const Zi = cx.op("ReduceSum", [picked], { axes: [1], keepdims: 0 }, scope, `${scope}.Zi`);
  const s = a.select;
  switch (s.kind) {
    case "all":
      return cx.op("Softmax", [Zi], { axis: 1 }, scope, a.name);
    case "topK": {
      const k = Math.min(s.k, a.experts);
      const [, top] = cx.ops("TopK", [Zi], { k, axis: -1, largest: 1 }, scope, [`${scope}.top_values`, `${scope}.top`]);
      const count = expertCounts(cx, top!, a.experts, scope);
      return maskedSoftmax(cx, Zi, isSelected(cx, count, scope), scope, a.name);
    }
    case "fixed": {
      const allowed = cx.constant(`${a.layerPrefix}.select.allowed`, () => fixedTable(s, a.groups, a.experts, a.layerPrefix));
      const mask = cx.op("Gather", [allowed, a.index], { axis: 0 }, scope, `${scope}.selected`);
      return maskedSoftmax(cx, Zi, mask, scope, a.name);
    }
    case "aesm":
      return lowerAesm(cx, a, s, oneHot3, Zi);
    default:
      return assertNever(s, "selection policy");
  }
}

/**
 * AESM² automatic selection (MODEL.md §5), written as the paper's KL divergences:
 *   P  = Softmax(Z, axis=1)                                   [batch, G, E]
 *   q  = onehot3 + eps;  sp = ReduceSum(q · Log(q / (P + eps)), [1])      [batch, E]
 *   u  = 1/G;            sh = ReduceSum(u · (log u − LogSoftmax(Z, 1)), [1]) [batch, E]
 *   specific = TopK(sp, K_sp, largest=0) indices; shared = TopK(sh, K_sh, largest=0)
 *   count = ReduceSum(OneHot(Concat(specific, shared), E), [1])  ∈ {0, 1, 2}
 * masked:    w = Softmax(Where(count > 0, Zi, MASK_FILL))
 * reference: w = Softmax(Zi · Where(count > 0, count, −1e9))   (§7, bug-compatible)
 * A set whose K is 0 is left out. TopK keeps the lower index first on ties, as §5 asks.
 */
function lowerAesm(
  cx: Lowering,
  a: SelectArgs,
  s: Extract<SelectSpec, { kind: "aesm" }>,
  oneHot3: Value,
  Zi: Value,
): Value {
  const { scope } = a;
  const G = a.groups.length;
  const kSp = Math.min(s.specific, a.experts);
  const kSh = Math.min(s.shared, a.experts);
  invariant(kSp + kSh > 0, () => `${scope}: aesm selects no expert (the spec validator rejects this)`);
  const P = cx.op("Softmax", [a.Z], { axis: 1 }, scope, `${scope}.P`);
  const chosen: Value[] = [];
  if (kSp > 0) {
    const eps = cx.f32(s.eps);
    const q = cx.op("Add", [oneHot3, eps], {}, scope, `${scope}.q`);
    const r = cx.op("Add", [P, eps], {}, scope, `${scope}.P_eps`);
    const ratio = cx.op("Div", [q, r], {}, scope, `${scope}.sp_ratio`);
    const log = cx.op("Log", [ratio], {}, scope, `${scope}.sp_log`);
    const terms = cx.op("Mul", [q, log], {}, scope, `${scope}.sp_terms`);
    const sp = cx.op("ReduceSum", [terms], { axes: [1], keepdims: 0 }, scope, `${scope}.specific_score`);
    const [, idx] = cx.ops("TopK", [sp], { k: kSp, axis: -1, largest: 0 }, scope, [`${scope}.specific_values`, `${scope}.specific`]);
    chosen.push(idx!);
  }
  if (kSh > 0) {
    // KL(u ‖ P_e) = Σ_g u (log u − log P_ge). log P comes from LogSoftmax, not Log(Softmax):
    // where a P_ge underflows to 0 in float32, log(u / P) would be +inf for several experts
    // at once, and TopK would then pick by index where the reference ranks finite scores.
    const u = cx.f32(1 / G, `select.uniform_${G}`); // u = 1/G
    const logU = cx.f32(Math.log(1 / G), `select.log_uniform_${G}`);
    const logP = cx.op("LogSoftmax", [a.Z], { axis: 1 }, scope, `${scope}.log_P`);
    const logRatio = cx.op("Sub", [logU, logP], {}, scope, `${scope}.sh_log`);
    const terms = cx.op("Mul", [logRatio, u], {}, scope, `${scope}.sh_terms`);
    const sh = cx.op("ReduceSum", [terms], { axes: [1], keepdims: 0 }, scope, `${scope}.shared_score`);
    const [, idx] = cx.ops("TopK", [sh], { k: kSh, axis: -1, largest: 0 }, scope, [`${scope}.shared_values`, `${scope}.shared`]);
    chosen.push(idx!);
  }
  const all = chosen.length === 1 ? chosen[0]! : cx.op("Concat", chosen, { axis: 1 }, scope, `${scope}.chosen`);
  const count = expertCounts(cx, all, a.experts, scope);
  const selected = isSelected(cx, count, scope);
  if (s.mask === "masked") return maskedSoftmax(cx, Zi, selected, scope, a.name);
  const fill = cx.f32(REFERENCE_UNSELECTED, "select.reference_fill");
  const m = cx.op("Where", [selected, count, fill], {}, scope, `${scope}.multiplier`);
  const logits = cx.op("Mul", [Zi, m], {}, scope, `${scope}.masked_logits`);
  return cx.op("Softmax", [logits], { axis: 1 }, scope, a.name);
}

/** How often each expert occurs in `indices` [batch, K]: ReduceSum(OneHot(indices, E), [1]) → [batch, E] float32. */
function expertCounts(cx: Lowering, indices: Value, experts: number, scope: string): Value {
  const hot = cx.op("OneHot", [indices], { depth: experts }, scope, `${scope}.chosen_onehot`);
  return cx.op("ReduceSum", [hot], { axes: [1], keepdims: 0 }, scope, `${scope}.count`);
}

function isSelected(cx: Lowering, count: Value, scope: string): Value {
  return cx.op("Greater", [count, cx.f32(0)], {}, scope, `${scope}.selected`);
}

/** Softmax over the selected experts, exactly 0 elsewhere: Softmax(Where(mask, Zi, MASK_FILL)). */
function maskedSoftmax(cx: Lowering, Zi: Value, mask: Value, scope: string, name: string): Value {
  const fill = cx.f32(MASK_FILL, "select.mask_fill");
  const logits = cx.op("Where", [mask, Zi, fill], {}, scope, `${scope}.masked_logits`);
  return cx.op("Softmax", [logits], { axis: 1 }, scope, name);
}

/** `fixed`: allowed[g, e] = e ∈ specific[groups[g]] ∪ shared, as a bool [G, E] constant. */
function fixedTable(s: Extract<SelectSpec, { kind: "fixed" }>, groups: readonly string[], experts: number, where: string) {
  const data = new Uint8Array(groups.length * experts);
  groups.forEach((name, g) => {
    const list = [...(s.specific[name] ?? []), ...s.shared];
    for (const e of list) {
      invariant(Number.isInteger(e) && e >= 0 && e < experts, () => `${where}: fixed expert ${e} out of range [0, ${experts})`);
      data[g * experts + e] = 1;
    }
    // The validator rejects a value that selects nothing (AESM1055): its softmax would be 0/0.
    invariant(list.length > 0, () => `${where}: fixed selects no expert for ${name}`);
  });
  return { dtype: "bool" as const, shape: [groups.length, experts], data };
}
