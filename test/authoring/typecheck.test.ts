// Checked loading: a .ts model file is type-checked before it runs. Type errors come out as
// tsc prints them (`file:line:col  message`), exit 2, nothing evaluated and no stack trace.

import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { typecheckModel } from "../../src/dsl/check.ts";
import { loadModel } from "../../src/dsl/load.ts";
import { type Project, REPO, SMALL_MODEL, expectNoStack, runCli, userProject } from "./helpers.ts";

let project: Project;
beforeAll(() => {
  project = userProject();
});
afterAll(() => project.remove());

/** SMALL_MODEL with `from` replaced by `to` (once), and a last line that fails if the module ever runs. */
function variant(from: string, to: string): string {
  if (!SMALL_MODEL.includes(from)) throw new Error(`SMALL_MODEL has no ${JSON.stringify(from)}`);
  return `${SMALL_MODEL.replace(from, to)}if (Date.now() > 0) throw new Error("the model ran");\n`;
}

// Loading each new file starts the compiler once per process and tsx once per file: allow time.
describe("type errors through the CLI", { timeout: 120_000 }, () => {
  it("prints file:line:col  message, like tsc, and exits 2 without running the model", async () => {
    const file = project.write("dim.ts", variant("x: dense(3)", 'x: dense("3")'));
    const r = await runCli(["inspect", file]);
    expect(r).toEqual({
      code: 2,
      out: "",
      err: `error[AESM1100]: ${file}:7:14  Argument of type 'string' is not assignable to parameter of type 'number'.\n`,
    });
    expectNoStack(r.err);
  });

  it("lists every type error, each at its position, with chained messages on one line", async () => {
    const file = project.write(
      "several.ts",
      variant("expert: mlp([4]),", 'expert: mlp([4], { act: "swish" }),').replace("specific: 1, shared: 1", "specific: 1, shared: true") +
        "export const scale: (x: number) => number = (x: string) => x.length;\n",
    );
    const r = await runCli(["inspect", file]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      [
        `error[AESM1100]: ${file}:14:26  Type '"swish"' is not assignable to type 'Activation | undefined'.`,
        `error[AESM1100]: ${file}:15:35  Type 'boolean' is not assignable to type 'number'.`,
        `error[AESM1100]: ${file}:25:14  Type '(x: string) => number' is not assignable to type '(x: number) => number'. ` +
          "Types of parameters 'x' and 'x' are incompatible. Type 'number' is not assignable to type 'string'.",
        "",
      ].join("\n"),
    );
    expectNoStack(r.err);
  });

  it("rejects a fixed() key that is not a value of its level, before anything runs", async () => {
    const file = project.write("fixed.ts", variant("aesm({ specific: 1, shared: 1 })", "fixed({ specific: { hme: [0] }, shared: [1] })").replace("import { aesm,", "import { aesm, fixed,"));
    const r = await runCli(["inspect", file]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(new RegExp(`^error\\[AESM1100\\]: ${escape(file)}:15:\\d+  .*"hme".*\\n$`));
    expectNoStack(r.err);
  });

  it("checks files the model imports by relative path, and names them", async () => {
    project.write("parts/towers.ts", 'import { mlp } from "aesm";\nexport const tower = mlp([2], { batchNorm: "yes" });\n');
    const file = project.write("imports.ts", variant("ctr: { tower: mlp([2]) },", "ctr: { tower },").replace('from "aesm";\n', 'from "aesm";\nimport { tower } from "./parts/towers.ts";\n'));
    const r = await runCli(["inspect", file]);
    expect(r.code).toBe(2);
    expect(r.err).toBe(
      `error[AESM1100]: ${join(project.dir, "parts/towers.ts")}:2:33  Type 'string' is not assignable to type 'boolean | undefined'.\n`,
    );
  });

  it("type-checks a model that uses Node's APIs against Node's typings", async () => {
    const file = project.write(
      "node.ts",
      SMALL_MODEL.replace('from "aesm";\n', 'from "aesm";\nimport { basename } from "node:path";\nconst name = basename(process.env.MODEL_NAME ?? "small");\n').replace(
        'name: "small"',
        "name",
      ),
    );
    expect((await loadModel(file)).spec.name).toBe("small");
  });
});

describe("the escape hatch", { timeout: 120_000 }, () => {
  // A type error that changes nothing at run time: the model is valid once it runs.
  const text = `${SMALL_MODEL}export const note: number = "only a type error";\n`;

  it("inspect --no-typecheck runs the file as is", async () => {
    const file = project.write("hatch.ts", text);
    expect((await runCli(["inspect", file])).code).toBe(2);
    const r = await runCli(["inspect", "--no-typecheck", file]);
    expect(r.code).toBe(0);
    expect(r.out).toContain("model small:");
  });

  it("AESM_TYPECHECK=0 turns the default off for every command; loadModel takes typecheck: false", async () => {
    const file = project.write("hatch-env.ts", text);
    await expect(loadModel(file)).rejects.toBeInstanceOf(AesmError);
    expect((await loadModel(file, { typecheck: false })).spec.name).toBe("small");
    process.env.AESM_TYPECHECK = "0";
    try {
      expect((await loadModel(file)).spec.name).toBe("small");
    } finally {
      delete process.env.AESM_TYPECHECK;
    }
  });
});

describe("speed: the compiler is kept, and successes are remembered", { timeout: 120_000 }, () => {
  it("checks examples/search-ranker.ts; a second check in the process reuses the parsed program", async () => {
    const file = join(REPO, "examples/search-ranker.ts");
    const first = await typecheckModel(file, file, { cache: false });
    const again = await typecheckModel(file, file, { cache: false });
    expect(first.diagnostics).toEqual([]);
    expect(again.diagnostics).toEqual([]);
    // Printed for the record: cold includes loading the compiler (unless another test did).
    console.log(`type check of examples/search-ranker.ts: first ${first.ms.toFixed(0)} ms, again ${again.ms.toFixed(0)} ms`);
    expect(again.ms).toBeLessThan(Math.max(first.ms, 1000));
  });

  it("reuses a recorded success until a file the check read changes; never records a failure", async () => {
    const file = project.write("cached.ts", SMALL_MODEL);
    expect((await typecheckModel(file, file)).cached).toBe(false);
    const hit = await typecheckModel(file, file);
    expect(hit).toMatchObject({ cached: true, diagnostics: [] });
    appendFileSync(file, 'export const broken: number = "x";\n');
    const miss = await typecheckModel(file, file);
    expect(miss.cached).toBe(false);
    expect(miss.diagnostics).toHaveLength(1);
    expect((await typecheckModel(file, file)).cached).toBe(false);
  });
});

function escape(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}
