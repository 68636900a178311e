// Comparison metrics: per output (absolute, relative and ULP errors, NaN/Inf, the tolerance
// that would have passed, a log-decade histogram, worst rows, RMSE against float32 noise) and
// per expert layer (selected-set agreement, with near-ties told apart from disagreements).

import type { Tolerance } from "./tolerance.ts";

/** max, mean, and nearest-rank median and 99th percentile. */
export interface ErrorStats {
  max: number;
  mean: number;
  median: number;
  p99: number;
}

export interface WorstRow {
  row: number;
  reference: number;
  candidate: number;
  abs: number;
  rel: number;
  ulp: number;
  /** Scenario value of the row per level (filled in by the run, which knows the batch). */
  scenario?: Record<string, string>;
}

/** torch.compile-style accuracy: is the candidate's error within float32's own noise? */
export interface RmseCheck {
  /** Rows the check covered (the float32 reference's rows, less near-tie rows). */
  rows: number;
  /** RMSE of the candidate against the float64 reference. */
  candidate: number;
  /** RMSE of the float32 reference evaluation against the float64 reference. */
  fp32: number;
  multiplier: number;
  /** Absolute floor added to the bound: atol / 10. */
  floor: number;
  /** multiplier · fp32 + floor. */
  bound: number;
  pass: boolean;
}

export interface OutputMetrics {
  name: string;
  tolerance: Tolerance;
  /** Elements compared (one per row). */
  count: number;
  /** Elements judged: count less near-tie rows. */
  checked: number;
  /** Judged elements whose absolute AND relative errors exceed tolerance, or with a non-finite mismatch. */
  failures: number;
  /** failures === 0 and (when present) the RMSE check passes. */
  pass: boolean;
  abs: ErrorStats;
  rel: ErrorStats;
  /** Distance in float32 ULPs between the candidate and the baseline rounded to float32. */
  ulp: ErrorStats;
  /** NaN and ±Inf values in the candidate. */
  nan: number;
  inf: number;
  /** Judged elements where the two sides are not the same non-finite value while one is non-finite. */
  nonFiniteMismatches: number;
  /** Smallest atol that passes every judged element at this rtol (Infinity on a non-finite mismatch). */
  minPassingAtol: number;
  /** Smallest rtol that passes every judged element at this atol. */
  minPassingRtol: number;
  /** Counts of judged, finite absolute errors per HISTOGRAM_BUCKETS entry. */
  histogram: number[];
  /**
   * Rows excused from judgement, their errors reported here: a selection flipped on a near-tie
   * (nearTieRows), or float32 itself cannot reproduce the float64 reference there (float32Rows:
   * the float32 reference evaluation flips a layer feeding this output, or the element fails and
   * is float32-limited, see float32Limited).
   */
  excused: { rows: number; nearTieRows: number; float32Rows: number; failures: number; maxAbs: number };
  rmse?: RmseCheck;
  /** Largest absolute errors among judged elements, non-finite mismatches first. */
  worst: WorstRow[];
}

/** Bucket edges of the absolute-error histogram: 0, then decades from below 1e-12 to 1e-2 and above. */
export const HISTOGRAM_DECADES = { from: -12, to: -2 } as const;

/** Labels of the histogram buckets: "0", "<1e-12", "1e-12..1e-11", …, "1e-3..1e-2", "≥1e-2". */
export const HISTOGRAM_BUCKETS: readonly string[] = (() => {
  const out = ["0", `<1e${HISTOGRAM_DECADES.from}`];
  for (let d = HISTOGRAM_DECADES.from; d < HISTOGRAM_DECADES.to; d++) out.push(`1e${d}..1e${d + 1}`);
  out.push(`≥1e${HISTOGRAM_DECADES.to}`);
  return out;
})();

