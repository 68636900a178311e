// flatten-concats and mask-per-set: the IR before and after on tiny graphs (golden), the same
// numbers, when they stay away, and every fixture model at -O2 with and without them.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { flattenConcats } from "../../src/passes/flatten-concats.ts";
import { maskPerSet } from "../../src/passes/mask-per-set.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const f32 = (shape: number[], f: (i: number) => number): Tensor => ({ dtype: "float32", shape, data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, (_, i) => f(i)) });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));

describe("flatten-concats", () => {
  function tiny(extraReader = false): Graph {
    const g = new Graph("tiny_concat");
    const a = g.addInput("a", { dtype: "float32", shape: ["batch", 2] });
    const b = g.addInput("b", { dtype: "float32", shape: ["batch", 1] });
    const e = g.addInput("e", { dtype: "float32", shape: ["batch", 2] });
    const x0 = g.op("Concat", [a, b], { axis: 1 }, { names: ["x0"] });
    const gateIn = g.op("Concat", [x0, e], { axis: 1 }, { names: ["gate_in"] });
    g.setOutput("gate", g.op("MatMul", [gateIn, g.addConstant("Wg", f32([5, 3], (i) => (i % 7) / 7 - 0.4))], {}, { names: ["gate"] }));
    g.setOutput("experts", g.op("MatMul", [x0, g.addConstant("We", f32([3, 4], (i) => (i % 5) / 5 - 0.3))], {}, { names: ["experts"] }));
    if (extraReader) g.setOutput("x0_relu", g.op("Relu", [x0]));
    return g;
  }
  const feeds: Record<string, Tensor> = { a: f32([3, 2], (i) => i - 2.5), b: f32([3, 1], (i) => 0.5 * i), e: f32([3, 2], (i) => 1 - i) };

  it("one Concat for the gate and the experts: before and after (golden), the same numbers", () => {
    const g = tiny();
    expectGolden("flatten-concats.before.txt", printGraph(g));
    const before = runGraph(g, feeds);
    const c = ctx();
    expect(flattenConcats.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expectGolden("flatten-concats.after.txt", printGraph(g));
    expect(c.stats).toEqual({ "concats-flattened": 1 });
    expect(g.nodes.filter((n) => n.op === "Concat")).toHaveLength(1);
    const after = runGraph(g, feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });

  it("stays away when the inner Concat has a reader that is not a MatMul by a constant", () => {
    const g = tiny(true);
    expect(flattenConcats.run(g, ctx()).changed).toBe(false);
  });
});

describe("mask-per-set", () => {
  it("one OneHot per single-index set, combined by Max: before and after (golden), bit for bit", () => {
    const g = new Graph("tiny_mask_sets");
    const s = g.addInput("s", { dtype: "float32", shape: ["batch", 4] });
    const hi = g.op("ArgMax", [s], { axis: -1, keepdims: 1 }, { names: ["hi"] });
    const lo = g.op("ArgMin", [s], { axis: -1, keepdims: 1 }, { names: ["lo"] });
    const chosen = g.op("Concat", [hi, lo], { axis: 1 }, { names: ["chosen"] });
    const rows = g.op("OneHot", [chosen], { depth: 4, off: -1e30, on: 0 }, { names: ["rows"] });
    g.setOutput("mask", g.op("ReduceMax", [rows], { axes: [1], keepdims: 1 }, { names: ["mask"] }));
    const feeds = { s: f32([3, 4], (i) => [3, 1, 2, 0, 5, 5, 1, 1, -1, 2, -3, 2][i]!) };
    expectGolden("mask-per-set.before.txt", printGraph(g));
    const before = runGraph(g, feeds);
    const c = ctx();
    expect(maskPerSet.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expectGolden("mask-per-set.after.txt", printGraph(g));
    expect(c.stats).toEqual({ "masks-split": 1 });
    expect(bits(runGraph(g, feeds)["mask"]!)).toEqual(bits(before["mask"]!));
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 with and without the two passes gives the same outputs", () => {
    const l = lowerFixture(spec, 29);
    const all = passesForLevel(2);
    const without = all.filter((p) => p.id !== "flatten-concats" && p.id !== "mask-per-set");
    const a = runGraph(applyPasses(l.graph.clone(), without).graph, l.feeds);
    const b = runGraph(applyPasses(l.graph, all).graph, l.feeds);
    expectSameOutputs(a, b, INTERP_TOL, spec.name);
  });
});
