// The parity run: the float64 reference (and a float32 evaluation of it, for the RMSE check)
// against the compiled ONNX on each onnxruntime provider, graph optimisations off and on;
// each run compared to the reference and runs compared to each other, with a verdict.

import { type InputBatch, selectionLayerPaths, selectionOutputName } from "../core/batch.ts";
import { userError } from "../core/diagnostics.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import { type LayerTrace, evaluateReference } from "../reference/index.ts";
import type { Weights } from "../weights/layout.ts";
import {
  DISAGREEMENT,
  EXCUSED_FLOAT32,
  EXCUSED_NEAR_TIE,
  FLOAT32_FLIP,
  NEAR_TIE_FLIP,
  type OutputMetrics,
  type SelectionDiff,
  type SelectionMetrics,
  compareOutput,
  compareSelection,
  exceedsTolerance,
  float32Limited,
  rmseCheck,
  sameFiniteValues,
  selectionDiff,
} from "./compare.ts";
import { perturbed } from "./conditioning.ts";
import { headBatch, int64ToNumbers, scenarioCoverage, scenarioOfRow, sliceBatch } from "./inputs.ts";
import { type ProgressSink, silentProgress } from "./progress.ts";
import { PRECISION_DEFAULTS, type ParityPrecision, type Tolerance } from "./tolerance.ts";

export type Provider = "cpu" | "cuda" | "tensorrt";
export const PROVIDERS: readonly Provider[] = ["cpu", "cuda", "tensorrt"];
/** onnxruntime graph optimisation level: a mismatch only with "all" points at onnxruntime's fusions. */
export type Optimization = "disabled" | "all";
export const OPTIMIZATIONS: readonly Optimization[] = ["disabled", "all"];

/** What parity needs of a runtime session (src/runtime's ModelSession satisfies it). */
export interface ParitySession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  run(batch: InputBatch): Promise<Record<string, Float32Array>>;
  close(): Promise<void> | void;
}

export type OpenSession = (path: string, opts: { provider: Provider; optimization: Optimization; threads?: number }) => Promise<ParitySession>;

export const DEFAULT_NEAR_TIE = 1e-4;
/**
 * Rows (the first ones) that the float32 reference evaluates for the RMSE check, by default: it
 * costs as much per row as the float64 reference, and an RMSE over 10,000 rows is a stable estimate.
 */
export const DEFAULT_FP32_ROWS = 10_000;
/** Rows per reference call and per onnxruntime call: bounds memory and paces the progress bar. */
const CHUNK_ROWS = 8192;
/** At most this many failing rows are re-evaluated in float32 to tell float32's own misses apart. */
export const MAX_SUSPECT_ROWS = 10_000;

function headOutputs(outputs: Record<string, Float64Array>, rows: number): Record<string, Float64Array> {
  return Object.fromEntries(Object.entries(outputs).map(([k, v]) => [k, v.slice(0, rows)]));
}

export interface ParityOptions {
  inputs: InputBatch;
  providers: readonly Provider[];
  /** Default: both, "disabled" then "all". */
  optimizations?: readonly Optimization[];
  /** Per output name. */
  tolerances: Record<string, Tolerance>;
  precision?: ParityPrecision;
  /** Reference selection margin below which a flipped selection is a near-tie. */
  nearTie?: number;
  /** Default: the precision's (2 for fp32). */
  rmseMultiplier?: number;
  /** Rows (from the first) that the float32 reference evaluates; 0 skips the RMSE check. */
  fp32Rows?: number;
  /** Worst rows kept per output (default 5). */
  worst?: number;
  chunkRows?: number;
  /**
   * onnxruntime intra-op threads per session; default: onnxruntime's choice (one per physical
   * core, each pinned to its core, so a run confined with taskset still uses every core).
   */
  threads?: number;
  /** Session factory; default: src/runtime's openSession. */
  openSession?: OpenSession;
  progress?: ProgressSink;
  /** Keep the raw outputs in the result (for --save-outputs). */
  keepValues?: boolean;
}

export interface RunInfo {
  /** "<provider>:<optimization>", e.g. "cpu:all". */
  id: string;
  provider: Provider;
  optimization: Optimization;
  /** Wall time of the onnxruntime calls. */
  seconds: number;
  /** Whether the ONNX exposes the layers' mixing weights (`select:<layer>` outputs). */
  selectionOutputs: boolean;
}

export interface Comparison {
  /** "reference ↔ cpu:all", "cpu:disabled ↔ cpu:all", "cpu:all ↔ cuda:all". */
  id: string;
  /** reference: a run against the float64 reference (gating); optimization: one provider, optimisations off vs on; provider: two providers. */
  kind: "reference" | "optimization" | "provider";
  baseline: string;
  candidate: string;
  /** Whether this comparison decides the verdict (only the reference comparisons do). */
  gating: boolean;
  pass: boolean;
  outputs: OutputMetrics[];
  selections: SelectionMetrics[];
  /** Layers not compared: one side does not expose its selection. */
  selectionsUnavailable: string[];
}

