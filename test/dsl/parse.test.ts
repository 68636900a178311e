// parseModel: one test per validation rule (exact code, path and message), defaults, hostile input,
// and the round trip through toModelInput.

import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { MAX_SIZE, parseModel, toModelInput, type ModelSpec } from "../../src/dsl/index.ts";
import { testModels } from "../../fixtures/models.ts";

type Json = any; // test inputs are deliberately malformed; `any` lets each test poke where it wants

/** A valid model in JSON input form, fresh for each call, for tests to break one thing at a time. */
function base(): Json {
  return {
    name: "m",
    features: { user_id: { kind: "categorical", vocab: 100, dim: 4 }, price: { kind: "dense", dim: 2 } },
    scenarios: {
      page: {
        values: ["home", "vertical"],
        dim: 2,
        experts: 8,
        expert: { kind: "mlp", units: [8] },
        select: { kind: "aesm", specific: 1, shared: 1 },
      },
      search: {
        values: ["brand", "category", "shop"],
        dim: 2,
        experts: 4,
        expert: { kind: "mlp", units: [8] },
        select: { kind: "fixed", specific: { brand: [0], category: [1] }, shared: [2] },
      },
    },
    tasks: { ctr: { tower: { kind: "mlp", units: [4] } }, cvr: { tower: { kind: "mlp", units: [] } } },
    taskLayers: { dim: 2, experts: 4, expert: { kind: "mlp", units: [8] }, select: { kind: "all" } },
  };
}

/** The [code, path, message] of every problem parseModel reports for `input`. */
function problems(input: unknown): [string, string, string][] {
  try {
    parseModel(input);
  } catch (e) {
    expect(e).toBeInstanceOf(AesmError);
    return (e as AesmError).diagnostics.map((d) => [d.code, d.path, d.message]);
  }
  throw new Error("expected parseModel to fail");
}

/** Problems after `edit` breaks a fresh base model. */
function problemsAfter(edit: (m: Json) => void): [string, string, string][] {
  const m = base();
  edit(m);
  return problems(m);
}

describe("parseModel: accepts and normalises", () => {
  it("the base model, with every default filled", () => {
    const spec = parseModel(base());
    expect(spec.kind).toBe("aesm.model");
    expect(spec.version).toBe(1);
    expect(spec.batchNorm).toEqual({ eps: 1e-3 });
    const page = spec.scenarios[0]!;
    expect(page.layers).toBe(1);
    expect(page.expert).toEqual({ kind: "mlp", units: [8], act: "relu", batchNorm: false, bias: true });
    expect(page.gate).toEqual({ kind: "gate", units: [], act: "relu", batchNorm: false, bias: true });
    expect(page.select).toEqual({ kind: "aesm", specific: 1, shared: 1, eps: 1e-9, mask: "masked" });
  });

  it("keeps declaration order of features, levels, values and tasks", () => {
    const m = base();
    m.features = { z: { kind: "dense", dim: 1 }, a: { kind: "dense", dim: 1 }, m: { kind: "dense", dim: 1 } };
    m.scenarios.page.values = ["vertical", "home"];
    const spec = parseModel(m);
    expect(spec.features.map((f) => f.name)).toEqual(["z", "a", "m"]);
    expect(spec.scenarios.map((l) => l.name)).toEqual(["page", "search"]);
    expect(spec.scenarios[0]!.values).toEqual(["vertical", "home"]);
    expect(spec.tasks.map((t) => t.name)).toEqual(["ctr", "cvr"]);
  });

  it("defaults bias to !batchNorm, in JSON as in the builders", () => {
    const m = base();
    m.scenarios.page.expert = { kind: "mlp", units: [8], batchNorm: true };
    m.scenarios.page.gate = { kind: "gate", batchNorm: true };
    const page = parseModel(m).scenarios[0]!;
    expect(page.expert.bias).toBe(false);
    expect(page.gate.bias).toBe(false);
  });

  it("defaults the model name and treats absent or null taskLayers as none", () => {
    const m = base();
    delete m.name;
    delete m.taskLayers;
    expect(parseModel(m).name).toBe("model");
    expect(parseModel(m).taskLayers).toBeNull();
    m.taskLayers = null;
    expect(parseModel(m).taskLayers).toBeNull();
  });

  it("orders fixed.specific by declared value order and copies arrays", () => {
    const m = base();
    const shared = [2];
    m.scenarios.search.select = { kind: "fixed", specific: { shop: [3], brand: [0] }, shared };
    const sel = parseModel(m).scenarios[1]!.select;
    expect(sel.kind === "fixed" && Object.keys(sel.specific)).toEqual(["brand", "shop"]);
    expect(sel.kind === "fixed" && sel.shared).not.toBe(shared);
  });

  it("normalises -0 to 0", () => {
    const m = base();
    m.scenarios.search.select.shared = [-0];
    const sel = parseModel(m).scenarios[1]!.select;
    expect(sel.kind === "fixed" && Object.is(sel.shared[0], 0)).toBe(true);
  });

  it("produces plain JSON data", () => {
    for (const { spec } of testModels) expect(JSON.parse(JSON.stringify(spec))).toStrictEqual(spec);
  });

  it("records the file on every diagnostic when given one", () => {
    try {
      parseModel({ ...base(), foo: 1, bar: 2 }, "model.json");
      expect.unreachable();
    } catch (e) {
      expect((e as AesmError).diagnostics.map((d) => d.file)).toEqual(["model.json", "model.json"]);
      expect((e as AesmError).message).toBe('model.json: foo: unknown key "foo"\nmodel.json: bar: unknown key "bar"');
    }
  });
});

