// Builders: plain tagged data with the MODEL.md §2 defaults; defineModel validates via parseModel;
// and the fixture models cover the model family as fixtures/models.ts claims.

import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import {
  ACTIVATIONS,
  aesm,
  all,
  categorical,
  defineModel,
  dense,
  fixed,
  gate,
  mlp,
  parseModel,
  topK,
  type ExpertLayerSpec,
  type ModelSpec,
} from "../../src/dsl/index.ts";
import { testModels } from "../../fixtures/models.ts";

describe("builders", () => {
  it("features", () => {
    expect(categorical({ vocab: 10, dim: 4 })).toEqual({ kind: "categorical", vocab: 10, dim: 4 });
    expect(dense(3)).toEqual({ kind: "dense", dim: 3 });
  });

  it("mlp: relu, no batch norm, bias = !batchNorm", () => {
    expect(mlp([8])).toEqual({ kind: "mlp", units: [8], act: "relu", batchNorm: false, bias: true });
    expect(mlp([8], { batchNorm: true })).toEqual({ kind: "mlp", units: [8], act: "relu", batchNorm: true, bias: false });
    expect(mlp([], { act: "tanh", batchNorm: true, bias: true })).toEqual({
      kind: "mlp",
      units: [],
      act: "tanh",
      batchNorm: true,
      bias: true,
    });
  });

  it("gate: no units, relu, no batch norm, bias = !batchNorm", () => {
    expect(gate()).toEqual({ kind: "gate", units: [], act: "relu", batchNorm: false, bias: true });
    expect(gate({ batchNorm: true, bias: false })).toEqual({
      kind: "gate",
      units: [],
      act: "relu",
      batchNorm: true,
      bias: false,
    });
    expect(gate({ units: [4], act: "gelu" })).toMatchObject({ units: [4], act: "gelu" });
  });

  it("selection policies", () => {
    expect(aesm({ specific: 1, shared: 2 })).toEqual({ kind: "aesm", specific: 1, shared: 2, eps: 1e-9, mask: "masked" });
    expect(aesm({ specific: 1, shared: 0, eps: 1e-6, mask: "reference" })).toEqual({
      kind: "aesm",
      specific: 1,
      shared: 0,
      eps: 1e-6,
      mask: "reference",
    });
    expect(all()).toEqual({ kind: "all" });
    expect(topK(2)).toEqual({ kind: "topK", k: 2 });
    expect(fixed({ specific: { a: [0] }, shared: [1] })).toEqual({ kind: "fixed", specific: { a: [0] }, shared: [1] });
    expect(fixed({})).toEqual({ kind: "fixed", specific: {}, shared: [] });
  });

  it("builders produce JSON-serialisable data", () => {
    const parts = [mlp([1]), gate(), aesm({ specific: 1, shared: 1 }), all(), topK(1), fixed({ shared: [0] }), dense(1)];
    for (const p of parts) expect(JSON.parse(JSON.stringify(p))).toEqual(p);
  });
});

describe("defineModel", () => {
  const input = {
    name: "search-ranker",
    features: { user_id: categorical({ vocab: 1000, dim: 8 }), price: dense(4) },
    scenarios: {
      page: {
        values: ["home", "vertical"],
        dim: 4,
        layers: 1,
        experts: 4,
        expert: mlp([16]),
        gate: gate(),
        select: aesm({ specific: 1, shared: 1 }),
      },
      search: {
        values: ["brand", "category", "shop"],
        dim: 4,
        experts: 6,
        expert: mlp([16]),
        select: aesm({ specific: 2, shared: 1 }),
      },
    },
    tasks: { ctr: { tower: mlp([8]) }, cvr: { tower: mlp([8]) } },
    taskLayers: { dim: 4, layers: 2, experts: 4, expert: mlp([16]), gate: gate(), select: aesm({ specific: 1, shared: 1 }) },
    batchNorm: { eps: 1e-3 },
  } as const;

  it("returns the normalised spec, the same as parseModel", () => {
    const m = defineModel(input);
    expect(m).toEqual(parseModel(input));
    expect(m.scenarios[1]!.layers).toBe(1);
    expect(m.scenarios[1]!.gate).toEqual(gate());
    expect(m.features.map((f) => f.name)).toEqual(["user_id", "price"]);
  });

  it("throws one AesmError listing every problem", () => {
    let err: unknown;
    try {
      defineModel({
        ...input,
        scenarios: {
          page: { ...input.scenarios.page, experts: 8, select: aesm({ specific: 9, shared: 1 }) },
          search: { ...input.scenarios.search, expert: mlp([]) },
        },
      });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AesmError);
    expect((err as AesmError).diagnostics).toEqual([
      { code: "AESM1050", path: "scenarios.page.select.specific", message: "must be ≤ experts (8), got 9" },
      {
        code: "AESM1032",
        path: "scenarios.search.expert.units",
        message: "must list at least one unit (an expert needs an output width)",
      },
    ]);
  });
});

