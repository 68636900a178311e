// The reference's exact numbers, pinned: SHA-256 digests of every output and trace (weights,
// selected sets, margins), float64 and float32 emulation, on models that take every kernel path.
// A speed-up of the reference must leave them bit-identical (the WebAssembly kernels and the
// JS ones alike); a digest that changes means the oracle computes other numbers, which is a
// semantic change to review, never a refactor.
// (V8's Math.exp, log and tanh are its own fdlibm ports: the digests do not depend on the C library.)

import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { InputBatch } from "../../src/core/batch.ts";
import { parseModel } from "../../src/dsl/parse.ts";
import type { ModelSpec } from "../../src/dsl/spec.ts";
import { generateInputs } from "../../src/parity/inputs.ts";
import { type ReferenceResult, evaluateReference } from "../../src/reference/index.ts";
import { wasmUnitsAvailable } from "../../src/reference/wasm-unit.ts";
import { initWeights } from "../../src/weights/index.ts";
import type { Weights } from "../../src/weights/layout.ts";
import { aesm, gate, level, mlp, model, randomWeights } from "./helpers.ts";

const REPO = join(import.meta.dirname, "..", "..");

/** Digest of every number the evaluation returns, in a fixed order (bytes of the typed arrays). */
function digest(r: ReferenceResult): string {
  const h = createHash("sha256");
  for (const name of Object.keys(r.outputs).sort()) {
    h.update(name);
    h.update(new Uint8Array(r.outputs[name]!.buffer));
  }
  for (const l of r.layers) {
    h.update(l.path);
    h.update(new Uint8Array(l.weights.buffer));
    h.update(l.selected);
    h.update(new Uint8Array(l.margin.buffer));
  }
  return h.digest("hex");
}

/**
 * Every activation, batch norm with and without bias, a bias without batch norm and neither,
 * gate MLPs (gates evaluated one by one) and single-projection gates (stacked), every policy
 * (aesm masked and §7's reference mask, all, topK, fixed), three levels, task layers with
 * three tasks, an empty tower MLP, odd row counts and widths that are not multiples of 4
 * (the remainders of unrolled kernels).
 */
function kitchenSink(): ModelSpec {
  return model({
    name: "kitchen-sink",
    features: [
      { kind: "categorical", name: "user", vocab: 7, dim: 3 },
      { kind: "dense", name: "x", dim: 5 },
    ],
    scenarios: [
      level("a", ["a0", "a1", "a2"], {
        dim: 2,
        experts: 5,
        expert: mlp([7, 6], "gelu", true, true),
        gate: gate({ units: [6], act: "tanh", batchNorm: true }),
        select: aesm(2, 1, "reference"),
      }),
      level("b", ["b0", "b1"], { dim: 3, layers: 2, experts: 4, expert: mlp([6], "leaky_relu", false, false), select: { kind: "topK", k: 2 } }),
      level("c", ["c0", "c1", "c2", "c3"], { dim: 1, experts: 3, expert: mlp([5], "sigmoid"), gate: gate({ batchNorm: true, bias: true }), select: { kind: "all" } }),
    ],
    tasks: [
      { name: "t0", tower: mlp([3], "none") },
      { name: "t1", tower: mlp([], "relu") },
      { name: "t2", tower: mlp([4], "tanh", true) },
    ],
    taskLayers: {
      dim: 2,
      layers: 2,
      experts: 4,
      expert: mlp([5], "relu", true),
      gate: gate({ units: [3], act: "gelu" }),
      select: { kind: "fixed", specific: { t0: [0], t1: [1, 2], t2: [3] }, shared: [2] },
    },
    batchNorm: { eps: 1e-3 },
  });
}

interface Case {
  name: string;
  spec: ModelSpec;
  weights: Weights;
  batch: InputBatch;
}

function cases(): Case[] {
  const example = parseModel(JSON.parse(readFileSync(join(REPO, "examples", "search-ranker.json"), "utf8")));
  const sink = kitchenSink();
  return [
    // the parity benchmark's model, with generated inputs (extreme dense rows, out-of-range ids);
    // more rows than one reference chunk (1024), an odd count
    { name: "search-ranker", spec: example, weights: initWeights(example, 0), batch: generateInputs(example, { rows: 2085, seed: 5 }) },
    { name: "kitchen-sink", spec: sink, weights: randomWeights(sink, 3), batch: generateInputs(sink, { rows: 1031, seed: 9, extreme: 0.1 }) },
  ];
}

/** The digests when pinned; regenerate only for a deliberate semantic change, and say so in its commit. */
const GOLDEN: Record<string, { float64: string; float32: string }> = JSON.parse(
  readFileSync(join(import.meta.dirname, "golden.json"), "utf8"),
);

describe("reference digests", () => {
  it("run the units in WebAssembly here (else the comparisons below are of JS with itself)", () => {
    expect(wasmUnitsAvailable()).toBe(true);
  });

  for (const c of cases())
    for (const kernels of ["wasm", "js"] as const)
      it(`${c.name}, ${kernels} kernels: float64 and float32 emulation are bit-identical to the pinned numbers`, () => {
        const got = {
          float64: digest(evaluateReference(c.spec, c.weights, c.batch, { kernels })),
          float32: digest(evaluateReference(c.spec, c.weights, c.batch, { precision: "float32", kernels })),
        };
        expect(got).toEqual(GOLDEN[c.name]);
      });
});
