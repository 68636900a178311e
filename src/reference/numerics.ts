// Scalar math for the reference evaluator: erf/erfc to full double precision and
// the activations of MODEL.md §2, each with an emulated-float32 variant.

import type { Activation } from "../dsl/spec.ts";
import { assertNever } from "../core/diagnostics.ts";

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2/√π
const ONE_OVER_SQRT_PI = 0.5641895835477563; // 1/√π

/** erfc(1 + j/8), j = 0..40, correctly rounded (computed with mpmath at 50 digits). */
const ERFC_TABLE = [
  0.15729920705028513, 0.11161176829829224, 0.07709987174354177, 0.051829927217909674,
  0.033894853524689274, 0.021556266760016336, 0.013328328780817557, 0.00800994232988003,
  0.004677734981047266, 0.0026540293594823415, 0.0014627165866811518, 0.0007829382178911192,
  0.0004069520174449589, 0.00020537573614121745, 0.00010062192211963683, 4.785483974377341e-5,
  2.209049699858544e-5, 9.89673462524562e-6, 4.302779463675122e-6, 1.8152814274403558e-6,
  7.430983723414128e-7, 2.951401925115699e-7, 1.1372725656979665e-7, 4.2513944082491124e-8,
  1.541725790028002e-8, 5.423400799565066e-9, 1.8505741373867425e-9, 6.12483295356936e-10,
  1.9661604415428876e-10, 6.121610513034226e-11, 1.8485047721485312e-11, 5.413406466297941e-12,
  1.537459794428035e-12, 4.234563376336224e-13, 1.1310313266887154e-13, 2.9294885544871546e-14,
  7.357847917974398e-15, 1.7920200056510066e-15, 4.232136617425738e-16, 9.691555645277176e-17,
  2.1519736712498913e-17,
];
const TABLE_LO = 1;
const TABLE_STEP = 1 / 8;
const TABLE_HI = TABLE_LO + (ERFC_TABLE.length - 1) * TABLE_STEP; // 6

/**
 * erf on |x| < 1: 2/√π · Σₙ (−1)ⁿ x^(2n+1) / (n!·(2n+1)). Terms stay below |x|, so the
 * alternating sum loses at most a couple of ulps; ≤ 20 terms.
 */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x; // (−1)ⁿ x^(2n+1) / n!
  let sum = x;
  for (let n = 1; n < 40; n++) {
    term *= -x2 / n;
    const t = term / (2 * n + 1);
    sum += t;
    if (Math.abs(t) <= 1e-17 * Math.abs(sum)) break;
  }
  return TWO_OVER_SQRT_PI * sum;
}

/**
 * erfc on [1, 6] by a Taylor expansion around the nearest table point x₀ = 1 + j/8
 * (|h| = |x − x₀| ≤ 1/16), using d/dx erfc = −2/√π·e^(−x²) and
 * dⁿ/dxⁿ e^(−x²) = (−1)ⁿ Hₙ(x) e^(−x²) (physicists' Hermite, Hₙ₊₁ = 2x Hₙ − 2n Hₙ₋₁):
 *   erfc(x₀ + h) = erfc(x₀) − 2/√π · e^(−x₀²) · Σₙ (−1)ⁿ Hₙ(x₀) hⁿ⁺¹/(n+1)!.
 * x₀² is exact, so e^(−x₀²) is within an ulp; the terms shrink like (2x₀|h|)ⁿ/n! ≤ 0.75ⁿ/n!,
 * and 22 of them reach 1e-20 relative.
 */
function erfcTable(x: number): number {
  const j = Math.round((x - TABLE_LO) / TABLE_STEP);
  const x0 = TABLE_LO + j * TABLE_STEP;
  const h = x - x0;
  let hPrev = 1; // H₀
  let hCur = 2 * x0; // H₁
  let pow = h; // hⁿ⁺¹/(n+1)!
  let sum = h; // n = 0 term: H₀·h
  for (let n = 1; n < 22; n++) {
    pow *= h / (n + 1);
    sum += (n & 1 ? -hCur : hCur) * pow;
    const next = 2 * x0 * hCur - 2 * n * hPrev;
    hPrev = hCur;
    hCur = next;
  }
  return ERFC_TABLE[j]! - TWO_OVER_SQRT_PI * Math.exp(-x0 * x0) * sum;
}