describe("parseModel: structure", () => {
  it.each([
    [null, "null"],
    [[], "an array"],
    [3, "3"],
    ["model", '"model"'],
    [undefined, "undefined"],
  ])("rejects a non-object model %#", (input, got) => {
    expect(problems(input)).toEqual([["AESM1010", "", `model must be an object, got ${got}`]]);
  });

  it("reports unknown keys at their own path, with a suggestion when close", () => {
    expect(problemsAfter((m) => (m.foo = 1))).toEqual([["AESM1011", "foo", 'unknown key "foo"']]);
    expect(
      problemsAfter((m) => {
        m.scenarios.page.expers = m.scenarios.page.experts;
        delete m.scenarios.page.experts;
      }),
    ).toEqual([
      ["AESM1011", "scenarios.page.expers", 'unknown key "expers" (did you mean "experts"?)'],
      ["AESM1012", "scenarios.page", 'missing required key "experts"'],
    ]);
  });

  it("quotes keys that are not identifiers in paths", () => {
    expect(problemsAfter((m) => (m.scenarios.page["odd key.x"] = 1))).toEqual([
      ["AESM1011", 'scenarios.page["odd key.x"]', 'unknown key "odd key.x"'],
    ]);
  });

  it.each(["features", "scenarios", "tasks"])("requires %s", (key) => {
    expect(problemsAfter((m) => delete m[key])).toEqual([["AESM1012", "", `missing required key "${key}"`]]);
  });

  it.each([
    ["features", "feature"],
    ["scenarios", "scenario level"],
    ["tasks", "task"],
  ])("requires at least one entry in %s", (key, noun) => {
    expect(problemsAfter((m) => (m[key] = {}))).toEqual([["AESM1030", key, `must declare at least one ${noun}`]]);
  });

  it("requires objects where records are expected", () => {
    expect(problemsAfter((m) => (m.features = []))).toEqual([["AESM1010", "features", "must be an object, got an array"]]);
    expect(problemsAfter((m) => (m.tasks = null))).toEqual([["AESM1010", "tasks", "must be an object, got null"]]);
    expect(problemsAfter((m) => (m.scenarios.page = "x"))).toEqual([
      ["AESM1010", "scenarios.page", 'must be an object, got "x"'],
    ]);
  });

  it("requires the keys of a scenario level", () => {
    expect(problemsAfter((m) => (m.scenarios.page = {}))).toEqual(
      ["values", "dim", "experts", "expert", "select"].map((k) => [
        "AESM1012",
        "scenarios.page",
        `missing required key "${k}"`,
      ]),
    );
  });

  it("requires a tower for each task, and taskLayers keys", () => {
    expect(problemsAfter((m) => (m.tasks.ctr = {}))).toEqual([["AESM1012", "tasks.ctr", 'missing required key "tower"']]);
    expect(problemsAfter((m) => (m.taskLayers = { values: [] }))).toEqual([
      ["AESM1011", "taskLayers.values", 'unknown key "values"'],
      ["AESM1012", "taskLayers", 'missing required key "dim"'],
      ["AESM1012", "taskLayers", 'missing required key "experts"'],
      ["AESM1012", "taskLayers", 'missing required key "expert"'],
      ["AESM1012", "taskLayers", 'missing required key "select"'],
    ]);
  });
});

