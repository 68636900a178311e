// select-closed-form: the IR before and after on a tiny model (golden), with and without the
// near-tie rewrite; exact ties kept (identical gate columns, one gate); when it stays away;
// and parity with the interpreter and the reference on every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { ModelSpec } from "../../src/dsl/spec.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import type { PassContext, PassOptions } from "../../src/passes/pass.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { aesm, feedsOf, level, mlp, model, randomBatch, randomWeights, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { checkModel, usedExperts } from "./selection-checks.ts";

const ctx = (options: PassOptions = {}): PassContext => ({ options, stats: {} });

/** One level of 3 experts with AESM (1 specific + 1 shared), three scenario values (G = 3), one task. */
function tinySpec(values: string[] = ["a", "b", "c"]): ModelSpec {
  return model({
    name: "tiny_select",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", values, { dim: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
}

describe("select-closed-form on a tiny model", () => {
  it("ranks the shared score as mean log P and the specific one as Σ q·log(P + eps): before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    expectGolden("select-closed-form.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    const r = selectClosedForm.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("select-closed-form.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "shared-scores": 1, "specific-scores": 1 });
    // The shared score no longer divides, logs and multiplies over [batch, G, E].
    const ops = r.graph.nodes.filter((n) => n.scope === "scenario_layers.page.0.select").map((n) => n.op);
    expect(ops).not.toContain("Div");
    expect(ops.filter((op) => op === "Log")).toHaveLength(1);
    expect(ops).toContain("LogSoftmax");
    expect(ops).toContain("ReduceMean");
    expect(ops).not.toContain("ReduceLogSumExp");
    expectSameOutputs(before, runGraph(r.graph, l.feeds), INTERP_TOL, "tiny_select");
  });

  it("with nearTieRewrites, ranks log P[i, e] = Zi − LSE and leaves no softmax over the gates (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    const before = runGraph(l.graph, l.feeds);
    const c = ctx({ nearTieRewrites: true });
    const r = selectClosedForm.run(l.graph, c);
    verifyGraph(r.graph);
    expectGolden("select-closed-form.near-tie.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "shared-scores": 1, "specific-scores": 1, "near-tie-rewrites": 1 });
    expect(r.graph.nodes.some((n) => n.op === "Softmax" && n.inputs[0]!.type.shape.length === 3)).toBe(false);
    // it reuses the lowering's Zi rather than computing it again
    expect(r.graph.nodes.filter((n) => n.op === "ReduceSum" && n.outputs[0]!.name.endsWith(".Zi"))).toHaveLength(1);
    expectSameOutputs(before, runGraph(r.graph, l.feeds), INTERP_TOL, "tiny_select near-tie");
  });

  it("with two gates ranks s = Z[i] − Z[1 − i] and |s|: no softmax, log or log-sum-exp left, before and after (golden)", () => {
    const l = lowerFixture(tinySpec(["a", "b"]), 1, 64);
    const before = runGraph(l.graph, l.feeds);
    for (const options of [{}, { nearTieRewrites: true }]) {
      const g = l.graph.clone();
      const c = ctx(options);
      expect(selectClosedForm.run(g, c).changed).toBe(true);
      verifyGraph(g);
      expect(c.stats).toEqual({ "two-gate-scores": 2 });
      const ops = g.nodes.filter((n) => n.scope === "scenario_layers.page.0.select").map((n) => n.op);
      for (const op of ["Softmax", "LogSoftmax", "Log", "Div", "ReduceLogSumExp"]) expect(ops.filter((o) => o === op), op).toHaveLength(op === "Softmax" ? 1 : 0);
      expect(ops.filter((o) => o === "Abs")).toHaveLength(1);
      if (!options.nearTieRewrites) expectGolden("select-closed-form.two-gates.after.txt", printGraph(g));
      expectSameOutputs(before, runGraph(g, l.feeds), INTERP_TOL, "tiny_select two gates");
    }
  });

  it("with two gates picks the same experts as the reference on rows far from a tie", () => {
    const spec = model({
      scenarios: [level("page", ["a", "b"], { experts: 6, select: aesm(2, 2) })],
      taskLayers: taskLayers({ experts: 5, select: aesm(1, 2) }),
    });
    const { stats } = checkModel(spec, 21, [selectClosedForm]);
    expect(stats["select-closed-form/two-gate-scores"]).toBeGreaterThanOrEqual(4);
  });

  it("is idempotent: a second run finds nothing to rewrite", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    selectClosedForm.run(l.graph, ctx());
    const text = printGraph(l.graph);
    expect(selectClosedForm.run(l.graph, ctx()).changed).toBe(false);
    expect(printGraph(l.graph)).toBe(text);
  });
});

describe("exact ties", () => {
  /** Experts 1 and 2 get identical gate weights in every gate: their Z columns, and so their scores, are bit-identical. */
  function duplicatedGateColumns(spec: ModelSpec, seed: number) {
    const weights = randomWeights(spec, seed);
    for (const [name, t] of weights) {
      if (!/\.gates\.\d+\.out\.(weight|bias)$/.test(name)) continue;
      const width = t.shape.length === 2 ? t.shape[1]! : 1;
      const d = t.data as Float32Array;
      d.copyWithin(2 * width, width, 2 * width);
    }
    return weights;
  }

  it.each<[string, PassOptions]>([
    ["default", {}],
    ["near-tie rewrite", { nearTieRewrites: true }],
  ])("experts with identical gate columns: the lower index wins, as in the reference (%s)", (_, options) => {
    const spec = model({
      scenarios: [level("page", ["a", "b", "c"], { experts: 4, select: aesm(1, 1) })],
      taskLayers: taskLayers({ experts: 3, select: aesm(1, 1) }),
    });
    const weights = duplicatedGateColumns(spec, 5);
    const batch = randomBatch(spec, 128, 6);
    const g = lowerModel(spec, weights);
    const feeds = feedsOf(spec, batch);
    const before = runGraph(g, feeds);
    selectClosedForm.run(g, ctx(options));
    verifyGraph(g);
    const after = runGraph(g, feeds);
    const ref = evaluateReference(spec, weights, batch);
    let tiesSeen = 0;
    for (const layer of ref.layers) {
      const mine = usedExperts(after, layer.path);
      expect(mine, layer.path).toEqual(usedExperts(before, layer.path));
      const E = layer.experts;
      for (let r = 0; r < batch.rows; r++) {
        const theirs = [...Array(E).keys()].filter((e) => layer.weights[r * E + e]! > 0);
        expect(mine[r], `${layer.path} row ${r}`).toEqual(theirs);
        // experts 1 and 2 tie: never is 2 chosen without 1 unless both sets chose
        if (mine[r]!.includes(1) !== mine[r]!.includes(2)) tiesSeen++;
      }
    }
    expect(tiesSeen).toBeGreaterThan(0);
  });

  it.each<[string, PassOptions]>([
    ["default", {}],
    ["near-tie rewrite", { nearTieRewrites: true }],
  ])("one gate (a single task): every expert ties, so the lowest indices are selected (%s)", (_, options) => {
    const spec = model({
      scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })],
      tasks: [{ name: "ctr", tower: mlp([]) }],
      taskLayers: taskLayers({ experts: 4, select: aesm(1, 2) }),
    });
    const l = lowerFixture(spec, 3, 64);
    selectClosedForm.run(l.graph, ctx(options));
    const used = usedExperts(runGraph(l.graph, l.feeds), "task_layers.0.ctr");
    expect(new Set(used.map((u) => u.join(",")))).toEqual(new Set(["0,1"]));
  });
});

