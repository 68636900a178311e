// The differential check of one fuzz case: the float64 reference (the oracle) against the
// interpreter at every -O level, and against onnxruntime and the ONNX reader at every opset.
//
// Rows where float32 cannot be expected to agree are excused, not compared, and counted:
// a near-tie in some layer's selection (reference margin below NEAR_TIE), or a row where the
// reference's own float32 emulation is float32-limited in an output or a mixing weight (it
// strays from float64 by more than OUTPUT_ATOL/10: the parity harness's float32Limited rule)
// or selects differently (saturated scores, multiplicative masking with huge logits, large
// activations whose softmax differences are small). Everything else must agree within OUTPUT_ATOL.

import { join } from "node:path";
import { runGraph } from "../backends/interp/index.ts";
import { readOnnxFile, writeOnnx } from "../backends/onnx/index.ts";
import { compileModel } from "../compile.ts";
import { type InputBatch, batchToFeeds, selectionOutputName } from "../core/batch.ts";
import { AesmError } from "../core/diagnostics.ts";
import type { Tensor } from "../core/tensor.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import type { Graph } from "../ir/graph.ts";
import { float32Limited } from "../parity/compare.ts";
import { perturbed } from "../parity/conditioning.ts";
import type { Tolerance } from "../parity/tolerance.ts";
import type { Pass } from "../passes/pass.ts";
import type { OptLevel } from "../passes/pipeline.ts";
import { type LayerTrace, type ReferenceResult, evaluateReference } from "../reference/index.ts";
import { openSession } from "../runtime/index.ts";
import type { Weights } from "../weights/layout.ts";
import { type FuzzCase, caseInputs, caseSpec, caseWeights } from "./case.ts";

/** Largest absolute difference allowed in task outputs and mixing weights (MODEL.md's fp32 parity atol). */
export const OUTPUT_ATOL = 1e-5;
/** A selection margin below this is a near-tie: float32 may legitimately pick the other expert. */
export const NEAR_TIE = 1e-4;
/**
 * Mixing weights below this may underflow to 0 in float32 (or flush as denormals): an expert
 * the reference weighs less than this and the compiled model drops still agrees.
 */
export const TINY_WEIGHT = 1e-30;
/**
 * The tolerance of outputs and mixing weights, for the float32-limited rule: a row whose float32
 * emulation strays more than a tenth of it from float64 is ill-conditioned, and another float32
 * evaluation order (the lowering's, onnxruntime's) can stray several times as far, past
 * OUTPUT_ATOL (seen: 2.6e-6 emulated, 1.1e-5 interpreted, on gate logits near 174 that differ
 * by 0.49). About 0.4 % of rows fall between a tenth and half the tolerance.
 */
const TOLERANCE: Tolerance = { atol: OUTPUT_ATOL, rtol: 0 };
/** Mismatches kept per case: the first few tell the story. */
const MAX_MISMATCHES = 8;

export type MismatchKind = "crash" | "output" | "weight" | "selection";

export interface Mismatch {
  /** What disagreed with the reference: `interp -O2`, `ort -O1 opset 13`, `readback -O0 opset 21`, `compile -O2`. */
  target: string;
  kind: MismatchKind;
  message: string;
  /** The -O level and opset of the target, where it has them (shrinking narrows the case to these). */
  level?: OptLevel;
  opset?: number;
  output?: string;
  row?: number;
  expert?: number;
  expected?: number;
  got?: number;
}

export interface CaseReport {
  ok: boolean;
  mismatches: Mismatch[];
  rows: number;
  /** Rows left out of the comparison (near-ties, float32-fragile rows). */
  excusedRows: number;
  /** Comparisons made: one per (target, level, opset). */
  targets: number;
  ms: number;
}