describe("parseModel: kinds and enums", () => {
  it("requires kind in JSON", () => {
    expect(problemsAfter((m) => delete m.scenarios.page.select.kind)).toEqual([
      ["AESM1012", "scenarios.page.select", 'missing required key "kind"'],
    ]);
    expect(problemsAfter((m) => delete m.features.price.kind)).toEqual([
      ["AESM1012", "features.price", 'missing required key "kind"'],
    ]);
  });

  it("rejects unknown kinds, listing the expected ones", () => {
    expect(problemsAfter((m) => (m.scenarios.page.select = { kind: "softmax" }))).toEqual([
      ["AESM1013", "scenarios.page.select.kind", 'unknown kind "softmax" (expected "aesm", "all", "topK" or "fixed")'],
    ]);
    expect(problemsAfter((m) => (m.features.price.kind = "sparse"))).toEqual([
      ["AESM1013", "features.price.kind", 'unknown kind "sparse" (expected "categorical" or "dense")'],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.expert.kind = "gate"))).toEqual([
      ["AESM1013", "scenarios.page.expert.kind", 'unknown kind "gate" (expected "mlp")'],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.gate = { kind: "mlp", units: [] }))).toEqual([
      ["AESM1013", "scenarios.page.gate.kind", 'unknown kind "mlp" (expected "gate")'],
    ]);
    expect(problemsAfter((m) => (m.features.price.kind = 1))).toEqual([
      ["AESM1010", "features.price.kind", "must be a string, got 1"],
    ]);
  });

  it("checks keys per kind", () => {
    expect(problemsAfter((m) => (m.features.price.vocab = 3))).toEqual([
      ["AESM1011", "features.price.vocab", 'unknown key "vocab"'],
    ]);
    expect(problemsAfter((m) => (m.taskLayers.select.k = 3))).toEqual([
      ["AESM1011", "taskLayers.select.k", 'unknown key "k"'],
    ]);
  });

  it("rejects unknown activations and masks", () => {
    expect(problemsAfter((m) => (m.scenarios.page.expert.act = "swish"))).toEqual([
      [
        "AESM1014",
        "scenarios.page.expert.act",
        'unknown activation "swish" (expected "relu", "tanh", "leaky_relu", "gelu", "sigmoid" or "none")',
      ],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.select.mask = "multiply"))).toEqual([
      ["AESM1014", "scenarios.page.select.mask", 'unknown mask "multiply" (expected "masked" or "reference")'],
    ]);
  });

  it("requires booleans for batchNorm and bias", () => {
    expect(
      problemsAfter((m) => {
        m.scenarios.page.expert.batchNorm = "yes";
        m.scenarios.page.expert.bias = 1;
      }),
    ).toEqual([
      ["AESM1010", "scenarios.page.expert.batchNorm", 'must be a boolean, got "yes"'],
      ["AESM1010", "scenarios.page.expert.bias", "must be a boolean, got 1"],
    ]);
  });
});

