// Small models as plain ModelSpec data, seeded random weights and input batches for the
// lowering tests (independent of the DSL builders and of weights/init on purpose).

import { batchToFeeds } from "../../src/core/batch.ts";
import type { InputBatch } from "../../src/core/batch.ts";
import { Rng } from "../../src/core/random.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import type {
  Activation,
  GateSpec,
  MlpSpec,
  ModelSpec,
  ScenarioLevelSpec,
  SelectSpec,
  TaskLayersSpec,
  TaskSpec,
} from "../../src/dsl/spec.ts";
import { type Weights, canonicalLayout } from "../../src/weights/layout.ts";

export function mlp(units: number[], opts: { act?: Activation; batchNorm?: boolean; bias?: boolean } = {}): MlpSpec {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "mlp", units, act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

export function gate(opts: { units?: number[]; act?: Activation; batchNorm?: boolean; bias?: boolean } = {}): GateSpec {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "gate", units: opts.units ?? [], act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

export const aesm = (specific: number, shared: number, mask: "masked" | "reference" = "masked"): SelectSpec => ({
  kind: "aesm",
  specific,
  shared,
  eps: 1e-9,
  mask,
});

export function level(
  name: string,
  values: string[],
  opts: Partial<Omit<ScenarioLevelSpec, "name" | "values">> & { select: SelectSpec },
): ScenarioLevelSpec {
  return {
    name,
    values,
    dim: opts.dim ?? 3,
    layers: opts.layers ?? 1,
    experts: opts.experts ?? 4,
    expert: opts.expert ?? mlp([6]),
    gate: opts.gate ?? gate(),
    select: opts.select,
  };
}

export function taskLayers(opts: Partial<TaskLayersSpec> & { select: SelectSpec }): TaskLayersSpec {
  return {
    dim: opts.dim ?? 2,
    layers: opts.layers ?? 1,
    experts: opts.experts ?? 3,
    expert: opts.expert ?? mlp([5]),
    gate: opts.gate ?? gate(),
    select: opts.select,
  };
}

export function model(parts: {
  name?: string;
  features?: ModelSpec["features"];
  scenarios: ScenarioLevelSpec[];
  tasks?: TaskSpec[];
  taskLayers?: TaskLayersSpec | null;
  eps?: number;
}): ModelSpec {
  return {
    kind: "aesm.model",
    version: 1,
    name: parts.name ?? "m",
    features: parts.features ?? [
      { kind: "categorical", name: "user", vocab: 7, dim: 3 },
      { kind: "dense", name: "ctx", dim: 2 },
    ],
    scenarios: parts.scenarios,
    tasks: parts.tasks ?? [
      { name: "ctr", tower: mlp([4]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: parts.taskLayers ?? null,
    batchNorm: { eps: parts.eps ?? 1e-3 },
  };
}

/** Seeded weights for every slot of the canonical layout; gate logits scaled ×3 so selections differ by scenario. */
export function randomWeights(spec: ModelSpec, seed: number): Weights {
  const rng = new Rng(seed);
  const weights: Weights = new Map();
  for (const slot of canonicalLayout(spec)) {
    const n = slot.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    const fanIn = slot.fanIn ?? 1;
    const draw = (): number => {
      switch (slot.role) {
        case "embedding":
          return rng.normal();
        case "linear.weight":
          return (rng.normal() * 1.4) / Math.sqrt(fanIn);
        case "gate.out.weight":
          return (3 * rng.normal()) / Math.sqrt(fanIn);
        case "tower.out.weight":
          return (1.5 * rng.normal()) / Math.sqrt(fanIn);
        case "linear.bias":
        case "gate.out.bias":
        case "tower.out.bias":
          return rng.uniform(-0.2, 0.2);
        case "bn.weight":
          return rng.uniform(0.5, 1.5);
        case "bn.bias":
        case "bn.running_mean":
          return rng.uniform(-0.3, 0.3);
        case "bn.running_var":
          return rng.uniform(0.3, 2);
      }
    };
    for (let i = 0; i < n; i++) data[i] = draw();
    weights.set(slot.name, { dtype: "float32", shape: [...slot.shape], data });
  }
  return weights;
}

/**
 * A batch of `rows` rows; categorical ids include out-of-range ones (−1, vocab, large) on some
 * rows unless `outOfRange` is false (then every id is in [0, vocab)).
 */
export function randomBatch(spec: ModelSpec, rows: number, seed: number, opts: { outOfRange?: boolean } = {}): InputBatch {
  const rng = new Rng(seed);
  const outOfRange = opts.outOfRange ?? true;
  const features: InputBatch["features"] = {};
  for (const f of spec.features) {
    if (f.kind === "categorical") {
      const ids = new BigInt64Array(rows);
      for (let r = 0; r < rows; r++) {
        if (!outOfRange) {
          ids[r] = BigInt(rng.int(0, f.vocab));
          continue;
        }
        const u = rng.next();
        ids[r] = u < 0.05 ? -1n : u < 0.1 ? BigInt(f.vocab) : u < 0.12 ? 1n << 40n : u < 0.14 ? -(1n << 50n) : BigInt(rng.int(0, f.vocab));
      }
      features[f.name] = ids;
    } else {
      const x = new Float32Array(rows * f.dim);
      for (let i = 0; i < x.length; i++) x[i] = rng.normal();
      features[f.name] = x;
    }
  }
  const scenarios: InputBatch["scenarios"] = {};
  for (const lvl of spec.scenarios) {
    const s = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) s[r] = BigInt(rng.int(0, lvl.values.length));
    scenarios[lvl.name] = s;
  }
  return { rows, features, scenarios };
}

/** The graph feeds for a batch (MODEL.md §8 shapes). */
export function feedsOf(spec: ModelSpec, batch: InputBatch): Record<string, Tensor> {
  return batchToFeeds(batch, spec);
}