export interface RunCaseOptions {
  /** Folder for the case's ONNX files (overwritten case by case). */
  workDir: string;
  /** Only these levels / opsets (a shrinking step narrows the case to the failing target). */
  levels?: readonly OptLevel[];
  opsets?: readonly number[];
  /** Exactly these passes at every level instead of passesForLevel (tests plant bugs this way). */
  passes?: readonly Pass[];
  /** Called on each written ONNX file (e.g. the ONNX checker); a throw is a crash of that target. */
  checkFile?: (path: string, opset: number) => void;
  /** Also read each ONNX file back into the IR and interpret it (default true). */
  readback?: boolean;
}

/**
 * A stable signature for a failure, for shrinking (a smaller case must fail the same way)
 * and file names: kind and target family, without levels, opsets, rows or numbers.
 */
export function failureSignature(m: Mismatch): string {
  const family = m.target.split(" ")[0]!;
  return `${m.kind}:${family}`;
}

function firstLine(e: unknown): string {
  const s = e instanceof AesmError ? e.message : e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return s.split("\n")[0]!.slice(0, 400);
}

/** Gates per traced layer, in LayerTrace order (selectionLayerPaths: levels, then task layers × tasks). */
function gateCounts(spec: ModelSpec): number[] {
  const out: number[] = [];
  for (const l of spec.scenarios) for (let i = 0; i < l.layers; i++) out.push(l.values.length);
  if (spec.taskLayers) for (let i = 0; i < spec.taskLayers.layers * spec.tasks.length; i++) out.push(spec.tasks.length);
  return out;
}

/**
 * Per row: whether the comparison must skip it. A margin below NEAR_TIE is a near-tie, even
 * one of exactly 0: scores equal in exact arithmetic are sums of the same terms in different
 * gate orders (softmaxes saturated alike), and float32 sums in another order break the tie
 * either way. Only a layer with one gate (task layers of a one-task model) has exact ties in
 * every precision (P = 1, one term per score), which §5's lower-index rule decides: compared.
 * NaN margins are excused.
 */
function excusedRows(ref: ReferenceResult, ref32: ReferenceResult, moved: ReferenceResult, spec: ModelSpec, rows: number): Uint8Array {
  const out = new Uint8Array(rows);
  const gates = gateCounts(spec);
  for (let r = 0; r < rows; r++) {
    let skip = false;
    ref.layers.forEach((l, i) => {
      const m = l.margin[r]!;
      if (!(m >= NEAR_TIE || (m === 0 && gates[i] === 1))) skip = true;
    });
    for (const t of spec.tasks) {
      const a = ref.outputs[t.name]![r]!;
      const b = ref32.outputs[t.name]![r]!;
      if (float32Limited(a, b, TOLERANCE) || float32Limited(a, moved.outputs[t.name]![r]!, TOLERANCE)) skip = true;
    }
    ref.layers.forEach((l, i) => {
      const l32 = ref32.layers[i]!;
      for (let e = 0; e < l.experts; e++) {
        const a = l.weights[r * l.experts + e]!;
        const b = l32.weights[r * l.experts + e]!;
        if (float32Limited(a, b, TOLERANCE) || selectionDiffers(a, b)) skip = true;
      }
    });
    out[r] = skip ? 1 : 0;
  }
  return out;
}

/** One side uses the expert and the other gives it exactly 0 (weights in (0, TINY) are float32 underflow territory). */
function selectionDiffers(expected: number, got: number): boolean {
  return (expected > TINY_WEIGHT && got === 0) || (expected === 0 && got > TINY_WEIGHT);
}

/** Where a comparison's numbers came from. */
/** A compiled graph run on the case; `served`: compiled without the select: outputs. */
type Target = Pick<Mismatch, "target" | "level" | "opset"> & { served?: boolean };

