// Small models for the parity tests, as plain ModelSpec data, and helpers that write a model
// file, seeded weights and (when compiling works) its ONNX into a temporary folder.

import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { compileToFile } from "../../src/compile.ts";
import { toModelInput } from "../../src/dsl/parse.ts";
import type { GateSpec, MlpSpec, ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { initWeights, saveWeights } from "../../src/weights/index.ts";

const mlp = (units: number[], batchNorm = false): MlpSpec => ({ kind: "mlp", units, act: "relu", batchNorm, bias: !batchNorm });
const gate = (batchNorm = false): GateSpec => ({ kind: "gate", units: [], act: "relu", batchNorm, bias: !batchNorm });
const aesm = (specific: number, shared: number): SelectSpec => ({ kind: "aesm", specific, shared, eps: 1e-9, mask: "masked" });

/**
 * Two scenario levels (page: home, search; slot: top, mid, bottom), a categorical and a dense
 * feature, one task layer and two tasks: every kind of expert layer, small enough to run fast.
 */
export function smallSpec(): ModelSpec {
  return {
    kind: "aesm.model",
    version: 1,
    name: "small",
    features: [
      { kind: "categorical", name: "item", vocab: 20, dim: 4 },
      { kind: "dense", name: "price", dim: 3 },
    ],
    scenarios: [
      { name: "page", values: ["home", "search"], dim: 2, layers: 1, experts: 4, expert: mlp([8]), gate: gate(), select: aesm(1, 1) },
      { name: "slot", values: ["top", "mid", "bottom"], dim: 2, layers: 1, experts: 4, expert: mlp([8]), gate: gate(true), select: aesm(1, 1) },
    ],
    tasks: [
      { name: "ctr", tower: mlp([4]) },
      { name: "cvr", tower: mlp([4]) },
    ],
    taskLayers: { dim: 2, layers: 1, experts: 3, expert: mlp([6]), gate: gate(), select: aesm(1, 1) },
    batchNorm: { eps: 1e-3 },
  };
}

export interface ModelFiles {
  dir: string;
  model: string;
  weights: string;
  onnx: string;
}

/** Model JSON and weights (seed `seed`) in a fresh temporary folder; the ONNX compiled when `compile`. */
export function writeModelFiles(spec: ModelSpec, opts: { seed?: number; compile?: boolean; selectionOutputs?: boolean; compileSeed?: number } = {}): ModelFiles {
  const dir = mkdtempSync(join(tmpdir(), "aesm-parity-"));
  const files = { dir, model: join(dir, "model.json"), weights: join(dir, "weights.safetensors"), onnx: join(dir, "model.onnx") };
  writeFileSync(files.model, JSON.stringify(toModelInput(spec), null, 2));
  const weights = initWeights(spec, opts.seed ?? 1);
  saveWeights(files.weights, weights);
  if (opts.compile ?? true) {
    // compiling other weights than the checked ones plants a real mismatch
    const compiled = opts.compileSeed === undefined ? weights : initWeights(spec, opts.compileSeed);
    compileToFile(spec, compiled, files.onnx, { selectionOutputs: opts.selectionOutputs ?? true });
  }
  return files;
}
