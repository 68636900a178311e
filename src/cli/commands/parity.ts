// `aesm parity`: the float64 reference against the compiled ONNX on onnxruntime.
// Exit 0 within tolerance, 1 on a mismatch, 2 on bad usage or input.

import { type Command, Option } from "commander";
import { loadModel } from "../../dsl/index.ts";
import { DEFAULT_NEAR_TIE, DEFAULT_TOLERANCE, formatParityReport, runParity } from "../../parity/index.ts";
import { loadWeights } from "../../weights/index.ts";
import { intArg, nonNegativeNumber } from "../args.ts";
import type { CommandContext } from "../io.ts";

interface ParityFlags {
  weights: string;
  onnx: string;
  provider: "cpu" | "cuda" | "tensorrt";
  rows: number;
  seed: number;
  atol: number;
  rtol: number;
  nearTie: number;
}

export function registerParity(program: Command, { io, setExitCode }: CommandContext): void {
  program
    .command("parity")
    .description("compare a compiled ONNX with the float64 reference (exit 0 pass, 1 mismatch, 2 bad input)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-w, --weights <file>", "weights (.safetensors)")
    .requiredOption("--onnx <file>", "compiled ONNX model")
    .addOption(new Option("--provider <name>", "onnxruntime execution provider").choices(["cpu", "cuda", "tensorrt"]).default("cpu"))
    .option("--rows <n>", "rows of generated input", intArg("--rows", 1, 10_000_000), 2048)
    .option("--seed <n>", "input seed", intArg("--seed", 0, 2 ** 32 - 1), 0)
    .option("--atol <x>", "absolute tolerance", nonNegativeNumber("--atol"), DEFAULT_TOLERANCE.atol)
    .option("--rtol <x>", "relative tolerance (an element fails only when both are exceeded)", nonNegativeNumber("--rtol"), DEFAULT_TOLERANCE.rtol)
    .option("--near-tie <x>", "selection score gap below which a flipped selection is a near-tie", nonNegativeNumber("--near-tie"), DEFAULT_NEAR_TIE)
    .action(async (modelPath: string, o: ParityFlags) => {
      const { spec } = await loadModel(modelPath);
      const weights = await loadWeights(o.weights, spec);
      const result = await runParity(spec, weights, o.onnx, {
        rows: o.rows,
        seed: o.seed,
        provider: o.provider,
        tol: { atol: o.atol, rtol: o.rtol },
        nearTie: o.nearTie,
      });
      io.out(formatParityReport(result, `parity: ${modelPath} vs ${o.onnx} (seed ${o.seed})`) + "\n");
      setExitCode(result.pass ? 0 : 1);
    });
}