/** How often each expert is selected, per scenario value (scenario layers) or per task (task layers). */
export interface SelectionFrequency {
  /** "scenario_layers.page.0" or "task_layers.0". */
  layer: string;
  /** The level name, or "task". */
  by: string;
  labels: string[];
  experts: number;
  rowsPerLabel: number[];
  /** [label][expert]: fraction of the label's rows that select the expert. */
  reference: number[][];
  /** The same for each run that exposes its selection, by run id. */
  runs: Record<string, number[][]>;
}

export interface ParityResult {
  model: string;
  rows: number;
  outputs: string[];
  levels: { name: string; values: string[] }[];
  coverage: Record<string, Record<string, number>>;
  precision: ParityPrecision;
  tolerances: Record<string, Tolerance>;
  nearTie: number;
  rmseMultiplier: number;
  fp32Rows: number;
  /** Rows the float32 reference evaluated: the first `evaluated` rows, plus `suspects` failing rows beyond them. */
  float32Rows: { evaluated: number; suspects: number };
  runs: RunInfo[];
  comparisons: Comparison[];
  frequencies: SelectionFrequency[];
  pass: boolean;
  /** One line per failed check of a gating comparison. */
  problems: string[];
  /** Where a mismatch comes from, judged from which runs pass. */
  attribution: string[];
  timings: { referenceSeconds: number; fp32Seconds: number; onnxSeconds: number; compareSeconds: number; totalSeconds: number };
  /** Raw outputs, when `keepValues`: the reference, the float32 reference (its rows), and each run's outputs by run id. */
  values?: { reference: Record<string, Float64Array>; fp32: Record<string, Float64Array>; runs: Record<string, Record<string, Float32Array>> };
}

interface RunOutputs {
  info: RunInfo;
  values: Record<string, Float32Array>;
}

async function defaultOpenSession(path: string, opts: { provider: Provider; optimization: Optimization; threads?: number }): Promise<ParitySession> {
  // loaded on first use, so the harness (and its tests) do not load onnxruntime unless they run it
  const runtime = await import("../runtime/index.ts");
  return runtime.openSession(path, opts);
}

/** The ONNX must take exactly the model's inputs and give every task output (MODEL.md §8). */
export function checkInterface(spec: ModelSpec, inputs: readonly string[], outputs: readonly string[], file: string): void {
  const want = [...spec.features.map((f) => f.name), ...spec.scenarios.map((l) => l.name)];
  const missing = want.filter((n) => !inputs.includes(n));
  const extra = inputs.filter((n) => !want.includes(n));
  if (missing.length || extra.length)
    throw userError(
      "AESM3006",
      "",
      `ONNX inputs do not match the model: ${[missing.length ? `missing ${missing.join(", ")}` : "", extra.length ? `unexpected ${extra.join(", ")}` : ""]
        .filter(Boolean)
        .join("; ")}`,
      file,
    );
  const missingOut = spec.tasks.map((t) => t.name).filter((n) => !outputs.includes(n));
  if (missingOut.length) throw userError("AESM3006", "", `ONNX outputs do not match the model: missing ${missingOut.join(", ")}`, file);
}

/** The reference on rows [0, rows) in chunks, traces concatenated as one evaluation would give them. */
function evaluateChunked(
  spec: ModelSpec,
  weights: Weights,
  batch: InputBatch,
  precision: "float64" | "float32",
  chunk: number,
  onRows: (n: number) => void,
): { outputs: Record<string, Float64Array>; layers: LayerTrace[] } {
  const B = batch.rows;
  if (B <= chunk) {
    const r = evaluateReference(spec, weights, batch, { precision });
    onRows(B);
    return r;
  }
  const outputs: Record<string, Float64Array> = {};
  for (const t of spec.tasks) outputs[t.name] = new Float64Array(B);
  let layers: LayerTrace[] = [];
  for (let r0 = 0; r0 < B; r0 += chunk) {
    const r1 = Math.min(B, r0 + chunk);
    const part = evaluateReference(spec, weights, sliceBatch(batch, r0, r1), { precision });
    if (r0 === 0)
      layers = part.layers.map((l) => ({
        path: l.path,
        experts: l.experts,
        weights: new Float64Array(B * l.experts),
        selected: new Uint8Array(B * l.experts),
        margin: new Float64Array(B),
      }));
    for (const t of spec.tasks) outputs[t.name]!.set(part.outputs[t.name]!, r0);
    part.layers.forEach((l, i) => {
      const dst = layers[i]!;
      dst.weights.set(l.weights, r0 * l.experts);
      dst.selected.set(l.selected, r0 * l.experts);
      dst.margin.set(l.margin, r0);
    });
    onRows(r1 - r0);
  }
  return { outputs, layers };
}

/** Copies of rows [start, end): onnxruntime gets arrays that own their buffer. */
function copyRows(batch: InputBatch, start: number, end: number): InputBatch {
  const view = sliceBatch(batch, start, end);
  const out: InputBatch = { rows: view.rows, features: {}, scenarios: {} };
  for (const [k, v] of Object.entries(view.features)) out.features[k] = v.slice();
  for (const [k, v] of Object.entries(view.scenarios)) out.scenarios[k] = v.slice();
  return out;
}