/** 10 ** k for the decades of the histogram, k = from … to + 1 (`10 ** k` as evaluated at run time). */
const POWERS_OF_TEN: readonly number[] = (() => {
  const out: number[] = [];
  for (let k = HISTOGRAM_DECADES.from; k <= HISTOGRAM_DECADES.to + 1; k++) out.push(10 ** k);
  return out;
})();

/** Bucket index of an absolute error (finite, ≥ 0). */
export function histogramBucket(abs: number): number {
  if (abs === 0) return 0;
  const d = Math.floor(Math.log10(abs));
  if (d < HISTOGRAM_DECADES.from) return 1;
  if (d >= HISTOGRAM_DECADES.to) return HISTOGRAM_BUCKETS.length - 1;
  // log10 can land a hair below an exact power of ten; the bucket is [1e d, 1e d+1)
  const k = abs >= POWERS_OF_TEN[d + 1 - HISTOGRAM_DECADES.from]! ? d + 1 : d;
  return Math.min(2 + k - HISTOGRAM_DECADES.from, HISTOGRAM_BUCKETS.length - 1);
}

const f32Scratch = new Float32Array(1);
const i32Scratch = new Int32Array(f32Scratch.buffer);

/** Position of a float32 on the integer line where adjacent floats differ by 1 (−0 = +0). */
function orderedBits(x: number): number {
  f32Scratch[0] = x;
  const b = i32Scratch[0]!;
  return b < 0 ? -(b & 0x7fffffff) : b;
}

/** Float32 ULPs between `candidate` and `reference` rounded to float32 (both finite). */
export function ulpDistance(reference: number, candidate: number): number {
  return Math.abs(orderedBits(Math.fround(candidate)) - orderedBits(Math.fround(reference)));
}

/** Relative error |a − b| / |a|; 0/0 = 0 and x/0 = Infinity. */
export function relativeError(reference: number, abs: number): number {
  if (abs === 0) return 0;
  return reference !== 0 ? abs / Math.abs(reference) : Infinity;
}

/**
 * The pass rule for one element: it fails when |x − ref| > atol AND |x − ref| / |ref| > rtol,
 * i.e. when |x − ref| > max(atol, rtol·|ref|); a non-finite value on either side fails unless
 * both sides are the same NaN or the same infinity.
 */
export function exceedsTolerance(reference: number, value: number, tolerance: Tolerance): boolean {
  if (!Number.isFinite(reference) || !Number.isFinite(value))
    return !(reference === value || (Number.isNaN(reference) && Number.isNaN(value)));
  const abs = Math.abs(reference - value);
  return abs > tolerance.atol && relativeError(reference, abs) > tolerance.rtol;
}

/** The float32-limited rule takes a tenth of the tolerance: see float32Limited. */
export const FLOAT32_LIMITED_DIVISOR = 10;

/**
 * Whether float32 arithmetic itself cannot be held to `tolerance` on this element: the float32
 * evaluation of the reference strays from the float64 value by more than a tenth of the
 * tolerance that applies there, max(atol, rtol·|ref|) / 10 (the element exceeds atol/10 and
 * rtol/10), or is non-finite where float64 is not. One rule for the parity harness and the
 * fuzzer. Why a tenth: the emulation is one float32 evaluation order; on an ill-conditioned row
 * (gates saturated by extreme inputs, large logits whose differences are small) another order
 * strays several times as far (seen: 2.6e-6 emulated against 2.0e-5 on onnxruntime and 1.1e-5
 * in the interpreter), while on a well-conditioned row the emulation stays near 1e-7 for
 * outputs near 0.5, far below atol/10 at the float32 default atol 1e-5.
 */
export function float32Limited(reference: number, float32: number, tolerance: Tolerance): boolean {
  return exceedsTolerance(reference, float32, {
    atol: tolerance.atol / FLOAT32_LIMITED_DIVISOR,
    rtol: tolerance.rtol / FLOAT32_LIMITED_DIVISOR,
  });
}

