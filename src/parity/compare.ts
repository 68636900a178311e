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

/** Bucket index of an absolute error (finite, ≥ 0). */
export function histogramBucket(abs: number): number {
  if (abs === 0) return 0;
  const d = Math.floor(Math.log10(abs));
  if (d < HISTOGRAM_DECADES.from) return 1;
  if (d >= HISTOGRAM_DECADES.to) return HISTOGRAM_BUCKETS.length - 1;
  // log10 can land a hair below an exact power of ten; the bucket is [1e d, 1e d+1)
  const k = abs >= 10 ** (d + 1) ? d + 1 : d;
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

/** Stats of `values[0..n)`; sorts that prefix in place. */
export function errorStats(values: Float64Array, n: number): ErrorStats {
  if (n === 0) return { max: 0, mean: 0, median: 0, p99: 0 };
  const v = values.subarray(0, n);
  let sum = 0;
  for (let i = 0; i < n; i++) sum += v[i]!;
  v.sort();
  const rank = (q: number) => v[Math.max(0, Math.ceil(q * n) - 1)]!;
  return { max: v[n - 1]!, mean: sum / n, median: rank(0.5), p99: rank(0.99) };
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
  const keep = input.worst ?? 5;
  const n = Math.min(ref.length, got.length);
  const absV = new Float64Array(n);
  const relV = new Float64Array(n);
  const ulpV = new Float64Array(n);
  const histogram = new Array<number>(HISTOGRAM_BUCKETS.length).fill(0);
  let k = 0; // judged finite elements
  let checked = 0;
  let failures = 0;
  let nan = 0;
  let inf = 0;
  let nonFiniteMismatches = 0;
  let minAtol = 0;
  let minRtol = 0;
  const excusedStats = { rows: 0, nearTieRows: 0, float32Rows: 0, failures: 0, maxAbs: 0 };
  const excuse = (why: number) => {
    excusedStats.rows++;
    if (why === EXCUSED_NEAR_TIE) excusedStats.nearTieRows++;
    else excusedStats.float32Rows++;
  };
  const worst: WorstRow[] = [];

  /** Keep the `keep` largest by abs (non-finite mismatches carry abs = Infinity). */
  const consider = (w: WorstRow) => {
    if (keep <= 0) return;
    if (worst.length === keep && !(w.abs > worst[keep - 1]!.abs)) return;
    let i = worst.length;
    while (i > 0 && w.abs > worst[i - 1]!.abs) i--;
    worst.splice(i, 0, w);
    if (worst.length > keep) worst.pop();
  };

  for (let r = 0; r < n; r++) {
    const a = ref[r]!;
    const b = got[r]!;
    if (Number.isNaN(b)) nan++;
    else if (!Number.isFinite(b)) inf++;
    const why = excused ? excused[r]! : 0;
    const isExcused = why !== 0;
    if (!Number.isFinite(a) || !Number.isFinite(b)) {
      // the same NaN or the same infinity on both sides is agreement
      const same = (Number.isNaN(a) && Number.isNaN(b)) || a === b;
      if (isExcused) {
        excuse(why);
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
        consider({ row: r, reference: a, candidate: b, abs: Infinity, rel: Infinity, ulp: Infinity });
      }
      continue;
    }
    const abs = Math.abs(a - b);
    const rel = relativeError(a, abs);
    const fails = abs > atol && rel > rtol;
    if (isExcused) {
      excuse(why);
      if (fails) excusedStats.failures++;
      if (abs > excusedStats.maxAbs) excusedStats.maxAbs = abs;
      continue;
    }
    checked++;
    const ulp = ulpDistance(a, b);
    absV[k] = abs;
    relV[k] = rel;
    ulpV[k] = ulp;
    k++;
    histogram[histogramBucket(abs)]!++;
    if (fails) failures++;
    // this element passes at atol' ≥ abs (when rel > rtol) or at rtol' ≥ rel (when abs > atol)
    if (rel > rtol && abs > minAtol) minAtol = abs;
    if (abs > atol && rel > minRtol) minRtol = rel;
    if (keep > 0 && (worst.length < keep || abs > worst[worst.length - 1]!.abs))
      consider({ row: r, reference: a, candidate: b, abs, rel, ulp });
  }
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
}

/** Per row: 0 same selection, 1 differs on a near-tie, 2 differs with a clear margin, 3 differs where float32 differs too. */
export const SAME = 0;
export const NEAR_TIE_FLIP = 1;
export const DISAGREEMENT = 2;
export const FLOAT32_FLIP = 3;

export function compareSelection(input: CompareSelectionInput): SelectionMetrics & { differs: Uint8Array } {
  const { layer, experts: E, rows, baselineWeights: bw, baselineSelected: bs, candidateWeights: cw, margin, nearTie, float32Differs, upstream } = input;
  const keep = input.examples ?? 3;
  const differs = new Uint8Array(rows);
  let agree = 0;
  let nearTies = 0;
  let disagree = 0;
  let unstable = 0;
  let nearTieRows = 0;
  let maxWeightError = 0;
  const real: SelectionExample[] = [];
  const ties: SelectionExample[] = [];
  const unstableExamples: SelectionExample[] = [];
  const setOf = (sel: (e: number) => boolean) => {
    const out: number[] = [];
    for (let e = 0; e < E; e++) if (sel(e)) out.push(e);
    return out;
  };
  for (let r = 0; r < rows; r++) {
    const o = r * E;
    const isTie = margin[r]! < nearTie;
    if (isTie) nearTieRows++;
    let same = true;
    let werr = 0;
    for (let e = 0; e < E; e++) {
      const wb = bs === undefined || bs[o + e] === 1 ? bw[o + e]! : 0;
      const wc = cw[o + e]!;
      const d = wc - wb;
      if (d !== d) {
        // a NaN weight on either side is never agreement
        same = false;
        werr = Infinity;
        continue;
      }
      const ad = d < 0 ? -d : d;
      if (ad > werr) werr = ad;
      if ((wb === 0 && wc >= WEIGHT_NEGLIGIBLE) || (wc === 0 && wb >= WEIGHT_NEGLIGIBLE)) same = false;
    }
    if (same) {
      agree++;
      if (werr > maxWeightError) maxWeightError = werr;
      continue;
    }
    const example = (kind: SelectionExample["kind"]): SelectionExample => ({
      row: r,
      kind,
      margin: margin[r]!,
      reference: setOf((e) => (!bs || bs[o + e] === 1) && bw[o + e]! > 0),
      candidate: setOf((e) => cw[o + e]! > 0),
    });
    const inherited = upstream ? upstream[r]! : SAME;
    if (isTie || inherited === NEAR_TIE_FLIP) {
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
    agree,
    agreeFraction: rows ? agree / rows : 1,
    nearTies,
    float32Unstable: unstable,
    disagree,
    nearTieRows,
    maxWeightError,
    examples: [...real, ...ties, ...unstableExamples],
    differs,
  };
}
