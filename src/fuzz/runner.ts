// The fuzz loop: random cases for a time budget, each checked differentially; a new failure
// is shrunk and saved as a reproducer; failures a known open issue explains are counted apart.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type FuzzCase, caseSpec, randomCase } from "./case.ts";
import { type CaseReport, type Mismatch, type RunCaseOptions, failureSignature, prepareCase, runCase } from "./check.ts";
import { KNOWN_ISSUES, type KnownIssue } from "./known.ts";
import { makeReproducer, saveReproducer } from "./reproducer.ts";
import { shrinkCase } from "./shrink.ts";

/** The seed of the i-th case of a run: distinct per (run seed, i), spread over 32 bits. */
export function caseSeed(runSeed: number, i: number): number {
  let h = (Math.imul(runSeed >>> 0, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b)) >>> 0;
  h = Math.imul(h ^ (h >>> 15), 0x2c1b3c6d) >>> 0;
  return (h ^ (h >>> 13)) >>> 0;
}

/** Mismatches no known issue explains (crashes are never explained: they have no row). */
export function unexplained(c: FuzzCase, mismatches: Mismatch[], known: readonly KnownIssue[]): { rest: Mismatch[]; issues: string[] } {
  if (known.length === 0 || mismatches.every((m) => m.row === undefined)) return { rest: mismatches, issues: [] };
  const p = prepareCase(c);
  const issues: string[] = [];
  let rest = mismatches;
  for (const k of known) {
    const rows = k.explains(p);
    const before = rest.length;
    rest = rest.filter((m) => m.row === undefined || !rows.has(m.row));
    if (rest.length < before) issues.push(k.id);
  }
  return { rest, issues };
}

export interface FuzzRunOptions {
  seconds: number;
  seed: number;
  /** Where reproducers go (fixtures/regressions); none are saved when undefined. */
  saveDir?: string;
  /** Shrink and save at most this many failures per signature (default 2); later ones are counted. */
  maxPerSignature?: number;
  /** Budget of one shrink (default 180 s); `shrink: false` records failures as found (the suite's short run). */
  shrinkMs?: number;
  shrink?: boolean;
  /** Stop after this many cases even if time remains. */
  maxCases?: number;
  known?: readonly KnownIssue[];
  checkFile?: RunCaseOptions["checkFile"];
  /** Run checkFile on every n-th case only (default 1). */
  checkEvery?: number;
  log?: (line: string) => void;
}

export interface FuzzFailure {
  signature: string;
  caseSeed: number;
  first: Mismatch;
  reproducer?: string;
  shrinkSteps?: string[];
}

export interface FuzzSummary {
  seed: number;
  seconds: number;
  cases: number;
  /** Comparisons against the reference: interpreter per level, onnxruntime and readback per level and opset. */
  targets: number;
  rows: number;
  excusedRows: number;
  failures: FuzzFailure[];
  /** Further failures of an already saved signature. */
  repeats: Record<string, number>;
  /** Cases whose every mismatch a known issue explains, by issue id. */
  known: Record<string, number>;
  /** What the generated models covered. */
  coverage: Record<string, number>;
}

function countCoverage(c: FuzzCase, cov: Record<string, number>): void {
  const bump = (k: string) => (cov[k] = (cov[k] ?? 0) + 1);
  const spec = caseSpec(c);
  bump(`levels=${spec.scenarios.length}`);
  bump(`tasks=${spec.tasks.length}`);
  bump(`taskLayers=${spec.taskLayers ? spec.taskLayers.layers : 0}`);
  const layers = [...spec.scenarios, ...(spec.taskLayers ? [spec.taskLayers] : [])];
  for (const l of layers) {
    bump(`policy=${l.select.kind}${l.select.kind === "aesm" ? `/${l.select.mask}` : ""}`);
    bump(`experts=${l.experts <= 4 ? "1-4" : l.experts <= 8 ? "5-8" : "9-32"}`);
    if (l.gate.units.length) bump("gate hidden units");
    if (l.expert.batchNorm) bump("expert batch norm");
    bump(`act=${l.expert.act}`);
  }
  if (c.weights.scale) bump("weights rescaled");
  bump(`ort optimisation=${c.options.ortOptimization}`);
}

