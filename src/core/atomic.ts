// Atomic file output: write a temporary file in the target's folder, then rename,
// so a failed or killed run leaves either the old file or the new one, never a part.
//
// Temporary files are named `.<name>.<pid>.<time>.tmp` beside the target. A run killed
// mid-write (SIGKILL, power loss) leaves its temp behind; the next write to the same target
// removes those whose process is gone, and any of them may be deleted by hand at any time.

import { closeSync, copyFileSync, constants as fsConstants, fsyncSync, linkSync, mkdirSync, openSync, readdirSync, renameSync, rmSync, writeSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { userError } from "./diagnostics.ts";

type Chunks = Uint8Array | string | Iterable<Uint8Array | string>;

/** Largest single write: bounds the size of one syscall's buffer, whatever the chunk. */
const WRITE_SLICE = 1 << 26;

let counter = 0;

export function tempPathFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now().toString(36)}${(counter++).toString(36)}.tmp`);
}

/** Matches the temps of `path` written by any process; group 1 is the writer's pid. */
export function tempPattern(path: string): RegExp {
  const name = basename(path).replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
  return new RegExp(`^\\.${name}\\.(\\d+)\\.[0-9a-z]+\\.tmp$`);
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM"; // alive, someone else's
  }
}

/** Remove temps of `path` left by processes that no longer run (a killed earlier write). Best effort. */
export function removeStaleTemps(path: string): number {
  const re = tempPattern(path);
  let removed = 0;
  let names: string[];
  try {
    names = readdirSync(dirname(path));
  } catch {
    return 0;
  }
  for (const n of names) {
    const m = re.exec(n);
    if (!m || processAlive(Number(m[1]))) continue;
    try {
      rmSync(join(dirname(path), n), { force: true });
      removed++;
    } catch {
      /* another process got there first, or no permission: harmless */
    }
  }
  return removed;
}

/** Write `chunks` to a fresh temp beside `path` (fsynced, closed) and return the temp's path; on failure nothing is left. */
function writeTemp(path: string, chunks: Chunks): string {
  const dir = dirname(path);
  try {
    mkdirSync(dir, { recursive: true });
  } catch (e) {
    throw userError("AESM4002", "", `cannot create folder ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, path);
  }
  removeStaleTemps(path);
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
      while (off < buf.length) off += writeSync(fd, buf, off, Math.min(buf.length - off, WRITE_SLICE));
    }
    fsyncSync(fd);
    closeSync(fd);
    return tmp;
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

function commit(tmp: string, path: string): void {
  try {
    renameSync(tmp, path);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw userError("AESM4003", "", `cannot write: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, path);
  }
}

/** Write `chunks` to `path` atomically. Creates the parent folder if needed. Chunks may come from a generator (streaming). */
export function writeFileAtomic(path: string, chunks: Chunks): void {
  commit(writeTemp(path, chunks), path);
}

/**
 * Create `path` with `chunks`, never replacing a file: the content goes to a temp first and
 * is then hard-linked to `path`, which fails if `path` exists (then `exists()` is thrown). A
 * failed or killed run leaves no `path`, or a whole one. Where the file system has no hard
 * links, the temp is copied with COPYFILE_EXCL instead (still never an overwrite).
 */
export function writeFileExclusive(path: string, chunks: Chunks, exists: () => Error): void {
  const tmp = writeTemp(path, chunks);
  try {
    try {
      linkSync(tmp, path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "EPERM" || code === "ENOTSUP" || code === "EOPNOTSUPP" || code === "ENOSYS") copyFileSync(tmp, path, fsConstants.COPYFILE_EXCL);
      else throw e;
    }
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "EEXIST") throw exists();
    throw userError("AESM4003", "", `cannot write: ${code ?? String(e)}`, path);
  } finally {
    rmSync(tmp, { force: true });
  }
}

/**
 * Write several files that belong together (a model and its external data): every file is
 * written to its temp first, and only when all are complete are they renamed, in the order
 * given, so the last one (the file that refers to the others) appears last. On any failure
 * before the renames, every temp is removed and no target has changed.
 */
export function writeFilesAtomic(files: readonly { path: string; chunks: Chunks }[]): void {
  const temps: string[] = [];
  try {
    for (const f of files) temps.push(writeTemp(f.path, f.chunks));
  } catch (e) {
    for (const t of temps) rmSync(t, { force: true });
    throw e;
  }
  files.forEach((f, i) => {
    try {
      commit(temps[i]!, f.path);
    } catch (e) {
      for (const t of temps.slice(i + 1)) rmSync(t, { force: true });
      throw e;
    }
  });
}