async function runSession(session: ParitySession, batch: InputBatch, chunk: number, onRows: (n: number) => void): Promise<Record<string, Float32Array>> {
  const B = batch.rows;
  const out: Record<string, Float32Array> = {};
  for (let r0 = 0; r0 < B; r0 += chunk) {
    const r1 = Math.min(B, r0 + chunk);
    const part = await session.run(r0 === 0 && r1 === B ? batch : copyRows(batch, r0, r1));
    for (const [name, v] of Object.entries(part)) {
      if (r0 === 0) out[name] = new Float32Array((v.length / (r1 - r0)) * B);
      out[name]!.set(v, (v.length / (r1 - r0)) * r0);
    }
    onRows(r1 - r0);
  }
  return out;
}

/** Whether layer `path` feeds task `task` (scenario layers feed every task). */
function feedsTask(path: string, task: string): boolean {
  return !path.startsWith("task_layers.") || path.endsWith(`.${task}`);
}

/** Rows `idx` of a batch, copied into a new batch (for re-evaluating a few rows). */
export function gatherRows(batch: InputBatch, idx: readonly number[]): InputBatch {
  const out: InputBatch = { rows: idx.length, features: {}, scenarios: {} };
  for (const [name, data] of Object.entries(batch.features)) {
    const width = batch.rows ? data.length / batch.rows : 0;
    const dst = new (data.constructor as new (n: number) => typeof data)(idx.length * width);
    idx.forEach((r, i) => dst.set(data.subarray(r * width, (r + 1) * width) as never, i * width));
    out.features[name] = dst;
  }
  for (const [name, data] of Object.entries(batch.scenarios)) out.scenarios[name] = BigInt64Array.from(idx, (r) => data[r]!);
  return out;
}

/**
 * What a float32 evaluation of the reference says about rows it has seen: its outputs, and per
 * layer whether its selected set differs from float64's. A candidate that misses on such a row
 * misses where float32 arithmetic itself cannot reproduce the float64 answer.
 */
interface Float32Evidence {
  known: Uint8Array;
  outputs: Record<string, Float64Array>;
  selectionDiffers: Map<string, Uint8Array>;
  /** The float64 reference one ulp away (conditioning.ts), on failing rows; NaN elsewhere. */
  perturbed: Record<string, Float64Array>;
}

function newEvidence(spec: ModelSpec, traces: LayerTrace[], rows: number): Float32Evidence {
  return {
    known: new Uint8Array(rows),
    outputs: Object.fromEntries(spec.tasks.map((t) => [t.name, new Float64Array(rows).fill(NaN)])),
    selectionDiffers: new Map(traces.map((l) => [l.path, new Uint8Array(rows)])),
    perturbed: Object.fromEntries(spec.tasks.map((t) => [t.name, new Float64Array(rows).fill(NaN)])),
  };
}

/** Rows where some run's output is beyond tolerance (bounded like the suspects). */
function failingRows(spec: ModelSpec, ref: { outputs: Record<string, Float64Array> }, runs: RunOutputs[], rows: number, tolerances: Record<string, Tolerance>): number[] {
  const mark = new Uint8Array(rows);
  for (const run of runs) for (const t of spec.tasks) markBeyondTolerance(ref.outputs[t.name]!, run.values[t.name]!, tolerances[t.name]!, rows, mark);
  const out: number[] = [];
  for (let r = 0; r < rows && out.length < MAX_SUSPECT_ROWS; r++) if (mark[r]) out.push(r);
  return out;
}

/** Record a float32 evaluation of rows `idx` (row i of `f32` is batch row idx[i]). */
function addEvidence(ev: Float32Evidence, ref: { layers: LayerTrace[] }, f32: { outputs: Record<string, Float64Array>; layers: LayerTrace[] }, idx: (i: number) => number, n: number): void {
  for (let i = 0; i < n; i++) ev.known[idx(i)] = 1;
  for (const [name, v] of Object.entries(f32.outputs)) {
    const dst = ev.outputs[name]!;
    for (let i = 0; i < n; i++) dst[idx(i)] = v[i]!;
  }
  f32.layers.forEach((l, li) => {
    const base = ref.layers[li]!;
    const E = l.experts;
    const dst = ev.selectionDiffers.get(l.path)!;
    for (let i = 0; i < n; i++) {
      const r = idx(i);
      for (let e = 0; e < E; e++)
        if (l.selected[i * E + e] !== base.selected[r * E + e]) {
          dst[r] = 1;
          break;
        }
    }
  });
}

/**
 * Rows a gating comparison fails on (a clear-margin selection difference, or an output beyond
 * tolerance) that the float32 reference has not evaluated: these get evaluated in float32 too,
 * so that misses float32 arithmetic itself makes are told apart.
 */
function suspectRows(
  spec: ModelSpec,
  ref: { outputs: Record<string, Float64Array> },
  runs: RunOutputs[],
  flips: Map<string, Uint8Array>[],
  ev: Float32Evidence,
  tolerances: Record<string, Tolerance>,
): number[] {
  const rows = ev.known.length;
  const mark = new Uint8Array(rows);
  for (const run of runs)
    for (const t of spec.tasks) {
      const a = ref.outputs[t.name]!;
      const b = run.values[t.name]!;
      const tol = tolerances[t.name]!;
      markBeyondTolerance(a, b, tol, rows, mark);
    }
  for (const layers of flips) for (const d of layers.values()) markWhere(d, DISAGREEMENT, rows, mark);
  const out: number[] = [];
  for (let r = 0; r < rows; r++) if (mark[r] && !ev.known[r]) out.push(r);
  return out;
}

