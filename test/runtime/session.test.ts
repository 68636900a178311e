// ModelSession on onnxruntime-node (CPU): feeds built from an InputBatch, known numbers out,
// and the user errors for inputs, providers and model files.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { InputBatch } from "../../src/core/batch.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import { f32 } from "../../src/core/tensor.ts";
import { writeOnnx } from "../../src/backends/onnx/index.ts";
import { Graph } from "../../src/ir/index.ts";
import { openSession, providerUnavailableMessage } from "../../src/runtime/index.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-runtime-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/**
 * A ranker-shaped graph (MODEL.md §8 interface): item (categorical, vocab 3, dim 2),
 * price (dense, dim 1), page (scenario level, 2 values) →
 *   ctr = sigmoid([emb(item); price] · w + bias[page]),  select:l0 = onehot(page).
 */
function rankerGraph(): Graph {
  const g = new Graph("ranker");
  const item = g.addInput("item", { dtype: "int64", shape: ["batch"] });
  const price = g.addInput("price", { dtype: "float32", shape: ["batch", 1] });
  const page = g.addInput("page", { dtype: "int64", shape: ["batch"] });
  const emb = g.addConstant("features.item.weight", f32([3, 2], [1, 0, 0, 1, -1, -1]));
  const w = g.addConstant("w", f32([3, 1], [0.5, -0.5, 2]));
  const bias = g.addConstant("bias", f32([2], [0, 1]));
  const x0 = g.op("Concat", [g.op("Gather", [emb, item], { axis: 0 }), price], { axis: 1 });
  const z = g.op("Squeeze", [g.op("MatMul", [x0, w]), ], { axes: [1] });
  const b = g.op("Gather", [bias, page], { axis: 0 });
  g.setOutput("ctr", g.op("Sigmoid", [g.op("Add", [z, b])], {}, { names: ["ctr"] }));
  g.setOutput("select:l0", g.op("OneHot", [page], { depth: 2 }, { names: ["select:l0"] }));
  return g;
}

const sigmoid = (v: number) => 1 / (1 + Math.exp(-v));

const batch = (): InputBatch => ({
  rows: 3,
  features: { item: new BigInt64Array([0n, 1n, 2n]), price: new Float32Array([1, 0.25, -0.5]) },
  scenarios: { page: new BigInt64Array([0n, 1n, 1n]) },
});

function errorOf(p: Promise<unknown>): Promise<AesmError> {
  return p.then(
    () => {
      throw new Error("expected an AesmError");
    },
    (e) => {
      if (e instanceof AesmError) return e;
      throw e;
    },
  );
}

let modelPath: string;
beforeAll(() => {
  modelPath = join(tmp, "ranker.onnx");
  writeOnnx(modelPath, rankerGraph(), { opset: 17 });
  checkOnnxFile(modelPath);
});

