// Comparison of ONNX outputs against the float64 reference: per-output error metrics,
// per-layer selection agreement, with rows whose selection flipped on a near-tie
// reported apart from real disagreements.

export interface Tolerance {
  /** An element fails only when its absolute error exceeds atol AND its relative error exceeds rtol. */
  atol: number;
  rtol: number;
}

export interface OutputReport {
  name: string;
  count: number;
  maxAbs: number;
  maxRel: number;
  /** Row of the largest absolute error (−1 when empty). */
  worstRow: number;
  /** Elements failing the tolerance, not counting rows excused as near-ties. */
  failures: number;
  /** Failing elements on rows whose selection flipped on a near-tie. */
  nearTieFailures: number;
  nonFinite: number;
  pass: boolean;
}

export interface SelectionReport {
  layer: string;
  rows: number;
  agree: number;
  /** Rows whose selected sets differ while the reference's selection margin is below the near-tie threshold. */
  nearTies: number;
  /** Rows whose selected sets differ with a clear margin: real disagreements. */
  disagree: number;
  /** First disagreeing row, −1 if none. */
  firstDisagreement: number;
}

export interface LayerSelections {
  layer: string;
  experts: number;
  /** Reference: [B, E] selected flags and per-row margin. */
  refSelected: Uint8Array;
  refMargin: Float64Array;
  /** Compiled model's mixing weights [B, E]; selected ⇔ w > 0. */
  onnxWeights: Float32Array;
}

export function compareSelections(sel: LayerSelections, rows: number, nearTie: number): SelectionReport & { flipped: Uint8Array } {
  const { experts: E, refSelected, refMargin, onnxWeights } = sel;
  let agree = 0;
  let nearTies = 0;
  let disagree = 0;
  let first = -1;
  const flipped = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) {
    let same = true;
    for (let e = 0; e < E; e++) {
      if ((refSelected[r * E + e] === 1) !== onnxWeights[r * E + e]! > 0) {
        same = false;
        break;
      }
    }
    if (same) agree++;
    else if (refMargin[r]! < nearTie) {
      nearTies++;
      flipped[r] = 1;
    } else {
      disagree++;
      if (first < 0) first = r;
    }
  }
  return { layer: sel.layer, rows, agree, nearTies, disagree, firstDisagreement: first, flipped };
}

/**
 * Compare one output of `rows` rows (`width` values each) to the reference.
 * `excused[r] = 1` marks rows whose selection flipped on a near-tie: their failures are counted apart.
 */
export function compareOutput(
  name: string,
  ref: Float64Array,
  got: Float32Array,
  width: number,
  tol: Tolerance,
  excused?: Uint8Array,
): OutputReport {
  let maxAbs = 0;
  let maxRel = 0;
  let worst = -1;
  let failures = 0;
  let nearTieFailures = 0;
  let nonFinite = 0;
  const n = Math.min(ref.length, got.length);
  for (let i = 0; i < n; i++) {
    const a = ref[i]!;
    const b = got[i]!;
    if (!Number.isFinite(b)) {
      nonFinite++;
      failures++;
      if (worst < 0) worst = Math.floor(i / width);
      maxAbs = Infinity;
      continue;
    }
    const abs = Math.abs(a - b);
    const rel = a !== 0 ? abs / Math.abs(a) : abs === 0 ? 0 : Infinity;
    if (abs > maxAbs) {
      maxAbs = abs;
      worst = Math.floor(i / width);
    }
    if (rel > maxRel) maxRel = rel;
    if (abs > tol.atol && rel > tol.rtol) {
      if (excused && excused[Math.floor(i / width)]) nearTieFailures++;
      else failures++;
    }
  }
  if (ref.length !== got.length) failures += Math.abs(ref.length - got.length);
  return { name, count: n, maxAbs, maxRel, worstRow: worst, failures, nearTieFailures, nonFinite, pass: failures === 0 };
}
