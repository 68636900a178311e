// The compile job as a library call: spec + weights → lower → verify → pass pipeline →
// verify → ONNX written atomically. The CLI's `compile` is a thin layer over this.

import { type ExternalDataOptions, writeOnnx } from "./backends/onnx/index.ts";
import { type InputBatch, batchToFeeds, selectionOutputName } from "./core/batch.ts";
import { userError } from "./core/diagnostics.ts";
import type { Tensor } from "./core/tensor.ts";
import { toModelInput } from "./dsl/index.ts";
import type { ModelSpec } from "./dsl/spec.ts";
import type { Graph } from "./ir/graph.ts";
import { verifyGraph } from "./ir/verify.ts";
import { lowerModel } from "./lower/index.ts";
import { generateInputs } from "./parity/inputs.ts";
import { type CalibrationReport, type HeldOutReport, calibrate, checkHeldOut, formatCalibrationReport } from "./passes/calibrate.ts";
import type { Pass, PassOptions } from "./passes/pass.ts";
import { type OptLevel, type PassStat, type VerifyEachOptions, passById, passesForLevel, runPipeline } from "./passes/pipeline.ts";
import { toFp16 } from "./passes/to-fp16.ts";
import { evaluateReference } from "./reference/index.ts";
import { AESM_VERSION } from "./version.ts";
import type { Weights } from "./weights/layout.ts";

/** What `--verify-each` compares on: generated rows, and how far consecutive stages may differ. */
export interface VerifyEachConfig {
  /** Sample rows (default 64). */
  rows?: number;
  /** Seed of the generated rows (default 0). */
  seed?: number;
  /** Largest absolute difference allowed between consecutive stages' outputs (default 1e-5, MODEL.md's fp32 parity atol). */
  atol?: number;
  /** A row whose reference selection margin is below this may flip its selection between stages (default 1e-4, parity's near-tie threshold). */
  nearTie?: number;
}

export interface CompileOptions {
  /** ONNX opset, 13–21 (default 17). */
  opset?: number;
  /** Expose each layer's mixing weights as `select:<layer>` outputs (default true). */
  selectionOutputs?: boolean;
  /** Optimisation level (default 2); not used when `passes` is given. */
  optLevel?: OptLevel;
  /** Exactly these passes, in order: ids, or Pass objects (how tests inject a pass). */
  passes?: readonly (string | Pass)[];
  /** Options every pass sees (near-tie rewrites, sparse dispatch, calibrated pruning). */
  passOptions?: PassOptions;
  /** After every pass: the IR verifier, and interpreter outputs against the previous stage. */
  verifyEach?: boolean | VerifyEachConfig;
  /**
   * Calibration rows (`--calibrate`): prune-calibrated removes the experts these rows never use.
   * Opt-in and lossy off the calibration distribution: checked on held-out rows and reported.
   */
  calibrationRows?: InputBatch;
  /** Pass ids after which to hand the printed IR to `print`. */
  printAfter?: readonly string[];
  print?: (passId: string, text: string) => void;
  /**
   * compileToFile: keep initialisers of `threshold` bytes or more in one data file beside the
   * model (ONNX external data). Used automatically past protobuf's 2 GiB limit.
   */
  externalData?: ExternalDataOptions;
  /**
   * "fp16": after the pipeline, the to-fp16 pass (weights and data-path arithmetic in float16;
   * gates and selection in float32; inputs and outputs float32). Default "fp32".
   */
  precision?: "fp32" | "fp16";
}

const SELECTION_PREFIX = selectionOutputName("");

export const VERIFY_EACH_DEFAULTS: Required<VerifyEachConfig> = { rows: 64, seed: 0, atol: 1e-5, nearTie: 1e-4 };

/**
 * verify-each across to-fp16, at least: a probability drifts by a few 1e-3 through ~10 layers of
 * half rounding (1e-2 is 20 half ULPs at 0.5, far below a misplaced cast's error), and gates read
 * half activations, so selections flip on margins up to ~1e-3.
 */
export const VERIFY_EACH_FP16: Pick<VerifyEachConfig, "atol" | "nearTie"> = { atol: 1e-2, nearTie: 1e-2 };

