// The typed authoring surface: builders that return plain `kind`-tagged data, and
// `defineModel`, which validates through `parseModel` and brands the spec with the declared names.

import type { Activation, ModelSpec } from "./spec.ts";
import { parseModel } from "./parse.ts";

// ---- the input form: what builders return and what a JSON model file holds ----
// Optional fields take the defaults of MODEL.md §2; `parseModel` fills them.

export interface CategoricalInput {
  kind: "categorical";
  vocab: number;
  dim: number;
}
export interface DenseInput {
  kind: "dense";
  dim: number;
}
export type FeatureInput = CategoricalInput | DenseInput;

export interface MlpInput {
  kind: "mlp";
  units: readonly number[];
  act?: Activation;
  batchNorm?: boolean;
  bias?: boolean;
}

export interface GateInput {
  kind: "gate";
  units?: readonly number[];
  act?: Activation;
  batchNorm?: boolean;
  bias?: boolean;
}

export interface AesmSelectInput {
  kind: "aesm";
  specific: number;
  shared: number;
  eps?: number;
  mask?: "masked" | "reference";
}
export interface AllSelectInput {
  kind: "all";
}
export interface TopKSelectInput {
  kind: "topK";
  k: number;
}

/** Type-only key: carries the names a `fixed(...)` mentions, so a level can reject foreign ones. */
declare const fixedKeys: unique symbol;

/** `K` is the set of scenario values (or task names) the policy names in `specific`. */
export interface FixedSelectInput<K extends string = string> {
  kind: "fixed";
  specific?: { readonly [P in K]?: readonly number[] };
  shared?: readonly number[];
  /** Never present at runtime. Covariant in K: `FixedSelectInput<"a">` fits where `"a" | "b"` is allowed. */
  readonly [fixedKeys]?: K;
}

/** A selection policy whose `fixed` keys must be among `K`. */
export type SelectInput<K extends string = string> =
  | AesmSelectInput
  | AllSelectInput
  | TopKSelectInput
  | FixedSelectInput<K>;

/** Settings shared by a scenario level and the task layers; `K` are the names `fixed` may key on. */
export interface ExpertLayerInput<K extends string = string> {
  /** Stacked layers, default 1. */
  layers?: number;
  experts: number;
  expert: MlpInput;
  /** Default `gate()`. */
  gate?: GateInput;
  select: SelectInput<K>;
}

export interface ScenarioLevelInput<V extends string = string> extends ExpertLayerInput<V> {
  values: readonly V[];
  dim: number;
}

export interface TaskLayersInput<T extends string = string> extends ExpertLayerInput<T> {
  dim: number;
}

export interface TaskInput {
  tower: MlpInput;
}

/** The whole model in input form (the JSON model file format; object keys keep declaration order). */
export interface ModelInput {
  name?: string;
  features: { readonly [name: string]: FeatureInput };
  scenarios: { readonly [level: string]: ScenarioLevelInput };
  tasks: { readonly [task: string]: TaskInput };
  taskLayers?: TaskLayersInput | null;
  batchNorm?: { eps?: number };
}

// ---- builders ----
// They only tag and default; validation (with paths) happens once, in parseModel.

export function categorical(opts: { vocab: number; dim: number }): CategoricalInput {
  return { kind: "categorical", vocab: opts.vocab, dim: opts.dim };
}

export function dense(dim: number): DenseInput {
  return { kind: "dense", dim };
}

export interface UnitLayerOptions {
  act?: Activation;
  batchNorm?: boolean;
  /** Default `!batchNorm`: batch norm's shift makes a bias redundant. */
  bias?: boolean;
}

/** `act(BN(Linear(x)))` per entry of `units`. Defaults: relu, no batch norm, bias. */
export function mlp(units: readonly number[], opts: UnitLayerOptions = {}): Required<MlpInput> {
  const batchNorm = opts.batchNorm ?? false;
  return { kind: "mlp", units, act: opts.act ?? "relu", batchNorm, bias: opts.bias ?? !batchNorm };
}