describe("parseModel: numbers", () => {
  it.each([
    [1.5, "AESM1010", "must be an integer, got 1.5"],
    ["4", "AESM1010", 'must be an integer, got "4"'],
    [null, "AESM1010", "must be an integer, got null"],
    [4n, "AESM1010", "must be an integer, got 4n"],
    [Number.NaN, "AESM1010", "must be an integer, got NaN"],
    [Number.POSITIVE_INFINITY, "AESM1010", "must be an integer, got Infinity"],
    [0, "AESM1021", "must be ≥ 1, got 0"],
    [-3, "AESM1021", "must be ≥ 1, got -3"],
    [2 ** 31, "AESM1021", `must be ≤ ${MAX_SIZE}, got 2147483648`],
    [1e300, "AESM1021", `must be ≤ ${MAX_SIZE}, got 1e+300`],
  ])("sizes: dim = %s", (dim, code, message) => {
    expect(problemsAfter((m) => (m.features.user_id.dim = dim))).toEqual([[code, "features.user_id.dim", message]]);
  });

  it("accepts the largest size", () => {
    const m = base();
    m.features.user_id.vocab = MAX_SIZE;
    expect(parseModel(m).features[0]).toMatchObject({ vocab: MAX_SIZE });
  });

  it("checks every size field", () => {
    expect(
      problemsAfter((m) => {
        m.features.user_id.vocab = 0;
        m.scenarios.page.dim = 0;
        m.scenarios.page.layers = 0;
        m.scenarios.search.experts = 0;
        m.taskLayers.dim = 0;
        m.taskLayers.layers = 2.5;
      }),
    ).toEqual([
      ["AESM1021", "features.user_id.vocab", "must be ≥ 1, got 0"],
      ["AESM1021", "scenarios.page.dim", "must be ≥ 1, got 0"],
      ["AESM1021", "scenarios.page.layers", "must be ≥ 1, got 0"],
      ["AESM1021", "scenarios.search.experts", "must be ≥ 1, got 0"],
      ["AESM1021", "taskLayers.dim", "must be ≥ 1, got 0"],
      ["AESM1010", "taskLayers.layers", "must be an integer, got 2.5"],
    ]);
  });

  it.each([
    [0, "AESM1020", "must be > 0, got 0"],
    [-1e-3, "AESM1020", "must be > 0, got -0.001"],
    [Number.POSITIVE_INFINITY, "AESM1020", "must be finite, got Infinity"],
    [Number.NaN, "AESM1020", "must be finite, got NaN"],
    ["1e-3", "AESM1010", 'must be a number, got "1e-3"'],
  ])("epsilons: eps = %s", (eps, code, message) => {
    expect(problemsAfter((m) => (m.batchNorm = { eps }))).toEqual([[code, "batchNorm.eps", message]]);
    expect(problemsAfter((m) => (m.scenarios.page.select.eps = eps))).toEqual([
      [code, "scenarios.page.select.eps", message],
    ]);
  });

  it("rejects unknown batchNorm keys", () => {
    expect(problemsAfter((m) => (m.batchNorm = { epsilon: 1 }))).toEqual([
      ["AESM1011", "batchNorm.epsilon", 'unknown key "epsilon" (did you mean "eps"?)'],
    ]);
  });
});

describe("parseModel: units", () => {
  it("requires experts to have at least one unit, each ≥ 1", () => {
    expect(problemsAfter((m) => (m.scenarios.page.expert.units = []))).toEqual([
      ["AESM1032", "scenarios.page.expert.units", "must list at least one unit (an expert needs an output width)"],
    ]);
    expect(problemsAfter((m) => (m.taskLayers.expert.units = [8, 0]))).toEqual([
      ["AESM1021", "taskLayers.expert.units.1", "must be ≥ 1, got 0"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.expert.units = 8))).toEqual([
      ["AESM1010", "scenarios.page.expert.units", "must be an array, got 8"],
    ]);
    expect(problemsAfter((m) => delete m.scenarios.page.expert.units)).toEqual([
      ["AESM1012", "scenarios.page.expert", 'missing required key "units"'],
    ]);
  });

  it("allows towers and gates without units, but each unit must be ≥ 1", () => {
    expect(parseModel(base()).tasks[1]!.tower.units).toEqual([]);
    expect(problemsAfter((m) => (m.tasks.ctr.tower.units = [0]))).toEqual([
      ["AESM1021", "tasks.ctr.tower.units.0", "must be ≥ 1, got 0"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.gate = { kind: "gate", units: [4, -1] }))).toEqual([
      ["AESM1021", "scenarios.page.gate.units.1", "must be ≥ 1, got -1"],
    ]);
  });
});

