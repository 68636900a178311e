// Semantic errors found after a model file runs point back to the line that declared the
// offending part: through the CLI, exact messages with file, line and column, exit 2, no stack.

import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { parseModel, toModelInput } from "../../src/dsl/parse.ts";
import { loadModel, modelPathOfTensor } from "../../src/dsl/load.ts";
import { initWeights, saveWeights } from "../../src/weights/index.ts";
import { type Project, SMALL_MODEL, expectNoStack, runCli, userProject } from "./helpers.ts";

let project: Project;
beforeAll(() => {
  project = userProject();
});
afterAll(() => project.remove());

/** SMALL_MODEL with `from` replaced by `to`; the line numbers below are SMALL_MODEL's. */
function variant(from: string, to: string): string {
  if (!SMALL_MODEL.includes(from)) throw new Error(`SMALL_MODEL has no ${JSON.stringify(from)}`);
  return SMALL_MODEL.replace(from, to);
}

async function inspectFails(file: string, ...flags: string[]): Promise<string> {
  const r = await runCli(["inspect", file, ...flags]);
  expect(r.code).toBe(2);
  expect(r.out).toBe("");
  expectNoStack(r.err);
  return r.err;
}

describe("semantic errors point at the declaring line", { timeout: 120_000 }, () => {
  it("an aesm policy asking for more experts than the layer has", async () => {
    const file = project.write("too-many.ts", variant("specific: 1, shared: 1", "specific: 5, shared: 1"));
    expect(await inspectFails(file)).toBe(
      `error[AESM1050]: ${file}:15:22: scenarios.page.select.specific: must be ≤ experts (4), got 5\n`,
    );
  });

  it("a tower width of 0", async () => {
    const file = project.write("tower0.ts", variant("ctr: { tower: mlp([2]) }", "ctr: { tower: mlp([0]) }"));
    expect(await inspectFails(file)).toBe(`error[AESM1021]: ${file}:20:24: tasks.ctr.tower.units.0: must be ≥ 1, got 0\n`);
  });

  it("a scenario level with one value", async () => {
    const file = project.write("one-value.ts", variant('values: ["home", "search"]', 'values: ["home"]'));
    expect(await inspectFails(file)).toBe(
      `error[AESM1031]: ${file}:11:7: scenarios.page.values: must list at least 2 values, got 1\n`,
    );
  });

  it("a name used twice: a feature and a scenario level", async () => {
    const file = project.write("twice.ts", variant("x: dense(3)", "page: dense(3)"));
    expect(await inspectFails(file)).toBe(
      `error[AESM1042]: ${file}:10:5: scenarios.page: name "page" is already used by feature "page" (features, scenario levels and tasks share one namespace)\n`,
    );
  });

  it("a name used twice: one value of a level", async () => {
    const file = project.write("value-twice.ts", variant('values: ["home", "search"]', 'values: ["home", "home"]'));
    expect(await inspectFails(file)).toBe(`error[AESM1043]: ${file}:11:24: scenarios.page.values.1: duplicate value "home"\n`);
  });
});

