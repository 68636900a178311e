// Building blocks (MODEL.md §1, §2, §4) of the reference evaluator: batch norm, activations
// and erf, embeddings and indicators, task streams, and the errors for bad inputs.

import { describe, expect, it } from "vitest";
import { evaluateReference } from "../../src/reference/index.ts";
import { erf, erfc, gelu } from "../../src/reference/numerics.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import { selectionLayerPaths } from "../../src/core/batch.ts";
import type { Activation } from "../../src/dsl/spec.ts";
import { f32 } from "../../src/core/tensor.ts";
import { gate, ids, level, mlp, model, randomBatch, randomWeights, row, sigmoid, weightsFrom } from "./helpers.ts";

const TOL = 1e-12;
const ALL = { kind: "all" } as const;

function expectClose(actual: ArrayLike<number>, expected: number[], tol = TOL): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= tol)) throw new Error(`index ${i}: got ${a}, expected ${e} (|Δ| = ${Math.abs(a - e)})`);
  }
}

function thrown(f: () => unknown): AesmError {
  try {
    f();
  } catch (e) {
    if (e instanceof AesmError) return e;
    throw e;
  }
  throw new Error("expected an AesmError");
}

describe("erf, erfc and gelu", () => {
  // [x, erf(x), erfc(x)], 25 digits from mpmath
  const table: [number, number, number][] = [
    [0, 0.0, 1.0],
    [1e-10, 1.128379167095512573892398e-10, 0.9999999998871620832904487],
    [0.1, 0.1124629160182848922032751, 0.8875370839817151077967249],
    [0.5, 0.5204998778130465376827467, 0.4795001221869534623172533],
    [0.84375, 0.7672256612323416334589782, 0.2327743387676583665410218],
    [1, 0.8427007929497148693412206, 0.1572992070502851306587794],
    [1.0625, 0.8670582694349527553838465, 0.1329417305650472446161535],
    [1.5, 0.9661051464753107270669763, 0.03389485352468927293302374],
    [2, 0.9953222650189527341620693, 0.004677734981047265837930744],
    [2.5, 0.9995930479825550410604358, 0.0004069520174449589395642157],
    [3, 0.9999779095030014145586272, 0.00002209049699858544137277613],
    [4, 0.9999999845827420997199811, 1.541725790028001885215967e-8],
    [5, 0.999999999998462540205572, 1.537459794428034850188343e-12],
    [5.9, 0.9999999999999999280959022, 7.190409783550508289852969e-17],
    [-0.3, -0.328626759459127427638914, 1.328626759459127427638914],
    [-1.7, -0.9837904585907745636262426, 1.983790458590774563626243],
    [-3.2, -0.9999939742388482379050283, 1.999993974238848237905028],
  ];

  it("erf has absolute error < 1e-15 and erfc relative error < 1e-14", () => {
    for (const [x, e, c] of table) {
      expect(Math.abs(erf(x) - e), `erf(${x})`).toBeLessThan(1e-15);
      expect(Math.abs(erfc(x) - c) / c, `erfc(${x})`).toBeLessThan(1e-14);
      expect(erf(-x)).toBe(-erf(x)); // odd
    }
  });

  it("erfc keeps relative accuracy in the far tail", () => {
    const tail: [number, number][] = [
      [7, 4.18382560777941439861401e-23],
      [10, 2.088487583762544757000786e-45],
      [20, 5.395865611607900928934999e-176],
      [26, 5.663192408856142846475728e-296],
    ];
    for (const [x, c] of tail) expect(Math.abs(erfc(x) - c) / c, `erfc(${x})`).toBeLessThan(1e-14);
    expect(erf(7)).toBe(1);
    expect(erfc(-30)).toBe(2);
    expect(erfc(30)).toBe(0);
  });

  it("gelu is 0.5·x·(1 + erf(x/√2)) to full precision", () => {
    const known: [number, number][] = [
      [-8, -4.976768459417427298812796e-15],
      [-4, -0.000126684967332479685015083],
      [-1.5, -0.1002108019032870990067411],
      [-0.5, -0.1542687693629934481811477],
      [0.25, 0.1496765814207309310602134],
      [1, 0.8413447460685429485852325],
      [3, 2.995950305905109716420045],
    ];
    for (const [x, g] of known) expect(Math.abs(gelu(x) - g), `gelu(${x})`).toBeLessThan(1e-15);
    expect(Math.abs(gelu(-8) - -4.976768459417427298812796e-15) / 4.98e-15).toBeLessThan(1e-13);
  });
});

