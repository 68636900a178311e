// `inspect`: parameters and FLOPs per part checked against counts worked out by hand for a
// small model; ONNX files read back (I/O, ops, opset, aesm metadata); non-ONNX files rejected.

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileToFile } from "../../src/compile.ts";
import { aesm, all, categorical, defineModel, dense, gate, mlp, topK } from "../../src/dsl/index.ts";
import { toModelInput } from "../../src/dsl/parse.ts";
import { inspectOnnxFile, inspectSpec } from "../../src/inspect/index.ts";
import { AESM_VERSION } from "../../src/version.ts";
import { initWeights } from "../../src/weights/index.ts";
import { type Project, expectNoStack, runCli, userProject } from "./helpers.ts";

// Two levels (one with batch-norm experts and a gate with a hidden layer), task layers with
// batch-norm gates, a tower with and one without hidden units.
const spec = defineModel({
  name: "counted",
  features: { user: categorical({ vocab: 10, dim: 2 }), x: dense(3) }, // F = 2 + 3 = 5
  scenarios: {
    page: { values: ["home", "search"], dim: 2, experts: 4, expert: mlp([4]), select: aesm({ specific: 1, shared: 1 }) },
    search: {
      values: ["a", "b", "c"],
      dim: 1,
      experts: 3,
      expert: mlp([6], { batchNorm: true }), // bias off, 4 BN vectors
      gate: gate({ units: [2] }),
      select: topK(2),
    },
  },
  taskLayers: { dim: 2, experts: 2, expert: mlp([3]), gate: gate({ batchNorm: true, bias: false }), select: all() },
  tasks: { ctr: { tower: mlp([2]) }, cvr: { tower: mlp([]) } },
});

describe("inspectSpec: hand-computed counts", () => {
  const r = inspectSpec(spec);
  const part = (name: string) => r.parts.find((p) => p.name === name)!;

  it("embeddings: user 10×2 = 20, page 2×2 = 4, search 3×1 = 3, tasks 2×2 = 4; no FLOPs", () => {
    expect(part("embeddings")).toMatchObject({ parameters: 31, flops: 0 });
  });

  it("scenarios.page: h = 5, gate input 5 + c_0 (2) = 7", () => {
    // experts 4 × (W 4×5 + b 4) = 4 × 24 = 96;  gates 2 × (W 4×7 + b 4) = 2 × 32 = 64
    // FLOPs: experts 4 × 2·5·4 = 160;           gates 2 × 2·7·4 = 112
    expect(part("scenarios.page")).toMatchObject({
      parameters: 160,
      flops: 272,
      layers: [
        {
          path: "scenario_layers.page.0",
          inputWidth: 5,
          outputWidth: 4,
          experts: 4,
          gates: 2,
          gateInputWidth: 7,
          policy: "aesm(specific 1, shared 1)",
          expertsPerRow: 2,
          streams: 1,
          parameters: { experts: 96, gates: 64, total: 160 },
          flops: { experts: 160, gates: 112, total: 272 },
        },
      ],
    });
  });

  it("scenarios.search: h = 4, gate input 4 + c_1 (2 + 1) = 7", () => {
    // experts 3 × (W 6×4 + BN 4×6) = 3 × 48 = 144;  gates 3 × (W 2×7 + b 2 + W 3×2 + b 3) = 3 × 25 = 75
    // FLOPs: experts 3 × 2·4·6 = 144;               gates 3 × (2·7·2 + 2·2·3) = 3 × 40 = 120
    expect(part("scenarios.search")).toMatchObject({
      parameters: 219,
      flops: 264,
      layers: [{ inputWidth: 4, outputWidth: 6, gateInputWidth: 7, policy: "topK(2)", expertsPerRow: 2, parameters: { experts: 144, gates: 75 } }],
    });
  });

  it("task layers: h = 6, gate input 6 + c_1 (3) + d_T (2) = 11, 2 task streams × 2 gates", () => {
    // experts 2 × (W 3×6 + b 3) = 42;  gates 2 × (W 2×11 + BN 4×2) = 2 × 30 = 60
    // FLOPs: 2 streams × 2 experts × 2·6·3 = 144;  2 streams × 2 gates × 2·11·2 = 176
    expect(part("task layers")).toMatchObject({
      parameters: 102,
      flops: 320,
      layers: [{ streams: 2, gates: 2, gateInputWidth: 11, policy: "all()", expertsPerRow: 2, flops: { experts: 144, gates: 176 } }],
    });
  });

  it("towers: h = 3; ctr mlp([2]) then Linear(2→1), cvr Linear(3→1)", () => {
    // ctr: W 2×3 + b 2 + W 1×2 + b 1 = 11, FLOPs 2·3·2 + 2·2·1 = 16;  cvr: W 1×3 + b 1 = 4, FLOPs 2·3·1 = 6
    expect(part("towers")).toMatchObject({
      parameters: 15,
      flops: 22,
      towers: [
        { task: "ctr", parameters: 11, flops: 16, layers: "mlp([2], relu) → Linear(2→1) → sigmoid" },
        { task: "cvr", parameters: 4, flops: 6, layers: "Linear(3→1) → sigmoid" },
      ],
    });
  });

  it("totals: 31 + 160 + 219 + 102 + 15 = 527 parameters (every value of the checkpoint); 878 FLOPs", () => {
    expect(r.parameters).toBe(527);
    expect(r.flops).toBe(272 + 264 + 320 + 22);
    let values = 0;
    for (const t of initWeights(spec, 0).values()) values += t.data.length;
    expect(values).toBe(527);
  });

  it("inputs and outputs as MODEL.md §8 names them", () => {
    expect(r.inputs.map((v) => [v.name, v.dtype, v.shape])).toEqual([
      ["user", "int64", ["batch"]],
      ["x", "float32", ["batch", 3]],
      ["page", "int64", ["batch"]],
      ["search", "int64", ["batch"]],
    ]);
    expect(r.outputs.map((v) => [v.name, v.dtype, v.shape])).toEqual([
      ["ctr", "float32", ["batch"]],
      ["cvr", "float32", ["batch"]],
    ]);
  });
});

