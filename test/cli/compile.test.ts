// `aesm compile` flags through main(argv, io): levels, --passes, --stats, --print-after,
// --verify-each (exit 70 on a broken pass, nothing written), and the usage errors (exit 2).

import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it, vi } from "vitest";
import { readOnnxFile } from "../../src/backends/onnx/index.ts";
import { type CliIO, main } from "../../src/cli/main.ts";
import { toModelInput } from "../../src/dsl/index.ts";
import { generateInputs, writeInputsFile } from "../../src/parity/index.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";
import { initWeights, saveWeights } from "../../src/weights/index.ts";
import { testModels } from "../../fixtures/models.ts";

// Broken passes are reachable from the command line only when registered: register them for this file.
vi.mock("../../src/passes/index.ts", async (importOriginal) => {
  const orig = await importOriginal<typeof import("../../src/passes/index.ts")>();
  const broken = await import("../passes/broken-passes.ts");
  return { ...orig, PASSES: [...orig.PASSES, broken.towerBiasTimesTwo("ctr"), broken.throwingPass] };
});

const tmp = mkdtempSync(join(tmpdir(), "aesm-compile-cli-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const spec = testModels.find((m) => m.name === "aesm-two-levels")!.spec;
const modelPath = join(tmp, "model.json");
const weightsPath = join(tmp, "w.safetensors");
writeFileSync(modelPath, JSON.stringify(toModelInput(spec)));
saveWeights(weightsPath, initWeights(spec, 1));

function capture(): CliIO & { stdout: () => string; stderr: () => string } {
  let out = "";
  let err = "";
  return { out: (s) => void (out += s), err: (s) => void (err += s), isTTY: false, stdout: () => out, stderr: () => err };
}

let n = 0;
async function compile(...flags: string[]) {
  const io = capture();
  const output = join(tmp, `out${n++}.onnx`);
  const code = await main(["compile", modelPath, "-w", weightsPath, "-o", output, ...flags], io);
  return { code, out: io.stdout(), err: io.stderr(), output };
}

/** Pass ids in the first column of a --stats table, less the header and total rows. */
function statsPasses(out: string): string[] {
  const lines = out.split("\n");
  const start = lines.findIndex((l) => l.startsWith("pass "));
  const end = lines.findIndex((l, i) => i > start && (l.startsWith("total ") || l.startsWith("(no passes)")));
  return lines.slice(start + 1, end).map((l) => l.split(/\s+/)[0]!);
}

describe("levels and pass lists", () => {
  it("defaults to -O2 and writes a model with the pipeline's node count", async () => {
    const r = await compile("--stats");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
    expect(statsPasses(r.out)).toEqual(passesForLevel(2).map((p) => p.id));
    const nodes = Number(/total\s+\S+ →\s+(\S+)/.exec(r.out)![1]!.replace(/,/g, ""));
    expect(r.out).toMatch(new RegExp(`\\nwrote ${r.output.replace(/[.]/g, "\\.")}: opset 17, ${nodes} nodes, [\\d,]+ parameters, [\\d.]+ KiB\\n$`));
    expect(readOnnxFile(r.output).nodes.length).toBe(nodes);
  });

  it.each([
    [["-O0"], 0],
    [["-O", "1"], 1],
    [["--opt-level", "2"], 2],
    [["--opt-level=0"], 0],
    [["-O1"], 1],
  ] as const)("%j selects level %i", async (flags, level) => {
    const r = await compile(...flags, "--stats");
    expect(r.code).toBe(0);
    expect(statsPasses(r.out)).toEqual(passesForLevel(level).map((p) => p.id));
    if (level === 0) expect(r.out).toMatch(/^pass .*\n\(no passes\)\n/);
  });

  it("--passes runs exactly the list, in order", async () => {
    const r = await compile("--passes", "dce,cse", "--stats");
    expect(r.code).toBe(0);
    expect(statsPasses(r.out)).toEqual(["dce", "cse"]);
  });

  it("--stats prints nodes and parameters before → after, time and counters", async () => {
    const r = await compile("--passes", "cse", "--stats");
    const [header, row, total] = r.out.split("\n");
    expect(header).toMatch(/^pass\s+changed\s+nodes\s+parameters\s+time\s+counters$/);
    expect(row).toMatch(/^cse\s+yes\s+(\d+) → (\d+)\s+([\d,]+) → \3\s+\d+\.\d ms\s+nodes-merged \d+$/);
    expect(total).toMatch(/^total\s+\d+ → \d+\s+[\d,]+ → [\d,]+\s+\d+\.\d ms$/);
  });
});

describe("--print-after", () => {
  it("prints the IR after the named pass", async () => {
    const r = await compile("--passes", "cse,dce", "--print-after", "cse");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\/\/ ----- IR after cse ----- \/\/\ngraph aesm-two-levels\(%user : i64\[batch\], /);
    expect(r.out.match(/IR after/g)).toHaveLength(1);
  });

  it("takes repeats, comma lists and `all`", async () => {
    const twice = await compile("-O1", "--print-after", "cse", "--print-after", "dce");
    expect([...twice.out.matchAll(/IR after (\S+)/g)].map((m) => m[1])).toEqual(["cse", "dce"]);
    const list = await compile("--passes", "cse,dce", "--print-after", "dce,cse");
    expect([...list.out.matchAll(/IR after (\S+)/g)].map((m) => m[1])).toEqual(["cse", "dce"]);
    const all = await compile("-O1", "--print-after", "all");
    expect([...all.out.matchAll(/IR after (\S+)/g)].map((m) => m[1])).toEqual(passesForLevel(1).map((p) => p.id));
  });

  it("rejects a pass the pipeline does not run (exit 2)", async () => {
    const r = await compile("-O0", "--print-after", "cse");
    expect(r.code).toBe(2);
    expect(r.err).toBe('error[AESM4201]: --print-after: pass "cse" is not in this pipeline (-O0: no passes)\n');
    expect(existsSync(r.output)).toBe(false);
    const l = await compile("--passes", "dce", "--print-after", "cse");
    expect(l.err).toBe('error[AESM4201]: --print-after: pass "cse" is not in this pipeline (--passes: dce)\n');
  });
});

describe("--verify-each", () => {
  it("passes -O2", async () => {
    const r = await compile("--verify-each");
    expect(r.code).toBe(0);
    expect(r.err).toBe("");
  });

  it("exits 70 naming a pass that changes the numbers, and writes nothing", async () => {
    const output = join(tmp, "kept.onnx");
    writeFileSync(output, "previous");
    const io = capture();
    const code = await main(
      ["compile", modelPath, "-w", weightsPath, "-o", output, "--passes", "cse,tower-bias-x2,dce", "--verify-each"],
      io,
    );
    expect(code).toBe(70);
    expect(io.stdout()).toBe("");
    const [first, note, rest] = io.stderr().split("\n");
    expect(first).toMatch(/^error: pass tower-bias-x2: changed output ctr by \d\.\d{3}e-\d+ at element \d+ \(allowed 0\.00001\)$/);
    expect(note).toBe(
      "note: a bug in aesm's optimiser, not in the model; nothing was written. --passes without tower-bias-x2 avoids it, --print-after tower-bias-x2 shows its IR.",
    );
    expect(rest).toBe("");
    expect(readFileSync(output, "utf8")).toBe("previous");
  });

  it("still prints the IR of the failing pass when asked", async () => {
    const r = await compile("--passes", "cse,tower-bias-x2", "--verify-each", "--print-after", "tower-bias-x2");
    expect(r.code).toBe(70);
    expect(r.out).toMatch(/^\/\/ ----- IR after tower-bias-x2 ----- \/\/\n[^]*\.broken : f32\[batch,1\] = Add\(/);
  });

  it("exits 70 naming a pass that throws, with or without --verify-each", async () => {
    for (const extra of [[], ["--verify-each"]]) {
      const r = await compile("--passes", "cse,throwing-pass", ...extra);
      expect(r.code).toBe(70);
      expect(r.err.split("\n")[0]).toBe("error: pass throwing-pass: threw TypeError: cannot read properties of undefined (reading 'inputs')");
      expect(existsSync(r.output)).toBe(false);
    }
  });
});

describe("--calibrate", () => {
  // 16 experts at one level, and rows of a single scenario combination: some experts go unused
  const wide = testModels.find((m) => m.name === "three-levels")!.spec;
  const wideModel = join(tmp, "wide.json");
  const wideWeights = join(tmp, "wide.safetensors");
  writeFileSync(wideModel, JSON.stringify(toModelInput(wide)));
  saveWeights(wideWeights, initWeights(wide, 1));
  const rowsPath = join(tmp, "calibration.jsonl");
  const rows = generateInputs(wide, { rows: 100, seed: 3 });
  for (const l of wide.scenarios) rows.scenarios[l.name]!.fill(0n);
  writeInputsFile(rowsPath, wide, rows);

  it("prunes experts the rows never use, reports the plan and a held-out check, and passes verify-each", async () => {
    const io = capture();
    const output = join(tmp, "calibrated.onnx");
    const code = await main(["compile", wideModel, "-w", wideWeights, "-o", output, "--calibrate", rowsPath, "--stats", "--verify-each"], io);
    const r = { code, out: io.stdout(), err: io.stderr() };
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^calibration on 100 rows\n {2}scenario_layers\.app\.0: prune (none|\[[\d, ]+\]) of 3 \(rows per expert /);
    expect(r.out).toMatch(/\n {2}scenario_layers\.page\.0: prune \[[\d, ]+\] of 16 /);
    expect(r.out).toMatch(/\nheld-out check: calibrated on the first 80 rows, pruned graph vs reference on the other 20\n/);
    expect(r.out).toMatch(/\n {2}ctr: max \|pruned − reference\| \d\.\d\de[-+]\d+/);
    expect(r.out).toMatch(/\nprune-calibrated\s+yes\s+.*experts-removed \d+/);
  });

  it("needs prune-calibrated in the pipeline (exit 2)", async () => {
    const r = await compile("-O1", "--calibrate", rowsPath);
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      "error[AESM4202]: --calibrate: calibration prunes experts in pass prune-calibrated, which this pipeline does not run (remove-noops, fold-constants, compact-lookups, cse, dce)\n",
    );
    expect(existsSync(r.output)).toBe(false);
  });

  it("reports an unreadable rows file as a usage error (exit 2)", async () => {
    const r = await compile("--calibrate", join(tmp, "missing.jsonl"));
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/^error\[AESM4\d{3}\]: .*missing\.jsonl/);
  });
});

describe("usage errors (exit 2)", () => {
  it.each([
    [["-O3"], `error: option '-O, --opt-level <n>' argument '3' is invalid. -O must be 0, 1 or 2, got "3"\n`],
    [["--opt-level", "fast"], `error: option '-O, --opt-level <n>' argument 'fast' is invalid. -O must be 0, 1 or 2, got "fast"\n`],
    [["-O1", "--passes", "cse"], "error: option '-O, --opt-level <n>' cannot be used with option '--passes <list>'\n"],
    [["--passes", "cse,fuse-everything"], `error: option '--passes <list>' argument 'cse,fuse-everything' is invalid. unknown pass "fuse-everything" (known: `],
    [["--print-after", "nope"], `error: option '--print-after <pass>' argument 'nope' is invalid. unknown pass "nope" (known: `],
    [["--passes"], "error: option '--passes <list>' argument missing\n"],
  ])("%j", async (flags, message) => {
    const r = await compile(...flags);
    expect(r.code).toBe(2);
    expect(r.err.startsWith(message)).toBe(true);
    expect(r.out).toBe("");
    expect(existsSync(r.output)).toBe(false);
  });
});
