// initWeights: determinism, per-role scales, and — with a small float64 forward pass of
// a one-level model written here — that gates and towers come out sensitive, not flat.

import { describe, expect, it } from "vitest";
import { Rng } from "../../src/core/random.ts";
import type { Activation, MlpSpec, ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import {
  GATE_LOGIT_STD,
  TOWER_LOGIT_STD,
  TOWER_LAYER_GAIN,
  TOWER_OUT_NORM,
  activationGain,
  calibrateTowers,
  canonicalLayout,
  initWeights,
  mixedExperts,
  mixtureGain,
  towerOutNorm,
  writeSafetensors,
} from "../../src/weights/index.ts";
import type { Weights } from "../../src/weights/layout.ts";
import { mlp, oneLevelSpec, referenceSpec } from "./specs.ts";

function stats(xs: ArrayLike<number>): { mean: number; std: number; min: number; max: number } {
  let s = 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < xs.length; i++) {
    s += xs[i]!;
    min = Math.min(min, xs[i]!);
    max = Math.max(max, xs[i]!);
  }
  const mean = s / xs.length;
  let v = 0;
  for (let i = 0; i < xs.length; i++) v += (xs[i]! - mean) ** 2;
  return { mean, std: Math.sqrt(v / xs.length), min, max };
}

const data = (w: Weights, name: string) => {
  const t = w.get(name);
  if (!t) throw new Error(`no tensor ${name}`);
  return t.data as Float32Array;
};

describe("determinism", () => {
  it("the same seed gives identical bytes; another seed does not", () => {
    const s = referenceSpec();
    const a = writeSafetensors(initWeights(s, 42));
    expect(writeSafetensors(initWeights(s, 42))).toEqual(a);
    expect(writeSafetensors(initWeights(s, 43))).not.toEqual(a);
  });

  it("pins the first values, so a change to the generator or the scales is noticed", () => {
    const w = initWeights(oneLevelSpec(), 0);
    const first = (n: string) => Array.from(data(w, n).slice(0, 3)).map((v) => Number(v.toPrecision(6)));
    expect(first("features.item.weight")).toEqual([-0.584385, 0.0970799, -0.401436]);
    expect(first("scenario_layers.page.0.gates.0.out.weight")).toEqual([-1.51003, -0.174948, 0.165574]);
    expect(first("towers.ctr.out.weight")).toEqual([1.41096, -1.46022, -1.50165]);
  });

  it("follows the canonical layout exactly", () => {
    const s = referenceSpec();
    const w = initWeights(s, 1);
    const layout = canonicalLayout(s);
    expect([...w.keys()]).toEqual(layout.map((t) => t.name));
    for (const slot of layout) {
      const t = w.get(slot.name)!;
      expect(t.dtype).toBe("float32");
      expect(t.shape).toEqual(slot.shape);
      expect(t.data.length).toBe(slot.shape.reduce((a, b) => a * b, 1));
    }
  });

  it("every tensor draws its own numbers: siblings differ, other parts are unaffected by a new task", () => {
    const s = oneLevelSpec();
    const w = initWeights(s, 5);
    const e0 = data(w, "scenario_layers.page.0.experts.0.layers.0.linear.weight");
    const e1 = data(w, "scenario_layers.page.0.experts.1.layers.0.linear.weight");
    expect(e0).not.toEqual(e1);
    const more: ModelSpec = { ...s, tasks: [...s.tasks, { name: "like", tower: mlp([3]) }] };
    const w2 = initWeights(more, 5);
    for (const [k, t] of w) expect(w2.get(k)!.data).toEqual(t.data);
  });
});

