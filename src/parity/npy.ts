// NumPy .npy arrays and .npz archives (a zip of .npy files), read and written without a
// dependency: npm has .npy parsers but none that also reads numpy's zip64 .npz and writes one.
// Reads what np.save / np.savez / np.savez_compressed write; writes stored (uncompressed) .npz.

import { inflateRawSync } from "node:zlib";

export type NpyArray =
  | { kind: "int"; dtype: string; shape: number[]; data: BigInt64Array }
  | { kind: "float"; dtype: string; shape: number[]; data: Float64Array }
  | { kind: "bool"; dtype: string; shape: number[]; data: Uint8Array }
  | { kind: "str"; dtype: string; shape: number[]; data: string[] };

/** A malformed or unsupported file; the caller adds the file name and entry. */
export class NpyFormatError extends Error {}

const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

/** Parse one .npy file (format versions 1–3, any byte order, C or Fortran order up to 2-D). */
export function parseNpy(bytes: Uint8Array): NpyArray {
  if (bytes.length < 10 || MAGIC.some((b, i) => bytes[i] !== b)) throw new NpyFormatError("not a .npy array (bad magic)");
  const major = bytes[6]!;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let start: number;
  if (major === 1) {
    headerLen = view.getUint16(8, true);
    start = 10;
  } else if (major === 2 || major === 3) {
    headerLen = view.getUint32(8, true);
    start = 12;
  } else throw new NpyFormatError(`unsupported .npy format version ${major}`);
  if (start + headerLen > bytes.length) throw new NpyFormatError("truncated .npy header");
  const header = new TextDecoder(major === 3 ? "utf-8" : "latin1").decode(bytes.subarray(start, start + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined)
    throw new NpyFormatError(`unreadable .npy header ${JSON.stringify(header.trim())}`);
  const shape = shapeText
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "")
    .map((s) => Number(s.replace(/L$/, "")));
  if (shape.some((d) => !Number.isSafeInteger(d) || d < 0)) throw new NpyFormatError(`bad shape (${shapeText})`);
  if (shape.length > 2) throw new NpyFormatError(`arrays of ${shape.length} dimensions are not inputs (1 or 2 expected)`);
  const n = shape.reduce((a, b) => a * b, 1);
  const order = descr[0];
  const little = order !== ">";
  const code = order === "<" || order === ">" || order === "|" || order === "=" ? descr.slice(1) : descr;
  const dataStart = start + headerLen;
  const m = /^([biufU])(\d+)$/.exec(code);
  if (!m) throw new NpyFormatError(`unsupported dtype '${descr}'`);
  const kind = m[1]!;
  const size = Number(m[2]);
  const itemBytes = kind === "U" ? 4 * size : size;
  if (dataStart + n * itemBytes > bytes.length)
    throw new NpyFormatError(`truncated data: ${n} values of '${descr}' need ${n * itemBytes} bytes`);
  const data = new DataView(bytes.buffer, bytes.byteOffset + dataStart, n * itemBytes);

  let arr: NpyArray;
  if (kind === "b" && size === 1) {
    arr = { kind: "bool", dtype: descr, shape, data: bytes.slice(dataStart, dataStart + n) };
  } else if (kind === "i" || kind === "u") {
    const out = new BigInt64Array(n);
    for (let i = 0; i < n; i++) {
      const o = i * size;
      switch (size) {
        case 1:
          out[i] = BigInt(kind === "i" ? data.getInt8(o) : data.getUint8(o));
          break;
        case 2:
          out[i] = BigInt(kind === "i" ? data.getInt16(o, little) : data.getUint16(o, little));
          break;
        case 4:
          out[i] = BigInt(kind === "i" ? data.getInt32(o, little) : data.getUint32(o, little));
          break;
        case 8:
          if (kind === "i") out[i] = data.getBigInt64(o, little);
          else {
            const u = data.getBigUint64(o, little);
            if (u >= 1n << 63n) throw new NpyFormatError(`uint64 value ${u} at index ${i} does not fit int64`);
            out[i] = u;
          }
          break;
        default:
          throw new NpyFormatError(`unsupported dtype '${descr}'`);
      }
    }
    arr = { kind: "int", dtype: descr, shape, data: out };
  } else if (kind === "f") {
    const out = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const o = i * size;
      if (size === 8) out[i] = data.getFloat64(o, little);
      else if (size === 4) out[i] = data.getFloat32(o, little);
      else if (size === 2) out[i] = halfBitsToNumber(data.getUint16(o, little));
      else throw new NpyFormatError(`unsupported dtype '${descr}'`);
    }
    arr = { kind: "float", dtype: descr, shape, data: out };
  } else if (kind === "U") {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      let s = "";
      for (let c = 0; c < size; c++) {
        const cp = data.getUint32(i * itemBytes + 4 * c, little);
        if (cp === 0) break;
        s += String.fromCodePoint(cp);
      }
      out.push(s);
    }
    arr = { kind: "str", dtype: descr, shape, data: out };
  } else throw new NpyFormatError(`unsupported dtype '${descr}'`);

  if (fortran === "True" && shape.length === 2) transposeInPlace(arr, shape[0]!, shape[1]!);
  return arr;
}

