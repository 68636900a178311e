// prune-calibrated and its recorder (calibrate.ts): the IR before and after on a tiny model
// (golden); exact on the calibration rows, next-ranked experts elsewhere; the held-out check;
// calibration rows from a file; the report; and the plan's errors.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { type InputBatch, batchToFeeds } from "../../src/core/batch.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { writeInputsFile } from "../../src/parity/input-files.ts";
import { calibrate, checkHeldOut, formatCalibrationReport, readCalibrationRows, sliceBatch } from "../../src/passes/calibrate.ts";
import type { PassOptions } from "../../src/passes/pass.ts";
import { pruneCalibrated } from "../../src/passes/prune-calibrated.ts";
import { pruneStatic } from "../../src/passes/prune-static.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { aesm, gate, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { applyWith, usedExperts } from "./selection-checks.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-calibrate-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const fixed = (specific: Record<string, number[]>, shared: number[]): SelectSpec => ({ kind: "fixed", specific, shared });

/** Every row of `batch` in value `value` of every scenario level: a narrow calibration distribution. */
function oneScenario(spec: ModelSpec, batch: InputBatch, value = 0): InputBatch {
  const scenarios = Object.fromEntries(spec.scenarios.map((l) => [l.name, new BigInt64Array(batch.rows).fill(BigInt(value))]));
  return { ...batch, scenarios };
}

