// The terminal report: aligned tables per comparison (outputs, then expert layers), worst rows
// of failing outputs, the verdict with its rule; and the one-line `--summary` form.

import type { OutputMetrics } from "./compare.ts";
import type { ReportContext } from "./report-json.ts";
import type { Comparison, ParityResult } from "./run.ts";

export function sci(x: number): string {
  if (Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "inf" : "-inf";
  if (x === 0) return "0";
  return x.toExponential(2);
}

function count(x: number): string {
  if (!Number.isFinite(x)) return sci(x);
  return x < 1e6 ? String(Math.round(x)) : sci(x);
}

function pct(n: number, d: number): string {
  return d === 0 ? "n/a" : `${((100 * n) / d).toFixed(2)}%`;
}

function secs(s: number): string {
  return `${s.toFixed(s < 10 ? 2 : 1)}s`;
}

/** Columns padded to their widest cell; numeric columns right-aligned. */
export function table(header: string[], rows: string[][], right: boolean[] = [], indent = "  "): string[] {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: string[]) =>
    indent + cells.map((c, i) => (right[i] ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join("  ").trimEnd();
  return [line(header), ...rows.map(line)];
}

function outputRows(c: Comparison): string[][] {
  return c.outputs.map((o) => [
    o.name,
    sci(o.abs.max),
    sci(o.abs.mean),
    sci(o.abs.p99),
    sci(o.rel.max),
    count(o.ulp.max),
    `${o.nan}/${o.inf}`,
    String(o.failures),
    o.excused.rows ? `${o.excused.nearTieRows}+${o.excused.float32Rows} (${o.excused.failures} over)` : "0",
    sci(o.minPassingAtol),
    o.rmse ? `${sci(o.rmse.candidate)} ≤ ${sci(o.rmse.bound)}${o.rmse.pass ? "" : " ✗"}` : "-",
    o.pass ? "ok" : "FAIL",
  ]);
}

const OUTPUT_HEADER = ["output", "max abs", "mean abs", "p99 abs", "max rel", "max ulp", "nan/inf", "fail", "excused rows", "min atol", "rmse ≤ bound", "status"];
const OUTPUT_RIGHT = [false, true, true, true, true, true, true, true, true, true, false, false];

function describeComparison(c: Comparison): string {
  if (c.kind === "reference") return `${c.id}`;
  if (c.kind === "optimization") return `${c.id}  (onnxruntime graph optimisations off vs on; informational)`;
  return `${c.id}  (providers against each other; informational)`;
}

function worstRows(o: OutputMetrics, levels: string[]): string[] {
  return table(
    ["row", ...levels, "reference", "candidate", "abs err", "rel err", "ulp"],
    o.worst.map((w) => [
      String(w.row),
      ...levels.map((l) => w.scenario?.[l] ?? ""),
      String(w.reference),
      String(w.candidate),
      sci(w.abs),
      sci(w.rel),
      count(w.ulp),
    ]),
    [true, ...levels.map(() => false), true, true, true, true, true],
    "    ",
  );
}

function toleranceText(r: ParityResult): string {
  const entries = Object.entries(r.tolerances);
  const same = entries.every(([, t]) => t.atol === entries[0]![1].atol && t.rtol === entries[0]![1].rtol);
  if (same && entries.length) return `atol ${entries[0]![1].atol}, rtol ${entries[0]![1].rtol}`;
  return entries.map(([n, t]) => `${n}: atol ${t.atol}, rtol ${t.rtol}`).join("; ");
}

export function formatParityReport(r: ParityResult, ctx: ReportContext): string {
  const levels = r.levels.map((l) => l.name);
  const out: string[] = [];
  out.push(`parity: ${ctx.modelFile} vs ${ctx.onnxFile}`);
  const src = ctx.inputs.source === "generated" ? `${r.rows} generated rows (seed ${ctx.inputs.seed})` : `${r.rows} rows from ${ctx.inputs.file}`;
  const uncovered = r.levels.flatMap((l) => l.values.filter((v) => !r.coverage[l.name]?.[v]).map((v) => `${l.name}=${v}`));
  out.push(`inputs: ${src}; ${uncovered.length ? `not covered: ${uncovered.join(", ")}` : "every scenario value covered"}`);
  out.push(
    `time: reference ${secs(r.timings.referenceSeconds)}, float32 reference ${secs(r.timings.fp32Seconds)} (${r.float32Rows.evaluated} rows${r.float32Rows.suspects ? ` + ${r.float32Rows.suspects} failing` : ""}), ` +
      r.runs.map((x) => `${x.id} ${secs(x.seconds)}`).join(", ") +
      `, compare ${secs(r.timings.compareSeconds)}`,
  );
  for (const c of r.comparisons) {
    out.push("", `${describeComparison(c)}: ${c.pass ? "PASS" : c.gating ? "FAIL" : "differs"}`);
    out.push(...table(OUTPUT_HEADER, outputRows(c), OUTPUT_RIGHT));
    if (c.selections.length) {
      out.push(
        ...table(
          ["expert layer", "same selection", "near-tie", "float32", "disagree", "max |Δw|"],
          c.selections.map((s) => [
            s.layer,
            `${pct(s.agree, s.rows)} (${s.agree}/${s.rows})`,
            String(s.nearTies),
            String(s.float32Unstable),
            String(s.disagree),
            sci(s.maxWeightError),
          ]),
          [false, true, true, true, true, true],
        ),
      );
      for (const s of c.selections)
        for (const e of s.examples.filter((x) => x.kind === "disagree"))
          out.push(
            `    ${s.layer} row ${e.row} (${levels.map((l) => e.scenario?.[l]).join("/")}): experts [${e.reference.join(", ")}] vs [${e.candidate.join(", ")}], margin ${sci(e.margin)}`,
          );
    }
    if (c.selectionsUnavailable.length)
      out.push(`  selection not compared for ${c.selectionsUnavailable.length} layer(s): the ONNX has no select:<layer> outputs (compiled with --no-selection-outputs)`);
    if (c.gating)
      for (const o of c.outputs)
        if (!o.pass && o.worst.length) out.push(`  worst rows of ${o.name}:`, ...worstRows(o, levels));
  }
  out.push("");
  if (r.problems.length) out.push("problems:", ...r.problems.map((p) => `  ${p}`));
  if (r.attribution.length) out.push("attribution:", ...r.attribution.map((p) => `  ${p}`));
  const rule =
    `an element fails when abs and rel error both exceed tolerance (${toleranceText(r)}); ` +
    `near-tie: selection margin < ${r.nearTie}; ` +
    "float32-limited (a failing element is excused): the float32 reference, or the reference one ulp away, strays beyond a tenth of the tolerance; " +
    (r.fp32Rows ? `rmse ≤ ${r.rmseMultiplier}×float32 rmse + atol/10` : "rmse check off");
  out.push(
    "columns: excused rows = near-tie + float32-limited rows (how many of them beyond tolerance), not judged; min atol = smallest atol that passes at this rtol",
  );
  out.push(`${r.pass ? "PASS" : "FAIL"}: ${r.rows} rows on ${r.runs.map((x) => x.id).join(", ")}`, `rule: ${rule}`);
  return out.join("\n") + "\n";
}

/** One line for scripts (scripts/gpu-parity.sh): verdict, model, rows, runs, worst error, selection agreement. */
export function formatParitySummary(r: ParityResult): string {
  const gating = r.comparisons.filter((c) => c.gating);
  let worst = { abs: 0, name: "", run: "" };
  for (const c of gating) for (const o of c.outputs) if (o.abs.max >= worst.abs) worst = { abs: o.abs.max, name: o.name, run: c.candidate };
  const sel = gating.flatMap((c) => c.selections);
  const rows = sel.reduce((n, s) => n + s.rows, 0);
  const agree = sel.reduce((n, s) => n + s.agree, 0);
  const disagree = sel.reduce((n, s) => n + s.disagree, 0);
  const ties = sel.reduce((n, s) => n + s.nearTies, 0);
  const cross = r.comparisons.filter((c) => !c.gating);
  let crossMax = 0;
  for (const c of cross) for (const o of c.outputs) crossMax = Math.max(crossMax, o.abs.max);
  const parts = [
    `${r.pass ? "PASS" : "FAIL"} ${r.model}`,
    `${r.rows} rows`,
    r.runs.map((x) => x.id).join(" "),
    `max abs ${sci(worst.abs)}${worst.name ? ` (${worst.name} on ${worst.run})` : ""}`,
    sel.length ? `selection ${pct(agree, rows)} same, ${disagree} disagree, ${ties} near-tie` : "selection not compared",
  ];
  if (cross.length) parts.push(`between runs max abs ${sci(crossMax)}`);
  if (r.problems.length) parts.push(`${r.problems.length} problem(s), first: ${r.problems[0]}`);
  return parts.join("; ") + "\n";
}
