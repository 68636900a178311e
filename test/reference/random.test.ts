// Random models through the reference evaluator: invariants of the selection traces,
// chunking and row-order independence, unselected experts kept out of the sum, float32
// emulation against float64, and a 100k-row timing.

import { describe, expect, it } from "vitest";
import { evaluateReference } from "../../src/reference/index.ts";
import { selectionLayerPaths } from "../../src/core/batch.ts";
import type { InputBatch } from "../../src/core/batch.ts";
import type { ModelSpec, SelectSpec } from "../../src/dsl/spec.ts";
import { aesm, gate, level, mlp, model, randomBatch, randomWeights } from "./helpers.ts";

/** The model of the timing brief: 2 categorical (dim 8) + dense 6; levels of 2 and 3 values; 2 tasks, 2 task layers. */
function benchModel(select: { page: SelectSpec; slot: SelectSpec; tasks: SelectSpec }): ModelSpec {
  return model({
    features: [
      { kind: "categorical", name: "user", vocab: 1000, dim: 8 },
      { kind: "categorical", name: "item", vocab: 5000, dim: 8 },
      { kind: "dense", name: "stats", dim: 6 },
    ],
    scenarios: [
      level("page", ["home", "search"], { dim: 4, experts: 6, expert: mlp([16], "relu", true), gate: gate({ batchNorm: true }), select: select.page }),
      level("slot", ["top", "mid", "bottom"], { dim: 4, experts: 8, expert: mlp([16], "relu", true), gate: gate({ batchNorm: true }), select: select.slot }),
    ],
    tasks: [
      { name: "ctr", tower: mlp([8]) },
      { name: "cvr", tower: mlp([8]) },
    ],
    taskLayers: { layers: 2, experts: 4, dim: 4, expert: mlp([16], "relu", true), gate: gate({ batchNorm: true }), select: select.tasks },
  });
}

const AESM = { page: aesm(2, 1), slot: aesm(2, 2), tasks: aesm(1, 1) };

function sliceBatch(b: InputBatch, from: number, to: number, spec: ModelSpec): InputBatch {
  const features: InputBatch["features"] = {};
  for (const f of spec.features) {
    const d = b.features[f.name]!;
    features[f.name] = f.kind === "categorical" ? d.slice(from, to) : d.slice(from * f.dim, to * f.dim);
  }
  const scenarios: InputBatch["scenarios"] = {};
  for (const l of spec.scenarios) scenarios[l.name] = b.scenarios[l.name]!.slice(from, to);
  return { rows: to - from, features, scenarios };
}

/** The given rows of a batch, in the given order (copies). */
function pickRows(b: InputBatch, rows: number[], spec: ModelSpec): InputBatch {
  const features: InputBatch["features"] = {};
  for (const f of spec.features) {
    const d = b.features[f.name]!;
    if (f.kind === "categorical") features[f.name] = BigInt64Array.from(rows, (r) => (d as BigInt64Array)[r]!);
    else {
      const x = new Float32Array(rows.length * f.dim);
      rows.forEach((r, i) => x.set((d as Float32Array).subarray(r * f.dim, (r + 1) * f.dim), i * f.dim));
      features[f.name] = x;
    }
  }
  const scenarios: InputBatch["scenarios"] = {};
  for (const l of spec.scenarios) scenarios[l.name] = BigInt64Array.from(rows, (r) => b.scenarios[l.name]![r]!);
  return { rows: rows.length, features, scenarios };
}

