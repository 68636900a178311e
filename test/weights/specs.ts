// Plain ModelSpec values for the weights tests, written as data so these tests do not
// depend on the DSL builders or parser.

import type { Activation, GateSpec, MlpSpec, ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";

export function mlp(units: number[], opts: { act?: Activation; batchNorm?: boolean; bias?: boolean } = {}): MlpSpec {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "mlp", units, act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

export function gate(opts: { units?: number[]; act?: Activation; batchNorm?: boolean; bias?: boolean } = {}): GateSpec {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "gate", units: opts.units ?? [], act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

const aesm: SelectSpec = { kind: "aesm", specific: 1, shared: 1, eps: 1e-9, mask: "masked" };

/**
 * One scenario level (`page`: home, search, cart), one categorical and one dense feature,
 * no task layers, two towers. Small enough to evaluate by hand in a test.
 *   features.item.weight [10, 4]; x0 width 4 + 3 = 7
 *   expert: Linear(7 → 6) + relu; gate: Linear(7 + 2 → 4)
 */
export function oneLevelSpec(
  over: { experts?: number; expertUnits?: number[]; towerUnits?: number[]; select?: SelectSpec } = {},
): ModelSpec {
  return {
    kind: "aesm.model",
    version: 1,
    name: "one_level",
    features: [
      { kind: "categorical", name: "item", vocab: 10, dim: 4 },
      { kind: "dense", name: "price", dim: 3 },
    ],
    scenarios: [
      {
        name: "page",
        values: ["home", "search", "cart"],
        dim: 2,
        layers: 1,
        experts: over.experts ?? 4,
        expert: mlp(over.expertUnits ?? [6]),
        gate: gate(),
        select: over.select ?? aesm,
      },
    ],
    tasks: [
      { name: "ctr", tower: mlp(over.towerUnits ?? [5]) },
      { name: "cvr", tower: mlp(over.towerUnits ?? [5]) },
    ],
    taskLayers: null,
    batchNorm: { eps: 1e-3 },
  };
}

/**
 * The reference code's setting written out: batch norm and no bias in experts and gates,
 * two scenario levels (page → search), two stacked task layers, gate MLPs with tanh.
 */
export function referenceSpec(): ModelSpec {
  const expert = mlp([16, 8], { batchNorm: true });
  return {
    kind: "aesm.model",
    version: 1,
    name: "reference",
    features: [
      { kind: "categorical", name: "user", vocab: 50, dim: 8 },
      { kind: "categorical", name: "item", vocab: 30, dim: 8 },
      { kind: "dense", name: "stats", dim: 14 },
    ],
    scenarios: [
      {
        name: "page",
        values: ["home", "search"],
        dim: 4,
        layers: 2,
        experts: 5,
        expert: mlp([16], { batchNorm: true }),
        gate: gate({ batchNorm: true }),
        select: aesm,
      },
      {
        name: "search",
        values: ["a", "b", "c"],
        dim: 3,
        layers: 1,
        experts: 4,
        expert,
        gate: gate({ units: [6], act: "tanh", batchNorm: true }),
        select: { kind: "topK", k: 2 },
      },
    ],
    tasks: [
      { name: "ctr", tower: mlp([8, 4], { act: "tanh" }) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: {
      dim: 3,
      layers: 2,
      experts: 3,
      expert: mlp([8]),
      gate: gate(),
      select: { kind: "all" },
    },
    batchNorm: { eps: 1e-3 },
  };
}