interface CompareContext {
  tolerances: Record<string, Tolerance>;
  nearTie: number;
  worst: number;
  evidence: Float32Evidence;
  /** Rows [0, rows) with a float32 reference evaluation for the RMSE check; null when off. */
  rmse: { rows: number; multiplier: number } | null;
  /**
   * selectionDiffs by "<baseline> <layer>", with the candidate weights each was computed for: a
   * diff depends on the two sides only, so judging a comparison again after the float32
   * arbitration reuses it, and so does a run whose weights equal another's (as they often do
   * with and without onnxruntime's graph optimisations).
   */
  diffs: Map<string, { candidate: Float32Array; diff: SelectionDiff }[]>;
}

// The row loops of the comparisons, each in a small function of its own: compiled whole and
// early, they run at full speed from the first of the few calls a parity run makes.

/** mark[r] = 1 where b[r] fails the tolerance against a[r]. */
function markBeyondTolerance(a: Float64Array, b: Float32Array, tol: Tolerance, rows: number, mark: Uint8Array): void {
  for (let r = 0; r < rows; r++) if (exceedsTolerance(a[r]!, b[r]!, tol)) mark[r] = 1;
}

/** mark[r] = 1 where src[r] = value. */
function markWhere(src: Uint8Array, value: number, rows: number, mark: Uint8Array): void {
  for (let r = 0; r < rows; r++) if (src[r] === value) mark[r] = 1;
}

/** Rows this layer flipped on a near-tie or where float32 flips, unless an upstream layer already did. */
function inheritFlips(differs: Uint8Array, rows: number, upstream: Uint8Array): void {
  for (let r = 0; r < rows; r++) {
    const d = differs[r]!;
    if ((d === NEAR_TIE_FLIP || d === FLOAT32_FLIP) && upstream[r] === 0) upstream[r] = d;
  }
}

/** Excuse the rows a feeding layer flipped on a near-tie (first) or where float32 flips too. */
function excuseFlips(differs: Uint8Array, rows: number, excused: Uint8Array): void {
  for (let r = 0; r < rows; r++) {
    const d = differs[r]!;
    if (d === NEAR_TIE_FLIP) excused[r] = EXCUSED_NEAR_TIE;
    else if (d === FLOAT32_FLIP && excused[r] === 0) excused[r] = EXCUSED_FLOAT32;
  }
}

/** Where a layer's selection is not visible: excuse its near-tie rows. */
function excuseNearTies(margin: Float64Array, nearTie: number, rows: number, excused: Uint8Array): void {
  for (let r = 0; r < rows; r++) if (margin[r]! < nearTie) excused[r] = EXCUSED_NEAR_TIE;
}

/**
 * Excuse the failing elements that are float32-limited: among rows the float32 reference
 * evaluated, where it strays beyond a tenth of the tolerance, or where the reference one ulp
 * away (perturbed; NaN where not evaluated) does.
 */
function excuseFloat32Limited(
  ref: Float64Array,
  got: Float32Array,
  f32: Float64Array,
  known: Uint8Array,
  perturbed: Float64Array,
  tol: Tolerance,
  rows: number,
  excused: Uint8Array,
): void {
  for (let r = 0; r < rows; r++) {
    if (excused[r] !== 0 || !exceedsTolerance(ref[r]!, got[r]!, tol)) continue;
    const p = perturbed[r]!;
    if ((known[r] === 1 && float32Limited(ref[r]!, f32[r]!, tol)) || (!Number.isNaN(p) && float32Limited(ref[r]!, p, tol))) excused[r] = EXCUSED_FLOAT32;
  }
}

/** The RMSE check leaves out near-tie rows and rows where float32 selects differently. */
function excludeFromRmse(margin: Float64Array, nearTie: number, float32Differs: Uint8Array, rows: number, exclude: Uint8Array): void {
  for (let r = 0; r < rows; r++) if (margin[r]! < nearTie || float32Differs[r] !== 0) exclude[r] = 1;
}

interface SelectionComparison {
  selections: SelectionMetrics[];
  unavailable: string[];
  /** Per layer, how each row's selection differs (compareSelection's `differs`). */
  flips: Map<string, Uint8Array>;
}

/**
 * The expert layers of `candidate` against `baseline` (the reference, when `baselineRun` is
 * null), in order, each knowing which rows already flipped upstream for an excusable reason.
 */
