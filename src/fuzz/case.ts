// One fuzz case as plain JSON (model input form, seeds, options), and how it becomes a
// spec, weights and an input batch: a reproducer file is exactly this, so replay is exact.

import type { InputBatch } from "../core/batch.ts";
import { Rng } from "../core/random.ts";
import type { ModelInput } from "../dsl/builders.ts";
import { parseModel } from "../dsl/parse.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import type { OptLevel } from "../passes/pipeline.ts";
import { canonicalLayout, type TensorSlot, type Weights } from "../weights/layout.ts";
import { initWeights } from "../weights/init.ts";
import { randomModel } from "./model.ts";

/** Multipliers applied after initWeights, by tensor role: how realistic scales are varied. */
export interface WeightScale {
  /** Gate output projections: large makes softmaxes peaked, small makes them near-uniform (near-ties). */
  gates?: number;
  /** Every linear weight of experts, gate MLPs and towers. */
  linears?: number;
  /** Feature, scenario and task embedding tables. */
  embeddings?: number;
}

export interface FuzzOptions {
  levels: OptLevel[];
  opsets: number[];
  /** onnxruntime graph optimisations: "all" exercises its fusions, "disabled" runs the graph as written. */
  ortOptimization: "all" | "disabled";
  /** Passed to every pass (near-tie rewrites, sparse dispatch). */
  nearTieRewrites: boolean;
  sparseDispatch: "auto" | "always" | "never";
}

export interface FuzzCase {
  model: ModelInput;
  weights: { seed: number; scale?: WeightScale };
  inputs: {
    seed: number;
    rows: number;
    /** Only these rows of the generated batch (a shrunk reproducer keeps the failing ones). */
    keep?: number[];
  };
  options: FuzzOptions;
}

export const ALL_LEVELS: OptLevel[] = [0, 1, 2];
export const FUZZ_OPSETS = [13, 17, 21];
export const DEFAULT_ROWS = 24;

/** The case that seed `seed` stands for: model, weights, inputs and options all derive from it. */
export function randomCase(seed: number): FuzzCase {
  const rng = new Rng(seed ^ 0x5eed);
  const scale: WeightScale = {};
  // Mostly initWeights' own scales; sometimes a role rescaled, as trained checkpoints drift.
  if (rng.next() < 0.15) scale.gates = rng.pick([0.01, 0.1, 4, 10]);
  if (rng.next() < 0.1) scale.linears = rng.pick([0.25, 0.5, 2]);
  if (rng.next() < 0.1) scale.embeddings = rng.pick([0.1, 5, 30]);
  return {
    model: randomModel(seed),
    weights: { seed: rng.nextU32(), ...(Object.keys(scale).length ? { scale } : {}) },
    inputs: { seed: rng.nextU32(), rows: DEFAULT_ROWS },
    options: {
      levels: [...ALL_LEVELS],
      opsets: [...FUZZ_OPSETS],
      ortOptimization: rng.next() < 0.75 ? "all" : "disabled",
      nearTieRewrites: rng.next() < 0.3,
      sparseDispatch: rng.pick(["auto", "always", "never"] as const),
    },
  };
}

/** The validated spec of a case (throws AesmError if the model input is invalid). */
export function caseSpec(c: FuzzCase): ModelSpec {
  return parseModel(c.model);
}

function scaleFor(slot: TensorSlot, scale: WeightScale): number {
  switch (slot.role) {
    case "gate.out.weight":
      return scale.gates ?? 1;
    case "linear.weight":
    case "tower.out.weight":
      return scale.linears ?? 1;
    case "embedding":
      return scale.embeddings ?? 1;
    default:
      return 1;
  }
}

export function caseWeights(spec: ModelSpec, c: FuzzCase): Weights {
  const weights = initWeights(spec, c.weights.seed);
  const scale = c.weights.scale;
  if (!scale) return weights;
  for (const slot of canonicalLayout(spec)) {
    const a = scaleFor(slot, scale);
    if (a === 1) continue;
    const t = weights.get(slot.name)!;
    const data = t.data as Float32Array;
    for (let i = 0; i < data.length; i++) data[i] = data[i]! * a;
  }
  return weights;
}

/** Ids just outside the vocabulary, far outside, and the int64 extremes: all must read a zero row. */
function outOfRange(vocab: number): bigint[] {
  return [-1n, BigInt(vocab), BigInt(vocab) + 1n, 1n << 40n, -(1n << 63n), (1n << 63n) - 1n];
}

/** Dense values for the "extreme" rows: signed zeros, tiny and large magnitudes. */
const EXTREME_DENSE = [0, -0, 1e-20, -1e-20, 3, -3, 8, -8, 100, -100, 1000, -1000];

/**
 * The case's input rows. The first rows walk every scenario combination when there are few
 * enough; categorical ids are uniform in range with a share at 0, at vocab − 1 and out of
 * range; dense values are standard normal, with a share of rows extreme.
 */
export function caseInputs(spec: ModelSpec, c: FuzzCase): InputBatch {
  const rows = c.inputs.rows;
  const rng = new Rng(c.inputs.seed);
  const batch: InputBatch = { rows, features: {}, scenarios: {} };
  const sizes = spec.scenarios.map((l) => l.values.length);
  const combos = sizes.reduce((a, b) => a * b, 1);
  for (const level of spec.scenarios) batch.scenarios[level.name] = new BigInt64Array(rows);
  for (let r = 0; r < rows; r++) {
    let rest = r;
    spec.scenarios.forEach((level, l) => {
      const s = sizes[l]!;
      let v: number;
      if (r < combos) {
        v = rest % s;
        rest = Math.floor(rest / s);
      } else v = rng.int(0, s);
      batch.scenarios[level.name]![r] = BigInt(v);
    });
  }
  const extremeRow = Array.from({ length: rows }, () => rng.next() < 0.1);
  for (const f of spec.features) {
    if (f.kind === "categorical") {
      const ids = new BigInt64Array(rows);
      const bad = outOfRange(f.vocab);
      for (let r = 0; r < rows; r++) {
        const u = rng.next();
        if (u < 0.1) ids[r] = 0n;
        else if (u < 0.2) ids[r] = BigInt(f.vocab - 1);
        else if (u < 0.3) ids[r] = bad[rng.int(0, bad.length)]!;
        else ids[r] = BigInt(rng.int(0, f.vocab));
      }
      batch.features[f.name] = ids;
    } else {
      const x = new Float32Array(rows * f.dim);
      for (let r = 0; r < rows; r++)
        for (let d = 0; d < f.dim; d++) x[r * f.dim + d] = extremeRow[r] ? rng.pick(EXTREME_DENSE) : rng.normal();
      batch.features[f.name] = x;
    }
  }
  return c.inputs.keep ? pickRows(spec, batch, c.inputs.keep) : batch;
}

/** The given rows of a batch, in the given order (copies). */
export function pickRows(spec: ModelSpec, batch: InputBatch, rows: readonly number[]): InputBatch {
  const out: InputBatch = { rows: rows.length, features: {}, scenarios: {} };
  for (const f of spec.features) {
    const src = batch.features[f.name]!;
    const width = f.kind === "categorical" ? 1 : f.dim;
    const dst = src instanceof BigInt64Array ? new BigInt64Array(rows.length * width) : new Float32Array(rows.length * width);
    rows.forEach((r, i) => dst.set(src.subarray(r * width, (r + 1) * width) as never, i * width));
    out.features[f.name] = dst;
  }
  for (const l of spec.scenarios) out.scenarios[l.name] = BigInt64Array.from(rows, (r) => batch.scenarios[l.name]![r]!);
  return out;
}
