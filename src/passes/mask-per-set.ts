// The selection mask from one-index sets without the Concat: each ArgMax / ArgMin index
// [.., 1] gives its own mask row by OneHot, and the rows are combined by Max.
//
//   before                                                      after
//     %c = Concat(%i_sp, %i_sh, axis −1)            [.., 2]        %m_sp = OneHot(%i_sp, off, on)   [.., 1, E]
//     %m = ReduceMax(OneHot(%c, off, on), [−2], keepdims=1)        %m = Max(%m_sp, OneHot(%i_sh, off, on))
//
// With on ≥ off (the additive mask: on = 0, off = −1e30) the Max of the rows is the
// ReduceMax over them: the same numbers.

import type { Graph, Node } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { onlyUser } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

export const maskPerSet: Pass = {
  id: "mask-per-set",
  summary: "a selection mask over single-index sets as Max of one OneHot per set, without the Concat",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const c of [...graph.nodes]) {
      if (c.op !== "Concat" || !graph.nodes.includes(c)) continue;
      const rank = c.outputs[0]!.type.shape.length;
      if (normAxis(attrInt(c.attrs, "axis"), rank) !== rank - 1 || c.inputs.length < 2) continue;
      if (c.inputs.some((v) => v.type.shape[rank - 1] !== 1)) continue;
      const hot = onlyUser(graph, c.outputs[0]!);
      if (!hot || hot.op !== "OneHot") continue;
      const red = onlyUser(graph, hot.outputs[0]!);
      if (!red || red.op !== "ReduceMax" || attrInt(red.attrs, "keepdims", 1) !== 1) continue;
      const axes = attrInts(red.attrs, "axes");
      if (axes.length !== 1 || normAxis(axes[0]!, rank + 1) !== rank - 1) continue;
      const off = hot.attrs["off"] === undefined ? 0 : Number(hot.attrs["off"]);
      const on = hot.attrs["on"] === undefined ? 1 : Number(hot.attrs["on"]);
      if (!(on >= off)) continue;
      const rows = c.inputs.map((v, j) => graph.op("OneHot", [v], { ...hot.attrs }, { scope: hot.scope, names: [`${hot.outputs[0]!.name}.set${j}`] }));
      let mask = rows[0]!;
      for (const r of rows.slice(1)) mask = graph.op("Max", [mask, r], {}, { scope: red.scope, names: [`${red.outputs[0]!.name}.max`] });
      graph.replaceAllUsesWith(red.outputs[0]!, mask);
      eliminateDeadCode(graph);
      bump(ctx, "masks-split");
      changed = true;
    }
    if (changed) graph.toposort();
    return { graph, changed };
  },
};
