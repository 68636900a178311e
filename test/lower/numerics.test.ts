// The lowered graph, run by the interpreter, against the float64 reference evaluator:
// task outputs within 1e-5, mixing weights within 1e-5, the same selected experts on every row.

import { describe, expect, it } from "vitest";
import { selectionOutputName } from "../../src/core/batch.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { runGraph } from "../../src/backends/interp/index.ts";
import { verifyGraph } from "../../src/ir/index.ts";
import { lowerModel } from "../../src/lower/index.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { aesm, feedsOf, gate, level, mlp, model, randomBatch, randomWeights, taskLayers } from "./fixtures.ts";

/** Absolute tolerance on probabilities and mixing weights (float32 graph vs float64 reference). */
const TOL = 1e-5;
const ROWS = 160;

interface Worst {
  index: number;
  abs: number;
  rel: number;
}

function worst(got: ArrayLike<number>, want: ArrayLike<number>): Worst {
  let w: Worst = { index: -1, abs: 0, rel: 0 };
  for (let i = 0; i < want.length; i++) {
    const abs = Math.abs(got[i]! - want[i]!);
    if (!(abs <= w.abs)) w = { index: i, abs, rel: abs / Math.max(Math.abs(want[i]!), 1e-30) };
  }
  return w;
}

function checkModel(spec: ModelSpec, seed: number): void {
  const weights = randomWeights(spec, seed);
  const g = lowerModel(spec, weights);
  verifyGraph(g, "lowering");
  const batch = randomBatch(spec, ROWS, seed + 1000);
  const out = runGraph(g, feedsOf(spec, batch));
  const ref = evaluateReference(spec, weights, batch);

  for (const t of spec.tasks) {
    const got = out[t.name]!;
    expect(got.shape).toEqual([ROWS]);
    const w = worst(got.data as Float32Array, ref.outputs[t.name]!);
    expect(w.abs, `${t.name}: worst row ${w.index}, abs ${w.abs}, rel ${w.rel}`).toBeLessThanOrEqual(TOL);
  }

  for (const layer of ref.layers) {
    const name = selectionOutputName(layer.path);
    const got = out[name]!.data as Float32Array;
    const E = layer.experts;
    expect(out[name]!.shape).toEqual([ROWS, E]);
    const w = worst(got, layer.weights);
    expect(w.abs, `${name}: worst at row ${Math.floor(w.index / E)} expert ${w.index % E}, abs ${w.abs}`).toBeLessThanOrEqual(TOL);
    for (let r = 0; r < ROWS; r++) {
      const mine = Array.from(got.subarray(r * E, (r + 1) * E), (v) => (v > 0 ? 1 : 0));
      const theirs = Array.from(layer.weights.subarray(r * E, (r + 1) * E), (v) => (v > 0 ? 1 : 0));
      expect(mine, `${name} row ${r}: selected experts (w > 0)`).toEqual(theirs);
    }
  }
}

/** Scenario and task policies to sweep (fixed keys name values a/b/c and tasks ctr/cvr). */
const POLICIES: [string, SelectSpec, SelectSpec][] = [
  ["aesm masked", aesm(1, 1), aesm(1, 1)],
  ["aesm masked, overlapping sets", aesm(2, 2), aesm(2, 1)],
  ["aesm specific only", aesm(2, 0), aesm(1, 0)],
  ["aesm shared only", aesm(0, 2), aesm(0, 1)],
  ["aesm reference mask", aesm(1, 1, "reference"), aesm(1, 1, "reference")],
  ["aesm reference mask, overlapping", aesm(2, 2, "reference"), aesm(2, 1, "reference")],
  ["all", { kind: "all" }, { kind: "all" }],
  ["topK", { kind: "topK", k: 2 }, { kind: "topK", k: 1 }],
  ["topK = E", { kind: "topK", k: 4 }, { kind: "topK", k: 3 }],
  [
    "fixed",
    { kind: "fixed", specific: { a: [0], b: [1, 2], c: [3] }, shared: [2] },
    { kind: "fixed", specific: { ctr: [0], cvr: [1] }, shared: [2] },
  ],
  [
    "fixed, missing keys",
    { kind: "fixed", specific: { a: [3] }, shared: [0, 1] },
    { kind: "fixed", specific: {}, shared: [0, 2] },
  ],
];

describe("lowered graph vs reference: selection policies", () => {
  POLICIES.forEach(([name, scenarioSelect, taskSelect], i) => {
    it(`${name} on scenario and task layers`, () => {
      checkModel(
        model({
          scenarios: [level("page", ["a", "b", "c"], { select: scenarioSelect })],
          taskLayers: taskLayers({ select: taskSelect }),
        }),
        100 + i,
      );
    });
  });
});

