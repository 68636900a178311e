// Input generation for parity: seeded rows that cover every scenario value (every combination
// across levels when there are few enough), edge and out-of-range ids, and extreme dense values.

import type { InputBatch } from "../core/batch.ts";
import { Rng } from "../core/random.ts";
import type { ModelSpec } from "../dsl/spec.ts";

export interface GenerateOptions {
  rows: number;
  seed: number;
  /** Share of categorical ids drawn outside [0, vocab) (read as zero embeddings, MODEL.md §1). Default 0.02. */
  outOfRange?: number;
  /** Share of categorical ids at the edges 0 and vocab − 1. Default 0.02. */
  edge?: number;
  /** Share of rows whose dense values are drawn from EXTREME_DENSE. Default 0.02. */
  extreme?: number;
}

/** Out-of-range ids beyond the vocabulary: just outside each end, far outside, and the int64 extremes. */
export function outOfRangeIds(vocab: number): bigint[] {
  return [-1n, BigInt(vocab), BigInt(vocab) + 1n, 1n << 40n, -(1n << 63n), (1n << 63n) - 1n];
}

/**
 * Dense values for the extreme rows: signed zeros, tiny normals, and magnitudes large enough
 * to push gate logits past float32 exp's overflow (~88) in a naive softmax, small enough that
 * a stable float32 program still matches the float64 reference.
 */
export const EXTREME_DENSE: readonly number[] = [0, -0, 1e-20, -1e-20, 8, -8, 100, -100, 1000, -1000];

/**
 * Rows 0..C−1 walk the Cartesian product of scenario values (C its size) when C ≤ rows, so
 * every combination appears; otherwise the first rows still cycle through each level's values.
 * The remaining rows draw scenarios at random. Categorical ids: uniform in range, plus shares
 * at the edges and out of range. Dense values: standard normal, with a share of rows extreme.
 */
export function generateInputs(spec: ModelSpec, opts: GenerateOptions): InputBatch {
  const { rows, seed } = opts;
  const outOfRange = opts.outOfRange ?? 0.02;
  const edge = opts.edge ?? 0.02;
  const extreme = opts.extreme ?? 0.02;
  const rng = new Rng(seed);
  const batch: InputBatch = { rows, features: {}, scenarios: {} };

  const sizes = spec.scenarios.map((l) => l.values.length);
  const combos = sizes.reduce((a, b) => a * b, 1);
  const walk = combos <= rows;
  const cycle = Math.max(0, ...sizes);
  const levelIdx = sizes.map(() => new BigInt64Array(rows));
  for (let r = 0; r < rows; r++) {
    let rest = r;
    sizes.forEach((s, l) => {
      let v: number;
      if (walk && r < combos) {
        v = rest % s;
        rest = Math.floor(rest / s);
      } else if (!walk && r < cycle) v = r % s;
      else v = rng.int(0, s);
      levelIdx[l]![r] = BigInt(v);
    });
  }
  spec.scenarios.forEach((l, i) => (batch.scenarios[l.name] = levelIdx[i]!));

  const extremeRow = new Uint8Array(rows);
  for (let r = 0; r < rows; r++) extremeRow[r] = rng.next() < extreme ? 1 : 0;

  for (const f of spec.features) {
    if (f.kind === "categorical") {
      const ids = new BigInt64Array(rows);
      const bad = outOfRangeIds(f.vocab);
      for (let r = 0; r < rows; r++) {
        const u = rng.next();
        if (u < outOfRange) ids[r] = bad[rng.int(0, bad.length)]!;
        else if (u < outOfRange + edge) ids[r] = rng.next() < 0.5 ? 0n : BigInt(f.vocab - 1);
        else ids[r] = BigInt(rng.int(0, f.vocab));
      }
      batch.features[f.name] = ids;
    } else {
      const x = new Float32Array(rows * f.dim);
      for (let r = 0; r < rows; r++)
        for (let d = 0; d < f.dim; d++)
          x[r * f.dim + d] = extremeRow[r] ? EXTREME_DENSE[rng.int(0, EXTREME_DENSE.length)]! : rng.normal();
      batch.features[f.name] = x;
    }
  }
  return batch;
}

/** Rows [start, end) of a batch, as views (no copy). */
export function sliceBatch(batch: InputBatch, start: number, end: number): InputBatch {
  const out: InputBatch = { rows: end - start, features: {}, scenarios: {} };
  for (const [name, data] of Object.entries(batch.features)) {
    const width = batch.rows ? data.length / batch.rows : 0;
    out.features[name] = data.subarray(start * width, end * width) as BigInt64Array | Float32Array;
  }
  for (const [name, data] of Object.entries(batch.scenarios)) out.scenarios[name] = data.subarray(start, end);
  return out;
}

/** The first `rows` rows of a batch (views). */
export function headBatch(batch: InputBatch, rows: number): InputBatch {
  return rows >= batch.rows ? batch : sliceBatch(batch, 0, rows);
}

/** Scenario value names of one row, by level. */
export function scenarioOfRow(spec: ModelSpec, batch: InputBatch, row: number): Record<string, string> {
  const out: Record<string, string> = {};
  for (const l of spec.scenarios) {
    const i = Number(batch.scenarios[l.name]![row]!);
    out[l.name] = l.values[i] ?? String(i);
  }
  return out;
}

/** How many rows carry each value of each level. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * int64 values as numbers (exact up to 2^53), without a BigInt per value where the platform is
 * little-endian and a value fits in 31 bits (scenario indices, ids): read as its 32-bit halves.
 */
export function int64ToNumbers(values: BigInt64Array): Float64Array {
  const n = values.length;
  const out = new Float64Array(n);
  const words = LITTLE_ENDIAN ? new Int32Array(values.buffer, values.byteOffset, 2 * n) : null;
  for (let i = 0; i < n; i++) {
    const lo = words ? words[2 * i]! : -1;
    out[i] = words && words[2 * i + 1] === 0 && lo >= 0 ? lo : Number(values[i]!);
  }
  return out;
}

export function scenarioCoverage(spec: ModelSpec, batch: InputBatch): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const l of spec.scenarios) {
    const counts = new Array<number>(l.values.length).fill(0);
    const idx = int64ToNumbers(batch.scenarios[l.name]!);
    for (let r = 0; r < batch.rows; r++) counts[idx[r]!]!++;
    out[l.name] = Object.fromEntries(l.values.map((v, i) => [v, counts[i]!]));
  }
  return out;
}