/**
 * One dense input x [dim], one scenario value, a single expert under all() (so w = 1 and
 * h' = expert(x)), and one identity tower per output column: task `h<k>` reads σ(h'_k).
 */
function singleExpertModel(expert: ReturnType<typeof mlp>, inDim: number, eps = 1e-3) {
  const out = expert.units.length ? expert.units[expert.units.length - 1]! : inDim;
  return model({
    features: [{ kind: "dense", name: "x", dim: inDim }],
    scenarios: [level("page", ["only"], { experts: 1, expert, select: ALL })],
    tasks: Array.from({ length: out }, (_, k) => ({ name: `h${k}`, tower: mlp([]) })),
    batchNorm: { eps },
  });
}

function towerPicks(out: number): Record<string, number[][] | number[]> {
  const v: Record<string, number[][] | number[]> = {};
  for (let k = 0; k < out; k++) v[`towers.h${k}.out.weight`] = [Array.from({ length: out }, (_, j) => (j === k ? 1 : 0))];
  return v;
}

describe("batch norm", () => {
  for (const eps of [1e-3, 0.25]) {
    it(`expert layer: γ (y − μ) / sqrt(σ² + ε) + β with ε = ${eps}`, () => {
      const spec = singleExpertModel(mlp([2], "none", true), 2, eps);
      const p = "scenario_layers.page.0.experts.0.layers.0";
      const weights = weightsFrom(spec, {
        [`${p}.linear.weight`]: [[1, 2], [-0.5, 0.25]],
        [`${p}.bn.weight`]: [1.5, -2],
        [`${p}.bn.bias`]: [0.125, 1],
        [`${p}.bn.running_mean`]: [0.5, -1],
        [`${p}.bn.running_var`]: [4, 0.0625],
        ...towerPicks(2),
      });
      const batch = { rows: 1, features: { x: new Float32Array([3, -1]) }, scenarios: { page: ids([0]) } };
      const res = evaluateReference(spec, weights, batch);
      // y = W x = [3 − 2, −1.5 − 0.25] = [1, −1.75]
      const h0 = (1.5 * (1 - 0.5)) / Math.sqrt(4 + eps) + 0.125;
      const h1 = (-2 * (-1.75 - -1)) / Math.sqrt(0.0625 + eps) + 1;
      expectClose([res.outputs.h0![0]!, res.outputs.h1![0]!], [sigmoid(h0), sigmoid(h1)]);
    });
  }

  it("gate: BN follows the output projection, then the softmax", () => {
    const spec = model({
      features: [{ kind: "dense", name: "x", dim: 1 }],
      scenarios: [
        level("page", ["only"], { experts: 2, expert: mlp([1], "none"), gate: gate({ batchNorm: true }), select: ALL }),
      ],
      tasks: [{ name: "ctr", tower: mlp([]) }],
    });
    const g = "scenario_layers.page.0.gates.0";
    const weights = weightsFrom(spec, {
      "scenarios.page.weight": [[2]],
      [`${g}.out.weight`]: [[1, 0.5], [-1, 0]], // z = [x + 0.5·c, −x] on [x; c]
      [`${g}.bn.weight`]: [2, 0.5],
      [`${g}.bn.bias`]: [0, 1],
      [`${g}.bn.running_mean`]: [1, 0],
      [`${g}.bn.running_var`]: [1, 3],
    });
    const batch = { rows: 1, features: { x: new Float32Array([0.5]) }, scenarios: { page: ids([0]) } };
    const t = evaluateReference(spec, weights, batch).layers[0]!;
    // z = [0.5 + 1, −0.5]; BN: [2·(1.5 − 1)/sqrt(1 + ε), 0.5·(−0.5)/sqrt(3 + ε) + 1]
    const z0 = (2 * 0.5) / Math.sqrt(1 + 1e-3);
    const z1 = (0.5 * -0.5) / Math.sqrt(3 + 1e-3) + 1;
    expectClose(row(t.weights, 0, 2), [sigmoid(z0 - z1), sigmoid(z1 - z0)]);
  });
});