describe("weights that do not fit point at the model part that declares the tensor", { timeout: 120_000 }, () => {
  /** A checkpoint for SMALL_MODEL changed by `edit` (applied to its input form). */
  async function checkpointFor(name: string, edit: (m: ReturnType<typeof toModelInput>) => void): Promise<string> {
    const { spec } = await loadModel(project.write("base.ts", SMALL_MODEL));
    const input = toModelInput(spec);
    edit(input);
    const path = join(project.dir, name);
    saveWeights(path, initWeights(parseModel(input), 1));
    return path;
  }

  it("a checkpoint with fewer experts: the missing ones point at `experts:`", async () => {
    const w = await checkpointFor("three.safetensors", (m) => {
      (m.scenarios.page as { experts: number }).experts = 3;
    });
    const file = project.write("model.ts", SMALL_MODEL);
    const at = (pos: string, tensor: string, message: string) => `error[${message.startsWith("missing") ? "AESM2101" : "AESM2103"}]: ${file}:${pos}: ${tensor}: ${message} (in ${w})`;
    expect((await inspectFails(file, "--weights", w)).split("\n")).toEqual([
      // experts: 4 (line 13) declares expert 3, which the checkpoint lacks
      at("13:7", "scenario_layers.page.0.experts.3.layers.0.linear.weight", "missing tensor (expected shape [4, 5])"),
      at("13:7", "scenario_layers.page.0.experts.3.layers.0.linear.bias", "missing tensor (expected shape [4])"),
      // the gates (no `gate:` key: the level, line 10, declares them) have one logit per expert
      at("10:5", "scenario_layers.page.0.gates.0.out.weight", "shape [3, 7], expected [4, 7]"),
      at("10:5", "scenario_layers.page.0.gates.0.out.bias", "shape [3], expected [4]"),
      at("10:5", "scenario_layers.page.0.gates.1.out.weight", "shape [3, 7], expected [4, 7]"),
      at("10:5", "scenario_layers.page.0.gates.1.out.bias", "shape [3], expected [4]"),
      "",
    ]);
  });

  it("a checkpoint with wider experts: the misshapen ones point at `expert:`", async () => {
    const w = await checkpointFor("wide.safetensors", (m) => {
      (m.scenarios.page as { expert: { units: readonly number[] } }).expert.units = [5];
    });
    const file = project.write("model.ts", SMALL_MODEL);
    const lines = (await inspectFails(file, "--weights", w)).split("\n");
    // expert: mlp([4]) (line 14) declares the width the checkpoint has as 5
    expect(lines[0]).toBe(
      `error[AESM2103]: ${file}:14:7: scenario_layers.page.0.experts.0.layers.0.linear.weight: shape [5, 5], expected [4, 5] (in ${w})`,
    );
    expect(lines.filter((l) => l.includes(":14:7: scenario_layers.page.0.experts."))).toHaveLength(8);
    // downstream, the task layers' experts and gates read that width (line 18: `expert:` at col 37, the part at col 3)
    expect(lines).toContain(`error[AESM2103]: ${file}:18:37: task_layers.0.experts.0.layers.0.linear.weight: shape [3, 5], expected [3, 4] (in ${w})`);
    expect(lines).toContain(`error[AESM2103]: ${file}:18:3: task_layers.0.gates.1.out.weight: shape [2, 9], expected [2, 8] (in ${w})`);
  });

  it("a JSON model file: the same mapping, located in the JSON", async () => {
    const w = await checkpointFor("three-json.safetensors", (m) => {
      (m.scenarios.page as { experts: number }).experts = 3;
    });
    const { spec } = await loadModel(project.write("base.ts", SMALL_MODEL));
    const file = project.write("model.json", JSON.stringify(toModelInput(spec), null, 2));
    const line = JSON.stringify(toModelInput(spec), null, 2).split("\n").findIndex((l) => l.includes('"experts": 4')) + 1;
    const first = (await inspectFails(file, "--weights", w)).split("\n")[0];
    expect(first).toBe(
      `error[AESM2101]: ${file}:${line}:7: scenario_layers.page.0.experts.3.layers.0.linear.weight: missing tensor (expected shape [4, 5]) (in ${w})`,
    );
  });

  it("tensors that are no part of the model keep the weights file", async () => {
    const { spec } = await loadModel(project.write("base.ts", SMALL_MODEL));
    const weights = initWeights(spec, 1);
    weights.set("extra.weight", { dtype: "float32", shape: [1], data: new Float32Array(1) });
    const w = join(project.dir, "extra.safetensors");
    saveWeights(w, weights);
    expect(await inspectFails(project.write("model.ts", SMALL_MODEL), "--weights", w)).toBe(
      `error[AESM2102]: ${w}: extra.weight: unexpected tensor (not part of this model)\n`,
    );
  });
});

describe("modelPathOfTensor: canonical names (MODEL.md §6) → the declaring part", () => {
  it.each<[string, string, string | undefined]>([
    ["features.user.weight", "AESM2103", "features.user"],
    ["scenarios.page.weight", "AESM2103", "scenarios.page"],
    ["tasks.weight", "AESM2103", "taskLayers.dim"],
    ["scenario_layers.page.0.experts.1.layers.0.linear.weight", "AESM2103", "scenarios.page.expert"],
    ["scenario_layers.page.0.experts.1.layers.0.linear.weight", "AESM2101", "scenarios.page.experts"],
    ["scenario_layers.page.0.experts.9.layers.0.linear.weight", "AESM2103", "scenarios.page.experts"],
    ["scenario_layers.page.3.experts.0.layers.0.linear.weight", "AESM2102", "scenarios.page.layers"],
    ["scenario_layers.page.0.gates.1.out.weight", "AESM2103", "scenarios.page.gate"],
    ["scenario_layers.page.0.gates.2.out.weight", "AESM2102", "scenarios.page.values"],
    ["scenario_layers.nope.0.gates.0.out.weight", "AESM2102", "scenarios"],
    ["task_layers.0.experts.1.layers.0.linear.bias", "AESM2104", "taskLayers.expert"],
    ["task_layers.0.gates.2.out.weight", "AESM2102", "tasks"],
    ["towers.cvr.out.weight", "AESM2103", "tasks.cvr.tower"],
    ["something.else", "AESM2102", undefined],
  ])("%s (%s) → %s", async (tensor, code, path) => {
    const { spec } = await loadModel(project.write("base.ts", SMALL_MODEL));
    expect(modelPathOfTensor(spec, tensor, code)).toBe(path);
  });
});
