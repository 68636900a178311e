// The `aesm` command line: builds the program from one module per command and turns
// errors into exit codes. User errors print one line each and no stack trace.

import { Command, CommanderError } from "commander";
import { AesmError, formatDiagnostic } from "../core/diagnostics.ts";
import { AESM_VERSION } from "../version.ts";
import { registerBisect } from "./commands/bisect.ts";
import { registerCompile } from "./commands/compile.ts";
import { registerInit } from "./commands/init.ts";
import { registerInitWeights } from "./commands/init-weights.ts";
import { registerInspect } from "./commands/inspect.ts";
import { registerParity } from "./commands/parity.ts";
import { type CliIO, type CommandContext, processIO } from "./io.ts";

export type { CliIO } from "./io.ts";

function buildProgram(ctx: CommandContext): Command {
  const { io } = ctx;
  const program = new Command("aesm")
    .description("Compile multi-scenario, multi-task mixture-of-experts rankers (AESM² family) to ONNX, and prove parity.")
    .version(AESM_VERSION, "-V, --version")
    .showSuggestionAfterError(true);
  registerInitWeights(program, ctx);
  registerCompile(program, ctx);
  registerParity(program, ctx);
  registerBisect(program, ctx);
  registerInspect(program, ctx);
  registerInit(program, ctx);
  for (const c of [program, ...program.commands])
    c.configureOutput({ writeOut: io.out, writeErr: io.err }).exitOverride().allowExcessArguments(false);
  return program;
}

/** Run the CLI on `argv` (without node and script); resolves to the exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  let code = 0;
  const program = buildProgram({ io, setExitCode: (c) => (code = c) });
  try {
    if (argv.length === 0) {
      program.outputHelp({ error: true });
      return 2;
    }
    await program.parseAsync(argv, { from: "user" });
    return code;
  } catch (e) {
    if (e instanceof CommanderError) {
      // Commander has printed its message already; help and version are not errors.
      if (e.code === "commander.helpDisplayed" || e.code === "commander.version" || e.code === "commander.help") return 0;
      return 2;
    }
    if (e instanceof AesmError) {
      for (const d of e.diagnostics) io.err(`error[${d.code}]: ${formatDiagnostic(d)}\n`);
      return e.exitCode;
    }
    const err = e as Error;
    io.err(`aesm: internal error (a bug in aesm; please report it): ${err?.message ?? String(e)}\n${err?.stack ?? ""}\n`);
    return 70;
  }
}
