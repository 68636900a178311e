// The error function for the interpreter's Erf and Gelu kernels, accurate to a few double
// ulps: far inside float32's rounding, so a float32 result is the nearest float but in rare near-ties.
//
// Written independently of src/reference/numerics.ts on purpose: the reference is the
// oracle and shares no code with the backends (DESIGN.md).

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π
/** erf uses its positive-term series below this |x|; erfc its continued fraction above. */
const SPLIT = 2.5;
/** Depth of the erfc continued fraction; at x = 2.5 the tail is below 1e-17 relative. */
const CF_TERMS = 120;

/**
 * erf(x) = 2/√π · exp(−x²) · Σₙ 2ⁿ x^(2n+1) / (1·3·…·(2n+1))  (Abramowitz–Stegun 7.1.6).
 * Every term is positive, so there is no cancellation; at |x| = 2.5 the largest term is
 * ~70 and the sum ~e^6.25, so rounding stays at a few ulps.
 */
function erfSmall(x: number): number {
  const ax = Math.abs(x);
  const x2 = x * x;
  let term = ax;
  let sum = ax;
  for (let n = 1; n < 200; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (term < 1e-17 * sum) break;
  }
  const r = TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
  return x < 0 ? -r : r;
}

/**
 * erfc(x) for x ≥ SPLIT by the even continued fraction (A&S 7.1.14, contracted):
 *   erfc(x) = 2x·exp(−x²)/√π · 1/(2x²+1 − 1·2/(2x²+5 − 3·4/(2x²+9 − …)))
 * evaluated bottom-up with a fixed depth (no convergence test needed for x ≥ 2.5).
 */
function erfcLarge(x: number): number {
  const t = 2 * x * x;
  let f = t + 1 + 4 * CF_TERMS;
  for (let k = CF_TERMS; k >= 1; k--) {
    const a = (2 * k - 1) * (2 * k);
    f = t + 1 + 4 * (k - 1) - a / f;
  }
  // exp(−x²) with x² split so its rounding error is not amplified for large x
  const hi = Math.fround(x);
  const lo = x - hi;
  const e = Math.exp(-hi * hi) * Math.exp(-(2 * hi * lo + lo * lo));
  return (TWO_OVER_SQRT_PI * x * e) / f;
}

export function erf(x: number): number {
  if (Number.isNaN(x)) return NaN;
  const ax = Math.abs(x);
  if (ax < SPLIT) return erfSmall(x);
  if (ax > 6) return x > 0 ? 1 : -1; // erfc(6) ≈ 2e-17, below half an ulp of 1
  const r = 1 - erfcLarge(ax);
  return x > 0 ? r : -r;
}

/**
 * 1 − erf(x). From x = 2.5 on it is computed directly (full relative accuracy where it is
 * tiny); below, as 1 − erf(x), whose cancellation costs at most ~1e-12 relative near 2.5.
 */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  if (x >= SPLIT) return x > 27.3 ? 0 : erfcLarge(x);
  if (x > -SPLIT) return 1 - erfSmall(x);
  return x < -6 ? 2 : 2 - erfcLarge(-x);
}

/** GELU, exact form 0.5·x·(1 + erf(x/√2)), computed as 0.5·x·erfc(−x/√2) to avoid cancellation. */
export function gelu(x: number): number {
  return 0.5 * x * erfc(-x * Math.SQRT1_2);
}
