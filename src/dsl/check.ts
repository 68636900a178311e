// Type-checks a TypeScript model file, and the files it imports, before it runs: type errors are
// reported like tsc's (`file:line:col  message`) and nothing is evaluated. Successes are remembered.
//
// Diagnostic code: AESM1100  a type error in the model file or a file it imports (not in aesm, not in node_modules)

import { createHash } from "node:crypto";
import { builtinModules, createRequire } from "node:module";
import { existsSync, mkdirSync, readFileSync, renameSync, statSync, writeFileSync } from "node:fs";
import { dirname, join, relative, resolve, sep } from "node:path";
import { fileURLToPath } from "node:url";
import type { Project, SourceFile, ts as TS } from "ts-morph";
import { type Diagnostic, userError } from "../core/diagnostics.ts";
import { AESM_VERSION } from "../version.ts";

export const TYPE_ERROR_CODE = "AESM1100";

/** Beyond this many type errors the rest are counted in one last line, as a wall of errors helps no one. */
const MAX_REPORTED = 50;

/** This package's root (…/aesm) and its sources: what `"aesm"` resolves to when nothing else does. */
const AESM_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const AESM_ENTRY = join(AESM_ROOT, "src", "index.ts");

export interface TypecheckOptions {
  /**
   * Reuse a recorded success when no file the check read has changed since (default true).
   * The record lives in `node_modules/.cache/aesm/` of the nearest folder above the model that has one.
   */
  cache?: boolean;
}

export interface TypecheckResult {
  /** AESM1100 diagnostics, one per type error; empty when the model type-checks. */
  diagnostics: Diagnostic[];
  /** Whether a recorded success was reused (no compiler was loaded). */
  cached: boolean;
  /** Wall time of the check in milliseconds. */
  ms: number;
}

/**
 * Type-check the model file at `abs` (shown as `file` in messages). Syntax errors are left to the
 * loader, which reports them with esbuild's position; JavaScript files are not checked.
 */
export async function typecheckModel(abs: string, file: string, options: TypecheckOptions = {}): Promise<TypecheckResult> {
  const t0 = performance.now();
  abs = resolve(abs);
  const cacheFile = options.cache === false ? undefined : cachePath(abs);
  if (cacheFile && cacheHit(cacheFile, abs)) return { diagnostics: [], cached: true, ms: performance.now() - t0 };

  let outcome: CheckOutcome;
  try {
    outcome = (await checkerFor(false)).check(abs);
    // @types/node is 2 MB of declarations: loaded only for a model that turns out to use Node's APIs.
    if (outcome.diagnostics.some((d) => needsNodeTypes(d))) outcome = (await checkerFor(true)).check(abs);
  } catch (e) {
    // An unreadable file (permissions, a folder in its place) is the user's to fix, not a crash.
    throw userError("AESM1002", "", `failed to load: cannot type-check: ${e instanceof Error ? e.message.split("\n")[0] : String(e)}`, file);
  }

  const diagnostics = outcome.syntaxErrors ? [] : outcome.diagnostics.map((d) => toDiagnostic(outcome.ts, d, abs, file));
  if (diagnostics.length > MAX_REPORTED) {
    const more = diagnostics.length - MAX_REPORTED;
    diagnostics.length = MAX_REPORTED;
    diagnostics.push({ code: TYPE_ERROR_CODE, path: "", message: `${file}: ${more} more type error(s) not shown` });
  }
  if (cacheFile && !outcome.syntaxErrors && diagnostics.length === 0) recordSuccess(cacheFile, abs, outcome.files);
  return { diagnostics, cached: false, ms: performance.now() - t0 };
}

// ---- the compiler ----

/**
 * The repo's compiler options (tsconfig.json), except the module settings: model files run
 * through tsx, which resolves like a bundler (ESM and CommonJS mix, `.ts` extensions allowed).
 */
function compilerOptions(ts: typeof TS, typeRoots: string[] | undefined): TS.CompilerOptions {
  return {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.Preserve,
    moduleResolution: ts.ModuleResolutionKind.Bundler,
    strict: true,
    noEmit: true,
    allowImportingTsExtensions: true,
    esModuleInterop: true,
    skipLibCheck: true,
    resolveJsonModule: true,
    lib: ["lib.es2022.d.ts"],
    types: typeRoots ? ["node"] : [],
    ...(typeRoots ? { typeRoots } : {}),
  };
}

interface CheckOutcome {
  ts: typeof TS;
  diagnostics: TS.Diagnostic[];
  /** Some checked file has syntax errors: the loader reports those. */
  syntaxErrors: boolean;
  /** Every file the program read, for the success record. */
  files: string[];
}

interface Checker {
  check(abs: string): CheckOutcome;
}

/** One Project per setting, kept for the process: lib files and aesm's sources are parsed and bound once. */
const checkers = new Map<boolean, Promise<Checker>>();

