// Shared checks of the selection pass tests (select-closed-form, prune-static,
// prune-calibrated, sparse-dispatch): passes applied with options, and the whole
// before/after/reference check of one model.

import { expect } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import type { ModelSpec } from "../../src/dsl/spec.ts";
import { type Graph, verifyGraph } from "../../src/ir/index.ts";
import type { Pass, PassOptions } from "../../src/passes/pass.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { type Lowered, NEAR_TIE, REF_TOL, expectReferenceParity, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

/** Apply passes in order with `options` (toposort after a change, verify after each); counters as `<pass>/<name>`. */
export function applyWith(graph: Graph, passes: Pass[], options: PassOptions = {}): { graph: Graph; stats: Record<string, number> } {
  const stats: Record<string, number> = {};
  let g = graph;
  for (const p of passes) {
    const ctx = { options, stats: {} as Record<string, number> };
    const r = p.run(g, ctx);
    g = r.graph;
    if (r.changed) g.toposort();
    verifyGraph(g, p.id);
    for (const [k, v] of Object.entries(ctx.stats)) stats[`${p.id}/${k}`] = (stats[`${p.id}/${k}`] ?? 0) + v;
  }
  return { graph: g, stats };
}

/** Outputs' names, order and types: what a pass must keep. */
export function signature(g: Graph): string[] {
  return g.outputs.map((o) => `${o.name}:${o.value.type.dtype}[${o.value.type.shape}]`);
}

export interface ModelCheck {
  lowered: Lowered;
  graph: Graph;
  stats: Record<string, number>;
  before: Record<string, Tensor>;
  after: Record<string, Tensor>;
  nodesBefore: number;
}

/** Rows whose reference selection is a near-tie (margin below NEAR_TIE) at some layer. */
export function nearTieRows(l: Lowered): Uint8Array {
  const ref = evaluateReference(l.spec, l.weights, l.batch);
  const rows = new Uint8Array(l.batch.rows);
  for (const layer of ref.layers) for (let r = 0; r < rows.length; r++) if (layer.margin[r]! < NEAR_TIE) rows[r] = 1;
  return rows;
}

/** `t` without the rows set in `drop` (leading axis). */
function keepRows(t: Tensor, drop: Uint8Array): Tensor {
  const per = t.data.length / drop.length;
  const data = (t.data as Float32Array).filter((_, i) => !drop[Math.floor(i / per)]);
  return { ...t, shape: [data.length / per, ...t.shape.slice(1)], data };
}

/**
 * Lower `spec`, apply `passes` with `options`, and check: the interface is kept, the
 * interpreter's outputs are within `tol` of the lowered graph's, and the result keeps
 * parity with the float64 reference (near-ties excused by the reference's margins). With
 * `nearTies: "excused"` (a near-tie-changing rewrite), rows that are near-ties in the
 * reference are left out of the before/after comparison too; returns how many there were.
 */
export function checkModel(
  spec: ModelSpec,
  seed: number,
  passes: Pass[],
  options: PassOptions = {},
  check: { tol?: number; nearTies?: "compared" | "excused" } = {},
): ModelCheck & { excused: number } {
  const lowered = lowerFixture(spec, seed);
  const before = runGraph(lowered.graph, lowered.feeds);
  const nodesBefore = lowered.graph.nodes.length;
  const interfaceBefore = signature(lowered.graph);
  const { graph, stats } = applyWith(lowered.graph, passes, options);
  const after = runGraph(graph, lowered.feeds);
  expect(signature(graph)).toEqual(interfaceBefore);
  const tol = check.tol ?? REF_TOL;
  let excused = 0;
  if (check.nearTies === "excused") {
    const drop = nearTieRows(lowered);
    excused = drop.reduce((a, b) => a + b, 0);
    const strip = (o: Record<string, Tensor>) => Object.fromEntries(Object.entries(o).map(([k, t]) => [k, keepRows(t, drop)]));
    expectSameOutputs(strip(before), strip(after), tol, spec.name);
  } else expectSameOutputs(before, after, tol, spec.name);
  expectReferenceParity(lowered, after, spec.name);
  return { lowered, graph, stats, before, after, nodesBefore, excused };
}

/** Per row, the experts with w > 0 in a `select:<path>` output. */
export function usedExperts(out: Record<string, Tensor>, path: string): number[][] {
  const t = out[`select:${path}`]!;
  const [rows, E] = t.shape as [number, number];
  const w = t.data as Float32Array;
  return Array.from({ length: rows }, (_, r) => [...Array(E).keys()].filter((e) => w[r * E + e]! > 0));
}
