// perturbed(): the weights and dense inputs one float32 ulp away (seeded), embedding tables,
// ids and scenario indices kept.

import { describe, expect, it } from "vitest";
import { perturbed } from "../../src/parity/conditioning.ts";
import { generateInputs } from "../../src/parity/inputs.ts";
import { initWeights } from "../../src/weights/index.ts";
import { smallSpec } from "./models.ts";

const spec = smallSpec();
const weights = initWeights(spec, 3);
const batch = generateInputs(spec, { rows: 64, seed: 5 });

/** Distance in float32 ulps between two float32 values of the same sign. */
function ulps(a: number, b: number): number {
  const x = new Float32Array([a, b]);
  const i = new Int32Array(x.buffer);
  return Math.abs(i[0]! - i[1]!);
}

describe("perturbed", () => {
  const near = perturbed(spec, weights, batch);

  it("moves every non-embedding weight by one ulp, up or down, and keeps the embedding tables", () => {
    let up = 0;
    let down = 0;
    for (const [name, t] of weights) {
      const a = t.data as Float32Array;
      const b = near.weights.get(name)!.data as Float32Array;
      if (name.startsWith("features.")) {
        expect(b, name).toBe(a);
        continue;
      }
      for (let i = 0; i < a.length; i++) {
        if (a[i] === 0) continue; // ±0 moves to the smallest subnormal
        expect(ulps(a[i]!, b[i]!), `${name}[${i}]`).toBe(1);
        if (Math.abs(b[i]!) > Math.abs(a[i]!)) up++;
        else down++;
      }
    }
    expect(up).toBeGreaterThan(0);
    expect(down).toBeGreaterThan(0);
  });

  it("moves dense inputs by one ulp and keeps ids and scenario indices", () => {
    for (const f of spec.features) {
      const a = batch.features[f.name]!;
      const b = near.batch.features[f.name]!;
      if (f.kind === "categorical") expect(b).toBe(a);
      else for (let i = 0; i < a.length; i++) if (a[i] !== 0 && Number.isFinite(a[i])) expect(ulps(Number(a[i]), Number(b[i]))).toBe(1);
    }
    expect(near.batch.scenarios).toBe(batch.scenarios);
  });

  it("is seeded: the same seed gives the same values, another seed others", () => {
    const again = perturbed(spec, weights, batch);
    const other = perturbed(spec, weights, batch, 7);
    const name = [...weights].filter(([n]) => !n.startsWith("features.")).sort((a, b) => b[1].data.length - a[1].data.length)[0]![0];
    expect(Array.from(again.weights.get(name)!.data as Float32Array)).toEqual(Array.from(near.weights.get(name)!.data as Float32Array));
    expect(Array.from(other.weights.get(name)!.data as Float32Array)).not.toEqual(Array.from(near.weights.get(name)!.data as Float32Array));
  });
});
