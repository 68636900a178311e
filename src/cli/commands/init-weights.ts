// `aesm init-weights`: seeded random weights in the canonical layout.

import type { Command } from "commander";
import { loadModel } from "../../dsl/index.ts";
import { initWeights, saveWeights } from "../../weights/index.ts";
import { intArg } from "../args.ts";
import type { CommandContext } from "../io.ts";

export function registerInitWeights(program: Command, { io }: CommandContext): void {
  program
    .command("init-weights")
    .description("write seeded random weights in the canonical layout (safetensors)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-o, --output <file>", "weights file to write (.safetensors)")
    .option("--seed <n>", "random seed", intArg("--seed", 0, 2 ** 32 - 1), 0)
    .action(async (modelPath: string, o: { output: string; seed: number }) => {
      const { spec } = await loadModel(modelPath);
      const weights = initWeights(spec, o.seed);
      saveWeights(o.output, weights, { "aesm.seed": String(o.seed), "aesm.model": spec.name });
      let params = 0;
      for (const t of weights.values()) params += t.data.length;
      io.out(`wrote ${o.output}: ${weights.size} tensors, ${params.toLocaleString("en-US")} parameters (seed ${o.seed})\n`);
    });
}
