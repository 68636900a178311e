// Shared checks of the fusion pass tests (fold-batch-norm, fuse-gates, fuse-experts): the
// models to run them on, and parity of the rewritten graph with the unrewritten one (the
// interpreter, 1e-6) and with the float64 reference (1e-5, identical selected sets).

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { expect } from "vitest";
import { selectionOutputName } from "../../src/core/batch.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { runGraph } from "../../src/backends/interp/index.ts";
import { type Graph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import type { Pass, PassContext } from "../../src/passes/pass.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { testModels } from "../../fixtures/models.ts";
import { aesm, feedsOf, gate, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";

/** Interpreter before vs after a rewrite: float32 reassociation only. */
export const INTERP_TOL = 1e-6;
/** Rewritten graph vs the float64 reference (MODEL.md's float32 parity). */
export const REF_TOL = 1e-5;
const ROWS = 96;

/** Models of test/lower/fixtures.ts: every policy, BN and bias on and off, every activation, 1–3 levels, gate MLPs, no task layers. */
function loweringModels(): { name: string; spec: ModelSpec }[] {
  const policies: [string, SelectSpec, SelectSpec][] = [
    ["aesm", aesm(1, 1), aesm(1, 1)],
    ["aesm overlapping", aesm(2, 2), aesm(2, 1)],
    ["aesm specific only", aesm(2, 0), aesm(1, 0)],
    ["aesm shared only", aesm(0, 2), aesm(0, 1)],
    ["aesm reference mask", aesm(2, 2, "reference"), aesm(2, 1, "reference")],
    ["all", { kind: "all" }, { kind: "all" }],
    ["topK", { kind: "topK", k: 2 }, { kind: "topK", k: 1 }],
    [
      "fixed",
      { kind: "fixed", specific: { a: [0], b: [1, 2], c: [3] }, shared: [2] },
      { kind: "fixed", specific: { ctr: [0], cvr: [1] }, shared: [2] },
    ],
  ];
  const out = policies.map(([name, s, t]) => ({
    name: `policy ${name}`,
    spec: model({ scenarios: [level("page", ["a", "b", "c"], { select: s })], taskLayers: taskLayers({ select: t }) }),
  }));
  out.push(
    { name: "no task layers, two layers", spec: model({ scenarios: [level("page", ["a", "b", "c"], { layers: 2, select: aesm(1, 1) })] }) },
    {
      name: "three levels, deep experts, two task layers, three tasks",
      spec: model({
        scenarios: [
          level("site", ["s0", "s1"], { dim: 2, select: { kind: "all" } }),
          level("page", ["a", "b", "c"], { layers: 2, expert: mlp([8, 5]), select: aesm(1, 1) }),
          level("slot", ["top", "side"], { dim: 1, experts: 3, expert: mlp([4]), select: { kind: "topK", k: 2 } }),
        ],
        tasks: [
          { name: "ctr", tower: mlp([6, 3]) },
          { name: "cvr", tower: mlp([4], { act: "tanh" }) },
          { name: "gmv", tower: mlp([]) },
        ],
        taskLayers: taskLayers({ layers: 2, experts: 4, expert: mlp([6, 5]), select: aesm(1, 1) }),
      }),
    },
    {
      name: "batch norm everywhere, no bias",
      spec: model({
        scenarios: [
          level("page", ["a", "b", "c"], {
            expert: mlp([6, 4], { batchNorm: true }),
            gate: gate({ batchNorm: true }),
            select: aesm(1, 1),
          }),
        ],
        tasks: [{ name: "ctr", tower: mlp([3], { batchNorm: true }) }],
        taskLayers: taskLayers({ layers: 2, expert: mlp([4], { batchNorm: true }), gate: gate({ batchNorm: true }), select: aesm(1, 1) }),
        eps: 1e-5,
      }),
    },
    {
      name: "batch norm with bias, gates without bias",
      spec: model({
        scenarios: [
          level("page", ["a", "b", "c"], {
            expert: mlp([5], { batchNorm: true, bias: true }),
            gate: gate({ bias: false }),
            select: aesm(2, 1),
          }),
        ],
      }),
    },
    {
      name: "gates with hidden units",
      spec: model({
        scenarios: [level("page", ["a", "b", "c"], { gate: gate({ units: [5, 4], act: "tanh" }), select: aesm(1, 1) })],
        taskLayers: taskLayers({ layers: 2, gate: gate({ units: [3], act: "gelu", batchNorm: true }), select: { kind: "topK", k: 2 } }),
      }),
    },
    {
      name: "wide later expert layers (expert-batched form)",
      spec: model({
        scenarios: [level("page", ["a", "b", "c"], { experts: 8, expert: mlp([24, 24, 8]), gate: gate({ units: [40, 40] }), select: aesm(2, 1) })],
        taskLayers: taskLayers({ layers: 2, experts: 6, expert: mlp([24, 24]), select: aesm(1, 1) }),
      }),
    },
    {
      name: "one expert per layer",
      spec: model({
        scenarios: [level("page", ["a", "b"], { experts: 1, select: { kind: "all" } })],
        taskLayers: taskLayers({ experts: 1, select: { kind: "all" } }),
      }),
    },
  );
  for (const act of ["relu", "tanh", "leaky_relu", "gelu", "sigmoid", "none"] as const)
    out.push({
      name: `activation ${act}`,
      spec: model({
        scenarios: [
          level("page", ["a", "b", "c"], { expert: mlp([6, 5], { act }), gate: gate({ units: [4], act }), select: aesm(1, 1) }),
        ],
        tasks: [
          { name: "ctr", tower: mlp([3], { act }) },
          { name: "cvr", tower: mlp([]) },
        ],
        taskLayers: taskLayers({ layers: 2, expert: mlp([4], { act, batchNorm: true }), select: aesm(1, 1) }),
      }),
    });
  return out;
}

/** Every model the fusion passes are checked on: fixtures/models.ts, then the lowering fixtures. */
export const FUSION_MODELS: { name: string; spec: ModelSpec }[] = [...testModels, ...loweringModels()];

export interface Lowered {
  spec: ModelSpec;
  weights: ReturnType<typeof randomWeights>;
  graph: Graph;
  feeds: Record<string, Tensor>;
  batch: ReturnType<typeof randomBatch>;
}

export function lowerFixture(spec: ModelSpec, seed: number, rows = ROWS): Lowered {
  const weights = randomWeights(spec, seed);
  const graph = lowerModel(spec, weights);
  const batch = randomBatch(spec, rows, seed + 1000);
  return { spec, weights, graph, feeds: feedsOf(spec, batch), batch };
}

/** Run passes in order (as the pipeline does: toposort after a change), verifying after each; returns the merged counters. */
export function applyPasses(graph: Graph, passes: Pass[]): { graph: Graph; stats: Record<string, number> } {
  const stats: Record<string, number> = {};
  let g = graph;
  for (const p of passes) {
    const ctx: PassContext = { options: {}, stats: {} };
    const r = p.run(g, ctx);
    g = r.graph;
    if (r.changed) g.toposort();
    verifyGraph(g, p.id);
    for (const [k, v] of Object.entries(ctx.stats)) stats[`${p.id}/${k}`] = (stats[`${p.id}/${k}`] ?? 0) + v;
  }
  return { graph: g, stats };
}

function worstDiff(got: ArrayLike<number>, want: ArrayLike<number>): { index: number; abs: number } {
  let w = { index: -1, abs: 0 };
  for (let i = 0; i < want.length; i++) {
    const abs = Math.abs(got[i]! - want[i]!);
    if (!(abs <= w.abs)) w = { index: i, abs };
  }
  return w;
}

/**
 * Every output of `after` within `tol` of `before`, by name, with the worst element named
 * on failure: |after − before| ≤ abs + rel·|before| (rel defaults to 0: task outputs and
 * mixing weights are in [0, 1]).
 */
export function expectSameOutputs(
  before: Record<string, Tensor>,
  after: Record<string, Tensor>,
  tol: number | { abs: number; rel: number },
  what: string,
): void {
  const { abs, rel } = typeof tol === "number" ? { abs: tol, rel: 0 } : tol;
  expect(Object.keys(after).sort()).toEqual(Object.keys(before).sort());
  for (const name of Object.keys(before)) {
    expect(after[name]!.shape, `${what}: ${name} shape`).toEqual(before[name]!.shape);
    const got = after[name]!.data as Float32Array;
    const want = before[name]!.data as Float32Array;
    let worst = { index: -1, excess: 0, diff: 0 };
    for (let i = 0; i < want.length; i++) {
      const d = Math.abs(got[i]! - want[i]!);
      const excess = d - (abs + rel * Math.abs(want[i]!));
      if (!(excess <= worst.excess)) worst = { index: i, excess, diff: d };
    }
    expect(worst.index, `${what}: ${name} differs at ${worst.index} by ${worst.diff} (allowed ${abs} + ${rel}·|x|)`).toBe(-1);
  }
}

/**
 * An expert is in use on a row when its weight exceeds this. A selected expert whose
 * logit trails by more than ~87 gets exactly 0 in float32 but 1e-50 in float64; that is
 * underflow, not a different selection.
 */
const IN_USE = 1e-30;

/** Rows whose selection is a near-tie in the reference at some layer: float32 may pick either side there. */
export const NEAR_TIE = 1e-4;

/**
 * Task outputs and mixing weights within REF_TOL of the reference, and the same experts
 * in use (w > IN_USE) on every row: the observable selected set (with the reference mask,
 * an unselected expert can carry weight, so the weights are compared, not the sets). A row that disagrees is
 * excused only when its reference selection margin is a near-tie (below NEAR_TIE) at some
 * layer: float32 may pick either side there. Returns how many rows were excused.
 */
export function expectReferenceParity(l: Lowered, out: Record<string, Tensor>, what: string): number {
  const ref = evaluateReference(l.spec, l.weights, l.batch);
  const rows = l.batch.rows;
  const nearTie = new Uint8Array(rows);
  for (const layer of ref.layers) for (let r = 0; r < rows; r++) if (layer.margin[r]! < NEAR_TIE) nearTie[r] = 1;
  // per row: the first disagreement, if any
  const problems = new Map<number, string>();
  const note = (r: number, msg: string) => {
    if (!problems.has(r)) problems.set(r, msg);
  };
  for (const t of l.spec.tasks) {
    const got = out[t.name]!.data as Float32Array;
    const want = ref.outputs[t.name]!;
    for (let r = 0; r < rows; r++) {
      const abs = Math.abs(got[r]! - want[r]!);
      if (!(abs <= REF_TOL)) note(r, `${t.name}: got ${got[r]}, reference ${want[r]} (abs ${abs})`);
    }
  }
  for (const layer of ref.layers) {
    const name = selectionOutputName(layer.path);
    const got = out[name]!.data as Float32Array;
    const E = layer.experts;
    for (let i = 0; i < got.length; i++) {
      const abs = Math.abs(got[i]! - layer.weights[i]!);
      if (!(abs <= REF_TOL)) note(Math.floor(i / E), `${name} expert ${i % E}: got ${got[i]}, reference ${layer.weights[i]} (abs ${abs})`);
      if (got[i]! > IN_USE !== layer.weights[i]! > IN_USE) note(Math.floor(i / E), `${name} expert ${i % E}: in use in one, not the other`);
    }
  }
  const real = [...problems].filter(([r]) => !nearTie[r]).map(([r, msg]) => `row ${r}: ${msg}`);
  expect(real, `${what}: rows that differ from the reference (not near-ties)`).toEqual([]);
  // a bound, so that excusing near-ties cannot hide a broken model; the rewritten graph is
  // also compared with the unrewritten one on every row, near-ties included (checkPassesOnModel)
  expect(problems.size, `${what}: near-tie rows that differ`).toBeLessThan(rows / 4);
  return problems.size;
}

/**
 * The whole check of one pass sequence on one model: lower, apply `passes` (verifying the
 * IR after each), then interpreter vs the lowered graph and vs the reference, both within
 * REF_TOL (folding and fusion round differently; over deep unnormalised stacks that can
 * exceed INTERP_TOL, which the tiny before/after tests use).
 * Returns the graph and the passes' counters.
 */
export function checkPassesOnModel(spec: ModelSpec, seed: number, passes: Pass[]): { graph: Graph; stats: Record<string, number>; nodesBefore: number } {
  const l = lowerFixture(spec, seed);
  const before = runGraph(l.graph, l.feeds);
  const nodesBefore = l.graph.nodes.length;
  const signature = (g: Graph) => g.outputs.map((o) => `${o.name}:${o.value.type.dtype}[${o.value.type.shape}]`);
  const interfaceBefore = signature(l.graph);
  const { graph, stats } = applyPasses(l.graph, passes);
  const after = runGraph(graph, l.feeds);
  expectSameOutputs(before, after, REF_TOL, spec.name);
  expectReferenceParity(l, after, spec.name);
  // Outputs keep their names, order and types.
  expect(signature(graph)).toEqual(interfaceBefore);
  return { graph, stats, nodesBefore };
}

const goldenDir = join(dirname(fileURLToPath(import.meta.url)), "golden");

/** Compare with the committed golden file test/passes/golden/<name>; UPDATE_GOLDEN=1 (or a missing file) writes it. */
export function expectGolden(name: string, text: string): void {
  const path = join(goldenDir, name);
  if (process.env["UPDATE_GOLDEN"] === "1" || !existsSync(path)) {
    mkdirSync(goldenDir, { recursive: true });
    writeFileSync(path, text);
  }
  expect(text).toBe(readFileSync(path, "utf8"));
}