describe("parseModel: names", () => {
  const rule = "names must match /^[A-Za-z_][A-Za-z0-9_]*$/";

  it.each([
    ["features", "user-id", 'features["user-id"]'],
    ["scenarios", "1st", 'scenarios["1st"]'],
    ["tasks", "a.b", 'tasks["a.b"]'],
    ["tasks", "", 'tasks[""]'],
  ])("rejects %s name %j", (key, name, path) => {
    const m = base();
    const first = Object.values(m[key])[0];
    m[key] = { [name]: first };
    expect(problems(m)).toEqual([["AESM1040", path, `invalid name ${JSON.stringify(name)}: ${rule}`]]);
  });

  it("rejects invalid, duplicate and non-string scenario values", () => {
    expect(problemsAfter((m) => (m.scenarios.page.values = ["home", "home page"]))).toEqual([
      ["AESM1040", "scenarios.page.values.1", `invalid name "home page": ${rule}`],
    ]);
    expect(problemsAfter((m) => (m.scenarios.search.values = ["brand", "shop", "brand"]))).toEqual([
      ["AESM1043", "scenarios.search.values.2", 'duplicate value "brand"'],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.values = ["home", 3]))).toEqual([
      ["AESM1010", "scenarios.page.values.1", "must be a string, got 3"],
    ]);
  });

  it("requires at least 2 values per level", () => {
    expect(problemsAfter((m) => (m.scenarios.page.values = ["home"]))).toEqual([
      ["AESM1031", "scenarios.page.values", "must list at least 2 values, got 1"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.values = []))).toEqual([
      ["AESM1031", "scenarios.page.values", "must list at least 2 values, got 0"],
    ]);
  });

  it("keeps features, levels and tasks in one namespace (they become ONNX inputs and outputs)", () => {
    expect(problemsAfter((m) => (m.features.page = { kind: "dense", dim: 1 }))).toEqual([
      [
        "AESM1042",
        "scenarios.page",
        'name "page" is already used by feature "page" (features, scenario levels and tasks share one namespace)',
      ],
    ]);
    expect(problemsAfter((m) => (m.tasks.search = { tower: { kind: "mlp", units: [] } }))).toEqual([
      [
        "AESM1042",
        "tasks.search",
        'name "search" is already used by scenario level "search" (features, scenario levels and tasks share one namespace)',
      ],
    ]);
  });

  it("checks the model name", () => {
    expect(problemsAfter((m) => (m.name = "my model"))).toEqual([
      ["AESM1040", "name", 'invalid name "my model": model names must match /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/'],
    ]);
    expect(problemsAfter((m) => (m.name = 7))).toEqual([["AESM1010", "name", "must be a string, got 7"]]);
    expect(parseModel({ ...base(), name: "search-ranker.v2" }).name).toBe("search-ranker.v2");
  });
});

