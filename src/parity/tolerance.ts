// Tolerances for parity: defaults per precision, and the `--atol 1e-5 cvr:1e-4` syntax
// (one global value plus per-output overrides), resolved against the model's outputs.

import { userError } from "../core/diagnostics.ts";

/** An element fails only when its absolute error exceeds atol AND its relative error exceeds rtol. */
export interface Tolerance {
  atol: number;
  rtol: number;
}

export type ParityPrecision = "fp32" | "fp16";

export interface PrecisionDefaults extends Tolerance {
  /** torch.compile-style check: rmse(onnx) ≤ multiplier · rmse(float32 reference) + atol / 10. */
  rmseMultiplier: number;
  /** Selection score gap below which a flipped selection counts as a near-tie. */
  nearTie: number;
  /** Rows the emulated float32 reference evaluates (RMSE baseline and float32 arbitration); 0 = off. */
  fp32Rows: number;
}

/**
 * fp32: atol 1e-5 on probabilities in [0, 1] is ~170 float32 ULPs at 0.5, room for a few
 * reassociated sums per layer but far below any real semantic error; rtol 0 keeps small
 * probabilities from hiding behind a relative rule. Multiplier 2 as in torch._dynamo's `same`.
 * fp16: half has an 11-bit significand (ULP at 0.5 is 4.9e-4), so atol 1e-3 is ~2 ULPs at the
 * output after ~10 layers of half rounding would otherwise fail; rtol 1e-2 (~20 half ULPs)
 * passes small probabilities whose absolute error is already tiny. Multiplier 3 as torch uses
 * for half types. Measured on the example model (10,000 rows, CPU): max abs error 4.8e-3,
 * p99 1.2e-3, so fp16's atol is 5e-3 (its RMSE floor atol/10 = 5e-4 then covers half
 * weights' own RMSE of ~3.5e-4). Gates read half activations, which moves selection scores
 * by up to ~2e-3: fp16's near-tie gap is 1e-2. The float32 reference is no baseline for a
 * half model (its arbitration would excuse nothing and its RMSE is ~100× smaller): off.
 */
export const PRECISION_DEFAULTS: Record<ParityPrecision, PrecisionDefaults> = {
  fp32: { atol: 1e-5, rtol: 0, rmseMultiplier: 2, nearTie: 1e-4, fp32Rows: 10_000 },
  fp16: { atol: 5e-3, rtol: 1e-2, rmseMultiplier: 3, nearTie: 1e-2, fp32Rows: 0 },
};

/** What `--atol`/`--rtol` said: an optional global value and per-output overrides, in order given. */
export interface ToleranceArg {
  global?: number;
  perOutput: Record<string, number>;
}

/**
 * Parse the tokens of one or more `--atol`/`--rtol` flags: each token is split on commas and
 * whitespace; a bare number is the global value, `name:number` an override. Throws an Error
 * whose message names the flag (the CLI turns it into a usage error, exit 2).
 */
export function parseToleranceArg(flag: string, tokens: readonly string[]): ToleranceArg {
  const out: ToleranceArg = { perOutput: Object.create(null) as Record<string, number> };
  for (const raw of tokens)
    for (const tok of raw.split(/[\s,]+/).filter((t) => t !== "")) {
      const colon = tok.lastIndexOf(":");
      const name = colon >= 0 ? tok.slice(0, colon) : undefined;
      const num = colon >= 0 ? tok.slice(colon + 1) : tok;
      const value = Number(num);
      if (num.trim() === "" || !Number.isFinite(value) || value < 0)
        throw new Error(
          `${flag}: "${tok}" is not a non-negative number or <output>:<number> (e.g. ${flag} 1e-5 cvr:1e-4)`,
        );
      if (name === undefined) {
        if (out.global !== undefined && out.global !== value)
          throw new Error(`${flag}: two global values given (${out.global} and ${value})`);
        out.global = value;
      } else {
        if (name === "") throw new Error(`${flag}: "${tok}" has no output name before ":"`);
        if (name in out.perOutput && out.perOutput[name] !== value)
          throw new Error(`${flag}: output "${name}" given twice (${out.perOutput[name]} and ${value})`);
        out.perOutput[name] = value;
      }
    }
  return out;
}

/**
 * The tolerance of every output: override, else the flag's global value, else the precision
 * default. An override naming no output of the model is a usage error (AESM4110, exit 2).
 */
export function resolveTolerances(
  outputs: readonly string[],
  precision: ParityPrecision,
  atol: ToleranceArg | undefined,
  rtol: ToleranceArg | undefined,
): Record<string, Tolerance> {
  const defaults = PRECISION_DEFAULTS[precision];
  for (const [flag, arg] of [
    ["--atol", atol],
    ["--rtol", rtol],
  ] as const)
    for (const name of Object.keys(arg?.perOutput ?? {}))
      if (!outputs.includes(name))
        throw userError("AESM4110", flag, `unknown output "${name}" (the model's outputs: ${outputs.join(", ")})`);
  const out: Record<string, Tolerance> = {};
  for (const name of outputs)
    out[name] = {
      atol: atol?.perOutput[name] ?? atol?.global ?? defaults.atol,
      rtol: rtol?.perOutput[name] ?? rtol?.global ?? defaults.rtol,
    };
  return out;
}
