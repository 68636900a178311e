// Mixture-of-experts layers: scenario layers (MODEL.md §3) and task layers (§4), each
// lowered unfused — one subgraph per expert and per gate, then selection and mixing.

import { selectionLayerPaths } from "../core/batch.ts";
import { invariant } from "../core/diagnostics.ts";
import type { ExpertLayerSpec, ModelSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";
import type { TaskInputs } from "./features.ts";
import { lowerGate, stackGateLogits } from "./gates.ts";
import { lowerMlp } from "./mlp.ts";
import { lowerSelect } from "./select.ts";

/** A layer's mixing weights w [batch, E], with its selectionLayerPaths path. */
export interface LayerSelection {
  path: string;
  w: Value;
}

export interface MixtureLayerArgs {
  /** Stream input h [batch, D_in]: what the experts read. */
  h: Value;
  /** What the gates read: [h; c_l], or [h_t; c_{L−1}; task_emb(t)]. */
  gateInput: Value;
  /** The row's scenario or task index [batch] int64. */
  index: Value;
  layer: ExpertLayerSpec;
  /** Names of the G gates' values (scenario values, or task names). */
  groups: readonly string[];
  /** Weight prefix: `scenario_layers.<level>.<i>` or `task_layers.<i>`. */
  prefix: string;
  /** Node scope and the selection path: `scenario_layers.<level>.<i>` or `task_layers.<i>.<task>`. */
  path: string;
  /** Name of w's value (the selection output's name). */
  selectName: string;
}

/**
 * One layer for one stream:
 *   y_e = expert_e(h)                        per expert, scope <path>.experts.<e>
 *   z_g = gate_g(gateInput)                  per gate,   scope <path>.gates.<g>
 *   Z   = stack(z_g)  [batch, G, E];  w = select(Z, index)      scope <path>.select
 *   h'  = Σ_e Slice(w, e) · y_e               (Slice, Mul, Add chain)   scope <path>.mix
 */
export function lowerMixtureLayer(cx: Lowering, a: MixtureLayerArgs): { out: Value; w: Value } {
  const E = a.layer.experts;
  const ys: Value[] = [];
  for (let e = 0; e < E; e++) ys.push(lowerMlp(cx, a.h, a.layer.expert, `${a.prefix}.experts.${e}`, `${a.path}.experts.${e}`));
  const zs = a.groups.map((_, g) => lowerGate(cx, a.gateInput, a.layer.gate, `${a.prefix}.gates.${g}`, `${a.path}.gates.${g}`));
  const selectScope = `${a.path}.select`;
  const Z = stackGateLogits(cx, zs, selectScope);
  const w = lowerSelect(cx, {
    Z,
    index: a.index,
    select: a.layer.select,
    groups: a.groups,
    experts: E,
    layerPrefix: a.prefix,
    scope: selectScope,
    name: a.selectName,
  });
  return { out: lowerMixture(cx, ys, w, `${a.path}.mix`), w };
}

/**
 * h' = Σ_e w[:, e] · y_e, summed in expert order:
 *   w_e = Slice(w, [e], [e+1], axes=[1])   [batch, 1]
 *   t_e = Mul(y_e, w_e);  h' = ((t_0 + t_1) + t_2) + …
 */
export function lowerMixture(cx: Lowering, ys: Value[], w: Value, scope: string): Value {
  invariant(ys.length > 0, `${scope}: a layer needs at least one expert`);
  const E = ys.length;
  let acc: Value | null = null;
  for (let e = 0; e < E; e++) {
    const we = cx.op("Slice", [w], { starts: [e], ends: [e + 1], axes: [1] }, scope, `${scope}.w${e}`);
    const named = e === E - 1 ? `${scope}.out` : null;
    const term: Value = cx.op("Mul", [ys[e]!, we], {}, scope, acc === null && named ? named : `${scope}.term${e}`);
    acc = acc === null ? term : cx.op("Add", [acc, term], {}, scope, named ?? `${scope}.sum${e}`);
  }
  return acc!;
}

/**
 * Scenario layers (§3): level by level, layer by layer, h ← layer(h) with gate input
 * `[h; c_l]` (one Concat per layer, shared by its gates) and the level's index s_l.
 */
export function lowerScenarioLayers(
  cx: Lowering,
  spec: ModelSpec,
  x0: Value,
  indicators: Value[],
  levelInputs: Value[],
  selectName: (path: string) => string,
): { h: Value; selections: LayerSelection[] } {
  let h = x0;
  const selections: LayerSelection[] = [];
  spec.scenarios.forEach((lvl, l) => {
    for (let i = 0; i < lvl.layers; i++) {
      const path = `scenario_layers.${lvl.name}.${i}`;
      const gateScope = `${path}.gates`;
      const gateInput = cx.op("Concat", [h, indicators[l]!], { axis: 1 }, gateScope, `${gateScope}.input`);
      const { out, w } = lowerMixtureLayer(cx, {
        h,
        gateInput,
        index: levelInputs[l]!,
        layer: lvl,
        groups: lvl.values,
        prefix: path,
        path,
        selectName: selectName(path),
      });
      selections.push({ path, w });
      h = out;
    }
  });
  return { h, selections };
}

/**
 * Task layers (§4): every task keeps its own stream h_t, all starting at h_L; layer i
 * applies the shared experts and the T shared gates to each stream, with gate input
 * `[h_t; c_{L−1}; task_emb(t)]` and the task's index in place of a scenario index.
 * Streams are lowered separately even where they coincide (layer 0 reads h_L in every
 * stream); merging the identical expert subgraphs is CSE's job.
 */
export function lowerTaskLayers(
  cx: Lowering,
  spec: ModelSpec,
  hL: Value,
  cLast: Value,
  tasks: TaskInputs,
  selectName: (path: string) => string,
): { streams: Value[]; selections: LayerSelection[] } {
  const tl = spec.taskLayers;
  const streams = spec.tasks.map(() => hL);
  const selections: LayerSelection[] = [];
  if (!tl) return { streams, selections };
  const taskNames = spec.tasks.map((t) => t.name);
  for (let i = 0; i < tl.layers; i++) {
    const prefix = `task_layers.${i}`;
    spec.tasks.forEach((task, t) => {
      const path = `${prefix}.${task.name}`;
      const gateScope = `${path}.gates`;
      const gateInput = cx.op("Concat", [streams[t]!, cLast, tasks.emb[t]!], { axis: 1 }, gateScope, `${gateScope}.input`);
      const { out, w } = lowerMixtureLayer(cx, {
        h: streams[t]!,
        gateInput,
        index: tasks.index[t]!,
        layer: tl,
        groups: taskNames,
        prefix,
        path,
        selectName: selectName(path),
      });
      selections.push({ path, w });
      streams[t] = out;
    });
  }
  return { streams, selections };
}

/** The layer paths the lowering produces, in selectionLayerPaths order (for checks). */
export function expectedSelectionPaths(spec: ModelSpec): string[] {
  return selectionLayerPaths({
    scenarios: spec.scenarios.map((l) => ({ name: l.name, layers: l.layers })),
    tasks: spec.tasks,
    taskLayers: spec.taskLayers,
  });
}
