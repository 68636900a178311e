// `aesm init <name>`: scaffolds a model file that type-checks and compiles as is, shows every
// option in comments, and never overwrites a file.

import { spawnSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { compileToFile } from "../../src/compile.ts";
import { loadModel } from "../../src/dsl/load.ts";
import { inspectOnnxFile } from "../../src/inspect/index.ts";
import { initWeights } from "../../src/weights/index.ts";
import { modelTemplate } from "../../src/cli/commands/init.ts";
import { BIN, runBin } from "../cli/cli-helpers.ts";
import { type Project, expectNoStack, runCli, userProject } from "./helpers.ts";

let project: Project;
beforeAll(() => {
  project = userProject();
});
afterAll(() => project.remove());

describe("aesm init", { timeout: 120_000 }, () => {
  it("writes <name>.ts, which type-checks, loads and compiles as is", async () => {
    const file = join(project.dir, "models", "ranker.ts");
    const r = await runCli(["init", join(project.dir, "models", "ranker")]);
    expect(r).toEqual({ code: 0, out: `wrote ${file}: model "ranker"; next: npx aesm inspect ${file}\n`, err: "" });

    const { spec } = await loadModel(file); // type-checked first (the default)
    expect(spec.name).toBe("ranker");
    const onnx = join(project.dir, "models", "ranker.onnx");
    compileToFile(spec, initWeights(spec, 1), onnx);
    expect(inspectOnnxFile(onnx).aesm?.model?.name).toBe("ranker");
  });

  it("shows each option in a comment", () => {
    const text = readFileSync(join(project.dir, "models", "ranker.ts"), "utf8");
    for (const option of [
      "categorical({ vocab, dim })",
      "dense(dim)",
      "values:",
      "dim:",
      "layers:",
      "experts:",
      "mlp(units, { act, batchNorm, bias })",
      "gate({ units, act, batchNorm, bias })",
      "aesm({ specific, shared })",
      'mask: "reference"',
      "all()",
      "topK(k)",
      "fixed({ specific:",
      "taskLayers:",
      "tower:",
      "batchNorm: { eps:",
    ])
      expect(text, option).toContain(option);
    expect(text).toContain('import { aesm, all, categorical, defineModel, dense, gate, mlp } from "aesm";');
  });

  it("accepts a name ending in .ts, and the CLI compiles the result", async () => {
    const r = await runCli(["init", join(project.dir, "second.ts")]);
    expect(r.code).toBe(0);
    const w = join(project.dir, "second.safetensors");
    expect((await runCli(["init-weights", join(project.dir, "second.ts"), "-o", w, "--seed", "2"])).code).toBe(0);
    const c = await runCli(["compile", join(project.dir, "second.ts"), "-w", w, "-o", join(project.dir, "second.onnx")]);
    expectNoStack(c.err);
    expect(c.code).toBe(0);
  });

  it("refuses to overwrite an existing file: exit 2, the file untouched", async () => {
    const file = join(project.dir, "taken.ts");
    writeFileSync(file, "// mine\n");
    const r = await runCli(["init", join(project.dir, "taken")]);
    expect(r).toEqual({
      code: 2,
      out: "",
      err: `error[AESM4006]: ${file}: already exists; aesm init never overwrites a file (choose another name or remove it)\n`,
    });
    expect(readFileSync(file, "utf8")).toBe("// mine\n");
  });

  it("a write cut short leaves no file, and the next run writes it whole", () => {
    // a file size limit of 2 KiB: the scaffold (about 3.6 KB) cannot be written in full
    const dir = join(project.dir, "limited");
    mkdirSync(dir);
    const file = join(dir, "m.ts");
    const r = spawnSync("bash", ["-c", `ulimit -f 2; exec "${process.execPath}" "${BIN}" init "${join(dir, "m")}"`], { encoding: "utf8" });
    expect([r.status, r.stderr.replace(/^npm warn.*\n/gm, "")]).toEqual([2, `error[AESM4003]: ${file}: cannot write: EFBIG\n`]);
    expect(readdirSync(dir)).toEqual([]);
    expect(runBin(["init", join(dir, "m")]).code).toBe(0);
    expect(readdirSync(dir)).toEqual(["m.ts"]);
    expect(readFileSync(file, "utf8")).toBe(modelTemplate("m", file));
  });

  it("rejects a name that cannot be a model name", async () => {
    const r = await runCli(["init", join(project.dir, "my model")]);
    expect(r.code).toBe(2);
    expect(r.err).toBe('error[AESM1040]: name: invalid model name "my model": model names must match /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/\n');
  });
});
