// Calibration for prune-calibrated (`compile --calibrate rows.jsonl|npz`): which experts each
// layer, and each scenario value or task, ever uses on calibration rows (from the reference
// evaluator's traces), the prune plan that follows, and a check of that plan on held-out rows.

import { type InputBatch, batchToFeeds, selectionOutputName } from "../core/batch.ts";
import { userError } from "../core/diagnostics.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import type { Graph } from "../ir/graph.ts";
import { runGraph } from "../backends/interp/index.ts";
import { lowerModel } from "../lower/index.ts";
import { readInputsFile } from "../parity/input-files.ts";
import { type LayerTrace, evaluateReference } from "../reference/index.ts";
import type { Weights } from "../weights/layout.ts";
import { eliminateDeadCode } from "./dce.ts";
import { pruneCalibrated } from "./prune-calibrated.ts";

export interface ValueUse {
  /** Scenario value (scenario layers) or task name (task layers). */
  value: string;
  rows: number;
  /** Experts used on at least one of these rows. */
  experts: number[];
}

export interface LayerCalibration {
  /** Selection path: `scenario_layers.<level>.<i>` or `task_layers.<i>.<task>`. */
  path: string;
  experts: number;
  /**
   * Rows on which each expert is used: selected, or given weight (w > 0) — under the
   * reference mask (MODEL.md §7) an unselected expert can carry the weight.
   */
  rowsUsing: number[];
  byValue: ValueUse[];
  /** Experts no calibration row used: what prune-calibrated removes. */
  pruned: number[];
}

export interface CalibrationReport {
  rows: number;
  layers: LayerCalibration[];
}

export interface Calibration {
  /** PassOptions.prunedExperts: layer path → experts never used (layers with none are left out). */
  prunedExperts: Record<string, number[]>;
  report: CalibrationReport;
}

/** The scenario level (or task) whose index a layer path selects by, and that index per row. */
function indexOf(spec: ModelSpec, batch: InputBatch, path: string): { names: readonly string[]; index: (row: number) => number } {
  const parts = path.split(".");
  if (parts[0] === "scenario_layers") {
    const lvl = spec.scenarios.find((l) => l.name === parts[1])!;
    const s = batch.scenarios[lvl.name]!;
    return { names: lvl.values, index: (r) => Number(s[r]!) };
  }
  const t = spec.tasks.findIndex((x) => x.name === parts[parts.length - 1]);
  return { names: spec.tasks.map((x) => x.name), index: () => t };
}

function layerCalibration(spec: ModelSpec, batch: InputBatch, trace: LayerTrace): LayerCalibration {
  const E = trace.experts;
  const rowsUsing = new Array<number>(E).fill(0);
  const { names, index } = indexOf(spec, batch, trace.path);
  const perValue = names.map(() => ({ rows: 0, used: new Uint8Array(E) }));
  for (let r = 0; r < batch.rows; r++) {
    const v = perValue[index(r)];
    if (v) v.rows++;
    for (let e = 0; e < E; e++) {
      if (!trace.selected[r * E + e] && !(trace.weights[r * E + e]! > 0)) continue;
      rowsUsing[e]!++;
      if (v) v.used[e] = 1;
    }
  }
  const byValue = perValue
    .map((v, i) => ({ value: names[i]!, rows: v.rows, experts: [...v.used.keys()].filter((e) => v.used[e]) }))
    .filter((v) => v.rows > 0);
  const pruned = rowsUsing.flatMap((n, e) => (n === 0 ? [e] : []));
  return { path: trace.path, experts: E, rowsUsing, byValue, pruned };
}

/**
 * Evaluate the reference on the calibration rows and record, per layer, the experts each
 * row uses; experts no row uses form the prune plan. Needs at least one row.
 */
export function calibrate(spec: ModelSpec, weights: Weights, batch: InputBatch): Calibration {
  if (batch.rows === 0) throw userError("AESM4107", "", "calibration needs at least one row");
  const ref = evaluateReference(spec, weights, batch);
  const layers = ref.layers.map((t) => layerCalibration(spec, batch, t));
  const prunedExperts: Record<string, number[]> = {};
  for (const l of layers) if (l.pruned.length) prunedExperts[l.path] = l.pruned;
  return { prunedExperts, report: { rows: batch.rows, layers } };
}

/** Calibration rows from a `.jsonl` or `.npz` inputs file (the parity harness's format and checks). */
export function readCalibrationRows(path: string, spec: ModelSpec): InputBatch {
  return readInputsFile(path, spec);
}

