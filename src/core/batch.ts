// A batch of model inputs as the ONNX graph receives them (MODEL.md §8).

import type { Tensor } from "./tensor.ts";

/** Categorical features: int64 ids `[B]`; dense features: float32 `[B, dim]` row-major; scenario levels: int64 `[B]`. */
export interface InputBatch {
  rows: number;
  features: Record<string, BigInt64Array | Float32Array>;
  scenarios: Record<string, BigInt64Array>;
}

/** Per-layer mixing weights `w` `[B, E]` (row-major), keyed by selection output name. */
export type SelectionWeights = Record<string, Float64Array | Float32Array>;

/** Name of the diagnostic output carrying a layer's mixing weights (MODEL.md §8). */
export function selectionOutputName(layerPath: string): string {
  return `select:${layerPath}`;
}

/** Layer paths in order: `scenario_layers.<level>.<i>` then `task_layers.<i>.<task>`. */
export function selectionLayerPaths(spec: {
  scenarios: { name: string; layers: number }[];
  tasks: { name: string }[];
  taskLayers: { layers: number } | null;
}): string[] {
  const out: string[] = [];
  for (const lvl of spec.scenarios) for (let i = 0; i < lvl.layers; i++) out.push(`scenario_layers.${lvl.name}.${i}`);
  if (spec.taskLayers)
    for (let i = 0; i < spec.taskLayers.layers; i++) for (const t of spec.tasks) out.push(`task_layers.${i}.${t.name}`);
  return out;
}

/** The batch as named tensors, shaped as the graph inputs (dense features [B, dim]). */
export function batchToFeeds(
  batch: InputBatch,
  spec: { features: { name: string; kind: string; dim: number }[]; scenarios: { name: string }[] },
): Record<string, Tensor> {
  const feeds: Record<string, Tensor> = {};
  for (const f of spec.features) {
    const data = batch.features[f.name]!;
    feeds[f.name] =
      f.kind === "categorical"
        ? { dtype: "int64", shape: [batch.rows], data }
        : { dtype: "float32", shape: [batch.rows, f.dim], data };
  }
  for (const l of spec.scenarios) feeds[l.name] = { dtype: "int64", shape: [batch.rows], data: batch.scenarios[l.name]! };
  return feeds;
}