describe("scales per role", () => {
  // Wide layers, so that sample statistics are tight.
  const s = oneLevelSpec({ expertUnits: [400], towerUnits: [300], experts: 64 });
  const w = initWeights(s, 7);
  const layout = canonicalLayout(s);

  it("embeddings ~ N(0, 1)", () => {
    const st = stats(data(w, "features.item.weight"));
    expect(Math.abs(st.mean)).toBeLessThan(0.5);
    expect(st.std).toBeGreaterThan(0.6);
    expect(st.std).toBeLessThan(1.4);
  });

  it("linear weights ~ N(0, gain²/fanIn), He for relu", () => {
    const st = stats(data(w, "towers.ctr.layers.0.linear.weight")); // [300, 400]
    expect(Math.abs(st.mean)).toBeLessThan(0.01);
    expect(st.std / (Math.SQRT2 / Math.sqrt(400))).toBeCloseTo(1, 1);
    expect(activationGain("tanh")).toBeCloseTo(5 / 3);
    expect(activationGain("none")).toBe(1);
  });

  it("tanh MLPs get the tanh gain", () => {
    const r = referenceSpec();
    const wr = initWeights(r, 1);
    const slot = canonicalLayout(r).find((t) => t.name === "towers.ctr.layers.0.linear.weight")!;
    const st = stats(data(wr, slot.name));
    expect(st.std / ((5 / 3) / Math.sqrt(slot.fanIn!))).toBeGreaterThan(0.7);
    expect(st.std / ((5 / 3) / Math.sqrt(slot.fanIn!))).toBeLessThan(1.3);
  });

  it("gate and tower output projections aim at their logit spreads", () => {
    const gateSlot = layout.find((t) => t.name === "scenario_layers.page.0.gates.0.out.weight")!; // [64, 9]
    expect(stats(data(w, gateSlot.name)).std / (GATE_LOGIT_STD / Math.sqrt(gateSlot.fanIn!))).toBeCloseTo(1, 0);
    // Tower output weights: zero-sum with a fixed norm.
    for (const t of s.tasks) {
      const d = data(w, `towers.${t.name}.out.weight`); // [1, 300]
      expect(Math.abs(d.reduce((a, v) => a + v, 0))).toBeLessThan(1e-4);
      expect(Math.hypot(...d)).toBeCloseTo(towerOutNorm(s, t.name), 4);
    }
  });

  it("tower output norms grow with the depth between features and tower", () => {
    expect(mixtureGain(1)).toBe(1);
    expect(mixtureGain(8)).toBeCloseTo(1 + (0.4 * 7) / 9);
    const relu = TOWER_LAYER_GAIN.relu;
    // oneLevelSpec: aesm 1 + 1 of 4 experts, one layer; towers [5] relu or none.
    expect(mixedExperts(oneLevelSpec().scenarios[0]!)).toBe(2);
    expect(towerOutNorm(oneLevelSpec(), "ctr")).toBeCloseTo(TOWER_OUT_NORM * mixtureGain(2) * relu);
    expect(towerOutNorm(oneLevelSpec({ towerUnits: [] }), "ctr")).toBeCloseTo(TOWER_OUT_NORM * mixtureGain(2));
    // referenceSpec: page 2 layers aesm(1+1 of 5), search 1 layer topK(2 of 4), task layers 2 × all(3);
    // towers [8, 4] tanh and [] relu.
    const mix = mixtureGain(2) ** 2 * mixtureGain(2) * mixtureGain(3) ** 2;
    expect(towerOutNorm(referenceSpec(), "ctr")).toBeCloseTo(TOWER_OUT_NORM * mix * TOWER_LAYER_GAIN.tanh ** 2);
    expect(towerOutNorm(referenceSpec(), "cvr")).toBeCloseTo(TOWER_OUT_NORM * mix);
  });

  it("mixedExperts counts what each policy can mix", () => {
    const layer = oneLevelSpec({ experts: 6 }).scenarios[0]!;
    expect(mixedExperts({ ...layer, select: { kind: "all" } })).toBe(6);
    expect(mixedExperts({ ...layer, select: { kind: "topK", k: 9 } })).toBe(6);
    expect(mixedExperts({ ...layer, select: { kind: "aesm", specific: 2, shared: 3, eps: 1e-9, mask: "masked" } })).toBe(5);
    expect(mixedExperts({ ...layer, select: { kind: "fixed", specific: { home: [0, 1], cart: [2] }, shared: [1, 5] } })).toBe(3);
    expect(mixedExperts({ ...layer, select: { kind: "fixed", specific: {}, shared: [] } })).toBe(1);
  });

  it("biases small and nonzero", () => {
    for (const slot of layout.filter((t) => t.role.endsWith("bias"))) {
      const st = stats(data(w, slot.name));
      expect(st.min).toBeGreaterThanOrEqual(-0.1);
      expect(st.max).toBeLessThanOrEqual(0.1);
      expect(data(w, slot.name).every((v) => v !== 0)).toBe(true);
    }
    const st = stats(data(w, "towers.ctr.layers.0.linear.bias"));
    expect(st.std).toBeGreaterThan(0.04);
  });

  it("batch norm parameters in their ranges", () => {
    const r = referenceSpec();
    const wr = initWeights(r, 3);
    const bn = canonicalLayout(r).filter((t) => t.role.startsWith("bn."));
    expect(bn.length).toBeGreaterThan(0);
    const range = {
      "bn.weight": [0.8, 1.2],
      "bn.bias": [-0.1, 0.1],
      "bn.running_mean": [-0.1, 0.1],
      "bn.running_var": [0.5, 1.5],
    };
    for (const slot of bn) {
      const [lo, hi] = range[slot.role as keyof typeof range];
      const st = stats(data(wr, slot.name));
      expect(st.min).toBeGreaterThanOrEqual(lo!);
      expect(st.max).toBeLessThanOrEqual(hi!);
    }
  });
});

