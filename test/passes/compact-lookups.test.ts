// compact-lookups: the IR before and after on a tiny model (golden), bit-identical outputs for
// in-range, negative, vocab-sized and huge ids, when it stays away, and every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { compactLookups } from "../../src/passes/compact-lookups.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { level, mlp, model } from "../lower/fixtures.ts";
import { FUSION_MODELS, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

function tinySpec() {
  return model({
    name: "tiny_lookup",
    features: [
      { kind: "categorical", name: "user", vocab: 5, dim: 2 },
      { kind: "dense", name: "x", dim: 1 },
    ],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 2, expert: mlp([2]), select: { kind: "all" } })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));

describe("compact-lookups on a tiny model", () => {
  it("clamps the id onto a zero row: the IR before and after (golden), outputs bit for bit", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    const ids = [0n, 4n, 2n, -1n, 5n, 6n, -7n, 1n << 40n, -(1n << 50n), 3n];
    const rows = ids.length;
    const feeds: Record<string, Tensor> = {
      user: { dtype: "int64", shape: [rows], data: BigInt64Array.from(ids) },
      x: { dtype: "float32", shape: [rows, 1], data: Float32Array.from(ids, (_, i) => i / 3 - 1) },
      page: { dtype: "int64", shape: [rows], data: BigInt64Array.from(ids, (_, i) => BigInt(i % 2)) },
    };
    expectGolden("compact-lookups.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, feeds);
    const c = ctx();
    const r = compactLookups.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("compact-lookups.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "lookups-compacted": 1 });
    const ops = r.graph.nodes.filter((n) => n.scope === "features.user").map((n) => n.op);
    expect(ops).toEqual(["Clip", "Gather"]);
    const table = r.graph.constants.find((v) => v.name === "features.user.weight.padded")!;
    expect(table.type.shape).toEqual([6, 2]);
    expect(Array.from(table.data!.data as Float32Array).slice(10)).toEqual([0, 0]);
    const after = runGraph(r.graph, feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
    // a second run finds nothing
    expect(compactLookups.run(r.graph, ctx()).changed).toBe(false);
  });

  it("leaves a lookup whose range check is not the table's vocabulary", () => {
    const l = lowerFixture(tinySpec(), 2, 4);
    const less = l.graph.nodes.find((n) => n.op === "Less")!;
    const other = l.graph.addConstant("vocab_4", { dtype: "int64", shape: [], data: BigInt64Array.of(4n) });
    l.graph.setNodeInput(less, 1, other);
    expect(compactLookups.run(l.graph, ctx()).changed).toBe(false);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs bit for bit (ids out of range on some rows)", () => {
    const l = lowerFixture(spec, 3);
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    compactLookups.run(l.graph, c);
    l.graph.toposort();
    verifyGraph(l.graph);
    const categorical = spec.features.filter((f) => f.kind === "categorical").length;
    expect(c.stats["lookups-compacted"] ?? 0).toBe(categorical);
    const after = runGraph(l.graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(after[k]!), k).toEqual(bits(before[k]!));
  });
});
