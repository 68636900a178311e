// `aesm compile`: model + weights → ONNX, written atomically.

import type { Command } from "commander";
import { compileToFile } from "../../compile.ts";
import { loadModel } from "../../dsl/index.ts";
import { loadWeights } from "../../weights/index.ts";
import { intArg } from "../args.ts";
import type { CommandContext } from "../io.ts";

export function registerCompile(program: Command, { io }: CommandContext): void {
  program
    .command("compile")
    .description("compile a model and its weights to ONNX")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-w, --weights <file>", "weights (.safetensors, canonical layout)")
    .requiredOption("-o, --output <file>", "ONNX file to write")
    .option("--opset <n>", "ONNX opset, 13–21", intArg("--opset", 1, 1000), 17)
    .option("--no-selection-outputs", "omit the select:<layer> diagnostic outputs")
    .action(async (modelPath: string, o: { weights: string; output: string; opset: number; selectionOutputs: boolean }) => {
      const { spec } = await loadModel(modelPath);
      const weights = await loadWeights(o.weights, spec);
      const s = compileToFile(spec, weights, o.output, { opset: o.opset, selectionOutputs: o.selectionOutputs });
      io.out(
        `wrote ${s.path}: opset ${s.opset}, ${s.nodes} nodes, ${s.parameters.toLocaleString("en-US")} parameters, ${(s.bytes / 1024).toFixed(1)} KiB\n`,
      );
    });
}
