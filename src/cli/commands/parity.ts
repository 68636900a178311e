// `aesm parity`: the float64 reference against the compiled ONNX on onnxruntime, per provider
// with graph optimisations off and on. Exit 0 within tolerance, 1 on a mismatch, 2 on bad usage
// or input (including a provider that is not installed).

import { type Command, InvalidArgumentError, Option } from "commander";
import { userError } from "../../core/diagnostics.ts";
import { loadModel } from "../../dsl/index.ts";
import {
  PRECISION_DEFAULTS,
  PROVIDERS,
  type ParityPrecision,
  type Provider,
  type ReportContext,
  checkInputsPath,
  formatParityReport,
  formatParitySummary,
  generateInputs,
  parityReportHtml,
  parityReportJson,
  parseToleranceArg,
  readInputsFile,
  resolveTolerances,
  runParity,
  silentProgress,
  terminalProgress,
  writeInputsFile,
  writeParityOutputs,
} from "../../parity/index.ts";
import { writeFileAtomic } from "../../core/atomic.ts";
import { readFileSync } from "node:fs";
import { decodeModel } from "../../backends/onnx/index.ts";
import { intArg, nonNegativeNumber } from "../args.ts";
import type { CommandContext } from "../io.ts";
import { loadModelWeights } from "../model-weights.ts";

export const DEFAULT_ROWS = 2048;

interface ParityFlags {
  weights: string;
  onnx: string;
  provider?: Provider[];
  rows: number;
  seed: number;
  inputs?: string;
  saveInputs?: string;
  saveOutputs?: string;
  precision?: ParityPrecision;
  atol?: string[];
  rtol?: string[];
  nearTie?: number;
  rmseMultiplier?: number;
  fp32Rows?: number;
  worst: number;
  threads?: number;
  json?: string;
  html?: string;
  summary?: boolean;
  progress: boolean;
}

function providerArg(v: string, prev: Provider[] | undefined): Provider[] {
  if (!(PROVIDERS as readonly string[]).includes(v))
    throw new InvalidArgumentError(`--provider must be one of ${PROVIDERS.join(", ")}, got "${v}"`);
  return [...(prev ?? []), v as Provider];
}

/** Tokens of a variadic tolerance flag, each checked as it comes (so a typo is a usage error). */
function toleranceTokens(flag: string) {
  return (v: string, prev: string[] | undefined): string[] => {
    try {
      parseToleranceArg(flag, [v]);
    } catch (e) {
      throw new InvalidArgumentError((e as Error).message);
    }
    return [...(prev ?? []), v];
  };
}

function parseTolerances(flag: string, tokens: string[] | undefined) {
  if (!tokens) return undefined;
  try {
    return parseToleranceArg(flag, tokens);
  } catch (e) {
    throw userError("AESM4110", flag, (e as Error).message);
  }
}

/**
 * The precision `compile --precision` recorded in the ONNX metadata (`aesm.precision`); fp32 when
 * absent, or when the file cannot be read (opening the session then reports why).
 */
function recordedPrecision(onnxPath: string): ParityPrecision {
  try {
    const model = decodeModel(readFileSync(onnxPath), onnxPath);
    return model.metadataProps?.find((p) => p.key === "aesm.precision")?.value === "fp16" ? "fp16" : "fp32";
  } catch {
    return "fp32";
  }
}

