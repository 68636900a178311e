// Closed-form AESM selection scores (MODEL.md §5): the KL divergences of the lowering,
// rewritten from the gate logits Z directly, without the Div/Log/Mul passes over [B, G, E].
//
// Exactness. Only the ranking of the scores matters (they feed TopK and nothing else; the
// pass checks that), so adding a per-row constant is exact in real arithmetic.
//   shared score    mean_g log P_ge, largest first: exact in real arithmetic (default on)
//   specific score  exact in real arithmetic (default on)
//   specific → log P[i, e]  exact only up to the eps terms (PassOptions.nearTieRewrites)
//   two gates (G = 2), both scores  exact in real arithmetic, eps included (default on): with
//                    s_e = Z[i, e] − Z[1 − i, e], the specific score is a strictly increasing
//                    function of s_e and the shared one a strictly increasing function of |s_e|,
//                    so the sets are TopK(s, largest) and TopK(|s|, smallest) — no softmax, log
//                    or reduction over the gates at all
// In float32 every rewrite rounds differently from the original, so any of them can flip a
// selection whose two boundary scores are within rounding of each other (a near-tie, which
// parity reports apart from errors). Exact ties survive: experts with identical gate columns
// get bit-identical scores, and with one gate (G = 1) every score is exactly 0 (the shared
// score, and log P = Z − LSE) or the same constant (the specific one), so TopK keeps the
// lower index first as before. The shared rewrite is also more accurate than the original
// where P underflows to 0 (the original's log(u / 0) = +inf ties those experts).

import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Match, scalarOf } from "./mixture.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** The eps terms dropped by the near-tie rewrite are at most eps·(G−1)·|log eps|; above this it is not a near-tie. */
const NEAR_TIE_BOUND = 1e-6;

const ok = <T>(value: T): Match<T> => ({ ok: true, value });
const no = <T>(why: string): Match<T> => ({ ok: false, why });

function isOp(v: Value, op: string): Node | null {
  return v.producer && v.producer.op === op ? v.producer : null;
}

/** ReduceSum over axis 1 of a rank-3 value, keepdims 0. */
function isGateSum(n: Node): boolean {
  if (n.op !== "ReduceSum" || attrInt(n.attrs, "keepdims", 1) !== 0) return false;
  const rank = n.inputs[0]!.type.shape.length;
  const axes = attrInts(n.attrs, "axes");
  return rank === 3 && axes.length === 1 && normAxis(axes[0]!, rank) === 1;
}

/** P = Softmax(Z, axis=1) over the gates, Z [B, G, E]: returns Z. */
function gateSoftmaxInput(P: Value): Value | null {
  const n = isOp(P, "Softmax");
  if (!n || n.inputs[0]!.type.shape.length !== 3 || normAxis(attrInt(n.attrs, "axis", -1), 3) !== 1) return null;
  return n.inputs[0]!;
}

/** The score's readers are TopKs over the expert axis whose values nobody reads (only their ranking matters). */
function onlyRanked(g: Graph, score: Value): Match<Node[]> {
  if (g.isGraphOutput(score)) return no("the score is a graph output");
  const tops = [...score.users];
  for (const t of tops) {
    if (t.op !== "TopK" || normAxis(attrInt(t.attrs, "axis", -1), 2) !== 1) return no(`the score is read by ${t.op}`);
    const values = t.outputs[0]!;
    if (values.users.size > 0 || g.isGraphOutput(values)) return no("a TopK's values are read");
  }
  return tops.length ? ok(tops) : no("the score is unused");
}

interface SharedScore {
  Z: Value;
}

/**
 * sh = ReduceSum(Mul(Sub(log u, LogSoftmax(Z, axis=1)), u), [1]) with u = 1/G —
 * the lowering's KL(u ‖ P_e) (lower/select.ts).
 */
