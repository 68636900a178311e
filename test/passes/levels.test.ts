// Parity at every optimisation level: -O0, -O1 and -O2 of every fixture model and the example,
// run by the interpreter and by onnxruntime CPU, judged against the float64 reference by the
// parity harness (fp32 tolerances: atol 1e-5); every emitted model passes the ONNX checker.
// Rows from parity's generator: edge and out-of-range ids, and extreme dense values (±1000).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { runGraph } from "../../src/backends/interp/index.ts";
import { writeOnnx } from "../../src/backends/onnx/index.ts";
import { compileModel } from "../../src/compile.ts";
import { type InputBatch, batchToFeeds } from "../../src/core/batch.ts";
import { type ModelSpec, loadModel } from "../../src/dsl/index.ts";
import type { Graph } from "../../src/ir/graph.ts";
import { type OpenSession, type ParityResult, generateInputs, resolveTolerances, runParity } from "../../src/parity/index.ts";
import type { OptLevel } from "../../src/passes/pipeline.ts";
import { initWeights } from "../../src/weights/index.ts";
import { testModels } from "../../fixtures/models.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-levels-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const ROWS = 256;
const example = (await loadModel(join(import.meta.dirname, "../../examples/search-ranker.ts"))).spec;
const models: { name: string; spec: ModelSpec }[] = [...testModels, { name: "search-ranker (example)", spec: example }];

/** The interpreter as a parity "session": the harness then judges it exactly as it judges onnxruntime. */
function interpreterSession(graph: Graph, spec: ModelSpec): OpenSession {
  return async () => ({
    inputNames: graph.inputs.map((v) => v.name),
    outputNames: graph.outputs.map((o) => o.name),
    async run(batch: InputBatch) {
      const out = runGraph(graph, batchToFeeds(batch, spec));
      return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
    },
    close() {},
  });
}

/**
 * The problems of a parity run, less one known class outside the passes: with mask "reference"
 * (MODEL.md §7) a row's weight can land on experts outside the selected set A; the outputs match
 * the reference, but parity's selection comparison (against A) counts such rows as disagreeing.
 */
function verdict(r: ParityResult, spec: ModelSpec): string {
  const referenceMasked = [
    ...spec.scenarios.map((l) => ({ select: l.select, prefix: `scenario_layers.${l.name}.` })),
    ...(spec.taskLayers ? [{ select: spec.taskLayers.select, prefix: "task_layers." }] : []),
  ]
    .filter((l) => l.select.kind === "aesm" && l.select.mask === "reference")
    .map((l) => l.prefix);
  const problems = r.problems.filter(
    (p) => !(/ row\(s\) select different experts /.test(p) && referenceMasked.some((prefix) => p.includes(`: ${prefix}`))),
  );
  return problems.length ? problems.join("\n") : "pass";
}

describe.each(models)("$name", ({ name, spec }) => {
  const weights = initWeights(spec, 7);
  const tolerances = resolveTolerances(
    spec.tasks.map((t) => t.name),
    "fp32",
    undefined,
    undefined,
  );

  // 5 % of rows with extreme dense values (parity's default is 2 %): gate logits far past float32 exp's range
  const inputs = generateInputs(spec, { rows: ROWS, seed: 11, extreme: 0.05 });

  async function parity(level: OptLevel, selectionOutputs = true): Promise<void> {
    const { graph } = compileModel(spec, weights, { optLevel: level, selectionOutputs });
    const path = join(tmp, `${name.replace(/\W+/g, "_")}.O${level}${selectionOutputs ? "" : ".served"}.onnx`);
    writeOnnx(path, graph, { opset: 17 });
    checkOnnxFile(path);

    const common = { inputs, tolerances, fp32Rows: ROWS, providers: ["cpu"] as const };
    const interp = await runParity(spec, weights, path, { ...common, optimizations: ["disabled"], openSession: interpreterSession(graph, spec) });
    expect(verdict(interp, spec), `interpreter -O${level}`).toBe("pass");
    // graph optimisations "all", as served; parity's own tests cover "disabled" against "all"
    const ort = await runParity(spec, weights, path, { ...common, optimizations: ["all"] });
    expect(verdict(ort, spec), `onnxruntime -O${level}`).toBe("pass");
    // the selection of every layer is compared, not only the outputs
    if (selectionOutputs) for (const c of [...interp.comparisons, ...ort.comparisons]) expect(c.selectionsUnavailable).toEqual([]);
  }

  it.each([0, 1, 2] as OptLevel[])(
    "-O%i: interpreter and onnxruntime CPU match the reference; the ONNX passes the checker",
    (level) => parity(level),
  );

  // as served: without the select: outputs, some passes apply further (merge-contractions folds
  // the task selections into the gates, absorb-unsqueeze reaches the stacked layers)
  it("-O2 without selection outputs: interpreter and onnxruntime CPU match the reference; the ONNX passes the checker", () => parity(2, false));
});
