// The `--html` report: one self-contained file (inline CSS and SVG, no script needed, no network)
// with per-output error histograms and, per expert layer, heatmaps of how often each expert is
// selected per scenario value (or task), the reference beside each run.

import { HISTOGRAM_BUCKETS } from "./compare.ts";
import { type ReportContext, parityReportJson } from "./report-json.ts";
import { sci } from "./report-text.ts";
import type { Comparison, ParityResult, SelectionFrequency } from "./run.ts";

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;").replace(/'/g, "&#39;");
}

/** Run colours (histogram bars), distinguishable and print-safe. */
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];

/** Sequential blue scale for a fraction in [0, 1]. */
function heatColour(f: number): string {
  const lo = [247, 251, 255];
  const hi = [8, 48, 107];
  const t = Math.max(0, Math.min(1, f));
  const c = lo.map((a, i) => Math.round(a + (hi[i]! - a) * t));
  return `rgb(${c[0]},${c[1]},${c[2]})`;
}

/** One grouped bar chart: buckets on x, one bar per comparison, counts on a log scale. */
function histogramSvg(output: string, comparisons: Comparison[]): string {
  const series = comparisons.map((c, i) => ({ label: c.candidate, colour: PALETTE[i % PALETTE.length]!, o: c.outputs.find((o) => o.name === output)! }));
  const B = HISTOGRAM_BUCKETS.length;
  const W = 760;
  const H = 240;
  const left = 48;
  const bottom = 56;
  const top = 12;
  const plotW = W - left - 12;
  const plotH = H - top - bottom;
  const max = Math.max(1, ...series.flatMap((s) => s.o.histogram));
  const y = (n: number) => (n <= 0 ? 0 : (Math.log10(1 + n) / Math.log10(1 + max)) * plotH);
  const slot = plotW / B;
  const barW = Math.max(2, (slot - 6) / Math.max(1, series.length));
  const parts: string[] = [];
  parts.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#444"/>`);
  for (const tick of [1, 10, 100, 1000, 10000, 100000, 1000000].filter((t) => t <= max)) {
    const ty = top + plotH - y(tick);
    parts.push(`<line x1="${left}" y1="${ty}" x2="${left + plotW}" y2="${ty}" stroke="#ddd"/>`);
    parts.push(`<text x="${left - 4}" y="${ty + 4}" text-anchor="end" class="tick">${tick >= 1000 ? `${tick / 1000}k` : tick}</text>`);
  }
  // the tolerance: the bucket holding atol (first series' tolerance; per-output tolerances are shared across runs)
  const atol = series[0]?.o.tolerance.atol ?? 0;
  if (atol > 0) {
    const d = Math.floor(Math.log10(atol));
    const b = Math.min(B - 1, Math.max(1, 2 + d + 12));
    const frac = Math.log10(atol) - d;
    const tx = left + slot * (b + frac);
    parts.push(`<line x1="${tx}" y1="${top}" x2="${tx}" y2="${top + plotH}" stroke="#c00" stroke-dasharray="4 3"/>`);
    parts.push(`<text x="${tx + 3}" y="${top + 10}" class="tick" fill="#c00">atol ${esc(String(atol))}</text>`);
  }
  HISTOGRAM_BUCKETS.forEach((label, b) => {
    const x0 = left + slot * b + 3;
    series.forEach((s, i) => {
      const n = s.o.histogram[b]!;
      const h = y(n);
      parts.push(
        `<rect x="${(x0 + i * barW).toFixed(1)}" y="${(top + plotH - h).toFixed(1)}" width="${(barW - 1).toFixed(1)}" height="${h.toFixed(1)}" fill="${s.colour}"><title>${esc(`${s.label}: ${n} value(s) with |err| in ${label}`)}</title></rect>`,
      );
    });
    const lx = left + slot * b + slot / 2;
    parts.push(`<text x="${lx}" y="${top + plotH + 12}" transform="rotate(35 ${lx} ${top + plotH + 12})" class="tick">${esc(label)}</text>`);
  });
  const legend = series
    .map((s) => `<span class="key"><span class="swatch" style="background:${s.colour}"></span>${esc(s.label)}</span>`)
    .join(" ");
  return (
    `<figure class="histogram" data-output="${esc(output)}"><figcaption>${esc(output)}: |error| against the float64 reference, values per decade (log scale) ${legend}</figcaption>` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(`error histogram of ${output}`)}">${parts.join("")}</svg></figure>`
  );
}

