// Sparse dispatch of selected experts: each expert runs only on the rows that gave it a
// non-zero weight (gather the rows, run the expert, scatter the weighted result back), where
// a cost model says this beats running every expert on every row (many experts, small k).

import { invariant } from "../core/diagnostics.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Mixture, expertChain, findMixtures, flopsPerRow, maxSelected } from "./mixture.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** Rows assumed per call when the cost model weighs dense against sparse (batch is symbolic). */
export const DEFAULT_TARGET_BATCH = 1024;

/**
 * Fixed cost of dispatching one expert, in flop-equivalents: nine small nodes besides the
 * expert's own (mask, NonZero, gathers, ScatterND), each some 25 µs in onnxruntime on CPU,
 * where dense MatMuls run at some 30 GFLOP/s (measured on a 2-core machine).
 */
const DISPATCH_OVERHEAD_FLOPS = 8e6;
/** Per gathered or scattered element (memory traffic, not arithmetic). */
const MOVE_FLOPS_PER_ELEMENT = 4;
/** Sparse must be estimated this much cheaper to be chosen: the model is rough. */
const REQUIRED_GAIN = 0.8;

export interface SparseCost {
  dense: number;
  sparse: number;
  /** Experts a row can select at most (from the selection's structure). */
  k: number;
  experts: number;
}

/**
 * Estimated flops of the layer's experts at `batch` rows, dense vs sparse. Sparse assumes the
 * selected experts spread evenly, so each expert sees batch·k/E rows; an expert subgraph that
 * other mixes also read (CSE-shared task-layer experts) costs dense only its share.
 */
export function sparseCost(m: Mixture, batch: number): SparseCost {
  const E = m.w.type.shape[1] as number;
  const k = Math.min(maxSelected(m.w), E);
  let dense = 0;
  let sparse = 0;
  for (const t of m.terms) {
    const { root, nodes } = expertChain(t.y);
    const f = flopsPerRow(nodes);
    const sharers = Math.max(1, [...t.y.users].filter((u) => u.op === "Mul").length);
    const rows = (batch * k) / E;
    const inW = Number(root.type.shape[1] ?? 1);
    const outW = Number(t.y.type.shape[1] ?? 1);
    dense += (batch * (f + outW)) / sharers;
    sparse += rows * f + DISPATCH_OVERHEAD_FLOPS + batch + MOVE_FLOPS_PER_ELEMENT * rows * (inW + 3 * outW);
  }
  return { dense, sparse, k, experts: E };
}

function i64(g: Graph, name: string, value: number): Value {
  return g.addConstant(name, { dtype: "int64", shape: [], data: new BigInt64Array([BigInt(value)]) });
}

/**
 * One mix, dense → sparse. Before (lowering, layers.ts):
 *   y_e = expert_e(h);  t_e = Mul(y_e, Slice(w, e));  out = ((t_a + t_b) + t_c) + …
 * After, per expert e in the same order, starting from acc = 0 [batch, D]:
 *   w_e   = Gather(w, e, axis=1)                       [batch]
 *   nz    = NonZero(Greater(w_e, 0))                   [1, n_e]   n_e: a symbol per expert
 *   y'_e  = expert_e(Gather(h, Squeeze(nz, [0])))      [n_e, D]   (the expert's nodes, cloned; scope …experts.<e>.sparse)
 *   rows  = Transpose(nz)                              [n_e, 1]
 *   acc   = ScatterND(acc, rows, Mul(y'_e, Gather(w_e, rows)), reduction=add)
 * Each output row adds the same non-zero terms in the same order as before (the dropped
 * terms were 0·y_e), so the result equals the dense one up to how a runtime's MatMul rounds
 * a subset of rows. The dense experts die unless another mix reads them.
 */