/** Why a row's output errors are not judged. */
export const EXCUSED_NEAR_TIE = 1;
export const EXCUSED_FLOAT32 = 2;

/**
 * Reorder v[lo..hi] so that v[k] holds the value an ascending sort would put there, with no
 * larger value before it and no smaller one after (quickselect, Hoare partition around a
 * median of three; no NaN in v). Equal values split evenly, so runs of zeros stay linear; a
 * range that does not shrink fast enough is sorted instead.
 */
export function selectKth(v: Float64Array, lo: number, hi: number, k: number): void {
  let partitions = 2 * Math.ceil(Math.log2(hi - lo + 2)) + 8;
  while (hi > lo) {
    if (partitions-- === 0) {
      v.subarray(lo, hi + 1).sort();
      return;
    }
    const a = v[lo]!;
    const b = v[lo + ((hi - lo) >> 1)]!;
    const c = v[hi]!;
    const pivot = a < b ? (b < c ? b : a < c ? c : a) : a < c ? a : b < c ? c : b;
    let i = lo;
    let j = hi;
    while (i <= j) {
      while (v[i]! < pivot) i++;
      while (v[j]! > pivot) j--;
      if (i <= j) {
        const t = v[i]!;
        v[i++] = v[j]!;
        v[j--] = t;
      }
    }
    // v[lo..j] ≤ pivot, v[j+1..i-1] = pivot, v[i..hi] ≥ pivot
    if (k <= j) hi = j;
    else if (k >= i) lo = i;
    else return;
  }
}

/**
 * Stats of `values[0..n)` (no NaN); reorders that prefix in place. Median and p99 are the
 * nearest-rank values of a full sort, found by selection; the mean sums in index order.
 */
export function errorStats(values: Float64Array, n: number): ErrorStats {
  if (n === 0) return { max: 0, mean: 0, median: 0, p99: 0 };
  const v = values.subarray(0, n);
  let sum = 0;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const x = v[i]!;
    sum += x;
    if (x > max) max = x;
  }
  const rank = (q: number) => Math.max(0, Math.ceil(q * n) - 1);
  const median = rank(0.5);
  const p99 = rank(0.99);
  selectKth(v, 0, n - 1, median);
  selectKth(v, median, n - 1, p99); // v[median..] now holds the values from the median up
  return { max, mean: sum / n, median: v[median]!, p99: v[p99]! };
}

/**
 * Grow-only scratch arrays for the comparisons' large temporaries: comparisons run one at a
 * time, and a fresh array per call would zero-fill megabytes and keep the collector busy.
 * A scratch array's contents are left from its last use: callers write before they read.
 */
const scratch = { f64: [] as Float64Array[], i32: [] as Int32Array[] };

function scratchFloat64(slot: number, n: number): Float64Array {
  if ((scratch.f64[slot]?.length ?? -1) < n) scratch.f64[slot] = new Float64Array(n);
  return scratch.f64[slot]!.subarray(0, n);
}

function scratchInt32(slot: number, n: number): Int32Array {
  if ((scratch.i32[slot]?.length ?? -1) < n) scratch.i32[slot] = new Int32Array(n);
  return scratch.i32[slot]!.subarray(0, n);
}

export interface CompareOutputInput {
  name: string;
  /** The baseline: the float64 reference, or another run. */
  reference: ArrayLike<number>;
  candidate: ArrayLike<number>;
  tolerance: Tolerance;
  /** Per row, why its errors are excused (EXCUSED_NEAR_TIE, EXCUSED_FLOAT32) or 0: reported in `excused`, not judged. */
  excused?: Uint8Array;
  /** How many worst rows to keep (default 5). */
  worst?: number;
}

