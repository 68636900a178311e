// The selection policies of MODEL.md §5 (and the §7 reference mask), one row at a time:
// gate logits Z[G, E] and the row's scenario or task index in, mixing weights w[E] out.

import type { SelectSpec } from "../dsl/spec.ts";
import { assertNever } from "../core/diagnostics.ts";

/** Rounding to float32 in the emulated mode, the identity in float64. */
const rnd32 = Math.fround;
const keep = (x: number): number => x;

/** A policy with everything that does not depend on the row resolved. */
export type SelectionPolicy =
  | { kind: "aesm"; specific: number; shared: number; mask: "masked" | "reference"; constants: AesmConstants }
  | { kind: "all" }
  | { kind: "topK"; k: number }
  /** `allowed[i·E + e]` = 1 when expert e is in specific[value i] ∪ shared. */
  | { kind: "fixed"; allowed: Uint8Array };

/**
 * The constants of the AESM scores for G gates (MODEL.md §5), in the evaluation's precision:
 * eps, u = 1/G and log u, q_hot = 1 + eps (q at the row's own index) and log q_hot, log eps.
 */
interface AesmConstants {
  eps: number;
  u: number;
  logU: number;
  qHot: number;
  logQHot: number;
  logEps: number;
}

function aesmConstants(eps: number, G: number, f32: boolean): AesmConstants {
  const r = f32 ? rnd32 : keep;
  const epsR = r(eps);
  const u = r(1 / G);
  const qHot = r(1 + epsR);
  return { eps: epsR, u, logU: r(Math.log(u)), qHot, logQHot: r(Math.log(qHot)), logEps: r(Math.log(epsR)) };
}

/**
 * Resolve a policy for a layer whose selection indices are named `indexNames` (scenario
 * values, or task names for task layers), for a float64 or emulated-float32 evaluation.
 * Experts named in `fixed` outside [0, E) are the validator's to reject; here they are ignored.
 */
export function resolvePolicy(
  select: SelectSpec,
  indexNames: readonly string[],
  experts: number,
  f32: boolean,
): SelectionPolicy {
  switch (select.kind) {
    case "aesm": {
      const { specific, shared, mask } = select;
      return { kind: "aesm", specific, shared, mask, constants: aesmConstants(select.eps, indexNames.length, f32) };
    }
    case "all":
      return { kind: "all" };
    case "topK":
      return { kind: "topK", k: select.k };
    case "fixed": {
      const allowed = new Uint8Array(indexNames.length * experts);
      indexNames.forEach((name, i) => {
        for (const e of [...(select.specific[name] ?? []), ...select.shared])
          if (Number.isInteger(e) && e >= 0 && e < experts) allowed[i * experts + e] = 1;
      });
      return { kind: "fixed", allowed };
    }
    default:
      return assertNever(select, "selection policy");
  }
}

/** Per-layer scratch buffers, so that selecting a row allocates nothing. */
export class SelectionScratch {
  readonly specificScore: Float64Array;
  readonly sharedScore: Float64Array;
  readonly specificOrder: Int32Array;
  readonly sharedOrder: Int32Array;
  /** Multiplicity of each expert in the selected set(s): 0, 1, or 2 (aesm, in both sets). */
  readonly count: Uint8Array;
  readonly logit: Float64Array;
  readonly prob: Float64Array; // P[g] for one expert
  readonly logProb: Float64Array; // log P[g] for one expert
  constructor(
    readonly gates: number,
    readonly experts: number,
  ) {
    this.specificScore = new Float64Array(experts);
    this.sharedScore = new Float64Array(experts);
    this.specificOrder = new Int32Array(experts);
    this.sharedOrder = new Int32Array(experts);
    this.count = new Uint8Array(experts);
    this.logit = new Float64Array(experts);
    this.prob = new Float64Array(gates);
    this.logProb = new Float64Array(gates);
  }
}

/**
 * Fill `order` with 0..E−1 sorted by (score, index) ascending: insertion sort is stable, so
 * equal scores keep the lower expert index first (MODEL.md §5, "ties go to the lower index").
 */
export function rankAscending(score: Float64Array, order: Int32Array): void {
  const n = order.length;
  for (let i = 0; i < n; i++) {
    const e = i;
    const s = score[e]!;
    let j = i - 1;
    while (j >= 0 && score[order[j]!]! > s) {
      order[j + 1] = order[j]!;
      j--;
    }
    order[j + 1] = e;
  }
}

/**
 * The first min(k + 1, E) entries of rankAscending's order (the k smallest, then the next one
 * for the margin), without sorting the rest: a stable insertion into a list of k + 1, which
 * a later expert enters only with a strictly smaller score. Returns false, leaving `order`
 * unspecified, when a score is NaN: rankAscending's order then depends on where the NaN lies,
 * so the caller ranks in full.
 */
export function rankSmallest(score: Float64Array, E: number, k: number, order: Int32Array): boolean {
  const keep = Math.min(k + 1, E);
  let n = 0;
  for (let e = 0; e < E; e++) {
    const x = score[e]!;
    if (x !== x) return false;
    if (n === keep && !(x < score[order[n - 1]!]!)) continue;
    let j = n < keep ? n++ : n - 1;
    while (j > 0 && x < score[order[j - 1]!]!) {
      order[j] = order[j - 1]!;
      j--;
    }
    order[j] = e;
  }
  return true;
}