describe("inspect on files", { timeout: 120_000 }, () => {
  let project: Project;
  let onnx: string;
  beforeAll(() => {
    project = userProject();
    onnx = join(project.dir, "counted.onnx");
    compileToFile(spec, initWeights(spec, 1), onnx);
  });
  afterAll(() => project.remove());

  it("reads an ONNX made by aesm: IR version, opset, I/O with shapes, op histogram, metadata", () => {
    const r = inspectOnnxFile(onnx);
    expect(r.irVersion).toBe(8);
    expect(r.opsets).toEqual([{ domain: "", version: 17 }]);
    expect(r.producer).toEqual({ name: "aesm", version: AESM_VERSION });
    expect(r.inputs.map((v) => [v.name, v.dtype, v.shape])).toEqual([
      ["user", "int64", ["batch"]],
      ["x", "float32", ["batch", 3]],
      ["page", "int64", ["batch"]],
      ["search", "int64", ["batch"]],
    ]);
    expect(r.outputs.slice(0, 2).map((v) => [v.name, v.dtype, v.shape])).toEqual([
      ["ctr", "float32", ["batch"]],
      ["cvr", "float32", ["batch"]],
    ]);
    expect(r.outputs.slice(2).map((v) => v.name)).toEqual([
      "select:scenario_layers.page.0",
      "select:scenario_layers.search.0",
      "select:task_layers.0.ctr",
      "select:task_layers.0.cvr",
    ]);
    // The histogram is the graph's nodes by op, counted independently here.
    const model = onnxProto.onnx.ModelProto.decode(readFileSync(onnx));
    const counts: Record<string, number> = {};
    for (const n of model.graph!.node!) counts[n.opType!] = (counts[n.opType!] ?? 0) + 1;
    expect(Object.fromEntries(r.ops.map((o) => [o.op, o.count]))).toEqual(counts);
    expect(r.nodes).toBe(model.graph!.node!.length);
    expect(r.ops.map((o) => o.count)).toEqual([...r.ops.map((o) => o.count)].sort((a, b) => b - a));
    // What compile recorded: its version and the spec, read back into the same report.
    expect(r.aesm?.compilerVersion).toBe(AESM_VERSION);
    expect(r.aesm?.model).toEqual(inspectSpec(spec));
    expect(r.metadata.find((m) => m.key === "aesm.model")?.value).toBe(JSON.stringify(toModelInput(spec)));
  });

  it("prints a text summary and, with --json, the same report as data", async () => {
    const text = await runCli(["inspect", onnx]);
    expect(text.code).toBe(0);
    expect(text.out).toMatch(/^.*counted\.onnx: ONNX IR version 8, opset ai\.onnx 17, producer aesm \S+\n/);
    expect(text.out).toContain(`made by aesm ${AESM_VERSION} from model "counted"`);
    expect(text.out).toMatch(/\n {2}x +float32 +\[batch, 3\]\n/);
    expect(text.out).toMatch(/\ntotal +527 +878\n/);
    const json = await runCli(["inspect", onnx, "--json"]);
    expect(json.code).toBe(0);
    expect(JSON.parse(json.out)).toEqual({ kind: "onnx", file: onnx, onnx: JSON.parse(JSON.stringify(inspectOnnxFile(onnx))) });
  });

  it("inspects a model file: the same figures, with the file's name", async () => {
    const file = project.write("counted.json", JSON.stringify(toModelInput(spec)));
    const r = await runCli(["inspect", file, "--json"]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({ kind: "model", file, model: JSON.parse(JSON.stringify(inspectSpec(spec))) });
    const text = await runCli(["inspect", file]);
    expect(text.out.split("\n")[0]).toBe(`${file}: model counted: 527 parameters, 878 FLOPs per row`);
    expect(text.out).toMatch(/\n {2}scenario_layers\.search\.0 +219 +264 +3 experts mlp\(\[6\], relu, batch norm, no bias\) · 3 gates on 7 · topK\(2\) \(≤ 2\/row\)\n/);
  });

  it("rejects a file that is not ONNX with AESM3003, exit 2, no stack trace", async () => {
    const notes = project.write("notes.txt", "these are notes, not a model\n");
    const r = await runCli(["inspect", notes]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toMatch(new RegExp(`^error\\[AESM3003\\]: ${notes.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: not an ONNX model: .+\\n$`));
    expectNoStack(r.err);
    const fake = join(project.dir, "fake.onnx");
    writeFileSync(fake, Buffer.from([0x0a, 0x03, 0x61, 0x62]));
    expect((await runCli(["inspect", fake])).err).toMatch(/^error\[AESM3003\]: .*fake\.onnx: not an ONNX model: /);
  });

  it("a missing file is AESM4001; --weights with an ONNX file is AESM4005", async () => {
    const missing = join(project.dir, "nope.onnx");
    expect(await runCli(["inspect", missing])).toEqual({ code: 2, out: "", err: `error[AESM4001]: ${missing}: no such file\n` });
    expect((await runCli(["inspect", onnx, "--weights", "w.safetensors"])).err).toBe(
      "error[AESM4005]: weights: --weights applies to a model file, not to an ONNX file\n",
    );
  });
});
