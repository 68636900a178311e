// User-facing errors as values: a stable code, the path of the offending part
// and, where known, the file and source position. Compiler bugs are InvariantError.

export interface Diagnostic {
  /** Stable code: AESM1xxx model, AESM2xxx weights, AESM3xxx ONNX/runtime, AESM4xxx CLI and files. */
  code: string;
  /** Dotted path of the offending part (`scenarios.page.select.specific`) or tensor name; "" if none. */
  path: string;
  message: string;
  file?: string;
  line?: number;
  column?: number;
}

/** One line per diagnostic: `file:line:col: path: message`, omitting what is unknown. */
export function formatDiagnostic(d: Diagnostic): string {
  const where = d.file
    ? d.line !== undefined
      ? `${d.file}:${d.line}:${d.column ?? 1}`
      : d.file
    : "";
  return [where, d.path, d.message].filter((s) => s !== "").join(": ");
}

/** A user mistake (bad model, weights, inputs, flags). The CLI prints it without a stack trace. */
export class AesmError extends Error {
  readonly diagnostics: Diagnostic[];
  /** Process exit code the CLI uses: 2 for bad usage or input unless a command says otherwise. */
  readonly exitCode: number;
  constructor(diagnostics: Diagnostic | Diagnostic[], exitCode = 2) {
    const list = Array.isArray(diagnostics) ? diagnostics : [diagnostics];
    super(list.map(formatDiagnostic).join("\n"));
    this.name = "AesmError";
    this.diagnostics = list;
    this.exitCode = exitCode;
  }
  /** The same errors, attributed to a file (kept where a diagnostic already names one). */
  inFile(file: string): AesmError {
    return new AesmError(
      this.diagnostics.map((d) => ({ ...d, file: d.file ?? file })),
      this.exitCode,
    );
  }
}

export function userError(code: string, path: string, message: string, file?: string): AesmError {
  return new AesmError({ code, path, message, ...(file !== undefined ? { file } : {}) });
}

/** A broken compiler invariant: a bug in aesm, never the user's fault. */
export class InvariantError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvariantError";
  }
}

export function invariant(cond: unknown, message: string | (() => string)): asserts cond {
  if (!cond) throw new InvariantError(typeof message === "string" ? message : message());
}

export function assertNever(x: never, what = "value"): never {
  throw new InvariantError(`unhandled ${what}: ${JSON.stringify(x)}`);
}
