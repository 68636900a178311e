// `aesm init-weights`: seeded random weights in the canonical layout, with towers
// calibrated on generated rows so that outputs spread over (0, 1) and parity is sensitive.

import type { Command } from "commander";
import { loadModel } from "../../dsl/index.ts";
import { generateInputs } from "../../parity/inputs.ts";
import { evaluateReference } from "../../reference/index.ts";
import { calibrateTowers, checkCheckpointSize, initWeights, saveWeights } from "../../weights/index.ts";
import { intArg } from "../args.ts";
import type { CommandContext } from "../io.ts";

/** Rows used to calibrate the towers' output scale. */
const CALIBRATION_ROWS = 1024;

export function registerInitWeights(program: Command, { io }: CommandContext): void {
  program
    .command("init-weights")
    .description("write seeded random weights in the canonical layout (safetensors)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-o, --output <file>", "weights file to write (.safetensors)")
    .option("--seed <n>", "random seed", intArg("--seed", 0, 2 ** 32 - 1), 0)
    .option("--no-calibrate", "skip rescaling the towers on generated rows")
    .action(async (modelPath: string, o: { output: string; seed: number; calibrate: boolean }) => {
      const { spec } = await loadModel(modelPath);
      checkCheckpointSize(spec, modelPath);
      let weights = initWeights(spec, o.seed);
      if (o.calibrate) {
        // Typical rows only: extreme dense values would dominate the logit spread.
        const batch = generateInputs(spec, { rows: CALIBRATION_ROWS, seed: o.seed, extreme: 0, outOfRange: 0 });
        weights = calibrateTowers(spec, weights, evaluateReference(spec, weights, batch).outputs);
      }
      saveWeights(o.output, weights, { "aesm.seed": String(o.seed), "aesm.model": spec.name });
      let params = 0;
      for (const t of weights.values()) params += t.data.length;
      io.out(`wrote ${o.output}: ${weights.size} tensors, ${params.toLocaleString("en-US")} parameters (seed ${o.seed})\n`);
    });
}
