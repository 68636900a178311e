// The DSL's public surface: builders, validation, loading, and the ModelSpec types they produce.

export {
  aesm,
  all,
  categorical,
  defineModel,
  dense,
  fixed,
  gate,
  mlp,
  topK,
  type AesmSelectInput,
  type AllSelectInput,
  type CategoricalInput,
  type DenseInput,
  type ExpertLayerInput,
  type FeatureInput,
  type FeatureNameOf,
  type FixedSelectInput,
  type GateInput,
  type LevelNameOf,
  type MlpInput,
  type Model,
  type ModelInput,
  type ScenarioLevelInput,
  type ScenarioValueOf,
  type SelectInput,
  type TaskInput,
  type TaskLayersInput,
  type TaskNameOf,
  type TopKSelectInput,
  type UnitLayerOptions,
} from "./builders.ts";
export { MAX_LIST, MAX_SIZE, NAME_PATTERN, joinPath, parseModel, toModelInput } from "./parse.ts";
export { loadModel } from "./load.ts";
export * from "./spec.ts";
