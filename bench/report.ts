// The benchmark's results as markdown: the machine, one table per model and thread setting
// (median latency, rows/s, speed-up over -O0, share of the dense-MatMul limit), and the targets.

import type { Timing } from "./measure.ts";

export interface MachineInfo {
  cpu: string;
  cores: number;
  node: string;
  onnxruntime: string;
  os: string;
  /** 1-minute load average when the run started and ended: other work on the machine skews timings. */
  load: [number, number];
}

export interface BatchResult {
  batch: number;
  timings: Timing[];
  /** Variants whose ONNX is byte-identical to another's: name → the other's name. */
  aliases: Record<string, string>;
}

export interface ModelResult {
  model: string;
  threads: number;
  /** MatMul FLOPs per row of the dense -O2 graph: the useful work. */
  flopsPerRow: number;
  /** The limit MatMul: [batch, K] × [K, N]. */
  limitShape: [number, number];
  variants: { name: string; nodes: number; parameters: number; note: string }[];
  batches: BatchResult[];
}

export const LIMIT = "MatMul limit";

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x >= 1 ? x.toFixed(2) : x.toFixed(3));
const int = (x: number) => Math.round(x).toLocaleString("en-US");
const pct = (x: number) => `${(100 * x).toFixed(x < 0.1 ? 1 : 0)}%`;

export function timingOf(b: BatchResult, name: string): Timing | undefined {
  const n = b.aliases[name] ?? name;
  return b.timings.find((t) => t.name === n);
}

function threadsLabel(t: number): string {
  return t === 0 ? "onnxruntime default intra-op threads (one per core)" : `${t} intra-op thread${t === 1 ? "" : "s"}`;
}

export function modelTable(r: ModelResult): string {
  const lines: string[] = [];
  lines.push(`### ${r.model}, ${threadsLabel(r.threads)}`, "");
  lines.push(
    `Useful work: ${(r.flopsPerRow / 1e6).toFixed(2)} MFLOP per row (MatMuls of the dense -O2 graph). ` +
      `Limit: one MatMul [batch, ${r.limitShape[0]}] × [${r.limitShape[0]}, ${r.limitShape[1]}] of the same FLOPs.`,
    "",
  );
  lines.push("| variant | nodes | parameters | |", "|---|---:|---:|---|");
  for (const v of r.variants) lines.push(`| ${v.name} | ${int(v.nodes)} | ${int(v.parameters)} | ${v.note} |`);
  lines.push("");
  lines.push("| batch | variant | median ms | p10–p90 ms | rows/s | -O0 / variant | GFLOP/s (useful) | share of limit |");
  lines.push("|---:|---|---:|---:|---:|---:|---:|---:|");
  for (const b of r.batches) {
    const base = timingOf(b, "-O0");
    const limit = timingOf(b, LIMIT)!;
    for (const v of [...r.variants.map((x) => x.name), LIMIT]) {
      const t = timingOf(b, v);
      if (!t) continue;
      const gflops = (r.flopsPerRow * b.batch) / (t.median * 1e6);
      const alias = b.aliases[v] ? ` (same ONNX as ${b.aliases[v]})` : "";
      lines.push(
        `| ${b.batch} | ${v}${alias} | ${ms(t.median)} | ${ms(t.p10)}–${ms(t.p90)} | ${int((b.batch * 1000) / t.median)} | ` +
          `${v === LIMIT || !base ? "" : `${(base.median / t.median).toFixed(2)}×`} | ${gflops.toFixed(1)} | ${v === LIMIT ? "" : pct(limit.median / t.median)} |`,
      );
    }
  }
  lines.push("", `Iterations per variant: ${r.batches.map((b) => `${b.timings[0]!.iterations} at batch ${b.batch}`).join(", ")}.`, "");
  return lines.join("\n");
}

export interface Target {
  text: string;
  measured: string;
  met: boolean | null;
}

export function targetsTable(targets: Target[]): string {
  const lines = ["| target (issue 3) | measured | met |", "|---|---|---|"];
  for (const t of targets) lines.push(`| ${t.text} | ${t.measured} | ${t.met === null ? "n/a" : t.met ? "yes" : "**no**"} |`);
  return lines.join("\n") + "\n";
}

export function machineLine(m: MachineInfo): string {
  return (
    `Machine: ${m.cpu}, ${m.cores} cores, ${m.os}; Node ${m.node}; onnxruntime-node ${m.onnxruntime} ` +
    `(CPU execution provider, graph optimisation level "all"). Load average ${m.load[0].toFixed(1)} at the start, ${m.load[1].toFixed(1)} at the end.`
  );
}