describe("lowered graph vs reference: model shapes", () => {
  const cases: [string, ModelSpec][] = [
    [
      "no task layers, two layers in a level",
      model({ scenarios: [level("page", ["a", "b", "c"], { layers: 2, select: aesm(1, 1) })] }),
    ],
    [
      "two levels, then task layers",
      model({
        scenarios: [
          level("page", ["a", "b"], { select: aesm(1, 1) }),
          level("search", ["x", "y", "z"], { dim: 2, experts: 5, expert: mlp([4]), select: aesm(2, 1) }),
        ],
        taskLayers: taskLayers({ select: aesm(1, 1) }),
      }),
    ],
    [
      "three levels, multi-layer, deep experts, two task layers",
      model({
        scenarios: [
          level("site", ["s0", "s1"], { dim: 2, select: { kind: "all" } }),
          level("page", ["a", "b", "c"], { layers: 2, expert: mlp([8, 5]), select: aesm(1, 1) }),
          level("slot", ["top", "side"], { dim: 1, experts: 3, expert: mlp([4]), select: { kind: "topK", k: 2 } }),
        ],
        tasks: [
          { name: "ctr", tower: mlp([6, 3]) },
          { name: "cvr", tower: mlp([4], { act: "tanh" }) },
          { name: "gmv", tower: mlp([]) },
        ],
        taskLayers: taskLayers({ layers: 2, experts: 4, select: aesm(1, 1) }),
      }),
    ],
    [
      "batch norm everywhere (reference setting: no bias)",
      model({
        scenarios: [
          level("page", ["a", "b", "c"], {
            expert: mlp([6, 4], { batchNorm: true }),
            gate: gate({ batchNorm: true }),
            select: aesm(1, 1),
          }),
        ],
        tasks: [{ name: "ctr", tower: mlp([3], { batchNorm: true }) }],
        taskLayers: taskLayers({ expert: mlp([4], { batchNorm: true }), gate: gate({ batchNorm: true }), select: aesm(1, 1) }),
        eps: 1e-5,
      }),
    ],
    [
      "batch norm with bias, gates without bias",
      model({
        scenarios: [
          level("page", ["a", "b", "c"], {
            expert: mlp([5], { batchNorm: true, bias: true }),
            gate: gate({ bias: false }),
            select: aesm(2, 1),
          }),
        ],
      }),
    ],
    [
      "gates with hidden units",
      model({
        scenarios: [level("page", ["a", "b", "c"], { gate: gate({ units: [5, 4], act: "tanh" }), select: aesm(1, 1) })],
        taskLayers: taskLayers({ gate: gate({ units: [3], act: "gelu", batchNorm: true }), select: { kind: "topK", k: 2 } }),
      }),
    ],
    [
      "dense features only",
      model({
        features: [
          { kind: "dense", name: "a", dim: 3 },
          { kind: "dense", name: "b", dim: 1 },
        ],
        scenarios: [level("page", ["a", "b", "c"], { select: aesm(1, 1) })],
      }),
    ],
    [
      "one categorical feature (no concat), large vocab",
      model({
        features: [{ kind: "categorical", name: "item", vocab: 50, dim: 4 }],
        scenarios: [level("page", ["a", "b"], { experts: 2, select: aesm(1, 0) })],
        tasks: [{ name: "ctr", tower: mlp([2]) }],
      }),
    ],
    [
      "several categorical features",
      model({
        features: [
          { kind: "categorical", name: "u", vocab: 3, dim: 2 },
          { kind: "dense", name: "d", dim: 2 },
          { kind: "categorical", name: "i", vocab: 9, dim: 3 },
        ],
        scenarios: [level("page", ["a", "b", "c"], { select: aesm(1, 1) })],
      }),
    ],
  ];
  cases.forEach(([name, spec], i) => it(name, () => checkModel(spec, 200 + i)));
});

describe("lowered graph vs reference: activations", () => {
  for (const act of ["relu", "tanh", "leaky_relu", "gelu", "sigmoid", "none"] as const)
    it(act, () =>
      checkModel(
        model({
          scenarios: [
            level("page", ["a", "b", "c"], {
              expert: mlp([6, 5], { act }),
              gate: gate({ units: [4], act }),
              select: aesm(1, 1),
            }),
          ],
          tasks: [
            { name: "ctr", tower: mlp([3], { act }) },
            { name: "cvr", tower: mlp([]) },
          ],
          taskLayers: taskLayers({ expert: mlp([4], { act, batchNorm: true }), select: aesm(1, 1) }),
        }),
        300 + act.length,
      ),
    );
});

describe("out-of-range categorical ids", () => {
  it("read a zero embedding", () => {
    const spec = model({
      features: [{ kind: "categorical", name: "user", vocab: 4, dim: 3 }],
      scenarios: [level("page", ["a", "b"], { select: { kind: "all" } })],
    });
    const weights = randomWeights(spec, 9);
    const g = lowerModel(spec, weights);
    const ids = [-1n, 4n, 1n << 40n, -(1n << 62n), 0n, 3n];
    const feeds = feedsOf(spec, {
      rows: ids.length,
      features: { user: new BigInt64Array(ids) },
      scenarios: { page: new BigInt64Array(ids.length) },
    });
    const out = runGraph(g, feeds);
    // every out-of-range id gives the same output: that of an all-zero embedding
    const p = Array.from(out["ctr"]!.data as Float32Array);
    expect(p[1]).toBe(p[0]);
    expect(p[2]).toBe(p[0]);
    expect(p[3]).toBe(p[0]);
    expect(p[4]).not.toBe(p[0]);
    const ref = evaluateReference(spec, weights, {
      rows: ids.length,
      features: { user: new BigInt64Array(ids) },
      scenarios: { page: new BigInt64Array(ids.length) },
    });
    expect(worst(p, ref.outputs["ctr"]!).abs).toBeLessThanOrEqual(TOL);
  });
});
