// `aesm compile`: model + weights → lower → pass pipeline (-O0/-O1/-O2 or --passes) → ONNX,
// written atomically. A pass that breaks the IR or the numbers is a compiler bug: exit 70.

import { type Command, InvalidArgumentError, Option } from "commander";
import { emitClient } from "../../client/generate.ts";
import { checkCalibrationPipeline, compileToFile, formatCalibration, formatPassStats, resolvePasses } from "../../compile.ts";
import { userError } from "../../core/diagnostics.ts";
import { loadModel } from "../../dsl/index.ts";
import { readCalibrationRows } from "../../passes/calibrate.ts";
import { PASSES, PassError } from "../../passes/index.ts";
import type { OptLevel } from "../../passes/pipeline.ts";
import { intArg } from "../args.ts";
import type { CliIO, CommandContext } from "../io.ts";
import { loadModelWeights } from "../model-weights.ts";

/** Exit code of a compiler bug (BSD sysexits EX_SOFTWARE), as for any internal error. */
export const EXIT_INTERNAL = 70;

/** `-O2`, `-O 2`, `--opt-level 2` (and `O2`): 0, 1 or 2. */
export function optLevelArg(v: string): OptLevel {
  const m = /^O?([012])$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`-O must be 0, 1 or 2, got "${v}"`);
  return Number(m[1]) as OptLevel;
}

function knownPass(id: string): string {
  if (!PASSES.some((p) => p.id === id)) throw new InvalidArgumentError(`unknown pass "${id}" (known: ${PASSES.map((p) => p.id).join(", ")})`);
  return id;
}

function splitIds(v: string): string[] {
  return v
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

/** `--passes a,b,c`: known ids, in order (a pass may repeat). An empty list runs none. */
export function passListArg(v: string): string[] {
  return splitIds(v).map(knownPass);
}

/** `--print-after`: repeatable and comma-separated; `all` prints after every pass. */
export function printAfterArg(v: string, prev: string[] | undefined): string[] {
  return [...(prev ?? []), ...splitIds(v).map((id) => (id === "all" ? id : knownPass(id)))];
}

/** Print a PassError as one line and what it means. */
export function reportPassError(io: CliIO, e: PassError): void {
  // the first line: a verifier failure goes on with the whole graph, which --print-after shows
  io.err(`error: ${e.message.split("\n")[0]!}\n`);
  io.err(
    `note: a bug in aesm's optimiser, not in the model; nothing was written. --passes without ${e.pass} avoids it, --print-after ${e.pass} shows its IR.\n`,
  );
}

interface CompileFlags {
  weights: string;
  output: string;
  opset: number;
  selectionOutputs: boolean;
  optLevel: OptLevel;
  passes?: string[];
  stats?: boolean;
  printAfter?: string[];
  verifyEach?: boolean;
  calibrate?: string;
  emitClient?: string;
  externalDataThreshold?: number;
  precision: "fp32" | "fp16";
}

export function registerCompile(program: Command, { io, setExitCode }: CommandContext): void {
  program
    .command("compile")
    .description("compile a model and its weights to ONNX (exit 70 if a pass breaks the IR or the numbers)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-w, --weights <file>", "weights (.safetensors, canonical layout)")
    .requiredOption("-o, --output <file>", "ONNX file to write")
    .option("--opset <n>", "ONNX opset, 13–21", intArg("--opset", 1, 1000), 17)
    .option("--no-selection-outputs", "omit the select:<layer> diagnostic outputs")
    .addOption(
      new Option("-O, --opt-level <n>", "optimisation level: 0 the faithful lowering, 1 safe clean-ups, 2 every pass (-O0, -O1, -O2)")
        .argParser(optLevelArg)
        .default(2)
        .conflicts("passes"),
    )
    .option("--passes <list>", "run exactly these passes, in order (comma-separated ids, see docs/passes.md)", passListArg)
    .option("--stats", "print per pass: nodes and parameters before → after, time, counters")
    .option("--print-after <pass>", 'print the IR after this pass (repeatable or comma-separated; "all": after every pass)', printAfterArg)
    .option("--emit-client <file>", "also write a typed TypeScript client (predict(rows)) for the ONNX")
    .option(
      "--external-data-threshold <bytes>",
      "keep initialisers of at least this many bytes in <output>.data beside the model (ONNX external data; automatic past 2 GiB)",
      intArg("--external-data-threshold", 0),
    )
    .addOption(
      new Option("--precision <p>", "fp16: float16 weights and expert/tower arithmetic after the passes; gates, selection, inputs and outputs stay float32")
        .choices(["fp32", "fp16"])
        .default("fp32"),
    )
    .option("--verify-each", "after every pass, run the IR verifier and compare interpreter outputs on 64 sample rows with the previous stage")
    .option(
      "--calibrate <rows>",
      "prune experts these rows (.jsonl or .npz, as parity reads) never use (opt-in, lossy elsewhere; checked on held-out rows and reported)",
    )
    .action(async (modelPath: string, o: CompileFlags) => {
      const model = await loadModel(modelPath);
      const { spec } = model;
      const selection = o.passes ? { passes: o.passes } : { optLevel: o.optLevel };
      const pipeline = resolvePasses(selection).map((p) => p.id);
      if (o.precision === "fp16") pipeline.push("to-fp16"); // run last by compile
      let printAfter: string[] | undefined;
      if (o.printAfter) {
        printAfter = o.printAfter.includes("all") ? pipeline : o.printAfter;
        // a valid pass that this pipeline does not run would print nothing, silently
        const absent = printAfter.filter((id) => !pipeline.includes(id));
        if (absent.length)
          throw userError(
            "AESM4201",
            "--print-after",
            `pass "${absent[0]}" is not in this pipeline (${o.passes ? "--passes" : `-O${o.optLevel}`}: ${pipeline.join(", ") || "no passes"})`,
          );
      }
      const weights = await loadModelWeights(model, o.weights);
      if (o.calibrate !== undefined) checkCalibrationPipeline(pipeline);
      const calibrationRows = o.calibrate !== undefined ? readCalibrationRows(o.calibrate, spec) : undefined;
      let s;
      try {
        s = compileToFile(spec, weights, o.output, {
          opset: o.opset,
          selectionOutputs: o.selectionOutputs,
          ...selection,
          ...(o.verifyEach ? { verifyEach: true } : {}),
          ...(o.precision === "fp16" ? { precision: o.precision } : {}),
          ...(calibrationRows ? { calibrationRows } : {}),
          ...(o.externalDataThreshold !== undefined ? { externalData: { threshold: o.externalDataThreshold } } : {}),
          ...(printAfter ? { printAfter, print: (id: string, text: string) => io.out(`// ----- IR after ${id} ----- //\n${text}\n`) } : {}),
        });
      } catch (e) {
        if (!(e instanceof PassError)) throw e;
        reportPassError(io, e);
        setExitCode(EXIT_INTERNAL);
        return;
      }
      if (s.calibration) io.out(formatCalibration(s.calibration));
      if (o.stats) io.out(formatPassStats(s.stats));
      io.out(
        `wrote ${s.path}: opset ${s.opset}${o.precision === "fp16" ? ", fp16" : ""}, ${s.nodes} nodes, ${s.parameters.toLocaleString("en-US")} parameters, ${(s.bytes / 1024).toFixed(1)} KiB\n`,
      );
      if (o.emitClient !== undefined) io.out(await emitClient(spec, o.emitClient, s.path, modelPath));
    });
}
