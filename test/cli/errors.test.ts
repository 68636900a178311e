// Bad input through the CLI: each case gets one exact message naming the file, path or
// tensor at fault, exit code 2, no stack trace, and no output file left behind.

import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { loadModel } from "../../src/dsl/index.ts";
import type { Weights } from "../../src/weights/index.ts";
import { initWeights, writeSafetensorsFile } from "../../src/weights/index.ts";
import { REPO, runBin, runCli, tempDir } from "./cli-helpers.ts";

const MODEL = join(REPO, "examples", "search-ranker.ts");
let dir: string;
let weights: Weights;

function writeWeights(name: string, w: Weights): string {
  const p = join(dir, name);
  writeSafetensorsFile(p, w);
  return p;
}

function noStack(s: string): void {
  expect(s).not.toMatch(/\n\s+at /);
  expect(s).not.toContain("Error:");
}

beforeAll(async () => {
  dir = tempDir();
  const { spec } = await loadModel(MODEL);
  weights = initWeights(spec, 3);
});

describe("compile: bad inputs", () => {
  it("malformed JSON model file: names file, line and column", async () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, '{\n  "features": {\n    "a": { "kind": "dense", "dim": 2 },\n  }\n}\n');
    const out = join(dir, "bad.onnx");
    const r = await runCli(["compile", bad, "--weights", "w.safetensors", "-o", out]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(new RegExp(`^error\\[AESM1001\\]: ${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}:4:3: invalid JSON: .+\\n$`));
    expect(r.err.split("\n").length).toBe(2);
    noStack(r.err);
    expect(existsSync(out)).toBe(false);
  });

  it("weights missing a tensor: names the tensor and the expected shape", async () => {
    const w = new Map(weights);
    w.delete("towers.cvr.out.weight");
    const wp = writeWeights("missing.safetensors", w);
    const out = join(dir, "m.onnx");
    const r = await runCli(["compile", MODEL, "--weights", wp, "-o", out]);
    expect(r.code).toBe(2);
    // reported where the model declares the tower, naming the weights file too
    expect(r.err).toBe(`error[AESM2101]: ${MODEL}:58:12: towers.cvr.out.weight: missing tensor (expected shape [1, 16]) (in ${wp})\n`);
    expect(existsSync(out)).toBe(false);
  });

  it("weights with a wrong shape: names the tensor, both shapes", async () => {
    const w = new Map(weights);
    w.set("towers.ctr.out.weight", { dtype: "float32", shape: [1, 7], data: new Float32Array(7) });
    const wp = writeWeights("shape.safetensors", w);
    const r = await runCli(["compile", MODEL, "--weights", wp, "-o", join(dir, "s.onnx")]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`error[AESM2103]: ${MODEL}:57:12: towers.ctr.out.weight: shape [1, 7], expected [1, 16] (in ${wp})\n`);
  });

  it("weights containing NaN: names the tensor and the index", async () => {
    const w = new Map(weights);
    const t = w.get("towers.ctr.out.bias")!;
    w.set("towers.ctr.out.bias", { ...t, data: new Float32Array([NaN]) });
    const wp = writeWeights("nan.safetensors", w);
    const r = await runCli(["compile", MODEL, "--weights", wp, "-o", join(dir, "n.onnx")]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`error[AESM2104]: ${wp}: towers.ctr.out.bias: contains NaN at index 0\n`);
  });

  it("truncated safetensors: names the file and the tensor cut off", async () => {
    const wp = writeWeights("full.safetensors", weights);
    const bytes = readFileSync(wp);
    const cut = join(dir, "truncated.safetensors");
    writeFileSync(cut, bytes.subarray(0, bytes.length - 2));
    const r = await runCli(["compile", MODEL, "--weights", cut, "-o", join(dir, "t.onnx")]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(
      new RegExp(`^error\\[AESM2013\\]: ${cut.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: towers\\.cvr\\.out\\.bias: truncated: data ends at byte ${bytes.length}, file has ${bytes.length - 2}\\n$`),
    );
  });

  it("unknown flag: commander's message, exit 2", async () => {
    const r = await runCli(["compile", MODEL, "--weights", "w", "-o", "x.onnx", "--bogus"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe("error: unknown option '--bogus'\n");
  });

  it("unknown command suggests the right one", async () => {
    const r = await runCli(["complie"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe("error: unknown command 'complie'\n(Did you mean compile?)\n");
  });

  it("a missing model file", async () => {
    const r = await runCli(["compile", join(dir, "nope.ts"), "--weights", "w", "-o", "x.onnx"]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(`error[AESM4001]: ${join(dir, "nope.ts")}: no such file\n`);
  });

  /** A one-level model as JSON, with extra features and `experts` experts. */
  const tinyModel = (features: object, experts: number) => ({
    name: "big",
    features: { ...features, x: { kind: "dense", dim: 4 } },
    scenarios: { page: { values: ["a", "b"], dim: 2, experts, expert: { kind: "mlp", units: [4] }, select: { kind: "topK", k: 1 } } },
    tasks: { ctr: { tower: { kind: "mlp", units: [2] } } },
  });

  it("a model whose weights would not fit a checkpoint: init-weights refuses it before allocating, and writes nothing", async () => {
    const model = join(dir, "huge-table.json");
    writeFileSync(model, JSON.stringify(tinyModel({ item: { kind: "categorical", vocab: 2 ** 25, dim: 64 } }, 2)));
    const out = join(dir, "huge.safetensors");
    const r = await runCli(["init-weights", model, "-o", out]);
    expect(r.code).toBe(2);
    // 2^25 × 64 of the table and 853 of the rest
    expect(r.err).toBe(`error[AESM4007]: ${model}: the model has 2,147,484,501 parameters (8.0 GiB as float32); aesm writes and reads checkpoints of at most 3.9 GiB\n`);
    expect(existsSync(out)).toBe(false);
  });

  it("a model declaring millions of tensors: inspect and init-weights refuse it, naming the file", async () => {
    const model = join(dir, "many-experts.json");
    writeFileSync(model, JSON.stringify(tinyModel({}, 1e7)));
    const message = `error[AESM4007]: ${model}: the model declares more than 1,000,000 weight tensors (check experts, layers and units)\n`;
    for (const argv of [["inspect", model], ["init-weights", model, "-o", join(dir, "many.safetensors")]]) {
      const r = await runCli(argv);
      expect([r.code, r.err], argv[0]).toEqual([2, message]);
    }
  });

  it("as a real process: one line on stderr, no stack trace, exit 2", () => {
    const r = runBin(["compile", join(dir, "nope.json"), "--weights", "w", "-o", join(dir, "p.onnx")]);
    expect(r.code).toBe(2);
    expect(r.err.replace(/^npm warn.*\n/gm, "")).toBe(`error[AESM4001]: ${join(dir, "nope.json")}: no such file\n`);
    expect(r.out).toBe("");
  });
});
