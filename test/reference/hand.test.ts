// Hand-worked cases for the reference evaluator: every number below is derived in the
// comments from MODEL.md §3 and §5 and checked to 1e-12.

import { describe, expect, it } from "vitest";
import { evaluateReference } from "../../src/reference/index.ts";
import { aesm, gate, ids, level, mlp, model, row, sigmoid, weightsFrom } from "./helpers.ts";

const EPS = 1e-9;
const TOL = 1e-12;

function expectClose(actual: ArrayLike<number>, expected: number[], tol = TOL): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!;
    const e = expected[i]!;
    if (!(Math.abs(a - e) <= tol)) throw new Error(`index ${i}: got ${a}, expected ${e} (|Δ| = ${Math.abs(a - e)})`);
  }
}

/** KL(p ‖ r) = Σ_g p_g log(p_g / r_g), written out for the expected values. */
const kl = (p: number[], r: number[]): number => p.reduce((s, pg, g) => s + pg * Math.log(pg / r[g]!), 0);

describe("1 level, 2 scenarios, 3 experts, aesm(1, 1): worked by hand", () => {
  // x: dense [2]; page ∈ {home, search} with indicator table [[0.5], [-1]].
  // Experts: mlp([2], relu) with bias. Gates: no hidden layer, out Linear(3 → 3) with bias 0.
  // Tower for ctr: no units, out Linear(2 → 1) = [1, 2], bias 1.
  const spec = model({
    features: [{ kind: "dense", name: "x", dim: 2 }],
    scenarios: [
      level("page", ["home", "search"], { dim: 1, experts: 3, expert: mlp([2], "relu"), gate: gate(), select: aesm(1, 1) }),
    ],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
  const p = "scenario_layers.page.0";
  const weights = weightsFrom(spec, {
    "scenarios.page.weight": [[0.5], [-1]],
    // e0: y = relu([x1, x2]);  e1: relu([x1 + x2, −x1 + 0.5]);  e2: relu([0.5·x2 − 1, 2·x1])
    [`${p}.experts.0.layers.0.linear.weight`]: [[1, 0], [0, 1]],
    [`${p}.experts.0.layers.0.linear.bias`]: [0, 0],
    [`${p}.experts.1.layers.0.linear.weight`]: [[1, 1], [-1, 0]],
    [`${p}.experts.1.layers.0.linear.bias`]: [0, 0.5],
    [`${p}.experts.2.layers.0.linear.weight`]: [[0, 0.5], [2, 0]],
    [`${p}.experts.2.layers.0.linear.bias`]: [-1, 0],
    // gate input [x1, x2, c]; gate 0: z = [x1 + 2c, 0, 0.5·x2]; gate 1: z = [0, 0, 2c]
    [`${p}.gates.0.out.weight`]: [[1, 0, 2], [0, 0, 0], [0, 0.5, 0]],
    [`${p}.gates.1.out.weight`]: [[0, 0, 0], [0, 0, 0], [0, 0, 2]],
    "towers.ctr.out.weight": [[1, 2]],
    "towers.ctr.out.bias": [1],
  });
  // both rows: x = [1, 2]; row 0 is home (c = 0.5), row 1 is search (c = −1)
  const batch = { rows: 2, features: { x: new Float32Array([1, 2, 1, 2]) }, scenarios: { page: ids([0, 1]) } };
  const res = evaluateReference(spec, weights, batch);
  const trace = res.layers[0]!;

  it("row 0 (home): Z, P, KL scores, sets, weights and output", () => {
    // Experts at x = [1, 2]: e0 = [1, 2], e1 = relu([3, −0.5]) = [3, 0], e2 = relu([0, 2]) = [0, 2].
    // Gate input [1, 2, 0.5]: Z[0] = [1 + 1, 0, 1] = [2, 0, 1];  Z[1] = [0, 0, 1].
    // P = softmax over the gates, per expert:
    //   e0: softmax([2, 0]) = [σ(2), σ(−2)] = [0.8808, 0.1192];  e1: [0.5, 0.5];  e2: softmax([1, 1]) = [0.5, 0.5]
    const P = [
      [sigmoid(2), sigmoid(-2)],
      [0.5, 0.5],
      [0.5, 0.5],
    ];
    // specific, q = [1 + ε, ε]: sp_e = KL(q ‖ P[:,e] + ε)
    //   sp_0 ≈ −log σ(2) = 0.1269;  sp_1 = sp_2 ≈ log 2 = 0.6931  →  SP = {e0}
    const q = [1 + EPS, EPS];
    const sp = P.map((pe) => kl(q, pe.map((v) => v + EPS)));
    expect(sp[0]).toBeCloseTo(0.126928, 5);
    // shared, u = [0.5, 0.5]: sh_e = KL(u ‖ P[:,e])
    //   sh_0 = 0.5·log(0.25 / (σ(2)·σ(−2))) = 0.4338;  sh_1 = sh_2 = 0 (a tie: e1 wins, lower index)  →  SH = {e1}
    const sh = P.map((pe) => kl([0.5, 0.5], pe));
    expect(sh[0]).toBeCloseTo(0.5 * Math.log(0.25 / (sigmoid(2) * sigmoid(-2))), 14);
    expect(sh[1]).toBe(0);
    expect(row(trace.selected, 0, 3)).toEqual([1, 1, 0]); // A = {e0, e1}
    // masked softmax of Z[0] = [2, 0, ·] over A: w = [σ(2), σ(−2), 0]
    const w0 = sigmoid(2);
    const w1 = sigmoid(-2);
    expectClose(row(trace.weights, 0, 3), [w0, w1, 0]);
    // h' = w0·[1, 2] + w1·[3, 0] = [w0 + 3·w1, 2·w0]; logit = h'_0 + 2·h'_1 + 1 = 5·w0 + 3·w1 + 1 ≈ 5.7616
    expectClose([res.outputs.ctr![0]!], [sigmoid(5 * w0 + 3 * w1 + 1)]);
    // margin: specific boundary |sp_1 − sp_0|, shared boundary |sh_2 − sh_1| = 0 → 0 (a near-tie)
    expect(trace.margin[0]).toBe(0);
    expect(sp[1]! - sp[0]!).toBeGreaterThan(0.5);
  });

  it("row 1 (search): Z, P, KL scores, sets, weights, margin and output", () => {
    // Gate input [1, 2, −1]: Z[0] = [1 − 2, 0, 1] = [−1, 0, 1];  Z[1] = [0, 0, −2].
    // P: e0 = softmax([−1, 0]) = [σ(−1), σ(1)];  e1 = [0.5, 0.5];  e2 = softmax([1, −2]) = [σ(3), σ(−3)]
    const P = [
      [sigmoid(-1), sigmoid(1)],
      [0.5, 0.5],
      [sigmoid(3), sigmoid(-3)],
    ];
    // q = [ε, 1 + ε]: sp ≈ [−log σ(1), log 2, −log σ(−3)] = [0.3133, 0.6931, 3.0486]  →  SP = {e0}
    const q = [EPS, 1 + EPS];
    const sp = P.map((pe) => kl(q, pe.map((v) => v + EPS)));
    expect(sp[0]).toBeCloseTo(-Math.log(sigmoid(1)), 7);
    // sh = [0.5·log(0.25/(σ(1)σ(−1))), 0, 0.5·log(0.25/(σ(3)σ(−3)))] = [0.1201, 0, 0.8553]  →  SH = {e1}
    const sh = P.map((pe) => kl([0.5, 0.5], pe));
    expect(row(trace.selected, 1, 3)).toEqual([1, 1, 0]);
    // softmax of Z[1] = [0, 0, ·] over {e0, e1}: w = [0.5, 0.5, 0]
    expectClose(row(trace.weights, 1, 3), [0.5, 0.5, 0]);
    // h' = 0.5·[1, 2] + 0.5·[3, 0] = [2, 1]; logit = 2 + 2·1 + 1 = 5
    expectClose([res.outputs.ctr![1]!], [sigmoid(5)]);
    // margin = min(|sp_1 − sp_0|, |sh_0 − sh_1|) = min(0.3799, 0.1201) = sh_0
    expectClose([trace.margin[1]!], [Math.min(sp[1]! - sp[0]!, sh[0]! - sh[1]!)]);
    expectClose([trace.margin[1]!], [0.5 * Math.log(0.25 / (sigmoid(1) * sigmoid(-1)))]);
  });
});

/**
 * A model whose gate logits are constants: gate g has zero weights and bias Z[g], so every
 * row sees the same Z; expert e is x ↦ slopes[e]·x; the tower is the identity, so
 * ctr = σ(Σ_e w_e·slopes[e]·x).
 */
function constantGateModel(Z: number[][], select: Parameters<typeof level>[2]["select"], slopes: number[], values?: string[]) {
  const names = values ?? Z.map((_, g) => `s${g}`);
  const E = slopes.length;
  const spec = model({
    features: [{ kind: "dense", name: "x", dim: 1 }],
    scenarios: [level("page", names, { experts: E, expert: mlp([1], "none", false, false), gate: gate({ bias: true }), select })],
    tasks: [{ name: "ctr", tower: mlp([]) }],
  });
  const values_: Record<string, number[][] | number[]> = { "towers.ctr.out.weight": [[1]], "towers.ctr.out.bias": [0] };
  slopes.forEach((a, e) => (values_[`scenario_layers.page.0.experts.${e}.layers.0.linear.weight`] = [[a]]));
  Z.forEach((z, g) => (values_[`scenario_layers.page.0.gates.${g}.out.bias`] = z));
  return { spec, weights: weightsFrom(spec, values_) };
}

function run(m: ReturnType<typeof constantGateModel>, index: number[], x = 1) {
  const batch = {
    rows: index.length,
    features: { x: new Float32Array(index.length).fill(x) },
    scenarios: { page: ids(index) },
  };
  return evaluateReference(m.spec, m.weights, batch);
}

const softmax = (z: number[]): number[] => {
  const m = Math.max(...z);
  const e = z.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
};

describe("aesm selection details", () => {
  it("identical experts tie: the lower index is chosen in both rankings", () => {
    // experts 1 and 2 have identical gate columns, so identical sp and sh; K_sp = K_sh = 1.
    // Z[:,0] = [−3, 3] (P = [σ(−6), σ(6)]: far from both u and onehot(0)), Z[:,1] = Z[:,2] = [0.5, 0]
    const m = constantGateModel(
      [
        [-3, 0.5, 0.5],
        [3, 0, 0],
      ],
      aesm(1, 1),
      [1, 2, 4],
    );
    const res = run(m, [0]);
    const t = res.layers[0]!;
    expect(row(t.selected, 0, 3)).toEqual([0, 1, 0]); // SP = SH = {e1}: e2 ties and loses
    expectClose(row(t.weights, 0, 3), [0, 1, 0]);
    expect(t.margin[0]).toBe(0); // the boundary sits on the tie
    expectClose([res.outputs.ctr![0]!], [sigmoid(2)]);
  });

  it("an expert in both sets is counted once (masked), doubled (reference mask)", () => {
    // i = 0, K_sp = 2, K_sh = 1.
    //   e0: Z[:,0] = [1, 1]    → P = [0.5, 0.5]:   sp ≈ log 2 = 0.69,  sh = 0
    //   e1: Z[:,1] = [0.5, 1.5] → P = [σ(−1), σ(1)]: sp ≈ 1.31,         sh = 0.12
    //   e2: Z[:,2] = [0.2, 2.2] → P = [σ(−2), σ(2)]: sp ≈ 2.13,         sh = 0.43
    // SP = {e0, e1}, SH = {e0}; A = {e0, e1}.
    const Z = [
      [1, 0.5, 0.2],
      [1, 1.5, 2.2],
    ].map((r) => r.map(Math.fround));
    const slopes = [1, 2, 4];
    const masked = run(constantGateModel(Z, aesm(2, 1, "masked"), slopes), [0]);
    const tm = masked.layers[0]!;
    expect(row(tm.selected, 0, 3)).toEqual([1, 1, 0]);
    // masked: softmax over A of Z[0] = [1, 0.5] — e0 once
    const wm = [...softmax([Z[0]![0]!, Z[0]![1]!]), 0];
    expectClose(row(tm.weights, 0, 3), wm);
    expectClose([masked.outputs.ctr![0]!], [sigmoid(wm[0]! * 1 + wm[1]! * 2)]);

    // reference: m = [1 + 1, 1, −1e9] → logits [2·1, 0.5, −1e9·0.2] → softmax = [σ(1.5), σ(−1.5), 0]
    const ref = run(constantGateModel(Z, aesm(2, 1, "reference"), slopes), [0]);
    const tr = ref.layers[0]!;
    expect(row(tr.selected, 0, 3)).toEqual([1, 1, 0]);
    const wr = [sigmoid(2 * Z[0]![0]! - Z[0]![1]!), sigmoid(Z[0]![1]! - 2 * Z[0]![0]!), 0];
    expectClose(row(tr.weights, 0, 3), wr);
    expectClose([ref.outputs.ctr![0]!], [sigmoid(wr[0]! * 1 + wr[1]! * 2)]);
  });

  it("reference mask: a negative unselected logit flips to a huge positive one and wins", () => {
    // as above but Z[0, 2] = −0.2 (Z[:,2] = [−0.2, 1.8], P unchanged: still unselected).
    // logits [2, 0.5, (−0.2)·(−1e9) = 2e8] → w = [0, 0, 1] although A = {e0, e1}.
    const Z = [
      [1, 0.5, -0.2],
      [1, 1.5, 1.8],
    ].map((r) => r.map(Math.fround));
    const ref = run(constantGateModel(Z, aesm(2, 1, "reference"), [1, 2, 4]), [0]);
    const t = ref.layers[0]!;
    expect(row(t.selected, 0, 3)).toEqual([1, 1, 0]);
    expect(row(t.weights, 0, 3)).toEqual([0, 0, 1]); // exp(2 − 2e8) underflows to exactly 0
    expectClose([ref.outputs.ctr![0]!], [sigmoid(4)]);
    // the masked default is unaffected
    const masked = run(constantGateModel(Z, aesm(2, 1, "masked"), [1, 2, 4]), [0]);
    expectClose(row(masked.layers[0]!.weights, 0, 3), [...softmax([1, 0.5]), 0]);
  });

  it("the specific score uses the row's scenario index; q is not renormalised", () => {
    // G = 3, E = 2: e0 peaks on gate 2, e1 on gate 0. Row index 2 → SP = {e0}; index 0 → SP = {e1}.
    const Z = [
      [0, 2],
      [0, 0],
      [2, 0],
    ];
    const m = constantGateModel(Z, aesm(1, 0), [1, 2]);
    const res = run(m, [2, 0, 1]);
    const t = res.layers[0]!;
    expect(row(t.selected, 0, 2)).toEqual([1, 0]);
    expect(row(t.selected, 1, 2)).toEqual([0, 1]);
    // row 2, index 1: both experts have the same multiset of P values, so the same sp in exact
    // arithmetic; the sums run over the gates in different orders, so in floating point they
    // may differ by an ulp. The margin is what flags such a near-tie.
    expect(row(t.selected, 2, 2).reduce((a, b) => a + b)).toBe(1);
    expect(t.margin[2]).toBeLessThan(1e-15);
    // margin of row 0 is |sp_1 − sp_0| with q = [ε, ε, 1 + ε] exactly (sum 1 + 3ε, not renormalised)
    const P0 = softmax([0, 0, 2]); // e0's distribution over the gates
    const P1 = softmax([2, 0, 0]);
    const q = [EPS, EPS, 1 + EPS];
    const sp0 = kl(q, P0.map((v) => v + EPS));
    const sp1 = kl(q, P1.map((v) => v + EPS));
    expect(Math.abs(t.margin[0]! - Math.abs(sp1 - sp0))).toBeLessThan(1e-13);
    // with a single set of one expert, w is 1 on it
    expectClose(row(t.weights, 0, 2), [1, 0]);
  });
});

describe("the other policies", () => {
  it("all(): softmax over every expert of Z[i, :]", () => {
    const Z = [
      [0.5, -1, 2],
      [3, 0, 0],
    ];
    const res = run(constantGateModel(Z, { kind: "all" }, [1, 2, 4]), [0, 1]);
    const t = res.layers[0]!;
    expectClose(row(t.weights, 0, 3), softmax(Z[0]!));
    expectClose(row(t.weights, 1, 3), softmax(Z[1]!));
    expect(Array.from(t.selected)).toEqual([1, 1, 1, 1, 1, 1]);
    expect(Array.from(t.margin)).toEqual([Infinity, Infinity]);
    const w = softmax(Z[1]!);
    expectClose([res.outputs.ctr![1]!], [sigmoid(w[0]! + 2 * w[1]! + 4 * w[2]!)]);
  });

  it("topK(k): softmax over the k largest logits, ties to the lower index", () => {
    const Z = [
      [0.125, 0.75, 0.75, 0.25], // top-2 = {e1, e2}; boundary gap 0.75 − 0.25 = 0.5
      [0.75, 0.125, 0.75, 0.75], // three-way tie: {e0, e2}; gap 0
    ];
    const res = run(constantGateModel(Z, { kind: "topK", k: 2 }, [1, 2, 4, 8]), [0, 1]);
    const t = res.layers[0]!;
    expect(row(t.selected, 0, 4)).toEqual([0, 1, 1, 0]);
    expectClose(row(t.weights, 0, 4), [0, 0.5, 0.5, 0]);
    expect(t.margin[0]).toBe(0.5);
    expect(row(t.selected, 1, 4)).toEqual([1, 0, 1, 0]);
    expectClose(row(t.weights, 1, 4), [0.5, 0, 0.5, 0]);
    expect(t.margin[1]).toBe(0);
    expectClose([res.outputs.ctr![0]!], [sigmoid(0.5 * 2 + 0.5 * 4)]);
    // k = E: no boundary
    const all = run(constantGateModel(Z, { kind: "topK", k: 4 }, [1, 2, 4, 8]), [0]);
    expect(all.layers[0]!.margin[0]).toBe(Infinity);
    expectClose(row(all.layers[0]!.weights, 0, 4), softmax(Z[0]!));
  });

  it("fixed: A = specific[value] ∪ shared, softmax of Z[i, :] over A", () => {
    const Z = [
      [0.5, 1, 2, -1],
      [1, 0, 0.25, 3],
    ];
    const select = { kind: "fixed" as const, specific: { home: [0], search: [1, 2] }, shared: [3, 0] };
    const res = run(constantGateModel(Z, select, [1, 2, 4, 8], ["home", "search"]), [0, 1]);
    const t = res.layers[0]!;
    // home: {0} ∪ {3, 0} = {0, 3}, logits Z[0] = [0.5, ·, ·, −1]
    expect(row(t.selected, 0, 4)).toEqual([1, 0, 0, 1]);
    const wh = softmax([0.5, -1]);
    expectClose(row(t.weights, 0, 4), [wh[0]!, 0, 0, wh[1]!]);
    // search: {1, 2} ∪ {3, 0} = all four, logits Z[1]
    expect(row(t.selected, 1, 4)).toEqual([1, 1, 1, 1]);
    expectClose(row(t.weights, 1, 4), softmax(Z[1]!));
    expect(Array.from(t.margin)).toEqual([Infinity, Infinity]);
    expectClose([res.outputs.ctr![0]!], [sigmoid(wh[0]! * 1 + wh[1]! * 8)]);
  });
});