/** One output (one value per row) against its baseline. */
export function compareOutput(input: CompareOutputInput): OutputMetrics {
  const { name, reference: ref, candidate: got, tolerance, excused } = input;
  const { atol, rtol } = tolerance;
  const keep = Math.max(0, input.worst ?? 5);
  const n = Math.min(ref.length, got.length);
  // judged elements with both sides finite, packed in row order; every other row listed apart
  const absV = scratchFloat64(0, n);
  const relV = scratchFloat64(1, n);
  const ulpV = scratchFloat64(2, n);
  const rowOf = scratchInt32(0, n);
  const others = scratchInt32(1, n);
  const k = packErrors(ref, got, n, excused ?? null, absV, relV, ulpV, rowOf, others);
  const buckets = new Float64Array(HISTOGRAM_BUCKETS.length);
  countBuckets(absV, k, buckets);
  const histogram = Array.from(buckets);
  let failures = countBeyond(absV, relV, k, atol, rtol);
  // an element passes at atol' ≥ abs (when rel > rtol) or at rtol' ≥ rel (when abs > atol)
  let minAtol = maxWhereOtherExceeds(absV, relV, k, rtol);
  let minRtol = maxWhereOtherExceeds(relV, absV, k, atol);
  const nan = countNaN(got, n);
  const inf = countInfinite(got, n);
  let checked = k;
  let nonFiniteMismatches = 0;
  const excusedStats = { rows: 0, nearTieRows: 0, float32Rows: 0, failures: 0, maxAbs: 0 };
  // worst rows: the largest errors, earlier rows first among equal ones; non-finite mismatches count as ∞
  const worst: WorstRow[] = [];
  const top = new Int32Array(keep);
  const topCount = largestFirst(absV, k, top);
  for (let j = 0; j < topCount; j++) {
    const i = top[j]!;
    const r = rowOf[i]!;
    worst.push({ row: r, reference: ref[r]!, candidate: got[r]!, abs: absV[i]!, rel: relV[i]!, ulp: ulpV[i]! });
  }
  let infiniteWorst = 0;
  for (let j = 0; j < n - k; j++) {
    const r = others[j]!;
    const a = ref[r]!;
    const b = got[r]!;
    const why = excused ? excused[r]! : 0;
    if (why !== 0) {
      excusedStats.rows++;
      if (why === EXCUSED_NEAR_TIE) excusedStats.nearTieRows++;
      else excusedStats.float32Rows++;
    }
    if (!Number.isFinite(a) || !Number.isFinite(b)) {
      // the same NaN or the same infinity on both sides is agreement
      const same = (Number.isNaN(a) && Number.isNaN(b)) || a === b;
      if (why !== 0) {
        if (!same) {
          excusedStats.failures++;
          excusedStats.maxAbs = Infinity;
        }
        continue;
      }
      checked++;
      if (!same) {
        nonFiniteMismatches++;
        failures++;
        minAtol = Infinity;
        minRtol = Infinity;
        if (infiniteWorst++ < keep) worst.push({ row: r, reference: a, candidate: b, abs: Infinity, rel: Infinity, ulp: Infinity });
      }
      continue;
    }
    // an excused row with both sides finite
    const abs = Math.abs(a - b);
    if (abs > atol && relativeError(a, abs) > rtol) excusedStats.failures++;
    if (abs > excusedStats.maxAbs) excusedStats.maxAbs = abs;
  }
  worst.sort((x, y) => y.abs - x.abs || x.row - y.row);
  worst.length = Math.min(worst.length, keep);
  // a length mismatch is a failure of every missing element
  const missing = Math.abs(ref.length - got.length);
  failures += missing;
  return {
    name,
    tolerance: { ...tolerance },
    count: n,
    checked,
    failures,
    pass: failures === 0,
    abs: errorStats(absV, k),
    rel: errorStats(relV, k),
    ulp: errorStats(ulpV, k),
    nan,
    inf,
    nonFiniteMismatches,
    minPassingAtol: minAtol,
    minPassingRtol: minRtol,
    histogram,
    excused: excusedStats,
    worst,
  };
}

// The kernels of compareOutput: one plain loop each, so that each is compiled whole and early.

