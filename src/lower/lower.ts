// ModelSpec + Weights → IR graph: the faithful, unfused lowering of MODEL.md §1–§5, §7
// with the graph interface of §8. Optimisations are passes over its result.

import { selectionOutputName } from "../core/batch.ts";
import { invariant } from "../core/diagnostics.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import type { Graph } from "../ir/graph.ts";
import type { Weights } from "../weights/layout.ts";
import { validateWeights } from "../weights/validate.ts";
import { Lowering } from "./context.ts";
import { lowerFeatures, lowerScenarioIndicators, lowerTaskInputs } from "./features.ts";
import { expectedSelectionPaths, lowerScenarioLayers, lowerTaskLayers } from "./layers.ts";
import { lowerTower } from "./towers.ts";

export interface LowerOptions {
  /** Add one `select:<layer path>` output per layer with its mixing weights w [batch, E] (default true). */
  selectionOutputs?: boolean;
}

/** The symbolic batch dimension of every graph input and output. */
export const BATCH = "batch";

/**
 * Lower a validated spec and its weights (checked here against the canonical layout;
 * problems throw AesmError naming each tensor) to a graph named `spec.name`:
 *   inputs   one per feature (int64 [batch] or float32 [batch, dim]), then one per
 *            scenario level (int64 [batch]), by declared name
 *   body     features → x0;  indicators c_l;  scenario layers;  task inputs and task
 *            layers (if any);  towers
 *   outputs  one per task (float32 [batch], by task name), then, with selectionOutputs,
 *            `select:<path>` float32 [batch, E] per layer in selectionLayerPaths order
 */
export function lowerModel(spec: ModelSpec, weights: Weights, options: LowerOptions = {}): Graph {
  validateWeights(spec, weights);
  const cx = new Lowering(spec, weights);
  const g = cx.graph;

  const featureInputs = spec.features.map((f) =>
    f.kind === "categorical"
      ? g.addInput(f.name, { dtype: "int64", shape: [BATCH] })
      : g.addInput(f.name, { dtype: "float32", shape: [BATCH, f.dim] }),
  );
  const levelInputs = spec.scenarios.map((lvl) => g.addInput(lvl.name, { dtype: "int64", shape: [BATCH] }));

  const x0 = lowerFeatures(cx, spec, featureInputs);
  const indicators = lowerScenarioIndicators(cx, spec, levelInputs);
  const scenario = lowerScenarioLayers(cx, spec, x0, indicators, levelInputs, selectionOutputName);

  let streams = spec.tasks.map(() => scenario.h);
  const selections = [...scenario.selections];
  if (spec.taskLayers) {
    const tasks = lowerTaskInputs(cx, spec, levelInputs);
    const cLast = indicators[indicators.length - 1]!;
    const taskLayers = lowerTaskLayers(cx, spec, scenario.h, cLast, tasks, selectionOutputName);
    streams = taskLayers.streams;
    selections.push(...taskLayers.selections);
  }

  spec.tasks.forEach((t, i) => g.setOutput(t.name, lowerTower(cx, streams[i]!, t)));
  if (options.selectionOutputs ?? true) {
    const paths = expectedSelectionPaths(spec);
    invariant(
      paths.length === selections.length && paths.every((p, i) => p === selections[i]!.path),
      () => `lowering: layer paths [${selections.map((s) => s.path)}] differ from selectionLayerPaths [${paths}]`,
    );
    for (const s of selections) g.setOutput(selectionOutputName(s.path), s.w);
  }
  return g;
}