describe("parseModel: selection policies", () => {
  it("aesm: specific and shared within 0..experts", () => {
    expect(problemsAfter((m) => (m.scenarios.page.select.specific = 9))).toEqual([
      ["AESM1050", "scenarios.page.select.specific", "must be ≤ experts (8), got 9"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.select.shared = 9))).toEqual([
      ["AESM1050", "scenarios.page.select.shared", "must be ≤ experts (8), got 9"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.select.specific = -1))).toEqual([
      ["AESM1021", "scenarios.page.select.specific", "must be ≥ 0, got -1"],
    ]);
    const spec = parseModel({ ...base() });
    expect(spec.scenarios[0]!.select).toMatchObject({ specific: 1, shared: 1 });
  });

  it("aesm: specific = experts and one side 0 are fine; both 0 is not", () => {
    const m = base();
    m.scenarios.page.select = { kind: "aesm", specific: 8, shared: 0 };
    expect(parseModel(m).scenarios[0]!.select).toMatchObject({ specific: 8, shared: 0 });
    expect(problemsAfter((x) => (x.scenarios.page.select = { kind: "aesm", specific: 0, shared: 0 }))).toEqual([
      ["AESM1051", "scenarios.page.select", "specific + shared must be ≥ 1, got 0"],
    ]);
  });

  it("aesm: required keys", () => {
    expect(problemsAfter((m) => (m.scenarios.page.select = { kind: "aesm" }))).toEqual([
      ["AESM1012", "scenarios.page.select", 'missing required key "specific"'],
      ["AESM1012", "scenarios.page.select", 'missing required key "shared"'],
    ]);
  });

  it("topK: k within 1..experts", () => {
    expect(problemsAfter((m) => (m.scenarios.page.select = { kind: "topK", k: 0 }))).toEqual([
      ["AESM1021", "scenarios.page.select.k", "must be ≥ 1, got 0"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.select = { kind: "topK", k: 9 }))).toEqual([
      ["AESM1050", "scenarios.page.select.k", "must be ≤ experts (8), got 9"],
    ]);
    const m = base();
    m.scenarios.page.select = { kind: "topK", k: 8 };
    expect(parseModel(m).scenarios[0]!.select).toEqual({ kind: "topK", k: 8 });
  });

  it("skips checks against experts when experts itself is invalid (one mistake, one diagnostic)", () => {
    expect(
      problemsAfter((m) => {
        m.scenarios.page.experts = 0;
        m.scenarios.page.select.specific = 9;
      }),
    ).toEqual([["AESM1021", "scenarios.page.experts", "must be ≥ 1, got 0"]]);
  });

  it("fixed: keys must be declared values, with a suggestion", () => {
    expect(problemsAfter((m) => (m.scenarios.search.select.specific = { brandd: [0] }))).toEqual([
      [
        "AESM1052",
        "scenarios.search.select.specific.brandd",
        'unknown value "brandd" (expected "brand", "category" or "shop"); did you mean "brand"?',
      ],
    ]);
  });

  it("fixed: task-layer keys must be task names", () => {
    expect(
      problemsAfter((m) => (m.taskLayers.select = { kind: "fixed", specific: { ctr: [0], home: [1] }, shared: [] })),
    ).toEqual([
      ["AESM1052", "taskLayers.select.specific.home", 'unknown task "home" (expected "ctr" or "cvr")'],
    ]);
    const m = base();
    m.taskLayers.select = { kind: "fixed", specific: { ctr: [0], cvr: [1, 2] } };
    expect(parseModel(m).taskLayers!.select).toEqual({ kind: "fixed", specific: { ctr: [0], cvr: [1, 2] }, shared: [] });
  });

  it("fixed: expert indices in range, integers, and unique per list", () => {
    expect(problemsAfter((m) => (m.scenarios.search.select.specific.brand = [0, 4]))).toEqual([
      ["AESM1053", "scenarios.search.select.specific.brand.1", "must be < experts (4), got 4"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.search.select.shared = [-1]))).toEqual([
      ["AESM1053", "scenarios.search.select.shared.0", "must be ≥ 0, got -1"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.search.select.shared = [2, 3, 2]))).toEqual([
      ["AESM1054", "scenarios.search.select.shared.2", "duplicate expert 2"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.search.select.shared = [1.5]))).toEqual([
      ["AESM1010", "scenarios.search.select.shared.0", "must be an integer, got 1.5"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.search.select.specific = [[0]]))).toEqual([
      ["AESM1010", "scenarios.search.select.specific", "must be an object, got an array"],
    ]);
  });

  it("fixed: an expert both specific and shared is fine", () => {
    const m = base();
    m.scenarios.search.select = { kind: "fixed", specific: { brand: [0, 2] }, shared: [2] };
    expect(parseModel(m).scenarios[1]!.select).toEqual({ kind: "fixed", specific: { brand: [0, 2] }, shared: [2] });
  });

  it("fixed: every value (task) must select at least one expert", () => {
    expect(problemsAfter((m) => (m.scenarios.search.select.shared = []))).toEqual([
      [
        "AESM1055",
        "scenarios.search.select",
        'value "shop" selects no experts (list it in specific, or make shared non-empty)',
      ],
    ]);
    expect(problemsAfter((m) => (m.taskLayers.select = { kind: "fixed", specific: { ctr: [0], cvr: [] } }))).toEqual([
      ["AESM1055", "taskLayers.select", 'task "cvr" selects no experts (list it in specific, or make shared non-empty)'],
    ]);
  });

  it("fixed: a level with an invalid value list skips key checks instead of misreporting", () => {
    expect(problemsAfter((m) => (m.scenarios.search.values = ["brand", "category", "shop", 4]))).toEqual([
      ["AESM1010", "scenarios.search.values.3", "must be a string, got 4"],
    ]);
  });
});

