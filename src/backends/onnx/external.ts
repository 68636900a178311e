// ONNX external data: large initialisers kept in one data file beside the model, so models past
// protobuf's 2 GiB limit can be written, and read back with memory bounded by one tensor.
//
// Writing streams each tensor's bytes from its own buffer into the data file (no buffer holds
// the whole model), at aligned offsets, and records `location` / `offset` / `length` with
// data_location = EXTERNAL. Both files go through temp + rename, the data file first and the
// model last (src/core/atomic.ts writeFilesAtomic): a failed write changes nothing.
//
// Codes: AESM3009 invalid external-data option (threshold, location);
//        AESM3010 a model's external-data reference is invalid (location escapes the model's
//        folder, offset or length not a non-negative integer, range beyond the data file).

import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from "node:path";
import onnxProto from "onnx-proto";
import { userError } from "../../core/diagnostics.ts";
import { writeFilesAtomic } from "../../core/atomic.ts";

const { onnx } = onnxProto;
type ModelProto = onnxProto.onnx.ModelProto;
type ITensorProto = onnxProto.onnx.ITensorProto;

export interface ExternalDataOptions {
  /** Initialisers of at least this many bytes go to the data file; smaller ones stay in the model. */
  threshold: number;
  /** The data file's name, in the model's folder (default `<model file name>.data`). */
  location?: string;
}

/** Protobuf cannot encode (and onnxruntime cannot parse) a message of 2 GiB or more. */
export const PROTOBUF_LIMIT = 2 ** 31 - 1;
/** Threshold used when a model is moved to external data because it would pass PROTOBUF_LIMIT (onnx's own default). */
export const AUTO_EXTERNAL_THRESHOLD = 1024;
/**
 * Offsets in the data file: tensors of LARGE_TENSOR bytes or more start at multiples of 64 KiB
 * (the allocation granularity on every platform, so onnxruntime can memory-map them; at most
 * 6% padding), smaller ones at multiples of 64 bytes (cache lines, SIMD loads).
 */
export const LARGE_TENSOR = 1 << 20;
export const LARGE_ALIGN = 1 << 16;
export const SMALL_ALIGN = 64;
/** Bytes assumed per node and per initialiser besides tensor data, when estimating a model's encoded size. */
const OVERHEAD_PER_ENTRY = 1024;

/** Floating-point tensors (float, float16, double, bfloat16): weights. Everything else stays inline. */
const MOVABLE = new Set<number>([
  onnx.TensorProto.DataType.FLOAT,
  onnx.TensorProto.DataType.FLOAT16,
  onnx.TensorProto.DataType.DOUBLE,
  onnx.TensorProto.DataType.BFLOAT16,
]);

export function alignmentFor(bytes: number): number {
  return bytes >= LARGE_TENSOR ? LARGE_ALIGN : SMALL_ALIGN;
}

function rawBytes(t: ITensorProto): number {
  return t.rawData?.length ?? 0;
}

/** Whether the model's encoded size would reach protobuf's limit (tensor bytes plus a generous allowance per entry). */
export function exceedsProtobufLimit(model: ModelProto): boolean {
  const g = model.graph;
  if (!g) return false;
  let size = 0;
  for (const t of g.initializer ?? []) size += rawBytes(t) + OVERHEAD_PER_ENTRY;
  size += ((g.node?.length ?? 0) + (g.valueInfo?.length ?? 0)) * OVERHEAD_PER_ENTRY;
  return size >= PROTOBUF_LIMIT;
}

/** The default data file name: the model file's name plus `.data` (`model.onnx` → `model.onnx.data`). */
export function defaultLocation(modelPath: string): string {
  return `${basename(modelPath)}.data`;
}

/** AESM3009 unless the options are usable for writing beside `modelPath`. */
export function checkExternalDataOptions(modelPath: string, o: ExternalDataOptions): string {
  if (typeof o.threshold !== "number" || !Number.isFinite(o.threshold) || o.threshold < 0)
    throw userError("AESM3009", "externalData.threshold", `must be a non-negative number of bytes, got ${String(o.threshold)}`);
  const location = o.location ?? defaultLocation(modelPath);
  // One plain file name: onnxruntime resolves it against the model's folder and refuses paths that leave it.
  if (location === "" || location === "." || location === ".." || /[\\/]/.test(location) || location.includes("\0"))
    throw userError("AESM3009", "externalData.location", `must be a plain file name in the model's folder, got ${JSON.stringify(location)}`);
  if (location === basename(modelPath))
    throw userError("AESM3009", "externalData.location", `must differ from the model file's own name ${JSON.stringify(location)}`);
  return location;
}

interface Placement {
  tensor: ITensorProto;
  offset: number;
  length: number;
}

/** Zeros for padding between tensors (at most one alignment's worth). */
const PADDING = new Uint8Array(LARGE_ALIGN);

