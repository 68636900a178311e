import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { selectionLayerPaths, selectionOutputName } from "../../src/core/batch.ts";
import { formatType, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { MASK_FILL, lowerModel } from "../../src/lower/index.ts";
import { aesm, gate, level, mlp, model, randomWeights, taskLayers } from "./fixtures.ts";

const here = dirname(fileURLToPath(import.meta.url));

/** The golden model: every part once, small enough to read. */
function tinySpec() {
  return model({
    name: "tiny",
    features: [
      { kind: "categorical", name: "user", vocab: 5, dim: 2 },
      { kind: "dense", name: "ctx", dim: 1 },
    ],
    scenarios: [
      level("page", ["home", "search"], {
        dim: 2,
        experts: 2,
        expert: mlp([3], { batchNorm: true }),
        select: aesm(1, 1),
      }),
    ],
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: taskLayers({ dim: 1, experts: 2, expert: mlp([2], { act: "gelu" }), select: { kind: "topK", k: 1 } }),
  });
}

/** Compare with a committed golden file; UPDATE_GOLDEN=1 rewrites it. */
function expectGolden(name: string, text: string): void {
  const path = join(here, "golden", name);
  if (process.env["UPDATE_GOLDEN"] === "1" || !existsSync(path)) writeFileSync(path, text);
  expect(text).toBe(readFileSync(path, "utf8"));
}

describe("lowerModel: graph interface (MODEL.md §8)", () => {
  const spec = model({
    name: "shop",
    scenarios: [
      level("page", ["home", "search", "cart"], { select: aesm(1, 1) }),
      level("search", ["text", "image"], { layers: 2, select: { kind: "all" } }),
    ],
    taskLayers: taskLayers({ layers: 2, select: aesm(1, 0) }),
  });
  const g = lowerModel(spec, randomWeights(spec, 1));

  it("is named after the model and passes the verifier", () => {
    expect(g.name).toBe("shop");
    verifyGraph(g);
  });

  it("has one input per feature, then one per scenario level, with symbolic batch", () => {
    expect(g.inputs.map((v) => `${v.name}: ${formatType(v.type)}`)).toEqual([
      "user: i64[batch]",
      "ctx: f32[batch,2]",
      "page: i64[batch]",
      "search: i64[batch]",
    ]);
  });

  it("has one output per task, then the selection outputs in selectionLayerPaths order", () => {
    const paths = selectionLayerPaths(spec);
    expect(paths).toEqual([
      "scenario_layers.page.0",
      "scenario_layers.search.0",
      "scenario_layers.search.1",
      "task_layers.0.ctr",
      "task_layers.0.cvr",
      "task_layers.1.ctr",
      "task_layers.1.cvr",
    ]);
    expect(g.outputs.map((o) => `${o.name}: ${formatType(o.value.type)}`)).toEqual([
      "ctr: f32[batch]",
      "cvr: f32[batch]",
      ...paths.map((p) => `${selectionOutputName(p)}: f32[batch,${p.startsWith("task") ? 3 : 4}]`),
    ]);
    // output values carry the output names, so the emitter needs no aliases
    for (const o of g.outputs) expect(o.value.name).toBe(o.name);
  });

  it("leaves the selection outputs out on request", () => {
    const h = lowerModel(spec, randomWeights(spec, 1), { selectionOutputs: false });
    expect(h.outputs.map((o) => o.name)).toEqual(["ctr", "cvr"]);
    verifyGraph(h);
  });

  it("scopes nodes by model part, one subgraph per expert and per gate", () => {
    const scopes = new Set(g.nodes.map((n) => n.scope));
    for (const s of [
      "features.user",
      "features",
      "scenarios.page",
      "scenarios.search",
      "scenario_layers.page.0.experts.3",
      "scenario_layers.page.0.gates",
      "scenario_layers.page.0.gates.2",
      "scenario_layers.page.0.select",
      "scenario_layers.page.0.mix",
      "scenario_layers.search.1.gates.1",
      "tasks",
      "task_layers.1.cvr.experts.2",
      "task_layers.1.cvr.gates.1",
      "task_layers.1.cvr.select",
      "towers.ctr",
    ])
      expect(scopes, s).toContain(s);
    // every scope is one of those parts
    for (const s of scopes)
      expect(s).toMatch(/^(features(\.\w+)?|scenarios\.\w+|tasks|towers\.\w+|(scenario_layers\.\w+\.\d+|task_layers\.\d+\.\w+)\.(experts\.\d+|gates(\.\d+)?|select|mix))$/);
    // the page level's 3 gates each have their own MatMul
    const gateMatMuls = g.nodes.filter((n) => n.op === "MatMul" && /^scenario_layers\.page\.0\.gates\.\d$/.test(n.scope));
    expect(gateMatMuls.length).toBe(3);
  });

  it("stores linear weights transposed as <name>.T and the rest under canonical names", () => {
    const byName = new Map(g.constants.map((c) => [c.name, c]));
    const w = byName.get("scenario_layers.page.0.experts.1.layers.0.linear.weight.T")!;
    expect(w.type.shape).toEqual([5, 6]); // x0 = 3 + 2 wide, 6 units
    expect(byName.has("scenario_layers.page.0.experts.1.layers.0.linear.weight")).toBe(false);
    expect(byName.get("features.user.weight")!.type.shape).toEqual([7, 3]);
    expect(byName.get("tasks.weight")!.type.shape).toEqual([2, 2]);
    expect(byName.get("scenario_layers.page.0.experts.1.layers.0.linear.bias")!.type.shape).toEqual([6]);
    // every constant is a canonical tensor, a transposed one, or a named derived value
    for (const c of g.constants) expect(c.name).toMatch(/(\.weight|\.bias|\.weight\.T|\.std|\.allowed)$|^const\.|^select\./);
  });

  it("transposes exactly", () => {
    const weights = randomWeights(spec, 1);
    const src = weights.get("towers.ctr.layers.0.linear.weight")!;
    const t = g.constants.find((c) => c.name === "towers.ctr.layers.0.linear.weight.T")!.data!;
    const [o, i] = src.shape as [number, number];
    expect(t.shape).toEqual([i, o]);
    for (let r = 0; r < o; r++) for (let c = 0; c < i; c++) expect(t.data[c * o + r]).toBe(src.data[r * i + c]);
  });

  it("uses a finite masking constant", () => {
    const fill = g.constants.find((c) => c.name === "select.mask_fill")!;
    expect(fill.data!.data[0]).toBe(Math.fround(MASK_FILL));
    expect(Number.isFinite(fill.data!.data[0])).toBe(true);
  });

  it("rejects weights that do not match the layout, naming the tensor", () => {
    const weights = randomWeights(spec, 1);
    weights.delete("scenario_layers.page.0.gates.1.out.weight");
    expect(() => lowerModel(spec, weights)).toThrow(AesmError);
    expect(() => lowerModel(spec, weights)).toThrow("scenario_layers.page.0.gates.1.out.weight: missing tensor");
  });
});

describe("lowerModel: golden text", () => {
  it("prints the tiny model as committed in golden/tiny.txt", () => {
    const spec = tinySpec();
    const g = lowerModel(spec, randomWeights(spec, 7));
    verifyGraph(g);
    expectGolden("tiny.txt", printGraph(g));
  });

  it("lowers batch norm literally and gate options as declared", () => {
    const spec = model({
      scenarios: [
        level("page", ["a", "b"], {
          experts: 2,
          expert: mlp([3], { batchNorm: true, bias: true, act: "tanh" }),
          gate: gate({ units: [4], act: "sigmoid", batchNorm: true }),
          select: { kind: "fixed", specific: { a: [0] }, shared: [1] },
        }),
      ],
    });
    const g = lowerModel(spec, randomWeights(spec, 3));
    verifyGraph(g);
    const ops = (scope: string) => g.nodes.filter((n) => n.scope === scope).map((n) => n.op);
    expect(ops("scenario_layers.page.0.experts.0")).toEqual(["MatMul", "Add", "Sub", "Div", "Mul", "Add", "Tanh"]);
    expect(ops("scenario_layers.page.0.gates.1")).toEqual(["MatMul", "Add", "Sigmoid", "MatMul", "Sub", "Div", "Mul", "Add"]);
    const allowed = g.constants.find((c) => c.name === "scenario_layers.page.0.select.allowed")!;
    expect(formatType(allowed.type)).toBe("bool[2,2]");
    expect(Array.from(allowed.data!.data as Uint8Array)).toEqual([1, 1, 0, 1]);
  });
});