function dispatch(g: Graph, m: Mixture, ctx: PassContext): void {
  const scope = `${m.path}.mix.sparse`;
  const w = m.w;
  const D = m.out.type.shape[1];
  invariant(typeof D === "number", `${m.path}: mix output width must be static`);
  const zero = g.addConstant(`${scope}.zero`, { dtype: "float32", shape: [], data: new Float32Array([0]) });
  const zeros = g.addConstant(`${scope}.zeros`, { dtype: "float32", shape: [1, D], data: new Float32Array(D) });
  // acc = w[:, :1] · 0 = +0 exactly (w is a finite softmax), with the batch dim of w.
  const w0 = g.op("Slice", [w], { starts: [0], ends: [1], axes: [1] }, { scope, names: [`${scope}.w_first`] });
  let acc = g.op("Mul", [w0, zeros], {}, { scope, names: [`${scope}.acc`] });
  for (const t of m.terms) {
    const e = t.expert;
    const at = `${scope}.e${e}`;
    const { root, nodes } = expertChain(t.y);
    const we = g.op("Gather", [w, i64(g, `${at}.index`, e)], { axis: 1 }, { scope, names: [`${at}.w`] });
    const hit = g.op("Greater", [we, zero], {}, { scope, names: [`${at}.hit`] });
    const nz = g.op("NonZero", [hit], { dim: `${m.path}.e${e}.rows` }, { scope, names: [`${at}.nonzero`] });
    const list = g.op("Squeeze", [nz], { axes: [0] }, { scope, names: [`${at}.row_list`] });
    const rows = g.op("Transpose", [nz], { perm: [1, 0] }, { scope, names: [`${at}.rows`] });
    let y = g.op("Gather", [root, list], { axis: 0 }, { scope, names: [`${at}.x`] });
    for (const n of nodes) y = cloneRowwise(g, n, y);
    const wr = g.op("Gather", [we, rows], { axis: 0 }, { scope, names: [`${at}.w_rows`] });
    const term = g.op("Mul", t.mul.inputs[0] === t.y ? [y, wr] : [wr, y], {}, { scope, names: [`${at}.term`] });
    acc = g.op("ScatterND", [acc, rows, term], { reduction: "add" }, { scope, names: [`${at}.acc`] });
  }
  g.replaceAllUsesWith(m.out, acc);
  bump(ctx, "layers-dispatched");
  bump(ctx, "experts-dispatched", m.terms.length);
}

/** The same row-wise node over the gathered rows `x` (its constants shared), in scope `<scope>.sparse`. */
function cloneRowwise(g: Graph, n: Node, x: Value): Value {
  const inputs = n.inputs.map((v) => (v.isConstant ? v : x));
  const out = n.outputs[0]!;
  return g.op(n.op, inputs, n.attrs, { scope: `${n.scope}.sparse`, names: [`${out.name}.sparse`] });
}

/** Why a mixture cannot be dispatched sparsely, or null. */
function unsupported(m: Mixture): string | null {
  const batch = m.w.type.shape[0];
  if (typeof m.out.type.shape[1] !== "number" || m.out.type.shape.length !== 2) return "the mix is not [batch, D]";
  for (const t of m.terms) {
    if (t.y.type.shape.length !== 2) return `expert ${t.expert}'s output is not [batch, D]`;
    const { root } = expertChain(t.y);
    if (root.type.shape.length !== 2 || root.type.shape[0] !== batch) return `expert ${t.expert}'s input does not have w's rows`;
  }
  return null;
}

export const sparseDispatch: Pass = {
  id: "sparse-dispatch",
  summary: "run each expert only on the rows that selected it, where the cost model says it pays",
  run(graph: Graph, ctx) {
    const mode = ctx.options.sparseDispatch ?? "auto";
    if (mode === "never") return { graph, changed: false };
    const batch = ctx.options.sparseTargetBatch ?? DEFAULT_TARGET_BATCH;
    let changed = false;
    for (const m of findMixtures(graph).mixtures) {
      const why = unsupported(m);
      if (why) {
        bump(ctx, `skipped: ${why}`);
        continue;
      }
      if (mode === "auto") {
        const c = sparseCost(m, batch);
        if (!(c.sparse < REQUIRED_GAIN * c.dense)) {
          bump(ctx, "layers-kept-dense");
          continue;
        }
      }
      dispatch(graph, m, ctx);
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