/** Gap between the last selected and the first unselected score of a ranking; Infinity if no boundary. */
function boundaryGap(score: Float64Array, order: Int32Array, k: number): number {
  if (k <= 0 || k >= order.length) return Infinity;
  return Math.abs(score[order[k]!]! - score[order[k - 1]!]!);
}

/**
 * w[e] ∝ exp(z[e]) over the experts with `member[e] ≠ 0`, 0 elsewhere; stable (the max over
 * the set is subtracted first). An empty set gives all-zero weights.
 */
function softmaxOver(
  z: Float64Array,
  zOff: number,
  member: Uint8Array,
  memberOff: number,
  E: number,
  f32: boolean,
  w: Float64Array,
  wOff: number,
): void {
  if (f32) softmaxOver32(z, zOff, member, memberOff, E, w, wOff);
  else softmaxOver64(z, zOff, member, memberOff, E, w, wOff);
}

// The float64 and emulated-float32 programs are written out separately (the same steps, the
// float32 one rounding each), so that neither pays for the other's rounding calls.

function softmaxOver64(z: Float64Array, zOff: number, member: Uint8Array, memberOff: number, E: number, w: Float64Array, wOff: number): void {
  let max = -Infinity;
  for (let e = 0; e < E; e++) if (member[memberOff + e] && z[zOff + e]! > max) max = z[zOff + e]!;
  let sum = 0;
  for (let e = 0; e < E; e++) {
    if (!member[memberOff + e]) {
      w[wOff + e] = 0;
      continue;
    }
    const d = z[zOff + e]! - max;
    const x = d === 0 ? 1 : Math.exp(d); // exp(±0) is exactly 1
    w[wOff + e] = x;
    sum = sum + x;
  }
  if (sum === 0) return; // empty set: leave zeros
  for (let e = 0; e < E; e++) if (member[memberOff + e]) w[wOff + e] = w[wOff + e]! / sum;
}

function softmaxOver32(z: Float64Array, zOff: number, member: Uint8Array, memberOff: number, E: number, w: Float64Array, wOff: number): void {
  const r = rnd32;
  let max = -Infinity;
  for (let e = 0; e < E; e++) if (member[memberOff + e] && z[zOff + e]! > max) max = z[zOff + e]!;
  let sum = 0;
  for (let e = 0; e < E; e++) {
    if (!member[memberOff + e]) {
      w[wOff + e] = 0;
      continue;
    }
    const d = r(z[zOff + e]! - max);
    const x = d === 0 ? 1 : r(Math.exp(d));
    w[wOff + e] = x;
    sum = r(sum + x);
  }
  if (sum === 0) return; // empty set: leave zeros
  for (let e = 0; e < E; e++) if (member[memberOff + e]) w[wOff + e] = r(w[wOff + e]! / sum);
}

/**
 * AESM scores of every expert (MODEL.md §5), with P = softmax over the G gates of Z[:, e]:
 *   specific sp_e = Σ_g q_g·log(q_g / (P[g,e] + eps)),  q = onehot(index) + eps (not renormalised)
 *   shared   sh_e = Σ_g u·(log u − log P[g,e]),         u = 1/G
 * log P is taken as the log-softmax (z − max) − log Σ exp(z − max), the same number as
 * log(P) but finite where P underflows to 0.
 */
function aesmScores(
  z: Float64Array,
  zOff: number,
  G: number,
  E: number,
  index: number,
  c: AesmConstants,
  f32: boolean,
  s: SelectionScratch,
): void {
  if (f32) aesmScores32(z, zOff, G, E, index, c, s);
  else aesmScores64(z, zOff, G, E, index, c, s);
}

function aesmScores64(z: Float64Array, zOff: number, G: number, E: number, index: number, c: AesmConstants, s: SelectionScratch): void {
  const { eps, u, logU, qHot, logQHot, logEps } = c;
  const { prob, logProb } = s;
  for (let e = 0; e < E; e++) {
    let max = -Infinity;
    for (let g = 0; g < G; g++) if (z[zOff + g * E + e]! > max) max = z[zOff + g * E + e]!;
    let sum = 0;
    for (let g = 0; g < G; g++) {
      const d = z[zOff + g * E + e]! - max;
      logProb[g] = d;
      const x = d === 0 ? 1 : Math.exp(d); // exp(±0) is exactly 1: the max gate costs no exp
      prob[g] = x;
      sum = sum + x;
    }
    const logSum = Math.log(sum);
    let sp = 0;
    let sh = 0;
    for (let g = 0; g < G; g++) {
      const p = prob[g]! / sum;
      const logP = logProb[g]! - logSum;
      const q = g === index ? qHot : eps;
      const logQ = g === index ? logQHot : logEps;
      // q·log(q/(P+eps)) written as q·(log q − log(P+eps)), both logs of float-exact operands
      sp = sp + q * (logQ - Math.log(p + eps));
      sh = sh + u * (logU - logP);
    }
    s.specificScore[e] = sp;
    s.sharedScore[e] = sh;
  }
}

