// The text form of an inspection: aligned tables a reviewer reads before shipping a model.

import type { IoReport, LayerReport, ModelReport } from "./model.ts";
import type { OnnxReport } from "./onnx.ts";

/** 1234567 → "1,234,567". */
const n = (x: number) => x.toLocaleString("en-US");

/** Left-aligned columns, except those listed in `right` (numbers). */
function table(rows: string[][], right: ReadonlySet<number> = new Set()): string[] {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => (widths[i] = Math.max(widths[i] ?? 0, c.length)));
  return rows.map((r) =>
    r
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : i === r.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd(),
  );
}

const shape = (s: readonly (number | string)[]) => `[${s.join(", ")}]`;

function ioLines(title: string, list: readonly IoReport[]): string[] {
  if (list.length === 0) return [`${title}: none`];
  return [`${title}:`, ...table(list.map((v) => ["  " + v.name, v.dtype, shape(v.shape), v.note ?? ""]))];
}

function layerRow(l: LayerReport): string[] {
  const streams = l.streams > 1 ? ` ×${l.streams} streams` : "";
  return [
    `  ${l.path}`,
    n(l.parameters.total),
    n(l.flops.total),
    `${l.experts} experts ${l.expert} · ${l.gates} gates on ${l.gateInputWidth} · ${l.policy} (≤ ${l.expertsPerRow}/row)${streams}`,
  ];
}

/** Parameters and FLOPs per part, then the layers' experts, gates and policies, then the I/O. */
export function formatModelReport(r: ModelReport): string {
  const rows: string[][] = [["part", "parameters", "FLOPs/row", ""]];
  for (const p of r.parts) {
    rows.push([p.name, n(p.parameters), n(p.flops), p.kind === "scenario-level" ? p.values.join(" | ") : ""]);
    if (p.kind === "embeddings") for (const t of p.tables) rows.push([`  ${t.name}`, n(t.parameters), "", shape(t.shape)]);
    if (p.kind === "scenario-level" || p.kind === "task-layers") for (const l of p.layers) rows.push(layerRow(l));
    if (p.kind === "towers") for (const t of p.towers) rows.push([`  ${t.task}`, n(t.parameters), n(t.flops), t.layers]);
  }
  rows.push(["total", n(r.parameters), n(r.flops), ""]);
  return [
    `model ${r.name}: ${n(r.parameters)} parameters, ${n(r.flops)} FLOPs per row`,
    "",
    ...table(rows, new Set([1, 2])),
    "",
    ...ioLines("inputs", r.inputs),
    ...ioLines("outputs", r.outputs),
    "",
    `(${r.flopConvention})`,
  ].join("\n");
}

export function formatOnnxReport(r: OnnxReport, file: string): string {
  const opsets = r.opsets.map((o) => `${o.domain === "" ? "ai.onnx" : o.domain} ${o.version}`).join(", ");
  const producer = [r.producer.name, r.producer.version].filter((s) => s !== "").join(" ") || "unknown";
  const lines = [
    `${file}: ONNX IR version ${r.irVersion}, opset ${opsets || "none"}, producer ${producer}`,
    `graph ${JSON.stringify(r.graphName)}: ${n(r.nodes)} nodes, ${n(r.initializers.tensors)} initializers holding ${n(r.initializers.values)} values`,
  ];
  if (r.aesm) {
    lines.push(`made by aesm ${r.aesm.compilerVersion ?? "(version not recorded)"}${r.aesm.model ? ` from model ${JSON.stringify(r.aesm.model.name)}` : ""}`);
    if (r.aesm.modelError) lines.push(r.aesm.modelError);
  }
  lines.push("", ...ioLines("inputs", r.inputs), ...ioLines("outputs", r.outputs), "");
  lines.push(`ops (${r.ops.length} kinds):`, ...table(r.ops.map((o) => [`  ${o.op}`, n(o.count)]), new Set([1])));
  const other = r.metadata.filter((m) => !m.key.startsWith("aesm."));
  if (other.length) lines.push("", "metadata:", ...other.map((m) => `  ${m.key} = ${m.value}`));
  if (r.aesm?.model) lines.push("", "recorded model (metadata aesm.model):", formatModelReport(r.aesm.model));
  return lines.join("\n");
}
