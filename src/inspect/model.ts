// What a model costs, part by part: parameters (from the canonical checkpoint layout) and
// FLOPs per row (from the widths), experts and gates per layer, the selection policy, the I/O.
//
// FLOP convention: a multiply-add counts as 2 FLOPs, and only the linear layers are counted
// (experts, gates, towers: 2·in·out each). Embedding lookups, bias adds, batch norm,
// activations, softmax and expert selection are O(width) per row and left out. Every expert
// and every gate of a layer is counted, since the compiled graph runs them all (MODEL.md §3–4).

import { type ExpertLayerSpec, type GateSpec, type MlpSpec, type ModelSpec, type SelectSpec, indicatorWidth, inputWidth, mlpOutWidth } from "../dsl/spec.ts";
import { type TensorSlot, canonicalLayout, layoutSize } from "../weights/layout.ts";

export const FLOP_CONVENTION =
  "FLOPs per row: 2 per multiply-add of the linear layers (experts, gates, towers); embedding lookups, bias, batch norm, activations and selection are not counted";

export interface EmbeddingReport {
  /** Canonical tensor name: `features.user_id.weight`, `scenarios.page.weight`, `tasks.weight`. */
  name: string;
  shape: number[];
  parameters: number;
}

export interface LayerReport {
  /** `scenario_layers.page.0` or `task_layers.0` (the canonical weight prefix). */
  path: string;
  inputWidth: number;
  outputWidth: number;
  experts: number;
  /** The expert MLP, e.g. `mlp([32], relu)`. */
  expert: string;
  gates: number;
  /** Width of what each gate reads: `[h; c_l]`, or `[h_t; c_{L−1}; task_emb(t)]`. */
  gateInputWidth: number;
  /** The selection policy, e.g. `aesm(specific 1, shared 1)`. */
  policy: string;
  /** Most experts a row mixes with a non-zero weight. */
  expertsPerRow: number;
  /** Streams the layer runs on: 1 for a scenario layer, one per task for a task layer. */
  streams: number;
  parameters: { experts: number; gates: number; total: number };
  flops: { experts: number; gates: number; total: number };
}

export interface TowerReport {
  task: string;
  /** e.g. `mlp([16], relu) → Linear(16→1) → sigmoid`. */
  layers: string;
  parameters: number;
  flops: number;
}

export type PartReport =
  | { kind: "embeddings"; name: "embeddings"; parameters: number; flops: number; tables: EmbeddingReport[] }
  | { kind: "scenario-level"; name: string; values: string[]; parameters: number; flops: number; layers: LayerReport[] }
  | { kind: "task-layers"; name: "task layers"; parameters: number; flops: number; layers: LayerReport[] }
  | { kind: "towers"; name: "towers"; parameters: number; flops: number; towers: TowerReport[] };

export interface IoReport {
  name: string;
  dtype: string;
  /** Dimensions; `"batch"` is the symbolic batch size. */
  shape: (number | string)[];
  /** What it carries: `categorical, vocab 1000`, `scenario: home | vertical`, `task ctr`. */
  note?: string;
}

export interface ModelReport {
  name: string;
  parameters: number;
  flops: number;
  parts: PartReport[];
  inputs: IoReport[];
  outputs: IoReport[];
  flopConvention: string;
}

/** 2 FLOPs per multiply-add of `Linear(in → out)`. */
const linearFlops = (inW: number, outW: number) => 2 * inW * outW;

function mlpFlops(mlp: MlpSpec, inW: number): number {
  let f = 0;
  let w = inW;
  for (const u of mlp.units) {
    f += linearFlops(w, u);
    w = u;
  }
  return f;
}

/** Hidden layers, then the projection to one logit per expert. */
function gateFlops(gate: GateSpec, inW: number, experts: number): number {
  let f = 0;
  let w = inW;
  for (const u of gate.units) {
    f += linearFlops(w, u);
    w = u;
  }
  return f + linearFlops(w, experts);
}

export function describeMlp(mlp: MlpSpec | GateSpec): string {
  const opts = [mlp.act, ...(mlp.batchNorm ? ["batch norm"] : []), ...(mlp.bias ? [] : ["no bias"])];
  return `${mlp.kind}([${mlp.units.join(", ")}], ${opts.join(", ")})`;
}

export function describePolicy(select: SelectSpec): string {
  switch (select.kind) {
    case "aesm":
      return `aesm(specific ${select.specific}, shared ${select.shared}${select.mask === "reference" ? ", reference mask" : ""})`;
    case "all":
      return "all()";
    case "topK":
      return `topK(${select.k})`;
    case "fixed": {
      const specific = Object.entries(select.specific).map(([k, v]) => `${k}: [${v.join(", ")}]`);
      return `fixed(${[...specific, `shared: [${select.shared.join(", ")}]`].join("; ")})`;
    }
  }
}

/** The most experts one row can mix; for `fixed`, over every value (or task) the layer has. */
function expertsPerRow(select: SelectSpec, experts: number, names: readonly string[]): number {
  switch (select.kind) {
    case "aesm":
      return Math.min(experts, select.specific + select.shared);
    case "all":
      return experts;
    case "topK":
      return select.k;
    case "fixed":
      return Math.max(...names.map((n) => new Set([...(select.specific[n] ?? []), ...select.shared]).size));
  }
}