// ---- an independent float64 forward pass of a one-level model (MODEL.md §3–4, mixing by `all()`) ----

function linear(w: Weights, prefix: string, x: number[]): number[] {
  const W = w.get(`${prefix}.weight`)!;
  const b = w.get(`${prefix}.bias`);
  const [out, inp] = W.shape as [number, number];
  if (x.length !== inp) throw new Error(`${prefix}: input width ${x.length}, weight expects ${inp}`);
  const y: number[] = [];
  for (let o = 0; o < out; o++) {
    let s = b ? (b.data[o] as number) : 0;
    for (let i = 0; i < inp; i++) s += (W.data[o * inp + i] as number) * x[i]!;
    y.push(s);
  }
  return y;
}

const ACT: Partial<Record<Activation, (v: number) => number>> = {
  relu: (v) => Math.max(0, v),
  tanh: Math.tanh,
  sigmoid: (v) => 1 / (1 + Math.exp(-v)),
  none: (v) => v,
};

/** act(Linear(x)) per unit layer; no batch norm. */
function runMlp(w: Weights, prefix: string, m: MlpSpec, x: number[]): number[] {
  const act = ACT[m.act];
  if (!act || m.batchNorm) throw new Error(`test forward pass lacks ${m.act}${m.batchNorm ? " with batch norm" : ""}`);
  let h = x;
  for (let j = 0; j < m.units.length; j++) h = linear(w, `${prefix}.layers.${j}.linear`, h).map(act);
  return h;
}

interface Forward {
  /** Gate logits of the row's own scenario gate, per row. */
  gateLogits: number[][];
  /** Logits of every scenario gate (G × E), per row. */
  allGates: number[][][];
  /** Tower outputs (probabilities) per task, per row. */
  outputs: number[][];
}

/** Mixing by all() whatever the spec says; only for one level, no batch norm, no task layers. */
function forward(spec: ModelSpec, w: Weights, rows: number, seed: number): Forward {
  const rng = new Rng(seed);
  const lvl = spec.scenarios[0]!;
  const out: Forward = { gateLogits: [], allGates: [], outputs: spec.tasks.map(() => []) };
  for (let r = 0; r < rows; r++) {
    const x0: number[] = [];
    for (const f of spec.features) {
      if (f.kind === "categorical") {
        const id = rng.int(0, f.vocab);
        x0.push(...Array.from(w.get(`features.${f.name}.weight`)!.data.slice(id * f.dim, (id + 1) * f.dim) as Float32Array));
      } else for (let i = 0; i < f.dim; i++) x0.push(rng.normal());
    }
    const s = rng.int(0, lvl.values.length);
    const emb = w.get(`scenarios.${lvl.name}.weight`)!;
    const c = Array.from(emb.data.slice(s * lvl.dim, (s + 1) * lvl.dim) as Float32Array);
    let h = x0;
    for (let i = 0; i < lvl.layers; i++) {
      const p = `scenario_layers.${lvl.name}.${i}`;
      const gates = lvl.values.map((_, g) => linear(w, `${p}.gates.${g}.out`, [...h, ...c]));
      if (i === 0) {
        out.allGates.push(gates);
        out.gateLogits.push(gates[s]!);
      }
      const z = gates[s]!;
      const m = Math.max(...z);
      const ez = z.map((v) => Math.exp(v - m));
      const sum = ez.reduce((a, b) => a + b, 0);
      const experts = Array.from({ length: lvl.experts }, (_, e) => runMlp(w, `${p}.experts.${e}`, lvl.expert, h));
      h = experts[0]!.map((_, k) => experts.reduce((acc, ex, e) => acc + (ez[e]! / sum) * ex[k]!, 0));
    }
    spec.tasks.forEach((t, ti) => {
      const u = runMlp(w, `towers.${t.name}`, t.tower, h);
      out.outputs[ti]!.push(1 / (1 + Math.exp(-linear(w, `towers.${t.name}.out`, u)[0]!)));
    });
  }
  return out;
}