describe("activations", () => {
  const xs = [-3, -0.5, 0, 0.75, 2.5];
  const expected: Record<Activation, (x: number) => number> = {
    relu: (x) => Math.max(0, x),
    tanh: Math.tanh,
    leaky_relu: (x) => (x < 0 ? 0.01 * x : x),
    // values from mpmath: x/2·erfc(−x/√2)
    gelu: (x) =>
      ({
        [-3]: -0.004049694094890283579955444,
        [-0.5]: -0.1542687693629934481811477,
        [0]: 0,
        [0.75]: 0.5800294857173488505047034,
        [2.5]: 2.484475836685559662082555,
      })[x]!,
    sigmoid: (x) => 1 / (1 + Math.exp(-x)),
    none: (x) => x,
  };
  for (const act of Object.keys(expected) as Activation[]) {
    it(`${act} in an expert MLP`, () => {
      // expert: act(1·x), the tower reads it through σ
      const spec = singleExpertModel(mlp([1], act, false, false), 1);
      const weights = weightsFrom(spec, {
        "scenario_layers.page.0.experts.0.layers.0.linear.weight": [[1]],
        ...towerPicks(1),
      });
      const batch = {
        rows: xs.length,
        features: { x: new Float32Array(xs) },
        scenarios: { page: ids(xs.map(() => 0)) },
      };
      const res = evaluateReference(spec, weights, batch);
      expectClose(res.outputs.h0!, xs.map((x) => sigmoid(expected[act](x))));
    });
  }

  it("a gate's hidden layer is act(Linear) with bias, before the output projection", () => {
    const spec = model({
      features: [{ kind: "dense", name: "x", dim: 1 }],
      scenarios: [
        level("page", ["only"], {
          experts: 2,
          expert: mlp([1], "none"),
          gate: gate({ units: [2], act: "tanh", bias: false }),
          select: ALL,
        }),
      ],
      tasks: [{ name: "ctr", tower: mlp([]) }],
    });
    const g = "scenario_layers.page.0.gates.0";
    const weights = weightsFrom(spec, {
      "scenarios.page.weight": [[1]],
      [`${g}.layers.0.linear.weight`]: [[1, 1], [2, 0]], // on [x; c]
      [`${g}.layers.0.linear.bias`]: [0.5, -1],
      [`${g}.out.weight`]: [[1, 0], [0, -1]],
    });
    const batch = { rows: 1, features: { x: new Float32Array([0.25]) }, scenarios: { page: ids([0]) } };
    const t = evaluateReference(spec, weights, batch).layers[0]!;
    // hidden = tanh([0.25 + 1 + 0.5, 0.5 − 1]) = tanh([1.75, −0.5]); z = [tanh(1.75), tanh(0.5)]
    const z0 = Math.tanh(1.75);
    const z1 = Math.tanh(0.5);
    expectClose(row(t.weights, 0, 2), [sigmoid(z0 - z1), sigmoid(z1 - z0)]);
  });
});