/**
 * Absolute, relative and ULP errors of the judged elements with both sides finite, packed in
 * row order (rowOf: their rows); the rows left (excused, or a side not finite) go to `others`.
 * Returns how many were packed.
 */
function packErrors(
  ref: ArrayLike<number>,
  got: ArrayLike<number>,
  n: number,
  excused: Uint8Array | null,
  absV: Float64Array,
  relV: Float64Array,
  ulpV: Float64Array,
  rowOf: Int32Array,
  others: Int32Array,
): number {
  let k = 0;
  let m = 0;
  for (let r = 0; r < n; r++) {
    const a = ref[r]!;
    const b = got[r]!;
    if ((excused !== null && excused[r] !== 0) || !Number.isFinite(a) || !Number.isFinite(b)) {
      others[m++] = r;
      continue;
    }
    const abs = Math.abs(a - b);
    absV[k] = abs;
    relV[k] = relativeError(a, abs);
    ulpV[k] = ulpDistance(a, b);
    rowOf[k] = r;
    k++;
  }
  return k;
}

function countBuckets(absV: Float64Array, k: number, buckets: Float64Array): void {
  for (let i = 0; i < k; i++) buckets[histogramBucket(absV[i]!)]!++;
}

/** Elements whose absolute AND relative errors exceed tolerance. */
function countBeyond(absV: Float64Array, relV: Float64Array, k: number, atol: number, rtol: number): number {
  let c = 0;
  for (let i = 0; i < k; i++) if (absV[i]! > atol && relV[i]! > rtol) c++;
  return c;
}

/** max of v[i] over the elements whose `other[i]` exceeds `limit` (0 when none). */
function maxWhereOtherExceeds(v: Float64Array, other: Float64Array, k: number, limit: number): number {
  let max = 0;
  for (let i = 0; i < k; i++) if (other[i]! > limit && v[i]! > max) max = v[i]!;
  return max;
}

function countNaN(x: ArrayLike<number>, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (x[i] !== x[i]) c++;
  return c;
}

function countInfinite(x: ArrayLike<number>, n: number): number {
  let c = 0;
  for (let i = 0; i < n; i++) if (x[i] === Infinity || x[i] === -Infinity) c++;
  return c;
}

/**
 * Indices of the `top.length` largest v[0..k), largest first, the lower index first among
 * equal values; returns how many (fewer when k is smaller).
 */
function largestFirst(v: Float64Array, k: number, top: Int32Array): number {
  const keep = top.length;
  if (keep === 0) return 0;
  let count = 0;
  for (let i = 0; i < k; i++) {
    const x = v[i]!;
    if (count === keep && !(x > v[top[keep - 1]!]!)) continue;
    let j = count < keep ? count++ : keep - 1;
    while (j > 0 && x > v[top[j - 1]!]!) {
      top[j] = top[j - 1]!;
      j--;
    }
    top[j] = i;
  }
  return count;
}

/**
 * Root mean square of (x − ref) over the first `rows` rows, less those with `exclude[r]` = 1.
 * Infinity (or NaN) when an included x is not finite.
 */
export function rmse(ref: ArrayLike<number>, x: ArrayLike<number>, rows: number, exclude?: Uint8Array): { value: number; rows: number } {
  let sum = 0;
  let n = 0;
  for (let r = 0; r < rows; r++) {
    if (exclude && exclude[r]) continue;
    const d = x[r]! - ref[r]!;
    sum += d * d;
    n++;
  }
  return { value: n ? Math.sqrt(sum / n) : 0, rows: n };
}

