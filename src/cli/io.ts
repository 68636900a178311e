// Where the CLI writes, so tests can capture output; and how a command sets its exit code.

export interface CliIO {
  out: (s: string) => void;
  err: (s: string) => void;
  /** Whether stderr is a terminal (progress output only then). */
  isTTY: boolean;
}

export const processIO: CliIO = {
  out: (s) => process.stdout.write(s),
  err: (s) => process.stderr.write(s),
  isTTY: Boolean(process.stderr.isTTY),
};

export interface CommandContext {
  io: CliIO;
  setExitCode: (code: number) => void;
}