/**
 * exp(−x²) with the rounding of x² removed: x = hi + lo with hi a float32 (so hi² is exact
 * in double), exp(−x²) = exp(−hi²)·exp(−(2·hi·lo + lo²)).
 */
function expMinusSquare(x: number): number {
  const hi = Math.fround(x);
  const lo = x - hi;
  return Math.exp(-hi * hi) * Math.exp(-(2 * hi * lo + lo * lo));
}

/**
 * erfc for x > 6 by Laplace's continued fraction
 *   erfc(x) = e^(−x²)/√π · 1/(x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + …)))))
 * (modified Lentz); < 20 steps there. Only gelu's far negative tail needs it.
 */
function erfcContinuedFraction(x: number): number {
  let f = x;
  let c = f;
  let d = 0;
  for (let k = 1; k < 200; k++) {
    const a = k / 2;
    d = 1 / (x + a * d);
    c = x + a / c;
    const delta = c * d;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-17) break;
  }
  return (ONE_OVER_SQRT_PI * expMinusSquare(x)) / f;
}

/** erfc for x ≥ 0. */
function erfcPositive(x: number): number {
  if (x < TABLE_LO) return 1 - erfSeries(x);
  if (x <= TABLE_HI) return erfcTable(x);
  if (x > 27.3) return 0; // below the smallest subnormal
  return erfcContinuedFraction(x);
}

/** The error function; absolute error below 1e-15 everywhere (tested against 50-digit values). */
export function erf(x: number): number {
  if (Number.isNaN(x) || x === 0) return x; // keeps the sign of ±0
  const ax = Math.abs(x);
  if (ax < TABLE_LO) return erfSeries(x);
  if (ax > TABLE_HI) return x > 0 ? 1 : -1; // erfc(6) ≈ 2e-17 < ulp(1)/2
  const r = 1 - erfcTable(ax);
  return x > 0 ? r : -r;
}

/** The complementary error function 1 − erf(x), with full relative accuracy for large x. */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return NaN;
  return x >= 0 ? erfcPositive(x) : 2 - erfcPositive(-x);
}

/**
 * GELU, exact erf form of MODEL.md §2: 0.5·x·(1 + erf(x/√2)), written as 0.5·x·erfc(−x/√2)
 * (the same number, without cancellation for very negative x).
 */
export function gelu(x: number): number {
  return 0.5 * x * erfc(-x * Math.SQRT1_2);
}

export function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

const LEAKY_SLOPE = 0.01;
const LEAKY_SLOPE_F32 = Math.fround(LEAKY_SLOPE);

/**
 * Apply `act` in place to `n` values of `x` from 0. In float32 mode each activation is one
 * elementwise op: evaluated in double from the (float32) input and rounded once, except
 * leaky_relu whose slope is itself a float32 constant.
 */
export function applyActivation(act: Activation, x: Float64Array, n: number, f32: boolean): void {
  switch (act) {
    case "none":
      return;
    case "relu":
      for (let i = 0; i < n; i++) if (x[i]! < 0) x[i] = 0; // NaN stays NaN
      return;
    case "leaky_relu":
      if (f32) for (let i = 0; i < n; i++) x[i] = x[i]! >= 0 ? x[i]! : Math.fround(LEAKY_SLOPE_F32 * x[i]!);
      else for (let i = 0; i < n; i++) x[i] = x[i]! >= 0 ? x[i]! : LEAKY_SLOPE * x[i]!;
      return;
    case "tanh":
      if (f32) for (let i = 0; i < n; i++) x[i] = Math.fround(Math.tanh(x[i]!));
      else for (let i = 0; i < n; i++) x[i] = Math.tanh(x[i]!);
      return;
    case "sigmoid":
      if (f32) for (let i = 0; i < n; i++) x[i] = Math.fround(sigmoid(x[i]!));
      else for (let i = 0; i < n; i++) x[i] = sigmoid(x[i]!);
      return;
    case "gelu":
      if (f32) for (let i = 0; i < n; i++) x[i] = Math.fround(gelu(x[i]!));
      else for (let i = 0; i < n; i++) x[i] = gelu(x[i]!);
      return;
    default:
      assertNever(act, "activation");
  }
}
