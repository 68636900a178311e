// merge-contractions: a two-gate layer's Zi and gate gap as one MatMul + Split (page), folded
// into the gate in the stacked task layers; golden before/after on a tiny model without
// selection outputs (as served), the same numbers, and -O2 without selection outputs against
// the reference on every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { mergeContractions } from "../../src/passes/merge-contractions.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { aesm, feedsOf, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, REF_TOL, applyPasses, expectGolden, expectSameOutputs } from "./fusion-parity.ts";
import { nearTieRows } from "./selection-checks.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const ALL = passesForLevel(2);
const BEFORE = ALL.slice(0, ALL.findIndex((p) => p.id === "merge-contractions"));

function tinySpec() {
  return model({
    name: "tiny_merge",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) })],
    taskLayers: taskLayers({ dim: 1, layers: 2, experts: 3, expert: mlp([2]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
  });
}

describe("merge-contractions on a tiny model without selection outputs", () => {
  it("one MatMul + Split for the page layer, folded into the gates for the task layers: before and after (golden)", () => {
    const spec = tinySpec();
    const weights = randomWeights(spec, 1);
    const feeds = feedsOf(spec, randomBatch(spec, 64, 2));
    const { graph } = applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), BEFORE);
    expectGolden("merge-contractions.before.txt", printGraph(graph));
    const before = runGraph(graph, feeds);
    const c = ctx();
    expect(mergeContractions.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("merge-contractions.after.txt", printGraph(graph));
    expect(c.stats).toEqual({ "scores-as-rows": 1, "contractions-merged": 1, "folded-into-gates": 2 });
    expect(graph.nodes.filter((n) => n.op === "Split")).toHaveLength(3);
    expectSameOutputs(before, runGraph(graph, feeds), INTERP_TOL, "tiny_merge");
  });
});

describe("merge-contractions with three gates", () => {
  it("lifts the mask so that the specific score is a MatMul too (the same numbers)", () => {
    const spec = model({
      name: "three_gates",
      features: [{ kind: "dense", name: "x", dim: 2 }],
      scenarios: [level("search", ["a", "b", "c"], { dim: 1, experts: 5, expert: mlp([2]), select: aesm(2, 1) })],
      tasks: [{ name: "ctr", tower: mlp([]) }],
    });
    const weights = randomWeights(spec, 3);
    const feeds = feedsOf(spec, randomBatch(spec, 64, 4));
    const { graph } = applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), BEFORE);
    const before = runGraph(graph, feeds);
    const nodes = graph.nodes.length;
    const c = ctx();
    expect(mergeContractions.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expect(c.stats).toEqual({ "masks-lifted": 1 });
    expect(graph.nodes.length).toBe(nodes - 1);
    expect(graph.nodes.filter((n) => n.op === "ReduceSum")).toHaveLength(0);
    const after = runGraph(graph, feeds);
    expect(Array.from(after["ctr"]!.data as Float32Array)).toEqual(Array.from(before["ctr"]!.data as Float32Array));
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 without selection outputs matches the reference (rows with a reference near-tie excused)", () => {
    const weights = randomWeights(spec, 37);
    const batch = randomBatch(spec, 96, 38);
    const { graph } = applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), ALL);
    const out = runGraph(graph, feedsOf(spec, batch));
    const ref = evaluateReference(spec, weights, batch);
    const skip = nearTieRows({ spec, weights, batch } as never);
    for (const t of spec.tasks) {
      const got = out[t.name]!.data as Float32Array;
      const want = ref.outputs[t.name]!;
      for (let r = 0; r < batch.rows; r++) if (!skip[r]) expect(Math.abs(got[r]! - want[r]!), `${t.name} row ${r}`).toBeLessThanOrEqual(REF_TOL);
    }
  });
});
