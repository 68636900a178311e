// Random valid models for differential fuzzing: the whole family (1–3 scenario levels,
// 1–32 experts, every policy and k, activations, batch norm and bias on and off, gate MLPs,
// 1–4 tasks, 0–3 task layers), kept small enough that one case runs in well under a second.

import { Rng } from "../core/random.ts";
import type {
  GateInput,
  MlpInput,
  ModelInput,
  ScenarioLevelInput,
  SelectInput,
  TaskInput,
  TaskLayersInput,
} from "../dsl/builders.ts";
import { ACTIVATIONS, type Activation } from "../dsl/spec.ts";

/** Expert counts drawn with these weights: mostly small layers, sometimes the extremes. */
const EXPERT_COUNTS: readonly (readonly [number, number])[] = [
  [1, 3],
  [2, 6],
  [3, 6],
  [4, 6],
  [5, 3],
  [6, 3],
  [8, 3],
  [12, 1],
  [16, 1],
  [32, 1],
];

const VALUE_NAMES = ["home", "search", "feed", "cart", "video", "ads"] as const;

function weighted<T>(rng: Rng, items: readonly (readonly [T, number])[]): T {
  const total = items.reduce((s, [, w]) => s + w, 0);
  let u = rng.next() * total;
  for (const [item, w] of items) {
    u -= w;
    if (u < 0) return item;
  }
  return items[items.length - 1]![0];
}

function chance(rng: Rng, p: number): boolean {
  return rng.next() < p;
}

/** A random subset of [0, n), in increasing order, of size within [min, max]. */
function subset(rng: Rng, n: number, min: number, max: number): number[] {
  const size = Math.min(n, min + rng.int(0, Math.max(1, max - min + 1)));
  const all = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = rng.int(0, i + 1);
    [all[i], all[j]] = [all[j]!, all[i]!];
  }
  return all.slice(0, size).sort((a, b) => a - b);
}

/** Unit settings with each of batch norm and bias independently on or off (not just the defaults). */
function unitSettings(rng: Rng): { act: Activation; batchNorm: boolean; bias: boolean } {
  const batchNorm = chance(rng, 0.4);
  const bias = chance(rng, 0.2) ? batchNorm : !batchNorm; // mostly the default, sometimes both or neither
  return { act: rng.pick(ACTIVATIONS), batchNorm, bias };
}

/** Narrow layers when a layer has many experts, so the case stays cheap. */
function maxWidth(experts: number): number {
  return experts >= 12 ? 4 : 8;
}

function randomMlp(rng: Rng, minLayers: number, maxLayers: number, width: number): MlpInput {
  const n = minLayers + rng.int(0, maxLayers - minLayers + 1);
  const units = Array.from({ length: n }, () => 1 + rng.int(0, width));
  return { kind: "mlp", units, ...unitSettings(rng) };
}

function randomGate(rng: Rng): GateInput {
  const units = chance(rng, 0.25) ? Array.from({ length: 1 + rng.int(0, 2) }, () => 1 + rng.int(0, 6)) : [];
  return { kind: "gate", units, ...unitSettings(rng) };
}

/** Any policy the validator accepts for `experts` experts and these gate names (scenario values or tasks). */
function randomSelect(rng: Rng, experts: number, groups: readonly string[]): SelectInput {
  const kind = weighted(rng, [
    ["aesm", 4],
    ["topK", 2],
    ["all", 2],
    ["fixed", 2],
  ] as const);
  switch (kind) {
    case "all":
      return { kind: "all" };
    case "topK":
      return { kind: "topK", k: 1 + rng.int(0, experts) };
    case "aesm": {
      let specific = rng.int(0, experts + 1);
      let shared = rng.int(0, experts + 1);
      if (specific + shared === 0) chance(rng, 0.5) ? (specific = 1) : (shared = 1);
      return {
        kind: "aesm",
        specific,
        shared,
        eps: chance(rng, 0.8) ? 1e-9 : rng.pick([1e-6, 1e-3, 1e-12]),
        mask: chance(rng, 0.75) ? "masked" : "reference",
      };
    }
    case "fixed": {
      const shared = chance(rng, 0.6) ? subset(rng, experts, 0, Math.min(experts, 3)) : [];
      const specific: Record<string, number[]> = {};
      for (const g of groups) {
        // A value may be left out when shared experts cover it; otherwise it needs one expert.
        const min = shared.length > 0 ? 0 : 1;
        if (min === 0 && chance(rng, 0.3)) continue;
        specific[g] = subset(rng, experts, min, Math.min(experts, 3));
        if (specific[g]!.length === 0) delete specific[g];
      }
      return { kind: "fixed", specific, shared };
    }
  }
}

function randomLayer(rng: Rng, groups: readonly string[], maxLayers: number) {
  const experts = weighted(rng, EXPERT_COUNTS);
  return {
    layers: 1 + rng.int(0, maxLayers),
    experts,
    expert: randomMlp(rng, 1, 2, maxWidth(experts)),
    gate: randomGate(rng),
    select: randomSelect(rng, experts, groups),
  };
}

/** A random valid model in the JSON input form (what a model file holds). */
export function randomModel(seed: number): ModelInput {
  const rng = new Rng(seed);
  const features: Record<string, ModelInput["features"][string]> = {};
  const nFeatures = 1 + rng.int(0, 3);
  for (let i = 0; i < nFeatures; i++)
    features[`f${i}`] = chance(rng, 0.6)
      ? { kind: "categorical", vocab: weighted(rng, [[1, 1], [2, 2], [7, 3], [50, 3], [1000, 1]] as const), dim: 1 + rng.int(0, 6) }
      : { kind: "dense", dim: 1 + rng.int(0, 6) };

  const scenarios: Record<string, ScenarioLevelInput> = {};
  const nLevels = weighted(rng, [[1, 5], [2, 4], [3, 2]] as const);
  for (let l = 0; l < nLevels; l++) {
    const values = VALUE_NAMES.slice(0, 2 + rng.int(0, 3)).map((v) => `${v}${l}`);
    scenarios[`s${l}`] = { values, dim: 1 + rng.int(0, 4), ...randomLayer(rng, values, nLevels > 2 ? 1 : 2) };
  }

  const tasks: Record<string, TaskInput> = {};
  const nTasks = weighted(rng, [[1, 3], [2, 4], [3, 2], [4, 1]] as const);
  for (let t = 0; t < nTasks; t++) tasks[`t${t}`] = { tower: randomMlp(rng, 0, 2, 8) };

  let taskLayers: TaskLayersInput | null = null;
  if (chance(rng, 0.55)) taskLayers = { dim: 1 + rng.int(0, 4), ...randomLayer(rng, Object.keys(tasks), 3) };

  return {
    name: `fuzz${seed >>> 0}`,
    features,
    scenarios,
    tasks,
    taskLayers,
    batchNorm: { eps: chance(rng, 0.8) ? 1e-3 : 1e-5 },
  };
}
