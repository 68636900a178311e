// The safetensors checkpoint format: read (F32, F16, BF16, F64 → float32) and write (F32).
// Every claim in a file is checked against its actual size before anything is allocated.
//
// Layout: u64 LE header length N · N bytes of UTF-8 JSON · data. The header maps tensor
// names to {dtype, shape, data_offsets: [begin, end]} (relative to the data start), plus
// an optional "__metadata__": {str: str}.
//
// Codes (AESM20xx; validate.ts uses AESM21xx):
//   AESM2001  file shorter than the 8-byte header length
//   AESM2002  header length runs past the end of the file
//   AESM2003  header length over the 100 MB limit (the reference implementation's)
//   AESM2004  header is not valid UTF-8
//   AESM2005  header is not valid JSON
//   AESM2006  header is not a JSON object
//   AESM2007  a name appears twice in the header
//   AESM2008  "__metadata__" is not an object of strings
//   AESM2009  tensor entry is not an object, or lacks dtype / shape / data_offsets
//   AESM2010  unsupported or malformed dtype
//   AESM2011  shape is not an array of non-negative integers
//   AESM2012  data_offsets is not [begin, end] with integers 0 ≤ begin ≤ end
//   AESM2013  data_offsets end beyond the end of the file (truncated)
//   AESM2014  byte length differs from numel × dtype size
//   AESM2015  data ranges of two tensors overlap
// File access: AESM4001 (cannot read the file); writing uses atomic.ts (AESM4002/4003).

import { constants as bufferConstants } from "node:buffer";
import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { type Diagnostic, AesmError, invariant, userError } from "../core/diagnostics.ts";
import { type Tensor, bf16ToFloat, halfToFloat, numel } from "../core/tensor.ts";
import { writeFileAtomic } from "../core/atomic.ts";

export interface SafetensorsContents {
  /** Float32 tensors in header order. */
  tensors: Map<string, Tensor>;
  /** The `__metadata__` map (empty if absent). Has no prototype, so any key is safe. */
  metadata: Record<string, string>;
}

/** Same limit as the reference Rust implementation: a larger header is a hostile or broken file. */
export const MAX_HEADER_BYTES = 100_000_000;

const METADATA_KEY = "__metadata__";

const DTYPE_BYTES = { F32: 4, F16: 2, BF16: 2, F64: 8 } as const;
type ReadableDtype = keyof typeof DTYPE_BYTES;

function isReadableDtype(d: string): d is ReadableDtype {
  return Object.prototype.hasOwnProperty.call(DTYPE_BYTES, d);
}

/** `[16, 30]`, the form every weights message uses. */
export function formatShape(shape: readonly number[]): string {
  return `[${shape.join(", ")}]`;
}

/** Little-endian platforms can copy F32 bytes straight into a Float32Array. */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

// ---- reading ----