function compareSelections(
  spec: ModelSpec,
  batch: InputBatch,
  ref: { layers: LayerTrace[] },
  baselineRun: RunOutputs | null,
  candidate: RunOutputs,
  ctx: CompareContext,
): SelectionComparison {
  const rows = batch.rows;
  const ev = ctx.evidence;
  const selections: SelectionMetrics[] = [];
  const unavailable: string[] = [];
  const flips = new Map<string, Uint8Array>();
  const baselineId = baselineRun ? baselineRun.info.id : "reference";
  // rows that flipped for an excusable reason upstream: the scenario stream, then one per task stream
  const scenarioUpstream = new Uint8Array(rows);
  const taskUpstream = new Map(spec.tasks.map((t) => [t.name, null as Uint8Array | null]));
  const upstreamOf = (path: string): Uint8Array => {
    if (!path.startsWith("task_layers.")) return scenarioUpstream;
    const task = path.slice(path.lastIndexOf(".") + 1);
    let m = taskUpstream.get(task);
    if (!m) taskUpstream.set(task, (m = scenarioUpstream.slice()));
    return m;
  };
  for (const trace of ref.layers) {
    const name = selectionOutputName(trace.path);
    const cw = candidate.values[name];
    const bw = baselineRun ? baselineRun.values[name] : trace.weights;
    const upstream = upstreamOf(trace.path);
    if (!cw || !bw) {
      unavailable.push(trace.path);
      continue;
    }
    const key = `${baselineId} ${trace.path}`;
    const bs = baselineRun ? undefined : trace.selected;
    const known = ctx.diffs.get(key) ?? [];
    ctx.diffs.set(key, known);
    let diff = known.find((k) => k.candidate === cw || sameFiniteValues(k.candidate, cw, cw.length))?.diff;
    if (!diff) known.push({ candidate: cw, diff: (diff = selectionDiff(bw, bs, cw, rows, trace.experts)) });
    const { differs, ...metrics } = compareSelection({
      upstream: upstream.slice(),
      layer: trace.path,
      experts: trace.experts,
      rows,
      baselineWeights: bw,
      ...(bs ? { baselineSelected: bs } : {}),
      candidateWeights: cw,
      margin: trace.margin,
      nearTie: ctx.nearTie,
      float32Differs: ev.selectionDiffers.get(trace.path)!,
      diff,
    });
    for (const ex of metrics.examples) ex.scenario = scenarioOfRow(spec, batch, ex.row);
    selections.push(metrics);
    flips.set(trace.path, differs);
    inheritFlips(differs, rows, upstream);
  }
  return { selections, unavailable, flips };
}

/**
 * Compare `candidate` with `baseline` (the reference, when `baselineRun` is null). Per output,
 * rows are excused (reported apart, not judged) when a layer feeding it flipped on a near-tie,
 * or flipped where the float32 reference flips too, or (against the reference) when the element
 * fails and is float32-limited (the float32 reference strays beyond a tenth of the tolerance
 * there: float32Limited); where a layer's selection is not visible, its near-tie rows are
 * excused, since a flip there cannot be seen.
 */
function compareRuns(
  spec: ModelSpec,
  batch: InputBatch,
  ref: { outputs: Record<string, Float64Array>; layers: LayerTrace[] },
  baselineRun: RunOutputs | null,
  candidate: RunOutputs,
  kind: Comparison["kind"],
  ctx: CompareContext,
): Comparison {
  const rows = batch.rows;
  const ev = ctx.evidence;
  const { selections, unavailable, flips } = compareSelections(spec, batch, ref, baselineRun, candidate, ctx);

  const outputs = spec.tasks.map((t) => {
    const tol = ctx.tolerances[t.name]!;
    const baseline = baselineRun ? baselineRun.values[t.name]! : ref.outputs[t.name]!;
    const got = candidate.values[t.name]!;
    const excused = new Uint8Array(rows);
    for (const trace of ref.layers) {
      if (!feedsTask(trace.path, t.name)) continue;
      const d = flips.get(trace.path);
      if (d) excuseFlips(d, rows, excused);
      else excuseNearTies(trace.margin, ctx.nearTie, rows, excused);
    }
    if (!baselineRun) excuseFloat32Limited(ref.outputs[t.name]!, got, ev.outputs[t.name]!, ev.known, ev.perturbed[t.name]!, tol, rows, excused);
    const m = compareOutput({ name: t.name, reference: baseline, candidate: got, tolerance: tol, excused, worst: ctx.worst });
    for (const w of m.worst) w.scenario = scenarioOfRow(spec, batch, w.row);
    if (!baselineRun && ctx.rmse) {
      // near-tie rows, excused rows and rows where float32 selects differently say nothing about noise
      const exclude = excused.slice();
      for (const trace of ref.layers) {
        if (!feedsTask(trace.path, t.name)) continue;
        const d = ev.selectionDiffers.get(trace.path)!;
        excludeFromRmse(trace.margin, ctx.nearTie, d, ctx.rmse.rows, exclude);
      }
      m.rmse = rmseCheck(ref.outputs[t.name]!, got, ev.outputs[t.name]!, ctx.rmse.rows, tol, ctx.rmse.multiplier, exclude);
      m.pass = m.pass && m.rmse.pass;
    }
    return m;
  });
  const pass = outputs.every((o) => o.pass) && selections.every((s) => s.disagree === 0);
  const baselineId = baselineRun ? baselineRun.info.id : "reference";
  const comparison: Comparison = {
    id: `${baselineId} ↔ ${candidate.info.id}`,
    kind,
    baseline: baselineId,
    candidate: candidate.info.id,
    gating: kind === "reference",
    pass,
    outputs,
    selections,
    selectionsUnavailable: unavailable,
  };
  return comparison;
}

/**
 * How many rows of each label select each expert, [label][expert]: `picked` is a selected set
 * (Uint8Array, 1 = selected) or mixing weights (an expert is selected where w > 0); `label[r]`
 * is row r's label, or all rows count for label 0 when null.
 */