/** Rows [start, end) of a batch. */
export function sliceBatch(spec: ModelSpec, batch: InputBatch, start: number, end: number): InputBatch {
  const features: InputBatch["features"] = {};
  for (const f of spec.features) {
    const per = f.kind === "categorical" ? 1 : f.dim;
    features[f.name] = batch.features[f.name]!.slice(start * per, end * per);
  }
  const scenarios: InputBatch["scenarios"] = {};
  for (const l of spec.scenarios) scenarios[l.name] = batch.scenarios[l.name]!.slice(start, end);
  return { rows: end - start, features, scenarios };
}

/** One line per layer: what was pruned and how often each kept expert was used. */
export function formatCalibrationReport(report: CalibrationReport): string {
  const lines = [`calibration on ${report.rows} rows`];
  for (const l of report.layers) {
    const used = l.rowsUsing.map((n, e) => `${e}:${n}`).join(" ");
    const pruned = l.pruned.length ? `prune [${l.pruned.join(", ")}]` : "prune none";
    lines.push(`  ${l.path}: ${pruned} of ${l.experts} (rows per expert ${used})`);
    for (const v of l.byValue) lines.push(`    ${v.value} (${v.rows} rows): experts [${v.experts.join(", ")}]`);
  }
  return lines.join("\n") + "\n";
}

export interface HeldOutLayer {
  path: string;
  /** Held-out rows on which the same experts get weight (w > 0) as in the reference. */
  agreeing: number;
  rows: number;
}

export interface HeldOutReport {
  calibrationRows: number;
  heldOutRows: number;
  prunedExperts: Record<string, number[]>;
  layers: HeldOutLayer[];
  /** Per task: the largest |pruned graph − reference| on held-out rows, and where. */
  outputs: { name: string; maxAbs: number; row: number }[];
}

export interface HeldOutOptions {
  /** Share of the rows, from the start, used for calibration (default 0.8); the rest are checked. */
  fraction?: number;
  /** The graph to check for a prune plan (default: the lowering with prune-calibrated applied). */
  build?: (prunedExperts: Record<string, number[]>) => Graph;
}

/** The lowering of `spec` with prune-calibrated applied for `prunedExperts`. */
export function prunedGraph(spec: ModelSpec, weights: Weights, prunedExperts: Record<string, number[]>): Graph {
  const g = lowerModel(spec, weights);
  pruneCalibrated.run(g, { options: { prunedExperts }, stats: {} });
  eliminateDeadCode(g);
  return g;
}

/**
 * Calibrate on the first `fraction` of the rows, then run the pruned graph (interpreter) on
 * the rest and compare with the reference: per layer, how many rows use the same experts;
 * per task, the worst output difference. Rows outside the calibration distribution are
 * where pruning can change results; this measures it.
 */
export function checkHeldOut(spec: ModelSpec, weights: Weights, batch: InputBatch, options: HeldOutOptions = {}): HeldOutReport {
  const fraction = options.fraction ?? 0.8;
  const cut = Math.floor(batch.rows * fraction);
  if (cut < 1 || cut >= batch.rows)
    throw userError("AESM4107", "", `a held-out check needs rows on both sides of the split (${batch.rows} rows, fraction ${fraction})`);
  const calibration = sliceBatch(spec, batch, 0, cut);
  const held = sliceBatch(spec, batch, cut, batch.rows);
  const { prunedExperts } = calibrate(spec, weights, calibration);
  const g = options.build ? options.build(prunedExperts) : prunedGraph(spec, weights, prunedExperts);
  const out = runGraph(g, batchToFeeds(held, spec));
  const ref = evaluateReference(spec, weights, held);
  const layers: HeldOutLayer[] = [];
  for (const t of ref.layers) {
    const w = out[selectionOutputName(t.path)];
    if (!w) continue;
    const got = w.data as Float32Array;
    const E = t.experts;
    let agreeing = 0;
    for (let r = 0; r < held.rows; r++) {
      let same = true;
      for (let e = 0; e < E && same; e++) same = got[r * E + e]! > 0 === t.weights[r * E + e]! > 0;
      if (same) agreeing++;
    }
    layers.push({ path: t.path, agreeing, rows: held.rows });
  }
  const outputs = spec.tasks.map((task) => {
    const got = out[task.name]!.data as Float32Array;
    const want = ref.outputs[task.name]!;
    let maxAbs = 0;
    let row = -1;
    for (let r = 0; r < held.rows; r++) {
      const d = Math.abs(got[r]! - want[r]!);
      if (!(d <= maxAbs)) [maxAbs, row] = [d, r];
    }
    return { name: task.name, maxAbs, row };
  });
  return { calibrationRows: cut, heldOutRows: held.rows, prunedExperts, layers, outputs };
}
