// Hostile inputs through the CLI (`main(argv, io)`): model specs, safetensors files and ONNX
// files that lie, nest, overflow or pollute. Each must end in one clear diagnostic and exit 2,
// never a crash, a hang or an allocation sized by what the file claims.

import { readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { toModelInput } from "../../src/dsl/index.ts";
import { parseModel } from "../../src/dsl/parse.ts";
import { initWeights, writeSafetensors } from "../../src/weights/index.ts";
import { runCli, tempDir } from "../cli/cli-helpers.ts";
import { craft, f32Bytes } from "../weights/craft.ts";

let dir: string;
let modelPath: string;
let weightsPath: string;

/** A tiny valid model: 2 experts, one level, one task (tensor names below refer to it). */
const MODEL = {
  name: "tiny",
  features: { x: { kind: "dense", dim: 2 } },
  scenarios: { s: { values: ["a", "b"], dim: 2, experts: 2, expert: { kind: "mlp", units: [4] }, select: { kind: "all" } } },
  tasks: { t: { tower: { kind: "mlp", units: [] } } },
};

beforeAll(() => {
  dir = tempDir("aesm-hostile-");
  modelPath = join(dir, "tiny.json");
  writeFileSync(modelPath, JSON.stringify(MODEL));
  weightsPath = join(dir, "tiny.safetensors");
  writeFileSync(weightsPath, writeSafetensors(initWeights(parseModel(MODEL), 1)));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, content: string | Uint8Array): string {
  const p = join(dir, name);
  writeFileSync(p, content);
  return p;
}

/** Heap and array-buffer bytes in use: what an allocation sized by a hostile claim would inflate. */
function memoryInUse(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/**
 * Run the CLI; expect exit 2 and exactly `lines` on stderr (regexps match whole lines), no
 * stack trace, no output file. Returns the growth of memory in use across the run.
 */
async function expectRejected(argv: string[], lines: (string | RegExp)[]): Promise<number> {
  const before = memoryInUse();
  const r = await runCli(argv);
  const grown = memoryInUse() - before;
  expect(r.code, r.err).toBe(2);
  const got = r.err.trimEnd().split("\n");
  expect(got.length, r.err).toBe(lines.length);
  lines.forEach((l, i) => (typeof l === "string" ? expect(got[i]).toBe(l) : expect(got[i]).toMatch(l)));
  expect(r.err).not.toMatch(/\n\s+at |internal error/);
  return grown;
}

const compileArgs = (model: string, weights = weightsPath) => ["compile", model, "-w", weights, "-o", join(dir, "out.onnx")];
/** Memory growth allowed for a rejected input: far below any of the claims (gigabytes). */
const BOUNDED = 64 * 2 ** 20;

describe("hostile model specs (JSON)", () => {
  it("200 000 levels of nested arrays where an object belongs", async () => {
    const p = file("deep.json", `{"features":${"[".repeat(200_000)}${"]".repeat(200_000)},"scenarios":{},"tasks":{}}`);
    await expectRejected(compileArgs(p), [
      `error[AESM1010]: ${p}:1:2: features: must be an object, got an array`,
      `error[AESM1030]: ${p}:1:400014: scenarios: must declare at least one scenario level`,
      `error[AESM1030]: ${p}:1:400029: tasks: must declare at least one task`,
    ]);
  });

  it("200 000 levels of nested objects under an unknown key", async () => {
    const junk = `${'{"a":'.repeat(200_000)}1${"}".repeat(200_000)}`;
    const p = file("deepobj.json", JSON.stringify(MODEL).replace('"dim":2,', `"dim":2,"junk":${junk},`));
    await expectRejected(compileArgs(p), [/^error\[AESM1011\]: .*deepobj\.json:1:\d+: scenarios\.s\.junk: unknown key "junk"$/]);
  });

  it("numbers beyond float64, beyond int32, fractional, negative and zero", async () => {
    const m = structuredClone(MODEL) as Record<string, any>;
    const text = JSON.stringify(m)
      .replace('"dim":2}', '"dim":1e400}')
      .replace('"experts":2', '"experts":4294967296')
      .replace('"units":[4]', '"units":[2.5,-3,0]')
      .replace('"values":["a","b"],"dim":2', '"values":["a","b"],"dim":-1');
    const p = file("numbers.json", text);
    await expectRejected(compileArgs(p), [
      /^error\[AESM1010\]: .*numbers\.json:1:\d+: features\.x\.dim: must be an integer, got Infinity$/,
      /^error\[AESM1021\]: .*: scenarios\.s\.dim: must be ≥ 1, got -1$/,
      /^error\[AESM1021\]: .*: scenarios\.s\.experts: must be ≤ 2147483647, got 4294967296$/,
      /^error\[AESM1010\]: .*: scenarios\.s\.expert\.units\.0: must be an integer, got 2\.5$/,
      /^error\[AESM1021\]: .*: scenarios\.s\.expert\.units\.1: must be ≥ 1, got -3$/,
      /^error\[AESM1021\]: .*: scenarios\.s\.expert\.units\.2: must be ≥ 1, got 0$/,
    ]);
  });

  it("__proto__, constructor and prototype as names and keys pollute nothing", async () => {
    const text = JSON.stringify(MODEL)
      .replace('"x":', '"__proto__":')
      .replace('"t":', '"constructor":')
      .replace('"name":"tiny",', '"name":"tiny","__proto__":{"polluted":true},');
    const p = file("proto.json", text);
    await expectRejected(compileArgs(p), [
      /^error\[AESM1011\]: .*proto\.json:1:\d+: __proto__: unknown key "__proto__"$/,
      /^error\[AESM1041\]: .*: features\.__proto__: reserved name "__proto__"$/,
      /^error\[AESM1041\]: .*: tasks\.constructor: reserved name "constructor"$/,
    ]);
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
  });

  it("wrong types everywhere", async () => {
    const text = JSON.stringify({ ...MODEL, features: [], scenarios: "s", tasks: { t: { tower: { kind: "mlp", units: "4" } } } });
    const p = file("types.json", text);
    await expectRejected(compileArgs(p), [
      /^error\[AESM1010\]: .*: features: must be an object, got an array$/,
      /^error\[AESM1010\]: .*: scenarios: must be an object, got "s"$/,
      /^error\[AESM1010\]: .*: tasks\.t\.tower\.units: must be an array, got "4"$/,
    ]);
  });

  it.each([
    ["null", "null", "model must be an object, got null"],
    ["a number", "42", "model must be an object, got 42"],
    ["a string", '"model"', 'model must be an object, got "model"'],
  ])("a root that is %s", async (_, text, message) => {
    const p = file("root.json", text);
    await expectRejected(compileArgs(p), [`error[AESM1010]: ${p}:1:1: ${message}`]);
  });

  it.each([
    ["empty", ""],
    ["truncated", JSON.stringify(MODEL).slice(0, 60)],
  ])("a JSON file that is %s", async (name, content) => {
    const p = file(`${name}.json`, content);
    await expectRejected(compileArgs(p), [new RegExp(`^error\\[AESM1001\\]: ${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}(:\\d+:\\d+)?: invalid JSON: .+$`)]);
  });

  // V8's JSON.parse message quotes the offending text raw; load.ts escapes control characters
  // (CR/LF, ANSI escapes) so they cannot reach the terminal or split the diagnostic.
  it("a binary or escape-laden JSON file gets a one-line diagnostic with no raw control characters", async () => {
    const p = file("binary.json", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x1b, 0x5b, 0x33, 0x31, 0x6d]));
    const r = await runCli(compileArgs(p));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error\[AESM1001\]: [^\n]+\n$/);
    expect(r.err.slice(0, -1)).not.toMatch(/[\x00-\x1f\x7f]/);
  });

  it("a model declaring 100 million experts against a small weights file: bounded time and memory", async () => {
    const huge = structuredClone(MODEL);
    huge.scenarios.s.experts = 100_000_000;
    const p = file("huge.json", JSON.stringify(huge));
    const t0 = performance.now();
    const lines = [
      // each located at the model line declaring the level's experts, naming the weights file
      ...Array.from({ length: 100 }, () => /^error\[AESM2101\]: .*huge\.json:\d+:\d+: scenario_layers\.s\.0\.experts\.\d+\.layers\.0\.linear\.(weight|bias): missing tensor \(expected shape \[4(, 2)?\]\) \(in .*tiny\.safetensors\)$/),
      /^error\[AESM2101\]: .*tiny\.safetensors: over 100 tensors missing; the rest are not listed \(the file holds 11 tensors\)$/,
    ];
    const grown = await expectRejected(compileArgs(p), lines);
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect(grown).toBeLessThan(BOUNDED);
  });

  it("the normalised spec form with a forged version and kind", async () => {
    const spec = { ...toModelInput(parseModel(MODEL)), kind: "aesm.model", version: 99, features: {} };
    const p = file("spec.json", JSON.stringify(spec));
    await expectRejected(compileArgs(p), [
      /^error\[AESM1019\]: .*: version: unsupported model spec version 99 \(expected 1\)$/,
      /^error\[AESM1010\]: .*: features: must be an array, got an object$/,
      /^error\[AESM1010\]: .*: scenarios: must be an array, got an object$/,
      /^error\[AESM1010\]: .*: tasks: must be an array, got an object$/,
    ]);
  });
});

