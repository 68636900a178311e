// The normalised, validated model description that every later stage reads.
// Plain JSON-serialisable data: arrays keep declaration order, `kind` discriminates.
// Produced only by `parseModel` (src/dsl/parse.ts), from builders or a JSON file.

export type Activation = "relu" | "tanh" | "leaky_relu" | "gelu" | "sigmoid" | "none";
export const ACTIVATIONS: readonly Activation[] = ["relu", "tanh", "leaky_relu", "gelu", "sigmoid", "none"];

/** `act(BN(Linear(x)))` per unit layer, or `act(Linear(x))` without batch norm. */
export interface MlpSpec {
  kind: "mlp";
  units: number[];
  act: Activation;
  batchNorm: boolean;
  bias: boolean;
}

/**
 * Gate: hidden layers `act(Linear(x))` (always with bias), then the output
 * projection `Linear(→E)` followed by BN when `batchNorm`; `bias` is the
 * output projection's bias.
 */
export interface GateSpec {
  kind: "gate";
  units: number[];
  act: Activation;
  batchNorm: boolean;
  bias: boolean;
}

export type SelectSpec =
  | { kind: "aesm"; specific: number; shared: number; eps: number; mask: "masked" | "reference" }
  | { kind: "all" }
  | { kind: "topK"; k: number }
  | {
      kind: "fixed";
      /** Keyed by scenario value (scenario layers) or task name (task layers); a missing key means none. */
      specific: Record<string, number[]>;
      shared: number[];
    };

export type FeatureSpec =
  | { kind: "categorical"; name: string; vocab: number; dim: number }
  | { kind: "dense"; name: string; dim: number };

/** Settings shared by scenario levels and task layers. */
export interface ExpertLayerSpec {
  /** Number of stacked layers (≥ 1). */
  layers: number;
  experts: number;
  expert: MlpSpec;
  gate: GateSpec;
  select: SelectSpec;
}

export interface ScenarioLevelSpec extends ExpertLayerSpec {
  name: string;
  values: string[];
  /** Indicator embedding width d_l. */
  dim: number;
}

export interface TaskLayersSpec extends ExpertLayerSpec {
  /** Task embedding width d_T. */
  dim: number;
}

export interface TaskSpec {
  name: string;
  tower: MlpSpec;
}

export interface ModelSpec {
  kind: "aesm.model";
  version: 1;
  name: string;
  features: FeatureSpec[];
  scenarios: ScenarioLevelSpec[];
  tasks: TaskSpec[];
  /** null when the towers read the last scenario layer directly. */
  taskLayers: TaskLayersSpec | null;
  batchNorm: { eps: number };
}

// ---- derived widths, used by weights layout, reference and lowering alike ----

/** Width F of x0 = concatenated features. */
export function inputWidth(spec: ModelSpec): number {
  return spec.features.reduce((n, f) => n + f.dim, 0);
}

/** Output width of an MLP given its input width. */
export function mlpOutWidth(mlp: MlpSpec, inWidth: number): number {
  return mlp.units.length ? mlp.units[mlp.units.length - 1]! : inWidth;
}

/** Width of the scenario indicator c_l = [emb_0(s_0); …; emb_l(s_l)]. */
export function indicatorWidth(spec: ModelSpec, level: number): number {
  let n = 0;
  for (let l = 0; l <= level; l++) n += spec.scenarios[l]!.dim;
  return n;
}