/** One heatmap: labels (scenario values or tasks) down, experts across; `diff` outlines cells that differ from it. */
function heatmapSvg(f: SelectionFrequency, source: string, m: number[][], diff?: number[][]): string {
  const cell = 34;
  const labelW = Math.max(60, 8 * Math.max(...f.labels.map((l) => l.length)) + 12);
  const top = 22;
  const W = labelW + cell * f.experts + 4;
  const H = top + cell * f.labels.length + 4;
  const parts: string[] = [];
  for (let e = 0; e < f.experts; e++) parts.push(`<text x="${labelW + e * cell + cell / 2}" y="${top - 6}" text-anchor="middle" class="tick">e${e}</text>`);
  f.labels.forEach((label, li) => {
    const yy = top + li * cell;
    parts.push(`<text x="${labelW - 6}" y="${yy + cell / 2 + 4}" text-anchor="end" class="tick">${esc(label)}</text>`);
    for (let e = 0; e < f.experts; e++) {
      const v = m[li]?.[e] ?? 0;
      const differs = diff !== undefined && Math.abs(v - (diff[li]?.[e] ?? 0)) > 0.005;
      const x = labelW + e * cell;
      parts.push(
        `<rect x="${x}" y="${yy}" width="${cell - 2}" height="${cell - 2}" fill="${heatColour(v)}"${differs ? ' stroke="#d00" stroke-width="2"' : ""}><title>${esc(`${f.by}=${label}, expert ${e}: selected on ${(100 * v).toFixed(1)}% of rows (${source})`)}</title></rect>`,
      );
      parts.push(`<text x="${x + (cell - 2) / 2}" y="${yy + cell / 2 + 3}" text-anchor="middle" class="cell" fill="${v > 0.5 ? "#fff" : "#111"}">${Math.round(100 * v)}</text>`);
    }
  });
  return (
    `<figure class="heatmap" data-layer="${esc(f.layer)}" data-source="${esc(source)}"><figcaption>${esc(source)}</figcaption>` +
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(`selection frequency of ${f.layer}, ${source}`)}">${parts.join("")}</svg></figure>`
  );
}

function comparisonTable(c: Comparison): string {
  const head = ["output", "max abs", "mean abs", "median abs", "p99 abs", "max rel", "p99 rel", "max ulp", "NaN", "Inf", "failing", "excused: near-tie + float32", "min atol", "rmse", "bound", "status"];
  const rows = c.outputs.map((o) =>
    [
      esc(o.name),
      sci(o.abs.max),
      sci(o.abs.mean),
      sci(o.abs.median),
      sci(o.abs.p99),
      sci(o.rel.max),
      sci(o.rel.p99),
      Number.isFinite(o.ulp.max) ? String(o.ulp.max) : sci(o.ulp.max),
      String(o.nan),
      String(o.inf),
      `${o.failures} / ${o.checked}`,
      `${o.excused.nearTieRows} + ${o.excused.float32Rows} (${o.excused.failures} over)`,
      sci(o.minPassingAtol),
      o.rmse ? sci(o.rmse.candidate) : "–",
      o.rmse ? sci(o.rmse.bound) : "–",
      `<span class="${o.pass ? "ok" : "bad"}">${o.pass ? "ok" : "FAIL"}</span>`,
    ]
      .map((x) => `<td>${x}</td>`)
      .join(""),
  );
  let html = `<table><thead><tr>${head.map((h) => `<th>${h}</th>`).join("")}</tr></thead><tbody>${rows.map((r) => `<tr>${r}</tr>`).join("")}</tbody></table>`;
  if (c.selections.length) {
    const srows = c.selections.map(
      (s) =>
        `<tr><td>${esc(s.layer)}</td><td>${(100 * s.agreeFraction).toFixed(2)}% (${s.agree}/${s.rows})</td><td>${s.nearTies}</td><td>${s.float32Unstable}</td><td class="${s.disagree ? "bad" : ""}">${s.disagree}</td><td>${s.nearTieRows}</td><td>${sci(s.maxWeightError)}</td></tr>`,
    );
    html += `<table><thead><tr><th>expert layer</th><th>same selection</th><th>near-tie flips</th><th>float32 flips</th><th>disagree</th><th>near-tie rows</th><th>max |Δw|</th></tr></thead><tbody>${srows.join("")}</tbody></table>`;
  }
  if (c.selectionsUnavailable.length)
    html += `<p class="note">Selection not compared for ${c.selectionsUnavailable.length} layer(s): no select:&lt;layer&gt; outputs in the ONNX.</p>`;
  return html;
}

