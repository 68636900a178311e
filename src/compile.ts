// The compile job as a library call: spec + weights → verified IR → ONNX file.
// The CLI's `compile` is a thin layer over this.

import { statSync } from "node:fs";
import { writeOnnx } from "./backends/onnx/index.ts";
import { toModelInput } from "./dsl/index.ts";
import type { ModelSpec } from "./dsl/spec.ts";
import type { Graph } from "./ir/graph.ts";
import { verifyGraph } from "./ir/verify.ts";
import { lowerModel } from "./lower/index.ts";
import { AESM_VERSION } from "./version.ts";
import type { Weights } from "./weights/layout.ts";

export interface CompileOptions {
  /** ONNX opset, 13–21 (default 17). */
  opset?: number;
  /** Expose each layer's mixing weights as `select:<layer>` outputs (default true). */
  selectionOutputs?: boolean;
}

/** Lower a validated spec and its weights to a verified IR graph carrying aesm metadata. */
export function compileGraph(spec: ModelSpec, weights: Weights, options: CompileOptions = {}): Graph {
  const graph = lowerModel(spec, weights, { selectionOutputs: options.selectionOutputs ?? true });
  verifyGraph(graph, "lowering");
  graph.metadata["aesm.version"] = AESM_VERSION;
  graph.metadata["aesm.model"] = JSON.stringify(toModelInput(spec));
  return graph;
}

export interface CompileSummary {
  path: string;
  opset: number;
  nodes: number;
  parameters: number;
  bytes: number;
}

/** Compile and write the ONNX atomically. */
export function compileToFile(spec: ModelSpec, weights: Weights, path: string, options: CompileOptions = {}): CompileSummary {
  const graph = compileGraph(spec, weights, options);
  const opset = options.opset ?? 17;
  writeOnnx(path, graph, { opset, producerVersion: AESM_VERSION });
  return { path, opset, nodes: graph.nodes.length, parameters: graph.parameterCount(), bytes: statSync(path).size };
}
