// The pass manager as users reach it through src/compile.ts: levels, explicit pass lists,
// statistics, print-after, and verify-each naming a pass that breaks the IR or the numbers.

import { describe, expect, it } from "vitest";
import { InvalidArgumentError } from "commander";
import {
  VERIFY_EACH_DEFAULTS,
  compileModel,
  formatPassStats,
  lowerToGraph,
  excusedRows,
  resolvePasses,
  verifySample,
} from "../../src/compile.ts";
import { optLevelArg, passListArg, printAfterArg } from "../../src/cli/commands/compile.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import { f32 } from "../../src/core/tensor.ts";
import { Graph } from "../../src/ir/graph.ts";
import { printGraph } from "../../src/ir/print.ts";
import { PASSES, PassError } from "../../src/passes/index.ts";
import { type PassStat, diffOutputs, passesForLevel, runPipeline } from "../../src/passes/pipeline.ts";
import { initWeights } from "../../src/weights/index.ts";
import { testModels } from "../../fixtures/models.ts";
import { mistypedOutput, throwingPass, towerBiasTimesTwo } from "./broken-passes.ts";

const model = testModels.find((m) => m.name === "aesm-two-levels")!.spec;
const weights = initWeights(model, 1);

/** y = (x·W) + (x·W) with the MatMul written twice, and a dead Relu: cse merges one node, its DCE drops the Relu. */
function duplicatedWork(): Graph {
  const g = new Graph("dup");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
  const w = g.addConstant("w", f32([2, 3], [1, 2, 3, 4, 5, 6]));
  const a = g.op("MatMul", [x, w], {}, { names: ["a"] });
  const b = g.op("MatMul", [x, w], {}, { names: ["b"] });
  g.op("Relu", [x], {}, { names: ["dead"] });
  g.setOutput("y", g.op("Add", [a, b], {}, { names: ["y"] }));
  return g;
}