describe("hostile safetensors files", () => {
  const W = () => weightsPath;
  const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

  it("shorter than the 8-byte header length", async () => {
    const p = file("short.safetensors", new Uint8Array([1, 2, 3]));
    await expectRejected(compileArgs(modelPath, p), [
      `error[AESM2001]: ${p}: file too short: 3 bytes, a safetensors file starts with an 8-byte header length`,
    ]);
  });

  it("truncated in the middle of the data", async () => {
    const bytes = readFileSync(W());
    const p = file("cut.safetensors", bytes.subarray(0, bytes.length - 2));
    await expectRejected(compileArgs(modelPath, p), [
      `error[AESM2013]: ${p}: towers.t.out.bias: truncated: data ends at byte ${bytes.length}, file has ${bytes.length - 2}`,
    ]);
  });

  it.each([
    ["5 GB", 5_000_000_000n],
    ["2^64 − 1 bytes", 2n ** 64n - 1n],
  ])("a header of %s claimed in a 100-byte file", async (_, claim) => {
    const p = file("claim.safetensors", craft("{}", new Uint8Array(90), claim));
    const grown = await expectRejected(compileArgs(modelPath, p), [`error[AESM2002]: ${p}: header length ${claim} exceeds file size 100`]);
    expect(grown).toBeLessThan(BOUNDED);
  });

  it("a header length just past the end of the file", async () => {
    const p = file("past.safetensors", craft("{}", new Uint8Array(0), 3n));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2002]: ${p}: header length 3 exceeds file size 10`]);
  });

  it("a tensor claiming 10^12 × 10^12 floats in 16 bytes of data", async () => {
    const p = file("bigshape.safetensors", craft({ w: { dtype: "F32", shape: [1e12, 1e12], data_offsets: [0, 16] } }, new Uint8Array(16)));
    const grown = await expectRejected(compileArgs(modelPath, p), [
      `error[AESM2014]: ${p}: w: F32 [1000000000000, 1000000000000] needs more than 2^53 bytes, data_offsets [0, 16] hold 16`,
    ]);
    expect(grown).toBeLessThan(BOUNDED);
  });

  it("offsets past the end of the file, huge, negative and reversed", async () => {
    const header = {
      a: { dtype: "F32", shape: [1], data_offsets: [0, 4_000_000_000] },
      b: { dtype: "F32", shape: [1], data_offsets: [0, 1e300] },
      c: { dtype: "F32", shape: [1], data_offsets: [-4, 0] },
      d: { dtype: "F32", shape: [1], data_offsets: [8, 4] },
    };
    const p = file("offsets.safetensors", craft(header, new Uint8Array(8)));
    await expectRejected(compileArgs(modelPath, p), [
      new RegExp(`^error\\[AESM2013\\]: ${esc(p)}: a: truncated: data ends at byte \\d+, file has \\d+$`),
      `error[AESM2012]: ${p}: b: data_offsets must be [begin, end] with non-negative integers, got [0,1e+300]`,
      `error[AESM2012]: ${p}: c: data_offsets must be [begin, end] with non-negative integers, got [-4,0]`,
      `error[AESM2012]: ${p}: d: data_offsets [8, 4]: begin is after end`,
    ]);
  });

  it("overlapping tensors", async () => {
    const header = { a: { dtype: "F32", shape: [2], data_offsets: [0, 8] }, b: { dtype: "F32", shape: [2], data_offsets: [4, 12] } };
    const p = file("overlap.safetensors", craft(header, new Uint8Array(12)));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2015]: ${p}: b: data [4, 12) overlaps tensor "a" [0, 8)`]);
  });

  it.each([
    ["I8", "unsupported dtype I8 (expected F32, F16, BF16 or F64)"],
    ["F8_E4M3", "unsupported dtype F8_E4M3 (expected F32, F16, BF16 or F64)"],
    [7, "dtype must be a string, got number 7"],
  ])("dtype %s", async (dtype, message) => {
    const p = file("dtype.safetensors", craft({ w: { dtype, shape: [2], data_offsets: [0, 8] } }, new Uint8Array(8)));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2010]: ${p}: w: ${message}`]);
  });

  it("negative and fractional shapes", async () => {
    const p = file("shape.safetensors", craft({ w: { dtype: "F32", shape: [-1, 2.5], data_offsets: [0, 8] } }, new Uint8Array(8)));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2011]: ${p}: w: shape must be an array of non-negative integers, got [-1,2.5]`]);
  });

  it("a name given twice (JSON.parse would keep only the last)", async () => {
    const text = '{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}';
    const p = file("dup.safetensors", craft(text, new Uint8Array(8)));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2007]: ${p}: w: duplicate tensor name in header`]);
  });

  it("a header that is not UTF-8, not JSON, or not an object", async () => {
    const a = file("utf8.safetensors", concatHeader(new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])));
    await expectRejected(compileArgs(modelPath, a), [`error[AESM2004]: ${a}: header is not valid UTF-8`]);
    const b = file("json.safetensors", craft("{nope"));
    await expectRejected(compileArgs(modelPath, b), [new RegExp(`^error\\[AESM2005\\]: ${esc(b)}: header is not valid JSON: .+$`)]);
    const c = file("array.safetensors", craft("[1,2]"));
    await expectRejected(compileArgs(modelPath, c), [`error[AESM2006]: ${c}: header is not a JSON object (got an array)`]);
  });

  it("NaN and Inf values name the tensor and index", async () => {
    const w = initWeights(parseModel(MODEL), 1);
    w.get("towers.t.out.weight")!.data[1] = Infinity;
    w.get("scenarios.s.weight")!.data[3] = NaN;
    const p = file("nan.safetensors", writeSafetensors(w));
    await expectRejected(compileArgs(modelPath, p), [
      `error[AESM2104]: ${p}: scenarios.s.weight: contains NaN at index 3`,
      `error[AESM2104]: ${p}: towers.t.out.weight: contains Inf at index 1`,
    ]);
  });

  it("a __proto__ tensor and metadata key are data, not prototypes", async () => {
    const w = initWeights(parseModel(MODEL), 1);
    w.set("__proto__", { dtype: "float32", shape: [1], data: new Float32Array([1]) });
    // JSON.parse makes "__proto__" an own key (an object literal would set the prototype instead).
    const p = file("protoname.safetensors", writeSafetensors(w, JSON.parse('{"__proto__":"x"}') as Record<string, string>));
    await expectRejected(compileArgs(modelPath, p), [`error[AESM2102]: ${p}: __proto__: unexpected tensor (not part of this model)`]);
  });
});

/** A safetensors file whose header bytes are `header` exactly (no JSON encoding). */
function concatHeader(header: Uint8Array): Uint8Array {
  const out = new Uint8Array(8 + header.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  return out;
}

describe("files given to `inspect` that are not ONNX", () => {
  it.each([
    ["empty", new Uint8Array(0)],
    ["JSON", new TextEncoder().encode(JSON.stringify(MODEL))],
    ["a safetensors file", f32Bytes([1, 2, 3, 4, 5, 6, 7, 8])],
    ["random bytes", Uint8Array.from({ length: 4096 }, (_, i) => (i * 2654435761) >>> 24)],
    ["a length prefix claiming 2 GiB", new Uint8Array([0x3a, 0xff, 0xff, 0xff, 0xff, 0x07, 0x01])],
  ])("%s", async (name, bytes) => {
    const p = file(`${name.replace(/\W+/g, "_")}.onnx`, bytes);
    const grown = await expectRejected(["inspect", p], [new RegExp(`^error\\[AESM3003\\]: ${p.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")}: not an ONNX model: .+$`)]);
    expect(grown).toBeLessThan(BOUNDED);
  });

  it("a missing file", async () => {
    const p = join(dir, "absent.onnx");
    await expectRejected(["inspect", p], [`error[AESM4001]: ${p}: no such file`]);
  });
});
