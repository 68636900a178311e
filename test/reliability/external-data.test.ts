// ONNX external data: layout (location/offset/length, aligned, non-overlapping), the ONNX checker
// on the path, onnxruntime and parity end to end, streaming memory, atomic failure, and hostile
// external references on read.

import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import {
  decodeModel,
  emitModel,
  encodeModel,
  exceedsProtobufLimit,
  readOnnxFile,
  writeModelWithExternalData,
  writeOnnx,
} from "../../src/backends/onnx/index.ts";
import { LARGE_ALIGN, SMALL_ALIGN, alignmentFor } from "../../src/backends/onnx/external.ts";
import { compileGraph } from "../../src/compile.ts";
import { batchToFeeds } from "../../src/core/batch.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import { Graph } from "../../src/ir/graph.ts";
import { loadModel } from "../../src/dsl/index.ts";
import type { ModelSpec } from "../../src/dsl/spec.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { openSession } from "../../src/runtime/index.ts";
import { type Weights, initWeights } from "../../src/weights/index.ts";
import { caseInputs, randomCase } from "../../src/fuzz/case.ts";
import { CHECKER_PYTHON, checkOnnxFile } from "../helpers/onnx-checker.ts";
import { REPO, runCli, tempDir } from "../cli/cli-helpers.ts";

const { onnx } = onnxProto;
const EXTERNAL = onnx.TensorProto.DataLocation.EXTERNAL;
const MODEL = join(REPO, "examples", "search-ranker.ts");

let dir: string;
let spec: ModelSpec;
let weights: Weights;
let graph: Graph;

