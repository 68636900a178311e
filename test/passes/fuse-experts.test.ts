// fuse-experts: the IR before and after on a tiny model (golden), task streams stacked,
// mixtures over a subset of experts, why experts are left alone, parity on every fixture
// model, and the example model after all fusion passes through the ONNX checker and onnxruntime.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { writeOnnx } from "../../src/backends/onnx/index.ts";
import { runGraph } from "../../src/backends/interp/index.ts";
import { f32 } from "../../src/core/tensor.ts";
import { loadModel } from "../../src/dsl/load.ts";
import { Graph, type Value, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { cse } from "../../src/passes/cse.ts";
import { dce } from "../../src/passes/dce.ts";
import { foldBatchNorm } from "../../src/passes/fold-batch-norm.ts";
import { fuseExperts } from "../../src/passes/fuse-experts.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { openSession } from "../../src/runtime/index.ts";
import { initWeights } from "../../src/weights/init.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";
import { feedsOf, level, mlp, model, randomBatch, taskLayers } from "../lower/fixtures.ts";
import {
  FUSION_MODELS,
  INTERP_TOL,
  REF_TOL,
  applyPasses,
  checkPassesOnModel,
  expectGolden,
  expectReferenceParity,
  expectSameOutputs,
  lowerFixture,
} from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");

/** Two-layer experts on one level (wide, then block-diagonal); two task layers over two tasks (stacked streams). */
function tinySpec() {
  return model({
    name: "tiny_experts",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 2, expert: mlp([3, 2]), select: { kind: "all" } })],
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: taskLayers({ dim: 1, layers: 2, experts: 2, expert: mlp([2], { act: "gelu" }), select: { kind: "all" } }),
  });
}

describe("fuse-experts on a tiny model", () => {
  it("runs each layer's experts once and mixes with one MatMul: the IR before and after CSE + fuse-experts (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 16);
    const before = runGraph(l.graph, l.feeds);
    const { graph } = applyPasses(l.graph, [cse]);
    expectGolden("fuse-experts.before.txt", printGraph(graph));
    const c = ctx();
    const r = fuseExperts.run(graph, c);
    expect(r.changed).toBe(true);
    r.graph.toposort();
    verifyGraph(r.graph);
    expectGolden("fuse-experts.after.txt", printGraph(r.graph));
    // the scenario layer; task layer 0 (one input, two mixtures); task layer 1 (two stacked streams)
    expect(c.stats).toEqual({ "layers-fused": 3, "experts-fused": 6, "streams-mixed-together": 4, "streams-stacked": 2 });
    expectSameOutputs(before, runGraph(r.graph, l.feeds), INTERP_TOL, "tiny_experts");
  });

  it("feeds the second task layer the first one's stacked streams, with no re-stacking", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    const { graph } = applyPasses(l.graph, [cse, fuseExperts]);
    const first = graph.nodes.find((n) => n.op === "MatMul" && n.scope === "task_layers.1.experts")!;
    expect(first.inputs[0]!.name).toBe("task_layers.0.mix.mixed");
    expect(first.inputs[0]!.type.shape).toEqual([2, "batch", 2]);
    expect(graph.nodes.filter((n) => n.outputs[0]!.name.endsWith(".streams"))).toEqual([]);
  });

  it("without CSE first, merges the task streams' duplicated first-layer experts itself", () => {
    const l = lowerFixture(tinySpec(), 1, 16);
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    fuseExperts.run(l.graph, c);
    l.graph.toposort();
    verifyGraph(l.graph);
    expect(c.stats["layers-fused"]).toBe(3);
    expect(l.graph.nodes.filter((n) => n.scope === "task_layers.0.experts" && n.op === "MatMul").length).toBe(1);
    expectSameOutputs(before, runGraph(l.graph, l.feeds), INTERP_TOL, "tiny_experts, no CSE");
  });

  it("changes nothing the second time", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    const { graph } = applyPasses(l.graph, [cse, fuseExperts]);
    const text = printGraph(graph);
    const c = ctx();
    expect(fuseExperts.run(graph, c).changed).toBe(false);
    expect(printGraph(graph)).toBe(text);
  });
});

/**
 * h = Σ_{e ∈ terms} Slice(w, e) · y_e with y_e = act_e(MatMul(x, W_e) + b_e), E columns in w,
 * by hand; `swap` writes the Mul operands the other way round.
 */
function handMixture(E: number, terms: number[], opts: { acts?: string[]; escape?: boolean; swap?: boolean } = {}) {
  const g = new Graph("mix");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
  const logits = g.addInput("logits", { dtype: "float32", shape: ["batch", E] });
  const w = g.op("Softmax", [logits], { axis: 1 }, { names: ["w"] });
  let seed = 7;
  const rnd = (n: number) => Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1);
  const ys: Value[] = terms.map((e) => {
    const act = (opts.acts?.[e] ?? "Relu") as "Relu" | "Tanh";
    const lin = g.op("Add", [g.op("MatMul", [x, g.addConstant(`W${e}`, f32([3, 4], rnd(12)))]), g.addConstant(`b${e}`, f32([4], rnd(4)))]);
    return g.op(act, [lin], {}, { scope: `layer.experts.${e}` });
  });
  let h: Value | null = null;
  terms.forEach((e, i) => {
    const we = g.op("Slice", [w], { starts: [e], ends: [e + 1], axes: [1] });
    const t = g.op("Mul", opts.swap ? [we, ys[i]!] : [ys[i]!, we], {}, { scope: "layer.mix" });
    h = h ? g.op("Add", [h, t], {}, { scope: "layer.mix" }) : t;
  });
  g.setOutput("h", h!);
  if (opts.escape) g.setOutput("y0", ys[0]!);
  return g;
}

