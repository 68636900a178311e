// Per-output tolerances: the `1e-5 cvr:1e-4` syntax, precision defaults, and the errors.

import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { PRECISION_DEFAULTS, parseToleranceArg, resolveTolerances } from "../../src/parity/tolerance.ts";

describe("parseToleranceArg", () => {
  it("reads one global value and name:value overrides, from separate or combined tokens", () => {
    expect(parseToleranceArg("--atol", ["1e-5", "cvr:1e-4"])).toEqual({ global: 1e-5, perOutput: { cvr: 1e-4 } });
    expect(parseToleranceArg("--atol", ["1e-5 cvr:1e-4,ctr:0"])).toEqual({ global: 1e-5, perOutput: { cvr: 1e-4, ctr: 0 } });
    expect(parseToleranceArg("--rtol", ["cvr:0.01"])).toEqual({ perOutput: { cvr: 0.01 } });
  });

  it("rejects what is not a non-negative number, and conflicting repeats", () => {
    expect(() => parseToleranceArg("--atol", ["abc"])).toThrow('--atol: "abc" is not a non-negative number or <output>:<number> (e.g. --atol 1e-5 cvr:1e-4)');
    expect(() => parseToleranceArg("--atol", ["cvr:-1"])).toThrow('--atol: "cvr:-1" is not a non-negative number or <output>:<number> (e.g. --atol 1e-5 cvr:1e-4)');
    expect(() => parseToleranceArg("--rtol", [":1e-3"])).toThrow('--rtol: ":1e-3" has no output name before ":"');
    expect(() => parseToleranceArg("--atol", ["1e-5", "1e-4"])).toThrow("--atol: two global values given (0.00001 and 0.0001)");
    expect(() => parseToleranceArg("--atol", ["cvr:1e-5", "cvr:1e-4"])).toThrow('--atol: output "cvr" given twice (0.00001 and 0.0001)');
  });
});

describe("resolveTolerances", () => {
  it("takes the override, else the global value, else the precision default", () => {
    const t = resolveTolerances(["ctr", "cvr"], "fp32", parseToleranceArg("--atol", ["2e-5", "cvr:1e-4"]), parseToleranceArg("--rtol", ["ctr:1e-3"]));
    expect(t).toEqual({ ctr: { atol: 2e-5, rtol: 1e-3 }, cvr: { atol: 1e-4, rtol: 0 } });
    expect(resolveTolerances(["ctr"], "fp32", undefined, undefined)).toEqual({ ctr: { atol: 1e-5, rtol: 0 } });
    expect(resolveTolerances(["ctr"], "fp16", undefined, undefined)).toEqual({ ctr: { atol: 5e-3, rtol: 1e-2 } });
    expect(PRECISION_DEFAULTS.fp32.rmseMultiplier).toBe(2);
    expect(PRECISION_DEFAULTS.fp16.rmseMultiplier).toBe(3);
    expect(PRECISION_DEFAULTS.fp16.nearTie).toBe(1e-2);
    expect(PRECISION_DEFAULTS.fp16.fp32Rows).toBe(0);
  });

  it("names an override for an output the model does not have", () => {
    let err: unknown;
    try {
      resolveTolerances(["ctr", "cvr"], "fp32", parseToleranceArg("--atol", ["cvx:1e-4"]), undefined);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AesmError);
    expect((err as AesmError).message).toBe('--atol: unknown output "cvx" (the model\'s outputs: ctr, cvr)');
    expect((err as AesmError).exitCode).toBe(2);
  });
});
