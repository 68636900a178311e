// `aesm bisect`: when an optimised model fails parity, name the first pass that breaks it.
// Exit 1 when a pass (or the lowering itself) breaks parity, 0 when every prefix passes.

import { type Command, Option } from "commander";
import { BISECT_DEFAULTS, bisectModel, formatBisectReport } from "../../bisect.ts";
import { loadModel } from "../../dsl/index.ts";
import type { OptLevel } from "../../passes/pipeline.ts";
import { intArg, nonNegativeNumber } from "../args.ts";
import type { CommandContext } from "../io.ts";
import { loadModelWeights } from "../model-weights.ts";
import { optLevelArg, passListArg } from "./compile.ts";

interface BisectFlags {
  weights: string;
  optLevel: OptLevel;
  passes?: string[];
  rows: number;
  seed: number;
  atol: number;
  nearTie: number;
}

export function registerBisect(program: Command, { io, setExitCode }: CommandContext): void {
  program
    .command("bisect")
    .description("find the first pass that breaks parity: apply passes one at a time, check each prefix (exit 1 if one does, 0 if none)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-w, --weights <file>", "weights (.safetensors)")
    .addOption(
      new Option("-O, --opt-level <n>", "bisect this level's passes (-O1, -O2)").argParser(optLevelArg).default(2).conflicts("passes"),
    )
    .option("--passes <list>", "bisect exactly these passes, in order (comma-separated ids)", passListArg)
    .option("--rows <n>", "generated rows to check on", intArg("--rows", 1, 1_000_000), BISECT_DEFAULTS.rows)
    .option("--seed <n>", "seed of the generated rows", intArg("--seed", 0, 2 ** 32 - 1), BISECT_DEFAULTS.seed)
    .option("--atol <x>", "absolute tolerance per task output", nonNegativeNumber("--atol"), BISECT_DEFAULTS.atol)
    .option("--near-tie <x>", "selection score gap below which a flipped selection is a near-tie", nonNegativeNumber("--near-tie"), BISECT_DEFAULTS.nearTie)
    .action(async (modelPath: string, o: BisectFlags) => {
      const model = await loadModel(modelPath);
      const { spec } = model;
      const weights = await loadModelWeights(model, o.weights);
      const report = bisectModel(spec, weights, {
        ...(o.passes ? { passes: o.passes } : { optLevel: o.optLevel }),
        rows: o.rows,
        seed: o.seed,
        atol: o.atol,
        nearTie: o.nearTie,
      });
      io.out(formatBisectReport(report, o.passes ? "--passes" : `-O${o.optLevel}`));
      setExitCode(report.culprit !== null || report.baselineFails ? 1 : 0);
    });
}