describe("where it stays away", () => {
  it("leaves a score that something besides TopK reads", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    const score = l.graph.nodes.find((n) => n.outputs[0]!.name === "scenario_layers.page.0.select.shared_score")!.outputs[0]!;
    l.graph.setOutput("shared_score", score);
    const c = ctx();
    selectClosedForm.run(l.graph, c);
    expect(c.stats).toEqual({ "specific-scores": 1, "skipped: the score is a graph output": 1 });
    expect(l.graph.isGraphOutput(score)).toBe(true);
  });

  it("keeps the exact specific score when eps is too large for the near-tie rewrite", () => {
    const spec = model({ scenarios: [level("page", ["a", "b", "c"], { select: { kind: "aesm", specific: 1, shared: 1, eps: 1e-3, mask: "masked" } })] });
    const l = lowerFixture(spec, 2, 32);
    const before = runGraph(l.graph, l.feeds);
    const c = ctx({ nearTieRewrites: true });
    selectClosedForm.run(l.graph, c);
    expect(c.stats).toEqual({ "shared-scores": 1, "specific-scores": 1, "near-tie-skipped-large-eps": 1 });
    expectSameOutputs(before, runGraph(l.graph, l.feeds), INTERP_TOL, "eps 1e-3");
  });

  it("does nothing without an AESM selection", () => {
    const spec = model({ scenarios: [level("page", ["a", "b"], { select: { kind: "topK", k: 2 } })] });
    const l = lowerFixture(spec, 2, 4);
    expect(selectClosedForm.run(l.graph, ctx()).changed).toBe(false);
  });
});

describe.each(FUSION_MODELS)("parity: $name", ({ spec }) => {
  it("keeps the interpreter's outputs and parity with the reference", () => {
    checkModel(spec, 11, [selectClosedForm]);
  });
  it("with the near-tie rewrite too (rows that are near-ties in the reference may flip)", () => {
    const { stats } = checkModel(spec, 12, [selectClosedForm], { nearTieRewrites: true }, { nearTies: "excused" });
    const aesmLayers = spec.scenarios.some((l) => l.select.kind === "aesm") || spec.taskLayers?.select.kind === "aesm";
    if (aesmLayers) expect(Object.keys(stats).some((k) => k.includes("scores"))).toBe(true);
  });
});
