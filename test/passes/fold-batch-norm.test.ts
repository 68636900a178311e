// fold-batch-norm: the IR before and after on a tiny model (golden), the folded constants
// against a float64 computation, why a batch norm is left alone, and parity on every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { f32 } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { cse } from "../../src/passes/cse.ts";
import { foldBatchNorm } from "../../src/passes/fold-batch-norm.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { gate, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, checkPassesOnModel, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

/** Batch norm in an expert (no bias), a gate (no bias) and a tower (with bias): every place it occurs. */
function tinySpec() {
  return model({
    name: "tiny_bn",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [
      level("page", ["a", "b"], {
        dim: 1,
        experts: 2,
        expert: mlp([2], { batchNorm: true }),
        gate: gate({ batchNorm: true }),
        select: { kind: "all" },
      }),
    ],
    tasks: [{ name: "ctr", tower: mlp([2], { batchNorm: true, bias: true }) }],
  });
}

describe("fold-batch-norm on a tiny model", () => {
  it("folds every batch norm: the IR before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 16);
    expectGolden("fold-batch-norm.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    const r = foldBatchNorm.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("fold-batch-norm.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ folded: 5 }); // 2 experts, 2 gates, 1 tower
    expect(r.graph.nodes.filter((n) => n.op === "Sub" || n.op === "Div")).toEqual([]);
    expectSameOutputs(before, runGraph(r.graph, l.feeds), INTERP_TOL, "tiny_bn");
  });

  it("changes nothing the second time", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    foldBatchNorm.run(l.graph, ctx());
    const text = printGraph(l.graph);
    const c = ctx();
    expect(foldBatchNorm.run(l.graph, c).changed).toBe(false);
    expect(printGraph(l.graph)).toBe(text);
    expect(c.stats).toEqual({});
  });
});

/** y = BN(x·W [+ b]) by hand, with the BN constants given. */
function handGraph(opts: { bias: boolean; input?: "linear" | "raw" | "shared-linear" }) {
  const g = new Graph("bn");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
  const W = g.addConstant("W", f32([2, 3], [0.5, -1.25, 2, 0.3, 0.7, -0.9]));
  const b = g.addConstant("b", f32([3], [0.1, -0.2, 0.05]));
  const mean = g.addConstant("bn.running_mean", f32([3], [0.2, -0.1, 0.4]));
  const std = g.addConstant("bn.std", f32([3], [1.1, 0.7, 1.9]));
  const gamma = g.addConstant("bn.weight", f32([3], [0.9, 1.3, 0.6]));
  const beta = g.addConstant("bn.bias", f32([3], [-0.3, 0.25, 0.15]));
  let y: typeof x;
  const mode = opts.input ?? "linear";
  if (mode === "raw") y = g.op("Concat", [x, g.op("Neg", [g.op("Slice", [x], { starts: [0], ends: [1], axes: [1] })])], { axis: 1 });
  else {
    y = g.op("MatMul", [x, W], {}, { names: ["m"] });
    if (opts.bias) y = g.op("Add", [y, b], {}, { names: ["l"] });
    if (mode === "shared-linear") g.setOutput("linear", y);
  }
  const c = g.op("Sub", [y, mean]);
  const n = g.op("Div", [c, std]);
  const s = g.op("Mul", [n, gamma]);
  g.setOutput("y", g.op("Add", [s, beta], {}, { names: ["y"] }));
  return g;
}

