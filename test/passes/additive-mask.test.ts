// additive-mask: the IR before and after on a tiny model (golden), bit-identical outputs (the
// selection weights included), where it stays away, and every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { additiveMask } from "../../src/passes/additive-mask.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { aesm, level, mlp, model } from "../lower/fixtures.ts";
import { FUSION_MODELS, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));

function tinySpec(select = aesm(1, 1)) {
  return model({
    name: "tiny_mask",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b", "c"], { dim: 1, experts: 4, expert: mlp([2]), select })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

describe("additive-mask on a tiny model", () => {
  it("adds a mask written by one OneHot: the IR before and after (golden), outputs bit for bit", () => {
    const l = lowerFixture(tinySpec(), 1, 64);
    expectGolden("additive-mask.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    const r = additiveMask.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("additive-mask.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "masks-added": 1 });
    const ops = r.graph.nodes.filter((n) => n.scope === "scenario_layers.page.0.select").map((n) => n.op);
    expect(ops).not.toContain("Where");
    expect(ops).not.toContain("Greater");
    const after = runGraph(r.graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
    // an expert both sets chose (count 2) is masked in once: some row has a single selected expert
    const w = after["select:scenario_layers.page.0"]!.data as Float32Array;
    const perRow = Array.from({ length: 64 }, (_, r) => [0, 1, 2, 3].filter((e) => w[r * 4 + e]! > 0).length);
    expect(perRow).toContain(1);
    expect(perRow).toContain(2);
    expect(additiveMask.run(r.graph, ctx()).changed).toBe(false);
  });

  it("covers topK too, and leaves the reference mask (§7) and fixed policies alone", () => {
    const top = lowerFixture(tinySpec({ kind: "topK", k: 2 }), 2, 16);
    expect(additiveMask.run(top.graph, ctx()).changed).toBe(true);
    for (const select of [aesm(1, 1, "reference"), { kind: "fixed" as const, specific: { a: [0], b: [1], c: [2] }, shared: [3] }]) {
      const l = lowerFixture(tinySpec(select), 2, 16);
      expect(additiveMask.run(l.graph, ctx()).changed, select.kind).toBe(false);
    }
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs bit for bit", () => {
    const l = lowerFixture(spec, 4);
    const before = runGraph(l.graph, l.feeds);
    additiveMask.run(l.graph, ctx());
    verifyGraph(l.graph);
    const after = runGraph(l.graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });
});
