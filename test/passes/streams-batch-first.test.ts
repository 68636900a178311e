// streams-batch-first: the stacked task streams of a tiny two-task model as served, laid out
// [B, T, …] (golden before and after): no [T, B, …] value and no Transpose left, per-stream
// gate weights side by side, 2-D MatMuls for the later task layer and the towers, the same
// numbers; with select: outputs (read per stream through Gather); when it stays away; the
// fixtures as served and with select: outputs.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { streamsBatchFirst } from "../../src/passes/streams-batch-first.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const ALL = passesForLevel(2);
const BEFORE = ALL.slice(0, ALL.findIndex((p) => p.id === "streams-batch-first"));
const AFTER = ALL.slice(BEFORE.length + 1);

/** A value laid out [T, B, …]: T ≥ 2 a number, then the symbolic batch. */
const streamsFirst = (g: Graph) =>
  [...g.nodes.flatMap((n) => n.outputs)].filter((v) => typeof v.type.shape[0] === "number" && (v.type.shape[0] as number) >= 2 && typeof v.type.shape[1] === "string");

const tinySpec = () =>
  model({
    name: "tiny_streams",
    features: [{ kind: "dense", name: "x", dim: 3 }],
    scenarios: [level("page", ["a", "b"], { dim: 2, experts: 3, expert: mlp([4]), select: aesm(1, 1) })],
    taskLayers: taskLayers({ dim: 1, layers: 2, experts: 3, expert: mlp([4]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp([3]) },
      { name: "cvr", tower: mlp([3]) },
    ],
  });

describe("streams-batch-first on a tiny two-task model", () => {
  it("as served: batch-first, 2-D MatMuls, no Transpose (golden before and after), the same numbers", () => {
    const l = lowerFixture(tinySpec(), 3, 64);
    const { graph } = applyPasses(lowerModel(l.spec, l.weights, { selectionOutputs: false }), BEFORE);
    expectGolden("streams-batch-first.before.txt", printGraph(graph));
    expect(streamsFirst(graph).length).toBeGreaterThan(10);
    const before = runGraph(graph, l.feeds);
    const c = ctx();
    expect(streamsBatchFirst.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("streams-batch-first.after.txt", printGraph(graph));
    expect(c.stats).toEqual({ "groups-batch-first": 1, "reshapes-sunk": 1, "reshapes-merged": 6, "matmuls-2d": 1, "matmuls-concatenated": 1 });
    expect(streamsFirst(graph)).toEqual([]);
    expect(graph.nodes.filter((n) => n.op === "Transpose")).toEqual([]);
    // every MatMul by a constant weight is 2-D (onnxruntime fuses their bias and activation into one Gemm)
    for (const n of graph.nodes.filter((n) => n.op === "MatMul" && n.inputs[1]!.isConstant)) expect(n.outputs[0]!.type.shape, n.outputs[0]!.name).toHaveLength(2);
    expectSameOutputs(before, runGraph(graph, l.feeds), INTERP_TOL, "tiny_streams");
  });

  it("with select: outputs: each task's selection read from its stream, the same numbers", () => {
    const l = lowerFixture(tinySpec(), 4, 64);
    const { graph } = applyPasses(l.graph, BEFORE);
    const before = runGraph(graph, l.feeds);
    expect(streamsBatchFirst.run(graph, ctx()).changed).toBe(true);
    verifyGraph(graph);
    expect(streamsFirst(graph)).toEqual([]);
    for (const o of graph.outputs.filter((o) => o.name.startsWith("select:task_layers")))
      expect([o.value.producer!.op, o.value.producer!.attrs["axis"]], o.name).toEqual(["Gather", 1]);
    expectSameOutputs(before, runGraph(graph, l.feeds), INTERP_TOL, "tiny_streams with select: outputs");
  });

  it("stays away from a graph without stacked streams, and from a group with an op it has no rule for", () => {
    const one = model({ scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })], tasks: [{ name: "ctr", tower: mlp([3]) }] });
    const l1 = lowerFixture(one, 5, 8);
    const { graph: g1 } = applyPasses(l1.graph, BEFORE);
    const text = printGraph(g1);
    expect(streamsBatchFirst.run(g1, ctx()).changed).toBe(false);
    expect(printGraph(g1)).toBe(text);

    const g = new Graph("tiny_no_rule");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
    const W = g.addConstant("W", { dtype: "float32", shape: [2, 3, 4], data: Float32Array.from({ length: 24 }, (_, i) => i / 10) });
    const y = g.op("MatMul", [x, W], {}, { names: ["y"] }); // [2, batch, 4]
    const lse = g.op("ReduceLogSumExp", [y], { axes: [2], keepdims: 0 }, { names: ["no_rule"] }); // [2, batch]
    g.setOutput("out", g.op("ReduceSum", [lse], { axes: [0], keepdims: 0 }, { names: ["out"] }));
    const c = ctx();
    const before = printGraph(g);
    expect(streamsBatchFirst.run(g, c).changed).toBe(false);
    expect(printGraph(g)).toBe(before);
    expect(Object.keys(c.stats)).toEqual(["skipped:no batch-first rule for ReduceLogSumExp"]);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 with and without it gives the same outputs, as served and with select: outputs", () => {
    const l = lowerFixture(spec, 37);
    for (const selectionOutputs of [false, true]) {
      const a = runGraph(applyPasses(lowerModel(spec, l.weights, { selectionOutputs }), [...BEFORE, ...AFTER]).graph, l.feeds);
      const { graph, stats } = applyPasses(lowerModel(spec, l.weights, { selectionOutputs }), ALL);
      // only fuse-experts' expert-batched layers ([E, B, H]) keep a leading non-batch axis
      const skipped = Object.keys(stats).filter((k) => k.startsWith("streams-batch-first/skipped"));
      if (spec.name === "m" && streamsFirst(graph).some((v) => v.producer?.op === "Transpose")) expect(skipped).toEqual(["streams-batch-first/skipped:expert-batched layers"]);
      else {
        expect(skipped, spec.name).toEqual([]);
        expect(streamsFirst(graph).map((v) => v.name), `${spec.name}: values left [T, B, …]`).toEqual([]);
      }
      expectSameOutputs(a, runGraph(graph, l.feeds), INTERP_TOL, `${spec.name} (selectionOutputs ${selectionOutputs})`);
    }
  });
});

