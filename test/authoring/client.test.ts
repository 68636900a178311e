// The typed client of `compile --emit-client`: generated for examples/search-ranker.ts, it
// imports only onnxruntime-node, passes `tsc --strict`, types rows by the model's names, matches
// the float64 reference on real rows, and rejects bad rows naming the row and the field.

import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import ts from "typescript";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { writeClient } from "../../src/client/generate.ts";
import { compileToFile } from "../../src/compile.ts";
import type { InputBatch } from "../../src/core/batch.ts";
import { loadModel } from "../../src/dsl/load.ts";
import type { ModelSpec } from "../../src/dsl/spec.ts";
import { evaluateReference } from "../../src/reference/index.ts";
import { type Weights, initWeights } from "../../src/weights/index.ts";
import { type Project, REPO, expectNoStack, runCli, userProject } from "./helpers.ts";

/** float32 outputs of onnxruntime against the float64 reference (MODEL.md's fp32 parity atol). */
const ATOL = 1e-5;

let project: Project;
let spec: ModelSpec;
let weights: Weights;
let clientPath: string;

interface Row {
  user_id: number | bigint;
  item_id: number | bigint;
  query_cat: number | bigint;
  stats: number[];
  page: string;
  search: string;
}
interface Client {
  predict(rows: readonly Row[]): Promise<{ ctr: Float32Array; cvr: Float32Array }>;
  createRanker(path?: string): Promise<{ predict: Client["predict"]; close(): Promise<void> }>;
  MODEL_FILE: string;
  InvalidRowError: new (...a: never[]) => Error;
}
let client: Client;

beforeAll(async () => {
  project = userProject();
  spec = (await loadModel(join(REPO, "examples/search-ranker.ts"))).spec;
  weights = initWeights(spec, 7);
  const onnx = join(project.dir, "build", "search-ranker.onnx");
  compileToFile(spec, weights, onnx);
  clientPath = join(project.dir, "src", "ranker-client.ts");
  await writeClient(spec, clientPath, onnx, "examples/search-ranker.ts");
  client = (await import(clientPath)) as Client;
}, 120_000);
afterAll(() => project.remove());

/** Rows over every (page, search) pair, ids as numbers and bigints, some outside the vocabulary. */
function makeRows(n: number): Row[] {
  const pages = ["home", "vertical"];
  const searches = ["brand", "category", "shop"];
  return Array.from({ length: n }, (_, r) => ({
    user_id: r % 5 === 0 ? BigInt(r * 37) : (r * 37) % 1100, // 1000..1099: out of range, zero embedding
    item_id: (r * 7919) % 5000,
    query_cat: r % 3 === 0 ? BigInt(r % 50) : -1 - (r % 2), // negative ids: out of range too
    stats: Array.from({ length: 6 }, (_, d) => Math.sin(r * 1.7 + d) * (d + 1)),
    page: pages[r % 2]!,
    search: searches[Math.floor(r / 2) % 3]!,
  }));
}

/** The same rows as the graph's input batch, built here independently of the client. */
function toBatch(rows: readonly Row[]): InputBatch {
  const B = rows.length;
  const ids = (k: "user_id" | "item_id" | "query_cat") => BigInt64Array.from(rows, (r) => BigInt(r[k]));
  return {
    rows: B,
    features: { user_id: ids("user_id"), item_id: ids("item_id"), query_cat: ids("query_cat"), stats: Float32Array.from(rows.flatMap((r) => r.stats)) },
    scenarios: {
      page: BigInt64Array.from(rows, (r) => BigInt(["home", "vertical"].indexOf(r.page))),
      search: BigInt64Array.from(rows, (r) => BigInt(["brand", "category", "shop"].indexOf(r.search))),
    },
  };
}

