// argmax-pair: a two-gate layer's ArgMax(s) and ArgMin(|s|) as one ArgMax over [s; −|s|],
// with the rows computed by the gate's own producer. The IR before and after (golden), the
// same mixture weights bit for bit on rows with exact ties, both producer forms, when it
// stays away, and every fixture model at -O2 with and without it.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { Graph, type Value, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { argmaxPair } from "../../src/passes/argmax-pair.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { FUSION_MODELS, applyPasses, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const f32 = (shape: number[], data: number[]): Tensor => ({ dtype: "float32", shape, data: Float32Array.from(data) });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));

/** The selection after the Split: mask = Max(OneHot(ArgMax(s)), OneHot(ArgMin(Abs(s)))), w = Softmax(Zi + mask). */
function select(g: Graph, Y: Value, E: number, absReader = false): void {
  const [zi, s] = g.addNode("Split", [Y], { axis: 1, split: [1, 1] }, { names: ["zi", "s"] });
  const hi = g.op("ArgMax", [s!], { axis: -1, keepdims: 0 }, { names: ["specific"] });
  const abs = g.op("Abs", [s!], {}, { names: ["s_abs"] });
  const lo = g.op("ArgMin", [abs], { axis: -1, keepdims: 0 }, { names: ["shared"] });
  const hot = { depth: E, off: -1e30, on: 0 };
  const mask = g.op("Max", [g.op("OneHot", [hi], hot, { names: ["m_specific"] }), g.op("OneHot", [lo], hot, { names: ["m_shared"] })], {}, { names: ["mask"] });
  g.setOutput("w", g.op("Softmax", [g.op("Add", [zi!, mask], {}, { names: ["masked"] })], { axis: 2 }, { names: ["w"] }));
  if (absReader) g.setOutput("s_abs", abs);
}

/** Form 1: Y = MatMul(Gather(rows [S, 2, G], i), Z): Zi and the gate gap of a looked-up scenario. */
function lookupForm(): Graph {
  const g = new Graph("tiny_pair_lookup");
  const Z = g.addInput("Z", { dtype: "float32", shape: ["batch", 2, 4] });
  const i = g.addInput("i", { dtype: "int64", shape: ["batch"] });
  const rows = g.addConstant("rows", f32([2, 2, 2], [1, 0, 1, -1, 0, 1, -1, 1]));
  const L = g.op("Gather", [rows, i], { axis: 0 }, { names: ["L"] });
  select(g, g.op("MatMul", [L, Z], {}, { names: ["Y"] }), 4);
  return g;
}

/** Form 2: Y = Reshape(MatMul(x, W) + b, [0, 2, E]): the gate computes [Zi | s]; s has columns that tie exactly (e0 = e1, e2 = −e0). */
function gateForm(absReader = false): Graph {
  const g = new Graph("tiny_pair_gate");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
  const W = g.addConstant("W", f32([2, 8], [0.5, -1, 2, 0.25, 1, 1, -1, 3, 1.5, 0.75, -0.5, 1, -2, -2, 2, 0.1]));
  const b = g.addConstant("b", f32([8], [0, 0.5, -0.5, 1, 0.25, 0.25, -0.25, -1]));
  const X = g.op("Add", [g.op("MatMul", [x, W], {}, { names: ["xW"] }), b], {}, { names: ["X"] });
  select(g, g.op("Reshape", [X], { shape: [0, 2, 4] }, { names: ["Y"] }), 4, absReader);
  return g;
}

const lookupFeeds: Record<string, Tensor> = {
  Z: f32([4, 2, 4], [1, 2, 3, 4, 1, 2, 3, 4, 0, 5, -5, 1, 2, 2, 2, -3, 7, -1, 0.5, 0, 3, 1, -2, 0, -4, 4, 4, -4, 1, 1, 1, 1]),
  i: { dtype: "int64", shape: [4], data: BigInt64Array.of(0n, 1n, 0n, 1n) },
};
const gateFeeds: Record<string, Tensor> = { x: f32([5, 2], [1, 0, 0, 1, -1, 2, 0.5, -3, 0, 0]) };

describe("argmax-pair", () => {
  it("gate form: the gate computes [Zi; s; s; s; −s], one ArgMax (golden), the same weights bit for bit with exact ties", () => {
    const g = gateForm();
    expectGolden("argmax-pair.before.txt", printGraph(g));
    const before = runGraph(g, gateFeeds);
    const c = ctx();
    expect(argmaxPair.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expectGolden("argmax-pair.after.txt", printGraph(g));
    expect(c.stats).toEqual({ pairs: 1 });
    expect(g.nodes.map((n) => n.op)).toEqual(["MatMul", "Add", "Reshape", "Split", "Min", "ArgMax", "OneHot", "ReduceMax", "Add", "Softmax"]);
    const after = runGraph(g, gateFeeds);
    expect(bits(after["w"]!)).toEqual(bits(before["w"]!));
    // the all-zero row ties every expert in s and |s|: both pick expert 0, which gets all the weight
    expect(Array.from(after["w"]!.data as Float32Array).slice(16, 20)).toEqual([1, 0, 0, 0]);
  });

  it("lookup form: the looked-up rows are restacked, the same weights bit for bit", () => {
    const g = lookupForm();
    const before = runGraph(g, lookupFeeds);
    const c = ctx();
    expect(argmaxPair.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expect(c.stats).toEqual({ pairs: 1 });
    expect(g.constants.map((k) => k.type.shape.join("x"))).toEqual(["2x5x2"]);
    expect(g.nodes.filter((n) => n.op === "ArgMin" || n.op === "Abs" || n.op === "Max")).toHaveLength(0);
    const after = runGraph(g, lookupFeeds);
    expect(bits(after["w"]!)).toEqual(bits(before["w"]!));
  });

  it("stays away when |s| has another reader, and leaves nothing behind", () => {
    const g = gateForm(true);
    const before = printGraph(g);
    expect(argmaxPair.run(g, ctx()).changed).toBe(false);
    expect(printGraph(g)).toBe(before);
  });

  it("stays away when the producer of the rows is not linear, and leaves nothing behind", () => {
    const g = new Graph("tiny_pair_relu");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
    const W = g.addConstant("W", f32([2, 8], [1, 2, 3, 4, 5, 6, 7, 8, 8, 7, 6, 5, 4, 3, 2, 1]));
    // the MatMul term could be extended, the Relu term not
    const X = g.op("Add", [g.op("MatMul", [x, W], {}, { names: ["xW"] }), g.op("Relu", [g.op("MatMul", [x, W], {}, { names: ["xW2"] })], {}, { names: ["r"] })], {}, { names: ["X"] });
    select(g, g.op("Reshape", [X], { shape: [0, 2, 4] }, { names: ["Y"] }), 4);
    const before = printGraph(g);
    expect(argmaxPair.run(g, ctx()).changed).toBe(false);
    expect(printGraph(g)).toBe(before);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the -O2 graph's outputs bit for bit", () => {
    const l = lowerFixture(spec, 29);
    const all = passesForLevel(2);
    const at = all.findIndex((p) => p.id === "argmax-pair");
    const { graph } = applyPasses(l.graph, all.slice(0, at));
    const before = runGraph(graph, l.feeds);
    argmaxPair.run(graph, ctx());
    verifyGraph(graph);
    const after = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });
});