/** The passes `options` asks for: the explicit list, else the level's (default -O2). Unknown ids throw AESM1901. */
export function resolvePasses(options: Pick<CompileOptions, "optLevel" | "passes">): Pass[] {
  if (options.passes) return options.passes.map((p) => (typeof p === "string" ? passById(p) : p));
  return passesForLevel(options.optLevel ?? 2);
}

/** Lower a validated spec and its weights to a verified IR graph carrying aesm metadata (the -O0 graph). */
export function lowerToGraph(spec: ModelSpec, weights: Weights, options: Pick<CompileOptions, "selectionOutputs"> = {}): Graph {
  const graph = lowerModel(spec, weights, { selectionOutputs: options.selectionOutputs ?? true });
  verifyGraph(graph, "lowering");
  graph.metadata["aesm.version"] = AESM_VERSION;
  graph.metadata["aesm.model"] = JSON.stringify(toModelInput(spec));
  return graph;
}

/** What verify-each runs on: generated rows, and the reference's selection margins on them. */
export interface VerifySample {
  batch: InputBatch;
  /** Per row, the smallest reference selection margin over every layer (Infinity without a boundary). */
  margin: Float64Array;
  /** Per layer path, the reference's selected set A per row ([B, E] flags). */
  selected: Map<string, { experts: number; flags: Uint8Array }>;
}

/**
 * Parity's generated rows (every scenario combination first; edge, out-of-range and extreme
 * inputs included), with the reference's selection margins and sets on them.
 */
export function verifySample(spec: ModelSpec, weights: Weights, config: VerifyEachConfig = {}): VerifySample {
  const { rows, seed } = { ...VERIFY_EACH_DEFAULTS, ...config };
  const batch = generateInputs(spec, { rows, seed });
  const { layers } = evaluateReference(spec, weights, batch);
  const margin = new Float64Array(rows).fill(Infinity);
  for (const l of layers) for (let r = 0; r < rows; r++) margin[r] = Math.min(margin[r]!, l.margin[r]!);
  return { batch, margin, selected: new Map(layers.map((l) => [l.path, { experts: l.experts, flags: l.selected }])) };
}

/**
 * Rows excused between two stages:
 * - a near-tie row (reference margin below `nearTie`) whose selection changed at some layer, as
 *   the `select:` outputs show (weights moved by more than `atol`: a flipped set, or under mask
 *   "reference" a flipped specific set that only moves the weight). Such a flip is a legitimate
 *   effect of float32 reassociation (DESIGN.md: near-ties are reported apart from errors), and one
 *   flipped row would otherwise read as a broken pass. Without selection outputs a flip cannot be
 *   seen, so every near-tie row is excused. Exact ties (one gate: every score equal) have margin 0:
 *   excused only when they flip.
 * - with calibrated pruning, a row whose earlier stage selected a pruned expert: such rows change
 *   by design (prune-calibrated is opt-in and lossy off the calibration rows).
 */
export function excusedRows(sample: VerifySample, nearTie: number, prunedExperts: Record<string, number[]> = {}, atol = VERIFY_EACH_DEFAULTS.atol) {
  return (before: Record<string, Tensor>, after: Record<string, Tensor>): Uint8Array => {
    const rows = sample.margin.length;
    const out = new Uint8Array(rows);
    const selections = Object.keys(before).filter((n) => n.startsWith(SELECTION_PREFIX));
    for (let r = 0; r < rows; r++) {
      if (!(sample.margin[r]! < nearTie)) continue;
      if (!selections.length) {
        out[r] = 1;
        continue;
      }
      for (const name of selections) {
        const a = before[name]!.data as Float32Array;
        const b = after[name]?.data as Float32Array | undefined;
        if (!b || b.length !== a.length) continue;
        const E = a.length / rows;
        for (let e = 0; e < E && !out[r]; e++) if (!(Math.abs(a[r * E + e]! - b[r * E + e]!) <= atol)) out[r] = 1;
      }
    }
    // selected: in the reference's set A (under mask "reference" an expert of A can carry no
    // weight and still shape the others'), or carrying weight in the earlier stage
    for (const [path, experts] of Object.entries(prunedExperts)) {
      const ref = sample.selected.get(path);
      const w = before[selectionOutputName(path)]?.data as Float32Array | undefined;
      for (let r = 0; r < rows; r++)
        if (experts.some((e) => (ref && ref.flags[r * ref.experts + e] === 1) || (w && w[r * (w.length / rows) + e]! > 0))) out[r] = 1;
    }
    return out;
  };
}

