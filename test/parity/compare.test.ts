// Each comparison metric on hand-made numbers: errors, ULPs, NaN/Inf, the passing tolerance,
// the histogram, worst rows, the RMSE gate, and selection agreement with a planted one-expert
// disagreement, a planted near-tie, a float32-unstable row and an underflowed weight.

import { describe, expect, it } from "vitest";
import {
  DISAGREEMENT,
  EXCUSED_FLOAT32,
  EXCUSED_NEAR_TIE,
  FLOAT32_FLIP,
  HISTOGRAM_BUCKETS,
  NEAR_TIE_FLIP,
  SAME,
  compareOutput,
  compareSelection,
  errorStats,
  exceedsTolerance,
  float32Limited,
  histogramBucket,
  rmseCheck,
  ulpDistance,
} from "../../src/parity/compare.ts";
import { Rng } from "../../src/core/random.ts";

const tol = { atol: 1e-5, rtol: 0 };

describe("float32Limited", () => {
  it("holds where the float32 reference strays beyond a tenth of atol", () => {
    expect(float32Limited(0.5, 0.5 + 1.5e-6, tol)).toBe(true);
    expect(float32Limited(0.5, 0.5 - 1.5e-6, tol)).toBe(true);
    expect(float32Limited(0.5, 0.5 + 0.5e-6, tol)).toBe(false);
    expect(float32Limited(0.5, 0.5, tol)).toBe(false);
    // the 100,000-row example's ill-conditioned rows: the emulation strays 2.57e-6 and 7.8e-6
    expect(float32Limited(0.4314111410632082, 0.4314111410632082 + 2.57e-6, tol)).toBe(true);
  });

  it("takes a tenth of the tolerance that applies: max(atol, rtol·|ref|) / 10", () => {
    const loose = { atol: 1e-5, rtol: 1e-2 };
    // at ref 10 the tolerance is rtol·10 = 0.1, a tenth of it 0.01
    expect(float32Limited(10, 10.02, loose)).toBe(true);
    expect(float32Limited(10, 10.005, loose)).toBe(false);
    // at ref 1e-4 it is atol (rtol·|ref| = 1e-6 is smaller), a tenth of it 1e-6
    expect(float32Limited(1e-4, 1e-4 + 2e-6, loose)).toBe(true);
    expect(float32Limited(1e-4, 1e-4 + 0.5e-6, loose)).toBe(false);
    // the pass rule itself at the full tolerance
    expect(exceedsTolerance(10, 10.05, loose)).toBe(false);
    expect(exceedsTolerance(10, 10.2, loose)).toBe(true);
  });

  it("holds where float32 is non-finite and float64 is not, or the two differ", () => {
    expect(float32Limited(0.5, NaN, tol)).toBe(true);
    expect(float32Limited(0.5, Infinity, tol)).toBe(true);
    expect(float32Limited(Infinity, -Infinity, tol)).toBe(true);
    expect(float32Limited(NaN, NaN, tol)).toBe(false);
    expect(float32Limited(-Infinity, -Infinity, tol)).toBe(false);
  });
});

