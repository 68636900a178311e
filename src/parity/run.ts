// The parity harness: the float64 reference versus the compiled ONNX on onnxruntime,
// over generated inputs; returns metrics and a verdict, and formats them as a table.

import { type InputBatch, selectionLayerPaths, selectionOutputName } from "../core/batch.ts";
import { userError } from "../core/diagnostics.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import { evaluateReference } from "../reference/index.ts";
import { openSession } from "../runtime/index.ts";
import type { Weights } from "../weights/layout.ts";
import { type OutputReport, type SelectionReport, type Tolerance, compareOutput, compareSelections } from "./compare.ts";
import { generateInputs } from "./inputs.ts";

export type Provider = "cpu" | "cuda" | "tensorrt";

export interface ParityOptions {
  rows: number;
  seed: number;
  provider: Provider;
  tol: Tolerance;
  /** Selection score gap below which a flipped selection counts as a near-tie. */
  nearTie: number;
  /** Supplied inputs instead of generated ones. */
  inputs?: InputBatch;
}

export interface ParityResult {
  rows: number;
  provider: Provider;
  tol: Tolerance;
  nearTie: number;
  outputs: OutputReport[];
  selections: SelectionReport[];
  /** Layers whose selection the ONNX does not expose (compiled without selection outputs). */
  selectionsUnavailable: string[];
  pass: boolean;
}

export const DEFAULT_TOLERANCE: Tolerance = { atol: 1e-5, rtol: 0 };
export const DEFAULT_NEAR_TIE = 1e-4;

export async function runParity(
  spec: ModelSpec,
  weights: Weights,
  onnxPath: string,
  opts: ParityOptions,
): Promise<ParityResult> {
  const batch = opts.inputs ?? generateInputs(spec, { rows: opts.rows, seed: opts.seed });
  const rows = batch.rows;
  const session = await openSession(onnxPath, { provider: opts.provider });
  let got: Record<string, Float32Array>;
  try {
    checkInterface(spec, session.inputNames, session.outputNames, onnxPath);
    got = await session.run(batch);
  } finally {
    await session.close();
  }
  const ref = evaluateReference(spec, weights, batch);

  const selections: SelectionReport[] = [];
  const unavailable: string[] = [];
  const excused = new Uint8Array(rows);
  const traces = new Map(ref.layers.map((l) => [l.path, l]));
  for (const path of selectionLayerPaths(spec)) {
    const w = got[selectionOutputName(path)];
    const trace = traces.get(path)!;
    if (!w) {
      unavailable.push(path);
      continue;
    }
    const rep = compareSelections(
      { layer: path, experts: trace.experts, refSelected: trace.selected, refMargin: trace.margin, onnxWeights: w },
      rows,
      opts.nearTie,
    );
    for (let r = 0; r < rows; r++) if (rep.flipped[r]) excused[r] = 1;
    const { flipped: _, ...report } = rep;
    selections.push(report);
  }
  const outputs = spec.tasks.map((t) => compareOutput(t.name, ref.outputs[t.name]!, got[t.name]!, 1, opts.tol, excused));
  const pass = outputs.every((o) => o.pass) && selections.every((s) => s.disagree === 0);
  return { rows, provider: opts.provider, tol: opts.tol, nearTie: opts.nearTie, outputs, selections, selectionsUnavailable: unavailable, pass };
}

/** The ONNX must take exactly the model's inputs and give every task output (MODEL.md §8). */
function checkInterface(spec: ModelSpec, inputs: readonly string[], outputs: readonly string[], file: string): void {
  const want = [...spec.features.map((f) => f.name), ...spec.scenarios.map((l) => l.name)];
  const missing = want.filter((n) => !inputs.includes(n));
  const extra = inputs.filter((n) => !want.includes(n));
  if (missing.length || extra.length)
    throw userError(
      "AESM3006",
      "",
      `ONNX inputs do not match the model: ${[
        missing.length ? `missing ${missing.join(", ")}` : "",
        extra.length ? `unexpected ${extra.join(", ")}` : "",
      ]
        .filter(Boolean)
        .join("; ")}`,
      file,
    );
  const missingOut = spec.tasks.map((t) => t.name).filter((n) => !outputs.includes(n));
  if (missingOut.length)
    throw userError("AESM3006", "", `ONNX outputs do not match the model: missing ${missingOut.join(", ")}`, file);
}

function sci(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return "0";
  return x.toExponential(2);
}

function pct(n: number, d: number): string {
  return d === 0 ? "n/a" : `${((100 * n) / d).toFixed(2)}%`;
}

function table(header: string[], rows: string[][]): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  return [line(header), ...rows.map(line)];
}

export function formatParityReport(r: ParityResult, title: string): string {
  const out: string[] = [title, ""];
  out.push(
    ...table(
      ["output", "max abs err", "max rel err", "worst row", "failing", "status"],
      r.outputs.map((o) => [
        o.name,
        sci(o.maxAbs),
        sci(o.maxRel),
        String(o.worstRow),
        `${o.failures}${o.nearTieFailures ? ` (+${o.nearTieFailures} near-tie)` : ""}`,
        o.pass ? "ok" : "FAIL",
      ]),
    ),
  );
  out.push("");
  if (r.selections.length) {
    out.push("selected experts (rows whose selected set matches the reference):");
    out.push(
      ...table(
        ["layer", "agree", "near-tie", "disagree"],
        r.selections.map((s) => [s.layer, `${pct(s.agree, s.rows)} (${s.agree}/${s.rows})`, String(s.nearTies), String(s.disagree)]),
      ),
    );
    out.push("");
  }
  if (r.selectionsUnavailable.length)
    out.push(`selection not checked for ${r.selectionsUnavailable.length} layer(s): the ONNX has no selection outputs (compile without --no-selection-outputs)`, "");
  const rule = `atol ${r.tol.atol}${r.tol.rtol ? `, rtol ${r.tol.rtol}` : ""}; near-tie gap < ${r.nearTie}`;
  out.push(`${r.pass ? "PASS" : "FAIL"}: ${r.rows} rows on ${r.provider} (${rule})`);
  return out.join("\n");
}
