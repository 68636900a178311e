// How far float32 rounding can move a row's outputs, measured by rounding: the float64
// reference evaluated again with every weight and every dense input moved by one float32 ulp
// (a seeded random sign each). A well-conditioned row moves by about 1e-7 (outputs near 0.5);
// an ill-conditioned one (extreme inputs, large logits whose difference is small) by as much
// as float32 arithmetic strays there. The float32-limited rule (float32Limited) takes this
// evidence beside the float32 evaluation of the reference: one evaluation order can happen to
// be accurate on a row where another is not (seen: float32 emulation 1.9e-7 off, onnxruntime
// 2.4e-5 off; the perturbed reference 2.3e-6 off).

import type { InputBatch } from "../core/batch.ts";
import { Rng } from "../core/random.ts";
import type { Tensor } from "../core/tensor.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import type { Weights } from "../weights/layout.ts";

/** x moved by one float32 ulp up or down. */
function nudge(x: number, up: boolean): number {
  const f = Math.fround(x);
  if (!Number.isFinite(f)) return f;
  const step = f === 0 ? 2 ** -149 : 2 ** (Math.floor(Math.log2(Math.abs(f))) - 23);
  return Math.fround(f + (up ? step : -step));
}

function nudged(data: Float32Array, rng: Rng): Float32Array {
  const out = new Float32Array(data.length);
  for (let i = 0; i < data.length; i++) out[i] = nudge(data[i]!, rng.next() < 0.5);
  return out;
}

/**
 * Weights and a batch one float32 ulp away from the given ones (seeded): every float32 weight
 * but the embedding tables (only their looked-up rows matter, and the first layer's weights
 * they meet are moved), and every dense input. Integer ids and scenario indices are kept.
 */
export function perturbed(spec: ModelSpec, weights: Weights, batch: InputBatch, seed = 0x5eed): { weights: Weights; batch: InputBatch } {
  const rng = new Rng(seed);
  const moved: Weights = new Map();
  for (const [name, t] of weights) {
    const keep = name.startsWith("features.") || t.dtype !== "float32";
    moved.set(name, keep ? t : ({ ...t, data: nudged(t.data as Float32Array, rng) } as Tensor));
  }
  const features: InputBatch["features"] = {};
  for (const f of spec.features) {
    const v = batch.features[f.name]!;
    features[f.name] = f.kind === "dense" ? nudged(v as Float32Array, rng) : v;
  }
  return { weights: moved, batch: { ...batch, features } };
}