/** The RMSE gate: rmse(candidate) ≤ multiplier · rmse(fp32) + atol / 10 (non-finite fails). */
export function rmseCheck(
  ref: ArrayLike<number>,
  candidate: ArrayLike<number>,
  fp32: ArrayLike<number>,
  rows: number,
  tolerance: Tolerance,
  multiplier: number,
  exclude?: Uint8Array,
): RmseCheck {
  const c = rmse(ref, candidate, rows, exclude);
  const f = rmse(ref, fp32, rows, exclude);
  const floor = tolerance.atol / 10;
  const bound = multiplier * f.value + floor;
  return { rows: c.rows, candidate: c.value, fp32: f.value, multiplier, floor, bound, pass: c.value <= bound };
}

// ---------------------------------------------------------------------------------------
// Expert selection.

/**
 * A mixing weight below 2^-24 (float32's unit roundoff, the weights summing to 1) changes the
 * mixture by less than float32 can resolve. An expert's selection differs only when one side
 * gives it at least this weight and the other side exactly zero, so a selected expert whose weight
 * underflows (or is flushed) to zero on one side is not a disagreement, and MMoE weights near the
 * threshold cannot flicker across it.
 */
export const WEIGHT_NEGLIGIBLE = 2 ** -24;

export interface SelectionExample {
  row: number;
  kind: "disagree" | "near-tie" | "float32";
  /** The reference's selection margin on this row. */
  margin: number;
  /** Selected experts, baseline and candidate. */
  reference: number[];
  candidate: number[];
  scenario?: Record<string, string>;
}

export interface SelectionMetrics {
  layer: string;
  experts: number;
  rows: number;
  /** Rows whose selected sets are equal. */
  agree: number;
  agreeFraction: number;
  /** Rows whose sets differ while the reference's margin is below the near-tie threshold (or below a near-tie flip upstream). */
  nearTies: number;
  /** Rows whose sets differ with a clear margin where the float32 reference evaluation differs from float64 too. */
  float32Unstable: number;
  /** Rows whose sets differ with a clear margin, and float32 arithmetic reproduces the float64 choice: real disagreements. */
  disagree: number;
  /** Rows whose reference margin is below the threshold, whether or not the sets differ. */
  nearTieRows: number;
  /** Largest |w_candidate − w_baseline| over rows that agree. */
  maxWeightError: number;
  /** First few real disagreements, then first few near-ties and float32-unstable rows. */
  examples: SelectionExample[];
}

export interface CompareSelectionInput {
  layer: string;
  experts: number;
  rows: number;
  /** Baseline mixing weights [B, E] and selected flags (the reference's, or another run's w > 0). */
  baselineWeights: ArrayLike<number>;
  baselineSelected?: Uint8Array;
  /** Candidate mixing weights [B, E]; an expert is selected when w > 0 (see WEIGHT_NEGLIGIBLE). */
  candidateWeights: ArrayLike<number>;
  /** The reference's per-row selection margin (Infinity where the policy has no boundary). */
  margin: ArrayLike<number>;
  nearTie: number;
  /** Per row, 1 where the float32 reference evaluation's selected set differs from the float64 one (known rows only). */
  float32Differs?: Uint8Array;
  /**
   * Per row, NEAR_TIE_FLIP or FLOAT32_FLIP where a layer upstream of this one already flipped for
   * that reason: this layer then sees a different input, so a difference here follows from it.
   */
  upstream?: Uint8Array;
  /** How many examples of each kind to keep (default 3). */
  examples?: number;
  /** selectionDiff of these weights, when already computed (it does not depend on the evidence). */
  diff?: SelectionDiff;
}

/** Per row: 0 same selection, 1 differs on a near-tie, 2 differs with a clear margin, 3 differs where float32 differs too. */
export const SAME = 0;
export const NEAR_TIE_FLIP = 1;
export const DISAGREEMENT = 2;
export const FLOAT32_FLIP = 3;

/**
 * What a baseline and a candidate selection differ in, before any differing row is classified:
 * per row 1 where the selected sets differ (see WEIGHT_NEGLIGIBLE; a NaN weight on either side
 * never agrees), the rows that agree, and the largest |w_candidate − w_baseline| among them.
 * It depends on the two sides only, so a comparison judged again with new float32 evidence
 * reuses it.
 */