function checkerFor(nodeTypes: boolean): Promise<Checker> {
  let c = checkers.get(nodeTypes);
  if (!c) {
    c = createChecker(nodeTypes);
    checkers.set(nodeTypes, c);
    c.catch(() => checkers.delete(nodeTypes));
  }
  return c;
}

/** Folders of aesm sources: ours, and any copy a model resolved `"aesm"` to. */
const aesmSourceDirs = new Set<string>([join(AESM_ROOT, "src") + sep]);

const isUnder = (path: string, dirs: Iterable<string>) => [...dirs].some((d) => path.startsWith(d));
const isBare = (specifier: string) => !specifier.startsWith(".") && !specifier.startsWith("/") && !/^[A-Za-z]:[\\/]/.test(specifier);
const inNodeModules = (path: string) => path.includes(`${sep}node_modules${sep}`) || path.includes("/node_modules/");

async function createChecker(nodeTypes: boolean): Promise<Checker> {
  const { Project, ts } = await import("ts-morph");
  const typeRoots = nodeTypes ? typeRootsNear(AESM_ROOT) : undefined;
  const options = compilerOptions(ts, typeRoots);
  const project: Project = new Project({
    compilerOptions: options,
    skipAddingFilesFromTsConfig: true,
    resolutionHost: (host, getOptions) => {
      const cache = ts.createModuleResolutionCache(process.cwd(), (f) => f, getOptions());
      const resolveOne = (name: string, from: string): TS.ResolvedModuleFull | undefined => {
        // aesm's own sources never need their third-party typings (onnx, ts-morph, Node) to type a
        // model: leaving those unresolved keeps megabytes of declarations out of every check.
        if (isBare(name) && isUnder(resolve(from), aesmSourceDirs) && name !== "aesm") return undefined;
        const found = ts.resolveModuleName(name, from, getOptions(), host, cache).resolvedModule;
        if (name === "aesm" || name.startsWith("aesm/")) {
          // A model outside any project that installs aesm still checks against the aesm running it.
          const resolved = found ?? (name === "aesm" ? { resolvedFileName: AESM_ENTRY, extension: ts.Extension.Ts } : undefined);
          if (resolved) aesmSourceDirs.add(packageSourceDir(resolved.resolvedFileName));
          return resolved as TS.ResolvedModuleFull | undefined;
        }
        return found;
      };
      return { resolveModuleNames: (names, from) => names.map((n) => resolveOne(n, from)) };
    },
  });

  return {
    check(abs: string): CheckOutcome {
      // Files may have changed since the last check in this process (tests rewrite them).
      for (const sf of project.getSourceFiles()) if (!sf.isInNodeModules()) sf.refreshFromFileSystemSync();
      const model = project.getSourceFile(abs) ?? project.addSourceFileAtPath(abs);
      project.resolveSourceFileDependencies();
      const program = project.getProgram().compilerObject;

      const diagnostics: TS.Diagnostic[] = [];
      let syntaxErrors = false;
      for (const sf of ownFiles(model)) {
        const node = program.getSourceFile(sf.getFilePath());
        if (!node) continue;
        if (program.getSyntacticDiagnostics(node).length > 0) syntaxErrors = true;
        else diagnostics.push(...program.getSemanticDiagnostics(node));
      }
      const files = program
        .getSourceFiles()
        .filter((f) => !program.isSourceFileDefaultLibrary(f))
        .map((f) => resolve(f.fileName));
      return { ts, diagnostics, syntaxErrors, files };
    },
  };
}

/** The model file and what it imports by relative path, transitively: the files a user wrote. */
function ownFiles(model: SourceFile): SourceFile[] {
  const out = [model];
  const seen = new Set([model.getFilePath()]);
  for (let i = 0; i < out.length; i++)
    for (const dep of out[i]!.getReferencedSourceFiles()) {
      const path = dep.getFilePath();
      if (seen.has(path) || dep.isInNodeModules() || dep.isDeclarationFile() || isUnder(resolve(path), aesmSourceDirs)) continue;
      seen.add(path);
      out.push(dep);
    }
  return out;
}

/** The `src/` folder of the package that holds `file` (its nearest folder with a package.json). */
function packageSourceDir(file: string): string {
  for (let d = dirname(file); d !== dirname(d); d = dirname(d))
    if (existsSync(join(d, "package.json"))) return join(d, "src") + sep;
  return dirname(file) + sep;
}

/** `node_modules/@types` folders from `dir` upward (where an installed aesm's @types/node is hoisted). */
function typeRootsNear(dir: string): string[] {
  const out: string[] = [];
  for (let d = dir; ; d = dirname(d)) {
    const p = join(d, "node_modules", "@types");
    if (existsSync(p)) out.push(p);
    if (d === dirname(d)) return out;
  }
}