/** Compare one target's outputs with the reference on the rows not excused; appends to `out`. */
function compareOutputs(
  target: Target,
  got: Record<string, ArrayLike<number>>,
  ref: ReferenceResult,
  spec: ModelSpec,
  skip: Uint8Array,
  out: Mismatch[],
): void {
  const add = (m: Mismatch) => {
    if (out.length < MAX_MISMATCHES) out.push(m);
  };
  for (const t of spec.tasks) {
    const g = got[t.name];
    if (!g) {
      add({ ...target, kind: "crash", message: `no output "${t.name}"` });
      continue;
    }
    for (let r = 0; r < skip.length; r++) {
      if (skip[r]) continue;
      const want = ref.outputs[t.name]![r]!;
      if (!(Math.abs(g[r]! - want) <= OUTPUT_ATOL))
        add({ ...target, kind: "output", output: t.name, row: r, expected: want, got: g[r]!, message: `task ${t.name} row ${r}: expected ${want}, got ${g[r]}` });
    }
  }
  // a served graph has no select: outputs; its task outputs are what is judged
  if (target.served) return;
  for (const layer of ref.layers) compareLayer(target, got, layer, skip, add);
}

function compareLayer(
  target: Target,
  got: Record<string, ArrayLike<number>>,
  layer: LayerTrace,
  skip: Uint8Array,
  add: (m: Mismatch) => void,
): void {
  const name = selectionOutputName(layer.path);
  const g = got[name];
  if (!g) {
    add({ ...target, kind: "crash", message: `no output "${name}"` });
    return;
  }
  const E = layer.experts;
  for (let r = 0; r < skip.length; r++) {
    if (skip[r]) continue;
    for (let e = 0; e < E; e++) {
      const want = layer.weights[r * E + e]!;
      const have = g[r * E + e]!;
      const base = { ...target, output: name, row: r, expert: e, expected: want, got: have };
      if (selectionDiffers(want, have))
        add({ ...base, kind: "selection", message: `${name} row ${r}: expert ${e} weight ${want} in the reference, ${have} here` });
      else if (!(Math.abs(have - want) <= OUTPUT_ATOL))
        add({ ...base, kind: "weight", message: `${name} row ${r} expert ${e}: expected ${want}, got ${have}` });
    }
  }
}

function interpret(graph: Graph, feeds: Record<string, Tensor>): Record<string, ArrayLike<number>> {
  const res = runGraph(graph, feeds);
  return Object.fromEntries(Object.entries(res).map(([k, t]) => [k, t.data as ArrayLike<number>]));
}

/** Spec, weights and inputs of a case; the reference results with and without float32 emulation. */
export interface PreparedCase {
  spec: ModelSpec;
  weights: Weights;
  batch: InputBatch;
  ref: ReferenceResult;
  skip: Uint8Array;
}

export function prepareCase(c: FuzzCase, spec: ModelSpec = caseSpec(c)): PreparedCase {
  const weights = caseWeights(spec, c);
  const batch = caseInputs(spec, c);
  const ref = evaluateReference(spec, weights, batch);
  const ref32 = evaluateReference(spec, weights, batch, { precision: "float32" });
  const near = perturbed(spec, weights, batch);
  const moved = evaluateReference(spec, near.weights, near.batch);
  return { spec, weights, batch, ref, skip: excusedRows(ref, ref32, moved, spec, batch.rows) };
}

/**
 * Run one case: for each -O level, compile and interpret; for each opset, write the ONNX,
 * run it in onnxruntime (CPU) and read it back into the interpreter. Every result is
 * compared with the reference. Exceptions of the stages are recorded as crashes.
 */