export interface SelectionDiff {
  rows: number;
  experts: number;
  setsDiffer: Uint8Array;
  agree: number;
  maxWeightError: number;
}

/** A comparison as 0 or 1 for bitwise arithmetic (JS coerces true to 1): no branch in a hot loop. */
const bit = (b: boolean): number => b as unknown as number;

export function selectionDiff(
  baselineWeights: ArrayLike<number>,
  baselineSelected: Uint8Array | undefined,
  candidateWeights: ArrayLike<number>,
  rows: number,
  experts: number,
): SelectionDiff {
  const setsDiffer = new Uint8Array(rows);
  // two runs with the same finite weights (graph optimisations often change no bit) agree everywhere
  if (baselineSelected === undefined && sameFiniteValues(baselineWeights, candidateWeights, rows * experts))
    return { rows, experts, setsDiffer, agree: rows, maxWeightError: 0 };
  const weightError = scratchFloat64(3, rows);
  screenSelections(baselineWeights, baselineSelected ?? null, candidateWeights, rows, experts, setsDiffer, weightError);
  const flagged = scratchInt32(2, rows);
  const m = rowsWhere(setsDiffer, rows, flagged);
  for (let j = 0; j < m; j++) {
    const r = flagged[j]!;
    const werr = exactRowDiff(baselineWeights, baselineSelected ?? null, candidateWeights, r * experts, experts);
    if (werr === werr) {
      setsDiffer[r] = 0;
      weightError[r] = werr;
    }
  }
  return { rows, experts, setsDiffer, agree: rows - countNonZero(setsDiffer, rows), maxWeightError: maxWhereZero(weightError, setsDiffer, rows) };
}

/**
 * Per row, without data-dependent branches: the largest |w_c − w_b| and whether the row needs
 * the exact rule (setsDiffer 1). An unselected baseline weight is masked by a product (a
 * non-finite one gives NaN, which flags the row); a row whose sides have zeros in the same
 * places and no NaN difference has the same selected sets.
 */
function screenSelections(
  bw: ArrayLike<number>,
  bs: Uint8Array | null,
  cw: ArrayLike<number>,
  rows: number,
  E: number,
  flag: Uint8Array,
  weightError: Float64Array,
): void {
  for (let r = 0; r < rows; r++) {
    const o = r * E;
    let screen = 0;
    let werr = 0;
    for (let e = 0; e < E; e++) {
      const wb = bs === null ? bw[o + e]! : bw[o + e]! * bs[o + e]!;
      const wc = cw[o + e]!;
      const d = Math.abs(wc - wb);
      werr = d > werr ? d : werr;
      screen |= (bit(wb === 0) ^ bit(wc === 0)) | bit(d !== d);
    }
    flag[r] = screen;
    weightError[r] = werr;
  }
}

/** The exact rule on one row (from offset o): its largest |w_c − w_b| when the sets are the same, else NaN. */
function exactRowDiff(bw: ArrayLike<number>, bs: Uint8Array | null, cw: ArrayLike<number>, o: number, E: number): number {
  let werr = 0;
  let same = true;
  for (let e = 0; e < E; e++) {
    const wb = bs === null || bs[o + e] === 1 ? bw[o + e]! : 0;
    const wc = cw[o + e]!;
    const d = wc - wb;
    if (d !== d) return NaN; // a NaN weight on either side is never agreement
    const ad = d < 0 ? -d : d;
    if (ad > werr) werr = ad;
    if ((wb === 0 && wc >= WEIGHT_NEGLIGIBLE) || (wc === 0 && wb >= WEIGHT_NEGLIGIBLE)) same = false;
  }
  return same ? werr : NaN;
}

