// Supplied parity inputs (`--inputs rows.jsonl|rows.npz`) and saved ones (`--save-inputs`), so
// teams can replay real traffic and repeat a run exactly. Every problem names file, row and field.
//
// Diagnostic codes:
//   AESM4101  unsupported inputs file extension (.jsonl, .ndjson or .npz expected)
//   AESM4102  a line is not valid JSON, or the .npz archive or one of its arrays is malformed
//   AESM4103  a model input is missing (from a row, or from the archive)
//   AESM4104  a value has the wrong type or shape (id not an integer, dense vector of the wrong length…)
//   AESM4105  a field or array that is not a model input
//   AESM4106  a scenario value that the level does not declare, or an index out of range
//   AESM4107  the file has no rows, or the archive's arrays disagree on the row count

import { readFileSync } from "node:fs";
import { extname } from "node:path";
import { writeFileAtomic } from "../core/atomic.ts";
import type { InputBatch } from "../core/batch.ts";
import { AesmError, type Diagnostic, userError } from "../core/diagnostics.ts";
import type { FeatureSpec, ModelSpec, ScenarioLevelSpec } from "../dsl/spec.ts";
import { type NpyArray, NpyFormatError, encodeNpy, parseNpy, readZip, writeZip } from "./npy.ts";

/** Past this many problems the rest are summarised, so a bad 100k-row file prints a readable list. */
const MAX_PROBLEMS = 20;

type InputsFormat = "jsonl" | "npz";

function formatOf(path: string): InputsFormat {
  const ext = extname(path).toLowerCase();
  if (ext === ".jsonl" || ext === ".ndjson") return "jsonl";
  if (ext === ".npz") return "npz";
  throw userError("AESM4101", "", `unsupported inputs file extension ${JSON.stringify(ext)} (use .jsonl or .npz)`, path);
}

/** Check the extension before any work, so `--save-inputs x.csv` fails at once. */
export function checkInputsPath(path: string): void {
  formatOf(path);
}

function readBytes(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw userError("AESM4001", "", code === "ENOENT" ? "no such file" : `cannot read: ${code ?? String(e)}`, path);
  }
}

/** Read supplied inputs, validated against the model's features and scenario levels. */
export function readInputsFile(path: string, spec: ModelSpec): InputBatch {
  const format = formatOf(path);
  const bytes = readBytes(path);
  return format === "jsonl" ? parseJsonlInputs(bytes.toString("utf8"), spec, path) : parseNpzInputs(bytes, spec, path);
}

/** Write the inputs of a run (atomically) in the format the extension names. */
export function writeInputsFile(path: string, spec: ModelSpec, batch: InputBatch): void {
  const format = formatOf(path);
  if (format === "jsonl") writeFileAtomic(path, jsonlLines(spec, batch));
  else writeFileAtomic(path, npzChunks(spec, batch));
}

class Problems {
  readonly list: Diagnostic[] = [];
  private dropped = 0;
  constructor(private readonly file: string) {}
  add(code: string, path: string, message: string, line?: number): void {
    if (this.list.length >= MAX_PROBLEMS) {
      this.dropped++;
      return;
    }
    this.list.push({ code, path, message, file: this.file, ...(line !== undefined ? { line, column: 1 } : {}) });
  }
  throwIfAny(): void {
    if (!this.list.length) return;
    const all = [...this.list];
    if (this.dropped) all.push({ code: "AESM4104", path: "", message: `${this.dropped} more problem(s) not listed`, file: this.file });
    throw new AesmError(all);
  }
}

function inputNames(spec: ModelSpec): string[] {
  return [...spec.features.map((f) => f.name), ...spec.scenarios.map((l) => l.name)];
}

function valuesList(level: ScenarioLevelSpec): string {
  return level.values.map((v) => JSON.stringify(v)).join(", ");
}

// ---------------------------------------------------------------------------------------
// JSON lines: one object per row, `{"user_id": 12, "stats": [0.1, …], "page": "home"}`.

