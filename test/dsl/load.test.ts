// loadModel on every file kind and failure: JSON (syntax errors with line:col, duplicate keys,
// located validation errors), TS/JS modules through tsx, and the examples' JSON twin.

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AesmError, type Diagnostic } from "../../src/core/diagnostics.ts";
import { loadModel, parseModel, toModelInput } from "../../src/dsl/index.ts";
import { testModels } from "../../fixtures/models.ts";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const dslEntry = JSON.stringify(join(root, "src/dsl/index.ts"));

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), "aesm-load-"));
  // Half the module tests run as ESM (like a project with "type": "module"), half as tsx's CommonJS.
  mkdirSync(join(dir, "esm"));
  writeFileSync(join(dir, "esm/package.json"), '{ "type": "module" }\n');
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function write(name: string, text: string): string {
  const file = join(dir, name);
  writeFileSync(file, text);
  return file;
}

/** The diagnostics loadModel rejects with. */
async function failure(path: string): Promise<Diagnostic[]> {
  try {
    await loadModel(path);
  } catch (e) {
    expect(e).toBeInstanceOf(AesmError);
    expect((e as Error).message).not.toMatch(/\n\s+at /); // no stack traces in user errors
    return (e as AesmError).diagnostics;
  }
  throw new Error(`expected loadModel(${path}) to fail`);
}

const validJson = JSON.stringify(toModelInput(testModels[0]!.spec), null, 2);

/** A model module's source: builders from the DSL, `body` the argument of defineModel. */
const tsModel = (body: string, exportAs = "export default") =>
  `import { aesm, all, categorical, defineModel, dense, fixed, gate, mlp, topK } from ${dslEntry};\n` +
  `${exportAs} defineModel(${body});\n`;

const smallModel = `{
  features: { x: dense(2) },
  scenarios: {
    page: { values: ["a", "b"], dim: 2, experts: 2, expert: mlp([4]), select: aesm({ specific: 1, shared: 1 }) },
  },
  tasks: { ctr: { tower: mlp([]) } },
}`;

describe("loadModel: files and extensions", () => {
  it("reports a missing file as AESM4001", async () => {
    expect(await failure(join(dir, "nope.json"))).toEqual([
      { code: "AESM4001", path: "", message: "no such file", file: join(dir, "nope.json") },
    ]);
    expect((await failure(join(dir, "nope/model.ts")))[0]!.code).toBe("AESM4001");
  });

  it.each([".yaml", ".txt", ""])("rejects the extension %j as AESM4004", async (ext) => {
    const file = write(`model${ext}`, "{}");
    expect(await failure(file)).toEqual([
      { code: "AESM4004", path: "", message: `unsupported model file extension "${ext}" (use .ts or .json)`, file },
    ]);
  });

  it("rejects a directory", async () => {
    mkdirSync(join(dir, "folder.json"));
    expect(await failure(join(dir, "folder.json"))).toEqual([
      { code: "AESM1002", path: "", message: "failed to load: not a regular file", file: join(dir, "folder.json") },
    ]);
  });

  it("names the file as the caller gave it", async () => {
    const abs = write("relative.json", validJson);
    const rel = relative(process.cwd(), abs);
    const { file, spec } = await loadModel(rel);
    expect(file).toBe(rel);
    expect(spec).toEqual(testModels[0]!.spec);
  });
});