function countSelections(picked: Uint8Array | Float32Array, rows: number, E: number, label: Int32Array | null, labels: number): Int32Array {
  const counts = new Int32Array(labels * E);
  if (picked instanceof Uint8Array) countSelected(picked, rows, E, label, counts);
  else countPositive(picked, rows, E, label, counts);
  return counts;
}

function countSelected(selected: Uint8Array, rows: number, E: number, label: Int32Array | null, counts: Int32Array): void {
  for (let r = 0; r < rows; r++) {
    const base = label === null ? 0 : label[r]! * E;
    for (let e = 0; e < E; e++) counts[base + e]! += selected[r * E + e]!;
  }
}

function countPositive(weights: Float32Array, rows: number, E: number, label: Int32Array | null, counts: Int32Array): void {
  for (let r = 0; r < rows; r++) {
    const base = label === null ? 0 : label[r]! * E;
    // a comparison added as 0 or 1 (JS coerces true to 1): no branch on the data
    for (let e = 0; e < E; e++) counts[base + e]! += (weights[r * E + e]! > 0) as unknown as number;
  }
}

/** Whether two runs gave the same outputs, bit for bit (every output, the same names). */
function sameOutputs(a: RunOutputs, b: RunOutputs): boolean {
  const names = Object.keys(a.values);
  if (names.length !== Object.keys(b.values).length) return false;
  return names.every((name) => {
    const x = a.values[name]!;
    const y = b.values[name];
    return y !== undefined && Buffer.from(x.buffer, x.byteOffset, x.byteLength).equals(Buffer.from(y.buffer, y.byteOffset, y.byteLength));
  });
}

/** A reference comparison of a twin run, as the comparison of `run`: a copy with its id. */
function relabel(c: Comparison, run: RunOutputs): Comparison {
  const copy = structuredClone(c);
  copy.id = `${c.baseline} ↔ ${run.info.id}`;
  copy.candidate = run.info.id;
  return copy;
}

/**
 * Selection frequency tables, grouping task-layer traces (one per task) into one table per
 * layer; a run with a twin (its outputs equal an earlier run's) shares the twin's tables.
 */
function selectionFrequencies(spec: ModelSpec, batch: InputBatch, traces: LayerTrace[], runs: RunOutputs[], twinOf: (RunOutputs | null)[]): SelectionFrequency[] {
  const out: SelectionFrequency[] = [];
  const rows = batch.rows;
  const fractions = (counts: Int32Array, E: number, label: number, of: number) =>
    Array.from({ length: E }, (_, e) => (of ? counts[label * E + e]! / of : 0));
  for (const lvl of spec.scenarios) {
    const S = lvl.values.length;
    const idx = batch.scenarios[lvl.name]!;
    const label = Int32Array.from(int64ToNumbers(idx));
    const perLabel = new Array<number>(S).fill(0);
    for (let r = 0; r < rows; r++) perLabel[label[r]!]!++;
    const table = (counts: Int32Array, E: number) => perLabel.map((n, l) => fractions(counts, E, l, n));
    for (let i = 0; i < lvl.layers; i++) {
      const path = `scenario_layers.${lvl.name}.${i}`;
      const trace = traces.find((t) => t.path === path)!;
      const E = trace.experts;
      const freq: SelectionFrequency = {
        layer: path,
        by: lvl.name,
        labels: [...lvl.values],
        experts: E,
        rowsPerLabel: perLabel,
        reference: table(countSelections(trace.selected, rows, E, label, S), E),
        runs: {},
      };
      runs.forEach((run, j) => {
        const w = run.values[selectionOutputName(path)];
        const twin = twinOf[j];
        if (w) freq.runs[run.info.id] = twin ? freq.runs[twin.info.id]! : table(countSelections(w, rows, E, label, S), E);
      });
      out.push(freq);
    }
  }
  if (spec.taskLayers)
    for (let i = 0; i < spec.taskLayers.layers; i++) {
      const per = spec.tasks.map((t) => traces.find((x) => x.path === `task_layers.${i}.${t.name}`)!);
      const E = per[0]!.experts;
      const freq: SelectionFrequency = {
        layer: `task_layers.${i}`,
        by: "task",
        labels: spec.tasks.map((t) => t.name),
        experts: E,
        rowsPerLabel: spec.tasks.map(() => rows),
        reference: per.map((trace) => fractions(countSelections(trace.selected, rows, E, null, 1), E, 0, rows)),
        runs: {},
      };
      runs.forEach((run, j) => {
        const ws = spec.tasks.map((t) => run.values[selectionOutputName(`task_layers.${i}.${t.name}`)]);
        const twin = twinOf[j];
        if (ws.every((w) => w))
          freq.runs[run.info.id] = twin ? freq.runs[twin.info.id]! : ws.map((w) => fractions(countSelections(w!, rows, E, null, 1), E, 0, rows));
      });
      out.push(freq);
    }
  return out;
}

function sci(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  return x === 0 ? "0" : x.toExponential(2);
}

