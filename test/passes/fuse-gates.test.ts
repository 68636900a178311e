// fuse-gates: the IR before and after on a tiny model (golden), both forms of later gate
// layers, why gates are left alone, and parity on every fixture model.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { f32 } from "../../src/core/tensor.ts";
import { Graph, type Value, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { cse } from "../../src/passes/cse.ts";
import { foldBatchNorm } from "../../src/passes/fold-batch-norm.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { gate, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, checkPassesOnModel, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

/** Two gates with two hidden layers (wide, then block-diagonal) on one level; plain gates shared by two task streams. */
function tinySpec() {
  return model({
    name: "tiny_gates",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [
      level("page", ["a", "b"], {
        dim: 1,
        experts: 2,
        expert: mlp([2]),
        gate: gate({ units: [3, 2], act: "tanh" }),
        select: { kind: "all" },
      }),
    ],
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: taskLayers({ dim: 1, experts: 2, expert: mlp([2]), select: { kind: "all" } }),
  });
}

describe("fuse-gates on a tiny model", () => {
  it("computes each layer's Z with one wide MatMul: the IR before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 16);
    expectGolden("fuse-gates.before.txt", printGraph(l.graph));
    const before = runGraph(l.graph, l.feeds);
    const c = ctx();
    const r = fuseGates.run(l.graph, c);
    expect(r.changed).toBe(true);
    r.graph.toposort();
    verifyGraph(r.graph);
    expectGolden("fuse-gates.after.txt", printGraph(r.graph));
    // one scenario layer and one task layer with two streams
    expect(c.stats).toEqual({ "layers-fused": 3, "gates-fused": 6 });
    expect(r.graph.nodes.filter((n) => n.op === "Unsqueeze" && n.scope.endsWith(".select") && n.outputs[0]!.name.includes(".z"))).toEqual([]);
    expectSameOutputs(before, runGraph(r.graph, l.feeds), INTERP_TOL, "tiny_gates");
  });

  it("gives the task streams one set of fused weights", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    fuseGates.run(l.graph, ctx());
    const taskGates = l.graph.nodes.filter((n) => n.op === "MatMul" && /^task_layers\.0\.\w+\.gates$/.test(n.scope));
    expect(taskGates.map((n) => n.scope)).toEqual(["task_layers.0.ctr.gates", "task_layers.0.cvr.gates"]);
    expect(taskGates[0]!.inputs[1]).toBe(taskGates[1]!.inputs[1]);
  });

  it("changes nothing the second time", () => {
    const l = lowerFixture(tinySpec(), 1, 4);
    fuseGates.run(l.graph, ctx());
    l.graph.toposort();
    const text = printGraph(l.graph);
    expect(fuseGates.run(l.graph, ctx()).changed).toBe(false);
    expect(printGraph(l.graph)).toBe(text);
  });
});

/** Z = stack of G gates over x, each Linear → act → Linear, built by hand (acts per gate). */
function handGates(acts: ("Relu" | "Tanh")[], opts: { escape?: boolean; ownInput?: boolean } = {}) {
  const g = new Graph("gates");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
  const other = g.addInput("y", { dtype: "float32", shape: ["batch", 3] });
  let seed = 1;
  const rnd = (n: number) => Array.from({ length: n }, () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1);
  const zs: Value[] = acts.map((act, k) => {
    const input = opts.ownInput && k === 1 ? other : x;
    const h = g.op(act, [g.op("Add", [g.op("MatMul", [input, g.addConstant(`A${k}`, f32([3, 4], rnd(12)))]), g.addConstant(`a${k}`, f32([4], rnd(4)))])]);
    return g.op("MatMul", [h, g.addConstant(`B${k}`, f32([4, 2], rnd(8)))], {}, { scope: `gates.${k}` });
  });
  const parts = zs.map((z) => g.op("Unsqueeze", [z], { axes: [1] }));
  g.setOutput("Z", g.op("Concat", parts, { axis: 1 }, { names: ["Z"] }));
  if (opts.escape) g.setOutput("z0", zs[0]!);
  return g;
}

describe("fuse-gates on hand-built graphs", () => {
  const feeds = { x: f32([2, 3], [1, -2, 0.5, 0.25, 3, -1]), y: f32([2, 3], [0, 1, 2, 3, 4, 5]) };

  it("fuses gates given as plain MatMul chains", () => {
    const g = handGates(["Relu", "Relu", "Relu"]);
    const before = runGraph(g, feeds);
    const c = ctx();
    fuseGates.run(g, c);
    verifyGraph(g);
    expect(c.stats).toEqual({ "layers-fused": 1, "gates-fused": 3 });
    expect(g.nodes.map((n) => n.op)).toEqual(["MatMul", "Add", "Relu", "MatMul", "Reshape"]);
    expectSameOutputs(before, runGraph(g, feeds), { abs: INTERP_TOL, rel: 1e-6 }, "hand");
  });

  const skips: [string, ReturnType<typeof handGates>, string][] = [
    ["gates that differ in an activation", handGates(["Relu", "Tanh"]), "skipped:chains-differ"],
    ["a gate's logits read elsewhere", handGates(["Relu", "Relu"], { escape: true }), "skipped:logits-escape"],
    ["gates that read different inputs", handGates(["Relu", "Relu"], { ownInput: true }), "skipped:inputs-differ"],
  ];
  for (const [what, g, reason] of skips)
    it(`leaves ${what}, and says why`, () => {
      const text = printGraph(g);
      const c = ctx();
      expect(fuseGates.run(g, c).changed).toBe(false);
      expect(c.stats).toEqual({ [reason]: 1 });
      expect(printGraph(g)).toBe(text);
    });
});

describe("fuse-gates on every fixture model: interpreter unchanged, parity with the reference", () => {
  FUSION_MODELS.forEach(({ name, spec }, i) =>
    it(name, () => {
      const { graph, stats } = checkPassesOnModel(spec, 1100 + i, [fuseGates]);
      // every layer with two or more gates is fused; batch norm rides along unfolded
      const left = graph.nodes.filter((n) => n.op === "Concat" && n.outputs[0]!.name.endsWith(".select.Z"));
      expect(left.map((n) => n.outputs[0]!.name), JSON.stringify(stats)).toEqual([]);
    }),
  );

  it("after CSE and batch-norm folding", () => {
    for (const [i, { spec }] of FUSION_MODELS.entries()) checkPassesOnModel(spec, 1300 + i, [cse, foldBatchNorm, fuseGates]);
  }, 60_000);

  it("uses the gate-batched form for wide hidden layers and the block-diagonal one for narrow", () => {
    const spec = model({
      scenarios: [level("page", ["a", "b", "c"], { gate: gate({ units: [48, 48, 4] }), select: { kind: "all" } })],
    });
    const { graph } = checkPassesOnModel(spec, 3, [fuseGates]);
    const gates = graph.nodes.filter((n) => n.scope === "scenario_layers.page.0.gates" && n.op !== "Concat");
    // 48·3 × 48·3 exceeds the block-diagonal limit: Reshape → Transpose to [G, B, 48] once
    expect(gates.map((n) => n.op)).toEqual([
      "MatMul", "Add", "Relu", // layer 0: wide [F, 3·48]
      "Reshape", "Transpose", "MatMul", "Add", "Relu", // layer 1: gate-batched
      "MatMul", "Add", "Relu", // layer 2 (48 → 4): stays gate-batched
      "MatMul", "Add", // out (4 → E)
      "Transpose", // [G, B, E] → [B, G, E]
    ]);
  });
});
