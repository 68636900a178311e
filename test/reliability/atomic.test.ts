// Nothing half-written: atomic writes under failure, stale temporary files, and `aesm compile`
// killed with SIGKILL mid-write, which must leave the old file or the new one, never a part.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { removeStaleTemps, tempPattern, writeFileAtomic, writeFilesAtomic } from "../../src/core/atomic.ts";
import { parseModel } from "../../src/dsl/parse.ts";
import { initWeights, writeSafetensorsFile } from "../../src/weights/index.ts";
import { BIN, REPO, tempDir } from "../cli/cli-helpers.ts";

let dir: string;
beforeAll(() => {
  dir = tempDir("aesm-atomic-");
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A pid that no process has: above Linux's pid_max ceiling (2^22). */
const DEAD_PID = 4_194_304 + 17;

describe("writeFileAtomic and writeFilesAtomic", () => {
  it("a write that fails mid-stream keeps the old file and leaves no temp", () => {
    const sub = join(dir, "midstream");
    const path = join(sub, "out.bin");
    writeFileAtomic(path, "old");
    function* chunks() {
      yield new Uint8Array(1 << 20);
      throw new Error("disk on fire");
    }
    expect(() => writeFileAtomic(path, chunks())).toThrowError("disk on fire");
    expect(readFileSync(path, "utf8")).toBe("old");
    expect(readdirSync(sub)).toEqual(["out.bin"]);
  });

  it("a set of files changes all together or not at all", () => {
    const sub = join(dir, "set");
    const [a, b] = [join(sub, "a.data"), join(sub, "b.onnx")];
    writeFilesAtomic([
      { path: a, chunks: "a1" },
      { path: b, chunks: "b1" },
    ]);
    function* failing() {
      yield "b2-partial";
      throw new Error("killed");
    }
    expect(() => writeFilesAtomic([{ path: a, chunks: "a2" }, { path: b, chunks: failing() }])).toThrowError("killed");
    expect([readFileSync(a, "utf8"), readFileSync(b, "utf8")]).toEqual(["a1", "b1"]);
    expect(readdirSync(sub).sort()).toEqual(["a.data", "b.onnx"]);
    writeFilesAtomic([
      { path: a, chunks: "a2" },
      { path: b, chunks: "b2" },
    ]);
    expect([readFileSync(a, "utf8"), readFileSync(b, "utf8")]).toEqual(["a2", "b2"]);
  });

  it("removes temps of dead writers on the next write, keeps those of live ones", () => {
    const sub = join(dir, "stale");
    mkdirSync(sub, { recursive: true });
    const path = join(sub, "m.onnx");
    const dead = join(sub, `.m.onnx.${DEAD_PID}.abc123.tmp`);
    const live = join(sub, `.m.onnx.${process.ppid}.abc124.tmp`);
    const other = join(sub, `.other.onnx.${DEAD_PID}.abc125.tmp`);
    for (const p of [dead, live, other]) writeFileSync(p, "partial");
    expect(tempPattern(path).test(".m.onnx.123.kx9a0.tmp")).toBe(true);
    expect(tempPattern(path).test(".m.onnx.data.123.kx9a0.tmp")).toBe(false);
    writeFileAtomic(path, "model");
    expect(existsSync(dead)).toBe(false);
    expect(existsSync(live)).toBe(true);
    expect(existsSync(other)).toBe(true); // another target's temps are that target's business
    expect(removeStaleTemps(join(sub, "other.onnx"))).toBe(1);
  });
});

// ---- SIGKILL during `aesm compile` ----

/** A model whose one big embedding (1M × 16 floats, 64 MiB) makes writing take a while. */
const BIG_MODEL = {
  name: "bigemb",
  features: { id: { kind: "categorical", vocab: 1_000_000, dim: 16 }, x: { kind: "dense", dim: 2 } },
  scenarios: { s: { values: ["a", "b"], dim: 2, experts: 2, expert: { kind: "mlp", units: [4] }, select: { kind: "all" } } },
  tasks: { t: { tower: { kind: "mlp", units: [] } } },
};

const sha = (p: string) => (existsSync(p) ? createHash("sha256").update(readFileSync(p)).digest("hex") : "absent");

interface Attempt {
  killedMidWrite: boolean;
  exitCode: number | null;
}

/**
 * Run `aesm compile` and SIGKILL it a random 0–40 ms after its first temp file appears (polled),
 * or let it finish if it never writes one in time. `watch` are the targets whose temps count.
 */
function compileAndKill(args: string[], watch: string[], rand: () => number): Promise<Attempt> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [BIN, "compile", ...args], { cwd: REPO, stdio: "ignore" });
    let killedMidWrite = false;
    let done = false;
    const patterns = watch.map(tempPattern);
    const folder = join(watch[0]!, "..");
    const poll = () => {
      if (done) return;
      if (readdirSync(folder).some((n) => patterns.some((re) => re.test(n)))) {
        setTimeout(() => {
          if (done) return;
          // Still writing if a temp is still there when the signal goes.
          killedMidWrite = readdirSync(folder).some((n) => patterns.some((re) => re.test(n)));
          child.kill("SIGKILL");
        }, Math.floor(rand() * 40));
        return;
      }
      setTimeout(poll, 2);
    };
    poll();
    child.on("exit", (code) => {
      done = true;
      resolve({ killedMidWrite, exitCode: code });
    });
  });
}