/** One line per failed check of the gating comparisons. */
function problemsOf(comparisons: Comparison[]): string[] {
  const out: string[] = [];
  for (const c of comparisons) {
    if (!c.gating) continue;
    for (const o of c.outputs) {
      if (o.failures > 0) {
        const w = o.worst[0];
        out.push(
          `${c.candidate}: ${o.name}: ${o.failures} of ${o.checked} value(s) beyond tolerance (atol ${o.tolerance.atol}, rtol ${o.tolerance.rtol})` +
            (w ? `; worst row ${w.row}: |err| ${sci(w.abs)}` : ""),
        );
      }
      if (o.rmse && !o.rmse.pass)
        out.push(
          `${c.candidate}: ${o.name}: rmse ${sci(o.rmse.candidate)} > ${o.rmse.multiplier}×fp32 rmse ${sci(o.rmse.fp32)} + ${sci(o.rmse.floor)} = ${sci(o.rmse.bound)}`,
        );
    }
    for (const s of c.selections)
      if (s.disagree > 0)
        out.push(`${c.candidate}: ${s.layer}: ${s.disagree} row(s) select different experts (first row ${s.examples[0]?.row ?? "?"})`);
  }
  return out;
}

/** Which part a mismatch points at: onnxruntime's fusions, one provider's kernels, or the compiled graph. */
function attributionOf(runs: RunInfo[], comparisons: Comparison[]): string[] {
  const passOf = new Map(comparisons.filter((c) => c.gating).map((c) => [c.candidate, c.pass]));
  const providers = [...new Set(runs.map((r) => r.provider))];
  const out: string[] = [];
  const failsEverywhere: Provider[] = [];
  const passes: Provider[] = [];
  for (const p of providers) {
    const d = passOf.get(`${p}:disabled`);
    const a = passOf.get(`${p}:all`);
    if (d === true && a === false)
      out.push(`${p}: passes with graph optimisations disabled, fails with all: onnxruntime's graph optimisations (fusions) on ${p}`);
    else if (d === false && a === true) out.push(`${p}: fails only with graph optimisations disabled: onnxruntime's unfused ${p} kernels`);
    else if (d !== true && a !== true) failsEverywhere.push(p);
    else passes.push(p);
  }
  if (failsEverywhere.length && passes.length)
    for (const p of failsEverywhere) out.push(`${p}: fails at every optimisation level while ${passes.join(", ")} passes: the ${p} provider's kernels`);
  else if (failsEverywhere.length && failsEverywhere.length === providers.length)
    out.push("every run fails, with and without onnxruntime's optimisations: the compiled graph (aesm's lowering or passes) differs from the model");
  return out;
}

/**
 * Run parity: open every session first (a missing provider fails before any work), evaluate the
 * reference, run each session, compare. `onnxPath` is opened by path so external data resolves.
 */