function matchShared(sum: Node): Match<SharedScore> {
  const mul = isOp(sum.inputs[0]!, "Mul");
  if (!mul) return no("not a sum of products");
  const [a, b] = mul.inputs as [Value, Value];
  const [diffV, u] = scalarOf(b) !== null ? [a, b] : [b, a];
  const sub = isOp(diffV, "Sub");
  const uValue = scalarOf(u);
  if (!sub || uValue === null || scalarOf(sub.inputs[0]!) !== Math.fround(Math.log(uValue))) return no("not u·(log u − log P)");
  const ls = isOp(sub.inputs[1]!, "LogSoftmax");
  if (!ls || ls.inputs[0]!.type.shape.length !== 3 || normAxis(attrInt(ls.attrs, "axis", -1), 3) !== 1)
    return no("log P is not a log-softmax over the gates");
  const Z = ls.inputs[0]!;
  const G = Z.type.shape[1];
  if (typeof G !== "number" || uValue !== Math.fround(1 / G)) return no("u is not 1/G");
  return ok({ Z });
}

interface SpecificScore {
  Z: Value;
  /** onehot(i) [B, G, 1]. */
  onehot3: Value;
  P: Value;
  Peps: Value;
  q: Value;
  eps: number;
}

/**
 * sp = ReduceSum(Mul(q, Log(Div(q, Add(P, eps)))), [1]) with q = Add(onehot3, eps) and
 * P = Softmax(Z, axis=1) — the lowering's KL(q ‖ P_e + eps).
 */
function matchSpecific(sum: Node): Match<SpecificScore> {
  const mul = isOp(sum.inputs[0]!, "Mul");
  if (!mul) return no("not a sum of products");
  for (const [q, logV] of [mul.inputs, [...mul.inputs].reverse()] as [Value, Value][]) {
    const log = isOp(logV, "Log");
    const div = log && isOp(log.inputs[0]!, "Div");
    if (!div || div.inputs[0] !== q) continue;
    const Peps = div.inputs[1]!;
    const addP = isOp(Peps, "Add");
    const addQ = isOp(q, "Add");
    if (!addP || !addQ) return no("q or P + eps is not an Add");
    const [P, e1] = scalarOf(addP.inputs[1]!) !== null ? [addP.inputs[0]!, addP.inputs[1]!] : [addP.inputs[1]!, addP.inputs[0]!];
    const [onehot3, e2] = scalarOf(addQ.inputs[1]!) !== null ? [addQ.inputs[0]!, addQ.inputs[1]!] : [addQ.inputs[1]!, addQ.inputs[0]!];
    const eps = scalarOf(e1);
    if (eps === null || eps !== scalarOf(e2)) return no("q and P use different eps");
    const Z = gateSoftmaxInput(P);
    if (!Z) return no("P is not a softmax over the gates");
    const oh = onehot3.type.shape;
    if (oh.length !== 3 || oh[2] !== 1 || oh[1] !== Z.type.shape[1]) return no("q is not [B, G, 1]");
    return ok({ Z, onehot3, P, Peps, q, eps });
  }
  return no("not q·log(q / (P + eps))");
}

/** Per-pass state: one LSE_g Z per Z, one Z[i] per Z, one sign vector per one-hot, one s per Z. */
class Rewriter {
  private readonly lse = new Map<Value, Value>();
  private readonly signs = new Map<Value, Value>();
  /** Two-gate layers: s = Z[i] − Z[1 − i] per Z, from the specific rewrite, for the shared one. */
  readonly gateGap = new Map<Value, Value>();
  constructor(
    readonly g: Graph,
    readonly ctx: PassContext,
  ) {}

