export * from "./dsl/index.ts";
// Authoring: checked loading (type check, weights located in the model file), inspect, the typed client.
export { type LoadOptions, type LoadedModel, type Position, locateWeightsError, modelPathOfTensor, typecheckByDefault } from "./dsl/load.ts";
export { TYPE_ERROR_CODE, type TypecheckOptions, type TypecheckResult, typecheckModel } from "./dsl/check.ts";
export * from "./inspect/index.ts";
export { type ClientOptions, emitClient, generateClient, writeClient } from "./client/generate.ts";