export async function runParity(spec: ModelSpec, weights: Weights, onnxPath: string, opts: ParityOptions): Promise<ParityResult> {
  const t0 = performance.now();
  const batch = opts.inputs;
  const rows = batch.rows;
  const precision = opts.precision ?? "fp32";
  const nearTie = opts.nearTie ?? DEFAULT_NEAR_TIE;
  const multiplier = opts.rmseMultiplier ?? PRECISION_DEFAULTS[precision].rmseMultiplier;
  const fp32Rows = Math.min(rows, opts.fp32Rows ?? DEFAULT_FP32_ROWS);
  const chunk = opts.chunkRows ?? CHUNK_ROWS;
  const worst = opts.worst ?? 5;
  const optimizations = opts.optimizations ?? OPTIMIZATIONS;
  const open = opts.openSession ?? defaultOpenSession;
  const progress = opts.progress ?? silentProgress;
  const providers = [...new Set(opts.providers)];

  const plan = providers.flatMap((provider) => optimizations.map((optimization) => ({ provider, optimization, id: `${provider}:${optimization}` })));
  const sessions: { id: string; provider: Provider; optimization: Optimization; session: ParitySession }[] = [];
  const runs: RunOutputs[] = [];
  let onnxSeconds = 0;
  let referenceSeconds = 0;
  let fp32Seconds = 0;
  let ref: { outputs: Record<string, Float64Array>; layers: LayerTrace[] };
  let evidence: Float32Evidence;
  try {
    for (const p of plan) {
      const session = await open(onnxPath, { provider: p.provider, optimization: p.optimization, ...(opts.threads !== undefined ? { threads: opts.threads } : {}) });
      sessions.push({ ...p, session });
      checkInterface(spec, session.inputNames, session.outputNames, onnxPath);
    }

    const total = rows + fp32Rows + rows * plan.length;
    let done = 0;
    const step = (label: string) => (n: number) => progress.update((done += n), total, label);

    let t = performance.now();
    ref = evaluateChunked(spec, weights, batch, "float64", chunk, step("reference float64"));
    referenceSeconds = (performance.now() - t) / 1000;
    evidence = newEvidence(spec, ref.layers, rows);
    t = performance.now();
    if (fp32Rows > 0) {
      const f32 = evaluateChunked(spec, weights, headBatch(batch, fp32Rows), "float32", chunk, step("reference float32"));
      addEvidence(evidence, ref, f32, (i) => i, fp32Rows);
    }
    fp32Seconds = (performance.now() - t) / 1000;

    for (const s of sessions) {
      t = performance.now();
      const values = await runSession(s.session, batch, chunk, step(`onnxruntime ${s.id}`));
      const seconds = (performance.now() - t) / 1000;
      onnxSeconds += seconds;
      for (const task of spec.tasks)
        if (!values[task.name] || values[task.name]!.length !== rows)
          throw userError("AESM3006", task.name, `onnxruntime (${s.id}) returned no ${rows}-row output "${task.name}"`, onnxPath);
      const selectionOutputs = selectionLayerPaths(spec).every((path) => values[selectionOutputName(path)] !== undefined);
      runs.push({ info: { id: s.id, provider: s.provider, optimization: s.optimization, seconds, selectionOutputs }, values });
    }

  } finally {
    progress.finish();
    for (const s of sessions) await s.session.close();
  }

  const tc = performance.now();
  const tolerances = opts.tolerances;
  const ctx: CompareContext = {
    tolerances,
    nearTie,
    worst,
    evidence,
    rmse: fp32Rows > 0 ? { rows: fp32Rows, multiplier } : null,
    diffs: new Map(),
  };
  // failing rows the float32 reference has not seen: evaluate them in float32 before judging
  // (bounded: a broken model fails on every row, and the verdict does not need them all)
  const gatingFlips = runs.map((run) => compareSelections(spec, batch, ref, null, run, ctx).flips);
  const suspects = suspectRows(spec, ref, runs, gatingFlips, evidence, tolerances).slice(0, MAX_SUSPECT_ROWS);
  let suspectSeconds = 0;
  if (suspects.length) {
    const t = performance.now();
    const f32 = evaluateChunked(spec, weights, gatherRows(batch, suspects), "float32", chunk, () => {});
    addEvidence(evidence, ref, f32, (i) => suspects[i]!, suspects.length);
    suspectSeconds = (performance.now() - t) / 1000;
    fp32Seconds += suspectSeconds;
  }
  // failing rows again in float64, one ulp away: how far rounding alone moves them
  const failing = failingRows(spec, ref, runs, rows, tolerances);
  if (failing.length) {
    const t = performance.now();
    const near = perturbed(spec, weights, gatherRows(batch, failing));
    const moved = evaluateChunked(spec, near.weights, near.batch, "float64", chunk, () => {});
    for (const task of spec.tasks) {
      const dst = evidence.perturbed[task.name]!;
      const src = moved.outputs[task.name]!;
      failing.forEach((r, i) => (dst[r] = src[i]!));
    }
    const seconds = (performance.now() - t) / 1000;
    suspectSeconds += seconds;
    fp32Seconds += seconds;
  }
  // a run whose outputs equal an earlier run's bit for bit is judged as that one was
  const twinOf = runs.map((run, i) => runs.slice(0, i).find((other) => sameOutputs(other, run)) ?? null);
  const comparisons: Comparison[] = [];
  runs.forEach((run, i) => {
    const twin = twinOf[i]!;
    comparisons.push(twin ? relabel(comparisons[runs.indexOf(twin)]!, run) : compareRuns(spec, batch, ref, null, run, "reference", ctx));
  });
  // optimisations off vs on, per provider
  for (const p of providers) {
    const d = runs.find((r) => r.info.id === `${p}:disabled`);
    const a = runs.find((r) => r.info.id === `${p}:all`);
    if (d && a) comparisons.push(compareRuns(spec, batch, ref, d, a, "optimization", ctx));
  }
  // providers against each other, at the last optimisation level given (what would serve)
  const served = optimizations[optimizations.length - 1]!;
  for (let i = 0; i < providers.length; i++)
    for (let j = i + 1; j < providers.length; j++) {
      const a = runs.find((r) => r.info.id === `${providers[i]}:${served}`)!;
      const b = runs.find((r) => r.info.id === `${providers[j]}:${served}`)!;
      comparisons.push(compareRuns(spec, batch, ref, a, b, "provider", ctx));
    }
  const frequencies = selectionFrequencies(spec, batch, ref.layers, runs, twinOf);
  const infos = runs.map((r) => r.info);
  const problems = problemsOf(comparisons);
  const compareSeconds = (performance.now() - tc) / 1000 - suspectSeconds;
  return {
    model: spec.name,
    rows,
    outputs: spec.tasks.map((t) => t.name),
    levels: spec.scenarios.map((l) => ({ name: l.name, values: [...l.values] })),
    coverage: scenarioCoverage(spec, batch),
    precision,
    tolerances,
    nearTie,
    rmseMultiplier: multiplier,
    fp32Rows,
    runs: infos,
    comparisons,
    frequencies,
    pass: comparisons.filter((c) => c.gating).every((c) => c.pass),
    problems,
    attribution: attributionOf(infos, comparisons),
    timings: { referenceSeconds, fp32Seconds, onnxSeconds, compareSeconds, totalSeconds: (performance.now() - t0) / 1000 },
    float32Rows: { evaluated: fp32Rows, suspects: suspects.length },
    ...(opts.keepValues
      ? { values: { reference: ref.outputs, fp32: headOutputs(evidence.outputs, fp32Rows), runs: Object.fromEntries(runs.map((x) => [x.info.id, x.values])) } }
      : {}),
  };
}