/** The data file's chunks: padding and each tensor's own bytes (views, never copies). */
function* dataChunks(placed: readonly Placement[]): Generator<Uint8Array> {
  let at = 0;
  for (const p of placed) {
    if (p.offset > at) yield PADDING.subarray(0, p.offset - at);
    yield p.tensor.rawData!;
    at = p.offset + p.length;
  }
}

export interface ExternalWriteResult {
  modelBytes: number;
  dataBytes: number;
  /** The data file's path ("" when no tensor reached the threshold and no data file was written). */
  dataPath: string;
  externalTensors: number;
}

/**
 * Write `model` to `path` with every floating-point initialiser of `threshold` bytes or more in the data file
 * `location` beside it. `model` itself is not modified. When no tensor reaches the threshold the
 * model is written alone. Memory: the encoded model without the moved tensors, plus nothing per
 * tensor (their bytes are written from the buffers the model already references).
 */
export function writeModelWithExternalData(path: string, model: ModelProto, o: ExternalDataOptions): ExternalWriteResult {
  const location = checkExternalDataOptions(path, o);
  const graph = model.graph!;
  const placed: Placement[] = [];
  let end = 0;
  const initializer = (graph.initializer ?? []).map((t) => {
    const length = rawBytes(t);
    // Tensors held as typed fields (float_data, …) rather than raw_data stay inline: the emitter writes
    // raw_data. Integer and bool tensors are structure, not weights (axes, shapes, k, selection masks):
    // shape inference and checkers must read them from the model itself.
    if (length === 0 || length < o.threshold || !MOVABLE.has(t.dataType ?? 0)) return t;
    const align = alignmentFor(length);
    const offset = Math.ceil(end / align) * align;
    end = offset + length;
    placed.push({ tensor: t, offset, length });
    const moved: ITensorProto = { ...t, rawData: new Uint8Array(0) };
    moved.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
    moved.externalData = [
      { key: "location", value: location },
      { key: "offset", value: String(offset) },
      { key: "length", value: String(length) },
    ];
    return moved;
  });

  const encoded = onnx.ModelProto.encode({ ...model, graph: { ...graph, initializer } } as ModelProto).finish();
  const dataPath = placed.length ? join(dirname(path), location) : "";
  writeFilesAtomic([
    ...(placed.length ? [{ path: dataPath, chunks: dataChunks(placed) }] : []),
    { path, chunks: encoded },
  ]);
  return { modelBytes: encoded.length, dataBytes: end, dataPath, externalTensors: placed.length };
}

// ---- reading ----

function nonNegativeInt(s: string | undefined, what: string, fail: (m: string) => Error): number | undefined {
  if (s === undefined) return undefined;
  if (!/^\d{1,16}$/.test(s) || !Number.isSafeInteger(Number(s))) throw fail(`${what} must be a non-negative integer, got ${JSON.stringify(s.slice(0, 40))}`);
  return Number(s);
}

/**
 * The bytes of an external tensor, read from its data file: only its own range is read, after
 * checking the reference (location inside `baseDir`, offset and length within the file). Memory
 * is bounded by the file's real size, never by what the model claims.
 */
export function readExternalTensorData(t: ITensorProto, baseDir: string, file?: string): Uint8Array {
  const name = t.name ?? "";
  const fail = (m: string) => userError("AESM3010", name, `external data of tensor "${name}": ${m}`, file);
  const kv = new Map<string, string>();
  for (const e of t.externalData ?? []) kv.set(e.key ?? "", e.value ?? "");
  const location = kv.get("location");
  if (!location) throw fail("no location");
  const root = resolve(baseDir);
  const target = resolve(root, location);
  const rel = relative(root, target);
  if (isAbsolute(location) || rel === "" || rel === ".." || rel.startsWith(`..${sep}`) || isAbsolute(rel) || location.includes("\0"))
    throw fail(`location ${JSON.stringify(location.slice(0, 200))} is not a file inside the model's folder`);
  const offset = nonNegativeInt(kv.get("offset"), "offset", fail) ?? 0;
  const claimed = nonNegativeInt(kv.get("length"), "length", fail);

  let fd: number;
  try {
    fd = openSync(target, "r");
  } catch (e) {
    throw userError("AESM4001", name, `cannot read external data ${target}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, file);
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) throw fail(`${location} is not a regular file`);
    const length = claimed ?? st.size - offset;
    if (offset > st.size || length < 0 || offset + length > st.size)
      throw fail(`range [${offset}, ${offset + (claimed ?? 0)}) lies beyond the end of ${location} (${st.size} bytes)`);
    const out = new Uint8Array(length);
    let got = 0;
    while (got < length) {
      const n = readSync(fd, out, got, Math.min(length - got, 1 << 26), offset + got);
      if (n === 0) throw fail(`${location} ended early at byte ${offset + got}`);
      got += n;
    }
    return out;
  } finally {
    closeSync(fd);
  }
}