describe("fold-batch-norm on hand-built graphs", () => {
  const feeds = { x: f32([3, 2], [1, 2, -0.5, 0.25, 3, -1]) };

  for (const bias of [true, false])
    it(`computes W' = W·γ/std and b' = (b − μ)·γ/std + β in float64, rounded once (bias ${bias})`, () => {
      const g = handGraph({ bias });
      const before = runGraph(g, feeds);
      const c = ctx();
      foldBatchNorm.run(g, c);
      verifyGraph(g);
      expect(c.stats).toEqual({ folded: 1 });
      const mm = g.nodes.find((n) => n.op === "MatMul")!;
      const add = g.nodes.find((n) => n.op === "Add")!;
      expect(g.nodes.map((n) => n.op)).toEqual(["MatMul", "Add"]);
      const Wd = [0.5, -1.25, 2, 0.3, 0.7, -0.9].map(Math.fround);
      const a = [0, 1, 2].map((o) => Math.fround([0.9, 1.3, 0.6][o]!) / Math.fround([1.1, 0.7, 1.9][o]!));
      const wantW = Wd.map((w, i) => Math.fround(w * a[i % 3]!));
      const bb = bias ? [0.1, -0.2, 0.05].map(Math.fround) : [0, 0, 0];
      const wantB = [0, 1, 2].map((o) =>
        Math.fround((bb[o]! - Math.fround([0.2, -0.1, 0.4][o]!)) * a[o]! + Math.fround([-0.3, 0.25, 0.15][o]!)),
      );
      expect(Array.from(mm.inputs[1]!.data!.data as Float32Array)).toEqual(wantW);
      expect(Array.from(add.inputs[1]!.data!.data as Float32Array)).toEqual(wantB);
      expect(mm.inputs[1]!.name).toBe("bn.folded.weight.T");
      // unnormalised outputs (up to ~8): one float32 rounding of the folded weights, relative
      expectSameOutputs(before, runGraph(g, feeds), { abs: INTERP_TOL, rel: 1e-6 }, "hand");
    });

  it("leaves a batch norm that follows no linear, and says why", () => {
    const g = handGraph({ bias: false, input: "raw" });
    const text = printGraph(g);
    const c = ctx();
    expect(foldBatchNorm.run(g, c).changed).toBe(false);
    expect(c.stats).toEqual({ "skipped:no-linear-before": 1 });
    expect(printGraph(g)).toBe(text);
  });

  it("leaves a batch norm whose linear's result is also read elsewhere, and says why", () => {
    const g = handGraph({ bias: true, input: "shared-linear" });
    const text = printGraph(g);
    const c = ctx();
    expect(foldBatchNorm.run(g, c).changed).toBe(false);
    expect(c.stats).toEqual({ "skipped:linear-output-shared": 1 });
    expect(printGraph(g)).toBe(text);
  });

  it("gives streams that share a linear (task layers, before CSE) one folded weight", () => {
    const spec = model({
      scenarios: [level("page", ["a", "b"], { select: { kind: "all" } })],
      taskLayers: taskLayers({ layers: 2, expert: mlp([4], { batchNorm: true }), select: { kind: "all" } }),
    });
    const l = lowerFixture(spec, 3, 8);
    foldBatchNorm.run(l.graph, ctx());
    verifyGraph(l.graph);
    // task layer 1, expert 0: one MatMul per task stream, both reading the same folded weight
    const readers = l.graph.nodes.filter((n) => n.op === "MatMul" && n.inputs[1]!.name.startsWith("task_layers.1.experts.0.layers.0.bn.folded"));
    expect(readers.length).toBe(2);
    expect(readers[0]!.inputs[1]).toBe(readers[1]!.inputs[1]);
  });
});

describe("fold-batch-norm on every fixture model: interpreter unchanged, parity with the reference", () => {
  FUSION_MODELS.forEach(({ name, spec }, i) =>
    it(name, () => {
      const { graph, stats } = checkPassesOnModel(spec, 700 + i, [foldBatchNorm]);
      // no batch norm is left: every one in these models follows a linear
      const bns = graph.nodes.filter((n) => n.inputs.some((v) => v.isConstant && v.name.endsWith(".running_mean")));
      expect(bns.length, JSON.stringify(stats)).toBe(0);
    }),
  );

  it("after CSE too", () => {
    for (const [i, { spec }] of FUSION_MODELS.entries()) checkPassesOnModel(spec, 900 + i, [cse, foldBatchNorm]);
  }, 60_000);
});