describe("compareOutput", () => {
  it("computes max, mean, nearest-rank median and p99 of absolute and relative errors", () => {
    const ref = new Float64Array([0.5, 0.25, 0.125, 1]);
    const got = new Float32Array([0.5, 0.25 + 2 ** -20, 0.125 + 2 ** -19, 1 - 2 ** -18]);
    const m = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: tol });
    expect(m.abs).toEqual({ max: 2 ** -18, mean: (2 ** -20 + 2 ** -19 + 2 ** -18) / 4, median: 2 ** -20, p99: 2 ** -18 });
    expect(m.rel.max).toBe(2 ** -19 / 0.125);
    expect(m.rel.median).toBe(2 ** -20 / 0.25);
    expect(m.count).toBe(4);
    expect(m.checked).toBe(4);
    expect(m.failures).toBe(0);
    expect(m.pass).toBe(true);
  });

  it("counts float32 ULPs against the reference rounded to float32", () => {
    expect(ulpDistance(1, 1 + 2 ** -23)).toBe(1);
    expect(ulpDistance(1, 1 - 2 ** -24)).toBe(1); // the float below 1 is 2^-24 away
    expect(ulpDistance(0.1, Math.fround(0.1))).toBe(0); // 0.1 rounds to the same float32
    expect(ulpDistance(-0, 0)).toBe(0);
    expect(ulpDistance(2 ** -149, -(2 ** -149))).toBe(2); // across zero through the denormals
    const m = compareOutput({ name: "ctr", reference: [1, 0.5], candidate: new Float32Array([1 + 2 ** -23 * 3, 0.5]), tolerance: tol });
    expect(m.ulp.max).toBe(3);
  });

  it("fails an element only when both the absolute and the relative error exceed tolerance", () => {
    const ref = [1, 1e-3, 0.5];
    const got = [1 + 2e-5, 1e-3 + 2e-5, 0.5];
    // abs 2e-5 > atol everywhere it differs; rel 2e-5 and 2e-2
    const loose = compareOutput({ name: "cvr", reference: ref, candidate: got, tolerance: { atol: 1e-5, rtol: 1e-4 } });
    expect(loose.failures).toBe(1); // only the small probability: rel 2e-2 > 1e-4
    const strict = compareOutput({ name: "cvr", reference: ref, candidate: got, tolerance: { atol: 1e-5, rtol: 0 } });
    expect(strict.failures).toBe(2);
    expect(strict.pass).toBe(false);
  });

  it("reports the smallest atol that passes at the given rtol, and the smallest rtol at the given atol", () => {
    const ref = [1, 0.01, 0.5];
    const got = [1 + 3e-5, 0.01 + 2e-5, 0.5 + 1e-6];
    const m = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: { atol: 1e-5, rtol: 1e-4 } });
    // rel: 3e-5, 2e-3, 2e-6 → only row 1 exceeds rtol, so atol must cover its 2e-5
    expect(m.minPassingAtol).toBeCloseTo(2e-5, 12);
    // abs beyond atol: rows 0 and 1 → rtol must cover the larger rel, 2e-3
    expect(m.minPassingRtol).toBeCloseTo(2e-3, 9);
    const passes = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: { atol: m.minPassingAtol, rtol: 1e-4 } });
    expect(passes.failures).toBe(0);
  });

  it("counts NaN and Inf in the candidate; a non-finite mismatch fails and makes the passing atol infinite", () => {
    const ref = [0.5, 0.5, 0.5, NaN];
    const got = new Float32Array([NaN, Infinity, 0.5, NaN]);
    const m = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: tol });
    expect(m.nan).toBe(2);
    expect(m.inf).toBe(1);
    expect(m.nonFiniteMismatches).toBe(2); // NaN on both sides agrees
    expect(m.failures).toBe(2);
    expect(m.minPassingAtol).toBe(Infinity);
    expect(m.worst.map((w) => w.row)).toEqual([0, 1, 2]);
    expect(m.worst[0]!.abs).toBe(Infinity);
  });

  it("sorts absolute errors into log-decade buckets", () => {
    expect(HISTOGRAM_BUCKETS).toEqual([
      "0",
      "<1e-12",
      "1e-12..1e-11",
      "1e-11..1e-10",
      "1e-10..1e-9",
      "1e-9..1e-8",
      "1e-8..1e-7",
      "1e-7..1e-6",
      "1e-6..1e-5",
      "1e-5..1e-4",
      "1e-4..1e-3",
      "1e-3..1e-2",
      "≥1e-2",
    ]);
    expect(histogramBucket(0)).toBe(0);
    expect(histogramBucket(1e-15)).toBe(1);
    expect(histogramBucket(1e-12)).toBe(2);
    expect(histogramBucket(5e-7)).toBe(7);
    expect(histogramBucket(1e-6)).toBe(8); // a decade's lower edge belongs to it
    expect(histogramBucket(9.99e-3)).toBe(11);
    expect(histogramBucket(0.01)).toBe(12);
    expect(histogramBucket(0.7)).toBe(12);
    const m = compareOutput({ name: "ctr", reference: [0.5, 0.5, 0.5, 0.5], candidate: [0.5, 0.5 + 3e-7, 0.5 + 4e-7, 0.6], tolerance: { atol: 1, rtol: 0 } });
    expect(m.histogram).toEqual([1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 1]);
  });

  it("keeps the worst rows, largest absolute error first", () => {
    const ref = new Float64Array(100).fill(0.5);
    const got = new Float32Array(100).fill(0.5);
    got[17] = 0.5 + 2 ** -10;
    got[3] = 0.5 + 2 ** -12;
    got[64] = 0.5 - 2 ** -11;
    const m = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: tol, worst: 2 });
    expect(m.worst.map((w) => [w.row, w.abs])).toEqual([
      [17, 2 ** -10],
      [64, 2 ** -11],
    ]);
    expect(m.worst[0]).toMatchObject({ reference: 0.5, candidate: 0.5 + 2 ** -10, ulp: 2 ** 14 });
  });

  it("reports excused rows apart and does not judge them", () => {
    const ref = [0.5, 0.5, 0.5, 0.5];
    const got = [0.9, 0.5, 0.7, 0.5 + 2e-5];
    const excused = new Uint8Array([EXCUSED_NEAR_TIE, 0, EXCUSED_FLOAT32, 0]);
    const m = compareOutput({ name: "ctr", reference: ref, candidate: got, tolerance: tol, excused });
    expect(m.excused).toEqual({ rows: 2, nearTieRows: 1, float32Rows: 1, failures: 2, maxAbs: 0.4 });
    expect(m.checked).toBe(2);
    expect(m.failures).toBe(1);
    expect(m.abs.max).toBeCloseTo(2e-5, 12);
  });

  it("empty stats are zeros", () => {
    expect(errorStats(new Float64Array(0), 0)).toEqual({ max: 0, mean: 0, median: 0, p99: 0 });
  });

  it("finds the nearest-rank median and p99 of a full sort, with runs of equal values and infinities", () => {
    const rng = new Rng(5);
    for (const n of [1, 2, 3, 99, 100, 101, 1000, 4097, 30_000]) {
      for (const kind of ["spread", "zeros", "few values", "sorted", "reversed"]) {
        const v = new Float64Array(n + 3); // a prefix of a longer buffer, as compareOutput passes it
        for (let i = 0; i < n; i++)
          v[i] =
            kind === "spread" ? rng.uniform(0, 1) * 10 ** rng.int(-12, 0)
            : kind === "zeros" ? (rng.next() < 0.9 ? 0 : rng.uniform(0, 1e-6))
            : kind === "few values" ? [0, 1, 2, Infinity][rng.int(0, 4)]!
            : kind === "sorted" ? i
            : n - i;
        const sorted = v.slice(0, n).sort();
        let sum = 0;
        for (let i = 0; i < n; i++) sum += v[i]!;
        const at = (q: number) => sorted[Math.max(0, Math.ceil(q * n) - 1)]!;
        expect(errorStats(v, n), `${kind}, n = ${n}`).toEqual({ max: sorted[n - 1]!, mean: sum / n, median: at(0.5), p99: at(0.99) });
      }
    }
  });
});