describe("levels", () => {
  it("-O0 is the lowering as it is; -O1 is a subset of -O2; every id is registered once", () => {
    expect(passesForLevel(0)).toEqual([]);
    const o1 = passesForLevel(1).map((p) => p.id);
    const o2 = passesForLevel(2).map((p) => p.id);
    expect(o1.length).toBeGreaterThan(0);
    for (const id of o1) expect(o2).toContain(id);
    const ids = PASSES.map((p) => p.id);
    expect(new Set(ids).size).toBe(ids.length);
    for (const p of PASSES) {
      expect(p.id).toMatch(/^[a-z0-9]+(-[a-z0-9]+)*$/);
      expect(p.summary.length).toBeGreaterThan(0);
    }
  });

  it("resolves the default level to -O2 and an explicit list in its order, repeats allowed", () => {
    expect(resolvePasses({}).map((p) => p.id)).toEqual(passesForLevel(2).map((p) => p.id));
    expect(resolvePasses({ optLevel: 1 }).map((p) => p.id)).toEqual(passesForLevel(1).map((p) => p.id));
    expect(resolvePasses({ optLevel: 1, passes: ["dce", "cse", "dce"] }).map((p) => p.id)).toEqual(["dce", "cse", "dce"]);
    expect(resolvePasses({ passes: [] })).toEqual([]);
  });

  it("rejects an unknown pass id, naming it and the known ones", () => {
    let err: unknown;
    try {
      resolvePasses({ passes: ["cse", "fuse-everything"] });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AesmError);
    expect((err as AesmError).message).toMatch(/unknown pass "fuse-everything" \(known: .*\bcse\b/);
  });
});

describe("flag parsing", () => {
  it("-O takes 0, 1, 2 (also written O2)", () => {
    expect(optLevelArg("0")).toBe(0);
    expect(optLevelArg("2")).toBe(2);
    expect(optLevelArg("O1")).toBe(1);
    for (const bad of ["3", "-1", "", "fast", "2.0"]) expect(() => optLevelArg(bad)).toThrow(InvalidArgumentError);
    expect(() => optLevelArg("3")).toThrow('-O must be 0, 1 or 2, got "3"');
  });

  it("--passes splits on commas, trims, drops empty items, keeps order and repeats", () => {
    expect(passListArg("cse,dce")).toEqual(["cse", "dce"]);
    expect(passListArg(" dce , cse,,dce ")).toEqual(["dce", "cse", "dce"]);
    expect(passListArg("")).toEqual([]);
    expect(() => passListArg("cse,nope")).toThrow(/^unknown pass "nope" \(known: /);
  });

  it("--print-after accumulates repeats and comma lists, and knows `all`", () => {
    expect(printAfterArg("cse", undefined)).toEqual(["cse"]);
    expect(printAfterArg("dce,all", ["cse"])).toEqual(["cse", "dce", "all"]);
    expect(() => printAfterArg("nope", undefined)).toThrow(/unknown pass "nope"/);
  });
});

describe("statistics", () => {
  it("records nodes and parameters before and after, time and counters per pass, chained", () => {
    const g = duplicatedWork();
    const { stats } = runPipeline(g, ["cse", "dce"].map((id) => PASSES.find((p) => p.id === id)!));
    expect(stats.map(({ ms, ...s }) => s)).toEqual([
      { id: "cse", changed: true, nodesBefore: 4, nodesAfter: 2, paramsBefore: 6, paramsAfter: 6, counters: { "nodes-merged": 1 } },
      { id: "dce", changed: false, nodesBefore: 2, nodesAfter: 2, paramsBefore: 6, paramsAfter: 6, counters: { "nodes-removed": 0, "constants-removed": 0 } },
    ]);
    for (const s of stats) expect(s.ms).toBeGreaterThanOrEqual(0);
  });

  it("chains nodes and parameters from the lowering through every pass of -O2", () => {
    const lowered = lowerToGraph(model, weights);
    const nodes = lowered.nodes.length;
    const params = lowered.parameterCount();
    const r = compileModel(model, weights);
    expect(r.passes).toEqual(passesForLevel(2).map((p) => p.id));
    expect(r.stats[0]!.nodesBefore).toBe(nodes);
    expect(r.stats[0]!.paramsBefore).toBe(params);
    for (let i = 1; i < r.stats.length; i++) {
      expect(r.stats[i]!.nodesBefore).toBe(r.stats[i - 1]!.nodesAfter);
      expect(r.stats[i]!.paramsBefore).toBe(r.stats[i - 1]!.paramsAfter);
    }
    expect(r.stats.at(-1)!.nodesAfter).toBe(r.graph.nodes.length);
    expect(r.stats.at(-1)!.paramsAfter).toBe(r.graph.parameterCount());
  });

  it("prints a table: numbers right-aligned, counters last, a total row", () => {
    const stats: PassStat[] = [
      { id: "cse", changed: true, nodesBefore: 1200, nodesAfter: 980, paramsBefore: 70440, paramsAfter: 70440, ms: 12.34, counters: { "nodes-merged": 220 } },
      { id: "fold-batch-norm", changed: true, nodesBefore: 980, nodesAfter: 900, paramsBefore: 70440, paramsAfter: 70000, ms: 1, counters: { folded: 20, skipped: 0 } },
    ];
    expect(formatPassStats(stats)).toBe(
      [
        "pass             changed        nodes       parameters     time  counters",
        "cse              yes      1,200 → 980  70,440 → 70,440  12.3 ms  nodes-merged 220",
        "fold-batch-norm  yes        980 → 900  70,440 → 70,000   1.0 ms  folded 20",
        "total                     1,200 → 900  70,440 → 70,000  13.3 ms",
        "",
      ].join("\n"),
    );
    expect(formatPassStats([])).toContain("(no passes)");
  });
});

describe("print-after", () => {
  it("hands the printer's text of the graph after each named pass, once per run of it", () => {
    const printed: [string, string][] = [];
    const { graph } = runPipeline(duplicatedWork(), ["cse", "dce", "cse"].map((id) => PASSES.find((p) => p.id === id)!), {
      printAfter: ["cse"],
      print: (id, text) => printed.push([id, text]),
    });
    expect(printed.map(([id]) => id)).toEqual(["cse", "cse"]);
    expect(printed[1]![1]).toBe(printGraph(graph));
    expect(printed[0]![1]).not.toMatch(/Relu|%b /);
  });

  it("reaches compileModel's print callback", () => {
    const seen: string[] = [];
    compileModel(model, weights, { passes: ["cse", "dce"], printAfter: ["dce"], print: (id) => seen.push(id) });
    expect(seen).toEqual(["dce"]);
  });
});

describe("verify-each", () => {
  it("passes every -O2 pass on the fixture", () => {
    expect(() => compileModel(model, weights, { verifyEach: true })).not.toThrow();
  });

  it("names a pass that changes the numbers, with the output and the size of the change", () => {
    const broken = towerBiasTimesTwo("ctr");
    let err: unknown;
    try {
      compileModel(model, weights, { passes: ["cse", broken, "dce"], verifyEach: true });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PassError);
    expect((err as PassError).pass).toBe("tower-bias-x2");
    expect((err as PassError).message).toMatch(/^pass tower-bias-x2: changed output ctr by \d\.\d{3}e-\d+ at element \d+ \(allowed 0\.00001\)$/);
  });

  it("lets the same broken pass through without verify-each (the check is what catches it)", () => {
    expect(() => compileModel(model, weights, { passes: [towerBiasTimesTwo("ctr")] })).not.toThrow();
  });

  it("names a pass whose result the IR verifier rejects", () => {
    expect(() => compileModel(model, weights, { passes: ["cse", mistypedOutput], verifyEach: true })).toThrow(
      /^pass mistyped-output: IR verification failed after mistyped-output: /,
    );
  });

  it("names a pass that throws, with or without verify-each", () => {
    for (const verifyEach of [true, false]) {
      let err: unknown;
      try {
        compileModel(model, weights, { passes: ["cse", throwingPass], verifyEach });
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PassError);
      expect((err as PassError).message).toBe("pass throwing-pass: threw TypeError: cannot read properties of undefined (reading 'inputs')");
    }
  });

  it("without verify-each, a pass that breaks the IR is caught by the final verification", () => {
    expect(() => compileModel(model, weights, { passes: ["cse", mistypedOutput] })).toThrow(
      /IR verification failed after the pipeline \(--verify-each names the pass that broke it\)/,
    );
  });

  it("samples 64 generated rows with the reference's margins", () => {
    const s = verifySample(model, weights);
    expect(VERIFY_EACH_DEFAULTS).toEqual({ rows: 64, seed: 0, atol: 1e-5, nearTie: 1e-4 });
    expect(s.batch.rows).toBe(64);
    expect(s.margin.length).toBe(64);
    expect(verifySample(model, weights, { rows: 8, seed: 3 }).batch.rows).toBe(8);
  });

  it("excuses a row only when its selection flips on a near-tie", () => {
    const sample = { batch: { rows: 3, features: {}, scenarios: {} }, margin: Float64Array.from([Infinity, 0, 5e-5]), selected: new Map() };
    const t = (data: number[]) => ({ dtype: "float32" as const, shape: [3, 2], data: Float32Array.from(data) });
    const p = (data: number[]) => ({ dtype: "float32" as const, shape: [3], data: Float32Array.from(data) });
    const excuse = excusedRows(sample, 1e-4);
    // rows 0 and 1 flip; row 0 has a clear margin, row 1 is an exact tie; row 2 is a near-tie that does not flip
    const before = { ctr: p([0.1, 0.2, 0.3]), "select:l": t([1, 0, 1, 0, 0.5, 0.5]) };
    const after = { ctr: p([0.4, 0.5, 0.3]), "select:l": t([0, 1, 0, 1, 0.5, 0.5]) };
    expect([...excuse(before, after)]).toEqual([0, 1, 0]);
    expect(diffOutputs(before, after, excuse(before, after))[0]).toMatchObject({ output: "select:l", maxAbs: 1, index: 0 });
    // without selection outputs every near-tie row is excused
    expect([...excuse({ ctr: before.ctr }, { ctr: after.ctr })]).toEqual([0, 1, 1]);
  });
});
