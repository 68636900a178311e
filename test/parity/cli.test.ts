// `aesm parity` end to end through main(argv, io): a compiled small model on onnxruntime's CPU
// provider; exit codes 0/1/2, the JSON report against its schema, saved inputs and outputs,
// the summary line, the progress bar, and a provider that is not installed.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { Ajv } from "ajv";
import { beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { generateInputs, writeInputsFile } from "../../src/parity/index.ts";
import { PARITY_REPORT_SCHEMA } from "../../src/parity/report-json.ts";
import { type ModelFiles, smallSpec, writeModelFiles } from "./models.ts";

interface Captured {
  code: number;
  out: string;
  err: string;
}

async function cli(argv: string[], isTTY = false): Promise<Captured> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s), isTTY });
  return { code, out, err };
}

const spec = smallSpec();
let good: ModelFiles;
let bad: ModelFiles;
let rows: string;

beforeAll(() => {
  good = writeModelFiles(spec);
  // compiled from other weights than the ones checked: every output differs
  bad = writeModelFiles(spec, { compileSeed: 2 });
  // ordinary rows (no extreme dense values) that a correct float32 compile matches
  rows = join(good.dir, "rows.jsonl");
  writeInputsFile(rows, spec, generateInputs(spec, { rows: 400, seed: 9, extreme: 0 }));
}, 60_000);

const base = (f: ModelFiles) => ["parity", f.model, "-w", f.weights, "--onnx", f.onnx];