describe("ModelSession.run", () => {
  it("feeds ids [B], dense [B, dim] and scenario levels [B], and returns known numbers", async () => {
    const s = await openSession(modelPath);
    try {
      expect(s.inputNames).toEqual(["item", "price", "page"]);
      expect(s.outputNames).toEqual(["ctr", "select:l0"]);
      const out = await s.run(batch());
      // rows: emb [1,0]/[0,1]/[-1,-1]; z = 0.5·e0 − 0.5·e1 + 2·price; bias by page
      const want = [0.5 + 2 * 1 + 0, -0.5 + 2 * 0.25 + 1, -0.5 + 0.5 - 1 + 1].map(sigmoid);
      expect(out.ctr).toBeInstanceOf(Float32Array);
      Array.from(out.ctr!).forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-6));
      expect(Array.from(out["select:l0"]!)).toEqual([1, 0, 0, 1, 0, 1]);
    } finally {
      await s.close();
    }
  });

  it("returns only the requested outputs and gives the same numbers unoptimised on one thread", async () => {
    const a = await openSession(modelPath);
    const b = await openSession(modelPath, { optimization: "disabled", threads: 1 });
    try {
      const ra = await a.run(batch(), ["ctr"]);
      const rb = await b.run(batch(), ["ctr"]);
      expect(Object.keys(ra)).toEqual(["ctr"]);
      expect(Array.from(rb.ctr!)).toEqual(Array.from(ra.ctr!));
      expect((await errorOf(a.run(batch(), ["nope"]))).diagnostics[0]).toMatchObject({ code: "AESM3104", path: "nope" });
    } finally {
      await a.close();
      await b.close();
    }
  });

  it("rejects a scenario index outside [0, S) when told the sizes (AESM3101)", async () => {
    const s = await openSession(modelPath, { scenarioSizes: { page: 2 } });
    try {
      const bad = batch();
      bad.scenarios.page = new BigInt64Array([0n, 1n, 5n]);
      const err = await errorOf(s.run(bad));
      expect(err.diagnostics).toEqual([{ code: "AESM3101", path: "page", message: "scenario index 5 out of range [0, 2) at row 2" }]);
      bad.scenarios.page = new BigInt64Array([-1n, 0n, 0n]);
      expect((await errorOf(s.run(bad))).diagnostics[0]!.message).toBe("scenario index -1 out of range [0, 2) at row 0");
    } finally {
      await s.close();
    }
  });

  it("names every missing input (AESM3102) and badly typed input (AESM3103)", async () => {
    const s = await openSession(modelPath);
    try {
      const missing = batch();
      delete missing.features.price;
      delete missing.scenarios.page;
      expect((await errorOf(s.run(missing))).diagnostics).toEqual([
        { code: "AESM3102", path: "price", message: 'missing input "price"' },
        { code: "AESM3102", path: "page", message: 'missing input "page"' },
      ]);
      const wrong = batch();
      wrong.features.item = new Float32Array([0, 1, 2]);
      wrong.features.price = new Float32Array([1, 2]);
      expect((await errorOf(s.run(wrong))).diagnostics).toEqual([
        { code: "AESM3103", path: "item", message: 'input "item" must be int64, got 3 float32 values' },
        { code: "AESM3103", path: "price", message: 'input "price" must be 3 float32 values ([3, 1]), got 2 float32 values' },
      ]);
    } finally {
      await s.close();
    }
  });
});

describe("openSession errors", () => {
  it.each(["cuda", "tensorrt"] as const)("refuses a missing %s provider with how to install it (AESM3001)", async (provider) => {
    const err = await errorOf(openSession(modelPath, { provider }));
    const needs = provider === "cuda" ? "CUDA 12 and cuDNN 9" : "CUDA 12, cuDNN 9 and TensorRT 10";
    const expected =
      process.platform === "linux" && process.arch === "x64"
        ? `execution provider "${provider}" is not available in this onnxruntime-node install; install the CUDA build: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js (needs an NVIDIA GPU with ${needs})`
        : providerUnavailableMessage(provider);
    expect(err.diagnostics).toEqual([{ code: "AESM3001", path: "provider", message: expected }]);
    expect(err.message).not.toContain("\n");
  });

  it("names a file that is not an ONNX model, with onnxruntime's first line (AESM3005)", async () => {
    const path = join(tmp, "not-a-model.onnx");
    writeFileSync(path, "this is not protobuf\n");
    const err = await errorOf(openSession(path));
    expect(err.diagnostics).toHaveLength(1);
    const d = err.diagnostics[0]!;
    expect(d).toMatchObject({ code: "AESM3005", file: path });
    expect(d.message).toMatch(/^cannot load ONNX model: .*(Protobuf parsing failed|failed)/);
    expect(d.message).not.toContain("\n");
  });

  it("names a model file that does not exist (AESM3005)", async () => {
    const path = join(tmp, "absent.onnx");
    expect((await errorOf(openSession(path))).diagnostics).toEqual([
      { code: "AESM3005", path: "", message: "cannot load ONNX model: no such file", file: path },
    ]);
  });
});