export async function runCase(c: FuzzCase, opts: RunCaseOptions): Promise<CaseReport> {
  const t0 = performance.now();
  const mismatches: Mismatch[] = [];
  // An invalid model is the caller's problem (the shrinker skips such candidates): rethrown.
  const spec = caseSpec(c);
  let p: PreparedCase;
  try {
    p = prepareCase(c, spec);
  } catch (e) {
    const report = { ok: false, rows: c.inputs.keep?.length ?? c.inputs.rows, excusedRows: 0, targets: 0 };
    return { ...report, mismatches: [{ target: "reference", kind: "crash", message: firstLine(e) }], ms: performance.now() - t0 };
  }
  const feeds = batchToFeeds(p.batch, p.spec);
  const levels = opts.levels ?? c.options.levels;
  const opsets = opts.opsets ?? c.options.opsets;
  const passOptions = { nearTieRewrites: c.options.nearTieRewrites, sparseDispatch: c.options.sparseDispatch };
  let targets = 0;
  /** Run the ONNX at `path` in onnxruntime (CPU) and compare; a failure to open or run is a crash. */
  const runOnnxruntime = async (target: Target, path: string): Promise<void> => {
    try {
      // One intra-op thread: session start-up dominates a fuzz case, and a pool per session costs most of it.
      const session = await openSession(path, { optimization: c.options.ortOptimization, threads: 1 });
      try {
        compareOutputs(target, await session.run(p.batch), p.ref, p.spec, p.skip, mismatches);
      } finally {
        await session.close();
      }
    } catch (e) {
      mismatches.push({ ...target, kind: "crash", message: firstLine(e) });
    }
  };

  for (const level of levels) {
    let graph: Graph;
    try {
      graph = compileModel(p.spec, p.weights, {
        optLevel: level,
        selectionOutputs: true,
        passOptions,
        ...(opts.passes ? { passes: [...opts.passes] } : {}),
      }).graph;
    } catch (e) {
      mismatches.push({ target: `compile -O${level}`, level, kind: "crash", message: firstLine(e) });
      continue;
    }
    targets++;
    const interp: Target = { target: `interp -O${level}`, level };
    try {
      compareOutputs(interp, interpret(graph, feeds), p.ref, p.spec, p.skip, mismatches);
    } catch (e) {
      mismatches.push({ ...interp, kind: "crash", message: firstLine(e) });
    }

    for (const opset of opsets) {
      const path = join(opts.workDir, `O${level}-opset${opset}.onnx`);
      try {
        writeOnnx(path, graph, { opset });
        opts.checkFile?.(path, opset);
      } catch (e) {
        mismatches.push({ target: `emit -O${level} opset ${opset}`, level, opset, kind: "crash", message: firstLine(e) });
        continue;
      }
      targets++;
      await runOnnxruntime({ target: `ort -O${level} opset ${opset}`, level, opset }, path);
      if (opts.readback === false) continue;
      targets++;
      const rbTarget: Target = { target: `readback -O${level} opset ${opset}`, level, opset };
      try {
        compareOutputs(rbTarget, interpret(readOnnxFile(path), feeds), p.ref, p.spec, p.skip, mismatches);
      } catch (e) {
        mismatches.push({ ...rbTarget, kind: "crash", message: firstLine(e) });
      }
    }
  }

  // -O2 as served (no select: outputs): some passes apply only there (merge-contractions folds
  // the task selections into the gates); interpreter and onnxruntime at the default opset
  if (levels.includes(2) && !opts.passes) {
    let graph: Graph | null = null;
    try {
      graph = compileModel(p.spec, p.weights, { optLevel: 2, selectionOutputs: false, passOptions }).graph;
    } catch (e) {
      mismatches.push({ target: "compile -O2 served", level: 2, kind: "crash", message: firstLine(e) });
    }
    if (graph) {
      targets++;
      const served: Target = { target: "interp -O2 served", level: 2, served: true };
      try {
        compareOutputs(served, interpret(graph, feeds), p.ref, p.spec, p.skip, mismatches);
      } catch (e) {
        mismatches.push({ ...served, kind: "crash", message: firstLine(e) });
      }
      const path = join(opts.workDir, "O2-served.onnx");
      const ortServed: Target = { target: "ort -O2 served", level: 2, served: true };
      try {
        writeOnnx(path, graph);
        opts.checkFile?.(path, 17);
        targets++;
        await runOnnxruntime(ortServed, path);
      } catch (e) {
        mismatches.push({ ...ortServed, kind: "crash", message: firstLine(e) });
      }
    }
  }

  let excused = 0;
  for (const s of p.skip) excused += s;
  return {
    ok: mismatches.length === 0,
    mismatches: mismatches.slice(0, MAX_MISMATCHES),
    rows: p.batch.rows,
    excusedRows: excused,
    targets,
    ms: performance.now() - t0,
  };
}
