// bias-into-lookup: the stacked task gates' bias Adds move into their MatMuls through a ones
// column of the scenario table (golden before/after on a tiny model as served), the numbers
// within float32 reassociation, when it stays away, and every fixture model at -O2.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { biasIntoLookup } from "../../src/passes/bias-into-lookup.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { aesm, feedsOf, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const ALL = passesForLevel(2);
const BEFORE = ALL.slice(0, ALL.findIndex((p) => p.id === "bias-into-lookup"));

describe("bias-into-lookup", () => {
  it("moves the stacked gates' biases into their MatMuls: before and after (golden), the same numbers", () => {
    const spec = model({
      name: "tiny_bias",
      features: [{ kind: "dense", name: "x", dim: 2 }],
      scenarios: [level("page", ["a", "b"], { dim: 2, experts: 2, expert: mlp([2]), select: aesm(1, 1) })],
      taskLayers: taskLayers({ dim: 1, layers: 2, experts: 3, expert: mlp([2]), select: aesm(1, 1) }),
      tasks: [
        { name: "ctr", tower: mlp([]) },
        { name: "cvr", tower: mlp([]) },
      ],
    });
    const weights = randomWeights(spec, 1);
    const feeds = feedsOf(spec, randomBatch(spec, 64, 2));
    const { graph } = applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), BEFORE);
    expectGolden("bias-into-lookup.before.txt", printGraph(graph));
    const before = runGraph(graph, feeds);
    const adds = graph.nodes.filter((n) => n.op === "Add").length;
    const c = ctx();
    expect(biasIntoLookup.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("bias-into-lookup.after.txt", printGraph(graph));
    expect(c.stats).toEqual({ "biases-moved": 2 });
    expect(graph.nodes.filter((n) => n.op === "Add").length).toBe(adds - 2);
    expectSameOutputs(before, runGraph(graph, feeds), INTERP_TOL, "tiny_bias");
  });

  it("stays away from a lookup read by anything but Concats and MatMuls by constants", () => {
    const g = new Graph("tiny_lookup_read");
    const s = g.addInput("s", { dtype: "int64", shape: ["batch"] });
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2, 3] });
    const T = g.addConstant("T", { dtype: "float32", shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) });
    const e = g.op("Gather", [T, s], { axis: 0 });
    const W = g.addConstant("W", { dtype: "float32", shape: [2, 3, 4], data: new Float32Array(24).fill(0.5) });
    const b = g.addConstant("b", { dtype: "float32", shape: [2, 1, 4], data: new Float32Array(8).fill(0.25) });
    g.setOutput("y", g.op("Add", [g.op("MatMul", [e, W]), b]));
    g.setOutput("e2", g.op("Relu", [e]));
    void x;
    expect(biasIntoLookup.run(g, ctx()).changed).toBe(false);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 with and without it gives the same outputs (as served)", () => {
    const l = lowerFixture(spec, 41);
    const weights = randomWeights(spec, 41);
    const a = runGraph(applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), ALL.filter((p) => p.id !== "bias-into-lookup")).graph, l.feeds);
    const b = runGraph(applyPasses(lowerModel(spec, weights, { selectionOutputs: false }), ALL).graph, l.feeds);
    expectSameOutputs(a, b, INTERP_TOL, spec.name);
  });
});
