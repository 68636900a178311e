// Compile-time tests of the DSL's literal name types. test/dsl/types.test.ts compiles this file and
// requires zero diagnostics, so every `@ts-expect-error` below must mark a real type error.

import {
  type FeatureNameOf,
  type LevelNameOf,
  type Model,
  type ModelSpec,
  type ScenarioValueOf,
  type TaskNameOf,
  aesm,
  all,
  categorical,
  defineModel,
  dense,
  fixed,
  gate,
  mlp,
  topK,
} from "../../src/dsl/index.ts";

type Equal<A, B> = (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function expectType<T extends true>(): T | void {}

// ---- names are inferred as literal types ----

const homeOnly = fixed({ specific: { home: [0] }, shared: [1] });

const m = defineModel({
  name: "typed",
  features: { user_id: categorical({ vocab: 10, dim: 2 }), price: dense(1) },
  scenarios: {
    page: { values: ["home", "vertical"], dim: 2, experts: 2, expert: mlp([4]), select: homeOnly },
    search: {
      values: ["brand", "shop"],
      dim: 2,
      experts: 3,
      expert: mlp([4]),
      gate: gate({ units: [2] }),
      select: fixed({ specific: { brand: [0], shop: [1] } }),
    },
  },
  tasks: { ctr: { tower: mlp([]) }, cvr: { tower: mlp([2]) } },
  taskLayers: { dim: 2, experts: 2, expert: mlp([4]), select: fixed({ specific: { ctr: [0], cvr: [1] } }) },
});

expectType<Equal<FeatureNameOf<typeof m>, "user_id" | "price">>();
expectType<Equal<LevelNameOf<typeof m>, "page" | "search">>();
expectType<Equal<ScenarioValueOf<typeof m, "page">, "home" | "vertical">>();
expectType<Equal<ScenarioValueOf<typeof m, "search">, "brand" | "shop">>();
expectType<Equal<TaskNameOf<typeof m>, "ctr" | "cvr">>();

// A Model is a plain ModelSpec to every later stage.
const asSpec: ModelSpec = m;
const anyModel: Model = m;
void asSpec;
void anyModel;

const page: ScenarioValueOf<typeof m, "page"> = "vertical";
// @ts-expect-error: "homee" is not a value of level page
const typo: ScenarioValueOf<typeof m, "page"> = "homee";
// @ts-expect-error: "pag" is not a level
type NoLevel = ScenarioValueOf<typeof m, "pag">;
void page;
void typo;

// ---- fixed keys must be the level's values (or, in task layers, task names) ----

defineModel({
  features: { x: dense(1) },
  scenarios: {
    page: {
      values: ["home", "vertical"],
      dim: 2,
      experts: 2,
      expert: mlp([4]),
      // @ts-expect-error: "homee" is not a value of page
      select: fixed({ specific: { homee: [0] }, shared: [1] }),
    },
    search: {
      values: ["brand", "shop"],
      dim: 2,
      experts: 2,
      expert: mlp([4]),
      // @ts-expect-error: "home" is a value of another level
      select: fixed({ specific: { brand: [0], home: [1] } }),
    },
  },
  tasks: { ctr: { tower: mlp([]) } },
  // @ts-expect-error: "cvr" is not a task
  taskLayers: { dim: 2, experts: 2, expert: mlp([4]), select: fixed({ specific: { cvr: [0] } }) },
});

defineModel({
  features: { x: dense(1) },
  scenarios: { page: { values: ["home", "vertical"], dim: 2, experts: 2, expert: mlp([4]), select: all() } },
  tasks: { ctr: { tower: mlp([]) }, cvr: { tower: mlp([]) } },
  taskLayers: {
    dim: 2,
    experts: 2,
    expert: mlp([4]),
    // @ts-expect-error: task layers are keyed by task, not by scenario value
    select: fixed({ specific: { home: [0] } }),
  },
});

// ---- wrong builders and options ----

defineModel({
  features: {
    // @ts-expect-error: dense takes a number
    x: dense("4"),
  },
  scenarios: {
    page: {
      values: ["a", "b"],
      dim: 2,
      experts: 2,
      // @ts-expect-error: an expert is an mlp, not a gate
      expert: gate(),
      // @ts-expect-error: no such activation
      gate: gate({ act: "relu6" }),
      // @ts-expect-error: aesm needs shared
      select: aesm({ specific: 1 }),
    },
    // @ts-expect-error: a level needs experts
    search: { values: ["c", "d"], dim: 2, expert: mlp([4]), select: topK(1) },
  },
  tasks: { ctr: { tower: mlp([]) } },
});

// @ts-expect-error: no such mask
aesm({ specific: 1, shared: 1, mask: "multiply" });