const INT64_MIN = -(1n << 63n);
const INT64_MAX = (1n << 63n) - 1n;

/** An id as int64: an integer number, or a decimal string for ids beyond 2^53. */
function readId(v: unknown): bigint | undefined {
  if (typeof v === "number") return Number.isSafeInteger(v) ? BigInt(v) : undefined;
  if (typeof v === "string" && /^-?\d{1,19}$/.test(v)) {
    const b = BigInt(v);
    return b >= INT64_MIN && b <= INT64_MAX ? b : undefined;
  }
  return undefined;
}

export function parseJsonlInputs(text: string, spec: ModelSpec, file: string): InputBatch {
  const p = new Problems(file);
  const known = new Set(inputNames(spec));
  const lines = text.split("\n");
  const objects: { obj: Record<string, unknown>; line: number }[] = [];
  lines.forEach((raw, i) => {
    const s = raw.trim();
    if (s === "") return;
    const row = objects.length;
    let v: unknown;
    try {
      v = JSON.parse(s);
    } catch (e) {
      p.add("AESM4102", "", `row ${row}: invalid JSON: ${(e as Error).message}`, i + 1);
      objects.push({ obj: {}, line: i + 1 });
      return;
    }
    if (typeof v !== "object" || v === null || Array.isArray(v)) {
      p.add("AESM4104", "", `row ${row}: expected an object of input values, got ${Array.isArray(v) ? "an array" : typeof v}`, i + 1);
      objects.push({ obj: {}, line: i + 1 });
      return;
    }
    objects.push({ obj: v as Record<string, unknown>, line: i + 1 });
  });
  if (!objects.length && !p.list.length) p.add("AESM4107", "", "no rows (one JSON object per line expected)");
  p.throwIfAny();

  const rows = objects.length;
  const batch: InputBatch = { rows, features: {}, scenarios: {} };
  for (const f of spec.features)
    batch.features[f.name] = f.kind === "categorical" ? new BigInt64Array(rows) : new Float32Array(rows * f.dim);
  for (const l of spec.scenarios) batch.scenarios[l.name] = new BigInt64Array(rows);

  objects.forEach(({ obj, line }, row) => {
    for (const key of Object.keys(obj))
      if (!known.has(key))
        p.add("AESM4105", key, `row ${row}: "${key}" is not an input of the model (inputs: ${[...known].join(", ")})`, line);
    for (const f of spec.features) {
      const v = obj[f.name];
      if (v === undefined) {
        p.add("AESM4103", f.name, `row ${row}: missing "${f.name}"`, line);
        continue;
      }
      readFeatureValue(p, f, v, row, line, batch);
    }
    for (const l of spec.scenarios) {
      const v = obj[l.name];
      if (v === undefined) {
        p.add("AESM4103", l.name, `row ${row}: missing "${l.name}"`, line);
        continue;
      }
      const idx = typeof v === "string" ? l.values.indexOf(v) : typeof v === "number" && Number.isInteger(v) ? v : -1;
      if (idx < 0 || idx >= l.values.length)
        p.add(
          "AESM4106",
          l.name,
          `row ${row}: "${l.name}" must be one of ${valuesList(l)} or an index 0..${l.values.length - 1}, got ${JSON.stringify(v)}`,
          line,
        );
      else batch.scenarios[l.name]![row] = BigInt(idx);
    }
  });
  p.throwIfAny();
  return batch;
}