describe("parseModel: collects every problem", () => {
  it("reports all problems of a model in one error, in document order", () => {
    const diags = problemsAfter((m) => {
      m.features.price.dim = 0;
      m.scenarios.page.select.specific = 9;
      m.tasks.ctr.tower.act = "swish";
      m.taskLayers.experts = -1;
    });
    expect(diags.map(([code, path]) => [code, path])).toEqual([
      ["AESM1021", "features.price.dim"],
      ["AESM1050", "scenarios.page.select.specific"],
      ["AESM1014", "tasks.ctr.tower.act"],
      ["AESM1021", "taskLayers.experts"],
    ]);
  });

  it("caps the list at 100 and says how many more there were", () => {
    const m = base();
    m.scenarios.page.expert.units = Array.from({ length: 150 }, () => 0);
    const diags = problems(m);
    expect(diags).toHaveLength(101);
    expect(diags[100]).toEqual(["AESM1099", "", "too many problems; 50 more not shown"]);
  });
});

describe("parseModel: hostile input", () => {
  it("treats JSON __proto__ keys as data and never pollutes prototypes", () => {
    const m = JSON.parse(
      '{"__proto__": {"polluted": 1}, "features": {"__proto__": {"kind": "dense", "dim": 1}},' +
        '"scenarios": {"page": {"values": ["a", "b"], "dim": 1, "experts": 1, "expert": {"kind": "mlp", "units": [1]},' +
        '"select": {"kind": "fixed", "specific": {"__proto__": [0]}, "shared": [0]}}},' +
        '"tasks": {"t": {"tower": {"kind": "mlp", "units": [], "__proto__": {}}}}}',
    );
    expect(problems(m)).toEqual([
      ["AESM1011", "__proto__", 'unknown key "__proto__"'],
      ["AESM1041", "features.__proto__", 'reserved name "__proto__"'],
      ["AESM1052", "scenarios.page.select.specific.__proto__", 'unknown value "__proto__" (expected "a" or "b")'],
      ["AESM1011", "tasks.t.tower.__proto__", 'unknown key "__proto__"'],
    ]);
    expect(({} as Json).polluted).toBeUndefined();
  });

  it("rejects constructor and prototype as names", () => {
    const m = base();
    m.tasks = { constructor: { tower: { kind: "mlp", units: [] } } };
    m.features = { prototype: { kind: "dense", dim: 1 } };
    expect(problems(m)).toEqual([
      ["AESM1041", "features.prototype", 'reserved name "prototype"'],
      ["AESM1041", "tasks.constructor", 'reserved name "constructor"'],
    ]);
  });

  it("never reads inherited properties", () => {
    const { tasks, ...rest } = base();
    const m = Object.assign(Object.create({ tasks }), rest);
    expect(problems(m)).toEqual([["AESM1012", "", 'missing required key "tasks"']]);
    // A TypeScript literal `{ __proto__: x }` sets the prototype: its fields are not the model's.
    expect(problems({ __proto__: base() })).toEqual([
      ["AESM1012", "", 'missing required key "features"'],
      ["AESM1012", "", 'missing required key "scenarios"'],
      ["AESM1012", "", 'missing required key "tasks"'],
    ]);
  });

  it("does not descend into deep nesting it does not need", () => {
    let deep: Json = [];
    for (let i = 0; i < 100_000; i++) deep = [deep];
    expect(problemsAfter((m) => (m.scenarios.page.expert.units = [deep]))).toEqual([
      ["AESM1010", "scenarios.page.expert.units.0", "must be an integer, got an array"],
    ]);
    expect(problemsAfter((m) => (m.extra = deep))).toEqual([["AESM1011", "extra", 'unknown key "extra"']]);
  });

  it("bounds list lengths, including sparse arrays with huge lengths", () => {
    expect(problemsAfter((m) => (m.scenarios.page.expert.units = new Array(2 ** 32 - 1)))).toEqual([
      ["AESM1021", "scenarios.page.expert.units", "must have at most 65536 items, got 4294967295"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.expert.units = [8, , 8]))).toEqual([
      ["AESM1010", "scenarios.page.expert.units.1", "must be an integer, got undefined"],
    ]);
  });

  it("truncates long strings in messages", () => {
    const long = "x".repeat(10_000);
    const [[code, , message]] = problemsAfter((m) => (m.scenarios.page.expert.act = long)) as [[string, string, string]];
    expect(code).toBe("AESM1014");
    expect(message.length).toBeLessThan(200);
  });

  it("rejects functions, symbols and class instances where data is expected", () => {
    expect(problemsAfter((m) => (m.features.price.dim = () => 4))).toEqual([
      ["AESM1010", "features.price.dim", "must be an integer, got a function"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.values = ["a", Symbol("b")]))).toEqual([
      ["AESM1010", "scenarios.page.values.1", "must be a string, got a symbol"],
    ]);
    expect(problemsAfter((m) => (m.scenarios.page.select = new Map()))).toEqual([
      ["AESM1012", "scenarios.page.select", 'missing required key "kind"'],
    ]);
  });
});