describe("the generated client", { timeout: 120_000 }, () => {
  it("imports only onnxruntime-node", () => {
    const sf = ts.createSourceFile(clientPath, readFileSync(clientPath, "utf8"), ts.ScriptTarget.Latest, true);
    const specifiers: string[] = [];
    const visit = (n: ts.Node): void => {
      if ((ts.isImportDeclaration(n) || ts.isExportDeclaration(n)) && n.moduleSpecifier && ts.isStringLiteral(n.moduleSpecifier))
        specifiers.push(n.moduleSpecifier.text);
      if (ts.isCallExpression(n) && (n.expression.kind === ts.SyntaxKind.ImportKeyword || (ts.isIdentifier(n.expression) && n.expression.text === "require")))
        specifiers.push("<dynamic>");
      ts.forEachChild(n, visit);
    };
    visit(sf);
    expect(specifiers).toEqual(["onnxruntime-node"]);
  });

  it("is formatted (2-space indent, no tabs, no trailing spaces) and has the model's names in its types", () => {
    const text = readFileSync(clientPath, "utf8");
    expect(text).not.toMatch(/\t| +\n/);
    expect(text).toContain('readonly page: "home" | "vertical";');
    expect(text).toContain('readonly search: "brand" | "category" | "shop";');
    expect(text).toContain("readonly user_id: number | bigint;");
    expect(text).toContain("readonly stats: readonly number[];");
    expect(text).toMatch(/export interface Prediction \{\n {2}readonly ctr: Float32Array;\n {2}readonly cvr: Float32Array;\n\}/);
  });

  it("is pinned: a change to the generated text is a reviewed change (UPDATE_GOLDEN=1 rewrites it)", () => {
    // The version in the header is the only line that changes with every release.
    const text = readFileSync(clientPath, "utf8").replace(/generated by aesm \S+$/m, "generated by aesm <version>");
    const golden = join(import.meta.dirname, "golden", "search-ranker.client.ts.golden");
    if (process.env["UPDATE_GOLDEN"] === "1" || !existsSync(golden)) {
      mkdirSync(dirname(golden), { recursive: true });
      writeFileSync(golden, text);
    }
    expect(text).toBe(readFileSync(golden, "utf8"));
  });

  it("passes tsc --strict (and stricter flags), and a caller gets type errors for wrong names and values", () => {
    const caller = join(project.dir, "src", "caller.ts");
    writeFileSync(
      caller,
      [
        'import { predict, type Prediction, type Row } from "./ranker-client.ts";',
        'const row: Row = { user_id: 1, item_id: 2n, query_cat: 3, stats: [0, 0, 0, 0, 0, 0], page: "home", search: "shop" };',
        "export const p: Promise<Prediction> = predict([row]);",
        "export const ctr: Promise<Float32Array> = p.then((x) => x.ctr);",
        '// @ts-expect-error: "homee" is not a page',
        'export const typo: Row = { ...row, page: "homee" };',
        "// @ts-expect-error: a feature the model does not have",
        "export const extra: Row = { ...row, user: 1 };",
        "// @ts-expect-error: the model has no task ctx",
        "export const ctx = p.then((x) => x.ctx);",
        "// @ts-expect-error: every input is required",
        'export const partial: Row = { user_id: 1, item_id: 2, query_cat: 3, stats: [], page: "home" };',
        "",
      ].join("\n"),
    );
    const program = ts.createProgram([clientPath, caller], {
      strict: true,
      noEmit: true,
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.NodeNext,
      moduleResolution: ts.ModuleResolutionKind.NodeNext,
      allowImportingTsExtensions: true,
      types: ["node"],
      typeRoots: [join(REPO, "node_modules", "@types")],
      skipLibCheck: true, // the libraries' own declarations are theirs to check; ours is the client
      noUnusedLocals: true,
      noUnusedParameters: true,
      noImplicitReturns: true,
      noUncheckedIndexedAccess: true,
      exactOptionalPropertyTypes: true,
      noPropertyAccessFromIndexSignature: true,
    });
    const diagnostics = ts.getPreEmitDiagnostics(program).map((d) => {
      const where = d.file && d.start !== undefined ? `${d.file.fileName}:${d.file.getLineAndCharacterOfPosition(d.start).line + 1}` : "";
      return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, " ")}`;
    });
    expect(diagnostics).toEqual([]);
  });

  it("predicts on real rows, matching the float64 reference within 1e-5", async () => {
    const rows = makeRows(96);
    const got = await client.predict(rows);
    const ref = evaluateReference(spec, weights, toBatch(rows)).outputs;
    for (const task of ["ctr", "cvr"] as const) {
      expect(got[task]).toBeInstanceOf(Float32Array);
      expect(got[task]).toHaveLength(rows.length);
      let worst = { err: 0, row: -1 };
      got[task].forEach((p, r) => {
        const err = Math.abs(p - ref[task]![r]!);
        if (err > worst.err) worst = { err, row: r };
      });
      expect(worst.err, `${task}: worst row ${worst.row}`).toBeLessThanOrEqual(ATOL);
    }
    // Not a constant model: the rows' probabilities spread.
    expect(Math.max(...got.ctr) - Math.min(...got.ctr)).toBeGreaterThan(0.05);
  });

  it("opens a model path it is given, and answers an empty batch with empty outputs", async () => {
    const ranker = await client.createRanker(join(project.dir, "build", "search-ranker.onnx"));
    try {
      const rows = makeRows(5);
      expect(Array.from((await ranker.predict(rows)).cvr)).toEqual(Array.from((await client.predict(rows)).cvr));
      expect(await ranker.predict([])).toEqual({ ctr: new Float32Array(0), cvr: new Float32Array(0) });
    } finally {
      await ranker.close();
    }
    expect(client.MODEL_FILE).toBe("../build/search-ranker.onnx");
  });

  it.each<[string, (r: Row) => unknown, string]>([
    ["an unknown scenario value", (r) => ({ ...r, page: "homee" }), 'row 3: page: "homee" is not one of "home", "vertical"'],
    ["a scenario index instead of its name", (r) => ({ ...r, search: 1 }), 'row 3: search: 1 is not one of "brand", "category", "shop"'],
    ["a missing feature", ({ item_id: _, ...r }) => r, "row 3: item_id: missing"],
    ["a fractional id", (r) => ({ ...r, user_id: 1.5 }), "row 3: user_id: must be an integer id (a safe integer number or an int64 bigint), got 1.5"],
    ["an id beyond int64", (r) => ({ ...r, user_id: 2n ** 63n }), "row 3: user_id: must be an integer id (a safe integer number or an int64 bigint), got 9223372036854775808n"],
    ["a dense feature of the wrong length", (r) => ({ ...r, stats: [1, 2] }), "row 3: stats: must be an array of 6 numbers, got an array of 2"],
    ["a dense value that is not finite", (r) => ({ ...r, stats: [0, 0, NaN, 0, 0, 0] }), "row 3: stats[2]: must be a finite number, got NaN"],
  ])("rejects %s, naming the row and the field", async (_, spoil, message) => {
    const rows: unknown[] = makeRows(5);
    rows[3] = spoil(rows[3] as Row);
    const err = await client.predict(rows as Row[]).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(client.InvalidRowError);
    expect(err!.message).toBe(message);
    expect(err).toMatchObject({ name: "InvalidRowError", row: 3 });
  });

  it("is written by `aesm compile --emit-client`, next to the ONNX it names", async () => {
    const w = join(project.dir, "w.safetensors");
    const { saveWeights } = await import("../../src/weights/index.ts");
    saveWeights(w, weights);
    const onnx = join(project.dir, "cli", "m.onnx");
    const out = join(project.dir, "cli", "m.client.ts");
    const r = await runCli(["compile", join(REPO, "examples/search-ranker.ts"), "-w", w, "-o", onnx, "--emit-client", out]);
    expectNoStack(r.err);
    expect(r.code).toBe(0);
    expect(r.out).toContain(`wrote ${out}: typed client for ${onnx} (predict(rows) → ctr, cvr)\n`);
    const text = readFileSync(out, "utf8");
    expect(text).toContain('export const MODEL_FILE = "./m.onnx";');
    expect(text.replace(/"\.\/m\.onnx"/, '"../build/search-ranker.onnx"').replace(/\(.*search-ranker\.ts\)/, "")).toBe(
      readFileSync(clientPath, "utf8").replace(/\(.*search-ranker\.ts\)/, ""),
    );
  });
});

describe("the generated client on rows that are not rows", { timeout: 120_000 }, () => {
  it("rejects a hole in a sparse array and a non-object row as a TypeError naming the row", async () => {
    const rows = makeRows(3);
    const sparse: Row[] = [rows[0]!];
    sparse[2] = rows[2]!;
    await expect(client.predict(sparse)).rejects.toThrow(/^row 1: must be an object with the model's inputs, got undefined$/);
    await expect(client.predict([rows[0]!, null as unknown as Row])).rejects.toThrow(/^row 1: must be an object with the model's inputs, got null$/);
  });
});
