// Bisection to the first pass that breaks parity: apply the pipeline's passes one at a time
// and check each prefix's interpreter outputs against the float64 reference, with the parity
// harness's own comparison (near-ties and float32's own misses excused, never hidden).

import { runGraph } from "./backends/interp/index.ts";
import { type InputBatch, batchToFeeds, selectionLayerPaths, selectionOutputName } from "./core/batch.ts";
import type { ModelSpec } from "./dsl/spec.ts";
import type { Graph } from "./ir/graph.ts";
import { lowerToGraph, resolvePasses } from "./compile.ts";
import {
  DISAGREEMENT,
  EXCUSED_FLOAT32,
  EXCUSED_NEAR_TIE,
  FLOAT32_FLIP,
  NEAR_TIE_FLIP,
  type OutputMetrics,
  SAME,
  type SelectionMetrics,
  compareOutput,
  compareSelection,
  float32Limited,
  relativeError,
} from "./parity/compare.ts";
import { perturbed } from "./parity/conditioning.ts";
import { generateInputs, scenarioOfRow } from "./parity/inputs.ts";
import type { Pass, PassOptions } from "./passes/pass.ts";
import { type BisectResult, type OptLevel, bisectPasses } from "./passes/pipeline.ts";
import { type LayerTrace, evaluateReference } from "./reference/index.ts";
import type { Weights } from "./weights/layout.ts";

export interface BisectOptions {
  /** The passes to bisect, ids or Pass objects (a test injects a faulty pass this way); default: the level's. */
  passes?: readonly (string | Pass)[];
  /** Level whose passes are bisected when `passes` is not given (default 2). */
  optLevel?: OptLevel;
  passOptions?: PassOptions;
  /** Rows to check on; default: `rows` generated rows from `seed`. */
  inputs?: InputBatch;
  /** Generated rows (default 512). */
  rows?: number;
  seed?: number;
  /** Absolute tolerance per task output (default 1e-5, rtol 0: parity's fp32 default). */
  atol?: number;
  /** Reference selection margin below which a flipped selection is a near-tie (default 1e-4). */
  nearTie?: number;
}

export const BISECT_DEFAULTS = { rows: 512, seed: 0, atol: 1e-5, nearTie: 1e-4 } as const;

/**
 * Rows the lowered graph itself misses (in the interpreter's float32, e.g. on ±1000 inputs) are
 * left out of every later check, up to this share of the rows: a pass is judged on the rows the
 * lowering gets right. Beyond it the lowering is wrong and no pass is to blame.
 */
export const MAX_BASELINE_MISS_SHARE = 0.05;

/** The worst mismatch of a check: an output element beyond tolerance, or a layer selecting other experts. */
export type BisectWorst =
  | { kind: "output"; output: string; row: number; reference: number; candidate: number; abs: number; scenario: Record<string, string> }
  | { kind: "selection"; layer: string; row: number; reference: number[]; candidate: number[]; margin: number; scenario: Record<string, string> };

export interface PrefixCheck {
  ok: boolean;
  /** Per row, 1 where an output misses or a layer selects other experts (excused rows never). */
  failingRows: Uint8Array;
  /** One line: the largest error per output when ok, the first problem otherwise. */
  detail: string;
  outputs: OutputMetrics[];
  selections: SelectionMetrics[];
  worst: BisectWorst | null;
}

export interface BisectStepReport {
  /** "(lowered)" for the unoptimised graph, then one pass id per step. */
  pass: string;
  ok: boolean;
  detail: string;
  /** Absent when the pass threw, or the IR verifier rejected its result (see detail). */
  check?: PrefixCheck;
}

export interface BisectReport {
  model: string;
  rows: number;
  passes: string[];
  atol: number;
  nearTie: number;
  /** The first pass after which the check fails; null when none does. */
  culprit: string | null;
  /** The unoptimised graph already fails on more than MAX_BASELINE_MISS_SHARE of the rows: no pass is to blame. */
  baselineFails: boolean;
  /** Rows the lowered graph misses, left out of the passes' checks. */
  baselineMisses: number;
  steps: BisectStepReport[];
  /** The failing step's worst mismatch. */
  worst: BisectWorst | null;
}

/** Float32 evaluation of the reference on the same rows: where float32 itself cannot match float64. */
interface Float32Evidence {
  outputs: Record<string, Float64Array>;
  selectionDiffers: Map<string, Uint8Array>;
  /** The float64 reference one float32 ulp away (parity/conditioning.ts). */
  perturbed: Record<string, Float64Array>;
}