describe("inputs", () => {
  const spec = model({
    features: [
      { kind: "categorical", name: "item", vocab: 4, dim: 2 },
      { kind: "dense", name: "price", dim: 3 },
    ],
    scenarios: [level("page", ["home", "search", "cart"], { dim: 2, experts: 3, expert: mlp([4]), select: { kind: "topK", k: 2 } })],
    tasks: [{ name: "ctr", tower: mlp([3]) }],
  });
  const weights = randomWeights(spec, 7);

  it("categorical ids outside [0, vocab) read a zero embedding", () => {
    const bad = [-1, 4, 100, -(2 ** 62), 2 ** 62];
    const price = new Float32Array(bad.length * 3).map((_, i) => (i % 5) - 2);
    const page = ids(bad.map((_, r) => r % 3));
    const a = evaluateReference(spec, weights, { rows: bad.length, features: { item: ids(bad), price }, scenarios: { page } });
    // the same rows with id 0, against weights whose embedding row 0 is zeroed
    const zeroed = new Map(weights);
    const table = Float32Array.from(weights.get("features.item.weight")!.data as Float32Array);
    table.fill(0, 0, 2);
    zeroed.set("features.item.weight", f32([4, 2], table));
    const b = evaluateReference(spec, zeroed, {
      rows: bad.length,
      features: { item: ids(bad.map(() => 0)), price },
      scenarios: { page },
    });
    expect(Array.from(a.outputs.ctr!)).toEqual(Array.from(b.outputs.ctr!));
    // and the real row 0 differs (the embedding matters)
    const c = evaluateReference(spec, weights, { rows: bad.length, features: { item: ids(bad.map(() => 0)), price }, scenarios: { page } });
    expect(Array.from(c.outputs.ctr!)).not.toEqual(Array.from(a.outputs.ctr!));
  });

  it("an out-of-range scenario index is an error naming the level, value and row", () => {
    const batch = randomBatch(spec, 20, 1);
    batch.scenarios.page![12] = 5n;
    const e = thrown(() => evaluateReference(spec, weights, batch));
    expect(e.diagnostics).toEqual([{ code: "AESM3101", path: "page", message: "scenario index 5 out of range [0, 3) at row 12" }]);
    batch.scenarios.page![12] = 0n;
    batch.scenarios.page![3] = -1n;
    expect(thrown(() => evaluateReference(spec, weights, batch)).message).toBe(
      "page: scenario index -1 out of range [0, 3) at row 3",
    );
  });

  it("missing and misshapen inputs are errors naming them", () => {
    const batch = randomBatch(spec, 4, 1);
    const { price: _, ...noPrice } = batch.features;
    const e = thrown(() => evaluateReference(spec, weights, { ...batch, features: noPrice, scenarios: {} }));
    expect(e.diagnostics.map((d) => [d.code, d.path])).toEqual([
      ["AESM3102", "price"],
      ["AESM3102", "page"],
    ]);
    expect(e.diagnostics[0]!.message).toBe('missing input "price"');
    const short = thrown(() =>
      evaluateReference(spec, weights, { ...batch, features: { ...batch.features, price: new Float32Array(11) } }),
    );
    expect(short.diagnostics.map((d) => [d.code, d.path])).toEqual([["AESM3103", "price"]]);
    expect(short.diagnostics[0]!.message).toContain("must be 12 float32 values ([rows=4, dim=3])");
    const wrongIds = thrown(() =>
      evaluateReference(spec, weights, { ...batch, features: { ...batch.features, item: ids([1, 2]) } }),
    );
    expect(wrongIds.diagnostics.map((d) => [d.code, d.path])).toEqual([["AESM3103", "item"]]);
  });

  it("missing and misshapen weights are errors naming the tensor", () => {
    const batch = randomBatch(spec, 2, 1);
    const missing = new Map(weights);
    missing.delete("scenario_layers.page.0.gates.1.out.weight");
    const e = thrown(() => evaluateReference(spec, missing, batch));
    expect(e.diagnostics.map((d) => [d.code, d.path])).toEqual([["AESM2101", "scenario_layers.page.0.gates.1.out.weight"]]);
    const bad = new Map(weights);
    bad.set("towers.ctr.out.weight", f32([3, 1]));
    const e2 = thrown(() => evaluateReference(spec, bad, batch));
    expect(e2.diagnostics).toEqual([
      { code: "AESM2103", path: "towers.ctr.out.weight", message: "tensor has shape [3, 1], expected [1, 3]" },
    ]);
  });
});

