// absorb-unsqueeze and contract-as-matmul: the selection's mixing weights stay [.., 1, E] from
// the reductions that make them, and Zi becomes one MatMul. Golden before/after on a tiny
// model, bit-identical outputs, the select: outputs kept, and every fixture model after the
// -O2 passes before them.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { printGraph, verifyGraph } from "../../src/ir/index.ts";
import { absorbUnsqueeze } from "../../src/passes/absorb-unsqueeze.ts";
import { additiveMask } from "../../src/passes/additive-mask.ts";
import { contractAsMatmul } from "../../src/passes/contract-as-matmul.ts";
import { cse } from "../../src/passes/cse.ts";
import { fuseExperts } from "../../src/passes/fuse-experts.ts";
import { fuseGates } from "../../src/passes/fuse-gates.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { rowConstants } from "../../src/passes/row-constants.ts";
import { selectClosedForm } from "../../src/passes/select-closed-form.ts";
import { stackStreams } from "../../src/passes/stack-streams.ts";
import { tabulateIndex } from "../../src/passes/tabulate-index.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";
import { checkModel } from "./selection-checks.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });
const bits = (t: Tensor) => Array.from(new Uint32Array((t.data as Float32Array).slice().buffer));
const BEFORE = [selectClosedForm, additiveMask, fuseGates, rowConstants, tabulateIndex, fuseExperts, cse, stackStreams];

function tinySpec() {
  return model({
    name: "tiny_absorb",
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [level("page", ["a", "b", "c"], { dim: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) })],
    taskLayers: taskLayers({ dim: 1, layers: 1, experts: 3, expert: mlp([2]), select: aesm(1, 1) }),
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
  });
}

describe("absorb-unsqueeze, then contract-as-matmul, on a tiny model", () => {
  it("keeps the unit axis in the reductions, then contracts Zi with a MatMul: before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 1, 48);
    const { graph } = applyPasses(l.graph, BEFORE);
    expectGolden("absorb-unsqueeze.before.txt", printGraph(graph));
    const before = runGraph(graph, l.feeds);
    const unsqueezes = graph.nodes.filter((n) => n.op === "Unsqueeze").length;
    const a = ctx();
    expect(absorbUnsqueeze.run(graph, a).changed).toBe(true);
    verifyGraph(graph);
    // the page layer's w (its select: output reads a Squeeze); the stacked task layer's w is
    // also read by the per-task select: Gathers, so nothing would be saved there
    expect(a.stats).toEqual({ "unsqueezes-absorbed": 1 });
    expect(graph.nodes.filter((n) => n.op === "Unsqueeze").length).toBe(unsqueezes - 1);
    const middle = runGraph(graph, l.feeds);
    for (const k of Object.keys(before)) expect(bits(middle[k]!), k).toEqual(bits(before[k]!));
    const c = ctx();
    expect(contractAsMatmul.run(graph, c).changed).toBe(true);
    verifyGraph(graph);
    expectGolden("absorb-unsqueeze.after.txt", printGraph(graph));
    expect(c.stats["contractions"]).toBeGreaterThanOrEqual(2);
    // select: outputs keep their [batch, E] type
    for (const o of graph.outputs) expect(o.value.type.shape.length, o.name).toBe(o.name.startsWith("select:") ? 2 : 1);
    expectSameOutputs(before, runGraph(graph, l.feeds), INTERP_TOL, "tiny_absorb");
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("keeps the interpreter's outputs and parity with the reference (near-ties of the reference excused)", () => {
    checkModel(spec, 19, [...BEFORE, absorbUnsqueeze, contractAsMatmul], {}, { nearTies: "excused" });
  });
});