const NODE_BUILTINS = new Set(builtinModules);

/** A diagnostic that only says Node's typings are missing: `process`, `Buffer`, `node:fs`… */
function needsNodeTypes(d: TS.Diagnostic): boolean {
  if (d.code === 2580 || d.code === 2591) return true; // "Do you need to install type definitions for node?"
  if (d.code !== 2307 && d.code !== 2792) return false; // "Cannot find module '…'"
  const text = typeof d.messageText === "string" ? d.messageText : d.messageText.messageText;
  const m = /module '([^']+)'/.exec(text);
  return m !== null && (m[1]!.startsWith("node:") || NODE_BUILTINS.has(m[1]!));
}

/** `file:line:col  message`, as tsc prints it, with the message's chain on one line. */
function toDiagnostic(ts: typeof TS, d: TS.Diagnostic, abs: string, file: string): Diagnostic {
  const text = ts.flattenDiagnosticMessageText(d.messageText, "\n").replace(/\s*\n\s*/g, " ");
  if (!d.file || d.start === undefined) return { code: TYPE_ERROR_CODE, path: "", message: `${file}  ${text}` };
  const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
  return { code: TYPE_ERROR_CODE, path: "", message: `${shownPath(resolve(d.file.fileName), abs, file)}:${line + 1}:${character + 1}  ${text}` };
}

/** A file the model imports, named the way the caller named the model (relative stays relative). */
function shownPath(path: string, abs: string, file: string): string {
  if (path === abs) return file;
  return join(dirname(file), relative(dirname(abs), path));
}

// ---- the success record ----
// One JSON file of entries { model → fingerprint of every file the program read }. A check is
// skipped only when the toolchain and every such file are unchanged; failures are never recorded.

const CACHE_ENTRIES = 64;

interface CacheEntry {
  toolchain: string;
  /** [path, size, mtimeMs, sha1 of the contents or "" for files in node_modules] */
  files: [string, number, number, string][];
}

/** What a recorded success depends on besides the files: aesm and its compiler (ts-morph's TypeScript). */
function toolchainKey(): string {
  let compiler = "unknown";
  try {
    const main = createRequire(import.meta.url).resolve("ts-morph");
    compiler = (JSON.parse(readFileSync(join(dirname(main), "..", "package.json"), "utf8")) as { version?: string }).version ?? compiler;
  } catch {
    // Without a version the key still holds aesm's, which pins ts-morph's range.
  }
  return `aesm ${AESM_VERSION}; ts-morph ${compiler}; check v1`;
}

function cachePath(abs: string): string | undefined {
  for (let d = dirname(abs); d !== dirname(d); d = dirname(d))
    if (existsSync(join(d, "node_modules"))) return join(d, "node_modules", ".cache", "aesm", "typecheck.json");
  return undefined;
}

function readCache(path: string): Record<string, CacheEntry> {
  try {
    const x = JSON.parse(readFileSync(path, "utf8")) as unknown;
    return typeof x === "object" && x !== null && !Array.isArray(x) ? (x as Record<string, CacheEntry>) : {};
  } catch {
    return {};
  }
}

/** The fingerprint of one file; user files are hashed, since size and mtime can collide within a test. */
function fingerprint(path: string): [string, number, number, string] | undefined {
  try {
    const st = statSync(path);
    const hash = inNodeModules(path) ? "" : createHash("sha1").update(readFileSync(path)).digest("hex");
    return [path, st.size, st.mtimeMs, hash];
  } catch {
    return undefined;
  }
}

function cacheHit(cacheFile: string, abs: string): boolean {
  const entry = readCache(cacheFile)[abs];
  if (!entry || entry.toolchain !== toolchainKey() || !Array.isArray(entry.files)) return false;
  return entry.files.every((f) => {
    const now = fingerprint(f[0]);
    return now !== undefined && now[1] === f[1] && now[2] === f[2] && now[3] === f[3];
  });
}

function recordSuccess(cacheFile: string, abs: string, files: string[]): void {
  try {
    const fps = files.map(fingerprint).filter((f) => f !== undefined);
    if (fps.length !== files.length) return;
    const all = readCache(cacheFile);
    delete all[abs];
    const kept = Object.entries(all).slice(-(CACHE_ENTRIES - 1));
    const next = Object.fromEntries([...kept, [abs, { toolchain: toolchainKey(), files: fps } satisfies CacheEntry]]);
    mkdirSync(dirname(cacheFile), { recursive: true });
    // Written whole and renamed, so concurrent runs never read half a record.
    const tmp = `${cacheFile}.${process.pid}.${Date.now()}.tmp`;
    writeFileSync(tmp, JSON.stringify(next));
    renameSync(tmp, cacheFile);
  } catch {
    // A read-only folder only means the next run checks again.
  }
}
