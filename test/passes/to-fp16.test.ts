// to-fp16: the IR before and after on a tiny model (golden), what stays float32 and why, the
// interpreter's half graph against the float64 reference with fp16 tolerances on every fixture
// model, onnxruntime's CPU provider running the emitted model through parity, and the CLI.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { compileGraph, compileModel, compileToFile } from "../../src/compile.ts";
import { selectionOutputName } from "../../src/core/batch.ts";
import { f32, floatToHalf, halfToFloat } from "../../src/core/tensor.ts";
import { Graph, type Value, formatType, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { PRECISION_DEFAULTS, generateInputs, resolveTolerances, runParity } from "../../src/parity/index.ts";
import type { PassContext } from "../../src/passes/pass.ts";
import { PRECISION_METADATA_KEY, isSelectionScope, toFp16 } from "../../src/passes/to-fp16.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { loadModel } from "../../src/dsl/index.ts";
import { calibrateTowers, initWeights } from "../../src/weights/index.ts";
import { runCli, tempDir } from "../cli/cli-helpers.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";
import { aesm, level, mlp, model, taskLayers } from "../lower/fixtures.ts";
import { FUSION_MODELS, expectGolden, lowerFixture } from "./fusion-parity.ts";

const ctx = (): PassContext => ({ options: {}, stats: {} });

/** Half's tolerances (src/parity/tolerance.ts): an element fails when |Δ| > 1e-3 and |Δ|/|ref| > 1e-2. */
const FP16 = PRECISION_DEFAULTS.fp16;
/**
 * A selection whose reference margin is below this may flip in half: gates read half activations
 * (relative error ~1e-3 after a few layers), so scores move by up to ~1e-3. Measured on the
 * example model: first flips at margins up to 2e-3 in 4096 rows.
 */
const FP16_NEAR_TIE = 1e-2;
/** Mixing weights of rows that select the same experts: float32 softmaxes of logits from half inputs (worst seen 3.3e-3). */
const FP16_WEIGHT_TOL = 5e-3;

/** The lowering's tiny model (test/lower/golden/tiny.txt): BN experts, gelu task experts, aesm and topK selection. */
function tinySpec() {
  return model({
    name: "tiny",
    features: [
      { kind: "categorical", name: "user", vocab: 5, dim: 2 },
      { kind: "dense", name: "ctx", dim: 1 },
    ],
    scenarios: [level("page", ["home", "search"], { dim: 2, experts: 2, expert: mlp([3], { batchNorm: true }), select: aesm(1, 1) })],
    tasks: [
      { name: "ctr", tower: mlp([]) },
      { name: "cvr", tower: mlp([]) },
    ],
    taskLayers: taskLayers({ dim: 1, experts: 2, expert: mlp([2], { act: "gelu" }), select: { kind: "topK", k: 1 } }),
  });
}

const dtypes = (vs: readonly Value[]) => vs.map((v) => v.type.dtype);
const isFloat = (d: string) => d === "float32" || d === "float16";

describe("to-fp16 on the tiny model", () => {
  it("the IR before and after (golden)", () => {
    const l = lowerFixture(tinySpec(), 7, 16);
    expectGolden("to-fp16.before.txt", printGraph(l.graph));
    const c = ctx();
    const r = toFp16.run(l.graph, c);
    expect(r.changed).toBe(true);
    verifyGraph(r.graph, "to-fp16");
    expectGolden("to-fp16.after.txt", printGraph(r.graph));
    expect(c.stats).toEqual({
      "nodes-to-f16": 48,
      "constants-to-f16": 20, // 19 in place, and the twin of const.f32.0 (also read by selection)
      "casts-inserted": 8, // ctx down; x0 and the page mix up for gates; 3 mixing weights down; 2 probabilities up
      "kept-f32:selection": 69,
      "kept-f32:graph-output": 2, // the Squeezes producing ctr and cvr
    });
  });

  it("keeps the ONNX contract, gates and selection in float32, and the weights' names", () => {
    const l = lowerFixture(tinySpec(), 7, 16);
    const signature = (g: Graph) => [...g.inputs.map((v) => `${v.name}:${formatType(v.type)}`), ...g.outputs.map((o) => `${o.name}:${formatType(o.value.type)}`)];
    const before = signature(l.graph);
    const constantNames = l.graph.constants.map((c) => c.name);
    const g = toFp16.run(l.graph, ctx()).graph;
    // inputs and outputs (task probabilities and select:<layer> weights) unchanged: MODEL.md §8
    expect(signature(g)).toEqual(before);
    expect(g.metadata[PRECISION_METADATA_KEY]).toBe("fp16");
    // gates and selection never see half; TopK, Softmax, OneHot are all selection here
    for (const n of g.nodes.filter((x) => isSelectionScope(x.scope) && x.op !== "Cast"))
      expect([...dtypes(n.inputs), ...dtypes(n.outputs)], `${n.op} in ${n.scope}`).not.toContain("float16");
    // experts and towers compute in half
    const matmuls = g.nodes.filter((n) => n.op === "MatMul");
    for (const n of matmuls) {
      const want = isSelectionScope(n.scope) ? "float32" : "float16";
      expect(dtypes(n.outputs), `${n.outputs[0]!.name}`).toEqual([want]);
    }
    expect(matmuls.filter((n) => n.outputs[0]!.type.dtype === "float16").length).toBe(8); // 2 + 2·2 experts, 2 towers
    const constant = (name: string) => g.constants.find((c) => c.name === name)!;
    expect(constant("scenario_layers.page.0.experts.0.layers.0.linear.weight.T").type.dtype).toBe("float16");
    expect(constant("features.user.weight").type.dtype).toBe("float16");
    expect(constant("scenario_layers.page.0.gates.0.out.weight.T").type.dtype).toBe("float32");
    // the scenario indicator feeds gates only: its table stays float32
    expect(constant("scenarios.page.weight").type.dtype).toBe("float32");
    // converted in place (names kept); only twins are new
    for (const name of constantNames) expect(g.constants.map((c) => c.name)).toContain(name);
    expect(g.constants.map((c) => c.name).filter((n) => !constantNames.includes(n))).toEqual(["const.f32.0.f16"]);
    // each value cast at most once per direction, and every Cast changes the dtype
    const casts = g.nodes.filter((n) => n.op === "Cast");
    const keys = casts.map((n) => `${n.inputs[0]!.name}→${String(n.attrs["to"])}`);
    expect(new Set(keys).size).toBe(keys.length);
    for (const n of casts) expect(n.inputs[0]!.type.dtype).not.toBe(n.outputs[0]!.type.dtype);
    // the dense input is cast once at entry; the outputs' producers read float32
    expect(keys).toContain("ctx→float16");
    for (const o of g.outputs) expect(dtypes(o.value.producer!.inputs).filter(isFloat)).not.toContain("float16");
  });

  it("matches the float32 graph within half's tolerances in the interpreter", () => {
    const l = lowerFixture(tinySpec(), 7, 64);
    const before = runGraph(l.graph, l.feeds);
    const after = runGraph(toFp16.run(l.graph, ctx()).graph, l.feeds);
    for (const name of Object.keys(before)) {
      const a = before[name]!.data as Float32Array;
      const b = after[name]!.data as Float32Array;
      expect(b).toBeInstanceOf(Float32Array);
      for (let i = 0; i < a.length; i++) expect(Math.abs(a[i]! - b[i]!), `${name}[${i}]`).toBeLessThanOrEqual(FP16.atol + FP16.rtol * Math.abs(a[i]!));
    }
  });

  it("changes nothing the second time", () => {
    const l = lowerFixture(tinySpec(), 7, 4);
    toFp16.run(l.graph, ctx());
    const text = printGraph(l.graph);
    const c = ctx();
    expect(toFp16.run(l.graph, c).changed).toBe(false);
    expect(printGraph(l.graph)).toBe(text);
    expect(c.stats["nodes-to-f16"]).toBeUndefined();
  });
});

describe("what stays float32, and why", () => {
  /** y = Relu(x·W) with a constant W, read also by a gate: `W` is shared by a half and a float32 reader. */
  function handGraph(w: number[]) {
    const g = new Graph("hand");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
    const W = g.addConstant("W", f32([2, 2], w));
    const h = g.op("Relu", [g.op("MatMul", [x, W], {}, { scope: "scenario_layers.page.0.experts.0", names: ["m"] })], {}, { scope: "scenario_layers.page.0.experts.0", names: ["h"] });
    const z = g.op("MatMul", [h, W], {}, { scope: "scenario_layers.page.0.gates.0", names: ["z"] });
    g.setOutput("y", g.op("Squeeze", [g.op("Slice", [g.op("Add", [h, z], {}, { scope: "towers.y" })], { starts: [0], ends: [1], axes: [1] }, { scope: "towers.y" })], { axes: [1] }, { scope: "towers.y" }));
    return g;
  }

  it("a constant read by half and float32 nodes gets a half twin; the original stays", () => {
    const g = handGraph([0.5, -1, 2, 0.25]);
    const c = ctx();
    toFp16.run(g, c);
    verifyGraph(g);
    expect(g.constants.map((v) => `${v.name}:${formatType(v.type)}`)).toEqual(["W:f32[2,2]", "W.f16:f16[2,2]"]);
    expect(g.nodes.find((n) => n.outputs[0]!.name === "m")!.inputs[1]!.name).toBe("W.f16");
    expect(g.nodes.find((n) => n.outputs[0]!.name === "z")!.inputs[1]!.name).toBe("W");
    expect(Array.from(g.constants[1]!.data!.data as Uint16Array, halfToFloat)).toEqual([0.5, -1, 2, 0.25]);
    expect(c.stats["kept-f32:selection"]).toBe(1);
  });

  it("a reader of a constant beyond half's range (±65504) stays float32", () => {
    const g = handGraph([0.5, -1, 1e5, 0.25]);
    const c = ctx();
    toFp16.run(g, c);
    verifyGraph(g);
    expect(c.stats["kept-f32:constant-beyond-half"]).toBe(1);
    expect(g.nodes.find((n) => n.outputs[0]!.name === "m")!.outputs[0]!.type.dtype).toBe("float32");
    expect(g.constants.map((v) => v.type.dtype)).toEqual(["float32"]);
  });

  it("sparse dispatch's ScatterND accumulator (reduction add) stays float32: no half kernel on onnxruntime's CPU provider", () => {
    const spec = model({ scenarios: [level("page", ["a", "b", "c"], { experts: 4, select: aesm(1, 1) })] });
    const g = compileGraph(spec, initWeights(spec, 1), { passOptions: { sparseDispatch: "always" }, precision: "fp16" });
    const scatters = g.nodes.filter((n) => n.op === "ScatterND");
    expect(scatters.length).toBeGreaterThan(0);
    for (const n of scatters) expect([...dtypes(n.inputs), ...dtypes(n.outputs)]).not.toContain("float16");
    // the experts' rows are still gathered and computed in half
    expect(g.nodes.some((n) => n.op === "MatMul" && n.scope.endsWith(".sparse") && n.outputs[0]!.type.dtype === "float16")).toBe(true);
  });

  it("compile runs it last, after the -O2 passes, and records it", () => {
    const spec = tinySpec();
    const r = compileModel(spec, initWeights(spec, 2), { precision: "fp16", verifyEach: true });
    expect(r.passes.at(-1)).toBe("to-fp16");
    expect(r.passes.filter((p) => p === "to-fp16")).toHaveLength(1);
    expect(r.stats.at(-1)!.counters["nodes-to-f16"]).toBeGreaterThan(0);
    expect(r.graph.metadata[PRECISION_METADATA_KEY]).toBe("fp16");
    const plain = compileModel(spec, initWeights(spec, 2));
    expect(plain.passes).not.toContain("to-fp16");
    expect(plain.graph.metadata[PRECISION_METADATA_KEY]).toBeUndefined();
  });
});

describe("-O2 in half against the float64 reference, every fixture model", () => {
  /**
   * Task outputs within half's tolerances and the same experts selected, on every row whose
   * selection does not flip; a flip is excused only on a near-tie (reference margin below
   * FP16_NEAR_TIE at that layer or one upstream on the row). Mixing weights within FP16_WEIGHT_TOL.
   */
  it.each(FUSION_MODELS.map((m) => [m.name, m.spec] as const))("%s", (name, spec) => {
    const l = lowerFixture(spec, 11, 128);
    const g = compileGraph(spec, l.weights, { precision: "fp16" });
    const out = runGraph(g, l.feeds);
    const ref = evaluateReference(spec, l.weights, l.batch);
    const rows = l.batch.rows;
    const flipped = new Uint8Array(rows);
    const nearTie = new Uint8Array(rows);
    const problems: string[] = [];
    for (const layer of ref.layers) {
      const w = out[selectionOutputName(layer.path)]!.data as Float32Array;
      const E = layer.experts;
      for (let r = 0; r < rows; r++) {
        if (layer.margin[r]! < FP16_NEAR_TIE) nearTie[r] = 1;
        let differs = false;
        for (let e = 0; e < E; e++) if (w[r * E + e]! > 1e-30 !== layer.weights[r * E + e]! > 1e-30) differs = true;
        if (differs && !nearTie[r]) problems.push(`row ${r}: ${layer.path} selects other experts, margin ${layer.margin[r]}`);
        if (differs) flipped[r] = 1;
        for (let e = 0; e < E && !flipped[r]; e++) {
          const d = Math.abs(w[r * E + e]! - layer.weights[r * E + e]!);
          if (!(d <= FP16_WEIGHT_TOL)) problems.push(`row ${r}: ${layer.path} weight ${e} off by ${d}`);
        }
      }
    }
    for (const t of spec.tasks) {
      const got = out[t.name]!.data as Float32Array;
      const want = ref.outputs[t.name]!;
      for (let r = 0; r < rows; r++) {
        if (flipped[r]) continue;
        const abs = Math.abs(got[r]! - want[r]!);
        if (!(abs <= FP16.atol || abs <= FP16.rtol * Math.abs(want[r]!))) problems.push(`row ${r}: ${t.name} ${got[r]} vs ${want[r]} (abs ${abs})`);
      }
    }
    expect(problems, name).toEqual([]);
    expect(flipped.reduce((a, b) => a + b, 0), `${name}: flipped rows`).toBeLessThan(rows / 10);
  });
});

describe("onnxruntime's CPU provider runs the half model", () => {
  const dir = tempDir("aesm-fp16-");

  /** Seeded weights with towers calibrated as `aesm init-weights` does, so outputs spread over (0, 1). */
  function calibratedWeights(spec: Parameters<typeof initWeights>[0]) {
    const w = initWeights(spec, 0);
    const batch = generateInputs(spec, { rows: 1024, seed: 0, extreme: 0, outOfRange: 0 });
    return calibrateTowers(spec, w, evaluateReference(spec, w, batch).outputs);
  }

  it.each(["aesm-two-levels", "topk", "activations", "gate-mlp"])("%s: checker, and parity with half's tolerances", async (name) => {
    const spec = FUSION_MODELS.find((m) => m.name === name)!.spec;
    const weights = calibratedWeights(spec);
    const path = join(dir, `${name}.onnx`);
    compileToFile(spec, weights, path, { precision: "fp16" });
    checkOnnxFile(path);
    // half initialisers as ONNX FLOAT16 (10) with little-endian raw_data
    const result = await runParity(spec, weights, path, {
      inputs: generateInputs(spec, { rows: 512, seed: 1 }),
      providers: ["cpu"],
      precision: "fp16",
      tolerances: resolveTolerances(spec.tasks.map((t) => t.name), "fp16", undefined, undefined),
      nearTie: FP16_NEAR_TIE,
      // the RMSE rule bounds error by float32's own noise: not half's (see the report's notes)
      fp32Rows: 0,
    });
    const problems = result.comparisons.filter((c) => c.gating && !c.pass).map((c) => c.id);
    expect(problems, name).toEqual([]);
    expect(result.runs.map((r) => r.id)).toEqual(["cpu:disabled", "cpu:all"]);
  }, 60_000);

  it("writes half initialisers as FLOAT16 raw_data, little-endian", async () => {
    const { decodeModel } = await import("../../src/backends/onnx/index.ts");
    const spec = tinySpec();
    const weights = initWeights(spec, 3);
    const path = join(dir, "tiny.onnx");
    compileToFile(spec, weights, path, { precision: "fp16", optLevel: 0 });
    const m = decodeModel(readFileSync(path));
    const t = m.graph!.initializer!.find((x) => x.name === "scenario_layers.page.0.experts.0.layers.0.linear.weight.T")!;
    expect(t.dataType).toBe(10);
    const raw = t.rawData!;
    const w = weights.get("scenario_layers.page.0.experts.0.layers.0.linear.weight")!; // [out, in]; the IR holds Wᵀ [in, out]
    const [out, inp] = w.shape as [number, number];
    const first = raw[0]! | (raw[1]! << 8); // element [0, 0]
    const second = raw[2]! | (raw[3]! << 8); // element [0, 1] = W[1, 0]
    expect(first).toBe(floatToHalf((w.data as Float32Array)[0]!));
    expect(second).toBe(floatToHalf((w.data as Float32Array)[1 * inp]!));
    expect(raw.length).toBe(2 * out * inp);
    expect(m.metadataProps!.find((p) => p.key === "aesm.precision")!.value).toBe("fp16");
  });
});

describe("the CLI: compile --precision fp16, then parity", () => {
  const model = join(import.meta.dirname, "..", "..", "examples", "search-ranker.ts");

  it("compiles, passes the checker, and parity picks fp16 from the model's metadata", async () => {
    const dir = tempDir("aesm-fp16-cli-");
    const weights = join(dir, "w.safetensors");
    const onnx = join(dir, "model.onnx");
    const report = join(dir, "report.json");
    expect((await runCli(["init-weights", model, "-o", weights])).code).toBe(0);
    const c = await runCli(["compile", model, "-w", weights, "-o", onnx, "--precision", "fp16", "--stats"]);
    expect(c.err).toBe("");
    expect(c.code).toBe(0);
    expect(c.out).toMatch(/^to-fp16 +yes/m);
    expect(c.out).toMatch(/wrote .*model\.onnx: opset 17, fp16, /);
    checkOnnxFile(onnx);
    // fp16 defaults (picked from the metadata): atol 5e-3, rtol 1e-2, near-tie 1e-2, no float32 rows
    const p = await runCli(["parity", model, "-w", weights, "--onnx", onnx, "--rows", "1024", "--json", report]);
    expect(p.err).toBe("");
    expect(p.code, p.out).toBe(0);
    const json = JSON.parse(readFileSync(report, "utf8"));
    expect(json.settings.precision).toBe("fp16");
    expect(json.settings.tolerances).toEqual({ ctr: { atol: 5e-3, rtol: 1e-2 }, cvr: { atol: 5e-3, rtol: 1e-2 } });
    // an explicit --precision wins over the metadata
    const q = await runCli(["parity", model, "-w", weights, "--onnx", onnx, "--rows", "64", "--precision", "fp32", "--fp32-rows", "0", "--json", report]);
    expect([0, 1]).toContain(q.code);
    expect(JSON.parse(readFileSync(report, "utf8")).settings.precision).toBe("fp32");
  }, 120_000);
});
