// stack-streams: the IR before and after on a tiny two-task model (golden), one selection and
// one tower chain for all tasks, the select: outputs kept, when it stays away, and parity on
// every fixture model after the passes that run before it in -O2.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { cse } from "../../src/passes/cse.ts";
import { fuseExperts } from "../../src/passes/fuse-experts.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { rowConstants } from "../../src/passes/row-constants.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { stackStreams } from "../../src/passes/stack-streams.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { checkModel } from "./selection-checks.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const BEFORE = [selectClosedForm, fuseGates, rowConstants, fuseExperts, cse];

function tinySpec() {
  return model({
    name: "tiny_streams",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 2, expert: mlp([2]), select: { kind: "all" } })],
    taskLayers: taskLayers({ dim: 1, layers: 2, experts: 3, expert: mlp([2]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp([2]) },
      { name: "cvr", tower: mlp([2]) },
    ],
  });
}

const count = (g: { nodes: { op: string }[] }, op: string) => g.nodes.filter((n) => n.op === op).length;

describe("stack-streams on a tiny two-task model", () => {
  it("runs each task layer's selection and the towers once for both tasks: before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 48);
    const lowered = runGraph(l.graph, l.feeds);
    const { graph } = applyPasses(l.graph, BEFORE);
    expectGolden("stack-streams.before.txt", printGraph(graph));
    const before = runGraph(graph, l.feeds);
    expect(count(graph, "TopK")).toBe(8); // 2 layers × 2 tasks × (specific, shared)
    const c = ctx();
    const r = stackStreams.run(graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("stack-streams.after.txt", printGraph(r.graph));
    // two task layers (anchored at the stacked mixture weights) and the towers (at the outputs)
    expect(c.stats["groups-stacked"]).toBe(3);
    expect(c.stats["concat-matmuls-split"]).toBe(1); // the second layer's gate input [h_t; c]
    expect(count(r.graph, "TopK")).toBe(4);
    expect(count(r.graph, "Sigmoid")).toBe(1);
    // the select: outputs and the task outputs keep their names and types
    expect(r.graph.outputs.map((o) => [o.name, o.value.name])).toEqual(graph.outputs.map((o) => [o.name, o.name]));
    const after = runGraph(r.graph, l.feeds);
    expectSameOutputs(before, after, INTERP_TOL, "tiny_streams");
    expectSameOutputs(lowered, after, INTERP_TOL, "tiny_streams vs lowering");
    expect(stackStreams.run(r.graph, ctx()).changed).toBe(false);
  });

  it("leaves a one-task model alone", () => {
    const spec = model({
      scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })],
      taskLayers: taskLayers({ experts: 3, select: aesm(1, 1) }),
      tasks: [{ name: "ctr", tower: mlp([3]) }],
    });
    const l = lowerFixture(spec, 2, 8);
    const { graph } = applyPasses(l.graph, BEFORE);
    expect(stackStreams.run(graph, ctx()).changed).toBe(false);
  });

  it("stacks towers of the same shape only: towers of different widths stay apart", () => {
    const spec = model({
      scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })],
      tasks: [
        { name: "ctr", tower: mlp([3]) },
        { name: "cvr", tower: mlp([4]) },
      ],
    });
    const l = lowerFixture(spec, 3, 8);
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    stackStreams.run(l.graph, c);
    verifyGraph(l.graph);
    expect(count(l.graph, "Sigmoid")).toBe(2);
    expectSameOutputs(before, runGraph(l.graph, l.feeds), INTERP_TOL, "towers apart");
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs and parity with the reference (after the passes before it; reference near-ties excused)", () => {
    checkModel(spec, 17, [...BEFORE, stackStreams], {}, { nearTies: "excused" });
  });
});
