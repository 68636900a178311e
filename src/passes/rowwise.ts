// Values computed row by row from a few known rows: row-constants knows one row for a value
// equal on every row, tabulate-index the S rows of a scenario index. Both evaluate the nodes
// over such values once, with the interpreter's kernels, on the known rows.

import { KERNELS } from "../backends/interp/kernels.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { ELEMENTWISE_OPS } from "../ir/ops.ts";

/**
 * The `rows` rows of `n`'s single output [batch, …], given the rows of its known inputs
 * (`known`) and its constant ones; null unless `n` works row by row: an elementwise op, OneHot,
 * Unsqueeze behind the batch axis, or (with `gather`) Gather from a constant table by known
 * indices. A constant operand that would change the row count (a batch-sized dim of its own)
 * is refused by the shape check.
 */
export function evaluateRows(n: Node, known: (v: Value) => Tensor | undefined, rows: number, opts: { gather?: boolean } = {}): Tensor | null {
  if (n.outputs.length !== 1) return null;
  const out = n.outputs[0]!;
  const rest = out.type.shape.slice(1);
  if (out.type.shape.length === 0 || typeof out.type.shape[0] !== "string" || !rest.every((d) => typeof d === "number")) return null;
  if (!n.inputs.some((v) => known(v)) || !n.inputs.every((v) => known(v) || v.isConstant)) return null;
  let ok = ELEMENTWISE_OPS.has(n.op) || n.op === "OneHot";
  if (n.op === "Unsqueeze") ok = !attrInts(n.attrs, "axes").some((a) => normAxis(a, out.type.shape.length) === 0);
  if (n.op === "Gather") ok = !!opts.gather && attrInt(n.attrs, "axis", 0) === 0 && n.inputs[0]!.isConstant && known(n.inputs[1]!) !== undefined;
  if (!ok) return null;
  const [t] = KERNELS[n.op](n.inputs.map((v) => known(v) ?? v.data!), n.attrs);
  const want = [rows, ...(rest as number[])];
  return t && t.dtype === out.type.dtype && t.shape.length === want.length && t.shape.every((d, i) => d === want[i]) ? t : null;
}