describe("streams-batch-first rules on a hand-built group", () => {
  it("entries, a boundary stack, broadcasts, inner transposes, reductions and both exits: the same numbers, nothing left [T, B, …]", () => {
    const T = 2;
    const g = new Graph("tiny_rules");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
    const y = g.addInput("y", { dtype: "float32", shape: ["batch", 4] });
    const f = (shape: number[], k: number) => g.addConstant(`c${k}`, { dtype: "float32", shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => Math.sin(i * 0.7 + k)) });
    // entry: shared x times per-stream weights [T, 3, 4] → [T, B, 4]
    const a = g.op("MatMul", [x, f([T, 3, 4], 1)], {}, { names: ["a"] });
    // entry: the streams stacked at the boundary, Concat(Unsqueeze(·, [0])) → [T, B, 4]
    const b = g.op("Concat", [g.op("Unsqueeze", [y], { axes: [0] }), g.op("Unsqueeze", [g.op("Neg", [y])], { axes: [0] })], { axis: 0 }, { names: ["b"] });
    // broadcasts: a per-stream constant [T, 1, 4], a shared [B, 4], a trailing [4]
    const c = g.op("Add", [g.op("Mul", [g.op("Add", [a, b]), f([T, 1, 4], 2)]), g.op("Add", [y, f([4], 3)])], {}, { names: ["c"] });
    // reshape keeping both leading axes, an inner transpose, softmax and a reduction over inner axes
    const r = g.op("Reshape", [c], { shape: [0, 0, 2, 2] }, { names: ["r"] });
    const t = g.op("Transpose", [r], { perm: [0, 1, 3, 2] }, { names: ["t"] });
    const s = g.op("Softmax", [t], { axis: 2 }, { names: ["s"] });
    // a transpose that moves the stream axis inward: [T, B, 2, 2] → [2, B, T, 2] (stacked again, on its first axis)
    const m = g.op("ReduceMax", [g.op("Transpose", [s], { perm: [2, 1, 0, 3] }, { names: ["inward"] })], { axes: [3], keepdims: 0 }, { names: ["m"] }); // [2, B, T]
    // per-stream weights on a stacked input (block-diagonal) and a shared matrix
    const h = g.op("MatMul", [g.op("MatMul", [m, f([T, 2, 3], 4)]), f([3, 2], 5)], {}, { names: ["h"] }); // [T, B, 2]
    // exits: one stream picked, and everything moved batch-first by a Transpose
    g.setOutput("first", g.op("Gather", [h, g.addConstant("zero", { dtype: "int64", shape: [], data: BigInt64Array.of(0n) })], { axis: 0 }, { names: ["first"] }));
    g.setOutput("by_row", g.op("Transpose", [h], { perm: [1, 0, 2] }, { names: ["by_row"] }));
    const feeds: Record<string, Tensor> = {
      x: { dtype: "float32", shape: [5, 3], data: Float32Array.from({ length: 15 }, (_, i) => Math.cos(i)) },
      y: { dtype: "float32", shape: [5, 4], data: Float32Array.from({ length: 20 }, (_, i) => Math.sin(i * 1.3)) },
    };
    verifyGraph(g);
    expect(streamsFirst(g).length).toBeGreaterThan(8);
    const before = runGraph(g, feeds);
    const c2 = ctx();
    expect(streamsBatchFirst.run(g, c2).changed).toBe(true);
    verifyGraph(g);
    expect(c2.stats["groups-batch-first"]).toBe(1);
    expect(streamsFirst(g)).toEqual([]);
    // the exit Transpose became the batch-first value itself
    expect(g.nodes.filter((n) => n.op === "Transpose").map((n) => n.attrs["perm"])).toEqual([
      [0, 1, 3, 2],
      [0, 2, 1, 3],
    ]);
    expectSameOutputs(before, runGraph(g, feeds), INTERP_TOL, "tiny_rules");
  });
});