function aesmScores32(z: Float64Array, zOff: number, G: number, E: number, index: number, c: AesmConstants, s: SelectionScratch): void {
  const r = rnd32;
  const { eps: epsR, u, logU, qHot, logQHot, logEps } = c;
  const { prob, logProb } = s;
  for (let e = 0; e < E; e++) {
    let max = -Infinity;
    for (let g = 0; g < G; g++) if (z[zOff + g * E + e]! > max) max = z[zOff + g * E + e]!;
    let sum = 0;
    for (let g = 0; g < G; g++) {
      const d = r(z[zOff + g * E + e]! - max);
      logProb[g] = d;
      const x = d === 0 ? 1 : r(Math.exp(d));
      prob[g] = x;
      sum = r(sum + x);
    }
    const logSum = r(Math.log(sum));
    let sp = 0;
    let sh = 0;
    for (let g = 0; g < G; g++) {
      const p = r(prob[g]! / sum);
      const logP = r(logProb[g]! - logSum);
      const q = g === index ? qHot : epsR;
      const logQ = g === index ? logQHot : logEps;
      sp = r(sp + r(q * r(logQ - r(Math.log(r(p + epsR))))));
      sh = r(sh + r(u * r(logU - logP)));
    }
    s.specificScore[e] = sp;
    s.sharedScore[e] = sh;
  }
}

/**
 * Select one row: write w[E] at `wOff` and the selected set A (0/1) at `selOff`, return
 * the ranking margin (see LayerTrace.margin). `z` holds Z[B, G, E]; this row's Z starts at `zOff`.
 */
export function selectRow(
  policy: SelectionPolicy,
  z: Float64Array,
  zOff: number,
  index: number,
  f32: boolean,
  s: SelectionScratch,
  w: Float64Array,
  wOff: number,
  selected: Uint8Array,
  selOff: number,
): number {
  const G = s.gates;
  const E = s.experts;
  const rowZ = zOff + index * E; // Z[index, :], the logits the weights use
  const count = s.count;
  switch (policy.kind) {
    case "all":
      count.fill(1);
      softmaxOver(z, rowZ, count, 0, E, f32, w, wOff);
      selected.fill(1, selOff, selOff + E);
      return Infinity;
    case "fixed":
      softmaxOver(z, rowZ, policy.allowed, index * E, E, f32, w, wOff);
      for (let e = 0; e < E; e++) selected[selOff + e] = policy.allowed[index * E + e]!;
      return Infinity;
    case "topK": {
      // rank by −z ascending = z descending, ties to the lower index
      for (let e = 0; e < E; e++) s.specificScore[e] = -z[rowZ + e]!;
      rankAscending(s.specificScore, s.specificOrder);
      const k = Math.min(policy.k, E);
      count.fill(0);
      for (let j = 0; j < k; j++) count[s.specificOrder[j]!] = 1;
      softmaxOver(z, rowZ, count, 0, E, f32, w, wOff);
      for (let e = 0; e < E; e++) selected[selOff + e] = count[e]!;
      return boundaryGap(s.specificScore, s.specificOrder, k);
    }
    case "aesm": {
      aesmScores(z, zOff, G, E, index, policy.constants, f32, s);
      const kSp = Math.min(policy.specific, E);
      const kSh = Math.min(policy.shared, E);
      // only the selected experts and the first one left out are ranked (the margin's two scores)
      if (!rankSmallest(s.specificScore, E, kSp, s.specificOrder)) rankAscending(s.specificScore, s.specificOrder);
      if (!rankSmallest(s.sharedScore, E, kSh, s.sharedOrder)) rankAscending(s.sharedScore, s.sharedOrder);
      for (let e = 0; e < E; e++) count[e] = 0;
      for (let j = 0; j < kSp; j++) count[s.specificOrder[j]!]! += 1;
      for (let j = 0; j < kSh; j++) count[s.sharedOrder[j]!]! += 1;
      for (let e = 0; e < E; e++) selected[selOff + e] = (count[e]! + 1) >> 1; // 0 → 0; 1, 2 → 1
      if (policy.mask === "masked") {
        // A = SP ∪ SH: an expert in both sets counts once
        softmaxOver(z, rowZ, selected, selOff, E, f32, w, wOff);
      } else {
        // §7: the TF code multiplies logits by m_e = [e∈SP] + [e∈SH], or −1e9 when 0, then
        // takes a softmax over all E: doubled logits for experts in both sets, and a
        // negative unselected logit flips to a huge positive one.
        const r = f32 ? rnd32 : keep;
        for (let e = 0; e < E; e++) s.logit[e] = r(z[rowZ + e]! * (count[e]! > 0 ? count[e]! : -1e9));
        count.fill(1);
        softmaxOver(s.logit, 0, count, 0, E, f32, w, wOff);
      }
      return Math.min(
        boundaryGap(s.specificScore, s.specificOrder, kSp),
        boundaryGap(s.sharedScore, s.sharedOrder, kSh),
      );
    }
    default:
      return assertNever(policy, "selection policy");
  }
}