function float32Evidence(spec: ModelSpec, weights: Weights, batch: InputBatch, ref: LayerTrace[]): Float32Evidence {
  const f32 = evaluateReference(spec, weights, batch, { precision: "float32" });
  const selectionDiffers = new Map<string, Uint8Array>();
  f32.layers.forEach((l, i) => {
    const base = ref[i]!;
    const d = new Uint8Array(batch.rows);
    for (let r = 0; r < batch.rows; r++)
      for (let e = 0; e < l.experts; e++)
        if (l.selected[r * l.experts + e] !== base.selected[r * l.experts + e]) {
          d[r] = 1;
          break;
        }
    selectionDiffers.set(l.path, d);
  });
  const near = perturbed(spec, weights, batch);
  return { outputs: f32.outputs, selectionDiffers, perturbed: evaluateReference(spec, near.weights, near.batch).outputs };
}

/** The aesm mask of the layer at `path` (null for other policies). */
function maskOf(spec: ModelSpec, path: string): string | null {
  const [kind, a] = path.split(".");
  const layer = kind === "task_layers" ? spec.taskLayers : spec.scenarios.find((l) => l.name === a);
  return layer && layer.select.kind === "aesm" ? layer.select.mask : null;
}

/** Whether layer `path` feeds task `task` (scenario layers feed every task). */
function feedsTask(path: string, task: string): boolean {
  return !path.startsWith("task_layers.") || path.endsWith(`.${task}`);
}

const sci = (x: number) => (Number.isFinite(x) ? (x === 0 ? "0" : x.toExponential(1)) : String(x));

/**
 * The check of one prefix, as the parity harness judges a run against the reference (its gating
 * comparison, less the RMSE gate): every task output within atol on every row not excused, and
 * no layer selecting other experts with a clear reference margin. Excused rows: a selection flipped
 * on a near-tie, or a failing output that is float32-limited (parity's float32Limited rule, on the
float32 evaluation and on the reference one ulp away); `exclude`
 * adds rows to the latter class (bisect: rows the lowered graph itself misses in float32).
 */