describe("aesm compile killed mid-write (SIGKILL)", () => {
  let modelPath: string;
  const weights: string[] = [];

  beforeAll(() => {
    modelPath = join(dir, "big.json");
    writeFileSync(modelPath, JSON.stringify(BIG_MODEL));
    const spec = parseModel(BIG_MODEL);
    for (const seed of [1, 2]) {
      const p = join(dir, `big-${seed}.safetensors`);
      writeSafetensorsFile(p, initWeights(spec, seed));
      weights.push(p);
    }
  }, 120_000);

  /** Both finished outputs per weights file, by hash, from uninterrupted runs. */
  async function references(extra: string[], files: (out: string) => string[]): Promise<string[][]> {
    const refs: string[][] = [];
    for (const [i, w] of weights.entries()) {
      const out = join(dir, `ref-${extra.length}-${i}`, "m.onnx");
      mkdirSync(join(out, ".."), { recursive: true });
      const r = await compileAndKill([modelPath, "-w", w, "-o", out, ...extra], [join(out, "..", "never")], () => 0);
      expect(r.exitCode).toBe(0);
      refs.push(files(out).map(sha));
    }
    return refs;
  }

  async function killLoop(extra: string[], files: (out: string) => string[]): Promise<void> {
    const refs = await references(extra, files);
    const sub = join(dir, `kill-${extra.length}`);
    mkdirSync(sub, { recursive: true });
    const out = join(sub, "m.onnx");
    const targets = files(out);
    let seed = 12345;
    const rand = () => ((seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32);
    let state = -1; // which weights the files hold: -1 none yet
    let midWrite = 0;
    for (let attempt = 0; attempt < 6; attempt++) {
      const next = attempt % 2;
      const r = await compileAndKill([modelPath, "-w", weights[next]!, "-o", out, ...extra], targets, rand);
      if (r.killedMidWrite) midWrite++;
      const now = targets.map(sha);
      const match = refs.findIndex((ref) => ref[0] === now[0]);
      // The model file is absent (nothing committed yet) or byte-identical to a finished one.
      if (state === -1 && now[0] === "absent") continue;
      expect(match, `attempt ${attempt}: model file is neither the old nor the new one`).toBeGreaterThanOrEqual(0);
      // Each further file (external data) is one of the finished ones too, and a new model never
      // appears before its data: model new ⇒ data new.
      for (let f = 1; f < targets.length; f++) {
        expect(refs.some((ref) => ref[f] === now[f]), `attempt ${attempt}: ${targets[f]} is partial`).toBe(true);
        if (match !== state) expect(now[f]).toBe(refs[match]![f]);
      }
      expect(match === state || match === next, `attempt ${attempt}: files from neither run`).toBe(true);
      state = match;
      // Whatever else is in the folder is a temp of one of the targets.
      for (const n of readdirSync(sub))
        expect(targets.some((t) => join(sub, n) === t || tempPattern(t).test(n)), `stray file ${n}`).toBe(true);
    }
    expect(midWrite, "no kill landed while a temp file was open").toBeGreaterThan(0);
    // A complete run afterwards clears the dead runs' temps.
    const final = await compileAndKill([modelPath, "-w", weights[0]!, "-o", out, ...extra], [join(sub, "never")], () => 0);
    expect(final.exitCode).toBe(0);
    expect(readdirSync(sub).sort()).toEqual(targets.map((t) => t.slice(sub.length + 1)).sort());
  }

  it("a single ONNX file: the old one or the new one, never a part", async () => {
    await killLoop([], (out) => [out]);
  }, 240_000);

  it("a model with external data: each file whole, and a new model only with its new data", async () => {
    await killLoop(["--external-data-threshold", "1024"], (out) => [out, `${out}.data`]);
  }, 240_000);
});