export interface CompileResult {
  /** The optimised, verified graph. */
  graph: Graph;
  /** Pass ids in the order they ran. */
  passes: string[];
  /** Per pass: nodes and parameters before and after, time, counters. */
  stats: PassStat[];
  /** With calibration rows: what each layer used, the prune plan, and the held-out check (null with under 10 rows). */
  calibration?: Calibrated;
}

export interface Calibrated {
  report: CalibrationReport;
  prunedExperts: Record<string, number[]>;
  heldOut: HeldOutReport | null;
}

/** Calibration only acts through prune-calibrated: AESM4202 when the pipeline does not run it. */
export function checkCalibrationPipeline(passIds: readonly string[]): void {
  if (!passIds.includes("prune-calibrated"))
    throw userError(
      "AESM4202",
      "--calibrate",
      `calibration prunes experts in pass prune-calibrated, which this pipeline does not run (${passIds.join(", ") || "no passes"})`,
    );
}

/** Fewest calibration rows for a held-out check (80 % calibrate, 20 % checked). */
export const MIN_HELD_OUT_ROWS = 10;

/**
 * The prune plan from calibration rows: a held-out check first (calibrate on the first 80 %,
 * compare the pruned graph with the reference on the rest), then the plan from every row.
 */
export function calibratePruning(spec: ModelSpec, weights: Weights, rows: InputBatch): Calibrated {
  const heldOut = rows.rows >= MIN_HELD_OUT_ROWS ? checkHeldOut(spec, weights, rows) : null;
  const { prunedExperts, report } = calibrate(spec, weights, rows);
  return { report, prunedExperts, heldOut };
}

function verifyEachFor(spec: ModelSpec, weights: Weights, config: Required<VerifyEachConfig>, passOptions: PassOptions): VerifyEachOptions {
  const sample = verifySample(spec, weights, config);
  return { feeds: batchToFeeds(sample.batch, spec), atol: config.atol, excuseRows: excusedRows(sample, config.nearTie, passOptions.prunedExperts, config.atol) };
}

/** Run the pipeline `options` asks for over a lowered graph (mutated in place), then verify the result. */
export function optimizeGraph(graph: Graph, spec: ModelSpec, weights: Weights, options: CompileOptions = {}): CompileResult {
  const passes = resolvePasses(options);
  let passOptions = options.passOptions ?? {};
  let calibration: Calibrated | undefined;
  if (options.calibrationRows) {
    checkCalibrationPipeline(passes.map((p) => p.id));
    calibration = calibratePruning(spec, weights, options.calibrationRows);
    passOptions = { ...passOptions, prunedExperts: calibration.prunedExperts };
  }
  const verify = options.verifyEach ? { ...VERIFY_EACH_DEFAULTS, ...(options.verifyEach === true ? {} : options.verifyEach) } : null;
  let { graph: out, stats } = runPipeline(graph, passes, {
    passOptions,
    ...(verify ? { verifyEach: verifyEachFor(spec, weights, verify, passOptions) } : {}),
    ...(options.printAfter ? { printAfter: [...options.printAfter] } : {}),
    ...(options.print ? { print: options.print } : {}),
  });
  if (passes.length) verifyGraph(out, "the pipeline (--verify-each names the pass that broke it)");
  if (options.precision === "fp16") {
    // last, so that every pass above sees float32; verify-each with half's tolerances
    const half = verify ? { ...verify, atol: Math.max(verify.atol, VERIFY_EACH_FP16.atol!), nearTie: Math.max(verify.nearTie, VERIFY_EACH_FP16.nearTie!) } : null;
    const r = runPipeline(out, [toFp16], {
      passOptions,
      ...(half ? { verifyEach: verifyEachFor(spec, weights, half, passOptions) } : {}),
      ...(options.printAfter ? { printAfter: [...options.printAfter] } : {}),
      ...(options.print ? { print: options.print } : {}),
    });
    out = r.graph;
    stats = [...stats, ...r.stats];
    passes.push(toFp16);
    verifyGraph(out, toFp16.id);
  }
  return { graph: out, passes: passes.map((p) => p.id), stats, ...(calibration ? { calibration } : {}) };
}

