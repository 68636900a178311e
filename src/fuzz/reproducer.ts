// Reproducer files: a shrunk failing case with what failed, saved under fixtures/regressions/
// (atomically) and replayed by the test suite. The case alone determines the run.

import { createHash } from "node:crypto";
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { writeFileAtomic } from "../core/atomic.ts";
import { AESM_VERSION } from "../version.ts";
import type { FuzzCase } from "./case.ts";
import type { Mismatch } from "./check.ts";

export const REPRODUCER_FORMAT = "aesm.fuzz-reproducer/1";

export interface Reproducer {
  format: typeof REPRODUCER_FORMAT;
  /** One line: what goes wrong. */
  description: string;
  /** "open": the replay expects the failure (it still reproduces); "fixed": the replay expects a pass. */
  status: "open" | "fixed";
  /** failureSignature of the first mismatch. */
  signature: string;
  /** The known issue this belongs to (src/fuzz/known.ts), if any. */
  known?: string;
  /** The first mismatches when it was saved. */
  failure: Mismatch[];
  found: { runSeed: number; caseSeed: number; date: string; aesm: string; shrinkSteps: string[] };
  case: FuzzCase;
}

/** A file name from the signature and the case's content: stable, and distinct per case. */
export function reproducerFileName(r: Pick<Reproducer, "signature" | "case">): string {
  const hash = createHash("sha256").update(JSON.stringify(r.case)).digest("hex").slice(0, 10);
  return `${r.signature.replace(/[^a-z0-9]+/gi, "-")}-${hash}.json`;
}

export function makeReproducer(
  c: FuzzCase,
  failure: Mismatch[],
  signature: string,
  found: Omit<Reproducer["found"], "date" | "aesm">,
  known?: string,
): Reproducer {
  const first = failure[0];
  return {
    format: REPRODUCER_FORMAT,
    description: first ? `${first.target}: ${first.message}` : "failure",
    status: "open",
    signature,
    ...(known ? { known } : {}),
    failure,
    found: { ...found, date: new Date().toISOString(), aesm: AESM_VERSION },
    case: c,
  };
}

/** Write `r` into `dir` atomically; returns its path. */
export function saveReproducer(dir: string, r: Reproducer, name = reproducerFileName(r)): string {
  const path = join(dir, name);
  writeFileAtomic(path, `${JSON.stringify(r, null, 2)}\n`);
  return path;
}

export function loadReproducer(path: string): Reproducer {
  const r = JSON.parse(readFileSync(path, "utf8")) as Reproducer;
  if (r.format !== REPRODUCER_FORMAT) throw new Error(`${path}: not a ${REPRODUCER_FORMAT} file (format ${JSON.stringify(r.format)})`);
  return r;
}

/** Every reproducer in `dir` (sorted by name), with its path. */
export function listReproducers(dir: string): { path: string; r: Reproducer }[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  return names
    .filter((n) => n.endsWith(".json"))
    .sort()
    .map((n) => ({ path: join(dir, n), r: loadReproducer(join(dir, n)) }));
}
