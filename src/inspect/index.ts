// `inspect` as a library call: a model file (.ts/.json) or an ONNX file → a report, as data
// (what `--json` prints) and as text.

import { extname } from "node:path";
import { AesmError } from "../core/diagnostics.ts";
import { locateWeightsError, loadModel } from "../dsl/load.ts";
import { loadWeights } from "../weights/index.ts";
import { formatModelReport, formatOnnxReport } from "./format.ts";
import { type ModelReport, inspectSpec } from "./model.ts";
import { type OnnxReport, inspectOnnxFile } from "./onnx.ts";

export { FLOP_CONVENTION, describeMlp, describePolicy, inspectSpec } from "./model.ts";
export type { EmbeddingReport, IoReport, LayerReport, ModelReport, PartReport, TowerReport } from "./model.ts";
export { METADATA_MODEL_KEY, METADATA_VERSION_KEY, inspectOnnxBytes, inspectOnnxFile, type OnnxReport } from "./onnx.ts";
export { formatModelReport, formatOnnxReport } from "./format.ts";

/** Extensions read as model files; anything else is read as ONNX (and rejected as AESM3003 if it is not). */
const MODEL_EXTENSIONS = [".ts", ".mts", ".js", ".mjs", ".json"];

export type InspectReport =
  | { kind: "model"; file: string; model: ModelReport; weights?: { file: string; fits: true } }
  | { kind: "onnx"; file: string; onnx: OnnxReport };

export interface InspectOptions {
  /** Type-check a .ts model file first (default: loadModel's default, on). */
  typecheck?: boolean;
  /** A checkpoint to check against the model; its misfits point at the model's lines. */
  weights?: string;
}

export async function inspectFile(path: string, options: InspectOptions = {}): Promise<InspectReport> {
  if (!MODEL_EXTENSIONS.includes(extname(path))) {
    if (options.weights !== undefined) throw new AesmError({ code: "AESM4005", path: "weights", message: "--weights applies to a model file, not to an ONNX file" });
    return { kind: "onnx", file: path, onnx: inspectOnnxFile(path) };
  }
  const model = await loadModel(path, options.typecheck === undefined ? {} : { typecheck: options.typecheck });
  const report: InspectReport = { kind: "model", file: path, model: inspectSpec(model.spec, path) };
  if (options.weights !== undefined) {
    try {
      loadWeights(options.weights, model.spec);
    } catch (e) {
      throw e instanceof AesmError ? await locateWeightsError(e, model) : e;
    }
    report.weights = { file: options.weights, fits: true };
  }
  return report;
}

export function formatInspectReport(r: InspectReport): string {
  if (r.kind === "onnx") return formatOnnxReport(r.onnx, r.file);
  const weights = r.weights ? `\n\nweights ${r.weights.file} fit the model` : "";
  return `${r.file}: ${formatModelReport(r.model)}${weights}`;
}