// generous timeouts: these run ~1e7–1e9 multiply-adds on whatever CI core they get
describe("random models", { timeout: 60_000 }, () => {
  const spec = benchModel(AESM);
  const weights = randomWeights(spec, 11);
  const batch = randomBatch(spec, 2500, 12);
  const res = evaluateReference(spec, weights, batch);

  it("traces follow selectionLayerPaths and satisfy the selection invariants", () => {
    expect(res.layers.map((l) => l.path)).toEqual(selectionLayerPaths(spec));
    const ks = [
      ...Array(1).fill([2, 1]),
      ...Array(1).fill([2, 2]),
      ...Array(4).fill([1, 1]),
    ] as [number, number][];
    // plain checks collected into one list: an expect() per element would be slow
    const bad: string[] = [];
    res.layers.forEach((t, li) => {
      const [kSp, kSh] = ks[li]!;
      const E = t.experts;
      for (let r = 0; r < batch.rows; r++) {
        let sum = 0;
        let n = 0;
        for (let e = 0; e < E; e++) {
          const w = t.weights[r * E + e]!;
          sum += w;
          n += t.selected[r * E + e]!;
          // masked: unselected experts get exactly 0
          if (!t.selected[r * E + e] && w !== 0) bad.push(`${t.path} row ${r}: w[${e}] = ${w} unselected`);
        }
        if (!(Math.abs(sum - 1) < 1e-12)) bad.push(`${t.path} row ${r}: Σw = ${sum}`);
        if (n < Math.max(kSp, kSh) || n > kSp + kSh) bad.push(`${t.path} row ${r}: |A| = ${n}`);
        if (!(t.margin[r]! >= 0 && Number.isFinite(t.margin[r]!))) bad.push(`${t.path} row ${r}: margin ${t.margin[r]}`);
      }
    });
    expect(bad.slice(0, 5)).toEqual([]);
    for (const t of spec.tasks) expect(res.outputs[t.name]!.every((p) => p > 0 && p < 1)).toBe(true);
  });

  it("does not depend on how rows are chunked", () => {
    for (const [from, to] of [
      [0, 7],
      [1020, 1030],
      [2040, 2500],
    ] as const) {
      const part = evaluateReference(spec, weights, sliceBatch(batch, from, to, spec));
      for (const t of spec.tasks) expect(Array.from(part.outputs[t.name]!)).toEqual(Array.from(res.outputs[t.name]!.subarray(from, to)));
      part.layers.forEach((l, i) => {
        const E = l.experts;
        expect(Array.from(l.weights)).toEqual(Array.from(res.layers[i]!.weights.subarray(from * E, to * E)));
      });
    }
  });

  it("a row's results do not depend on the other rows of its batch (expert blocks, row pairs)", () => {
    // reversed, with the first row alone and in a 3-row batch: each expert sees other blocks
    const order = Array.from({ length: 1500 }, (_, i) => 1499 - i);
    for (const rows of [order, [0], [5, 0, 9]]) {
      const part = evaluateReference(spec, weights, pickRows(batch, rows, spec));
      for (const t of spec.tasks) expect(Array.from(part.outputs[t.name]!)).toEqual(rows.map((r) => res.outputs[t.name]![r]!));
      part.layers.forEach((l, i) => {
        const E = l.experts;
        const ref = res.layers[i]!;
        expect(Array.from(l.weights)).toEqual(rows.flatMap((r) => Array.from(ref.weights.subarray(r * E, (r + 1) * E))));
        expect(Array.from(l.margin)).toEqual(rows.map((r) => ref.margin[r]!));
      });
    }
  });

  it("an expert that no row selects stays out of the sum, even with non-finite weights", () => {
    // page experts 3 and 4 are in no fixed set: w = 0 on every row
    const s = benchModel({
      page: { kind: "fixed", specific: { home: [0, 1], search: [2] }, shared: [5] },
      slot: aesm(2, 1),
      tasks: aesm(1, 1),
    });
    const w = randomWeights(s, 5);
    const b = randomBatch(s, 200, 6);
    const clean = evaluateReference(s, w, b);
    for (const e of [3, 4]) {
      const name = `scenario_layers.page.0.experts.${e}.layers.0.linear.weight`;
      const t = w.get(name)!;
      w.set(name, { ...t, data: new Float32Array(t.data.length).fill(e === 3 ? NaN : Infinity) });
    }
    const poisoned = evaluateReference(s, w, b);
    for (const t of s.tasks) {
      expect(Array.from(poisoned.outputs[t.name]!)).toEqual(Array.from(clean.outputs[t.name]!));
      expect(poisoned.outputs[t.name]!.every(Number.isFinite)).toBe(true);
    }
  });

  it("float32 emulation agrees with float64 within 1e-5 where the selections agree", () => {
    const r32 = evaluateReference(spec, weights, batch, { precision: "float32" });
    let agree = 0;
    let worst = 0;
    let notFloat32 = 0;
    for (let r = 0; r < batch.rows; r++) {
      const same = res.layers.every((l, i) => {
        const E = l.experts;
        for (let e = 0; e < E; e++) if (l.selected[r * E + e] !== r32.layers[i]!.selected[r * E + e]) return false;
        return true;
      });
      if (!same) continue;
      agree++;
      for (const t of spec.tasks) {
        const a = res.outputs[t.name]![r]!;
        const b = r32.outputs[t.name]![r]!;
        if (Math.fround(b) !== b) notFloat32++;
        worst = Math.max(worst, Math.abs(a - b));
      }
    }
    console.log(`float32 vs float64: ${agree}/${batch.rows} rows select alike, worst |Δp| = ${worst.toExponential(2)}`);
    expect(notFloat32).toBe(0); // the emulation yields float32 values
    expect(agree).toBeGreaterThanOrEqual(0.99 * batch.rows);
    expect(worst).toBeLessThan(1e-5);
    expect(worst).toBeGreaterThan(0); // the emulation really rounds
  });

  it("reference mask and the other policies run on the same model", () => {
    for (const sel of [
      { page: aesm(2, 1, "reference"), slot: aesm(3, 2, "reference"), tasks: aesm(1, 1, "reference") },
      { page: { kind: "all" }, slot: { kind: "topK", k: 3 }, tasks: { kind: "topK", k: 2 } },
      {
        page: { kind: "fixed", specific: { home: [0, 1], search: [2] }, shared: [5] },
        slot: { kind: "fixed", specific: { top: [0], mid: [1], bottom: [2, 3] }, shared: [7] },
        tasks: { kind: "fixed", specific: { ctr: [0], cvr: [1] }, shared: [3] },
      },
    ] as const) {
      const s = benchModel(sel as unknown as typeof AESM);
      const out = evaluateReference(s, randomWeights(s, 3), randomBatch(s, 300, 4));
      let worst = 0;
      for (const l of out.layers)
        for (let r = 0; r < 300; r++) {
          let sum = 0;
          for (let e = 0; e < l.experts; e++) sum += l.weights[r * l.experts + e]!;
          worst = Math.max(worst, Math.abs(sum - 1));
        }
      expect(worst).toBeLessThan(1e-12);
    }
  });

  it("100k rows of the small model (timing logged)", () => {
    const big = randomBatch(spec, 100_000, 21);
    const t0 = performance.now();
    const cpu0 = process.cpuUsage();
    const out = evaluateReference(spec, weights, big);
    const cpu = process.cpuUsage(cpu0);
    console.log(
      `reference, 100k rows (~1.0e9 multiply-adds if every expert ran on every row): ${(performance.now() - t0).toFixed(0)} ms wall, ${((cpu.user + cpu.system) / 1000).toFixed(0)} ms cpu`,
    );
    expect(out.outputs.ctr!.length).toBe(100_000);
    expect(Number.isFinite(out.outputs.cvr![99_999]!)).toBe(true);
  }, 120_000);
});
