// Running the CLI in-process (main(argv, io)) and as a real process (bin/aesm.mjs),
// capturing stdout, stderr and the exit code.

import { spawnSync } from "node:child_process";
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { main } from "../../src/cli/main.ts";

export interface CliRun {
  code: number;
  out: string;
  err: string;
}

export async function runCli(argv: string[]): Promise<CliRun> {
  let out = "";
  let err = "";
  const code = await main(argv, { out: (s) => (out += s), err: (s) => (err += s), isTTY: false });
  return { code, out, err };
}

export const REPO = join(import.meta.dirname, "..", "..");
export const BIN = join(REPO, "bin", "aesm.mjs");

/** The `aesm` command as a child process, in `cwd`. */
export function runBin(argv: string[], cwd = REPO): CliRun {
  const r = spawnSync(process.execPath, [BIN, ...argv], { cwd, encoding: "utf8", timeout: 120_000 });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

export function tempDir(prefix = "aesm-test-"): string {
  return mkdtempSync(join(tmpdir(), prefix));
}
