// A weighted sum over the gate axis as one MatMul: Zi = Σ_g onehot_g · Z[g, :] (and any such
// contraction with a [.., G, 1] weight column) is a row vector times a matrix.
//
//   before                                               after
//     %t = Mul(%Z, %c)                  [.., G, E]         %z = MatMul(%c_row, %Z)   [.., 1, E]
//     %z = ReduceSum(%t, [−2], keepdims=1)  [.., 1, E]     (%c_row [.., 1, G]: %c with its last two axes swapped)
//
// %c must be a constant, or Gather(constant table, index) (then the table is transposed).
// Without keepdims, a constant %c of ±1 and 0 over the stacked streams, and Z a Reshape of the
// gate MatMul's [.., G·E]: MatMul(that, blocks c_g·I) gives [.., E] directly (the gate gap s).
// For a one-hot %c the result is exact (one product by 1, the rest by 0); otherwise it is the
// same sum in another order (float32 reassociation).

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

/** `t` [.., G, 1] → [.., 1, G] (the last two axes swapped; the data is the same for a column). */
export function swapLastTwo(t: Tensor): Tensor {
  const shape = [...t.shape];
  const r = shape.length;
  [shape[r - 2], shape[r - 1]] = [shape[r - 1]!, shape[r - 2]!];
  return { ...t, shape };
}

/** The row form of a weight column %c [.., G, 1]: a constant, or a Gather of a constant table. */
export function rowOf(g: Graph, c: Value, scope: string): Value | null {
  const shape = c.type.shape;
  if (shape.length < 3 || shape[shape.length - 1] !== 1 || c.type.dtype !== "float32") return null;
  if (c.isConstant) return g.addConstant(`${c.name}.row`, swapLastTwo(c.data!));
  const p = c.producer;
  if (p && p.op === "Gather" && attrInt(p.attrs, "axis", 0) === 0 && p.inputs[0]!.isConstant && p.inputs[1]!.type.shape.length === 1) {
    const table = g.addConstant(`${p.inputs[0]!.name}.row`, swapLastTwo(p.inputs[0]!.data!));
    return g.op("Gather", [table, p.inputs[1]!], { axis: 0 }, { scope, names: [`${c.name}.row`] });
  }
  return null;
}

/**
 * keepdims 0, c a constant of −1, 0 and 1 [.., 1, G, 1] and Z = Reshape(X [.., B, G·E]):
 * Σ_g c_g Z[.., g, :] = MatMul(X, M) with M [.., G·E, E] the blocks c_g·I. Exact: at most G
 * products by ±1 and zeros, summed as the ReduceSum would.
 */
function rewriteFlat(g: Graph, sum: Node, Z: Value, c: Value): boolean {
  const rank = Z.type.shape.length;
  const reshape = Z.producer;
  if (!c.isConstant || c.type.shape.length !== rank || c.type.shape[rank - 1] !== 1 || c.type.shape[rank - 3] !== 1) return false;
  if (!reshape || reshape.op !== "Reshape") return false;
  const X = reshape.inputs[0]!;
  const [G, E] = [Z.type.shape[rank - 2], Z.type.shape[rank - 1]];
  if (typeof G !== "number" || typeof E !== "number" || X.type.shape.length !== rank - 1 || X.type.shape[rank - 2] !== G * E) return false;
  const cv = c.data!.data as Float32Array;
  if (!cv.every((x) => x === 0 || x === 1 || x === -1)) return false;
  const lead = (c.type.shape as number[]).slice(0, rank - 3);
  const blocks = lead.reduce((a, b) => a * b, 1);
  const M = new Float32Array(blocks * G * E * E);
  for (let b = 0; b < blocks; b++)
    for (let k = 0; k < G; k++) for (let e = 0; e < E; e++) M[b * G * E * E + (k * E + e) * E + e] = cv[b * G + k]!;
  const Mc = g.addConstant(`${c.name}.blocks`, { dtype: "float32", shape: [...lead, G * E, E], data: M });
  const out = g.op("MatMul", [X, Mc], {}, { scope: sum.scope, names: [`${sum.outputs[0]!.name}.contracted`] });
  if (out.type.shape.length !== sum.outputs[0]!.type.shape.length || out.type.shape.some((d, i) => d !== sum.outputs[0]!.type.shape[i])) {
    g.removeNodes([out.producer!]);
    return false;
  }
  g.replaceAllUsesWith(sum.outputs[0]!, out);
  return true;
}

function rewrite(g: Graph, sum: Node): boolean {
  if (sum.op !== "ReduceSum") return false;
  if (attrInt(sum.attrs, "keepdims", 1) === 0) {
    const t = sum.inputs[0]!;
    const mul = t.producer;
    const rank = t.type.shape.length;
    const axes = attrInts(sum.attrs, "axes");
    if (!mul || mul.op !== "Mul" || t.users.size !== 1 || g.isGraphOutput(t) || rank < 3 || axes.length !== 1 || normAxis(axes[0]!, rank) !== rank - 2) return false;
    return rewriteFlat(g, sum, mul.inputs[0]!, mul.inputs[1]!) || rewriteFlat(g, sum, mul.inputs[1]!, mul.inputs[0]!);
  }
  const t = sum.inputs[0]!;
  const mul = t.producer;
  const rank = t.type.shape.length;
  const axes = attrInts(sum.attrs, "axes");
  if (!mul || mul.op !== "Mul" || t.users.size !== 1 || g.isGraphOutput(t) || rank < 3) return false;
  if (axes.length !== 1 || normAxis(axes[0]!, rank) !== rank - 2) return false;
  for (const k of [1, 0]) {
    const Z = mul.inputs[1 - k]!;
    const c = mul.inputs[k]!;
    if (Z.type.shape.length !== rank || Z.type.shape[rank - 2] !== c.type.shape[c.type.shape.length - 2]) continue;
    if (Z.type.dtype !== "float32" || Z.type.shape.some((d, i) => d !== t.type.shape[i])) continue;
    const row = rowOf(g, c, sum.scope);
    if (!row) continue;
    const out = g.op("MatMul", [row, Z], {}, { scope: sum.scope, names: [`${sum.outputs[0]!.name}.contracted`] });
    if (out.type.shape.some((d, i) => d !== sum.outputs[0]!.type.shape[i])) {
      g.removeNodes([out.producer!]);
      continue;
    }
    g.replaceAllUsesWith(sum.outputs[0]!, out);
    return true;
  }
  return false;
}

export const contractAsMatmul: Pass = {
  id: "contract-as-matmul",
  summary: "a weighted sum over the gate axis kept as [.., 1, E] (Zi) as one MatMul of the weight row and Z",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const n of [...graph.nodes])
      if (rewrite(graph, n)) {
        bump(ctx, "contractions");
        changed = true;
      }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