export function prefixChecker(
  spec: ModelSpec,
  weights: Weights,
  batch: InputBatch,
  atol: number,
  nearTie: number,
): (g: Graph, exclude?: Uint8Array) => PrefixCheck {
  const feeds = batchToFeeds(batch, spec);
  const ref = evaluateReference(spec, weights, batch);
  const ev = float32Evidence(spec, weights, batch, ref.layers);
  const rows = batch.rows;
  const tol = { atol, rtol: 0 };
  const referenceMasked = new Set(selectionLayerPaths(spec).filter((path) => maskOf(spec, path) === "reference"));
  return (g: Graph, exclude?: Uint8Array): PrefixCheck => {
    const got = runGraph(g, feeds);
    const failingRows = new Uint8Array(rows);
    const selections: SelectionMetrics[] = [];
    const flips = new Map<string, Uint8Array>();
    // rows whose selection flipped excusably (near-tie, float32) upstream, per stream: the
    // scenario layers feed every later layer, a task layer its own task's later layers
    const upstream = { scenario: new Uint8Array(rows), task: new Map(spec.tasks.map((t) => [t.name, new Uint8Array(rows)])) };
    for (const trace of ref.layers) {
      const task = trace.path.startsWith("task_layers.") ? trace.path.slice(trace.path.lastIndexOf(".") + 1) : null;
      const above = task ? upstream.task.get(task)!.map((x, r) => x | upstream.scenario[r]!) : upstream.scenario;
      const here = task ? upstream.task.get(task)! : upstream.scenario;
      const w = got[selectionOutputName(trace.path)];
      if (!w) {
        for (let r = 0; r < rows; r++) if (trace.margin[r]! < nearTie) here[r] = 1;
        continue;
      }
      const { differs, ...m } = compareSelection({
        layer: trace.path,
        experts: trace.experts,
        rows,
        baselineWeights: trace.weights,
        // mask "reference" (MODEL.md §7) can put a row's weight outside the selected set A; what
        // the outputs see is the weights' support, so that is what is compared there
        ...(referenceMasked.has(trace.path) ? {} : { baselineSelected: trace.selected }),
        candidateWeights: w.data as Float32Array,
        margin: trace.margin,
        nearTie,
        float32Differs: exclude ? ev.selectionDiffers.get(trace.path)!.map((d, r) => d | exclude[r]!) : ev.selectionDiffers.get(trace.path)!,
      });
      for (let r = 0; r < rows; r++) {
        // a layer below an excused flip sees other inputs, so it may select otherwise with any margin
        if (differs[r] === DISAGREEMENT && above[r]) {
          differs[r] = NEAR_TIE_FLIP;
          m.disagree--;
          m.nearTies++;
        }
        if (differs[r] === DISAGREEMENT) failingRows[r] = 1;
        else if (differs[r] !== SAME || (referenceMasked.has(trace.path) && trace.margin[r]! < nearTie)) here[r] = 1;
      }
      m.examples = m.examples.map((x) => (x.kind === "disagree" && differs[x.row] !== DISAGREEMENT ? { ...x, kind: "near-tie" } : x));
      selections.push(m);
      flips.set(trace.path, differs);
    }
    const outputs = spec.tasks.map((t) => {
      const a = ref.outputs[t.name]!;
      const b = got[t.name]!.data as Float32Array;
      const f32 = ev.outputs[t.name]!;
      const moved = ev.perturbed[t.name]!;
      const excused = new Uint8Array(rows);
      for (const trace of ref.layers) {
        if (!feedsTask(trace.path, t.name)) continue;
        // under mask "reference" a flipped specific set can leave A and the weights' support
        // unchanged while moving the weight (doubled logits): a flip is not observable, so
        // every near-tie row is excused, as for a layer without selection outputs
        const d = referenceMasked.has(trace.path) ? undefined : flips.get(trace.path);
        for (let r = 0; r < rows; r++)
          if (d ? d[r] === NEAR_TIE_FLIP : trace.margin[r]! < nearTie) excused[r] = EXCUSED_NEAR_TIE;
          else if (d && d[r] === FLOAT32_FLIP && !excused[r]) excused[r] = EXCUSED_FLOAT32;
      }
      const fails = (x: number, y: number) => {
        const abs = Math.abs(x - y);
        return !(abs <= atol) && !(relativeError(x, abs) <= tol.rtol);
      };
      for (let r = 0; r < rows; r++) {
        if (excused[r] || !fails(a[r]!, b[r]!)) continue;
        if (float32Limited(a[r]!, f32[r]!, tol) || float32Limited(a[r]!, moved[r]!, tol) || exclude?.[r]) excused[r] = EXCUSED_FLOAT32;
        else failingRows[r] = 1;
      }
      return compareOutput({ name: t.name, reference: a, candidate: b, tolerance: tol, excused, worst: 1 });
    });
    const badOutputs = outputs.filter((o) => o.failures > 0).sort((p, q) => (q.worst[0]?.abs ?? 0) - (p.worst[0]?.abs ?? 0));
    const badLayers = selections.filter((s) => s.disagree > 0);
    const ok = badOutputs.length === 0 && badLayers.length === 0;
    let worst: BisectWorst | null = null;
    let detail: string;
    if (badOutputs.length && badOutputs[0]!.worst[0]) {
      const o = badOutputs[0]!;
      const w = o.worst[0]!;
      worst = { kind: "output", output: o.name, row: w.row, reference: w.reference, candidate: w.candidate, abs: w.abs, scenario: scenarioOfRow(spec, batch, w.row) };
      detail = `${o.name}: ${o.failures} of ${o.checked} row(s) beyond atol ${atol.toExponential()}, worst |err| ${sci(w.abs)} at row ${w.row}`;
    } else if (badLayers.length) {
      const s = badLayers[0]!;
      const ex = s.examples.find((x) => x.kind === "disagree") ?? s.examples[0];
      if (ex) worst = { kind: "selection", layer: s.layer, row: ex.row, reference: ex.reference, candidate: ex.candidate, margin: ex.margin, scenario: scenarioOfRow(spec, batch, ex.row) };
      detail = `${s.layer}: ${s.disagree} row(s) select other experts with a clear margin`;
    } else {
      const maxErr = outputs.map((o) => `${o.name} ${sci(o.abs.max)}`).join(", ");
      const ties = selections.reduce((n, s) => n + s.nearTies, 0);
      const f32 = selections.reduce((n, s) => n + s.float32Unstable, 0);
      const missed = outputs.reduce((n, o) => n + o.excused.failures, 0);
      detail =
        `max |err| ${maxErr}` +
        (ties ? `; ${ties} near-tie flip(s) excused` : "") +
        (f32 ? `; ${f32} float32-unstable row(s) excused` : "") +
        (missed ? `; ${missed} excused output(s) beyond atol` : "");
    }
    if (!ok && badOutputs.length && badLayers.length) detail += `; ${badLayers.map((s) => `${s.layer}: ${s.disagree} row(s) select other experts`).join("; ")}`;
    return { ok, failingRows, detail, outputs, selections, worst };
  };
}