describe("aesm parity", () => {
  it("exits 0 within tolerance and writes a JSON report that matches the documented schema", async () => {
    const json = join(good.dir, "report.json");
    const r = await cli([...base(good), "--inputs", rows, "--json", json, "--save-outputs", join(good.dir, "outputs.json")]);
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toContain(`parity: ${good.model} vs ${good.onnx}\ninputs: 400 rows from ${rows}; every scenario value covered\n`);
    expect(r.out).toContain("\nreference ↔ cpu:disabled: PASS\n");
    expect(r.out).toContain("\nreference ↔ cpu:all: PASS\n");
    expect(r.out).toContain("\ncpu:disabled ↔ cpu:all  (onnxruntime graph optimisations off vs on; informational): PASS\n");
    expect(r.out).toContain("\nPASS: 400 rows on cpu:disabled, cpu:all\n");

    const report = JSON.parse(readFileSync(json, "utf8"));
    const ajv = new Ajv({ allErrors: true, strict: true });
    const valid = ajv.validate(PARITY_REPORT_SCHEMA, report);
    expect(ajv.errors ?? []).toEqual([]);
    expect(valid).toBe(true);
    expect(report).toMatchObject({ schema: "aesm.parity/v1", pass: true, inputs: { source: "file", file: rows, seed: null, rows: 400 } });
    expect(report.comparisons.map((c: { id: string }) => c.id)).toEqual(["reference ↔ cpu:disabled", "reference ↔ cpu:all", "cpu:disabled ↔ cpu:all"]);

    const outputs = JSON.parse(readFileSync(join(good.dir, "outputs.json"), "utf8"));
    expect(outputs.schema).toBe("aesm.parity-outputs/v1");
    expect(outputs.reference.ctr).toHaveLength(400);
    expect(outputs.runs["cpu:all"].cvr).toHaveLength(400);
  }, 60_000);

  it("keeps docs/parity-report.schema.json equal to the schema the code validates against", () => {
    const doc = JSON.parse(readFileSync(join(import.meta.dirname, "..", "..", "docs", "parity-report.schema.json"), "utf8"));
    expect(doc).toEqual(PARITY_REPORT_SCHEMA);
  });

  it("exits 1 on a mismatch, with the worst rows and the problems listed", async () => {
    const r = await cli([...base(bad), "--rows", "300", "--seed", "4"]);
    expect(r.code).toBe(1);
    expect(r.out).toContain("\nreference ↔ cpu:all: FAIL\n");
    expect(r.out).toContain("  worst rows of ctr:\n    row  page");
    expect(r.out).toMatch(/\nproblems:\n {2}cpu:disabled: ctr: \d+ of \d+ value\(s\) beyond tolerance \(atol 0\.00001, rtol 0\); worst row \d+: \|err\| /);
    expect(r.out).toContain(
      "attribution:\n  every run fails, with and without onnxruntime's optimisations: the compiled graph (aesm's lowering or passes) differs from the model\n",
    );
    expect(r.out).toContain("\nFAIL: 300 rows on cpu:disabled, cpu:all\n");
  }, 60_000);

  it("repeats a run exactly from --save-inputs (jsonl and npz)", async () => {
    const strip = (path: string) => {
      const r = JSON.parse(readFileSync(path, "utf8"));
      return { pass: r.pass, comparisons: r.comparisons, selectionFrequency: r.selectionFrequency, coverage: r.inputs.coverage };
    };
    const first = join(bad.dir, "first.json");
    expect((await cli([...base(bad), "--rows", "200", "--seed", "5", "--save-inputs", join(bad.dir, "in.jsonl"), "--json", first])).code).toBe(1);
    for (const saved of ["in.jsonl", "in.npz"]) {
      if (saved === "in.npz") await cli([...base(bad), "--inputs", join(bad.dir, "in.jsonl"), "--save-inputs", join(bad.dir, "in.npz")]);
      const again = join(bad.dir, `again-${saved}.json`);
      expect((await cli([...base(bad), "--inputs", join(bad.dir, saved), "--json", again])).code).toBe(1);
      expect(strip(again)).toEqual(strip(first));
    }
  }, 60_000);

  it("prints one summary line with --summary (onnxruntime on one thread per session)", async () => {
    const r = await cli([...base(good), "--inputs", rows, "--summary", "--threads", "1"]);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(
      /^PASS small; 400 rows; cpu:disabled cpu:all; max abs \d\.\d\de-\d \((ctr|cvr) on cpu:(disabled|all)\); selection \d+\.\d\d% same, 0 disagree, \d+ near-tie; between runs max abs 0\n$/,
    );
  }, 60_000);

  it("exits 2 naming an --atol override for an output the model lacks", async () => {
    const r = await cli([...base(good), "--atol", "1e-5", "cvx:1e-4"]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toBe(`error[AESM4110]: --atol: unknown output "cvx" (the model's outputs: ctr, cvr)\n`);
  });

  it("exits 2 on a malformed tolerance, an unknown provider, or --rows with --inputs", async () => {
    const t = await cli([...base(good), "--rtol", "cvr:x"]);
    expect(t.code).toBe(2);
    expect(t.err).toBe(
      `error: option '--rtol <tol...>' argument 'cvr:x' is invalid. --rtol: "cvr:x" is not a non-negative number or <output>:<number> (e.g. --rtol 1e-5 cvr:1e-4)\n`,
    );
    const p = await cli([...base(good), "--provider", "gpu"]);
    expect(p.code).toBe(2);
    expect(p.err).toBe(`error: option '--provider <name>' argument 'gpu' is invalid. --provider must be one of cpu, cuda, tensorrt, got "gpu"\n`);
    const c = await cli([...base(good), "--inputs", rows, "--rows", "10"]);
    expect(c.code).toBe(2);
    expect(c.err).toBe("error: option '--rows <n>' cannot be used with option '--inputs <file>'\n");
    const th = await cli([...base(good), "--threads", "0"]);
    expect(th.code).toBe(2);
    expect(th.err).toBe("error: option '--threads <n>' argument '0' is invalid. --threads must be in 1..1024, got 0\n");
  });

  it("exits 2 with one line saying how to install a provider that is missing, before any work", async () => {
    const r = await cli([...base(good), "--provider", "cpu", "--provider", "cuda", "--json", join(good.dir, "never.json")]);
    expect(r.code).toBe(2);
    expect(r.out).toBe("");
    expect(r.err).toBe(
      'error[AESM3001]: provider: execution provider "cuda" is not available in this onnxruntime-node install; install the CUDA build: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js (needs an NVIDIA GPU with CUDA 12 and cuDNN 9)\n',
    );
  });

  it("exits 2 naming file, row and field of bad supplied inputs", async () => {
    const r = await cli([...base(good), "--inputs", join(import.meta.dirname, "fixtures", "bad-rows.jsonl")]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      [
        `error[AESM4106]: ${join(import.meta.dirname, "fixtures", "bad-rows.jsonl")}:2:1: page: row 1: "page" must be one of "home", "search" or an index 0..1, got "cart"`,
        "",
      ].join("\n"),
    );
  });

  it("draws a progress bar on stderr only when it is a terminal, and erases it", async () => {
    const tty = await cli([...base(good), "--inputs", rows, "--summary"], true);
    expect(tty.err).toMatch(/^\r\[[█░]{28}\] +\d+% reference float64 /);
    expect(tty.err).toMatch(/\r +\r$/);
    const quiet = await cli([...base(good), "--inputs", rows, "--summary", "--no-progress"], true);
    expect(quiet.err).toBe("");
  }, 60_000);
});
