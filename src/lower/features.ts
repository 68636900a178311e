// Model inputs as IR (MODEL.md §1): feature embeddings and x0, the scenario indicators
// c_l, and each task's per-row index and embedding for the task layers.

import { invariant } from "../core/diagnostics.ts";
import type { FeatureSpec, ModelSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";

/**
 * A categorical feature's embedding [batch, dim]; ids outside [0, vocab) read a zero row
 * (MODEL.md §1) instead of failing the Gather:
 *   valid = And(GreaterOrEqual(id, 0), Less(id, vocab))
 *   rows  = Gather(table, Where(valid, id, 0))
 *   emb   = Where(Unsqueeze(valid, [1]), rows, 0.0)
 */
export function lowerCategorical(cx: Lowering, f: Extract<FeatureSpec, { kind: "categorical" }>, id: Value): Value {
  const scope = `features.${f.name}`;
  const table = cx.weight(`features.${f.name}.weight`);
  const zero = cx.i64(0);
  const vocab = cx.i64(f.vocab);
  const nonNeg = cx.op("GreaterOrEqual", [id, zero], {}, scope, `${scope}.nonneg`);
  const below = cx.op("Less", [id, vocab], {}, scope, `${scope}.below_vocab`);
  const valid = cx.op("And", [nonNeg, below], {}, scope, `${scope}.valid`);
  const safe = cx.op("Where", [valid, id, zero], {}, scope, `${scope}.safe_id`);
  const rows = cx.op("Gather", [table, safe], { axis: 0 }, scope, `${scope}.rows`);
  const validCol = cx.op("Unsqueeze", [valid], { axes: [1] }, scope, `${scope}.valid_col`);
  return cx.op("Where", [validCol, rows, cx.f32(0)], {}, scope, `${scope}.emb`);
}

/**
 * x0 = [f_1; f_2; …] [batch, F] in declaration order: categorical features embedded,
 * dense features as given; one Concat(axis=1) (none for a single feature).
 */
export function lowerFeatures(cx: Lowering, spec: ModelSpec, inputs: Value[]): Value {
  const parts = spec.features.map((f, k) => (f.kind === "categorical" ? lowerCategorical(cx, f, inputs[k]!) : inputs[k]!));
  if (parts.length === 1) return parts[0]!;
  return cx.op("Concat", parts, { axis: 1 }, "features", "x0");
}

/**
 * Scenario indicators c_l = [emb_0(s_0); …; emb_l(s_l)] [batch, d_0 + … + d_l]:
 *   emb_l = Gather(scenarios.<level>.weight, s_l);  c_0 = emb_0;  c_l = Concat(emb_0..emb_l)
 * Scenario indices are not range-checked here: the runtime wrapper rejects bad ones.
 */
export function lowerScenarioIndicators(cx: Lowering, spec: ModelSpec, levelInputs: Value[]): Value[] {
  const embs: Value[] = [];
  return spec.scenarios.map((lvl, l) => {
    const scope = `scenarios.${lvl.name}`;
    embs.push(cx.op("Gather", [cx.weight(`scenarios.${lvl.name}.weight`), levelInputs[l]!], { axis: 0 }, scope, `${scope}.emb`));
    if (l === 0) return embs[0]!;
    return cx.op("Concat", [...embs], { axis: 1 }, scope, `${scope}.indicator`);
  });
}

/** Per task t: its index t on every row [batch] int64, and task_emb(t) on every row [batch, d_T]. */
export interface TaskInputs {
  index: Value[];
  emb: Value[];
}

/**
 * The task layers need, per task, a [batch] index and a [batch, d_T] embedding row —
 * constants broadcast over a symbolic batch. The op vocabulary has no Shape/Expand, so
 * the batch dim is borrowed from the first scenario index, in exact integer arithmetic:
 *   zeros   = Mul(s_0, 0)                         [batch] int64, all 0 whatever s_0 holds
 *   index_t = Add(zeros, t)                       [batch] int64
 *   emb_t   = Gather(tasks.weight, index_t)       [batch, d_T], row t of the table
 * The embedding is then an ordinary lookup like the scenario indicators, and the
 * selection policies read index_t exactly as they read a scenario index.
 */
export function lowerTaskInputs(cx: Lowering, spec: ModelSpec, levelInputs: Value[]): TaskInputs {
  invariant(levelInputs.length > 0, "lowering: task layers need a scenario level (the validator requires one)");
  const scope = "tasks";
  const zeros = cx.op("Mul", [levelInputs[0]!, cx.i64(0)], {}, scope, "tasks.zeros");
  const table = cx.weight("tasks.weight");
  const index: Value[] = [];
  const emb: Value[] = [];
  spec.tasks.forEach((t, i) => {
    const idx = cx.op("Add", [zeros, cx.i64(i)], {}, scope, `tasks.${t.name}.index`);
    index.push(idx);
    emb.push(cx.op("Gather", [table, idx], { axis: 0 }, scope, `tasks.${t.name}.emb`));
  });
  return { index, emb };
}
