// softmax-from-log: Softmax(Z, a) as Exp(LogSoftmax(Z, a)) where both are taken over an
// inner axis (golden before and after), P within (|log P| + 2) ulps, when it stays
// away, and every fixture model at -O2 with and without it.

import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import type { Tensor } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { softmaxFromLog } from "../../src/passes/softmax-from-log.ts";
import { FUSION_MODELS, INTERP_TOL, applyPasses, expectGolden, expectSameOutputs, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

/** Z [batch, 3, 4] → P = Softmax(Z, axis), L = LogSoftmax(Z, axis'), both outputs. */
function tiny(axis: number, logAxis = axis): Graph {
  const g = new Graph("tiny_softmax_from_log");
  const Z = g.addInput("Z", { dtype: "float32", shape: ["batch", 3, 4] });
  g.setOutput("P", g.op("Softmax", [Z], { axis }, { names: ["P"] }));
  g.setOutput("L", g.op("LogSoftmax", [Z], { axis: logAxis }, { names: ["L"] }));
  return g;
}

const feeds: Record<string, Tensor> = {
  Z: { dtype: "float32", shape: [2, 3, 4], data: Float32Array.from({ length: 24 }, (_, i) => Math.sin(i * 1.7) * 30) },
};

describe("softmax-from-log", () => {
  it("over the gate axis: P from the log-softmax (golden before and after), within (|log P| + 2) ulps", () => {
    const g = tiny(1);
    expectGolden("softmax-from-log.before.txt", printGraph(g));
    const before = runGraph(g, feeds);
    const c = ctx();
    expect(softmaxFromLog.run(g, c).changed).toBe(true);
    verifyGraph(g);
    expectGolden("softmax-from-log.after.txt", printGraph(g));
    expect(c.stats).toEqual({ "softmaxes-from-log": 1 });
    expect(g.nodes.map((n) => n.op)).toEqual(["LogSoftmax", "Exp"]);
    const after = runGraph(g, feeds);
    // exp turns the log-softmax's rounding (an ulp of |log P|) into a relative error of P
    const [p, q, L] = [before["P"]!.data as Float32Array, after["P"]!.data as Float32Array, before["L"]!.data as Float32Array];
    for (let i = 0; i < p.length; i++) expect(Math.abs(p[i]! - q[i]!), `P[${i}]`).toBeLessThanOrEqual((Math.abs(L[i]!) + 2) * 2 ** -23 * p[i]!);
  });

  it("stays away over the last axis (already fast), and from a log-softmax over another axis", () => {
    for (const g of [tiny(2), tiny(-1), tiny(1, 2)]) {
      const text = printGraph(g);
      expect(softmaxFromLog.run(g, ctx()).changed).toBe(false);
      expect(printGraph(g)).toBe(text);
    }
  });
});

describe.each(FUSION_MODELS)("$name", ({ spec }) => {
  it("-O2 with and without it gives the same outputs", () => {
    const l = lowerFixture(spec, 41);
    const all = passesForLevel(2);
    const a = runGraph(applyPasses(l.graph.clone(), all.filter((p) => p.id !== "softmax-from-log")).graph, l.feeds);
    const b = runGraph(applyPasses(l.graph, all).graph, l.feeds);
    expectSameOutputs(a, b, INTERP_TOL, spec.name);
  });
});
