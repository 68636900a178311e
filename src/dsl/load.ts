// Loading a model file (.json, or a .ts/.mts/.js/.mjs module run through tsx) into a ModelSpec,
// with every diagnostic attributed to the file and, where the path can be found in it, a line:col.
// TypeScript model files are type-checked (check.ts) before they run.

import { readFile, stat } from "node:fs/promises";
import { extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { tsImport } from "tsx/esm/api";
import { AesmError, type Diagnostic, userError } from "../core/diagnostics.ts";
import { typecheckModel } from "./check.ts";
import { joinPath, parseModel } from "./parse.ts";
import type { ModelSpec } from "./spec.ts";

const MODULE_EXTENSIONS = [".ts", ".mts", ".js", ".mjs"];
/** Module files that are TypeScript, hence type-checked before they run. */
const TYPED_EXTENSIONS = [".ts", ".mts"];

/** 1-based line and column. */
export interface Position {
  line: number;
  column: number;
}

/** Finds where a diagnostic path points in the source, if it can. */
type Locate = (path: string) => Position | undefined;

export interface LoadOptions {
  /**
   * Type-check a .ts/.mts model file before running it (default true; the environment variable
   * `AESM_TYPECHECK=0` turns the default off, for the CLI commands that have no flag for it).
   */
  typecheck?: boolean;
}

export interface LoadedModel {
  spec: ModelSpec;
  /** The path as the caller gave it. */
  file: string;
  /** Where a model path (`scenarios.page.experts`) is declared in the file, or its nearest declared parent. */
  locate(path: string): Promise<Position | undefined>;
}

/** Whether model files are type-checked when the caller does not say. */
export function typecheckByDefault(): boolean {
  return process.env.AESM_TYPECHECK !== "0";
}

/**
 * Load and validate a model file. `file` in the result and in every diagnostic is `path`
 * as the caller gave it. Throws AesmError: AESM4001 missing file, AESM4004 unsupported
 * extension, AESM1001 bad JSON, AESM1100 type errors, AESM1002 module failed, AESM1003
 * nothing exported, or the model's own AESM1xxx problems.
 */
export async function loadModel(path: string, options: LoadOptions = {}): Promise<LoadedModel> {
  const file = path;
  const ext = extname(path);
  if (ext !== ".json" && !MODULE_EXTENSIONS.includes(ext))
    throw userError("AESM4004", "", `unsupported model file extension ${JSON.stringify(ext)} (use .ts or .json)`, file);

  const abs = resolve(path);
  try {
    if (!(await stat(abs)).isFile()) throw userError("AESM1002", "", "failed to load: not a regular file", file);
  } catch (e) {
    if (e instanceof AesmError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") throw userError("AESM4001", "", "no such file", file);
    throw userError("AESM1002", "", `failed to load: ${messageOf(e)}`, file);
  }

  if (TYPED_EXTENSIONS.includes(ext) && (options.typecheck ?? typecheckByDefault())) {
    const { diagnostics } = await typecheckModel(abs, file);
    if (diagnostics.length > 0) throw new AesmError(diagnostics);
  }

  if (ext === ".json") {
    const { spec, locate } = await loadJson(abs, file);
    return { spec, file, locate: async (p) => locate(p) };
  }
  const spec = await loadModule(abs, file);
  let locator: Promise<Locate | undefined> | undefined;
  return { spec, file, locate: async (p) => (await (locator ??= moduleLocator(abs, file)))?.(p) };
}

function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** JSON.parse quotes the offending text raw: escape control characters so a diagnostic stays one clean line. */
function escapeControl(s: string): string {
  return s.replace(/[\x00-\x1f\x7f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
}

/** Attribute diagnostics to `file`, adding a position to those that have none and can be located. */
function attribute(diagnostics: readonly Diagnostic[], file: string, locate?: Locate): Diagnostic[] {
  return diagnostics.map((d) => {
    if (d.file !== undefined && d.file !== file) return d; // already attributed to another file
    const pos = d.line === undefined && locate ? locate(d.path) : undefined;
    return { ...d, file, ...(pos ?? {}) };
  });
}

// ---- JSON ----

async function loadJson(abs: string, file: string): Promise<{ spec: ModelSpec; locate: Locate }> {
  let text: string;
  try {
    text = await readFile(abs, "utf8");
  } catch (e) {
    throw userError("AESM1002", "", `failed to load: ${messageOf(e)}`, file);
  }
  if (text.charCodeAt(0) === 0xfeff) text = text.slice(1); // editors may write a BOM; JSON.parse rejects it

  const scan = scanJson(text);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    // V8 words the message; our scanner finds the position (V8 does not always give one).
    const at = scan.errorAt ?? Number(/at position (\d+)/.exec(messageOf(e))?.[1] ?? NaN);
    throw new AesmError({
      code: "AESM1001",
      path: "",
      message: `invalid JSON: ${escapeControl(messageOf(e))}`,
      file,
      ...(Number.isFinite(at) ? positionAt(text, at) : {}),
    });
  }

  // JSON.parse silently keeps the last of repeated keys; a model with two `page` levels is a mistake.
  const problems: Diagnostic[] = scan.duplicates.map((d) => ({
    code: "AESM1004",
    path: d.path,
    message: `duplicate key ${JSON.stringify(d.key)} (only the last one would count)`,
    file,
    ...positionAt(text, d.offset),
  }));
  let spec: ModelSpec | undefined;
  try {
    spec = parseModel(value);
  } catch (e) {
    if (!(e instanceof AesmError)) throw e;
    problems.push(...e.diagnostics);
  }
  const locate: Locate = (path) => {
    const offset = lookupByPrefix(path, (p) => scan.locations.get(p));
    return offset === undefined ? undefined : positionAt(text, offset);
  };
  if (problems.length > 0 || !spec) throw new AesmError(attribute(problems, file, locate));
  return { spec, locate };
}

function positionAt(text: string, offset: number): Position {
  let line = 1;
  let lineStart = 0;
  for (let i = text.indexOf("\n"); i !== -1 && i < offset; i = text.indexOf("\n", i + 1)) {
    line++;
    lineStart = i + 1;
  }
  return { line, column: offset - lineStart + 1 };
}

/** A path's segments, inverting `joinPath`: `a.b["c d"].0` → ["a", "b", "c d", 0]. */
export function splitPath(path: string): (string | number)[] {
  const out: (string | number)[] = [];
  const re = /\.?(?:([A-Za-z_][A-Za-z0-9_]*)|(\d+)|\[("(?:[^"\\]|\\.)*")\])/y;
  let m: RegExpExecArray | null;
  while (re.lastIndex < path.length && (m = re.exec(path)) !== null)
    out.push(m[1] ?? (m[2] !== undefined ? Number(m[2]) : (JSON.parse(m[3]!) as string)));
  return out;
}

/** The value for the longest prefix of `path` (itself first) that `get` knows. */
function lookupByPrefix<T>(path: string, get: (path: string) => T | undefined): T | undefined {
  const segs = splitPath(path);
  for (let n = segs.length; n >= 0; n--) {
    const v = get(segs.slice(0, n).reduce<string>((p, s) => joinPath(p, s), ""));
    if (v !== undefined) return v;
  }
  return undefined;
}

interface JsonScan {
  /** Offset of the first syntax error; undefined if the text is valid JSON. */
  errorAt?: number;
  /** Where each value starts, by path: an object member's key, an array item, the root. */
  locations: Map<string, number>;
  duplicates: { path: string; key: string; offset: number }[];
}

class JsonSyntax {
  constructor(readonly at: number) {}
}

const JSON_NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y;
/** Model paths are at most ~8 deep; tracking paths deeper would cost quadratic time on hostile nesting. */
const LOCATED_DEPTH = 32;

/**
 * A JSON syntax scan that records positions and repeated keys. Iterative, with an explicit
 * stack, because JSON.parse accepts nesting far deeper than a recursive scan could follow.
 */
function scanJson(text: string): JsonScan {
  // `path` is undefined below LOCATED_DEPTH: nothing there is located or checked for duplicates.
  type Frame =
    | { kind: "object"; path: string | undefined; keys: Set<string>; key: string }
    | { kind: "array"; path: string | undefined; index: number };
  const locations = new Map<string, number>();
  const duplicates: JsonScan["duplicates"] = [];
  const stack: Frame[] = [];
  const n = text.length;
  let i = 0;

  const skipSpace = () => {
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      i++;
    }
  };
  /** Scans a string starting at `i` (a quote); returns its raw text. */
  const scanString = (): string => {
    const start = i++;
    while (i < n) {
      const c = text.charCodeAt(i);
      if (c === 0x22) return text.slice(start, ++i);
      if (c < 0x20) throw new JsonSyntax(i);
      if (c === 0x5c) {
        const e = text[i + 1];
        if (e !== undefined && '"\\/bfnrt'.includes(e)) i += 2;
        else if (e === "u" && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6;
        else throw new JsonSyntax(i);
      } else i++;
    }
    throw new JsonSyntax(n);
  };
  const scanScalar = () => {
    const c = text[i];
    if (c === '"') return void scanString();
    for (const lit of ["true", "false", "null"]) if (text.startsWith(lit, i)) return void (i += lit.length);
    JSON_NUMBER.lastIndex = i;
    if (JSON_NUMBER.exec(text) === null) throw new JsonSyntax(i);
    i = JSON_NUMBER.lastIndex;
  };

  try {
    let state: "value" | "key" | "after" = "value";
    for (;;) {
      skipSpace();
      const top = stack[stack.length - 1];
      if (state === "value") {
        let path: string | undefined = "";
        if (top) {
          const tracked = top.path !== undefined && stack.length < LOCATED_DEPTH;
          path = tracked ? joinPath(top.path!, top.kind === "object" ? top.key : top.index) : undefined;
        }
        if (path !== undefined && top?.kind !== "object") locations.set(path, i); // members: at their key
        const c = text[i];
        if (c === "{" || c === "[") {
          i++;
          stack.push(
            c === "{" ? { kind: "object", path, keys: new Set(), key: "" } : { kind: "array", path, index: 0 },
          );
          skipSpace();
          if (text[i] === (c === "{" ? "}" : "]")) {
            i++;
            stack.pop();
            state = "after";
          } else state = c === "{" ? "key" : "value";
        } else {
          scanScalar();
          state = "after";
        }
      } else if (state === "key") {
        if (top?.kind !== "object" || text[i] !== '"') throw new JsonSyntax(i);
        const start = i;
        const raw = scanString();
        if (top.path !== undefined) {
          const key = JSON.parse(raw) as string;
          const path = joinPath(top.path, key);
          if (top.keys.has(key)) duplicates.push({ path, key, offset: start });
          top.keys.add(key);
          top.key = key;
          locations.set(path, start); // the last occurrence, like JSON.parse
        }
        skipSpace();
        if (text[i] !== ":") throw new JsonSyntax(i);
        i++;
        state = "value";
      } else {
        if (!top) {
          if (i < n) throw new JsonSyntax(i);
          return { locations, duplicates };
        }
        const c = text[i];
        if (c === ",") {
          i++;
          if (top.kind === "array") top.index++;
          state = top.kind === "object" ? "key" : "value";
        } else if (c === (top.kind === "object" ? "}" : "]")) {
          i++;
          stack.pop();
        } else throw new JsonSyntax(i);
      }
    }
  } catch (e) {
    if (e instanceof JsonSyntax) return { errorAt: e.at, locations, duplicates };
    throw e;
  }
}

// ---- modules ----

/**
 * An AesmError, possibly from another copy of diagnostics.ts: tsImport evaluates each model
 * file in a fresh module namespace, so `instanceof` fails for errors thrown by its defineModel.
 */
function asAesmError(e: unknown): AesmError | undefined {
  if (e instanceof AesmError) return e;
  if (typeof e !== "object" || e === null || (e as Error).name !== "AesmError") return undefined;
  const diagnostics = (e as { diagnostics?: unknown }).diagnostics;
  if (!Array.isArray(diagnostics) || diagnostics.length === 0) return undefined;
  const exitCode = (e as { exitCode?: unknown }).exitCode;
  // Copied field by field: whatever the module threw, what we pass on is well-formed.
  const copy = diagnostics.map((x: unknown): Diagnostic => {
    const d = (typeof x === "object" && x !== null ? x : {}) as Record<string, unknown>;
    const str = (v: unknown) => (typeof v === "string" ? v : undefined);
    const int = (v: unknown) => (Number.isInteger(v) ? (v as number) : undefined);
    const [file, line, column] = [str(d.file), int(d.line), int(d.column)];
    return {
      code: str(d.code) ?? "AESM1002",
      path: str(d.path) ?? "",
      message: str(d.message) ?? String(x),
      ...(file !== undefined ? { file } : {}),
      ...(line !== undefined ? { line } : {}),
      ...(column !== undefined ? { column } : {}),
    };
  });
  return new AesmError(copy, typeof exitCode === "number" ? exitCode : 2);
}

/** A non-null, non-array object: what a model export must at least be. */
function isModelLike(x: unknown): boolean {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

async function loadModule(abs: string, file: string): Promise<ModelSpec> {
  const located = async (err: AesmError): Promise<AesmError> =>
    new AesmError(attribute(err.diagnostics, file, await moduleLocator(abs, file)), err.exitCode);

  let ns: Record<string, unknown>;
  try {
    ns = (await tsImport(pathToFileURL(abs).href, import.meta.url)) as Record<string, unknown>;
  } catch (e) {
    const err = asAesmError(e);
    if (err) throw await located(err);
    // A user's exception or a syntax error: its message, never our stack.
    throw new AesmError(syntaxErrorDiagnostic(e, abs, file) ?? {
      code: "AESM1002",
      path: "",
      message: `failed to load: ${messageOf(e)}`,
      file,
    });
  }

  // Outside an ESM package tsx compiles the file as CommonJS; Node then hands back
  // `module.exports` as `default`, marked by esbuild's (non-enumerable) `__esModule`.
  const d = ns.default;
  const interop = isModelLike(d) && Object.getOwnPropertyDescriptor(d, "__esModule")?.value === true;
  const exports = interop ? (d as Record<string, unknown>) : ns;
  const value = [exports.default, exports.model].find(isModelLike);
  if (value === undefined)
    throw userError("AESM1003", "", "no model exported: export default defineModel({...})", file);
  try {
    return parseModel(value);
  } catch (e) {
    const err = asAesmError(e);
    if (err) throw await located(err);
    // Hostile exports (throwing getters, proxies) surface as a load failure.
    throw userError("AESM1002", "", `failed to load: ${messageOf(e)}`, file);
  }
}

/**
 * tsx reports a syntax error as an esbuild TransformError whose message reads
 * `Transform failed with 1 error:\n<file>:<line>:<col0>: ERROR: <text>`: keep the text and, when
 * the error is in the model file itself, its position.
 */
function syntaxErrorDiagnostic(e: unknown, abs: string, file: string): Diagnostic | undefined {
  if (!(e instanceof Error) || e.name !== "TransformError") return undefined;
  const m = /^(.+?):(\d+):(\d+): ERROR: (.+)$/m.exec(e.message);
  if (!m) return undefined;
  const [, where, line, col, text] = m as unknown as [string, string, string, string, string];
  const column = Number(col) + 1;
  return resolve(where) === abs
    ? { code: "AESM1002", path: "", message: `failed to load: ${text}`, file, line: Number(line), column }
    : { code: "AESM1002", path: "", message: `failed to load: ${where}:${line}:${column}: ${text}`, file };
}

/**
 * Locates diagnostic paths in a model module's source by walking the object literal given to
 * `defineModel` (or exported as default / `model`), stepping into builder calls' arguments.
 * Loads the TypeScript parser only when there is something to locate.
 */
async function moduleLocator(abs: string, file: string): Promise<Locate | undefined> {
  let text: string;
  try {
    text = await readFile(abs, "utf8");
  } catch {
    return undefined;
  }
  // ts-morph's copy of TypeScript: the type check loads it anyway, and one compiler is enough.
  const { ts } = await import("ts-morph");
  const sf = ts.createSourceFile(file, text, ts.ScriptTarget.Latest, true);
  type Node = import("ts-morph").ts.Node;

  /** Top-level `const name = …` initialisers, so `expert: sharedExpert` can be followed. */
  const consts = new Map<string, Node>();
  for (const st of sf.statements)
    if (ts.isVariableStatement(st))
      for (const d of st.declarationList.declarations)
        if (ts.isIdentifier(d.name) && d.initializer) consts.set(d.name.text, d.initializer);

  /** Through parentheses, `as`, `satisfies`, `!` and (a few hops of) constant references. */
  const unwrap = (node: Node): Node => {
    for (let hops = 0; hops < 8; hops++) {
      if (
        ts.isParenthesizedExpression(node) ||
        ts.isAsExpression(node) ||
        ts.isSatisfiesExpression(node) ||
        ts.isNonNullExpression(node)
      )
        node = node.expression;
      else if (ts.isIdentifier(node) && consts.has(node.text)) node = consts.get(node.text)!;
      else break;
    }
    return node;
  };
  const calleeName = (call: import("ts-morph").ts.CallExpression): string | undefined => {
    const c = call.expression;
    return ts.isIdentifier(c) ? c.text : ts.isPropertyAccessExpression(c) ? c.name.text : undefined;
  };

  // Which argument of a builder holds a field: under the field's own name, the argument is the
  // field's value (`dense(dim)`); under "*", the field is a key of that argument's object literal.
  const BUILDER_FIELDS = new Map<string, Map<string, number>>([
    ["defineModel", new Map([["*", 0]])],
    ["categorical", new Map([["*", 0]])],
    ["dense", new Map([["dim", 0]])],
    ["mlp", new Map([["units", 0], ["*", 1]])],
    ["gate", new Map([["*", 0]])],
    ["aesm", new Map([["*", 0]])],
    ["topK", new Map([["k", 0]])],
    ["fixed", new Map([["*", 0]])],
  ]);

  /** One path step from `node`; returns the child and the node to report (a property, an item). */
  const step = (node: Node, seg: string | number): { value: Node; anchor: Node } | undefined => {
    node = unwrap(node);
    if (ts.isObjectLiteralExpression(node)) {
      for (const prop of node.properties) {
        const key = prop.name;
        const plainKey = key && (ts.isIdentifier(key) || ts.isStringLiteral(key) || ts.isNumericLiteral(key));
        if (!plainKey || key.text !== String(seg)) continue;
        if (ts.isPropertyAssignment(prop)) return { value: prop.initializer, anchor: prop };
        if (ts.isShorthandPropertyAssignment(prop)) return { value: prop.name, anchor: prop };
      }
      return undefined;
    }
    if (ts.isArrayLiteralExpression(node) && typeof seg === "number") {
      const item = node.elements[seg];
      return item && !ts.isSpreadElement(item) ? { value: item, anchor: item } : undefined;
    }
    if (ts.isCallExpression(node)) {
      const fields = BUILDER_FIELDS.get(calleeName(node) ?? "");
      const direct = fields?.get(String(seg));
      const where = direct ?? fields?.get("*");
      const arg = where === undefined ? undefined : node.arguments[where];
      if (!arg) return undefined;
      return direct !== undefined ? { value: arg, anchor: arg } : step(arg, seg);
    }
    return undefined;
  };

  const root = findModelRoot(ts, sf, unwrap, calleeName);
  if (!root) return undefined;
  return (path) => {
    let node = root;
    let anchor = root;
    for (const seg of splitPath(path)) {
      const next = step(node, seg);
      if (!next) break;
      [node, anchor] = [next.value, next.anchor];
    }
    const { line, character } = sf.getLineAndCharacterOfPosition(anchor.getStart(sf));
    return { line: line + 1, column: character + 1 };
  };
}

/** The model expression: the default export, else `export const model`, else the first defineModel call. */
function findModelRoot(
  ts: typeof import("ts-morph").ts,
  sf: import("ts-morph").ts.SourceFile,
  unwrap: (n: import("ts-morph").ts.Node) => import("ts-morph").ts.Node,
  calleeName: (c: import("ts-morph").ts.CallExpression) => string | undefined,
): import("ts-morph").ts.Node | undefined {
  let found: import("ts-morph").ts.Node | undefined;
  for (const st of sf.statements) {
    if (ts.isExportAssignment(st) && !st.isExportEquals) found ??= st.expression;
    if (ts.isVariableStatement(st) && st.modifiers?.some((m) => m.kind === ts.SyntaxKind.ExportKeyword))
      for (const d of st.declarationList.declarations)
        if (ts.isIdentifier(d.name) && d.name.text === "model" && d.initializer) found ??= d.initializer;
  }
  if (!found) {
    const visit = (n: import("ts-morph").ts.Node): void => {
      if (found) return;
      if (ts.isCallExpression(n) && calleeName(n) === "defineModel") found = n;
      else ts.forEachChild(n, visit);
    };
    visit(sf);
  }
  return found && unwrap(found);
}

// ---- weights that do not fit: back to the model part that declared the tensor ----

/**
 * Codes of validateWeights (src/weights/validate.ts) about whether a tensor fits the model
 * (missing, extra, shape, dtype). Bad values — NaN, Inf, a negative running_var — are the
 * checkpoint's fault, so they keep naming the weights file.
 */
const WEIGHTS_FIT_CODES = new Set(["AESM2101", "AESM2102", "AESM2103", "AESM2106"]);

/**
 * The model path that declares a canonical tensor (MODEL.md §6), for pointing a weights error
 * at the model file: `scenario_layers.page.0.experts.3.…` → `scenarios.page.experts` when the
 * tensor is missing or unexpected (the expert count or structure disagrees), `scenarios.page.expert`
 * when it is there but misshapen (the expert MLP declares its shape). Undefined for names
 * that are no part of the model.
 */
export function modelPathOfTensor(spec: ModelSpec, tensor: string, code = ""): string | undefined {
  const s = tensor.split(".");
  const countOrStructure = code === "AESM2101" || code === "AESM2102";
  /** `<i>.<experts|gates>.<e>.…` of a mixture layer declared at `base`; `gatesFrom` declares how many gates. */
  const mixture = (base: string, rest: string[], layers: number, experts: number, gates: number, gatesFrom: string): string => {
    const i = Number(rest[0]);
    if (!Number.isInteger(i)) return base;
    if (i >= layers) return joinPath(base, "layers");
    const [part, index] = [rest[1], Number(rest[2])];
    if (part === "experts") return joinPath(base, index >= experts || countOrStructure ? "experts" : "expert");
    if (part === "gates") return index >= gates ? gatesFrom : joinPath(base, "gate");
    return base;
  };
  switch (s[0]) {
    case "features":
      return spec.features.some((f) => f.name === s[1]) ? joinPath("features", s[1]!) : "features";
    case "scenarios":
      return spec.scenarios.some((l) => l.name === s[1]) ? joinPath("scenarios", s[1]!) : "scenarios";
    case "tasks":
      return spec.taskLayers ? "taskLayers.dim" : "tasks";
    case "scenario_layers": {
      const lvl = spec.scenarios.find((l) => l.name === s[1]);
      if (!lvl) return "scenarios";
      const base = joinPath("scenarios", lvl.name);
      return mixture(base, s.slice(2), lvl.layers, lvl.experts, lvl.values.length, joinPath(base, "values"));
    }
    case "task_layers": {
      const tl = spec.taskLayers;
      if (!tl) return "tasks";
      // One gate per task: a gate beyond them means the tasks differ.
      return mixture("taskLayers", s.slice(1), tl.layers, tl.experts, spec.tasks.length, "tasks");
    }
    case "towers":
      return spec.tasks.some((t) => t.name === s[1]) ? joinPath(joinPath("tasks", s[1]!), "tower") : "tasks";
    default:
      return undefined;
  }
}

/**
 * A weights error (from loadWeights / validateWeights) with each tensor diagnostic pointing at
 * the line of the model file that declared the tensor's part; the weights file stays in the message.
 * Diagnostics that are about the weights file itself (its format) are kept as they are.
 */
export async function locateWeightsError(err: AesmError, model: LoadedModel): Promise<AesmError> {
  const diagnostics = await Promise.all(
    err.diagnostics.map(async (d): Promise<Diagnostic> => {
      if (!WEIGHTS_FIT_CODES.has(d.code)) return d;
      const part = modelPathOfTensor(model.spec, d.path, d.code);
      const pos = part === undefined ? undefined : await model.locate(part);
      if (!pos) return d;
      const weightsFile = d.file !== undefined && d.file !== model.file ? ` (in ${d.file})` : "";
      return { ...d, message: `${d.message}${weightsFile}`, file: model.file, ...pos };
    }),
  );
  return new AesmError(diagnostics, err.exitCode);
}
