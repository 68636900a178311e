// The public API of the `aesm` package: the DSL for model files, and every job the CLI runs,
// as library calls. Model files import the builders from here.
export * from "./dsl/index.ts";
// Authoring: checked loading (type check, weights located in the model file), inspect, the typed client.
export { type LoadOptions, type LoadedModel, type Position, locateWeightsError, modelPathOfTensor, typecheckByDefault } from "./dsl/load.ts";
export { TYPE_ERROR_CODE, type TypecheckOptions, type TypecheckResult, typecheckModel } from "./dsl/check.ts";
export * from "./inspect/index.ts";
export { type ClientOptions, emitClient, generateClient, writeClient } from "./client/generate.ts";
export { AesmError, type Diagnostic, formatDiagnostic } from "./core/diagnostics.ts";
export type { InputBatch } from "./core/batch.ts";
export * from "./compile.ts";
export { bisectModel, formatBisectReport, type BisectOptions, type BisectReport } from "./bisect.ts";
export { evaluateReference, type LayerTrace, type ReferenceResult } from "./reference/index.ts";
export { initWeights, loadWeights, saveWeights, canonicalLayout, type Weights } from "./weights/index.ts";
export { lowerModel } from "./lower/index.ts";
export { PASSES, type Pass, type PassContext, type PassOptions } from "./passes/index.ts";
export { passesForLevel, runPipeline, type OptLevel } from "./passes/pipeline.ts";
export { writeOnnx, readModel } from "./backends/onnx/index.ts";
export { runGraph } from "./backends/interp/index.ts";
export { generateInputs, runParity, formatParityReport } from "./parity/index.ts";
export { openSession } from "./runtime/index.ts";
export { AESM_VERSION } from "./version.ts";