/** Fortran-ordered [rows, cols] data to C order. */
function transposeInPlace(arr: NpyArray, rows: number, cols: number): void {
  const move = <T extends { [i: number]: unknown; length: number }>(src: T, dst: T): T => {
    for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) dst[r * cols + c] = src[c * rows + r]!;
    return dst;
  };
  if (arr.kind === "int") arr.data = move(arr.data, new BigInt64Array(arr.data.length));
  else if (arr.kind === "float") arr.data = move(arr.data, new Float64Array(arr.data.length));
  else if (arr.kind === "bool") arr.data = move(arr.data, new Uint8Array(arr.data.length));
  else arr.data = move(arr.data, new Array<string>(arr.data.length));
}

function halfBitsToNumber(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? NaN : s * Infinity;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

/** Encode an int64 or float32 array as .npy (format 1.0, little-endian, C order). */
export function encodeNpy(data: BigInt64Array | Float32Array, shape: number[]): Uint8Array {
  const descr = data instanceof BigInt64Array ? "<i8" : "<f4";
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(", ")})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // magic (6) + version (2) + length (2) + header + '\n' is padded to a multiple of 64
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, " ") + "\n";
  const out = new Uint8Array(total + data.byteLength);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, header.length, true);
  for (let i = 0; i < header.length; i++) out[10 + i] = header.charCodeAt(i);
  // typed arrays are little-endian on every platform Node runs on that we support
  out.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), total);
  return out;
}

// ---------------------------------------------------------------------------------------
// Zip containers (.npz).

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