describe("rmseCheck", () => {
  it("passes when rmse(candidate) ≤ multiplier · rmse(float32) + atol/10", () => {
    const ref = [0.1, 0.2, 0.3, 0.4];
    const fp32 = [0.1 + 1e-7, 0.2 - 1e-7, 0.3 + 1e-7, 0.4 - 1e-7]; // rmse 1e-7
    const ok = rmseCheck(ref, [0.1 + 2e-7, 0.2, 0.3, 0.4 - 2e-7], fp32, 4, { atol: 1e-7, rtol: 0 }, 2);
    expect(ok.fp32).toBeCloseTo(1e-7, 15);
    expect(ok.candidate).toBeCloseTo(Math.sqrt(2e-14), 15);
    expect(ok.floor).toBeCloseTo(1e-8, 20);
    expect(ok.bound).toBeCloseTo(2.1e-7, 15);
    expect(ok.pass).toBe(true);
    const bad = rmseCheck(ref, [0.1 + 5e-7, 0.2 - 5e-7, 0.3, 0.4], fp32, 4, { atol: 1e-7, rtol: 0 }, 2);
    expect(bad.pass).toBe(false);
  });

  it("covers only the first `rows` rows less excluded ones; a non-finite candidate fails", () => {
    const c = rmseCheck([0, 0, 0], [1, 0, 9], [0, 0, 0], 2, { atol: 0, rtol: 0 }, 2, new Uint8Array([1, 0, 0]));
    expect(c.rows).toBe(1);
    expect(c.candidate).toBe(0);
    expect(c.pass).toBe(true);
    expect(rmseCheck([0], [NaN], [0], 1, { atol: 1, rtol: 0 }, 2).pass).toBe(false);
  });
});

