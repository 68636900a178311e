// Checks a set of weights against the canonical layout of a model (MODEL.md §6) and
// reports every problem at once, each naming its tensor, so one run shows all fixes needed.
//
// Codes (AESM21xx; safetensors.ts uses AESM20xx):
//   AESM2101  missing tensor
//   AESM2102  unexpected tensor (not part of this model)
//   AESM2103  shape differs from the layout
//   AESM2104  contains NaN or Inf
//   AESM2105  batch-norm running_var negative
//   AESM2106  not float32, or holds a different number of values than its shape says

import { type Diagnostic, AesmError } from "../core/diagnostics.ts";
import { numel } from "../core/tensor.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import { type Weights, canonicalSlots } from "./layout.ts";

/**
 * Missing tensors listed before the check stops: a model that declares far more tensors than
 * the file holds (hostile, or the wrong file) is reported in bounded time and memory.
 */
const MAX_MISSING = 100;
import { formatShape } from "./safetensors.ts";

/** Throw one AesmError listing every mismatch between `weights` and the model's layout. */
export function validateWeights(spec: ModelSpec, weights: Weights, file?: string): void {
  const problems: Diagnostic[] = [];
  const add = (code: string, path: string, message: string) =>
    problems.push({ code, path, message, ...(file !== undefined ? { file } : {}) });

  const expected = new Set<string>();
  let missing = 0;
  let complete = true;
  for (const slot of canonicalSlots(spec)) {
    expected.add(slot.name);
    const t = weights.get(slot.name);
    if (t === undefined) {
      if (++missing > MAX_MISSING) {
        add("AESM2101", "", `over ${MAX_MISSING} tensors missing; the rest are not listed (the file holds ${weights.size} tensors)`);
        complete = false;
        break;
      }
      add("AESM2101", slot.name, `missing tensor (expected shape ${formatShape(slot.shape)})`);
      continue;
    }
    if (!sameShape(t.shape, slot.shape))
      add("AESM2103", slot.name, `shape ${formatShape(t.shape)}, expected ${formatShape(slot.shape)}`);
    if (t.dtype !== "float32") {
      add("AESM2106", slot.name, `dtype ${t.dtype}, expected float32`);
      continue;
    }
    const data = t.data as Float32Array;
    if (data.length !== numel(t.shape)) {
      add("AESM2106", slot.name, `holds ${data.length} values, shape ${formatShape(t.shape)} needs ${numel(t.shape)}`);
      continue;
    }
    const bad = firstNonFinite(data);
    if (bad >= 0) add("AESM2104", slot.name, `contains ${formatFloat(data[bad]!)} at index ${bad}`);
    if (slot.role === "bn.running_var") {
      const neg = data.findIndex((v) => v < 0);
      if (neg >= 0) add("AESM2105", slot.name, `running_var must be ≥ 0, got ${formatFloat(data[neg]!)} at index ${neg}`);
    }
  }
  // Only a full listing knows which tensors are unexpected.
  if (complete)
    for (const name of weights.keys())
      if (!expected.has(name)) add("AESM2102", name, "unexpected tensor (not part of this model)");

  if (problems.length) throw new AesmError(problems);
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}

/** Shortest decimal that reads back as the same float32 (`-0.1`, not `-0.10000000149011612`). */
export function formatFloat(v: number): string {
  if (!Number.isFinite(v)) return Number.isNaN(v) ? "NaN" : v > 0 ? "Inf" : "-Inf";
  for (let p = 1; p <= 9; p++) {
    const s = Number(v.toPrecision(p));
    if (Math.fround(s) === v) return String(s);
  }
  return String(v);
}
