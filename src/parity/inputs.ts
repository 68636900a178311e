// Input generation for parity: seeded rows that cover every scenario value (every
// combination across levels when there are few enough), edge ids and out-of-range ids.

import type { InputBatch } from "../core/batch.ts";
import { Rng } from "../core/random.ts";
import type { ModelSpec } from "../dsl/spec.ts";

export interface GenerateOptions {
  rows: number;
  seed: number;
  /** Fraction of categorical ids drawn outside [0, vocab) (read as zero embeddings, MODEL.md §1). */
  outOfRange?: number;
}

/**
 * Rows 0..C-1 walk the Cartesian product of scenario values (C = its size, when
 * C ≤ rows), so every combination appears; the rest draw scenarios at random.
 * Categorical ids: uniform in range, with edge ids 0 and vocab-1 and a small
 * share of out-of-range ids (-1, vocab, 2^40). Dense values: standard normal.
 */
export function generateInputs(spec: ModelSpec, opts: GenerateOptions): InputBatch {
  const { rows, seed } = opts;
  const outOfRange = opts.outOfRange ?? 0.02;
  const rng = new Rng(seed);
  const batch: InputBatch = { rows, features: {}, scenarios: {} };

  const sizes = spec.scenarios.map((l) => l.values.length);
  const combos = sizes.reduce((a, b) => a * b, 1);
  const walk = combos <= rows;
  const levelIdx = sizes.map(() => new BigInt64Array(rows));
  for (let r = 0; r < rows; r++) {
    let rest = r;
    sizes.forEach((s, l) => {
      const v = walk && r < combos ? rest % s : rng.int(0, s);
      rest = Math.floor(rest / s);
      levelIdx[l]![r] = BigInt(v);
    });
  }
  spec.scenarios.forEach((l, i) => (batch.scenarios[l.name] = levelIdx[i]!));

  for (const f of spec.features) {
    if (f.kind === "categorical") {
      const ids = new BigInt64Array(rows);
      const bad = [-1n, BigInt(f.vocab), 1n << 40n];
      for (let r = 0; r < rows; r++) {
        const u = rng.next();
        if (u < outOfRange) ids[r] = bad[rng.int(0, bad.length)]!;
        else if (u < outOfRange + 0.02) ids[r] = rng.next() < 0.5 ? 0n : BigInt(f.vocab - 1);
        else ids[r] = BigInt(rng.int(0, f.vocab));
      }
      batch.features[f.name] = ids;
    } else {
      const x = new Float32Array(rows * f.dim);
      for (let i = 0; i < x.length; i++) x[i] = rng.normal();
      batch.features[f.name] = x;
    }
  }
  return batch;
}