describe("scenario tree and task layers", () => {
  it("the level-l gate sees c_l = [emb_0(s_0); …; emb_l(s_l)]", () => {
    const spec = model({
      features: [{ kind: "dense", name: "x", dim: 1 }],
      scenarios: [
        // level 0: 2 experts; gate input [h; emb_page] (width 2)
        level("page", ["home", "search"], { dim: 1, experts: 2, expert: mlp([1], "none"), select: ALL }),
        // level 1: 3 experts; gate input [h; emb_page; emb_slot] (width 1 + 1 + 2)
        level("slot", ["a", "b", "c"], { dim: 2, experts: 3, expert: mlp([1], "none"), select: ALL }),
      ],
      tasks: [{ name: "ctr", tower: mlp([]) }],
    });
    const page = [[0.5], [-1]];
    const slot = [
      [1, 0],
      [0, 1],
      [0.25, -0.75],
    ];
    const values: Record<string, number[][] | number[]> = { "scenarios.page.weight": page, "scenarios.slot.weight": slot };
    // level 0, both gates: z = [emb_page, −emb_page]
    for (const g of [0, 1]) values[`scenario_layers.page.0.gates.${g}.out.weight`] = [[0, 1], [0, -1]];
    // level 1, every gate: z = [emb_page, emb_slot[0], emb_slot[1]]
    for (const g of [0, 1, 2])
      values[`scenario_layers.slot.0.gates.${g}.out.weight`] = [
        [0, 1, 0, 0],
        [0, 0, 1, 0],
        [0, 0, 0, 1],
      ];
    const weights = weightsFrom(spec, values);
    const s0 = [0, 0, 0, 1, 1, 1];
    const s1 = [0, 1, 2, 0, 1, 2];
    const res = evaluateReference(spec, weights, {
      rows: 6,
      features: { x: new Float32Array(6).fill(1) },
      scenarios: { page: ids(s0), slot: ids(s1) },
    });
    const [t0, t1] = res.layers;
    expect([t0!.path, t1!.path]).toEqual(["scenario_layers.page.0", "scenario_layers.slot.0"]);
    const softmax = (z: number[]) => {
      const e = z.map(Math.exp);
      const s = e.reduce((a, b) => a + b);
      return e.map((v) => v / s);
    };
    for (let r = 0; r < 6; r++) {
      const p = page[s0[r]!]![0]!;
      expectClose(row(t0!.weights, r, 2), softmax([p, -p]));
      expectClose(row(t1!.weights, r, 3), softmax([p, slot[s1[r]!]![0]!, slot[s1[r]!]![1]!]));
    }
  });

  it("task layers: shared gates read [h_t; c_{L-1}; task_emb(t)], streams stay separate", () => {
    const spec = model({
      features: [{ kind: "dense", name: "x", dim: 1 }],
      scenarios: [level("page", ["only"], { dim: 1, experts: 1, expert: mlp([1], "none"), select: ALL })],
      tasks: [
        { name: "ctr", tower: mlp([]) },
        { name: "cvr", tower: mlp([]) },
      ],
      taskLayers: { layers: 2, experts: 2, dim: 1, expert: mlp([1], "none"), gate: gate(), select: ALL },
    });
    const values: Record<string, number[][] | number[]> = {
      "scenario_layers.page.0.experts.0.layers.0.linear.weight": [[1]], // h_L = x
      "tasks.weight": [[1], [-2]],
      "towers.ctr.out.weight": [[1]],
      "towers.cvr.out.weight": [[1]],
    };
    for (const i of [0, 1]) {
      // experts: e0 = 2·h, e1 = 0.5·h
      values[`task_layers.${i}.experts.0.layers.0.linear.weight`] = [[2]];
      values[`task_layers.${i}.experts.1.layers.0.linear.weight`] = [[0.5]];
      // gate input [h_t; c; task_emb(t)]: gate 0 → z = [temb, 0]; gate 1 → z = [3·temb, 0]
      values[`task_layers.${i}.gates.0.out.weight`] = [[0, 0, 1], [0, 0, 0]];
      values[`task_layers.${i}.gates.1.out.weight`] = [[0, 0, 3], [0, 0, 0]];
    }
    const weights = weightsFrom(spec, values);
    const x = 0.75;
    const res = evaluateReference(spec, weights, {
      rows: 1,
      features: { x: new Float32Array([x]) },
      scenarios: { page: ids([0]) },
    });
    expect(res.layers.map((l) => l.path)).toEqual(selectionLayerPaths(spec));
    // ctr: index 0, gate 0 on temb = 1: z = [1, 0] → w = [σ(1), σ(−1)]
    // cvr: index 1, gate 1 on temb = −2: z = [−6, 0] → w = [σ(−6), σ(6)]
    const wCtr = [sigmoid(1), sigmoid(-1)];
    const wCvr = [sigmoid(-6), sigmoid(6)];
    for (const i of [0, 1]) {
      expectClose(row(res.layers[1 + 2 * i]!.weights, 0, 2), wCtr);
      expectClose(row(res.layers[2 + 2 * i]!.weights, 0, 2), wCvr);
    }
    // each layer scales a stream by k_t = 2·w0 + 0.5·w1, twice: p_t = σ(k_t²·x)
    const k = (w: number[]) => 2 * w[0]! + 0.5 * w[1]!;
    expectClose([res.outputs.ctr![0]!, res.outputs.cvr![0]!], [sigmoid(k(wCtr) ** 2 * x), sigmoid(k(wCvr) ** 2 * x)]);
  });
});