/** A gate: optional hidden `units`, then `Linear(→E)` (+ BN). Defaults: no hidden units, relu, no BN, bias. */
export function gate(opts: UnitLayerOptions & { units?: readonly number[] } = {}): Required<GateInput> {
  const batchNorm = opts.batchNorm ?? false;
  return {
    kind: "gate",
    units: opts.units ?? [],
    act: opts.act ?? "relu",
    batchNorm,
    bias: opts.bias ?? !batchNorm,
  };
}

/** AESM² automatic selection: `specific` + `shared` experts per row (MODEL.md §5). */
export function aesm(opts: {
  specific: number;
  shared: number;
  eps?: number;
  mask?: "masked" | "reference";
}): Required<AesmSelectInput> {
  return {
    kind: "aesm",
    specific: opts.specific,
    shared: opts.shared,
    eps: opts.eps ?? 1e-9,
    mask: opts.mask ?? "masked",
  };
}

/** MMoE: softmax over every expert. */
export function all(): AllSelectInput {
  return { kind: "all" };
}

/** Sparse gating: softmax over the `k` largest gate logits. */
export function topK(k: number): TopKSelectInput {
  return { kind: "topK", k };
}

/**
 * PLE/CGC-style static assignment. The keys of `specific` are inferred as literals,
 * so `defineModel` rejects a key that is not a value of the level (or a task name).
 */
export function fixed<const Sp extends { readonly [key: string]: readonly number[] } = {}>(opts: {
  specific?: Sp;
  shared?: readonly number[];
}): FixedSelectInput<keyof Sp & string> {
  return { kind: "fixed", specific: opts.specific ?? {}, shared: opts.shared ?? [] };
}

// ---- the branded model ----

/** Type-only key carrying the declared names; absent at runtime. */
declare const modelNames: unique symbol;

/**
 * A validated ModelSpec that remembers, at the type level, its feature names,
 * each scenario level's values and its task names. At runtime it is the plain spec.
 */
export interface Model<
  F extends string = string,
  S extends { readonly [level: string]: string } = { readonly [level: string]: string },
  T extends string = string,
> extends ModelSpec {
  readonly [modelNames]?: { features: F; scenarios: S; tasks: T };
}

type NamesOf<M extends Model> = NonNullable<M[typeof modelNames]>;
export type FeatureNameOf<M extends Model> = NamesOf<M>["features"];
export type LevelNameOf<M extends Model> = keyof NamesOf<M>["scenarios"] & string;
export type ScenarioValueOf<M extends Model, L extends LevelNameOf<M>> = NamesOf<M>["scenarios"][L];
export type TaskNameOf<M extends Model> = NamesOf<M>["tasks"];

/** A scenario level as `defineModel` reads it: `Vs` is inferred from `values` as a literal tuple. */
type LevelDefinition<Vs extends readonly string[]> = ExpertLayerInput<Vs[number]> & {
  values: Vs;
  dim: number;
};

/**
 * Validate a model written with the builders and return its normalised spec.
 * Throws one AesmError listing every problem. Names are inferred as literal types:
 * a `fixed` key that is not a value of its level (or a task name) does not compile.
 */
export function defineModel<
  const F extends { readonly [name: string]: FeatureInput },
  const S extends { readonly [level: string]: readonly string[] },
  const T extends { readonly [task: string]: TaskInput },
>(input: {
  name?: string;
  features: F;
  /** Inferred in reverse: each level's `values` tuple becomes `S[level]`. */
  scenarios: { [L in keyof S]: LevelDefinition<S[L]> };
  tasks: T;
  /** NoInfer: task names come from `tasks` alone, so a stray `fixed` key is an error here, not a new task. */
  taskLayers?: TaskLayersInput<NoInfer<keyof T & string>> | null;
  batchNorm?: { eps?: number };
}): Model<keyof F & string, { [L in keyof S & string]: S[L][number] }, keyof T & string> {
  return parseModel(input);
}
