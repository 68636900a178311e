// streams-block-diagonal: the stacked towers of a tiny two-task model as 2-D layers (golden
// before and after), the outputs read as columns under their own names, the interpreter's
// numbers unchanged (the zero blocks add exact zeros), when it stays away, and the fixtures.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { streamsBlockDiagonal } from "../../src/passes/streams-block-diagonal.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));
const ALL = passesForLevel(2);
/** -O2 up to this pass (the later ones, e.g. streams-batch-first, rewrite what it builds). */
const BEFORE = ALL.slice(0, ALL.findIndex((p) => p.id === "streams-block-diagonal"));

function tinySpec(towers: [number[], number[]] = [[3], [3]]) {
  return model({
    name: "tiny_towers",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 2, expert: mlp([2]), select: { kind: "all" } })],
    taskLayers: taskLayers({ dim: 1, layers: 1, experts: 3, expert: mlp([4]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp(towers[0]) },
      { name: "cvr", tower: mlp(towers[1]) },
    ],
  });
}

describe("streams-block-diagonal on a tiny two-task model", () => {
  it("runs the towers as 2-D layers with block-diagonal weights: before and after (golden), bit for bit", () => {
    const l = lowerFixture(tinySpec(), 1, 40);
    const { graph } = applyPasses(l.graph, BEFORE);
    expectGolden("streams-block-diagonal.before.txt", printGraph(graph));
    const before = runGraph(graph, l.feeds);
    const c = ctx();
    expect(streamsBlockDiagonal.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("streams-block-diagonal.after.txt", printGraph(graph));
    expect(c.stats).toEqual({ "towers-2d": 1 });
    // every MatMul of the towers is 2-D; each output is its own column, under its own name
    for (const n of graph.nodes.filter((n) => n.scope.startsWith("towers"))) if (n.op === "MatMul") expect(n.outputs[0]!.type.shape).toHaveLength(2);
    expect(graph.outputs.filter((o) => !o.name.startsWith("select:")).map((o) => [o.name, o.value.name, o.value.producer!.op])).toEqual([
      ["ctr", "ctr", "Gather"],
      ["cvr", "cvr", "Gather"],
    ]);
    const after = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });

  it("leaves towers of different widths (not stacked) alone", () => {
    const l = lowerFixture(tinySpec([[3], [2]]), 2, 8);
    const { graph } = applyPasses(l.graph, BEFORE);
    expect(streamsBlockDiagonal.run(graph, ctx()).changed).toBe(false);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 with and without it gives the same outputs", () => {
    const l = lowerFixture(spec, 31);
    const a = runGraph(applyPasses(l.graph.clone(), BEFORE).graph, l.feeds);
    const b = runGraph(applyPasses(l.graph, passesForLevel(2)).graph, l.feeds);
    expectSameOutputs(a, b, INTERP_TOL, spec.name);
  });
});