const sumParams = (slots: readonly TensorSlot[]) => slots.reduce((n, s) => n + s.shape.reduce((a, b) => a * b, 1), 0);

/** Parameters and FLOPs per part of a validated model. */
export function inspectSpec(spec: ModelSpec, file?: string): ModelReport {
  layoutSize(spec, file); // refuses a model declaring more tensors than can be listed
  const slots = canonicalLayout(spec);
  const under = (prefix: string) => slots.filter((s) => s.name.startsWith(prefix));

  const tables: EmbeddingReport[] = slots
    .filter((s) => s.role === "embedding")
    .map((s) => ({ name: s.name, shape: s.shape, parameters: s.shape[0]! * s.shape[1]! }));
  const parts: PartReport[] = [
    { kind: "embeddings", name: "embeddings", parameters: tables.reduce((n, t) => n + t.parameters, 0), flops: 0, tables },
  ];

  const layer = (
    path: string,
    spec_: ExpertLayerSpec,
    h: number,
    gateIn: number,
    gateNames: readonly string[],
    streams: number,
  ): LayerReport => {
    const experts = sumParams(under(`${path}.experts.`));
    const gates = sumParams(under(`${path}.gates.`));
    // Every stream runs every expert and every gate (the gates' logits over all G feed selection).
    const fe = streams * spec_.experts * mlpFlops(spec_.expert, h);
    const fg = streams * gateNames.length * gateFlops(spec_.gate, gateIn, spec_.experts);
    return {
      path,
      inputWidth: h,
      outputWidth: mlpOutWidth(spec_.expert, h),
      experts: spec_.experts,
      expert: describeMlp(spec_.expert),
      gates: gateNames.length,
      gateInputWidth: gateIn,
      policy: describePolicy(spec_.select),
      expertsPerRow: expertsPerRow(spec_.select, spec_.experts, gateNames),
      streams,
      parameters: { experts, gates, total: experts + gates },
      flops: { experts: fe, gates: fg, total: fe + fg },
    };
  };
  const total = (layers: LayerReport[], key: "parameters" | "flops") => layers.reduce((n, l) => n + l[key].total, 0);

  let h = inputWidth(spec);
  spec.scenarios.forEach((lvl, l) => {
    const layers: LayerReport[] = [];
    for (let i = 0; i < lvl.layers; i++) {
      layers.push(layer(`scenario_layers.${lvl.name}.${i}`, lvl, h, h + indicatorWidth(spec, l), lvl.values, 1));
      h = mlpOutWidth(lvl.expert, h);
    }
    parts.push({
      kind: "scenario-level",
      name: `scenarios.${lvl.name}`,
      values: [...lvl.values],
      parameters: total(layers, "parameters"),
      flops: total(layers, "flops"),
      layers,
    });
  });

  const tl = spec.taskLayers;
  if (tl) {
    const taskNames = spec.tasks.map((t) => t.name);
    const c = indicatorWidth(spec, spec.scenarios.length - 1);
    const layers: LayerReport[] = [];
    for (let i = 0; i < tl.layers; i++) {
      layers.push(layer(`task_layers.${i}`, tl, h, h + c + tl.dim, taskNames, spec.tasks.length));
      h = mlpOutWidth(tl.expert, h);
    }
    parts.push({ kind: "task-layers", name: "task layers", parameters: total(layers, "parameters"), flops: total(layers, "flops"), layers });
  }

  const towers: TowerReport[] = spec.tasks.map((t) => {
    const w = mlpOutWidth(t.tower, h);
    return {
      task: t.name,
      layers: `${t.tower.units.length ? `${describeMlp(t.tower)} → ` : ""}Linear(${w}→1) → sigmoid`,
      parameters: sumParams(under(`towers.${t.name}.`)),
      flops: mlpFlops(t.tower, h) + linearFlops(w, 1),
    };
  });
  parts.push({
    kind: "towers",
    name: "towers",
    parameters: towers.reduce((n, t) => n + t.parameters, 0),
    flops: towers.reduce((n, t) => n + t.flops, 0),
    towers,
  });

  return {
    name: spec.name,
    parameters: parts.reduce((n, p) => n + p.parameters, 0),
    flops: parts.reduce((n, p) => n + p.flops, 0),
    parts,
    inputs: modelInputs(spec),
    outputs: spec.tasks.map((t) => ({ name: t.name, dtype: "float32", shape: ["batch"], note: `p(${t.name}) in [0, 1]` })),
    flopConvention: FLOP_CONVENTION,
  };
}

/** The graph inputs MODEL.md §8 prescribes, in order: features, then scenario levels. */
function modelInputs(spec: ModelSpec): IoReport[] {
  return [
    ...spec.features.map((f): IoReport =>
      f.kind === "categorical"
        ? { name: f.name, dtype: "int64", shape: ["batch"], note: `categorical, vocab ${f.vocab}, dim ${f.dim}` }
        : { name: f.name, dtype: "float32", shape: ["batch", f.dim], note: "dense" },
    ),
    ...spec.scenarios.map((l): IoReport => ({ name: l.name, dtype: "int64", shape: ["batch"], note: `scenario: ${l.values.join(" | ")}` })),
  ];
}
