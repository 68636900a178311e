// The canonical checkpoint layout of MODEL.md §6, derived from a spec:
// every tensor name with its shape, in a stable order.

import {
  type GateSpec,
  type MlpSpec,
  type ModelSpec,
  indicatorWidth,
  inputWidth,
  mlpOutWidth,
} from "../dsl/spec.ts";
import { userError } from "../core/diagnostics.ts";
import type { Tensor } from "../core/tensor.ts";

/** Float32 tensors by canonical name. */
export type Weights = Map<string, Tensor>;

export interface TensorSlot {
  name: string;
  shape: number[];
  /** What the tensor is, for the initialiser: scale and sign conventions differ. */
  role:
    | "embedding"
    | "linear.weight"
    | "linear.bias"
    | "bn.weight"
    | "bn.bias"
    | "bn.running_mean"
    | "bn.running_var"
    | "gate.out.weight"
    | "gate.out.bias"
    | "tower.out.weight"
    | "tower.out.bias";
  /** Input width of the linear this tensor belongs to (fan-in), when relevant. */
  fanIn?: number;
}

function bnSlots(prefix: string, width: number): TensorSlot[] {
  return [
    { name: `${prefix}.weight`, shape: [width], role: "bn.weight" },
    { name: `${prefix}.bias`, shape: [width], role: "bn.bias" },
    { name: `${prefix}.running_mean`, shape: [width], role: "bn.running_mean" },
    { name: `${prefix}.running_var`, shape: [width], role: "bn.running_var" },
  ];
}

/** Slots of an MLP's unit layers under `prefix` (`….layers.<j>.linear` / `.bn`). */
export function mlpSlots(prefix: string, mlp: MlpSpec, inWidth: number): TensorSlot[] {
  const out: TensorSlot[] = [];
  let w = inWidth;
  mlp.units.forEach((u, j) => {
    out.push({ name: `${prefix}.layers.${j}.linear.weight`, shape: [u, w], role: "linear.weight", fanIn: w });
    if (mlp.bias) out.push({ name: `${prefix}.layers.${j}.linear.bias`, shape: [u], role: "linear.bias", fanIn: w });
    if (mlp.batchNorm) out.push(...bnSlots(`${prefix}.layers.${j}.bn`, u));
    w = u;
  });
  return out;
}

export function gateSlots(prefix: string, gate: GateSpec, inWidth: number, experts: number): TensorSlot[] {
  const out: TensorSlot[] = [];
  let w = inWidth;
  gate.units.forEach((u, j) => {
    out.push({ name: `${prefix}.layers.${j}.linear.weight`, shape: [u, w], role: "linear.weight", fanIn: w });
    out.push({ name: `${prefix}.layers.${j}.linear.bias`, shape: [u], role: "linear.bias", fanIn: w });
    w = u;
  });
  out.push({ name: `${prefix}.out.weight`, shape: [experts, w], role: "gate.out.weight", fanIn: w });
  if (gate.bias) out.push({ name: `${prefix}.out.bias`, shape: [experts], role: "gate.out.bias", fanIn: w });
  if (gate.batchNorm) out.push(...bnSlots(`${prefix}.bn`, experts));
  return out;
}

/** All tensors the model needs, in canonical order. */
export function canonicalLayout(spec: ModelSpec): TensorSlot[] {
  return [...canonicalSlots(spec)];
}

/** Weight tensors a model may declare before aesm refuses to list them (a typo such as `experts: 1e8` would exhaust memory). */
export const MAX_TENSORS = 1_000_000;

/**
 * The number of tensors and parameters the model declares, counted one slot at a time;
 * AESM4007 past MAX_TENSORS tensors, before anything is listed or allocated.
 */
export function layoutSize(spec: ModelSpec, file?: string): { tensors: number; parameters: number } {
  let tensors = 0;
  let parameters = 0;
  for (const slot of canonicalSlots(spec)) {
    if (++tensors > MAX_TENSORS)
      throw userError("AESM4007", "", `the model declares more than ${MAX_TENSORS.toLocaleString("en-US")} weight tensors (check experts, layers and units)`, file);
    parameters += slot.shape.reduce((a, b) => a * b, 1);
  }
  return { tensors, parameters };
}

/**
 * The same slots one at a time, so a consumer can stop early: a hostile model may declare
 * billions of experts, and listing them all would exhaust memory before any check ran.
 */
export function* canonicalSlots(spec: ModelSpec): Generator<TensorSlot> {
  for (const f of spec.features)
    if (f.kind === "categorical") yield { name: `features.${f.name}.weight`, shape: [f.vocab, f.dim], role: "embedding" };
  for (const lvl of spec.scenarios)
    yield { name: `scenarios.${lvl.name}.weight`, shape: [lvl.values.length, lvl.dim], role: "embedding" };
  if (spec.taskLayers) yield { name: "tasks.weight", shape: [spec.tasks.length, spec.taskLayers.dim], role: "embedding" };

  let h = inputWidth(spec);
  for (const [l, lvl] of spec.scenarios.entries()) {
    const c = indicatorWidth(spec, l);
    for (let i = 0; i < lvl.layers; i++) {
      const p = `scenario_layers.${lvl.name}.${i}`;
      for (let e = 0; e < lvl.experts; e++) yield* mlpSlots(`${p}.experts.${e}`, lvl.expert, h);
      for (let g = 0; g < lvl.values.length; g++) yield* gateSlots(`${p}.gates.${g}`, lvl.gate, h + c, lvl.experts);
      h = mlpOutWidth(lvl.expert, h);
    }
  }

  const tl = spec.taskLayers;
  if (tl) {
    const c = indicatorWidth(spec, spec.scenarios.length - 1);
    for (let i = 0; i < tl.layers; i++) {
      const p = `task_layers.${i}`;
      for (let e = 0; e < tl.experts; e++) yield* mlpSlots(`${p}.experts.${e}`, tl.expert, h);
      for (let t = 0; t < spec.tasks.length; t++) yield* gateSlots(`${p}.gates.${t}`, tl.gate, h + c + tl.dim, tl.experts);
      h = mlpOutWidth(tl.expert, h);
    }
  }

  for (const t of spec.tasks) {
    const p = `towers.${t.name}`;
    yield* mlpSlots(p, t.tower, h);
    const w = mlpOutWidth(t.tower, h);
    yield { name: `${p}.out.weight`, shape: [1, w], role: "tower.out.weight", fanIn: w };
    yield { name: `${p}.out.bias`, shape: [1], role: "tower.out.bias", fanIn: w };
  }
}
