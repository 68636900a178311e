// Lowering: ModelSpec + Weights → IR graph, one function per model part.
export { BATCH, type LowerOptions, lowerModel } from "./lower.ts";
export { Lowering } from "./context.ts";
export { lowerCategorical, lowerFeatures, lowerScenarioIndicators, lowerTaskInputs, type TaskInputs } from "./features.ts";
export { lowerGate, stackGateLogits } from "./gates.ts";
export { type LayerSelection, type MixtureLayerArgs, lowerMixture, lowerMixtureLayer, lowerScenarioLayers, lowerTaskLayers } from "./layers.ts";
export { LEAKY_RELU_SLOPE, lowerActivation, lowerBatchNorm, lowerLinear, lowerMlp } from "./mlp.ts";
export { MASK_FILL, REFERENCE_UNSELECTED, type SelectArgs, lowerSelect } from "./select.ts";
export { lowerTower } from "./towers.ts";
