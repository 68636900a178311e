// Values that are functions of one scenario index alone, looked up instead of computed. A
// scenario level's index s [batch] takes S values (its embedding table has S rows), so
// anything computed from s by row-wise ops (OneHot, Unsqueeze, elementwise ops with constants:
// the selection's one-hot, q = onehot + eps, the gate sign 2·onehot − 1) has at most S
// different rows. Each such value that per-row code reads becomes Gather(table [S, …], s),
// the table evaluated once with the interpreter's kernels on s = 0 … S−1; the nodes that
// computed it are then dead. Bit-identical for every index in [0, S) (the only ones a model
// accepts: MODEL.md §1; the scenario embedding's Gather rejects the others already).

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { evaluateRows } from "./rowwise.ts";
import { type Pass, bump } from "./pass.ts";


/** A tabulated value: which index it is a function of, and its rows for index 0 … S−1. */
interface Table {
  index: Value;
  rows: Tensor;
}

/** S for a graph input read by Gather(table [S, d], input, axis 0), else null. */
function domainOf(x: Value): number | null {
  for (const u of x.users)
    if (u.op === "Gather" && u.inputs[1] === x && u.inputs[0]!.isConstant && attrInt(u.attrs, "axis", 0) === 0) {
      const S = u.inputs[0]!.type.shape[0];
      if (typeof S === "number") return S;
    }
  return null;
}

function tabulate(n: Node, known: Map<Value, Table>): Table | null {
  const tabled = n.inputs.filter((v) => known.has(v));
  if (tabled.length === 0) return null;
  const { index, rows: first } = known.get(tabled[0]!)!;
  if (tabled.some((v) => known.get(v)!.index !== index)) return null;
  const rows = evaluateRows(n, (v) => known.get(v)?.rows, first.shape[0]!);
  return rows ? { index, rows } : null;
}

export const tabulateIndex: Pass = {
  id: "tabulate-index",
  summary: "look up values that depend on one scenario index only (one-hots, q, gate signs) in a table of its S rows",
  run(graph: Graph, ctx) {
    const known = new Map<Value, Table>();
    for (const x of graph.inputs) {
      if (x.type.dtype !== "int64" || x.type.shape.length !== 1) continue;
      const S = domainOf(x);
      if (S !== null) known.set(x, { index: x, rows: { dtype: "int64", shape: [S], data: BigInt64Array.from({ length: S }, (_, i) => BigInt(i)) } });
    }
    const computed = new Set<Node>();
    for (const n of graph.nodes) {
      const t = tabulate(n, known);
      if (t) {
        known.set(n.outputs[0]!, t);
        computed.add(n);
      }
    }
    // the values per-row code (or an output) reads: each becomes one Gather
    const frontier = new Set<Value>();
    for (const n of computed) {
      const v = n.outputs[0]!;
      if (graph.isGraphOutput(v) || [...v.users].some((u) => !computed.has(u))) frontier.add(v);
    }
    // per index, only where it saves nodes: its tabulated nodes all go, one Gather per frontier value comes
    let changed = false;
    for (const [x] of [...known].filter(([v, t]) => v === t.index)) {
      const mine = [...computed].filter((n) => known.get(n.outputs[0]!)!.index === x);
      const reads = [...frontier].filter((v) => known.get(v)!.index === x);
      if (reads.length === 0 || mine.length <= reads.length) continue;
      for (const v of reads) {
        const t = known.get(v)!;
        const table = graph.addConstant(`${v.name}.table`, t.rows);
        const looked = graph.op("Gather", [table, x], { axis: 0 }, { scope: v.producer!.scope, names: [`${v.name}.lookup`] });
        graph.replaceAllUsesWith(v, looked);
        bump(ctx, "values-tabulated");
      }
      changed = true;
    }
    if (!changed) return { graph, changed };
    eliminateDeadCode(graph);
    graph.toposort();
    return { graph, changed: true };
  },
};
