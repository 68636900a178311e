// prune-static: the IR before and after on a tiny model (golden); selections of every expert
// dropped (and the reference mask's doubled logits kept); unselectable experts removed with
// their gate columns; and parity on every fixture model and on models with such experts.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { formatType, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { pruneStatic } from "../../src/passes/prune-static.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { aesm, gate, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { checkModel, usedExperts } from "./selection-checks.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

const fixed = (specific: Record<string, number[]>, shared: number[]): SelectSpec => ({ kind: "fixed", specific, shared });

/** Expert 1 of the scenario layer is named by no value; the task layers rank all their experts (k = E). */
function tinySpec(): ModelSpec {
  return model({
    name: "tiny_prune",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b"], { dim: 1, experts: 3, expert: mlp([2]), select: fixed({ a: [0] }, [2]) })],
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: taskLayers({ dim: 1, experts: 2, expert: mlp([2]), select: { kind: "topK", k: 2 } }),
  });
}

describe("prune-static on a tiny model", () => {
  it("drops the full selections and removes the unselectable expert: before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    expectGolden("prune-static.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const params = l.graph.parameterCount();
    const c = ctx();
    const r = pruneStatic.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph);
    expectGolden("prune-static.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({ "selections-dropped": 2, "experts-removed": 1, "gate-columns-removed": 1 });
    const after = runGraph(r.graph, l.feeds);
    expectSameOutputs(before, after, INTERP_TOL, "tiny_prune");
    // expert 1 and its weights are gone, and so are the gates' columns for it
    expect(r.graph.nodes.some((n) => n.scope === "scenario_layers.page.0.experts.1")).toBe(false);
    expect(r.graph.constants.some((c) => c.name.startsWith("scenario_layers.page.0.experts.1."))).toBe(false);
    const gateW = r.graph.constants.filter((c) => /^scenario_layers\.page\.0\.gates\.\d\.out\.weight\.T/.test(c.name) && c.users.size > 0);
    expect(gateW.map((c) => formatType(c.type))).toEqual(["f32[3,2]", "f32[3,2]"]);
    expect(r.graph.parameterCount()).toBeLessThan(params);
    // the selection output keeps its name and type, with w = 0 for the removed expert
    const w = r.graph.outputs.find((o) => o.name === "select:scenario_layers.page.0")!;
    expect(w.value.name).toBe("select:scenario_layers.page.0");
    expect(formatType(w.value.type)).toBe("f32[batch,3]");
    expect(new Set(usedExperts(after, "scenario_layers.page.0").flat()).has(1)).toBe(false);
    // the task layers' selection subgraph is gone: no TopK left
    expect(r.graph.nodes.some((n) => n.op === "TopK")).toBe(false);
  });

  it("gathers Z's kept columns where it cannot see through the gates (fused first)", () => {
    const l = lowerFixture(tinySpec(), 1, 32);
    const before = runGraph(l.graph, l.feeds);
    fuseGates.run(l.graph, ctx());
    l.graph.toposort();
    const c = ctx();
    pruneStatic.run(l.graph, c);
    verifyGraph(l.graph);
    expect(c.stats["experts-removed"]).toBe(1);
    expect(c.stats["gate-columns-gathered"]).toBe(1);
    expectSameOutputs(before, runGraph(l.graph, l.feeds), INTERP_TOL, "tiny_prune fused gates");
  });
});

describe("selections of every expert", () => {
  const E = 3;
  const cases: [string, SelectSpec, boolean][] = [
    ["topK with k = E", { kind: "topK", k: E }, true],
    ["topK with k > E (clamped)", { kind: "topK", k: E + 2 }, true],
    ["topK with k < E", { kind: "topK", k: E - 1 }, false],
    ["aesm, specific set of all", aesm(E, 1), true],
    ["aesm, shared set of all", aesm(1, E), true],
    ["aesm, neither set of all", aesm(2, 2), false],
    ["aesm reference mask, one set of all", aesm(0, E, "reference"), true],
    // an expert in both sets has its logit doubled (MODEL.md §7): not a plain softmax
    ["aesm reference mask, both sets", aesm(E, 1, "reference"), false],
    ["fixed naming every expert for every value", fixed({ a: [0, 1], b: [2] }, [1, 2, 0]), true],
    ["fixed", fixed({ a: [0, 1], b: [2] }, [1]), false],
  ];
  it.each(cases)("%s: dropped = %s", (_, select, dropped) => {
    const spec = model({ scenarios: [level("page", ["a", "b"], { experts: E, select })] });
    const { graph, stats } = checkModel(spec, 4, [pruneStatic]);
    expect(stats["prune-static/selections-dropped"] ?? 0).toBe(dropped ? 1 : 0);
    if (dropped) {
      const w = graph.outputs.find((o) => o.name === "select:scenario_layers.page.0")!.value;
      expect(w.producer!.op).toBe("Softmax");
      expect(w.producer!.inputs[0]!.name).toBe("scenario_layers.page.0.select.Zi");
    }
  });

  it("also after select-closed-form", () => {
    const spec = model({ scenarios: [level("page", ["a", "b"], { experts: E, select: aesm(1, E) })] });
    const { graph, stats } = checkModel(spec, 4, [selectClosedForm, pruneStatic]);
    expect(stats["prune-static/selections-dropped"]).toBe(1);
    expect(graph.nodes.some((n) => n.op === "TopK" || n.op === "ReduceLogSumExp")).toBe(false);
  });
});

/** Models with experts that no value names: through batch-normed gates, gate MLPs, several layers and task layers. */
const UNSELECTABLE: { name: string; spec: ModelSpec; removed: number }[] = [
  {
    name: "batch-normed gates, two layers",
    spec: model({
      scenarios: [
        level("page", ["a", "b", "c"], {
          layers: 2,
          experts: 5,
          expert: mlp([6], { batchNorm: true }),
          gate: gate({ batchNorm: true }),
          select: fixed({ a: [0], b: [2] }, [3]),
        }),
      ],
      taskLayers: taskLayers({ experts: 4, select: fixed({ ctr: [1] }, [3]) }),
    }),
    removed: 2 * 2 + 2 * 2,
  },
  {
    name: "gates with hidden units, two levels",
    spec: model({
      scenarios: [
        level("site", ["s", "t"], { dim: 2, experts: 3, gate: gate({ units: [4], act: "tanh" }), select: fixed({ s: [2] }, [0]) }),
        level("page", ["a", "b", "c"], { experts: 4, gate: gate({ units: [3] }), select: fixed({ a: [3], b: [3], c: [1] }, []) }),
      ],
    }),
    removed: 1 + 2,
  },
];

describe.each(UNSELECTABLE)("unselectable experts: $name", ({ spec, removed }) => {
  it("removes them and their gate columns, keeping the numbers", () => {
    const params = lowerFixture(spec, 9, 1).graph.parameterCount();
    const { graph, stats, nodesBefore } = checkModel(spec, 9, [pruneStatic], {}, { tol: INTERP_TOL });
    expect(stats["prune-static/experts-removed"]).toBe(removed);
    expect(stats["prune-static/gate-columns-gathered"] ?? 0).toBe(0);
    expect(graph.nodes.length).toBeLessThan(nodesBefore);
    expect(graph.parameterCount()).toBeLessThan(params);
  });
});

describe.each(FUSION_MODELS)("parity: $name", ({ spec }) => {
  it("keeps the interpreter's outputs and parity with the reference", () => {
    checkModel(spec, 13, [pruneStatic], {}, { tol: INTERP_TOL });
  });
});