function readFeatureValue(p: Problems, f: FeatureSpec, v: unknown, row: number, line: number, batch: InputBatch): void {
  if (f.kind === "categorical") {
    const id = readId(v);
    if (id === undefined)
      p.add(
        "AESM4104",
        f.name,
        `row ${row}: "${f.name}" must be an integer id (a number, or a decimal string beyond 2^53), got ${JSON.stringify(v)}`,
        line,
      );
    else (batch.features[f.name] as BigInt64Array)[row] = id;
    return;
  }
  const values = typeof v === "number" && f.dim === 1 ? [v] : v;
  if (!Array.isArray(values) || values.length !== f.dim || values.some((x) => typeof x !== "number")) {
    const got = Array.isArray(v) ? `${v.length} value(s)${v.some((x) => typeof x !== "number") ? " not all numbers" : ""}` : JSON.stringify(v);
    p.add("AESM4104", f.name, `row ${row}: "${f.name}" must be an array of ${f.dim} number(s), got ${got}`, line);
    return;
  }
  const out = batch.features[f.name] as Float32Array;
  values.forEach((x: number, d) => {
    const y = Math.fround(x);
    if (!Number.isFinite(y)) p.add("AESM4104", f.name, `row ${row}: "${f.name}"[${d}] = ${x} overflows float32`, line);
    out[row * f.dim + d] = y;
  });
}

/** The shortest decimal that reads back as the same float32 (−0 kept). */
export function formatFloat32(x: number): string {
  if (Object.is(x, -0)) return "-0";
  if (!Number.isFinite(x)) return String(x);
  for (let p = 1; p < 9; p++) {
    const s = x.toPrecision(p);
    if (Math.fround(Number(s)) === x) return String(Number(s));
  }
  return String(Number(x.toPrecision(9)));
}

function* jsonlLines(spec: ModelSpec, batch: InputBatch): Generator<string> {
  const ids = spec.features.map((f) => batch.features[f.name]!);
  const lvls = spec.scenarios.map((l) => batch.scenarios[l.name]!);
  let buf = "";
  for (let r = 0; r < batch.rows; r++) {
    const parts: string[] = [];
    spec.features.forEach((f, k) => {
      const data = ids[k]!;
      if (f.kind === "categorical") {
        const id = (data as BigInt64Array)[r]!;
        // ids beyond 2^53 would lose digits as JSON numbers
        const safe = id >= -(2n ** 53n) && id <= 2n ** 53n;
        parts.push(`${JSON.stringify(f.name)}:${safe ? id.toString() : JSON.stringify(id.toString())}`);
      } else {
        const x = data as Float32Array;
        const vals: string[] = [];
        for (let d = 0; d < f.dim; d++) vals.push(formatFloat32(x[r * f.dim + d]!));
        parts.push(`${JSON.stringify(f.name)}:[${vals.join(",")}]`);
      }
    });
    spec.scenarios.forEach((l, k) => {
      parts.push(`${JSON.stringify(l.name)}:${JSON.stringify(l.values[Number(lvls[k]![r]!)])}`);
    });
    buf += `{${parts.join(",")}}\n`;
    if (buf.length > 1 << 16) {
      yield buf;
      buf = "";
    }
  }
  if (buf) yield buf;
}

// ---------------------------------------------------------------------------------------
// .npz: one array per input, named after it (np.savez(f, user_id=…, stats=…, page=…)).