export function registerParity(program: Command, { io, setExitCode }: CommandContext): void {
  program
    .command("parity")
    .description("compare a compiled ONNX with the float64 reference (exit 0 pass, 1 mismatch, 2 bad usage or input)")
    .argument("<model>", "model file (.ts or .json)")
    .requiredOption("-w, --weights <file>", "weights (.safetensors)")
    .requiredOption("--onnx <file>", "compiled ONNX model")
    .option("--provider <name>", `onnxruntime execution provider, repeatable: ${PROVIDERS.join(", ")} (default cpu)`, providerArg)
    .addOption(new Option("--rows <n>", "rows of generated input").argParser(intArg("--rows", 1, 10_000_000)).default(DEFAULT_ROWS).conflicts("inputs"))
    .addOption(new Option("--seed <n>", "seed of generated input").argParser(intArg("--seed", 0, 2 ** 32 - 1)).default(0).conflicts("inputs"))
    .option("--inputs <file>", "use these rows instead of generated ones (.jsonl or .npz)")
    .option("--save-inputs <file>", "write the rows used (.jsonl or .npz) to repeat the run exactly")
    .option("--save-outputs <file>", "write the reference's and each run's outputs (.json)")
    .addOption(new Option("--precision <p>", "compiled precision: picks the default tolerances (default: what the ONNX records, else fp32)").choices(["fp32", "fp16"]))
    .option("--atol <tol...>", "absolute tolerance: a global value and/or <output>:<value> (e.g. --atol 1e-5 cvr:1e-4)", toleranceTokens("--atol"))
    .option("--rtol <tol...>", "relative tolerance, same form; an element fails only when both are exceeded", toleranceTokens("--rtol"))
    .option("--near-tie <x>", "selection score gap below which a flipped selection is a near-tie (default 1e-4 for fp32, 1e-2 for fp16)", nonNegativeNumber("--near-tie"))
    .option("--rmse-multiplier <x>", "RMSE check: rmse(onnx) ≤ x · rmse(float32 reference) + atol/10 (default 2 for fp32, 3 for fp16)", nonNegativeNumber("--rmse-multiplier"))
    .option("--fp32-rows <n>", "rows the float32 reference evaluates for the RMSE check (0: off; default 10000 for fp32, 0 for fp16)", intArg("--fp32-rows", 0, 10_000_000))
    .option("--worst <n>", "worst rows listed per output", intArg("--worst", 0, 1000), 5)
    .option("--threads <n>", "onnxruntime intra-op threads per session (default: onnxruntime's, one per core)", intArg("--threads", 1, 1024))
    .option("--json <file>", "write the report as JSON (schema aesm.parity/v1)")
    .option("--html <file>", "write a self-contained HTML report")
    .option("--summary", "print one summary line instead of the tables")
    .option("--no-progress", "no progress bar (it only shows when stderr is a terminal)")
    .action(async (modelPath: string, o: ParityFlags) => {
      const model = await loadModel(modelPath);
      const { spec } = model;
      const precision = o.precision ?? recordedPrecision(o.onnx);
      const tolerances = resolveTolerances(
        spec.tasks.map((t) => t.name),
        precision,
        parseTolerances("--atol", o.atol),
        parseTolerances("--rtol", o.rtol),
      );
      if (o.saveInputs) checkInputsPath(o.saveInputs);
      if (o.inputs) checkInputsPath(o.inputs);
      const weights = await loadModelWeights(model, o.weights);
      const inputs = o.inputs ? readInputsFile(o.inputs, spec) : generateInputs(spec, { rows: o.rows, seed: o.seed });
      if (o.saveInputs) writeInputsFile(o.saveInputs, spec, inputs);

      const result = await runParity(spec, weights, o.onnx, {
        inputs,
        providers: o.provider ?? ["cpu"],
        tolerances,
        precision,
        nearTie: o.nearTie ?? PRECISION_DEFAULTS[precision].nearTie,
        ...(o.rmseMultiplier !== undefined ? { rmseMultiplier: o.rmseMultiplier } : {}),
        fp32Rows: o.fp32Rows ?? PRECISION_DEFAULTS[precision].fp32Rows,
        worst: o.worst,
        ...(o.threads !== undefined ? { threads: o.threads } : {}),
        progress: io.isTTY && o.progress ? terminalProgress(io.err) : silentProgress,
        keepValues: o.saveOutputs !== undefined,
      });
      const ctx: ReportContext = {
        modelFile: modelPath,
        weightsFile: o.weights,
        onnxFile: o.onnx,
        inputs: o.inputs ? { source: "file", file: o.inputs } : { source: "generated", seed: o.seed },
      };
      io.out(o.summary ? formatParitySummary(result) : formatParityReport(result, ctx));
      if (o.json) writeFileAtomic(o.json, JSON.stringify(parityReportJson(result, ctx), null, 2) + "\n");
      if (o.html) writeFileAtomic(o.html, parityReportHtml(result, ctx));
      if (o.saveOutputs) writeParityOutputs(o.saveOutputs, result);
      setExitCode(result.pass ? 0 : 1);
    });
}
