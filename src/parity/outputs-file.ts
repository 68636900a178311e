// `--save-outputs file.json`: the reference's and every run's outputs, so a run can be compared
// again later (or outside aesm) without re-running it. Float32 values in their shortest exact form.

import { writeFileAtomic } from "../core/atomic.ts";
import { formatFloat32 } from "./input-files.ts";
import type { ParityResult } from "./run.ts";

export const PARITY_OUTPUTS_SCHEMA_ID = "aesm.parity-outputs/v1";

function f64List(a: ArrayLike<number>): string {
  const parts: string[] = [];
  for (let i = 0; i < a.length; i++) parts.push(Number.isFinite(a[i]!) ? String(a[i]) : `"${a[i]}"`);
  return `[${parts.join(",")}]`;
}

function f32List(a: ArrayLike<number>): string {
  const parts: string[] = [];
  for (let i = 0; i < a.length; i++) parts.push(Number.isFinite(a[i]!) ? formatFloat32(a[i]!) : `"${a[i]}"`);
  return `[${parts.join(",")}]`;
}

/**
 * { schema, model, rows, outputs, reference: {task: [B]}, referenceFloat32: {task: [fp32Rows]},
 *   runs: {"cpu:all": {task: [B]}} } (non-finite values as strings).
 */
export function* parityOutputsJson(r: ParityResult): Generator<string> {
  const v = r.values;
  if (!v) throw new Error("parityOutputsJson: the result was computed without keepValues");
  yield `{"schema":${JSON.stringify(PARITY_OUTPUTS_SCHEMA_ID)},"model":${JSON.stringify(r.model)},"rows":${r.rows},"outputs":${JSON.stringify(r.outputs)},\n`;
  yield `"reference":{${r.outputs.map((o) => `${JSON.stringify(o)}:${f64List(v.reference[o]!)}`).join(",\n")}},\n`;
  yield `"referenceFloat32":{${Object.keys(v.fp32).map((o) => `${JSON.stringify(o)}:${f64List(v.fp32[o]!)}`).join(",\n")}},\n`;
  yield `"runs":{`;
  const ids = Object.keys(v.runs);
  for (const [i, id] of ids.entries()) {
    const run = v.runs[id]!;
    // task outputs only: selection weights ([rows × experts] per layer) would dwarf them
    const names = r.outputs;
    yield `${JSON.stringify(id)}:{${names.filter((n) => run[n]).map((n) => `${JSON.stringify(n)}:${f32List(run[n]!)}`).join(",\n")}}${i < ids.length - 1 ? ",\n" : ""}`;
  }
  yield `}}\n`;
}

export function writeParityOutputs(path: string, r: ParityResult): void {
  writeFileAtomic(path, parityOutputsJson(r));
}
