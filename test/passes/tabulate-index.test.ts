// tabulate-index: the IR before and after on a tiny model (golden), bit-identical outputs for
// every scenario index, when it stays away, and every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { tabulateIndex } from "../../src/passes/tabulate-index.ts";
import { aesm, level, mlp, model } from "../lower/fixtures.ts";
import { FUSION_MODELS, applyPasses, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));

function tinySpec() {
  return model({
    name: "tiny_tabulate",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

describe("tabulate-index on a tiny model", () => {
  it("looks up the one-hot and the gate sign of the page index: before and after (golden), bit for bit", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    const { graph } = applyPasses(l.graph, [selectClosedForm]);
    expectGolden("tabulate-index.before.txt", printGraph(graph));
    const before = runGraph(graph, l.feeds);
    const c = ctx();
    expect(tabulateIndex.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("tabulate-index.after.txt", printGraph(graph));
    expect(c.stats).toEqual({ "values-tabulated": 2 });
    expect(graph.nodes.some((n) => n.op === "OneHot" && n.inputs[0]!.name === "page")).toBe(false);
    const after = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
    expect(tabulateIndex.run(graph, ctx()).changed).toBe(false);
  });

  it("leaves a lone OneHot (one node for one lookup saves nothing)", () => {
    const spec = model({ features: [{ kind: "dense", name: "x", dim: 2 }], scenarios: [level("page", ["a", "b", "c"], { select: { kind: "topK", k: 1 } })] });
    const l = lowerFixture(spec, 2, 8);
    const oneHots = l.graph.nodes.filter((n) => n.op === "OneHot").length;
    tabulateIndex.run(l.graph, ctx());
    expect(l.graph.nodes.filter((n) => n.op === "OneHot").length).toBeLessThanOrEqual(oneHots);
    verifyGraph(l.graph);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs bit for bit (after select-closed-form)", () => {
    const l = lowerFixture(spec, 5);
    const { graph } = applyPasses(l.graph, [selectClosedForm]);
    const before = runGraph(graph, l.feeds);
    tabulateIndex.run(graph, ctx());
    verifyGraph(graph);
    const after = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });
});
