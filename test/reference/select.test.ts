// The partial ranking the AESM selection uses against the full stable ranking it stands for:
// the same first k + 1 experts (ties to the lower index, ±0 equal, infinities ordered), and a
// refusal (the caller then ranks in full) where a score is NaN.

import { describe, expect, it } from "vitest";
import { Rng } from "../../src/core/random.ts";
import { rankAscending, rankSmallest } from "../../src/reference/select.ts";

describe("rankSmallest", () => {
  it("gives the first k + 1 entries of rankAscending's order", () => {
    const rng = new Rng(3);
    const values = [0, -0, 1, 1, 2, -1, Infinity, -Infinity, 0.5, 1e-300];
    let checked = 0;
    for (let trial = 0; trial < 3000; trial++) {
      const E = rng.int(1, 10);
      const score = Float64Array.from({ length: E }, () => (rng.next() < 0.5 ? values[rng.int(0, values.length)]! : rng.normal()));
      const full = new Int32Array(E);
      rankAscending(score, full);
      for (let k = 0; k <= E; k++) {
        const part = new Int32Array(E).fill(-1);
        expect(rankSmallest(score, E, k, part)).toBe(true);
        const n = Math.min(k + 1, E);
        expect(Array.from(part.subarray(0, n)), `scores ${Array.from(score)}, k ${k}`).toEqual(Array.from(full.subarray(0, n)));
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(10_000);
  });

  it("refuses scores with a NaN", () => {
    expect(rankSmallest(Float64Array.from([1, NaN, 0]), 3, 1, new Int32Array(3))).toBe(false);
    expect(rankSmallest(Float64Array.from([NaN]), 1, 0, new Int32Array(1))).toBe(false);
  });
});