describe("fuse-experts on hand-built mixtures", () => {
  const feeds = {
    x: f32([2, 3], [1, -2, 0.5, 0.25, 3, -1]),
    logits: f32([2, 4], [0.5, -1, 2, 0.1, 1, 1, -3, 0]),
  };

  it("fuses a mixture whose Mul operands come either way round", () => {
    const g = handMixture(4, [0, 1, 2, 3], { swap: true });
    const before = runGraph(g, feeds);
    const c = ctx();
    fuseExperts.run(g, c);
    verifyGraph(g);
    expect(c.stats).toEqual({ "layers-fused": 1, "experts-fused": 4 });
    expect(g.nodes.map((n) => n.op)).toEqual(["Softmax", "MatMul", "Add", "Relu", "Reshape", "Unsqueeze", "MatMul", "Squeeze"]);
    expectSameOutputs(before, runGraph(g, feeds), { abs: INTERP_TOL, rel: 1e-6 }, "swapped");
  });

  it("mixes only the experts a mixture sums (after pruning): Gather of w's columns", () => {
    const g = handMixture(4, [0, 2, 3]);
    const before = runGraph(g, feeds);
    const c = ctx();
    fuseExperts.run(g, c);
    verifyGraph(g);
    expect(c.stats).toEqual({ "layers-fused": 1, "experts-fused": 3 });
    const gather = g.nodes.find((n) => n.op === "Gather")!;
    expect(Array.from(gather.inputs[1]!.data!.data as BigInt64Array, Number)).toEqual([0, 2, 3]);
    expectSameOutputs(before, runGraph(g, feeds), { abs: INTERP_TOL, rel: 1e-6 }, "subset");
  });

  const skips: [string, () => Graph, string][] = [
    ["experts that differ in an activation", () => handMixture(4, [0, 1, 2, 3], { acts: ["Relu", "Tanh", "Relu", "Relu"] }), "skipped:chains-differ"],
    ["an expert whose output is read elsewhere", () => handMixture(4, [0, 1, 2, 3], { escape: true }), "skipped:expert-output-escapes"],
    ["a one-expert mixture", () => handMixture(4, [2]), "skipped:single-expert"],
  ];
  for (const [what, make, reason] of skips)
    it(`leaves ${what}, and says why`, () => {
      const g = make();
      const text = printGraph(g);
      const c = ctx();
      expect(fuseExperts.run(g, c).changed).toBe(false);
      expect(c.stats).toEqual({ [reason]: 1 });
      expect(printGraph(g)).toBe(text);
    });
});

describe("fuse-experts on every fixture model: interpreter unchanged, parity with the reference", () => {
  FUSION_MODELS.forEach(({ name, spec }, i) =>
    it(name, () => {
      const { graph, stats } = checkPassesOnModel(spec, 1500 + i, [cse, fuseExperts]);
      // every layer with two or more experts is fused: no per-expert Slice of w is left
      const slices = graph.nodes.filter((n) => n.op === "Slice" && n.scope.endsWith(".mix"));
      const E1 = [...spec.scenarios, ...(spec.taskLayers ? [spec.taskLayers] : [])].some((l) => l.experts === 1);
      if (!E1) expect(slices.map((n) => n.outputs[0]!.name), JSON.stringify(stats)).toEqual([]);
    }),
  );

});

describe("fuse-experts without CSE first, and with every fusion pass in both orders", () => {
  FUSION_MODELS.forEach(({ name, spec }, i) =>
    it(name, () => {
      checkPassesOnModel(spec, 1700 + i, [fuseExperts]);
      checkPassesOnModel(spec, 1900 + i, [cse, foldBatchNorm, fuseGates, fuseExperts, cse, dce]);
      checkPassesOnModel(spec, 2100 + i, [fuseExperts, fuseGates, foldBatchNorm, dce]);
    }, 20_000),
  );
});

describe("the example model after the fusion passes", () => {
  const tmp = mkdtempSync(join(tmpdir(), "aesm-fuse-"));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));

  it("has less than half the nodes, passes the ONNX checker at opset 17, and onnxruntime keeps parity", async () => {
    const { spec } = await loadModel(join(root, "examples/search-ranker.ts"));
    const weights = initWeights(spec, 11);
    const graph = lowerModel(spec, weights);
    const nodesBefore = graph.nodes.length;
    const { graph: g, stats } = applyPasses(graph, [cse, foldBatchNorm, fuseGates, fuseExperts, cse, dce]);
    expect(g.nodes.length, JSON.stringify(stats)).toBeLessThan(nodesBefore / 2);
    expect(Object.keys(stats).filter((k) => k.includes("skipped"))).toEqual([]);
    const path = join(tmp, "search-ranker.onnx");
    writeOnnx(path, g, { opset: 17 });
    checkOnnxFile(path);

    const batch = randomBatch(spec, 64, 5);
    const l = { spec, weights, graph: g, feeds: feedsOf(spec, batch), batch };
    const session = await openSession(path);
    try {
      const interp = runGraph(g, l.feeds);
      const got = await session.run(batch);
      const out = Object.fromEntries(
        Object.entries(got).map(([name, data]) => [name, { dtype: "float32" as const, shape: [...interp[name]!.shape], data }]),
      );
      expectReferenceParity(l, out, "onnxruntime");
      expectSameOutputs(interp, out, REF_TOL, "onnxruntime vs interpreter");
    } finally {
      await session.close();
    }
  }, 60_000);
});
