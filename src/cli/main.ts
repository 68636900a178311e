// The `aesm` command line: argument parsing and terminal output only; every job is a
// library call. User errors print one line each and no stack trace.

import { Command, CommanderError, InvalidArgumentError, Option } from "commander";
import { AesmError, formatDiagnostic } from "../core/diagnostics.ts";
import { compileToFile } from "../compile.ts";
import { loadModel } from "../dsl/index.ts";
import { DEFAULT_NEAR_TIE, DEFAULT_TOLERANCE, formatParityReport, runParity } from "../parity/index.ts";
import { AESM_VERSION } from "../version.ts";
import { initWeights, loadWeights, saveWeights } from "../weights/index.ts";

export interface CliIO {
  out: (s: string) => void;
  err: (s: string) => void;
}

const defaultIO: CliIO = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
};

function intArg(name: string, min: number, max = Number.MAX_SAFE_INTEGER) {
  return (v: string): number => {
    if (!/^-?\d+$/.test(v.trim())) throw new InvalidArgumentError(`${name} must be an integer, got "${v}"`);
    const n = Number(v);
    if (n < min || n > max) throw new InvalidArgumentError(`${name} must be in ${min}..${max}, got ${n}`);
    return n;
  };
}

function nonNegativeNumber(name: string) {
  return (v: string): number => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n < 0) throw new InvalidArgumentError(`${name} must be a non-negative number, got "${v}"`);
    return n;
  };
}

function buildProgram(io: CliIO, setExit: (code: number) => void): Command {
  const program = new Command("aesm")
    .description("Compile multi-scenario, multi-task mixture-of-experts rankers (AESM² family) to ONNX, and prove parity.")
    .version(AESM_VERSION, "-V, --version")
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .exitOverride()
    .showSuggestionAfterError(true)
    .allowExcessArguments(false);

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
    .action(
      async (
        modelPath: string,
        o: { weights: string; onnx: string; provider: "cpu" | "cuda" | "tensorrt"; rows: number; seed: number; atol: number; rtol: number; nearTie: number },
      ) => {
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
        setExit(result.pass ? 0 : 1);
      },
    );

  for (const c of program.commands) c.configureOutput({ writeOut: io.out, writeErr: io.err }).exitOverride().allowExcessArguments(false);
  return program;
}

/** Run the CLI on `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: CliIO = defaultIO): Promise<number> {
  let code = 0;
  const program = buildProgram(io, (c) => (code = c));
  try {
    if (argv.length === 0) {
      program.outputHelp();
      return 2;
    }
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander already printed its message; help and version are not errors.
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      return 2;
    }
    if (e instanceof AesmError) {
      for (const d of e.diagnostics) io.err(`error[${d.code}]: ${formatDiagnostic(d)}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    io.err(`aesm: internal error (this is a bug in aesm, please report it): ${err?.message ?? String(e)}\n${err?.stack ?? ""}\n`);
    return 70;
  }
}
