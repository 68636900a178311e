// The differential fuzzer in the suite: a short fixed-seed run must find nothing new; a bug
// planted in a pass must be found, shrunk to a small model and saved as a replayable reproducer.

import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import {
  type FuzzCase,
  caseSpec,
  failureSignature,
  listReproducers,
  makeReproducer,
  randomCase,
  randomModel,
  runCase,
  runFuzz,
  saveReproducer,
  shrinkCase,
  type KnownIssue,
  unexplained,
} from "../../src/fuzz/index.ts";
import { parseModel } from "../../src/dsl/parse.ts";
import type { Pass } from "../../src/passes/pass.ts";

const work = mkdtempSync(join(tmpdir(), "aesm-fuzz-test-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

/** Cases of the suite's run: about 20–40 s on one core. */
const SUITE_CASES = 16;
const SUITE_SEED = 20_241_128;

describe("generator", () => {
  it("makes valid models covering the family", () => {
    const seen = new Set<string>();
    for (let s = 0; s < 400; s++) {
      const spec = parseModel(randomModel(s));
      seen.add(`levels ${spec.scenarios.length}`);
      seen.add(`tasks ${spec.tasks.length}`);
      seen.add(`task layers ${spec.taskLayers?.layers ?? 0}`);
      for (const l of [...spec.scenarios, ...(spec.taskLayers ? [spec.taskLayers] : [])]) {
        seen.add(l.select.kind === "aesm" ? `aesm ${l.select.mask}` : l.select.kind);
        if (l.experts === 1 || l.experts === 32) seen.add(`experts ${l.experts}`);
        seen.add(`act ${l.expert.act}`);
        seen.add(`bn ${l.expert.batchNorm} bias ${l.expert.bias}`);
        if (l.gate.units.length) seen.add("gate mlp");
        if (l.select.kind === "topK" && l.select.k === l.experts) seen.add("k = E");
      }
    }
    for (const want of [
      "levels 1", "levels 2", "levels 3", "tasks 1", "tasks 4", "task layers 0", "task layers 3",
      "aesm masked", "aesm reference", "all", "topK", "fixed", "experts 1", "experts 32", "k = E",
      "act relu", "act tanh", "act leaky_relu", "act gelu", "act sigmoid", "act none",
      "bn true bias true", "bn true bias false", "bn false bias true", "bn false bias false", "gate mlp",
    ])
      expect(seen, want).toContain(want);
  });

  it("is deterministic per seed", () => {
    expect(JSON.stringify(randomCase(77))).toBe(JSON.stringify(randomCase(77)));
    expect(JSON.stringify(randomCase(77))).not.toBe(JSON.stringify(randomCase(78)));
  });
});

describe("short fixed-seed run", () => {
  it(`${SUITE_CASES} cases × 3 levels × 3 opsets: no new failure`, async () => {
    // Unshrunk: a failure here names its case seed; `npm run fuzz -- --case <seed>` shrinks and saves it.
    const summary = await runFuzz({ seconds: 600, maxCases: SUITE_CASES, seed: SUITE_SEED, shrink: false });
    expect(summary.cases).toBe(SUITE_CASES);
    expect(summary.failures.map((f) => `${f.signature}: ${f.first.target}: ${f.first.message} (case seed ${f.caseSeed})`)).toEqual([]);
    // Most rows are compared, not excused: the check has teeth.
    expect(summary.excusedRows).toBeLessThan(summary.rows * 0.2);
    // 3 levels × (interpreter + 3 opsets × (onnxruntime + read-back)) + -O2 as served (interpreter, onnxruntime)
    expect(summary.targets).toBe(SUITE_CASES * 23);
  }, 300_000);
});

/** A planted bug: shifts every tower's output bias by 0.05 (a wrong constant, as a buggy fold would make). */
const shiftTowerBias: Pass = {
  id: "planted-bug",
  summary: "adds 0.05 to tower output biases",
  run(graph) {
    let changed = false;
    for (const c of graph.constants)
      if (/^towers\..*\.out\.bias$/.test(c.name)) {
        c.data = { ...c.data!, data: Float32Array.from(c.data!.data as Float32Array, (v) => v + 0.05) };
        changed = true;
      }
    return { graph, changed };
  },
};

describe("a planted bug", () => {
  it("is found, shrunk to a minimal model, saved and replayed", async () => {
    const c: FuzzCase = randomCase(4242);
    c.options.levels = [2];
    c.options.opsets = [17];
    const first = await runCase(c, { workDir: work, passes: [shiftTowerBias] });
    expect(first.ok).toBe(false);
    const signature = failureSignature(first.mismatches[0]!);
    expect(signature).toBe("output:interp");

    const fails = async (x: FuzzCase) => {
      const r = await runCase(x, { workDir: work, passes: [shiftTowerBias], opsets: [] });
      const same = r.mismatches.filter((m) => failureSignature(m) === signature);
      return { failing: same.length > 0, rows: [...new Set(same.map((m) => m.row!))] };
    };
    const shrunk = await shrinkCase(c, { fails, maxMs: 60_000 });
    const spec = caseSpec(shrunk.c);
    // The bias shift needs nothing but one level, one task and one row to show.
    expect(spec.scenarios.length).toBe(1);
    expect(spec.tasks.length).toBe(1);
    expect(spec.taskLayers).toBeNull();
    expect(spec.features.length).toBe(1);
    expect(spec.scenarios[0]!.experts).toBe(1);
    expect(shrunk.c.inputs.keep?.length ?? shrunk.c.inputs.rows).toBe(1);

    const dir = join(work, "saved");
    const path = saveReproducer(dir, makeReproducer(shrunk.c, first.mismatches, signature, { runSeed: 0, caseSeed: 4242, shrinkSteps: shrunk.steps }));
    expect(readdirSync(dir)).toHaveLength(1);
    const [{ r }] = listReproducers(dir) as [{ path: string; r: ReturnType<typeof makeReproducer> }];
    expect(r.case).toEqual(shrunk.c);
    expect(path.endsWith(".json")).toBe(true);
    // Replayed: fails with the planted pass, passes without it.
    expect((await runCase(r.case, { workDir: work, passes: [shiftTowerBias] })).ok).toBe(false);
    expect((await runCase(r.case, { workDir: work })).ok).toBe(true);
  }, 180_000);

  it("is set aside when a known issue explains its rows, and only on those rows", async () => {
    const c = randomCase(4242);
    c.options.levels = [2];
    c.options.opsets = [];
    const report = await runCase(c, { workDir: work, passes: [shiftTowerBias] });
    const rows = new Set(report.mismatches.map((m) => m.row!));
    const issue = (explained: Set<number>): KnownIssue => ({ id: "planted", summary: "", owner: "", explains: () => explained });
    expect(unexplained(c, report.mismatches, [issue(rows)])).toEqual({ rest: [], issues: ["planted"] });
    const first = [...rows][0]!;
    const partial = unexplained(c, report.mismatches, [issue(new Set([first]))]);
    expect(partial.rest.length).toBeGreaterThan(0);
    expect(partial.rest.every((m) => m.row !== first)).toBe(true);
  });
});