beforeAll(async () => {
  dir = tempDir("aesm-external-");
  spec = (await loadModel(MODEL)).spec;
  weights = initWeights(spec, 5);
  graph = compileGraph(spec, weights, { optLevel: 2 });
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** onnx.checker.check_model on the path (as external data requires), full check. */
function checkModelPath(path: string): void {
  const r = spawnSync(CHECKER_PYTHON, ["-c", "import onnx, sys; onnx.checker.check_model(sys.argv[1], full_check=True)", path], {
    encoding: "utf8",
  });
  if (r.status !== 0) throw new Error(`check_model(${path}) failed:\n${r.stderr}`);
}

function externalEntries(t: onnxProto.onnx.ITensorProto): Record<string, string> {
  return Object.fromEntries((t.externalData ?? []).map((e) => [e.key ?? "", e.value ?? ""]));
}

describe("writing", () => {
  it("moves every initialiser at or above the threshold to one aligned data file; the rest stay inline", () => {
    const path = join(dir, "layout", "m.onnx");
    const threshold = 256;
    const inline = emitModel(graph, { opset: 17 });
    const written = writeOnnx(path, graph, { opset: 17, externalData: { threshold } });
    expect(readdirSync(join(dir, "layout")).sort()).toEqual(["m.onnx", "m.onnx.data"]);

    const data = readFileSync(join(dir, "layout", "m.onnx.data"));
    const model = decodeModel(readFileSync(path));
    expect(written).toBe(readFileSync(path).length + data.length);
    const originals = new Map(inline.graph!.initializer!.map((t) => [t.name!, t.rawData!]));
    const ranges: [number, number][] = [];
    let moved = 0;
    for (const t of model.graph!.initializer!) {
      const original = originals.get(t.name!)!;
      if (original.length < threshold || t.dataType !== onnx.TensorProto.DataType.FLOAT) {
        expect(t.dataLocation ?? 0, t.name!).not.toBe(EXTERNAL);
        expect(Buffer.from(t.rawData!).equals(Buffer.from(original)), t.name!).toBe(true);
        continue;
      }
      moved++;
      expect(t.dataLocation, t.name!).toBe(EXTERNAL);
      expect(t.rawData?.length ?? 0).toBe(0);
      const e = externalEntries(t);
      expect(Object.keys(e)).toEqual(["location", "offset", "length"]);
      expect(e.location).toBe("m.onnx.data");
      const [offset, length] = [Number(e.offset), Number(e.length)];
      expect(length).toBe(original.length);
      expect(offset % alignmentFor(length), `${t.name} at ${offset}`).toBe(0);
      expect(Buffer.from(data.subarray(offset, offset + length)).equals(Buffer.from(original)), t.name!).toBe(true);
      ranges.push([offset, offset + length]);
    }
    expect(moved).toBeGreaterThan(10);
    ranges.sort((a, b) => a[0] - b[0]);
    for (let i = 1; i < ranges.length; i++) expect(ranges[i]![0]).toBeGreaterThanOrEqual(ranges[i - 1]![1]);
    expect(ranges[ranges.length - 1]![1]).toBe(data.length);
  });

  it("passes the ONNX checker on the path, and strict shape inference", () => {
    const path = join(dir, "checker", "m.onnx");
    writeOnnx(path, graph, { opset: 17, externalData: { threshold: 64 } });
    checkModelPath(path);
    checkOnnxFile(path);
  });

  it("loads in onnxruntime and reads back into the IR with the reference's numbers", async () => {
    const path = join(dir, "ort", "m.onnx");
    writeOnnx(path, graph, { opset: 21, externalData: { threshold: 128, location: "weights.bin" } });
    expect(readdirSync(join(dir, "ort")).sort()).toEqual(["m.onnx", "weights.bin"]);
    const c = randomCase(11);
    c.inputs.rows = 64;
    const batch = caseInputs(spec, c);
    const ref = evaluateReference(spec, weights, batch);
    const session = await openSession(path);
    try {
      const got = await session.run(batch);
      const back = runGraph(readOnnxFile(path), batchToFeeds(batch, spec));
      for (const t of spec.tasks) {
        const want = ref.outputs[t.name]!;
        const rb = back[t.name]!.data as Float32Array;
        for (let r = 0; r < batch.rows; r++) {
          // rows whose selection is a near-tie may legitimately differ; none is expected at these margins
          if (ref.layers.some((l) => l.margin[r]! < 1e-4)) continue;
          expect(Math.abs(got[t.name]![r]! - want[r]!), `${t.name} row ${r} (onnxruntime)`).toBeLessThanOrEqual(1e-5);
          expect(Math.abs(rb[r]! - want[r]!), `${t.name} row ${r} (read back)`).toBeLessThanOrEqual(1e-5);
        }
      }
    } finally {
      await session.close();
    }
  });

  it("writes no data file when no tensor reaches the threshold, and everything at threshold 0", () => {
    const none = join(dir, "none", "m.onnx");
    writeOnnx(none, graph, { opset: 17, externalData: { threshold: 2 ** 40 } });
    expect(readdirSync(join(dir, "none"))).toEqual(["m.onnx"]);
    expect(Buffer.from(readFileSync(none)).equals(Buffer.from(encodeModel(emitModel(graph, { opset: 17 }))))).toBe(true);

    const all = join(dir, "all", "m.onnx");
    writeOnnx(all, graph, { opset: 17, externalData: { threshold: 0 } });
    const model = decodeModel(readFileSync(all));
    // Every weight moves; integer side inputs (axes, shapes, k) stay for shape inference to read.
    for (const t of model.graph!.initializer!)
      expect(t.dataLocation ?? 0, t.name!).toBe(t.dataType === onnx.TensorProto.DataType.FLOAT ? EXTERNAL : 0);
    checkModelPath(all);
  });

  it("streams: writing a 256 MiB tensor adds far less than 256 MiB of memory", () => {
    const g = new Graph("big");
    const x = g.addInput("x", { dtype: "int64", shape: ["batch"] });
    const table = g.addConstant("table", { dtype: "float32", shape: [4 * 2 ** 20, 16], data: new Float32Array(64 * 2 ** 20).fill(0.5) });
    g.setOutput("y", g.op("Gather", [table, x], { axis: 0 }));
    const path = join(dir, "stream", "m.onnx");
    const before = process.memoryUsage();
    writeOnnx(path, g, { opset: 17, externalData: { threshold: 1024 } });
    const after = process.memoryUsage();
    const grown = after.arrayBuffers + after.heapUsed - (before.arrayBuffers + before.heapUsed);
    expect(grown).toBeLessThan(16 * 2 ** 20);
    const model = decodeModel(readFileSync(path));
    const e = externalEntries(model.graph!.initializer![0]!);
    expect(Number(e.offset) % LARGE_ALIGN).toBe(0);
    expect(Number(e.length)).toBe(256 * 2 ** 20);
    rmSync(join(dir, "stream"), { recursive: true, force: true });
  });

  it("switches to external data by itself past protobuf's 2 GiB limit", () => {
    const model = emitModel(graph, { opset: 17 });
    expect(exceedsProtobufLimit(model)).toBe(false);
    // Sizes are all the decision reads: a tensor claiming 2 GiB of raw data tips it over.
    const huge = { ...model, graph: { ...model.graph!, initializer: [{ name: "w", rawData: { length: 2 ** 31 } as Uint8Array }] } };
    expect(exceedsProtobufLimit(huge as unknown as typeof model)).toBe(true);
    const justBelow = { ...model, graph: { ...model.graph!, node: [], valueInfo: [], initializer: [{ name: "w", rawData: { length: 2 ** 31 - 4096 } as Uint8Array }] } };
    expect(exceedsProtobufLimit(justBelow as unknown as typeof model)).toBe(false);
  });

  it.each([
    [{ threshold: -1 }, "externalData.threshold: must be a non-negative number of bytes, got -1"],
    [{ threshold: Number.NaN }, "externalData.threshold: must be a non-negative number of bytes, got NaN"],
    [{ threshold: 0, location: "../escape.data" }, 'externalData.location: must be a plain file name in the model\'s folder, got "../escape.data"'],
    [{ threshold: 0, location: "/tmp/abs.data" }, 'externalData.location: must be a plain file name in the model\'s folder, got "/tmp/abs.data"'],
    [{ threshold: 0, location: "m.onnx" }, 'externalData.location: must differ from the model file\'s own name "m.onnx"'],
  ])("rejects bad options %j before writing anything", (externalData, message) => {
    const sub = join(dir, `bad-${Math.random().toString(36).slice(2)}`);
    let err: unknown;
    try {
      writeOnnx(join(sub, "m.onnx"), graph, { opset: 17, externalData });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AesmError);
    expect((err as AesmError).diagnostics.map((d) => `${d.path}: ${d.message}`)).toEqual([message]);
    expect((err as AesmError).diagnostics[0]!.code).toBe("AESM3009");
  });

  it("a failed write changes neither file and leaves no temporary file", () => {
    const sub = join(dir, "atomic");
    const path = join(sub, "m.onnx");
    writeOnnx(path, graph, { opset: 17, externalData: { threshold: 256 } });
    const before = { model: readFileSync(path), data: readFileSync(join(sub, "m.onnx.data")) };
    // A folder where the data file should go: its temp is written, then the rename fails.
    writeOnnx(path, graph, { opset: 17, externalData: { threshold: 256, location: "blocked" } });
    rmSync(join(sub, "blocked"));
    mkdirSync(join(sub, "blocked", "inner"), { recursive: true });
    const g2 = compileGraph(spec, initWeights(spec, 6), { optLevel: 2 });
    expect(() => writeOnnx(path, g2, { opset: 17, externalData: { threshold: 256, location: "blocked" } })).toThrowError(/cannot write/);
    const now = readFileSync(path);
    const model = decodeModel(now);
    expect(externalEntries(model.graph!.initializer!.find((t) => t.dataLocation === EXTERNAL)!).location).toBe("blocked");
    expect(readdirSync(sub).sort()).toEqual(["blocked", "m.onnx", "m.onnx.data"]);
    expect(Buffer.from(readFileSync(join(sub, "m.onnx.data"))).equals(before.data)).toBe(true);
  });

  it("compile --external-data-threshold writes both files, and parity passes on them", async () => {
    const w = join(dir, "cli", "w.safetensors");
    const out = join(dir, "cli", "ranker.onnx");
    expect((await runCli(["init-weights", MODEL, "-o", w, "--seed", "3"])).code).toBe(0);
    const c = await runCli(["compile", MODEL, "-w", w, "-o", out, "--external-data-threshold", "4096"]);
    expect(c.code, c.err).toBe(0);
    expect(readdirSync(join(dir, "cli")).sort()).toEqual(["ranker.onnx", "ranker.onnx.data", "w.safetensors"]);
    checkModelPath(out);
    const p = await runCli(["parity", MODEL, "-w", w, "--onnx", out, "--rows", "512", "--summary"]);
    expect(p.code, p.out + p.err).toBe(0);
    const bad = await runCli(["compile", MODEL, "-w", w, "-o", out, "--external-data-threshold", "-5"]);
    expect(bad.code).toBe(2);
    expect(bad.err).toMatch(/--external-data-threshold/);
  });
});

describe("reading hostile external references", () => {
  /** A one-initialiser model whose tensor points at `entries`, beside a 64-byte data file. */
  function hostile(name: string, entries: Record<string, string>): string {
    const sub = join(dir, "hostile", name);
    mkdirSync(sub, { recursive: true });
    writeFileSync(join(sub, "w.data"), new Uint8Array(64));
    const g = new Graph("h");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 4] });
    const w = g.addConstant("w", { dtype: "float32", shape: [4, 4], data: new Float32Array(16) });
    g.setOutput("y", g.op("MatMul", [x, w]));
    const model = emitModel(g, { opset: 17 });
    const t = model.graph!.initializer!.find((i) => i.name === "w")!;
    t.rawData = new Uint8Array(0);
    t.dataLocation = EXTERNAL;
    t.externalData = Object.entries(entries).map(([key, value]) => ({ key, value }));
    const path = join(sub, "m.onnx");
    writeFileSync(path, encodeModel(model));
    return path;
  }

  it.each([
    ["parent", { location: "../w.data" }, "AESM3010", 'external data of tensor "w": location "../w.data" is not a file inside the model\'s folder'],
    ["absolute", { location: "/etc/passwd" }, "AESM3010", 'external data of tensor "w": location "/etc/passwd" is not a file inside the model\'s folder'],
    ["none", { offset: "0" }, "AESM3010", 'external data of tensor "w": no location'],
    ["offset", { location: "w.data", offset: "4096", length: "64" }, "AESM3010", 'external data of tensor "w": range [4096, 4160) lies beyond the end of w.data (64 bytes)'],
    ["length", { location: "w.data", length: "1000000000000000" }, "AESM3010", 'external data of tensor "w": range [0, 1000000000000000) lies beyond the end of w.data (64 bytes)'],
    ["text", { location: "w.data", offset: "-8" }, "AESM3010", 'external data of tensor "w": offset must be a non-negative integer, got "-8"'],
    ["short", { location: "w.data", offset: "8", length: "32" }, "AESM3008", "raw_data has 32 bytes for 16 values of 4 bytes"],
    ["folder", { location: "." }, "AESM3010", 'external data of tensor "w": location "." is not a file inside the model\'s folder'],
  ])("%s: a clear error, memory bounded by the real file", (name, entries, code, message) => {
    const path = hostile(name, entries);
    const before = process.memoryUsage().arrayBuffers;
    let err: unknown;
    try {
      readOnnxFile(path);
    } catch (e) {
      err = e;
    }
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(16 * 2 ** 20);
    expect(err).toBeInstanceOf(AesmError);
    const d = (err as AesmError).diagnostics[0]!;
    expect([d.code, d.message]).toEqual([code, message]);
  });

  it("a missing data file", () => {
    const path = hostile("missing", { location: "nope.data" });
    expect(() => readOnnxFile(path)).toThrowError(/cannot read external data .*nope\.data: ENOENT/);
  });
});

describe("writeModelWithExternalData", () => {
  it("leaves the model it is given untouched", () => {
    const model = emitModel(graph, { opset: 17 });
    const before = encodeModel(model);
    writeModelWithExternalData(join(dir, "untouched", "m.onnx"), model, { threshold: 16 });
    expect(Buffer.from(encodeModel(model)).equals(Buffer.from(before))).toBe(true);
    expect(SMALL_ALIGN).toBe(64);
  });
});
