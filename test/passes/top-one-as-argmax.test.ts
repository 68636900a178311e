// top-one-as-argmax: TopK(k = 1) with unused values becomes ArgMax / ArgMin; the same indices
// on ties (the first), the IR before and after (golden), and every fixture model at -O2.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { topOneAsArgmax } from "../../src/passes/top-one-as-argmax.ts";
import { FUSION_MODELS, applyPasses, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

/** scores [4, 5] with ties (rows 1 and 3), both TopK directions, and one TopK whose values are read. */
function tiny(): Graph {
  const g = new Graph("tiny_top_one");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 5] });
  const [, hi] = g.addNode("TopK", [x], { k: 1, axis: -1, largest: 1 }, { names: ["hi_v", "hi"] });
  const [, lo] = g.addNode("TopK", [x], { k: 1, axis: 1, largest: 0 }, { names: ["lo_v", "lo"] });
  const [kept] = g.addNode("TopK", [x], { k: 1, axis: -1, largest: 1 }, { names: ["kept_v", "kept"] });
  g.setOutput("hi", hi!);
  g.setOutput("lo", lo!);
  g.setOutput("kept_v", kept!);
  return g;
}

describe("top-one-as-argmax", () => {
  it("replaces the TopKs whose values are unused: before and after (golden), same indices on ties", () => {
    const g = tiny();
    const feeds: Record<string, Tensor> = {
      x: { dtype: "float32", shape: [4, 5], data: Float32Array.from([1, 5, 2, 5, 0, 3, 3, 3, 1, 1, -2, -1, 0, -1, -2, 0, 0, 0, 0, 0]) },
    };
    expectGolden("top-one-as-argmax.before.txt", printGraph(g));
    const before = runGraph(g, feeds);
    const c = ctx();
    expect(topOneAsArgmax.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expectGolden("top-one-as-argmax.after.txt", printGraph(g));
    expect(c.stats).toEqual({ argmax: 1, argmin: 1 });
    expect(g.nodes.map((n) => n.op).sort()).toEqual(["ArgMax", "ArgMin", "TopK"]);
    const after = runGraph(g, feeds);
    expect(Array.from(after["hi"]!.data as BigInt64Array)).toEqual([1n, 0n, 2n, 0n]);
    expect(Array.from(after["lo"]!.data as BigInt64Array)).toEqual([4n, 3n, 0n, 0n]);
    for (const k of ["hi", "lo"]) expect(Array.from(after[k]!.data as BigInt64Array), k).toEqual(Array.from(before[k]!.data as BigInt64Array));
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the -O2 graph's outputs bit for bit", () => {
    const l = lowerFixture(spec, 23);
    const passes = passesForLevel(2).filter((p) => p.id !== "top-one-as-argmax");
    const { graph } = applyPasses(l.graph, passes);
    const before = runGraph(graph, l.feeds);
    topOneAsArgmax.run(graph, ctx());
    verifyGraph(graph);
    const after = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(Array.from(after[k]!.data as Float32Array), k).toEqual(Array.from(before[k]!.data as Float32Array));
  });
});
