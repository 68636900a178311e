// row-constants: the IR before and after on a tiny two-task model (golden), what is folded
// (task index, embedding, one-hots, the row pick), when it stays away, and every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { rowConstants } from "../../src/passes/row-constants.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { checkModel } from "./selection-checks.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

function tinySpec() {
  return model({
    name: "tiny_tasks",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 2, expert: mlp([2]), select: { kind: "all" } })],
    taskLayers: taskLayers({ dim: 2, layers: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
  });
}

describe("row-constants on a tiny two-task model", () => {
  it("folds the task index, embedding and one-hots: the IR before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    const reference = runGraph(l.graph, l.feeds);
    const { graph } = applyPasses(l.graph, [selectClosedForm, fuseGates]);
    expectGolden("row-constants.before.txt", printGraph(graph));
    const before = runGraph(graph, l.feeds);
    const c = ctx();
    const r = rowConstants.run(graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("row-constants.after.txt", printGraph(r.graph));
    // two gate inputs lose task_emb(t); each stream's Z[t] is a Gather; one-hots and signs are constants
    expect(c.stats).toEqual({ "gate-inputs-folded": 2, "operands-folded": 4, "rows-picked": 2 });
    expect(r.graph.nodes.filter((n) => n.scope === "tasks")).toEqual([]);
    expect(r.graph.nodes.some((n) => n.op === "OneHot" && n.inputs[0]!.name.startsWith("tasks."))).toBe(false);
    const after = runGraph(r.graph, l.feeds);
    expectSameOutputs(before, after, INTERP_TOL, "tiny_tasks");
    expectSameOutputs(reference, after, INTERP_TOL, "tiny_tasks vs lowering");
    expect(rowConstants.run(r.graph, ctx()).changed).toBe(false);
  });

  it("leaves a model without task layers alone (nothing is row-constant)", () => {
    const spec = model({ scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })] });
    const l = lowerFixture(spec, 2, 8);
    expect(rowConstants.run(l.graph, ctx()).changed).toBe(false);
  });

  it("does not fold a Mul by 0 of a float value (0·inf is NaN, not 0)", () => {
    const spec = model({ features: [{ kind: "dense", name: "x", dim: 2 }], scenarios: [level("page", ["a", "b"], { select: aesm(1, 1) })] });
    const l = lowerFixture(spec, 2, 8);
    const x = l.graph.inputs.find((v) => v.name === "x")!;
    const zero = l.graph.addConstant("zero", { dtype: "float32", shape: [], data: Float32Array.of(0) });
    const y = l.graph.op("Mul", [x, zero]);
    l.graph.setOutput("y", l.graph.op("Add", [y, x]));
    expect(rowConstants.run(l.graph, ctx()).changed).toBe(false);
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs and parity with the reference (after select-closed-form and fuse-gates)", () => {
    checkModel(spec, 13, [selectClosedForm, fuseGates, rowConstants]);
  });
});