export function crc32(bytes: Uint8Array): number {
  let c = 0xffffffff;
  for (let i = 0; i < bytes.length; i++) c = CRC_TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

/** Entries of a zip archive by name (stored or deflated; zip64 as numpy writes it). */
export function readZip(bytes: Uint8Array): Map<string, Uint8Array> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let eocd = -1;
  for (let i = bytes.length - 22; i >= Math.max(0, bytes.length - 22 - 65535); i--)
    if (view.getUint32(i, true) === 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd < 0) throw new NpyFormatError("not a zip archive (no end of central directory)");
  let count = view.getUint16(eocd + 10, true);
  let cdOffset = view.getUint32(eocd + 16, true);
  if (count === 0xffff || cdOffset === 0xffffffff) {
    const loc = eocd - 20;
    if (loc < 0 || view.getUint32(loc, true) !== 0x07064b50) throw new NpyFormatError("zip64 locator missing");
    const z64 = Number(view.getBigUint64(loc + 8, true));
    if (view.getUint32(z64, true) !== 0x06064b50) throw new NpyFormatError("zip64 end record missing");
    count = Number(view.getBigUint64(z64 + 32, true));
    cdOffset = Number(view.getBigUint64(z64 + 48, true));
  }
  const out = new Map<string, Uint8Array>();
  let p = cdOffset;
  for (let k = 0; k < count; k++) {
    if (p + 46 > bytes.length || view.getUint32(p, true) !== 0x02014b50) throw new NpyFormatError("corrupt zip central directory");
    const method = view.getUint16(p + 10, true);
    const crc = view.getUint32(p + 16, true);
    let compSize = view.getUint32(p + 20, true);
    let size = view.getUint32(p + 24, true);
    const nameLen = view.getUint16(p + 28, true);
    const extraLen = view.getUint16(p + 30, true);
    const commentLen = view.getUint16(p + 32, true);
    let local = view.getUint32(p + 42, true);
    const name = new TextDecoder().decode(bytes.subarray(p + 46, p + 46 + nameLen));
    // zip64 extra: the 64-bit values of exactly the fields saturated at 0xffffffff, in this order
    let e = p + 46 + nameLen;
    const end = e + extraLen;
    while (e + 4 <= end) {
      const id = view.getUint16(e, true);
      const len = view.getUint16(e + 2, true);
      if (id === 0x0001) {
        let q = e + 4;
        if (size === 0xffffffff) (size = Number(view.getBigUint64(q, true))), (q += 8);
        if (compSize === 0xffffffff) (compSize = Number(view.getBigUint64(q, true))), (q += 8);
        if (local === 0xffffffff) local = Number(view.getBigUint64(q, true));
      }
      e += 4 + len;
    }
    if (view.getUint32(local, true) !== 0x04034b50) throw new NpyFormatError(`corrupt zip entry ${name}`);
    const dataAt = local + 30 + view.getUint16(local + 26, true) + view.getUint16(local + 28, true);
    const raw = bytes.subarray(dataAt, dataAt + compSize);
    let content: Uint8Array;
    if (method === 0) content = raw;
    else if (method === 8) content = new Uint8Array(inflateRawSync(raw));
    else throw new NpyFormatError(`zip entry ${name} uses compression method ${method} (stored or deflate expected)`);
    if (content.length !== size || crc32(content) !== crc) throw new NpyFormatError(`zip entry ${name} is corrupt (size or CRC mismatch)`);
    out.set(name, content);
    p = end + commentLen;
  }
  return out;
}

/** A stored (uncompressed) zip of the given entries, as chunks to write in order. */
export function writeZip(entries: { name: string; data: Uint8Array }[]): Uint8Array[] {
  const chunks: Uint8Array[] = [];
  const central: Uint8Array[] = [];
  let offset = 0;
  for (const { name, data } of entries) {
    const nameBytes = new TextEncoder().encode(name);
    if (data.length >= 0xffffffff || offset >= 0xffffffff) throw new NpyFormatError("archive over 4 GiB (zip64 writing is not supported)");
    const crc = crc32(data);
    const local = new Uint8Array(30 + nameBytes.length);
    const lv = new DataView(local.buffer);
    lv.setUint32(0, 0x04034b50, true);
    lv.setUint16(4, 20, true); // version needed
    lv.setUint16(8, 0, true); // stored
    lv.setUint16(12, 0x21, true); // DOS date 1980-01-01: reproducible bytes
    lv.setUint32(14, crc, true);
    lv.setUint32(18, data.length, true);
    lv.setUint32(22, data.length, true);
    lv.setUint16(26, nameBytes.length, true);
    local.set(nameBytes, 30);
    const cd = new Uint8Array(46 + nameBytes.length);
    const cv = new DataView(cd.buffer);
    cv.setUint32(0, 0x02014b50, true);
    cv.setUint16(4, 20, true);
    cv.setUint16(6, 20, true);
    cv.setUint16(14, 0x21, true);
    cv.setUint32(16, crc, true);
    cv.setUint32(20, data.length, true);
    cv.setUint32(24, data.length, true);
    cv.setUint16(28, nameBytes.length, true);
    cv.setUint32(42, offset, true);
    cd.set(nameBytes, 46);
    chunks.push(local, data);
    central.push(cd);
    offset += local.length + data.length;
  }
  const cdSize = central.reduce((n, c) => n + c.length, 0);
  const eocd = new Uint8Array(22);
  const ev = new DataView(eocd.buffer);
  ev.setUint32(0, 0x06054b50, true);
  ev.setUint16(8, entries.length, true);
  ev.setUint16(10, entries.length, true);
  ev.setUint32(12, cdSize, true);
  ev.setUint32(16, offset, true);
  return [...chunks, ...central, eocd];
}