/** Fuzz for `seconds` (or `maxCases`); returns what was tried and found. */
export async function runFuzz(opts: FuzzRunOptions): Promise<FuzzSummary> {
  const log = opts.log ?? (() => {});
  const known = opts.known ?? KNOWN_ISSUES;
  const maxPerSignature = opts.maxPerSignature ?? 2;
  const workDir = mkdtempSync(join(tmpdir(), "aesm-fuzz-"));
  const start = performance.now();
  const deadline = start + opts.seconds * 1000;
  const summary: FuzzSummary = {
    seed: opts.seed,
    seconds: 0,
    cases: 0,
    targets: 0,
    rows: 0,
    excusedRows: 0,
    failures: [],
    repeats: {},
    known: {},
    coverage: {},
  };
  const saved = new Map<string, number>();
  let lastLog = start;

  try {
    for (let i = 0; performance.now() < deadline && (opts.maxCases === undefined || i < opts.maxCases); i++) {
      const seed = caseSeed(opts.seed, i);
      const c = randomCase(seed);
      const check = opts.checkFile && i % (opts.checkEvery ?? 1) === 0 ? { checkFile: opts.checkFile } : {};
      let report: CaseReport;
      try {
        report = await runCase(c, { workDir, ...check });
      } catch (e) {
        // The generator made an invalid model: a bug in the fuzzer itself, reported as such.
        report = { ok: false, rows: 0, excusedRows: 0, targets: 0, ms: 0, mismatches: [{ target: "generate", kind: "crash", message: (e as Error).message.split("\n")[0]! }] };
      }
      summary.cases++;
      summary.targets += report.targets;
      summary.rows += report.rows;
      summary.excusedRows += report.excusedRows;
      countCoverage(c, summary.coverage);

      if (!report.ok) {
        const { rest, issues } = unexplained(c, report.mismatches, known);
        if (rest.length === 0) {
          for (const id of issues) summary.known[id] = (summary.known[id] ?? 0) + 1;
        } else {
          const first = rest[0]!;
          const signature = failureSignature(first);
          const n = saved.get(signature) ?? 0;
          if (n >= maxPerSignature) summary.repeats[signature] = (summary.repeats[signature] ?? 0) + 1;
          else {
            saved.set(signature, n + 1);
            log(`case ${i} (seed ${seed}): ${signature}: ${first.target}: ${first.message}`);
            summary.failures.push(
              opts.shrink === false
                ? { signature, caseSeed: seed, first }
                : await shrinkAndSave(c, first, signature, { ...opts, known, workDir, seed, runSeed: opts.seed, log }),
            );
          }
        }
      }
      if (performance.now() - lastLog > 30_000) {
        lastLog = performance.now();
        log(`${((lastLog - start) / 1000).toFixed(0)} s: ${summary.cases} cases, ${summary.failures.length} failures, known ${JSON.stringify(summary.known)}`);
      }
    }
  } finally {
    rmSync(workDir, { recursive: true, force: true });
  }
  summary.seconds = (performance.now() - start) / 1000;
  return summary;
}

/** Shrink a failing case (narrowed to the failing level and opset) and save it. */
export async function shrinkAndSave(
  c: FuzzCase,
  first: Mismatch,
  signature: string,
  o: { saveDir?: string; shrinkMs?: number; known: readonly KnownIssue[]; workDir: string; seed: number; log: (s: string) => void; runSeed?: number; knownId?: string },
): Promise<FuzzFailure> {
  const narrowed = structuredClone(c);
  if (first.level !== undefined) narrowed.options.levels = [first.level];
  narrowed.options.opsets = first.opset !== undefined ? [first.opset] : [];
  let lastFailure: Mismatch[] = [first];
  const fails = async (cand: FuzzCase) => {
    let report: CaseReport;
    try {
      report = await runCase(cand, { workDir: o.workDir, readback: first.target.startsWith("readback") });
    } catch {
      return { failing: false, rows: [] };
    }
    // With knownId, the shrink keeps that known issue's failure; otherwise known ones do not count.
    const pool = o.knownId ? report.mismatches : unexplained(cand, report.mismatches, o.known).rest;
    const same = pool.filter((m) => failureSignature(m) === signature);
    if (same.length) lastFailure = same;
    return { failing: same.length > 0, rows: [...new Set(same.flatMap((m) => (m.row === undefined ? [] : [m.row])))] };
  };
  const start = (await fails(narrowed)).failing ? narrowed : c;
  const shrunk = await shrinkCase(start, { fails, maxMs: o.shrinkMs ?? 180_000, log: o.log });
  await fails(shrunk.c); // refresh lastFailure for the final case
  const failure: FuzzFailure = { signature, caseSeed: o.seed, first, shrinkSteps: shrunk.steps };
  if (o.saveDir) {
    const r = makeReproducer(shrunk.c, lastFailure, signature, { runSeed: o.runSeed ?? 0, caseSeed: o.seed, shrinkSteps: shrunk.steps }, o.knownId);
    failure.reproducer = saveReproducer(o.saveDir, r, o.knownId ? `${o.knownId}.json` : undefined);
    o.log(`  saved ${failure.reproducer} after ${shrunk.attempts} attempts`);
  }
  return failure;
}