describe("compareSelection", () => {
  // 4 rows, 3 experts; the reference selects {0, 1} on every row
  const E = 3;
  const refWeights = new Float64Array([0.6, 0.4, 0, 0.5, 0.5, 0, 0.7, 0.3, 0, 0.9, 0.1, 0]);
  const refSelected = new Uint8Array([1, 1, 0, 1, 1, 0, 1, 1, 0, 1, 1, 0]);
  const margin = new Float64Array([2.5, 3e-6, 1.2, 0.8]);

  it("tells a planted one-expert disagreement from a planted near-tie", () => {
    const onnx = new Float32Array([
      0.6, 0.4, 0, // row 0: same
      0.5, 0, 0.5, // row 1: expert 1 → 2, margin 3e-6: a near-tie
      0.7, 0, 0.3, // row 2: expert 1 → 2 with margin 1.2: a real disagreement
      0.9, 0.1, 0, // row 3: same
    ]);
    const s = compareSelection({ layer: "scenario_layers.page.0", experts: E, rows: 4, baselineWeights: refWeights, baselineSelected: refSelected, candidateWeights: onnx, margin, nearTie: 1e-4 });
    expect(s).toMatchObject({ agree: 2, agreeFraction: 0.5, nearTies: 1, float32Unstable: 0, disagree: 1, nearTieRows: 1 });
    expect(Array.from(s.differs)).toEqual([SAME, NEAR_TIE_FLIP, DISAGREEMENT, SAME]);
    expect(s.examples).toEqual([
      { row: 2, kind: "disagree", margin: 1.2, reference: [0, 1], candidate: [0, 2] },
      { row: 1, kind: "near-tie", margin: 3e-6, reference: [0, 1], candidate: [0, 2] },
    ]);
    expect(s.maxWeightError).toBeCloseTo(0, 7); // float32 rounding of the agreeing rows' weights
  });

  it("counts a clear-margin flip where the float32 reference flips too (or a flip upstream) apart", () => {
    const onnx = new Float32Array([0.6, 0, 0.4, 0.5, 0.5, 0, 0.7, 0, 0.3, 0.9, 0.1, 0]);
    const float32Differs = new Uint8Array([1, 0, 0, 0]);
    const upstream = new Uint8Array([0, 0, NEAR_TIE_FLIP, 0]);
    const s = compareSelection({ layer: "l", experts: E, rows: 4, baselineWeights: refWeights, baselineSelected: refSelected, candidateWeights: onnx, margin, nearTie: 1e-4, float32Differs, upstream });
    expect(Array.from(s.differs)).toEqual([FLOAT32_FLIP, SAME, NEAR_TIE_FLIP, SAME]);
    expect(s).toMatchObject({ agree: 2, nearTies: 1, float32Unstable: 1, disagree: 0 });
  });

  it("does not count a weight below 2^-24 that underflows to zero on the other side, nor a NaN as agreement", () => {
    const base = new Float64Array([1, 1e-20, 0, 0.5, 0.5, 0]);
    const sel = new Uint8Array([1, 1, 0, 1, 1, 0]);
    const onnx = new Float32Array([1, 0, 0, 0.5, NaN, 0]);
    const s = compareSelection({ layer: "l", experts: E, rows: 2, baselineWeights: base, baselineSelected: sel, candidateWeights: onnx, margin: [1, 1], nearTie: 1e-4 });
    expect(Array.from(s.differs)).toEqual([SAME, DISAGREEMENT]);
  });

  it("agrees with the rule applied expert by expert on random weights with zeros, tiny weights, NaN and infinities", () => {
    const rng = new Rng(8);
    const E = 5;
    const rows = 3000;
    const pick = () => [0, 0, 0, 1e-30, 2 ** -25, 2 ** -24, 0.25, 1, NaN, Infinity, -0][rng.int(0, 11)]!;
    for (const masked of [true, false]) {
      const base = new Float64Array(rows * E).map(pick);
      const sel = new Uint8Array(rows * E).map(() => (rng.next() < 0.5 ? 1 : 0));
      // mostly the baseline's zeros in the candidate, so that many rows agree
      const cand = new Float32Array(rows * E).map((_, i) => (rng.next() < 0.8 ? (masked && !sel[i] ? 0 : base[i]!) : pick()));
      const s = compareSelection({ layer: "l", experts: E, rows, baselineWeights: base, ...(masked ? { baselineSelected: sel } : {}), candidateWeights: cand, margin: new Float64Array(rows).fill(1), nearTie: 1e-4 });
      let agree = 0;
      let maxWeightError = 0;
      for (let r = 0; r < rows; r++) {
        let same = true;
        let werr = 0;
        for (let e = 0; e < E; e++) {
          const wb = !masked || sel[r * E + e] === 1 ? base[r * E + e]! : 0;
          const wc = cand[r * E + e]!;
          const d = Math.abs(wc - wb);
          if (Number.isNaN(d)) same = false;
          else werr = Math.max(werr, d);
          if ((wb === 0 && wc >= 2 ** -24) || (wc === 0 && wb >= 2 ** -24)) same = false;
        }
        expect(s.differs[r], `row ${r}`).toBe(same ? SAME : DISAGREEMENT);
        if (same) {
          agree++;
          maxWeightError = Math.max(maxWeightError, werr);
        }
      }
      expect(s.agree).toBe(agree);
      expect(agree).toBeGreaterThan(rows / 10);
      expect(s.maxWeightError).toBe(maxWeightError);
    }
  });

  it("agrees everywhere between two runs with the same finite weights, but not on a row with a NaN or an infinity on both sides", () => {
    const w = new Float32Array([0.5, 0.5, 0, 1, 0, 0, 2 ** -30, 0.25, 0.75]);
    const same = compareSelection({ layer: "l", experts: 3, rows: 3, baselineWeights: w, candidateWeights: w.slice(), margin: [1, 1, 1], nearTie: 1e-4 });
    expect(same).toMatchObject({ agree: 3, disagree: 0, maxWeightError: 0 });
    for (const bad of [NaN, Infinity]) {
      const v = w.slice();
      v[4] = bad;
      const s = compareSelection({ layer: "l", experts: 3, rows: 3, baselineWeights: v, candidateWeights: v.slice(), margin: [1, 1, 1], nearTie: 1e-4 });
      expect(Array.from(s.differs), String(bad)).toEqual([SAME, DISAGREEMENT, SAME]);
    }
  });
});