describe("parseModel: the ModelSpec form", () => {
  it("re-validates a spec to itself", () => {
    for (const { spec } of testModels) expect(parseModel(spec)).toEqual(spec);
  });

  it("rejects an unsupported version and malformed named lists", () => {
    const spec: Json = structuredClone(testModels[0]!.spec);
    spec.version = 2;
    expect(problems(spec)).toEqual([["AESM1019", "version", "unsupported model spec version 2 (expected 1)"]]);
    spec.version = 1;
    spec.features = { x: 1 };
    spec.tasks.push(structuredClone(spec.tasks[0]));
    spec.scenarios = [3];
    expect(problems(spec)).toEqual([
      ["AESM1010", "features", "must be an array, got an object"],
      ["AESM1010", "scenarios.0", 'must be an object with a string "name", got 3'],
      ["AESM1042", "tasks.1", 'duplicate name "click"'],
    ]);
  });

  it("validates the contents of a spec like any input", () => {
    const spec: Json = structuredClone(testModels[2]!.spec);
    spec.scenarios[0].select.specific = 9;
    expect(problems(spec)).toEqual([["AESM1050", "scenarios.page.select.specific", "must be ≤ experts (4), got 9"]]);
  });
});

describe("toModelInput", () => {
  it.each(testModels.map((m) => [m.name, m.spec] as const))("round-trips %s", (_, spec: ModelSpec) => {
    const input = toModelInput(spec);
    expect(parseModel(input)).toEqual(spec);
    // It is the JSON model file format: it survives serialisation.
    expect(parseModel(JSON.parse(JSON.stringify(input)))).toEqual(spec);
  });

  it("writes every default out and omits absent task layers", () => {
    const input = toModelInput(testModels[0]!.spec) as Json;
    expect(input.scenarios.site.gate).toEqual({ kind: "gate", units: [], act: "relu", batchNorm: false, bias: true });
    expect(input.scenarios.site.layers).toBe(1);
    expect("taskLayers" in input).toBe(false);
  });

  it("shares no arrays with the spec", () => {
    const spec = testModels.find((m) => m.name === "fixed-ple")!.spec;
    const input = toModelInput(spec) as Json;
    input.scenarios.page.values.push("x");
    input.scenarios.page.select.shared.push(9);
    input.tasks.ctr.tower.units.push(9);
    expect(spec.scenarios[0]!.values).toEqual(["home", "vertical", "other"]);
    expect(spec.scenarios[0]!.select).toMatchObject({ shared: [3, 4] });
    expect(spec.tasks[0]!.tower.units).toEqual([4]);
  });
});