/**
 * Lower the model (with selection outputs, so that a changed selection shows), then apply the
 * passes one at a time, checking the unoptimised graph and every prefix; stop at the first
 * failing one. A pass that throws, or whose result the IR verifier rejects, fails its step.
 */
export function bisectModel(spec: ModelSpec, weights: Weights, options: BisectOptions = {}): BisectReport {
  const atol = options.atol ?? BISECT_DEFAULTS.atol;
  const nearTie = options.nearTie ?? BISECT_DEFAULTS.nearTie;
  const batch = options.inputs ?? generateInputs(spec, { rows: options.rows ?? BISECT_DEFAULTS.rows, seed: options.seed ?? BISECT_DEFAULTS.seed });
  const passes = resolvePasses(options);
  const graph = lowerToGraph(spec, weights, { selectionOutputs: true });
  const check = prefixChecker(spec, weights, batch, atol, nearTie);
  const checks: PrefixCheck[] = [];
  let exclude: Uint8Array | undefined;
  let baselineMisses = 0;
  const result: BisectResult = bisectPasses(
    graph,
    passes,
    (g) => {
      let c = check(g, exclude);
      if (!exclude) {
        // the first call checks the lowered graph: a few rows it misses are its own business
        baselineMisses = c.failingRows.reduce((n, x) => n + x, 0);
        exclude = c.failingRows;
        if (baselineMisses > 0 && baselineMisses <= Math.max(1, Math.floor(MAX_BASELINE_MISS_SHARE * batch.rows))) {
          const missed = c;
          c = check(g, exclude);
          const w = missed.worst;
          const where = !w ? "" : w.kind === "output" ? ` (worst: ${w.output} row ${w.row}, |err| ${sci(w.abs)})` : ` (e.g. ${w.layer} row ${w.row})`;
          c.detail += `; ${baselineMisses} row(s) the lowering already misses left out${where}`;
        }
      }
      checks.push(c);
      return { ok: c.ok, detail: c.detail };
    },
    options.passOptions ?? {},
  );
  // bisectPasses calls the check once per step, except for a step whose pass threw or whose IR
  // failed verification: those steps come last and have no check
  const steps: BisectStepReport[] = result.steps.map((s, i) => ({
    pass: i === 0 ? "(lowered)" : s.pass,
    ok: s.ok,
    detail: s.detail,
    ...(checks[i] ? { check: checks[i] } : {}),
  }));
  const last = steps[steps.length - 1]!;
  return {
    model: spec.name,
    rows: batch.rows,
    passes: passes.map((p) => p.id),
    atol,
    nearTie,
    culprit: result.culprit,
    baselineFails: result.baselineFails,
    baselineMisses,
    steps,
    worst: last.ok ? null : (last.check?.worst ?? null),
  };
}

function describeWorst(w: BisectWorst): string {
  const where = Object.entries(w.scenario)
    .map(([k, v]) => `${k}=${v}`)
    .join(", ");
  if (w.kind === "output")
    return `worst output: ${w.output}, row ${w.row} (${where}): reference ${w.reference.toPrecision(6)}, got ${w.candidate.toPrecision(6)}, |err| ${sci(w.abs)}`;
  return `worst selection: ${w.layer}, row ${w.row} (${where}): reference experts [${w.reference.join(", ")}], got [${w.candidate.join(", ")}] (margin ${sci(w.margin)})`;
}

/** The report as `aesm bisect` prints it: one line per step, then the verdict. */
export function formatBisectReport(r: BisectReport, label: string): string {
  const lines: string[] = [];
  lines.push(
    `bisect ${r.model}: ${label} (${r.passes.length} pass${r.passes.length === 1 ? "" : "es"}), ${r.rows} rows, interpreter vs reference (atol ${r.atol.toExponential()}, near-tie ${r.nearTie.toExponential()})`,
  );
  const width = Math.max(9, ...r.steps.map((s) => s.pass.length));
  r.steps.forEach((s, i) => lines.push(`  ${String(i).padStart(2)}  ${s.pass.padEnd(width)}  ${s.ok ? "ok  " : "FAIL"}  ${s.detail}`));
  if (r.baselineFails) {
    lines.push(`the unoptimised graph already misses on ${r.baselineMisses} of ${r.rows} rows: the lowering differs from the reference, no pass is to blame`);
    if (r.worst) lines.push(describeWorst(r.worst));
  } else if (r.culprit) {
    lines.push(`first failing pass: ${r.culprit}`);
    if (r.worst) lines.push(describeWorst(r.worst));
  } else lines.push(`no pass breaks parity: all ${r.passes.length} prefixes pass`);
  return lines.join("\n") + "\n";
}
