// The masked softmax over the selected experts (lower/select.ts) with the mask added to the
// logits instead of chosen by Where: one OneHot writes the fill value directly, so the
// count, the comparison and the Where go.
//
//   before                                              after
//     %count = ReduceSum(OneHot(%chosen, E), [1])         %m = ReduceMax(OneHot(%chosen, E, off=fill, on=0), [1])
//     %sel   = Greater(%count, 0)                         %masked = Add(%Zi, %m)
//     %masked = Where(%sel, %Zi, fill)
//
// %m is 0 where an expert was chosen (once or twice) and fill (−1e30) elsewhere, so a
// selected logit is Zi + 0 = Zi exactly and an unselected one Zi + fill, which rounds to
// about −1e30 for any logit of magnitude below 1e22: exp(· − max) is exactly 0 either way and
// the softmax is bit-identical. (A logit of ±inf or NaN, which only float32 overflow of the
// gate could give, is not masked the same way; the reference has none.)

import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { onlyUser, scalarOf } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

interface MaskedLogits {
  where: Node;
  Zi: Value;
  chosen: Value;
  depth: number;
  /** The count's reduction axis (the chosen-index axis). */
  axis: number;
  fill: number;
}

/** Where(Greater(ReduceSum(OneHot(chosen, E), [a]), 0), Zi, fill), each intermediate read once. */
function match(graph: Graph, where: Node): MaskedLogits | null {
  if (where.op !== "Where") return null;
  const [selV, Zi, fillV] = where.inputs as [Value, Value, Value];
  const fill = scalarOf(fillV);
  // the lowering's MASK_FILL (−1e30): far below any logit, finite
  if (fill === null || fill > -1e30 || !Number.isFinite(fill) || Zi.type.dtype !== "float32") return null;
  const gt = selV.producer;
  if (!gt || gt.op !== "Greater" || scalarOf(gt.inputs[1]!) !== 0 || onlyUser(graph, selV) !== where) return null;
  const sum = gt.inputs[0]!.producer;
  if (!sum || sum.op !== "ReduceSum" || attrInt(sum.attrs, "keepdims", 1) !== 0 || onlyUser(graph, gt.inputs[0]!) !== gt) return null;
  const hotV = sum.inputs[0]!;
  const hot = hotV.producer;
  if (!hot || hot.op !== "OneHot" || hot.attrs["off"] !== undefined || hot.attrs["on"] !== undefined || onlyUser(graph, hotV) !== sum) return null;
  const axes = attrInts(sum.attrs, "axes");
  const rank = hotV.type.shape.length;
  if (axes.length !== 1 || normAxis(axes[0]!, rank) !== rank - 2) return null; // summed over the chosen indices
  return { where, Zi, chosen: hot.inputs[0]!, depth: attrInt(hot.attrs, "depth"), axis: rank - 2, fill };
}

export const additiveMask: Pass = {
  id: "additive-mask",
  summary: "masked softmax over the selected experts as Softmax(Zi + mask), the mask written by one OneHot",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes]) {
      const m = match(graph, n);
      if (!m) continue;
      const scope = n.scope;
      const hot = graph.op("OneHot", [m.chosen], { depth: m.depth, off: m.fill, on: 0 }, { scope, names: [`${scope}.mask_rows`] });
      const mask = graph.op("ReduceMax", [hot], { axes: [m.axis], keepdims: 0 }, { scope, names: [`${scope}.mask`] });
      const masked = graph.op("Add", [m.Zi, mask], {}, { scope, names: [`${scope}.masked_logits`] });
      graph.replaceAllUsesWith(n.outputs[0]!, masked);
      bump(ctx, "masks-added");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