/** a[i] = b[i], finite, for every i < n (stops at the first difference). */
export function sameFiniteValues(a: ArrayLike<number>, b: ArrayLike<number>, n: number): boolean {
  if (a instanceof Float32Array && b instanceof Float32Array && a.length === n && b.length === n) {
    // the bytes first (a memcmp): equal bytes are equal values, unless NaN; then the finiteness
    if (!Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))) return false;
    return allFinite(a, n);
  }
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    if (x !== b[i] || x - x !== 0) return false;
  }
  return true;
}

function allFinite(a: Float32Array, n: number): boolean {
  for (let i = 0; i < n; i++) {
    const x = a[i]!;
    if (x - x !== 0) return false;
  }
  return true;
}

/** The indices r < n with flags[r] ≠ 0, ascending, into `out`; returns how many. */
function rowsWhere(flags: Uint8Array, n: number, out: Int32Array): number {
  let m = 0;
  for (let r = 0; r < n; r++) if (flags[r] !== 0) out[m++] = r;
  return m;
}

function countNonZero(flags: Uint8Array, n: number): number {
  let c = 0;
  for (let r = 0; r < n; r++) if (flags[r] !== 0) c++;
  return c;
}

function maxWhereZero(v: Float64Array, flags: Uint8Array, n: number): number {
  let max = 0;
  for (let r = 0; r < n; r++) if (flags[r] === 0 && v[r]! > max) max = v[r]!;
  return max;
}

function countBelow(x: ArrayLike<number>, n: number, limit: number): number {
  let c = 0;
  for (let r = 0; r < n; r++) if (x[r]! < limit) c++;
  return c;
}

export function compareSelection(input: CompareSelectionInput): SelectionMetrics & { differs: Uint8Array } {
  const { layer, experts: E, rows, baselineWeights: bw, baselineSelected: bs, candidateWeights: cw, margin, nearTie, float32Differs, upstream } = input;
  const keep = input.examples ?? 3;
  const diff = input.diff ?? selectionDiff(bw, bs, cw, rows, E);
  const differs = new Uint8Array(rows);
  let nearTies = 0;
  let disagree = 0;
  let unstable = 0;
  const real: SelectionExample[] = [];
  const ties: SelectionExample[] = [];
  const unstableExamples: SelectionExample[] = [];
  const setOf = (sel: (e: number) => boolean) => {
    const out: number[] = [];
    for (let e = 0; e < E; e++) if (sel(e)) out.push(e);
    return out;
  };
  const differing = scratchInt32(3, rows);
  const m = rowsWhere(diff.setsDiffer, rows, differing);
  for (let j = 0; j < m; j++) {
    const r = differing[j]!;
    const o = r * E;
    const example = (kind: SelectionExample["kind"]): SelectionExample => ({
      row: r,
      kind,
      margin: margin[r]!,
      reference: setOf((e) => (!bs || bs[o + e] === 1) && bw[o + e]! > 0),
      candidate: setOf((e) => cw[o + e]! > 0),
    });
    const inherited = upstream ? upstream[r]! : SAME;
    if (margin[r]! < nearTie || inherited === NEAR_TIE_FLIP) {
      nearTies++;
      differs[r] = NEAR_TIE_FLIP;
      if (ties.length < keep) ties.push(example("near-tie"));
    } else if ((float32Differs && float32Differs[r] === 1) || inherited === FLOAT32_FLIP) {
      unstable++;
      differs[r] = FLOAT32_FLIP;
      if (unstableExamples.length < keep) unstableExamples.push(example("float32"));
    } else {
      disagree++;
      differs[r] = DISAGREEMENT;
      if (real.length < keep) real.push(example("disagree"));
    }
  }
  return {
    layer,
    experts: E,
    rows,
    agree: diff.agree,
    agreeFraction: rows ? diff.agree / rows : 1,
    nearTies,
    float32Unstable: unstable,
    disagree,
    nearTieRows: countBelow(margin, rows, nearTie),
    maxWeightError: diff.maxWeightError,
    examples: [...real, ...ties, ...unstableExamples],
    differs,
  };
}
