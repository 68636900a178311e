// `aesm inspect`: what a model (or a compiled ONNX file) holds and costs, for a reviewer
// before shipping; `--json` prints the same report as data.

import type { Command } from "commander";
import { formatInspectReport, inspectFile } from "../../inspect/index.ts";
import type { CommandContext } from "../io.ts";

export function registerInspect(program: Command, { io }: CommandContext): void {
  program
    .command("inspect")
    .description("parameters, FLOPs, experts, gates and policies per part of a model; inputs, outputs and ops of an ONNX file")
    .argument("<file>", "model file (.ts or .json) or ONNX file")
    .option("--json", "print the report as JSON")
    .option("-w, --weights <file>", "also check that a checkpoint (.safetensors) fits the model")
    .option("--no-typecheck", "run a .ts model file without type-checking it first")
    .action(async (file: string, o: { json?: boolean; weights?: string; typecheck: boolean }) => {
      const report = await inspectFile(file, {
        ...(o.typecheck ? {} : { typecheck: false }),
        ...(o.weights !== undefined ? { weights: o.weights } : {}),
      });
      io.out(o.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatInspectReport(report)}\n`);
    });
}