function logitsOf(probs: number[]): number[] {
  return probs.map((p) => Math.log(p / (1 - p)));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function withActs(spec: ModelSpec, expertAct: Activation, towerAct: Activation): ModelSpec {
  return {
    ...spec,
    scenarios: spec.scenarios.map((l) => ({ ...l, expert: { ...l.expert, act: expertAct } })),
    tasks: spec.tasks.map((t) => ({ ...t, tower: { ...t.tower, act: towerAct } })),
  };
}

describe("behaviour of an initialised one-level model (float64 forward pass)", () => {
  // The forward pass above mixes by all(), so the specs say so (towerOutNorm depends on it).
  const all: SelectSpec = { kind: "all" };
  const wide = oneLevelSpec({ experts: 8, expertUnits: [32, 16], towerUnits: [16, 8], select: all });
  const cases: [string, ModelSpec][] = [
    ["one layer", oneLevelSpec({ select: all })],
    ["two stacked layers, deep towers", { ...wide, scenarios: [{ ...wide.scenarios[0]!, layers: 2 }] }],
    ["towers without hidden layers", oneLevelSpec({ towerUnits: [], select: all })],
    [
      "tanh experts and towers",
      withActs(oneLevelSpec({ experts: 6, expertUnits: [12], towerUnits: [8, 4], select: all }), "tanh", "tanh"),
    ],
    ["sigmoid tower layers", withActs(oneLevelSpec({ expertUnits: [12], towerUnits: [8], select: all }), "relu", "sigmoid")],
  ];

  for (const [label, spec] of cases) {
    it(`${label}: gate logits spread across experts, and scenarios disagree on the best expert`, () => {
      for (const seed of [1, 2, 3, 4]) {
        const f = forward(spec, initWeights(spec, seed), 300, 100 + seed);
        const meanGateStd = stats(f.gateLogits.map((z) => stats(z).std)).mean;
        expect(meanGateStd).toBeGreaterThan(1.2);
        expect(meanGateStd).toBeLessThan(4);
        const disagree = f.allGates.filter((gs) => new Set(gs.map((z) => z.indexOf(Math.max(...z)))).size > 1).length;
        expect(disagree / f.allGates.length).toBeGreaterThan(0.3);
      }
    });

    it(`${label}: tower logits spread across rows, outputs not piled at one end`, () => {
      // Data-free init cannot fix the spread exactly (see TOWER_OUT_NORM): check it over seeds.
      const spreads: number[] = [];
      const middle: number[] = [];
      for (let seed = 1; seed <= 12; seed++) {
        const f = forward(spec, initWeights(spec, seed), 200, 100 + seed);
        for (const probs of f.outputs) {
          spreads.push(stats(logitsOf(probs)).std);
          middle.push(probs.filter((p) => p > 0.1 && p < 0.9).length / probs.length);
        }
      }
      expect(median(spreads)).toBeGreaterThan(1.2);
      expect(median(spreads)).toBeLessThan(3);
      expect(spreads.filter((s) => s > 1).length / spreads.length).toBeGreaterThan(0.7);
      expect(median(middle)).toBeGreaterThan(0.5);
    });
  }

  it("calibrateTowers makes the tower logit spread exact and changes nothing else", () => {
    const spec = cases[1]![1];
    const w = initWeights(spec, 5);
    const before = forward(spec, w, 300, 77);
    const outputs = Object.fromEntries(spec.tasks.map((t, i) => [t.name, before.outputs[i]!]));
    const cal = calibrateTowers(spec, w, outputs);
    const after = forward(spec, cal, 300, 77);
    spec.tasks.forEach((t, i) => {
      const st = stats(logitsOf(after.outputs[i]!));
      expect(st.std).toBeCloseTo(TOWER_LOGIT_STD, 4);
      expect(st.mean).toBeCloseTo(w.get(`towers.${t.name}.out.bias`)!.data[0] as number, 4);
      expect(w.get(`towers.${t.name}.out.bias`)!.data[0]).not.toBe(cal.get(`towers.${t.name}.out.bias`)!.data[0]);
    });
    expect(after.gateLogits).toEqual(before.gateLogits);
    for (const [k, t] of w) if (!k.includes(".out.")) expect(cal.get(k)).toBe(t);
    expect([...cal.keys()]).toEqual([...w.keys()]);
  });
});