describe("loadModel: JSON", { timeout: 30_000 }, () => {
  it("loads a JSON model, tolerating a BOM", async () => {
    expect((await loadModel(write("ok.json", validJson))).spec).toEqual(testModels[0]!.spec);
    expect((await loadModel(write("bom.json", `\uFEFF${validJson}`))).spec).toEqual(testModels[0]!.spec);
  });

  it.each([
    ['{\n  "name": "m",\n  "features": }\n', 3, 15],
    ['{\n  "a": 1,\n}', 3, 1],
    ["", 1, 1],
    ['{"a": [1, 2', 1, 12],
    ['{"a": 1} x', 1, 10],
    ['{\n\t"a": "tab\tinside"}', 2, 11],
    ['{"a": 01}', 1, 8],
    ['{"a": tru}', 1, 7],
  ])("reports a syntax error with its position: %j", async (text, line, column) => {
    const file = write("bad.json", text);
    const [d, ...rest] = await failure(file);
    expect(rest).toEqual([]);
    expect(d).toMatchObject({ code: "AESM1001", path: "", file, line, column });
    expect(d!.message).toMatch(/^invalid JSON: \S/);
  });

  it("words the message like the JSON parser", async () => {
    const [d] = await failure(write("bad.json", '{"a": }'));
    expect(d!.message).toMatch(/^invalid JSON: Unexpected token/);
  });

  it("rejects duplicate keys, which JSON.parse would silently drop", async () => {
    const input = toModelInput(testModels[0]!.spec);
    const text = JSON.stringify(input, null, 2).replace('"tasks": {', '"tasks": {\n    "click": {},');
    const file = write("dup.json", text);
    const diags = await failure(file);
    const line = text.split("\n").findIndex((l) => l.includes('"click": {')) + 1;
    expect(diags.find((d) => d.code === "AESM1004")).toEqual({
      code: "AESM1004",
      path: "tasks.click",
      message: 'duplicate key "click" (only the last one would count)',
      file,
      line: line + 1,
      column: 5,
    });
  });

  it("locates validation errors at the offending key", async () => {
    const text = [
      "{",
      '  "features": { "x": { "kind": "dense", "dim": 2 } },',
      '  "scenarios": {',
      '    "page": {',
      '      "values": ["a", "b"], "dim": 2, "experts": 8,',
      '      "expert": { "kind": "mlp", "units": [4, 0] },',
      '      "select": { "kind": "aesm", "specific": 9, "shared": 1 },',
      '      "gates": {}',
      "    }",
      "  },",
      '  "tasks": { "ctr": {} }',
      "}",
    ].join("\n");
    const file = write("invalid.json", text);
    expect(await failure(file)).toEqual([
      { code: "AESM1011", path: "scenarios.page.gates", message: 'unknown key "gates" (did you mean "gate"?)', file, line: 8, column: 7 },
      { code: "AESM1021", path: "scenarios.page.expert.units.1", message: "must be ≥ 1, got 0", file, line: 6, column: 47 },
      { code: "AESM1050", path: "scenarios.page.select.specific", message: "must be ≤ experts (8), got 9", file, line: 7, column: 35 },
      { code: "AESM1012", path: "tasks.ctr", message: 'missing required key "tower"', file, line: 11, column: 14 },
    ]);
  });

  it("handles nesting far deeper than recursion could", async () => {
    const deep = "[".repeat(200_000) + "]".repeat(200_000);
    const file = write("deep.json", validJson.replace(/\}\s*$/, `, "extra": ${deep} }`));
    expect(await failure(file)).toEqual([
      { code: "AESM1011", path: "extra", message: 'unknown key "extra"', file, line: expect.any(Number), column: 3 },
    ]);
    const unclosed = write("deep-bad.json", "[".repeat(200_000));
    expect((await failure(unclosed))[0]).toMatchObject({ code: "AESM1001", line: 1, column: 200_001 });
  });

  it("does not let __proto__ in a file reach any prototype", async () => {
    const file = write("proto.json", validJson.replace(/^\{/, '{ "__proto__": { "polluted": true },'));
    expect(await failure(file)).toMatchObject([{ code: "AESM1011", path: "__proto__", line: 1, column: 3 }]);
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});

// Each module load starts tsx hooks, and locating errors loads the TypeScript parser: allow time.
describe("loadModel: modules", { timeout: 60_000 }, () => {
  it.each(["esm/model.ts", "cjs-model.ts", "esm/model.mts", "esm/model.js", "model.mjs"])(
    "loads a default export from %s",
    async (name) => {
      const body = name.endsWith("js") ? smallModel : `${smallModel} as const`;
      const file = write(name, tsModel(body));
      const { spec } = await loadModel(file);
      expect(spec.scenarios[0]!.select).toEqual({ kind: "aesm", specific: 1, shared: 1, eps: 1e-9, mask: "masked" });
    },
  );

  it("loads a named export `model`", async () => {
    const file = write("esm/named.ts", tsModel(smallModel, "export const model ="));
    expect((await loadModel(file)).spec.tasks[0]!.name).toBe("ctr");
  });

  it("loads a plain object export through parseModel", async () => {
    const file = write("esm/plain.ts", `export default ${JSON.stringify(toModelInput(testModels[1]!.spec))};\n`);
    expect((await loadModel(file)).spec).toEqual(testModels[1]!.spec);
  });

  it("reports a module without a model as AESM1003", async () => {
    for (const [name, text] of [
      ["esm/none.ts", "export const x = 1;\n"],
      ["esm/fn.ts", "export default () => 1;\n"],
      ["cjs-none.ts", "export const y = 2;\n"],
    ] as const) {
      const file = write(name, text);
      expect(await failure(file)).toEqual([
        { code: "AESM1003", path: "", message: "no model exported: export default defineModel({...})", file },
      ]);
    }
  });

  it("reports an exception during import as AESM1002 with its message only", async () => {
    const file = write("esm/throws.ts", 'throw new TypeError("boom");\n');
    expect(await failure(file)).toEqual([{ code: "AESM1002", path: "", message: "failed to load: boom", file }]);
  });

  it("reports a syntax error with its position", async () => {
    const file = write("esm/syntax.ts", "export default {\n  features: {,\n};\n");
    expect(await failure(file)).toEqual([
      { code: "AESM1002", path: "", message: 'failed to load: Expected identifier but found ","', file, line: 2, column: 14 },
    ]);
  });

  it("reports a hostile export (throwing getter) as AESM1002", async () => {
    const file = write("esm/getter.ts", 'export default { get features() { throw new Error("nope"); } };\n');
    expect(await failure(file)).toEqual([{ code: "AESM1002", path: "", message: "failed to load: nope", file }]);
  });

  it("re-throws defineModel's errors attributed to the file, located in the source", async () => {
    const body = `{
  features: { x: dense(0) },
  scenarios: {
    page: {
      values: ["a", "b"],
      dim: 2,
      experts: 8,
      expert: mlp([4], { act: "swish" as "relu" }),
      select: aesm({ specific: 9, shared: 1 }),
    },
  },
  tasks: { ctr: { tower: mlp([]) } },
}`;
    for (const name of ["esm/invalid.ts", "cjs-invalid.ts"]) {
      const file = write(name, tsModel(body));
      expect(await failure(file)).toEqual([
        { code: "AESM1021", path: "features.x.dim", message: "must be ≥ 1, got 0", file, line: 3, column: 24 },
        {
          code: "AESM1014",
          path: "scenarios.page.expert.act",
          message: 'unknown activation "swish" (expected "relu", "tanh", "leaky_relu", "gelu", "sigmoid" or "none")',
          file,
          line: 9,
          column: 26,
        },
        {
          code: "AESM1050",
          path: "scenarios.page.select.specific",
          message: "must be ≤ experts (8), got 9",
          file,
          line: 10,
          column: 22,
        },
      ]);
    }
  });

  it("follows constants and shorthand properties when locating", async () => {
    const text =
      `import { aesm, defineModel, dense, mlp } from ${dslEntry};\n` +
      "const expert = mlp([4, 0]);\n" +
      "const features = { x: dense(2) };\n" +
      "export default defineModel({\n" +
      "  features,\n" +
      '  scenarios: { page: { values: ["a", "b"], dim: 2, experts: 2, expert, select: aesm({ specific: 1, shared: 1 }) } },\n' +
      "  tasks: { ctr: { tower: mlp([]) } },\n" +
      "});\n";
    const file = write("esm/consts.ts", text);
    expect(await failure(file)).toEqual([
      { code: "AESM1021", path: "scenarios.page.expert.units.1", message: "must be ≥ 1, got 0", file, line: 2, column: 24 },
    ]);
  });

  it("locates errors of a plain object export", async () => {
    const file = write("esm/plain-bad.ts", 'export default {\n  name: "a b",\n  features: {},\n};\n');
    expect(await failure(file)).toEqual([
      {
        code: "AESM1040",
        path: "name",
        message: 'invalid name "a b": model names must match /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/',
        file,
        line: 2,
        column: 3,
      },
      { code: "AESM1030", path: "features", message: "must declare at least one feature", file, line: 3, column: 3 },
      { code: "AESM1012", path: "", message: 'missing required key "scenarios"', file, line: 1, column: 16 },
      { code: "AESM1012", path: "", message: 'missing required key "tasks"', file, line: 1, column: 16 },
    ]);
  });

  it("rebuilds the AesmError of a module's own copy of the DSL as ours", async () => {
    const file = write("esm/own.ts", tsModel("{ features: {}, scenarios: {}, tasks: {} }"));
    await expect(loadModel(file)).rejects.toBeInstanceOf(AesmError);
  });
});

describe("examples", { timeout: 60_000 }, () => {
  it("search-ranker.ts (importing \"aesm\") and its JSON twin load to the same spec", async () => {
    const ts = await loadModel(join(root, "examples/search-ranker.ts"));
    const json = await loadModel(join(root, "examples/search-ranker.json"));
    expect(json.spec).toEqual(ts.spec);
    expect(parseModel(toModelInput(ts.spec))).toEqual(ts.spec);
  });

  it("search-ranker has the shape the brief describes", async () => {
    const { spec } = await loadModel(join(root, "examples/search-ranker.json"));
    expect(spec.scenarios.map((l) => [l.name, l.values])).toEqual([
      ["page", ["home", "vertical"]],
      ["search", ["brand", "category", "shop"]],
    ]);
    expect(spec.tasks.map((t) => t.name)).toEqual(["ctr", "cvr"]);
    expect(spec.taskLayers?.layers).toBe(2);
    const layers = [...spec.scenarios, spec.taskLayers!];
    expect(layers.every((l) => l.select.kind === "aesm")).toBe(true);
    expect(layers.every((l) => l.gate.batchNorm && !l.gate.bias)).toBe(true);
    expect(Math.max(...layers.flatMap((l) => l.expert.units))).toBeLessThanOrEqual(32);
  });
});