describe("fixtures/models.ts covers the model family", () => {
  const specs = testModels.map((m) => m.spec);
  const layersOf = (s: ModelSpec): ExpertLayerSpec[] => [...s.scenarios, ...(s.taskLayers ? [s.taskLayers] : [])];
  const allLayers = specs.flatMap(layersOf);
  const mlps = specs.flatMap((s) => [...layersOf(s).map((l) => l.expert), ...s.tasks.map((t) => t.tower)]);
  const gates = allLayers.map((l) => l.gate);

  it("has unique names matching the spec names, and about a dozen models", () => {
    expect(new Set(testModels.map((m) => m.name)).size).toBe(testModels.length);
    for (const m of testModels) expect(m.spec.name).toBe(m.name);
    expect(testModels.length).toBeGreaterThanOrEqual(12);
  });

  it("1, 2 and 3 scenario levels; with and without task layers; stacked layers", () => {
    expect(new Set(specs.map((s) => s.scenarios.length))).toEqual(new Set([1, 2, 3]));
    expect(specs.some((s) => s.taskLayers === null)).toBe(true);
    expect(specs.some((s) => s.scenarios.some((l) => l.layers >= 2))).toBe(true);
    expect(specs.some((s) => (s.taskLayers?.layers ?? 0) >= 2)).toBe(true);
  });

  it("1 to 16 experts", () => {
    const experts = allLayers.map((l) => l.experts);
    expect(Math.min(...experts)).toBe(1);
    expect(Math.max(...experts)).toBe(16);
  });

  it("every policy and its edge cases", () => {
    const sel = allLayers.map((l) => [l.select, l.experts] as const);
    expect(sel.some(([s]) => s.kind === "aesm" && s.mask === "masked")).toBe(true);
    expect(sel.some(([s]) => s.kind === "aesm" && s.mask === "reference")).toBe(true);
    expect(sel.some(([s]) => s.kind === "aesm" && s.specific === 0)).toBe(true);
    expect(sel.some(([s]) => s.kind === "aesm" && s.shared === 0)).toBe(true);
    expect(sel.some(([s]) => s.kind === "all")).toBe(true);
    expect(sel.some(([s]) => s.kind === "topK" && s.k === 1)).toBe(true);
    expect(sel.some(([s, e]) => s.kind === "topK" && s.k === e)).toBe(true);
    expect(specs.some((s) => s.scenarios.some((l) => l.select.kind === "fixed"))).toBe(true);
    expect(specs.some((s) => s.taskLayers?.select.kind === "fixed")).toBe(true);
  });

  it("batch norm and bias on and off, gates with hidden units, towers without units", () => {
    for (const parts of [mlps, gates]) {
      expect(new Set(parts.map((p) => p.batchNorm))).toEqual(new Set([true, false]));
      expect(new Set(parts.map((p) => p.bias))).toEqual(new Set([true, false]));
    }
    expect(mlps.some((m) => !m.batchNorm && !m.bias)).toBe(true);
    expect(mlps.some((m) => m.batchNorm && m.bias)).toBe(true);
    expect(gates.some((g) => g.units.length > 0)).toBe(true);
    expect(specs.some((s) => s.tasks.some((t) => t.tower.units.length === 0))).toBe(true);
  });

  it("every activation", () => {
    const used = new Set([...mlps, ...gates.filter((g) => g.units.length > 0)].map((p) => p.act));
    expect(used).toEqual(new Set(ACTIVATIONS));
  });

  it("keeps widths small", () => {
    const widths = [
      ...specs.flatMap((s) => s.features.map((f) => f.dim)),
      ...mlps.flatMap((m) => m.units),
      ...gates.flatMap((g) => g.units),
    ];
    expect(Math.max(...widths)).toBeLessThanOrEqual(16);
  });
});