/** lower → verify → pipeline → verify. */
export function compileModel(spec: ModelSpec, weights: Weights, options: CompileOptions = {}): CompileResult {
  return optimizeGraph(lowerToGraph(spec, weights, options), spec, weights, options);
}

/** The optimised graph alone (default -O2). */
export function compileGraph(spec: ModelSpec, weights: Weights, options: CompileOptions = {}): Graph {
  return compileModel(spec, weights, options).graph;
}

export interface CompileSummary extends Omit<CompileResult, "graph"> {
  path: string;
  opset: number;
  nodes: number;
  parameters: number;
  bytes: number;
}

/** Compile and write the ONNX atomically: nothing is written unless every stage succeeded. */
export function compileToFile(spec: ModelSpec, weights: Weights, path: string, options: CompileOptions = {}): CompileSummary {
  const { graph, ...result } = compileModel(spec, weights, options);
  const opset = options.opset ?? 17;
  const bytes = writeOnnx(path, graph, {
    opset,
    producerVersion: AESM_VERSION,
    ...(options.externalData ? { externalData: options.externalData } : {}),
  });
  return { path, opset, nodes: graph.nodes.length, parameters: graph.parameterCount(), bytes, ...result };
}

/** `--calibrate`'s report: the plan per layer, then the held-out check. */
export function formatCalibration(c: Calibrated): string {
  let text = formatCalibrationReport(c.report);
  const h = c.heldOut;
  if (!h) return text + `held-out check: skipped (fewer than ${MIN_HELD_OUT_ROWS} rows)\n`;
  text += `held-out check: calibrated on the first ${h.calibrationRows} rows, pruned graph vs reference on the other ${h.heldOutRows}\n`;
  for (const l of h.layers) text += `  ${l.path}: ${l.agreeing} of ${l.rows} rows use the same experts\n`;
  for (const o of h.outputs) text += `  ${o.name}: max |pruned − reference| ${o.maxAbs.toExponential(2)}${o.row >= 0 ? ` (held-out row ${o.row})` : ""}\n`;
  return text;
}

/** `--stats`: one row per pass (nodes and parameters before → after, time, counters), then a total. */
export function formatPassStats(stats: readonly PassStat[]): string {
  const n = (x: number) => x.toLocaleString("en-US");
  const ms = (x: number) => `${x.toFixed(1)} ms`;
  // a cell is text, or a before → after pair whose halves align down the column
  type Cell = string | [string, string];
  const rows: Cell[][] = [["pass", "changed", "nodes", "parameters", "time", "counters"]];
  for (const s of stats)
    rows.push([
      s.id,
      s.changed ? "yes" : "no",
      [n(s.nodesBefore), n(s.nodesAfter)],
      [n(s.paramsBefore), n(s.paramsAfter)],
      ms(s.ms),
      Object.entries(s.counters)
        .filter(([, v]) => v !== 0)
        .map(([k, v]) => `${k} ${n(v)}`)
        .join(", "),
    ]);
  if (stats.length) {
    const first = stats[0]!;
    const last = stats[stats.length - 1]!;
    const total = stats.reduce((t, s) => t + s.ms, 0);
    rows.push(["total", "", [n(first.nodesBefore), n(last.nodesAfter)], [n(first.paramsBefore), n(last.paramsAfter)], ms(total), ""]);
  } else rows.push(["(no passes)", "", "", "", "", ""]);
  const cols = rows[0]!.length;
  const half = (c: number, i: 0 | 1) => Math.max(0, ...rows.map((r) => (Array.isArray(r[c]) ? r[c][i].length : 0)));
  const text = (cell: Cell, c: number) => (Array.isArray(cell) ? `${cell[0].padStart(half(c, 0))} → ${cell[1].padStart(half(c, 1))}` : cell);
  const widths = Array.from({ length: cols }, (_, c) => Math.max(...rows.map((r) => text(r[c]!, c).length)));
  // numbers right-aligned, text left-aligned; the last column is free-form
  const right = [false, false, true, true, true, false];
  return rows
    .map((r) =>
      r
        .map((cell, c) => {
          const t = text(cell, c);
          return c === cols - 1 ? t : right[c] ? t.padStart(widths[c]!) : t.padEnd(widths[c]!);
        })
        .join("  ")
        .trimEnd(),
    )
    .join("\n")
    .concat("\n");
}