function worstTable(c: Comparison, levels: string[]): string {
  const blocks = c.outputs
    .filter((o) => o.worst.length)
    .map((o) => {
      const rows = o.worst
        .map(
          (w) =>
            `<tr><td>${w.row}</td>${levels.map((l) => `<td>${esc(w.scenario?.[l] ?? "")}</td>`).join("")}<td>${w.reference}</td><td>${w.candidate}</td><td>${sci(w.abs)}</td><td>${sci(w.rel)}</td><td>${Number.isFinite(w.ulp) ? w.ulp : sci(w.ulp)}</td></tr>`,
        )
        .join("");
      return `<h4>${esc(o.name)}</h4><table><thead><tr><th>row</th>${levels.map((l) => `<th>${esc(l)}</th>`).join("")}<th>reference</th><th>${esc(c.candidate)}</th><th>abs</th><th>rel</th><th>ulp</th></tr></thead><tbody>${rows}</tbody></table>`;
    });
  return blocks.join("");
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px auto;max-width:1200px;color:#111;padding:0 16px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}h4{font-size:13px;margin:10px 0 4px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600}
.verdict.pass{background:#2a7d2a}.verdict.fail{background:#b3261e}
table{border-collapse:collapse;margin:6px 0 10px;font-variant-numeric:tabular-nums;display:block;overflow-x:auto;max-width:100%}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;white-space:nowrap}th{background:#f4f4f4}
td:first-child,th:first-child{text-align:left}
.ok{color:#2a7d2a;font-weight:600}.bad{color:#b3261e;font-weight:600}.note{color:#555}
.maps{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}
figure{margin:6px 0}figcaption{font-size:12px;color:#333;margin-bottom:2px}
.tick{font-size:10px;fill:#333}.cell{font-size:10px}
.key{margin-left:10px;white-space:nowrap}.swatch{display:inline-block;width:10px;height:10px;margin-right:4px;vertical-align:middle}
ul{margin:4px 0 10px}code{background:#f4f4f4;padding:0 3px}
`;

export function parityReportHtml(r: ParityResult, ctx: ReportContext): string {
  const json = parityReportJson(r, ctx);
  const levels = r.levels.map((l) => l.name);
  const gating = r.comparisons.filter((c) => c.gating);
  const src = ctx.inputs.source === "generated" ? `${r.rows} generated rows (seed ${ctx.inputs.seed})` : `${r.rows} rows from ${esc(ctx.inputs.file)}`;
  const body: string[] = [];
  body.push(`<h1>Parity: ${esc(r.model)} <span class="verdict ${r.pass ? "pass" : "fail"}">${r.pass ? "PASS" : "FAIL"}</span></h1>`);
  body.push(
    `<p>Model <code>${esc(ctx.modelFile)}</code>, weights <code>${esc(ctx.weightsFile)}</code>, ONNX <code>${esc(ctx.onnxFile)}</code>.<br>` +
      `Inputs: ${src}. Runs: ${r.runs.map((x) => `<code>${esc(x.id)}</code>`).join(", ")}. Precision ${r.precision}.<br>` +
      `Rule: an element fails when its absolute and relative errors both exceed tolerance (${Object.entries(r.tolerances)
        .map(([n, t]) => `${esc(n)}: atol ${t.atol}, rtol ${t.rtol}`)
        .join("; ")}); selection near-tie margin &lt; ${r.nearTie}; ` +
      "float32-limited (a failing element is excused): the float32 reference, or the reference one ulp away, strays beyond a tenth of the tolerance; " +
      (r.fp32Rows ? `rmse ≤ ${r.rmseMultiplier} × float32-reference rmse + atol/10 over ${r.fp32Rows} rows.` : "rmse check off.") +
      `</p>`,
  );
  if (r.problems.length) body.push(`<h3>Problems</h3><ul>${r.problems.map((p) => `<li>${esc(p)}</li>`).join("")}</ul>`);
  if (r.attribution.length) body.push(`<h3>Attribution</h3><ul>${r.attribution.map((p) => `<li>${esc(p)}</li>`).join("")}</ul>`);

  body.push(`<h2>Outputs</h2>`);
  for (const c of r.comparisons)
    body.push(`<h3>${esc(c.id)} <span class="${c.pass ? "ok" : "bad"}">${c.pass ? "pass" : c.gating ? "FAIL" : "differs"}</span>${c.gating ? "" : " <span class=\"note\">(informational)</span>"}</h3>${comparisonTable(c)}`);

  body.push(`<h2>Error histograms</h2>`);
  for (const name of r.outputs) body.push(histogramSvg(name, gating));

  body.push(`<h2>Expert selection</h2>`);
  body.push(`<p class="note">Percentage of rows that select each expert, per ${levels.length ? "scenario value" : "task"}; cells outlined in red differ from the reference by more than 0.5 points.</p>`);
  for (const f of r.frequencies) {
    const maps = [heatmapSvg(f, "reference", f.reference), ...Object.entries(f.runs).map(([id, m]) => heatmapSvg(f, id, m, f.reference))];
    const missing = r.runs.filter((x) => !(x.id in f.runs)).map((x) => x.id);
    body.push(
      `<h3>${esc(f.layer)} <span class="note">by ${esc(f.by)}</span></h3><div class="maps">${maps.join("")}</div>` +
        (missing.length ? `<p class="note">No selection outputs for ${missing.map(esc).join(", ")}.</p>` : ""),
    );
  }

  body.push(`<h2>Worst rows</h2>`);
  for (const c of gating) body.push(`<h3>${esc(c.id)}</h3>${worstTable(c, levels)}`);

  // the JSON report, for tools that read the HTML; '<' escaped so no string can close the element
  const data = JSON.stringify(json).replace(/</g, "\\u003c");
  return (
    `<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">` +
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; img-src data:">` +
    `<title>${esc(`aesm parity: ${r.model} — ${r.pass ? "PASS" : "FAIL"}`)}</title><style>${CSS}</style></head>` +
    `<body>${body.join("\n")}\n<script type="application/json" id="aesm-parity-report">${data}</script></body></html>\n`
  );
}