  logSumExp(Z: Value, scope: string): Value {
    let v = this.lse.get(Z);
    if (!v) {
      v = this.g.op("ReduceLogSumExp", [Z], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.lse`] });
      this.lse.set(Z, v);
    }
    return v;
  }

  /** Z[b, i_b, :] = ReduceSum(Z · onehot3, [1]): the lowering's Zi when it exists (same node), else a new one. */
  pickedLogits(Z: Value, onehot3: Value, scope: string): Value {
    for (const m of Z.users) {
      if (m.op !== "Mul" || !m.inputs.includes(onehot3)) continue;
      for (const s of m.outputs[0]!.users) if (isGateSum(s)) return s.outputs[0]!;
    }
    const picked = this.g.op("Mul", [Z, onehot3], {}, { scope, names: [`${scope}.Z_picked`] });
    return this.g.op("ReduceSum", [picked], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.Zi`] });
  }

  /**
   * shared:  sh_e = −log G − mean_g log P_ge, so the smallest sh are the largest mean log P:
   *   before  Sub(log u, LogSoftmax(Z, 1)) → Mul(·, u) → ReduceSum([1]) → TopK(largest=0)
   *   after   ReduceMean(LogSoftmax(Z, 1), [1])                      → TopK(largest=1)
   */
  shared(sum: Node, m: SharedScore, tops: Node[]): void {
    const { g } = this;
    const scope = sum.scope;
    if (m.Z.type.shape[1] === 2) return this.sharedTwoGates(sum, m, tops);
    const logP = g.op("LogSoftmax", [m.Z], { axis: 1 }, { scope, names: [`${scope}.log_P`] });
    const score = g.op("ReduceMean", [logP], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.shared_closed`] });
    for (const t of tops) {
      const [values, idx] = t.outputs as [Value, Value];
      const [, top] = g.addNode("TopK", [score], { ...t.attrs, largest: 1 }, { scope: t.scope, names: [`${values.name}.largest`, `${idx.name}.largest`] });
      g.replaceAllUsesWith(idx, top!);
    }
    bump(this.ctx, "shared-scores");
  }

  /**
   * specific: sp_e = Σ_g q_g log q_g − Σ_g q_g log(P_ge + eps); the first sum is the same for
   * every expert, so the smallest sp are the largest S_e = Σ_g q_g log(P_ge + eps):
   *   before  Div(q, P + eps) → Log → Mul(q, ·) → ReduceSum([1]) → TopK(largest=0)
   *   after   Log(P + eps) → Mul(q, ·) → ReduceSum([1])          → TopK(largest=1)
   * With nearTieRewrites, and eps·(G−1)·|log eps| ≤ 1e-6: S_e = (1 + eps)·log(P_ie + eps) +
   * O(eps·(G−1)·|log eps|), monotone in P_ie but for those terms, so rank log P_ie instead:
   *   after   Sub(Zi, ReduceLogSumExp(Z, [1]))                   → TopK(largest=1)
   * (no Softmax over [B, G, E] left when the shared score is rewritten too).
   */
  specific(sum: Node, m: SpecificScore, tops: Node[]): void {
    const { g, ctx } = this;
    const scope = sum.scope;
    const G = m.Z.type.shape[1] as number;
    if (G === 2) return this.specificTwoGates(sum, m, tops);
    let score: Value;
    const dropped = m.eps * Math.max(G - 1, 0) * Math.abs(Math.log(m.eps));
    if (ctx.options.nearTieRewrites && dropped <= NEAR_TIE_BOUND) {
      const Zi = this.pickedLogits(m.Z, m.onehot3, scope);
      score = g.op("Sub", [Zi, this.logSumExp(m.Z, scope)], {}, { scope, names: [`${scope}.log_p_picked`] });
      bump(ctx, "near-tie-rewrites");
    } else {
      if (ctx.options.nearTieRewrites) bump(ctx, "near-tie-skipped-large-eps");
      const log = g.op("Log", [m.Peps], {}, { scope, names: [`${scope}.log_P_eps`] });
      const terms = g.op("Mul", [m.q, log], {}, { scope, names: [`${scope}.sp_closed_terms`] });
      score = g.op("ReduceSum", [terms], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.specific_closed`] });
    }
    for (const t of tops) {
      const [values, idx] = t.outputs as [Value, Value];
      const [, top] = g.addNode("TopK", [score], { ...t.attrs, largest: 1 }, { scope: t.scope, names: [`${values.name}.largest`, `${idx.name}.largest`] });
      g.replaceAllUsesWith(idx, top!);
    }
    bump(ctx, "specific-scores");
  }

  /** σ = 2·onehot3 − 1 [B, 2, 1]: +1 at the row's own gate, −1 at the other (exact in float32). */
  private signOf(onehot3: Value, scope: string): Value {
    let v = this.signs.get(onehot3);
    if (!v) {
      const twice = this.g.op("Add", [onehot3, onehot3], {}, { scope, names: [`${scope}.onehot_x2`] });
      v = this.g.op("Sub", [twice, this.g.addConstant(`${scope}.one`, { dtype: "float32", shape: [], data: Float32Array.of(1) })], {}, { scope, names: [`${scope}.gate_sign`] });
      this.signs.set(onehot3, v);
    }
    return v;
  }

  /**
   * specific, two gates: with s_e = Z[i, e] − Z[1 − i, e], P[i, e] = σ(s_e) and
   *   S_e = (1 + eps)·log(σ(s_e) + eps) + eps·log(1 − σ(s_e) + eps),
   *   dS/ds = σ'(s)·(1 + 2·eps)·(1 − σ(s)) / ((σ(s) + eps)·(1 − σ(s) + eps)) > 0,
   * so the largest S are the largest s (exact, eps included; ties stay ties):
   *   before  Softmax(Z, 1) → Add(eps) → Div → Log → Mul(q, ·) → ReduceSum([1]) → TopK(largest=0)
   *   after   ReduceSum(Z · σ, [1]) with σ = 2·onehot3 − 1         → TopK(largest=1)
   * Z·σ sums ±Z exactly, so s is Z[i] − Z[1 − i] rounded once.
   */
  private specificTwoGates(sum: Node, m: SpecificScore, tops: Node[]): void {
    const { g, ctx } = this;
    const scope = sum.scope;
    const signed = g.op("Mul", [m.Z, this.signOf(m.onehot3, scope)], {}, { scope, names: [`${scope}.Z_signed`] });
    const s = g.op("ReduceSum", [signed], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.gate_gap`] });
    this.gateGap.set(m.Z, s);
    for (const t of tops) {
      const [values, idx] = t.outputs as [Value, Value];
      const [, top] = g.addNode("TopK", [s], { ...t.attrs, largest: 1 }, { scope: t.scope, names: [`${values.name}.largest`, `${idx.name}.largest`] });
      g.replaceAllUsesWith(idx, top!);
    }
    bump(ctx, "two-gate-scores");
  }

  /**
   * shared, two gates: KL(u ‖ P_e) = −log 2 + (|d_e| + 2·log(1 + exp(−|d_e|)))/2 with
   * d_e = Z[0, e] − Z[1, e], strictly increasing in |d_e| = |s_e|:
   *   before  Sub(log u, LogSoftmax(Z, 1)) → Mul(·, u) → ReduceSum([1]) → TopK(largest=0)
   *   after   Abs(s) (s of the specific rewrite, else ReduceSum(Z · [1, −1], [1])) → TopK(largest=0)
   */
  private sharedTwoGates(sum: Node, m: SharedScore, tops: Node[]): void {
    const { g, ctx } = this;
    const scope = sum.scope;
    let d = this.gateGap.get(m.Z);
    if (!d) {
      const sign = g.addConstant(`${scope}.gate_sign`, { dtype: "float32", shape: [1, 2, 1], data: Float32Array.of(1, -1) });
      const signed = g.op("Mul", [m.Z, sign], {}, { scope, names: [`${scope}.Z_signed`] });
      d = g.op("ReduceSum", [signed], { axes: [1], keepdims: 0 }, { scope, names: [`${scope}.gate_gap`] });
    }
    const score = g.op("Abs", [d], {}, { scope, names: [`${scope}.gate_gap_abs`] });
    for (const t of tops) g.setNodeInput(t, 0, score);
    bump(ctx, "two-gate-scores");
  }
}

export const selectClosedForm: Pass = {
  id: "select-closed-form",
  summary: "rank the AESM selection scores in closed form from the gate logits (log-sum-exp, mean)",
  run(graph: Graph, ctx) {
    const rw = new Rewriter(graph, ctx);
    let changed = false;
    // Specific scores first: a two-gate shared score reuses the specific one's gate gap.
    const specifics: [Node, SpecificScore, Node[]][] = [];
    const shareds: [Node, SharedScore, Node[]][] = [];
    for (const sum of [...graph.nodes]) {
      if (!isGateSum(sum)) continue;
      const score = sum.outputs[0]!;
      const shared = matchShared(sum);
      const specific = shared.ok ? null : matchSpecific(sum);
      if (!shared.ok && !specific!.ok) continue; // some other sum over the gates (Zi)
      const tops = onlyRanked(graph, score);
      if (!tops.ok) {
        bump(ctx, `skipped: ${tops.why}`);
        continue;
      }
      if (shared.ok) shareds.push([sum, shared.value, tops.value]);
      else if (specific!.ok) specifics.push([sum, specific!.value, tops.value]);
    }
    for (const [sum, m, tops] of specifics) rw.specific(sum, m, tops);
    for (const [sum, m, tops] of shareds) rw.shared(sum, m, tops);
    changed = specifics.length + shareds.length > 0;
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
