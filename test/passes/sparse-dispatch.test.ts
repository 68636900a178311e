// sparse-dispatch: the IR before and after on a tiny model (golden); the same numbers as the
// dense graph, bit for bit in the interpreter, on every fixture model; the cost model's
// choices; fuse-experts leaving dispatched layers alone; and the ONNX in onnxruntime and the
// checker at the opsets with and without ScatterND's reduction attribute.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { readOnnxFile, writeOnnx } from "../../src/backends/onnx/index.ts";
import { type InputBatch, batchToFeeds } from "../../src/core/batch.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { formatType, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { findMixtures } from "../../src/passes/mixture.ts";
import { fuseExperts } from "../../src/passes/fuse-experts.ts";
import type { PassContext, PassOptions } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { sparseCost, sparseDispatch } from "../../src/passes/sparse-dispatch.ts";
import { openSession } from "../../src/runtime/index.ts";
import { aesm, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";
import { FUSION_MODELS, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { applyWith, checkModel } from "./selection-checks.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-sparse-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ctx = (options: PassOptions): PassContext => ({ options, stats: {} });
const always: PassOptions = { sparseDispatch: "always" };

function tinySpec(): ModelSpec {
  return model({
    name: "tiny_sparse",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

/** 32 experts of width 256 with AESM 2 + 2 (at most 4 of 32 per row), as in examples/large-ranker.ts. */
function largeSpec(select: SelectSpec = aesm(2, 2), width = 256): ModelSpec {
  return model({
    name: "large",
    features: [{ kind: "dense", name: "x", dim: 128 }],
    scenarios: [level("page", ["a", "b", "c"], { dim: 8, experts: 32, expert: mlp([width]), select })],
    tasks: [
      { name: "ctr", tower: mlp([64]) },
      { name: "cvr", tower: mlp([64]) },
    ],
    taskLayers: taskLayers({ dim: 8, experts: 32, expert: mlp([width]), select }),
  });
}

describe("sparse-dispatch on a tiny model", () => {
  it("gathers each expert's rows, runs it on them and scatters back: before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    expectGolden("sparse-dispatch.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const c = ctx(always);
    const r = sparseDispatch.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("sparse-dispatch.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "layers-dispatched": 1, "experts-dispatched": 3 });
    // every expert runs on its own data-dependent rows, in scopes marked .sparse
    const matmuls = r.graph.nodes.filter((n) => n.op === "MatMul" && n.scope.includes(".experts."));
    expect(matmuls.map((n) => `${n.scope}: ${formatType(n.outputs[0]!.type)}`)).toEqual([
      "scenario_layers.page.0.experts.0.sparse: f32[scenario_layers.page.0.e0.rows,2]",
      "scenario_layers.page.0.experts.1.sparse: f32[scenario_layers.page.0.e1.rows,2]",
      "scenario_layers.page.0.experts.2.sparse: f32[scenario_layers.page.0.e2.rows,2]",
    ]);
    expect(findMixtures(r.graph).mixtures).toEqual([]);
    expectSameOutputs(before, runGraph(r.graph, l.feeds), 0, "tiny_sparse");
  });

  it("leaves the graph alone with sparseDispatch: never", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    const text = printGraph(l.graph);
    expect(sparseDispatch.run(l.graph, ctx({ sparseDispatch: "never" })).changed).toBe(false);
    expect(printGraph(l.graph)).toBe(text);
  });
});

describe("the cost model (auto)", () => {
  it("keeps small layers dense", () => {
    for (const { spec } of FUSION_MODELS.slice(0, 8)) {
      const l = lowerFixture(spec, 1, 2);
      const c = ctx({});
      expect(sparseDispatch.run(l.graph, c).changed, spec.name).toBe(false);
      expect(c.stats["layers-dispatched"] ?? 0).toBe(0);
    }
  });

  it("dispatches 32 experts of width 256 with k = 4 at the target batch, and not at a small one", () => {
    const spec = largeSpec();
    const g = lowerModel(spec, randomWeights(spec, 1));
    const [m] = findMixtures(g).mixtures;
    const cost = sparseCost(m!, 1024);
    expect({ k: cost.k, experts: cost.experts }).toEqual({ k: 4, experts: 32 });
    expect(cost.sparse).toBeLessThan(cost.dense / 3);
    const small = ctx({ sparseTargetBatch: 16 });
    expect(sparseDispatch.run(g.clone(), small).changed).toBe(false);
    const c = ctx({});
    sparseDispatch.run(g, c);
    expect(c.stats).toEqual({ "layers-dispatched": 3, "experts-dispatched": 96 });
  }, 30_000);

  it("keeps dense what every row uses: all(), topK with k = E, the reference mask", () => {
    for (const select of [{ kind: "all" } as SelectSpec, { kind: "topK", k: 32 } as SelectSpec, aesm(2, 2, "reference")]) {
      // narrower experts than the target model: with every expert in use, width cannot tip the balance
      const spec = largeSpec(select, 64);
      const g = lowerModel(spec, randomWeights(spec, 1));
      const c = ctx({});
      expect(sparseDispatch.run(g, c).changed, select.kind).toBe(false);
      expect(c.stats["layers-kept-dense"]).toBe(3);
    }
  }, 30_000);
});

describe.each(FUSION_MODELS)("parity: $name", ({ spec }) => {
  it("gives the dense graph's numbers exactly, and parity with the reference", () => {
    const { stats } = checkModel(spec, 14, [sparseDispatch], always, { tol: 0 });
    const layers = spec.scenarios.reduce((n, l) => n + l.layers, 0) + (spec.taskLayers ? spec.taskLayers.layers * spec.tasks.length : 0);
    expect(stats["sparse-dispatch/layers-dispatched"]).toBe(layers);
  });
});

describe("with the rest of -O2", () => {
  it.each(FUSION_MODELS.slice(0, 12))("$name: fuse-experts leaves the dispatched layers alone", ({ spec }) => {
    const { graph, stats } = checkModel(spec, 15, passesForLevel(2), always);
    expect(stats["fuse-experts/layers-fused"] ?? 0).toBe(0);
    expect(stats["sparse-dispatch/layers-dispatched"]).toBeGreaterThan(0);
    expect(graph.nodes.some((n) => n.op === "ScatterND")).toBe(true);
  });

  it("fuse-experts still fuses what the cost model keeps dense", () => {
    const spec = FUSION_MODELS.find((m) => m.name === "three-levels")!.spec;
    const { stats } = checkModel(spec, 15, [sparseDispatch, fuseExperts], {});
    expect(stats["sparse-dispatch/layers-kept-dense"]).toBeGreaterThan(0);
    expect(stats["fuse-experts/layers-fused"]).toBeGreaterThan(0);
  });
});

describe("ONNX", () => {
  const spec = model({
    scenarios: [
      level("page", ["a", "b", "c"], { experts: 5, select: aesm(1, 1) }),
      level("slot", ["top", "side"], { experts: 4, select: { kind: "fixed", specific: { top: [0], side: [1, 2] }, shared: [] } }),
    ],
    taskLayers: taskLayers({ experts: 4, select: { kind: "topK", k: 2 } }),
  });
  const weights = randomWeights(spec, 41);
  const { graph } = applyWith(lowerModel(spec, weights), passesForLevel(2), always);
  const batch = randomBatch(spec, 48, 42);
  // every row on slot "top": experts 1 and 2 of that layer get no rows at all
  const narrow: InputBatch = { ...batch, scenarios: { ...batch.scenarios, slot: new BigInt64Array(48) } };

  it.each([13, 15, 16, 17, 21])("opset %i: onnxruntime matches the interpreter, also where an expert gets no rows", async (opset) => {
    const path = join(tmp, `sparse_${opset}.onnx`);
    writeOnnx(path, graph, { opset });
    const session = await openSession(path);
    try {
      for (const b of [batch, narrow]) {
        const want = runGraph(graph, batchToFeeds(b, spec));
        const got = await session.run(b);
        for (const name of Object.keys(want)) {
          const w = want[name]!.data as Float32Array;
          const d = got[name]!;
          let worst = 0;
          for (let i = 0; i < w.length; i++) worst = Math.max(worst, Math.abs(d[i]! - w[i]!));
          expect(worst, `${name} at opset ${opset}`).toBeLessThanOrEqual(1e-5);
        }
      }
    } finally {
      await session.close();
    }
  });

  it.each([13, 17])("opset %i passes the ONNX checker and reads back with its row symbols", (opset) => {
    const path = join(tmp, `sparse_check_${opset}.onnx`);
    writeOnnx(path, graph, { opset });
    checkOnnxFile(path);
    const back = readOnnxFile(path);
    verifyGraph(back);
    const nz = back.nodes.filter((n) => n.op === "NonZero").map((n) => n.attrs["dim"]);
    expect(nz).toEqual(graph.nodes.filter((n) => n.op === "NonZero").map((n) => n.attrs["dim"]));
    expectSameOutputs(runGraph(graph, batchToFeeds(batch, spec)), runGraph(back, batchToFeeds(batch, spec)), 0, `read back at ${opset}`);
  });
});
