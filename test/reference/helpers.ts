// Plain-data model specs, weights and input batches for the reference tests
// (no builders or weight init: those modules are written separately).

import type { Activation, GateSpec, MlpSpec, ModelSpec, ScenarioLevelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { type Weights, canonicalLayout } from "../../src/weights/layout.ts";
import type { InputBatch } from "../../src/core/batch.ts";
import { f32 } from "../../src/core/tensor.ts";
import { Rng } from "../../src/core/random.ts";
import { randomBatch as lowerRandomBatch } from "../lower/fixtures.ts";

export function mlp(units: number[], act: Activation = "relu", batchNorm = false, bias = !batchNorm): MlpSpec {
  return { kind: "mlp", units, act, batchNorm, bias };
}

export function gate(opts: Partial<Omit<GateSpec, "kind">> = {}): GateSpec {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "gate", units: opts.units ?? [], act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

export function aesm(specific: number, shared: number, mask: "masked" | "reference" = "masked", eps = 1e-9): SelectSpec {
  return { kind: "aesm", specific, shared, eps, mask };
}

export function level(
  name: string,
  values: string[],
  opts: { dim?: number; layers?: number; experts: number; expert: MlpSpec; gate?: GateSpec; select: SelectSpec },
): ScenarioLevelSpec {
  return {
    name,
    values,
    dim: opts.dim ?? 1,
    layers: opts.layers ?? 1,
    experts: opts.experts,
    expert: opts.expert,
    gate: opts.gate ?? gate(),
    select: opts.select,
  };
}

export function model(parts: Partial<Omit<ModelSpec, "kind" | "version">> & Pick<ModelSpec, "features" | "scenarios" | "tasks">): ModelSpec {
  return {
    kind: "aesm.model",
    version: 1,
    name: parts.name ?? "test",
    features: parts.features,
    scenarios: parts.scenarios,
    tasks: parts.tasks,
    taskLayers: parts.taskLayers ?? null,
    batchNorm: parts.batchNorm ?? { eps: 1e-3 },
  };
}

/**
 * Weights for `spec` from explicit values by name; anything not given is zero, except batch
 * norm's γ and σ² which default to 1. Names not in the canonical layout are rejected, so a
 * typo cannot pass silently. Values must be float32-exact for the 1e-12 hand checks.
 */
export function weightsFrom(spec: ModelSpec, values: Record<string, number[] | number[][]>): Weights {
  const slots = canonicalLayout(spec);
  const known = new Set(slots.map((s) => s.name));
  for (const name of Object.keys(values)) if (!known.has(name)) throw new Error(`no tensor ${name} in the layout`);
  const w: Weights = new Map();
  for (const s of slots) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const given = values[s.name];
    let data: number[];
    if (given) {
      data = (given as (number | number[])[]).flat();
      if (data.length !== n) throw new Error(`${s.name}: ${data.length} values, expected ${n}`);
    } else data = new Array<number>(n).fill(s.role === "bn.weight" || s.role === "bn.running_var" ? 1 : 0);
    for (const v of data) if (Math.fround(v) !== v) throw new Error(`${s.name}: ${v} is not float32-exact`);
    w.set(s.name, f32([...s.shape], data));
  }
  return w;
}

/** Seeded random weights with sensible scales (positive running variances). */
export function randomWeights(spec: ModelSpec, seed: number): Weights {
  const rng = new Rng(seed);
  const w: Weights = new Map();
  for (const s of canonicalLayout(spec)) {
    const n = s.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    for (let i = 0; i < n; i++) {
      switch (s.role) {
        case "bn.running_var":
          data[i] = rng.uniform(0.5, 1.5);
          break;
        case "bn.weight":
          data[i] = rng.uniform(0.8, 1.2);
          break;
        case "bn.bias":
        case "bn.running_mean":
        case "linear.bias":
        case "gate.out.bias":
        case "tower.out.bias":
          data[i] = 0.1 * rng.normal();
          break;
        default:
          data[i] = rng.normal() / Math.sqrt(s.fanIn ?? 1);
      }
    }
    w.set(s.name, f32([...s.shape], data));
  }
  return w;
}

/** Random inputs; categorical ids in [0, vocab), scenario indices in [0, S_l). */
export function randomBatch(spec: ModelSpec, rows: number, seed: number): InputBatch {
  return lowerRandomBatch(spec, rows, seed, { outOfRange: false });
}

export const ids = (xs: number[]): BigInt64Array => BigInt64Array.from(xs.map((x) => BigInt(x)));

export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** Row r of a row-major [B, E] array. */
export function row(a: Float64Array | Uint8Array, r: number, E: number): number[] {
  return Array.from(a.subarray(r * E, (r + 1) * E));
}