/** Parse a safetensors file held in memory. `file` names it in errors. */
export function readSafetensors(bytes: Uint8Array, file: string): SafetensorsContents {
  const fail = (code: string, message: string, path = ""): AesmError => userError(code, path, message, file);

  if (bytes.length < 8)
    throw fail("AESM2001", `file too short: ${bytes.length} bytes, a safetensors file starts with an 8-byte header length`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // Compare as bigint: a hostile u64 need not fit a double exactly.
  const headerLen = view.getBigUint64(0, true);
  if (headerLen > BigInt(bytes.length - 8))
    throw fail("AESM2002", `header length ${headerLen} exceeds file size ${bytes.length}`);
  const n = Number(headerLen);
  if (n > MAX_HEADER_BYTES) throw fail("AESM2003", `header length ${n} exceeds the limit of ${MAX_HEADER_BYTES} bytes`);

  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(bytes.subarray(8, 8 + n));
  } catch {
    throw fail("AESM2004", "header is not valid UTF-8");
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (e) {
    throw fail("AESM2005", `header is not valid JSON: ${(e as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed))
    throw fail("AESM2006", `header is not a JSON object (got ${Array.isArray(parsed) ? "an array" : jsonKind(parsed)})`);

  // JSON.parse keeps only the last of duplicate keys and reorders integer-like ones,
  // so names and their order come from scanning the text itself.
  const entries = topLevelEntries(text);
  const seen = new Set<string>();
  for (const { key } of entries) {
    if (seen.has(key)) {
      const what = key === METADATA_KEY ? `"${METADATA_KEY}"` : "tensor name";
      throw fail("AESM2007", `duplicate ${what} in header`, key);
    }
    seen.add(key);
  }

  const dataStart = 8 + n;
  const dataSize = bytes.length - dataStart;
  const metadata: Record<string, string> = Object.create(null) as Record<string, string>;
  const problems: Diagnostic[] = [];
  const problem = (code: string, path: string, message: string) => problems.push({ code, path, message, file });
  const ranges: { name: string; begin: number; end: number }[] = [];
  const planned: { name: string; dtype: ReadableDtype; shape: number[]; begin: number; end: number }[] = [];

  for (const { key, valueText } of entries) {
    const value: unknown = JSON.parse(valueText);
    if (key === METADATA_KEY) {
      if (typeof value !== "object" || value === null || Array.isArray(value)) {
        throw fail("AESM2008", `"${METADATA_KEY}" must be an object of strings, got ${jsonKind(value)}`);
      }
      for (const { key: mk, valueText: mv } of topLevelEntries(valueText)) {
        const v: unknown = JSON.parse(mv);
        if (typeof v !== "string")
          throw fail("AESM2008", `"${METADATA_KEY}" value for "${mk}" must be a string, got ${jsonKind(v)}`);
        metadata[mk] = v;
      }
      continue;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      problem("AESM2009", key, `entry must be an object with dtype, shape and data_offsets, got ${jsonKind(value)}`);
      continue;
    }
    const fields = new Map(Object.entries(value as Record<string, unknown>));
    const missing = ["dtype", "shape", "data_offsets"].filter((f) => !fields.has(f));
    if (missing.length) {
      problem("AESM2009", key, `entry lacks ${missing.join(", ")}`);
      continue;
    }
    const dtype = fields.get("dtype");
    if (typeof dtype !== "string") {
      problem("AESM2010", key, `dtype must be a string, got ${jsonKind(dtype)}`);
      continue;
    }
    if (!isReadableDtype(dtype)) {
      problem("AESM2010", key, `unsupported dtype ${dtype} (expected F32, F16, BF16 or F64)`);
      continue;
    }
    const shape = fields.get("shape");
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && (d as number) >= 0)) {
      problem("AESM2011", key, `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`);
      continue;
    }
    const offsets = fields.get("data_offsets");
    if (
      !Array.isArray(offsets) ||
      offsets.length !== 2 ||
      !offsets.every((o) => Number.isSafeInteger(o) && (o as number) >= 0)
    ) {
      problem("AESM2012", key, `data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(offsets)}`);
      continue;
    }
    const [begin, end] = offsets as [number, number];
    if (begin > end) {
      problem("AESM2012", key, `data_offsets [${begin}, ${end}]: begin is after end`);
      continue;
    }
    if (end > dataSize) {
      problem("AESM2013", key, `truncated: data ends at byte ${dataStart + end}, file has ${bytes.length}`);
      continue;
    }
    const dims = shape as number[];
    const want = byteLength(dims, DTYPE_BYTES[dtype]);
    if (want !== end - begin) {
      const needs = want ?? "more than 2^53";
      const hold = `data_offsets [${begin}, ${end}] hold ${end - begin}`;
      problem("AESM2014", key, `${dtype} ${formatShape(dims)} needs ${needs} bytes, ${hold}`);
      continue;
    }
    ranges.push({ name: key, begin, end });
    planned.push({ name: key, dtype, shape: dims, begin, end });
  }

  // Empty ranges overlap nothing; otherwise, sorted by begin, each must start at or after the last end.
  const sorted = ranges.filter((r) => r.end > r.begin).sort((a, b) => a.begin - b.begin || a.end - b.end);
  let reach: (typeof sorted)[number] | undefined;
  for (const r of sorted) {
    if (reach && r.begin < reach.end)
      problem(
        "AESM2015",
        r.name,
        `data [${r.begin}, ${r.end}) overlaps tensor "${reach.name}" [${reach.begin}, ${reach.end})`,
      );
    if (!reach || r.end > reach.end) reach = r;
  }

  if (problems.length) throw new AesmError(problems);

  // Only now, with every size proven to lie inside the file, allocate.
  const tensors = new Map<string, Tensor>();
  for (const t of planned) {
    tensors.set(t.name, {
      dtype: "float32",
      shape: t.shape,
      data: decode(bytes, dataStart + t.begin, dataStart + t.end, t.dtype),
    });
  }
  return { tensors, metadata };
}

/** numel × size, or undefined once it exceeds what a double holds exactly (it cannot match then). */
function byteLength(shape: readonly number[], size: number): number | undefined {
  if (shape.includes(0)) return 0;
  let n = size;
  for (const d of shape) {
    n *= d;
    if (n > Number.MAX_SAFE_INTEGER) return undefined;
  }
  return n;
}

function decode(bytes: Uint8Array, from: number, to: number, dtype: ReadableDtype): Float32Array {
  const count = (to - from) / DTYPE_BYTES[dtype];
  const out = new Float32Array(count);
  // Copy first: data may sit at any byte offset, and typed arrays need aligned views.
  if (dtype === "F32" && LITTLE_ENDIAN) {
    new Uint8Array(out.buffer).set(bytes.subarray(from, to));
    return out;
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset + from, to - from);
  switch (dtype) {
    case "F32":
      for (let i = 0; i < count; i++) out[i] = view.getFloat32(4 * i, true);
      break;
    case "F64":
      for (let i = 0; i < count; i++) out[i] = view.getFloat64(8 * i, true);
      break;
    case "F16":
      for (let i = 0; i < count; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
      break;
    case "BF16":
      for (let i = 0; i < count; i++) out[i] = bf16ToFloat(view.getUint16(2 * i, true));
      break;
  }
  return out;
}

function jsonKind(v: unknown): string {
  if (v === null) return "null";
  if (Array.isArray(v)) return "an array";
  switch (typeof v) {
    case "object":
      return "an object";
    case "string":
      return `the string ${JSON.stringify(v)}`;
    default:
      return `${typeof v} ${JSON.stringify(v)}`;
  }
}

/**
 * Keys of a JSON object in text order, each with its value's source text.
 * `text` must already be known to be a valid JSON object (JSON.parse succeeded),
 * so this only tracks strings and bracket depth. Iterative: deep nesting cannot
 * overflow the stack.
 */
export function topLevelEntries(text: string): { key: string; valueText: string }[] {
  const out: { key: string; valueText: string }[] = [];
  let i = skipWs(text, 0);
  invariant(text[i] === "{", "topLevelEntries: not an object");
  i = skipWs(text, i + 1);
  if (text[i] === "}") return out;
  for (;;) {
    const keyEnd = stringEnd(text, i);
    const key = JSON.parse(text.slice(i, keyEnd)) as string;
    i = skipWs(text, keyEnd);
    invariant(text[i] === ":", "topLevelEntries: expected ':'");
    const valueStart = skipWs(text, i + 1);
    const valueEnd = valueEndAt(text, valueStart);
    out.push({ key, valueText: text.slice(valueStart, valueEnd) });
    i = skipWs(text, valueEnd);
    if (text[i] === "}") return out;
    invariant(text[i] === ",", "topLevelEntries: expected ',' or '}'");
    i = skipWs(text, i + 1);
  }
}

function skipWs(text: string, i: number): number {
  while (i < text.length && (text[i] === " " || text[i] === "\t" || text[i] === "\n" || text[i] === "\r")) i++;
  return i;
}

/** Index just past the string literal starting at `i` (which is a `"`). */
function stringEnd(text: string, i: number): number {
  invariant(text[i] === '"', "topLevelEntries: expected a string");
  for (let j = i + 1; j < text.length; j++) {
    const c = text[j];
    if (c === "\\") j++;
    else if (c === '"') return j + 1;
  }
  throw new Error("unreachable: unterminated string in valid JSON");
}

/** Index just past the JSON value starting at `i`. */
function valueEndAt(text: string, i: number): number {
  const c = text[i];
  if (c === '"') return stringEnd(text, i);
  if (c === "{" || c === "[") {
    let depth = 0;
    for (let j = i; j < text.length; j++) {
      const d = text[j];
      if (d === '"') j = stringEnd(text, j) - 1;
      else if (d === "{" || d === "[") depth++;
      else if (d === "}" || d === "]") {
        depth--;
        if (depth === 0) return j + 1;
      }
    }
    throw new Error("unreachable: unbalanced brackets in valid JSON");
  }
  // number, true, false, null
  let j = i;
  while (j < text.length && !",}] \t\n\r".includes(text[j]!)) j++;
  return j;
}

/** Largest single read: readFileSync stops at 2 GiB, one buffer at buffer.constants.MAX_LENGTH (4 GiB). */
const READ_SLICE = 1 << 30;

/** The whole file in one buffer, read in slices of at most `slice` bytes (files up to buffer.constants.MAX_LENGTH). */
export function readWholeFile(path: string, slice = READ_SLICE): Uint8Array {
  const fd = openSync(path, "r");
  try {
    const size = fstatSync(fd).size;
    if (size > bufferConstants.MAX_LENGTH)
      throw userError("AESM4001", "", `cannot read: the file has ${size} bytes, more than the ${bufferConstants.MAX_LENGTH} one buffer holds (split the checkpoint)`, path);
    const bytes = Buffer.allocUnsafe(size);
    for (let at = 0; at < size; ) {
      const n = readSync(fd, bytes, at, Math.min(slice, size - at), at);
      if (n === 0) throw userError("AESM4001", "", `cannot read: the file ended at byte ${at} of ${size} (changed while read?)`, path);
      at += n;
    }
    return bytes;
  } finally {
    closeSync(fd);
  }
}

/** Read and parse a safetensors file from disk. */
export function readSafetensorsFile(path: string): SafetensorsContents {
  let bytes: Uint8Array;
  try {
    bytes = readWholeFile(path);
  } catch (e) {
    if (e instanceof AesmError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw userError("AESM4001", "", code === "ENOENT" ? "no such file" : `cannot read: ${code ?? String(e)}`, path);
  }
  return readSafetensors(bytes, path);
}

// ---- writing ----

/**
 * Serialise float32 tensors (float64 ones are rounded to float32) in map order.
 * The header is padded with spaces to a multiple of 8 so the data is 8-byte
 * aligned, and the data ranges are contiguous from 0 to the end of the file, as
 * the reference implementation requires of what it loads.
 */
export function writeSafetensors(tensors: Map<string, Tensor>, metadata?: Record<string, string>): Uint8Array {
  const parts: string[] = [];
  if (metadata !== undefined) {
    const meta = Object.entries(metadata).map(([k, v]) => {
      invariant(typeof v === "string", () => `safetensors metadata "${k}" must be a string`);
      return `${JSON.stringify(k)}:${JSON.stringify(v)}`;
    });
    parts.push(`${JSON.stringify(METADATA_KEY)}:{${meta.join(",")}}`);
  }
  let offset = 0;
  for (const [name, t] of tensors) {
    invariant(name !== METADATA_KEY, `a tensor cannot be named ${METADATA_KEY}`);
    invariant(t.dtype === "float32" || t.dtype === "float64", () => `${name}: cannot write ${t.dtype} as F32`);
    invariant(
      t.shape.every((d) => Number.isSafeInteger(d) && d >= 0) && t.data.length === numel(t.shape),
      () => `${name}: ${t.data.length} values for shape ${formatShape(t.shape)}`,
    );
    const size = 4 * t.data.length;
    // Built by hand rather than JSON.stringify of one object: a "__proto__" name would vanish.
    parts.push(
      `${JSON.stringify(name)}:{"dtype":"F32","shape":${JSON.stringify(t.shape)},"data_offsets":[${offset},${offset + size}]}`,
    );
    offset += size;
  }
  let header = new TextEncoder().encode(`{${parts.join(",")}}`);
  const pad = (8 - (header.length % 8)) % 8;
  if (pad) {
    const padded = new Uint8Array(header.length + pad).fill(0x20);
    padded.set(header);
    header = padded;
  }

  const out = new Uint8Array(8 + header.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  let at = 8 + header.length;
  for (const t of tensors.values()) {
    const src = t.data as Float32Array | Float64Array;
    if (src instanceof Float32Array && LITTLE_ENDIAN) {
      out.set(new Uint8Array(src.buffer, src.byteOffset, src.byteLength), at);
    } else {
      for (let i = 0; i < src.length; i++) view.setFloat32(at + 4 * i, src[i]!, true);
    }
    at += 4 * src.length;
  }
  return out;
}

/** Write a safetensors file atomically (see writeSafetensors). */
export function writeSafetensorsFile(path: string, tensors: Map<string, Tensor>, metadata?: Record<string, string>): void {
  writeFileAtomic(path, writeSafetensors(tensors, metadata));
}
