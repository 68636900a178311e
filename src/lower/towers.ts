// Task towers (MODEL.md §4): each task's MLP, output projection and sigmoid.

import type { TaskSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";
import { lowerLinear, lowerMlp } from "./mlp.ts";

/**
 * p_t [batch] from the task's final stream h_t:
 *   MLP (towers.<task>.layers.*) → Linear(→1) (towers.<task>.out) → Sigmoid → Squeeze(axes=[1])
 * The result is named after the task (the graph output's name).
 */
export function lowerTower(cx: Lowering, h: Value, task: TaskSpec): Value {
  const scope = `towers.${task.name}`;
  const u = lowerMlp(cx, h, task.tower, scope, scope);
  const logit = lowerLinear(cx, u, `${scope}.out`, true, scope, `${scope}.logit`);
  const p = cx.op("Sigmoid", [logit], {}, scope, `${scope}.prob`);
  return cx.op("Squeeze", [p], { axes: [1] }, scope, task.name);
}