function tinySpec(): ModelSpec {
  return model({
    name: "tiny_calibrated",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 3, expert: mlp([2]), select: { kind: "topK", k: 1 } })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

describe("prune-calibrated on a tiny model", () => {
  it("removes the planned expert, ranks it last and masks its weight: before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    expectGolden("prune-calibrated.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const pruned = 2;
    const c = { options: { prunedExperts: { "scenario_layers.page.0": [pruned] } }, stats: {} as Record<string, number> };
    const r = pruneCalibrated.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("prune-calibrated.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "experts-removed": 1, "pruned scenario_layers.page.0": 1 });
    expect(r.graph.nodes.some((n) => n.scope === "scenario_layers.page.0.experts.2")).toBe(false);
    const after = runGraph(r.graph, l.feeds);
    // rows that did not select expert 2 are unchanged; the others now use another expert
    const used = usedExperts(before, "scenario_layers.page.0");
    const keep = used.map((u) => !u.includes(pruned));
    expect(keep.some((k) => !k)).toBe(true);
    for (const name of Object.keys(before)) {
      const per = before[name]!.data.length / keep.length;
      const x = before[name]!.data as Float32Array;
      const y = after[name]!.data as Float32Array;
      for (let i = 0; i < x.length; i++) if (keep[Math.floor(i / per)]) expect(y[i], `${name}[${i}]`).toBe(x[i]);
    }
    for (const u of usedExperts(after, "scenario_layers.page.0")) expect(u).toHaveLength(1);
    expect(usedExperts(after, "scenario_layers.page.0").flat()).not.toContain(pruned);
  });

  it("picks the next-ranked experts where a pruned one ranked in (topK: the largest kept logits)", () => {
    const spec = model({ scenarios: [level("page", ["a", "b", "c"], { experts: 5, select: { kind: "topK", k: 2 } })] });
    const l = lowerFixture(spec, 3, 64);
    const Zi = l.graph.nodes.find((n) => n.outputs[0]!.name === "scenario_layers.page.0.select.Zi")!.outputs[0]!;
    l.graph.setOutput("Zi", Zi);
    applyWith(l.graph, [pruneCalibrated], { prunedExperts: { "scenario_layers.page.0": [0, 3] } });
    const out = runGraph(l.graph, l.feeds);
    const z = out["Zi"]!.data as Float32Array;
    const kept = [1, 2, 4];
    usedExperts(out, "scenario_layers.page.0").forEach((u, r) => {
      const want = [...kept].sort((a, b) => z[r * 5 + b]! - z[r * 5 + a]! || a - b).slice(0, 2).sort();
      expect(u, `row ${r}`).toEqual(want);
    });
  });
});

/** Models whose first-scenario-only rows leave experts unused, across policies and masks. */
const NARROW: { name: string; spec: ModelSpec }[] = [
  ...FUSION_MODELS.filter((m) => ["aesm-two-levels", "aesm-reference-mask", "topk", "fixed-ple", "three-levels", "single-task"].includes(m.name)),
  {
    name: "aesm with many experts, closed-form scores first",
    spec: model({
      scenarios: [level("page", ["a", "b", "c"], { experts: 8, expert: mlp([6]), gate: gate({ batchNorm: true }), select: aesm(1, 1) })],
      taskLayers: taskLayers({ experts: 6, select: aesm(1, 1) }),
    }),
  },
];

describe.each(NARROW)("calibrated on one scenario value: $name", ({ spec }) => {
  it("prunes what those rows never use and keeps their numbers", () => {
    const weights = randomWeights(spec, 21);
    const batch = oneScenario(spec, randomBatch(spec, 96, 22));
    const { prunedExperts, report } = calibrate(spec, weights, batch);
    expect(report.rows).toBe(96);
    const g = lowerModel(spec, weights);
    const feeds = batchToFeeds(batch, spec);
    const before = runGraph(g, feeds);
    const nodes = g.nodes.length;
    const { graph, stats } = applyWith(g, [selectClosedForm, pruneStatic, pruneCalibrated], { prunedExperts });
    const planned = Object.values(prunedExperts).flat().length;
    expect(stats["prune-calibrated/experts-removed"] ?? 0).toBe(planned);
    if (planned) expect(graph.nodes.length).toBeLessThan(nodes);
    expectSameOutputs(before, runGraph(graph, feeds), INTERP_TOL, spec.name);
  });
});

describe("calibrate", () => {
  const spec = model({
    scenarios: [level("page", ["a", "b", "c"], { experts: 5, select: fixed({ a: [0, 1], b: [2], c: [3] }, [1]) })],
    taskLayers: taskLayers({ experts: 3, select: { kind: "topK", k: 1 } }),
  });
  const weights = randomWeights(spec, 4);

  it("records per layer and per value which experts rows use, and plans the unused ones", () => {
    const batch = randomBatch(spec, 60, 5);
    batch.scenarios["page"] = batch.scenarios["page"]!.map((s) => (s === 2n ? 0n : s)); // no row in value c
    const { prunedExperts, report } = calibrate(spec, weights, batch);
    const page = report.layers.find((l) => l.path === "scenario_layers.page.0")!;
    expect(page.pruned).toEqual([3, 4]);
    expect(page.byValue.map((v) => [v.value, v.experts])).toEqual([
      ["a", [0, 1]],
      ["b", [1, 2]],
    ]);
    expect(page.rowsUsing[1]).toBe(60);
    expect(prunedExperts["scenario_layers.page.0"]).toEqual([3, 4]);
    expect(report.layers.map((l) => l.path)).toEqual(["scenario_layers.page.0", "task_layers.0.ctr", "task_layers.0.cvr"]);
    const text = formatCalibrationReport(report);
    expect(text).toContain("scenario_layers.page.0: prune [3, 4] of 5");
    expect(text).toContain("    b (");
  });

  it("counts an unselected expert that carries weight under the reference mask as used", () => {
    const ref = model({ scenarios: [level("page", ["a", "b"], { experts: 4, select: aesm(1, 1, "reference") })] });
    const w = randomWeights(ref, 8);
    const batch = randomBatch(ref, 64, 9);
    const { report } = calibrate(ref, w, batch);
    const traced = evaluateReference(ref, w, batch).layers[0]!;
    const carried = new Set<number>();
    for (let i = 0; i < traced.weights.length; i++) if (traced.weights[i]! > 0 && !traced.selected[i]) carried.add(i % 4);
    for (const e of carried) expect(report.layers[0]!.pruned).not.toContain(e);
  });

  it("reads calibration rows from the parity inputs formats", () => {
    const batch = randomBatch(spec, 12, 6);
    for (const ext of ["jsonl", "npz"]) {
      const path = join(tmp, `rows.${ext}`);
      writeInputsFile(path, spec, batch);
      const back = readCalibrationRows(path, spec);
      expect(back.rows).toBe(12);
      expect(calibrate(spec, weights, back).prunedExperts).toEqual(calibrate(spec, weights, batch).prunedExperts);
    }
  });

  it("slices batches by rows", () => {
    const batch = randomBatch(spec, 10, 6);
    const part = sliceBatch(spec, batch, 3, 7);
    expect(part.rows).toBe(4);
    expect(Array.from(part.scenarios["page"]!)).toEqual(Array.from(batch.scenarios["page"]!.slice(3, 7)));
    expect(Array.from(part.features["ctx"] as Float32Array)).toEqual(Array.from((batch.features["ctx"] as Float32Array).slice(6, 14)));
  });

  it("needs rows", () => {
    expect(() => calibrate(spec, weights, sliceBatch(spec, randomBatch(spec, 3, 1), 0, 0))).toThrow(AesmError);
  });
});

describe("held-out check", () => {
  const spec = model({
    scenarios: [level("page", ["a", "b", "c"], { experts: 6, select: aesm(1, 1) })],
    taskLayers: taskLayers({ experts: 4, select: aesm(1, 1) }),
  });
  const weights = randomWeights(spec, 31);

  it("on rows like the calibration rows: every held-out row uses the reference's experts", () => {
    const r = checkHeldOut(spec, weights, oneScenario(spec, randomBatch(spec, 100, 32)));
    expect([r.calibrationRows, r.heldOutRows]).toEqual([80, 20]);
    for (const l of r.layers) expect(l.agreeing, l.path).toBe(l.rows);
    for (const o of r.outputs) expect(o.maxAbs, o.name).toBeLessThanOrEqual(1e-5);
  });

  it("on rows from elsewhere: reports the rows whose experts changed", () => {
    const s = model({ scenarios: [level("page", ["a", "b", "c"], { experts: 4, select: fixed({ a: [0], b: [1], c: [2] }, [3]) })] });
    const batch = randomBatch(s, 100, 33);
    // calibration: value a only; held out: values b and c
    batch.scenarios["page"] = batch.scenarios["page"]!.map((_, i) => (i < 80 ? 0n : BigInt(1 + (i % 2))));
    const r = checkHeldOut(s, randomWeights(s, 3), batch, { fraction: 0.8 });
    expect(r.prunedExperts).toEqual({ "scenario_layers.page.0": [1, 2] });
    expect(r.layers).toEqual([{ path: "scenario_layers.page.0", agreeing: 0, rows: 20 }]);
    expect(r.outputs[0]!.maxAbs).toBeGreaterThan(1e-5);
  });

  it("checks a graph of the caller's making", () => {
    const r = checkHeldOut(spec, weights, randomBatch(spec, 20, 34), { fraction: 0.5, build: () => lowerModel(spec, weights) });
    for (const l of r.layers) expect(l.agreeing).toBe(l.rows);
    expect(() => checkHeldOut(spec, weights, randomBatch(spec, 4, 1), { fraction: 1 })).toThrow("both sides");
  });
});

describe("the plan", () => {
  const spec = model({ scenarios: [level("page", ["a", "b"], { experts: 3, select: aesm(1, 1) })] });
  const run = (plan: Record<string, number[]>) => {
    const g = lowerModel(spec, randomWeights(spec, 1));
    return () => pruneCalibrated.run(g, { options: { prunedExperts: plan }, stats: {} });
  };
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return (e as AesmError).diagnostics?.[0]?.code;
    }
    return "none";
  };

  it("must name layers and experts the graph has, and leave one expert", () => {
    expect(code(run({ "scenario_layers.search.0": [1] }))).toBe("AESM1902");
    expect(code(run({ "scenario_layers.page.0": [3] }))).toBe("AESM1902");
    expect(code(run({ "scenario_layers.page.0": [0, 1, 2] }))).toBe("AESM1902");
  });

  it("does nothing without a plan, or with empty lists", () => {
    const g = lowerModel(spec, randomWeights(spec, 1));
    const options: PassOptions[] = [{}, { prunedExperts: {} }, { prunedExperts: { "scenario_layers.page.0": [] } }];
    for (const o of options) expect(pruneCalibrated.run(g, { options: o, stats: {} }).changed).toBe(false);
  });

  it("names experts by their original index after prune-static removed some", () => {
    const s = model({ scenarios: [level("page", ["a", "b"], { experts: 5, select: fixed({ a: [0, 2], b: [3] }, [4]) })] });
    const l = lowerFixture(s, 2, 64);
    const batch = oneScenario(s, l.batch);
    const feeds = batchToFeeds(batch, s);
    const before = runGraph(l.graph, feeds);
    const { stats } = applyWith(l.graph, [pruneStatic, pruneCalibrated], { prunedExperts: { "scenario_layers.page.0": [1, 3] } });
    expect(stats["prune-static/experts-removed"]).toBe(1); // expert 1: named by no value
    expect(stats["prune-calibrated/experts-removed"]).toBe(1); // expert 3: value b's, unused by rows of a
    expect(l.graph.nodes.some((n) => /\.experts\.[13]$/.test(n.scope))).toBe(false);
    expectSameOutputs(before, runGraph(l.graph, feeds), INTERP_TOL, "after prune-static");
  });
});
