// Atomic file output: write a temporary file in the target's folder, then rename,
// so a failed or killed run leaves either the old file or the new one, never a part.

import { closeSync, fsyncSync, mkdirSync, openSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { userError } from "./diagnostics.ts";

function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}.tmp`);
}

/** Write `chunks` to `path` atomically. Creates the parent folder if needed. */
export function writeFileAtomic(path: string, chunks: Uint8Array | string | Iterable<Uint8Array | string>): void {
  const dir = dirname(path);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw userError("AESM4002", "", `cannot create folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, path);
  }
  const tmp = tempPathFor(path);
  let fd: number;
  try {
    fd = openSync(tmp, "w");
  } catch (e) {
    throw userError("AESM4003", "", `cannot write: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, path);
  }
  try {
    const list = typeof chunks === "string" || chunks instanceof Uint8Array ? [chunks] : chunks;
    for (const c of list) {
      const buf = typeof c === "string" ? Buffer.from(c, "utf8") : c;
      let off = 0;
      while (off < buf.length) off += writeSync(fd, buf, off, buf.length - off);
    }
    fsyncSync(fd);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    rmSync(tmp, { force: true });
    if ((e as NodeJS.ErrnoException).code)
      throw userError("AESM4003", "", `cannot write: ${(e as NodeJS.ErrnoException).code}`, path);
    throw e;
  }
}