export function parseNpzInputs(bytes: Uint8Array, spec: ModelSpec, file: string): InputBatch {
  const p = new Problems(file);
  let entries: Map<string, Uint8Array>;
  try {
    entries = readZip(bytes);
  } catch (e) {
    if (e instanceof NpyFormatError) throw userError("AESM4102", "", `not a readable .npz archive: ${e.message}`, file);
    throw e;
  }
  const arrays = new Map<string, NpyArray>();
  for (const [entry, data] of entries) {
    const name = entry.endsWith(".npy") ? entry.slice(0, -4) : entry;
    try {
      arrays.set(name, parseNpy(data));
    } catch (e) {
      if (!(e instanceof NpyFormatError)) throw e;
      p.add("AESM4102", name, `array ${entry}: ${e.message}`);
    }
  }
  p.throwIfAny();
  const known = inputNames(spec);
  for (const name of arrays.keys())
    if (!known.includes(name)) p.add("AESM4105", name, `array "${name}" is not an input of the model (inputs: ${known.join(", ")})`);
  for (const name of known) if (!arrays.has(name)) p.add("AESM4103", name, `missing array "${name}"`);
  p.throwIfAny();

  // every array's first dimension is the row count
  const rowsOf = known.map((n) => arrays.get(n)!.shape[0] ?? 1);
  const rows = rowsOf[0]!;
  known.forEach((n, i) => {
    if (arrays.get(n)!.shape.length === 0) p.add("AESM4104", n, `array "${n}" is a scalar; one value per row expected`);
    else if (rowsOf[i] !== rows) p.add("AESM4107", n, `array "${n}" has ${rowsOf[i]} rows, "${known[0]}" has ${rows}`);
  });
  if (!p.list.length && rows === 0) p.add("AESM4107", "", "no rows");
  p.throwIfAny();

  const batch: InputBatch = { rows, features: {}, scenarios: {} };
  for (const f of spec.features) {
    const a = arrays.get(f.name)!;
    if (f.kind === "categorical") {
      if (a.kind !== "int" || a.shape.length !== 1) {
        p.add("AESM4104", f.name, `array "${f.name}" must be integer ids of shape (${rows},), got '${a.dtype}' of shape (${a.shape.join(", ")})`);
        continue;
      }
      batch.features[f.name] = a.data;
    } else {
      const okShape = (a.shape.length === 2 && a.shape[1] === f.dim) || (a.shape.length === 1 && f.dim === 1);
      if ((a.kind !== "float" && a.kind !== "int") || !okShape) {
        p.add("AESM4104", f.name, `array "${f.name}" must be numbers of shape (${rows}, ${f.dim}), got '${a.dtype}' of shape (${a.shape.join(", ")})`);
        continue;
      }
      const x = new Float32Array(rows * f.dim);
      for (let i = 0; i < x.length; i++) {
        const v = a.kind === "int" ? Number(a.data[i]!) : a.data[i]!;
        x[i] = Math.fround(v);
        if (Number.isFinite(v) && !Number.isFinite(x[i]!))
          p.add("AESM4104", f.name, `row ${Math.floor(i / f.dim)}: "${f.name}"[${i % f.dim}] = ${v} overflows float32`);
      }
      batch.features[f.name] = x;
    }
  }
  for (const l of spec.scenarios) {
    const a = arrays.get(l.name)!;
    if ((a.kind !== "int" && a.kind !== "str") || a.shape.length !== 1) {
      p.add("AESM4104", l.name, `array "${l.name}" must be value indices or names of shape (${rows},), got '${a.dtype}' of shape (${a.shape.join(", ")})`);
      continue;
    }
    const idx = new BigInt64Array(rows);
    for (let r = 0; r < rows; r++) {
      const v = a.data[r]!;
      const i = typeof v === "string" ? l.values.indexOf(v) : v >= 0n && v < BigInt(l.values.length) ? Number(v) : -1;
      if (i < 0)
        p.add(
          "AESM4106",
          l.name,
          `row ${r}: "${l.name}" must be one of ${valuesList(l)} or an index 0..${l.values.length - 1}, got ${typeof v === "string" ? JSON.stringify(v) : v}`,
        );
      else idx[r] = BigInt(i);
    }
    batch.scenarios[l.name] = idx;
  }
  p.throwIfAny();
  return batch;
}

function npzChunks(spec: ModelSpec, batch: InputBatch): Uint8Array[] {
  const entries: { name: string; data: Uint8Array }[] = [];
  for (const f of spec.features) {
    const data = batch.features[f.name]!;
    entries.push({
      name: `${f.name}.npy`,
      data: f.kind === "categorical" ? encodeNpy(data as BigInt64Array, [batch.rows]) : encodeNpy(data as Float32Array, [batch.rows, f.dim]),
    });
  }
  for (const l of spec.scenarios) entries.push({ name: `${l.name}.npy`, data: encodeNpy(batch.scenarios[l.name]!, [batch.rows]) });
  return writeZip(entries);
}
