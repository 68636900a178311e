// safetensors reading and writing: round trips, dtype conversion, and every broken or
// hostile file we know of, each with its exact code, path and message.

import { constants as bufferConstants } from "node:buffer";
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { type Tensor, f32 } from "../../src/core/tensor.ts";
import {
  readSafetensors,
  readSafetensorsFile,
  readWholeFile,
  topLevelEntries,
  writeSafetensors,
  writeSafetensorsFile,
} from "../../src/weights/safetensors.ts";
import { concat, craft, diagnosticsOf, f32Bytes, f64Bytes, u16Bytes } from "./craft.ts";

const FILE = "w.safetensors";

/** readSafetensors of a hand-made file. */
const readCrafted = (header: string | object, data?: Uint8Array) => readSafetensors(craft(header, data), FILE);

function only(fn: () => unknown) {
  const d = diagnosticsOf(fn);
  expect(d).toHaveLength(1);
  return d[0]!;
}

const tmp = mkdtempSync(join(tmpdir(), "aesm-weights-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("writeSafetensors → readSafetensors", () => {
  const tensors = new Map<string, Tensor>([
    ["b.weight", f32([2, 3], [1, -2, 3.5, 0, -0, 1e-40])],
    ["a.bias", f32([3], [Infinity, -Infinity, NaN])],
    ["scalar", f32([], [7])],
    ["empty", f32([0, 3])],
    ["__proto__", f32([1], [42])],
    ["constructor", f32([1], [43])],
    ["10", f32([1], [10])],
    ["2", f32([1], [2])],
    ["ünï.cødé", f32([2], [0.1, 0.2])],
  ]);

  it("returns the same names, order, shapes and bit patterns", () => {
    const bytes = writeSafetensors(tensors, { format: "pt", note: "é" });
    const { tensors: back, metadata } = readSafetensors(bytes, FILE);
    expect([...back.keys()]).toEqual([...tensors.keys()]);
    for (const [name, t] of tensors) {
      const r = back.get(name)!;
      expect(r.dtype).toBe("float32");
      expect(r.shape).toEqual(t.shape);
      expect(new Uint8Array((r.data as Float32Array).buffer)).toEqual(new Uint8Array((t.data as Float32Array).buffer));
    }
    expect({ ...metadata }).toEqual({ format: "pt", note: "é" });
  });

  it("follows the conventions the reference implementation checks on load", () => {
    const bytes = writeSafetensors(tensors);
    const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text[0]).toBe("{");
    // Padded with spaces only, fewer than 8 of them, after the closing brace.
    const body = text.trimEnd();
    expect(body.endsWith("}")).toBe(true);
    expect(text.slice(body.length)).toMatch(/^ {0,7}$/);
    // Ranges contiguous from 0, in map order, ending exactly at the end of the file.
    let at = 0;
    for (const { key, valueText } of topLevelEntries(text)) {
      const e = JSON.parse(valueText) as { dtype: string; shape: number[]; data_offsets: [number, number] };
      expect(e.dtype).toBe("F32");
      expect(e.shape).toEqual(tensors.get(key)!.shape);
      expect(e.data_offsets[0]).toBe(at);
      at = e.data_offsets[1];
    }
    expect(8 + n + at).toBe(bytes.length);
    expect(text).not.toContain("__metadata__");
  });

  it("writes float64 tensors as F32", () => {
    const t: Tensor = { dtype: "float64", shape: [2], data: new Float64Array([0.1, 1e300]) };
    const back = readSafetensors(writeSafetensors(new Map([["x", t]])), FILE).tensors.get("x")!;
    expect(Array.from(back.data as Float32Array)).toEqual([Math.fround(0.1), Infinity]);
  });

  it("writes and reads an empty file", () => {
    const bytes = writeSafetensors(new Map());
    expect(bytes.length).toBe(16);
    expect(readSafetensors(bytes, FILE).tensors.size).toBe(0);
  });

  it("reads from a Buffer that is a view into a larger pool", () => {
    const bytes = writeSafetensors(new Map([["x", f32([3], [1, 2, 3])]]));
    const pool = Buffer.alloc(bytes.length + 13);
    pool.set(bytes, 13);
    const view = pool.subarray(13);
    expect(Array.from(readSafetensors(view, FILE).tensors.get("x")!.data as Float32Array)).toEqual([1, 2, 3]);
  });

  it("writes files atomically and reads them back", () => {
    const path = join(tmp, "sub", "model.safetensors");
    writeSafetensorsFile(path, tensors, { seed: "1" });
    expect(readdirSync(join(tmp, "sub"))).toEqual(["model.safetensors"]);
    const { tensors: back, metadata } = readSafetensorsFile(path);
    expect(back.size).toBe(tensors.size);
    expect(metadata["seed"]).toBe("1");
    expect(new Uint8Array(readFileSync(path))).toEqual(writeSafetensors(tensors, { seed: "1" }));
  });
});

describe("dtype conversion", () => {
  it("F16 decodes exactly, including subnormals and infinities", () => {
    const bits = [0x3c00, 0xc000, 0x3800, 0x7bff, 0x0001, 0x7c00, 0xfc00, 0x8000, 0x3555];
    const bytes = craft({ h: { dtype: "F16", shape: [3, 3], data_offsets: [0, 18] } }, u16Bytes(bits));
    const t = readSafetensors(bytes, FILE).tensors.get("h")!;
    expect(t.dtype).toBe("float32");
    expect(t.shape).toEqual([3, 3]);
    expect(Array.from(t.data as Float32Array)).toEqual([
      1,
      -2,
      0.5,
      65504,
      2 ** -24,
      Infinity,
      -Infinity,
      -0,
      Math.fround(0.333251953125),
    ]);
  });

  it("BF16 decodes exactly", () => {
    const bits = [0x3f80, 0xc000, 0x4049, 0x0001, 0x7f80, 0xff80];
    const bytes = craft({ b: { dtype: "BF16", shape: [6], data_offsets: [0, 12] } }, u16Bytes(bits));
    const t = readSafetensors(bytes, FILE).tensors.get("b")!;
    expect(Array.from(t.data as Float32Array)).toEqual([1, -2, 3.140625, 2 ** -133, Infinity, -Infinity]);
  });

  it("F64 rounds to float32", () => {
    const bytes = craft({ d: { dtype: "F64", shape: [2, 2], data_offsets: [0, 32] } }, f64Bytes([0.1, -1 / 3, 1e40, 5e-324]));
    const t = readSafetensors(bytes, FILE).tensors.get("d")!;
    expect(Array.from(t.data as Float32Array)).toEqual([Math.fround(0.1), Math.fround(-1 / 3), Infinity, 0]);
  });

  it("reads tensors at any byte offset (misaligned data)", () => {
    // Header of 7 bytes of padding-free JSON is impossible, so pad the header to an odd length
    // and place tensors at odd offsets within the data as well.
    const header = {
      a: { dtype: "F32", shape: [2], data_offsets: [1, 9] },
      b: { dtype: "F64", shape: [1], data_offsets: [11, 19] },
      c: { dtype: "F16", shape: [1], data_offsets: [19, 21] },
    };
    let text = JSON.stringify(header);
    if ((8 + text.length) % 2 === 0) text += " ";
    const data = concat(new Uint8Array(1), f32Bytes([1.5, -2.25]), new Uint8Array(2), f64Bytes([3.75]), u16Bytes([0x3c00]));
    const bytes = craft(text, data);
    expect((8 + text.length + 1) % 4).not.toBe(0);
    const { tensors } = readSafetensors(bytes, FILE);
    expect(Array.from(tensors.get("a")!.data as Float32Array)).toEqual([1.5, -2.25]);
    expect(Array.from(tensors.get("b")!.data as Float32Array)).toEqual([3.75]);
    expect(Array.from(tensors.get("c")!.data as Float32Array)).toEqual([1]);
  });

  it("keeps header order, even for integer-like names JSON.parse would reorder", () => {
    const bytes = craft(
      '{"z":{"dtype":"F32","shape":[],"data_offsets":[0,4]},"1":{"dtype":"F32","shape":[],"data_offsets":[4,8]}}',
      f32Bytes([5, 6]),
    );
    expect([...readSafetensors(bytes, FILE).tensors.keys()]).toEqual(["z", "1"]);
  });

  it("reads metadata with any key, __proto__ included, as plain strings", () => {
    const bytes = craft('{"__metadata__":{"__proto__":"x","format":"pt"}}');
    const { metadata } = readSafetensors(bytes, FILE);
    expect(Object.keys(metadata)).toEqual(["__proto__", "format"]);
    expect(metadata["__proto__"]).toBe("x");
  });

  it("accepts JSON whitespace and escapes in names", () => {
    const text = ' {\n "a\\u002eb" : { "dtype" : "F32", "shape" : [ 1 ], "data_offsets" : [ 0, 4 ] } \t}  ';
    expect([...readCrafted(text, f32Bytes([9])).tensors.keys()]).toEqual(["a.b"]);
  });
});

describe("interoperability", () => {
  // Written by the reference implementation (Python safetensors 0.8.0, safetensors.numpy.save)
  // from {"layer.weight": f32 [2, 3], "half": f16 [4], "double": f64 [2], "scalar": f32 []},
  // metadata {"format": "np"}. It sorts by dtype size, so the F64 comes first.
  const PYTHON_FILE =
    "GAEAAAAAAAB7Il9fbWV0YWRhdGFfXyI6eyJmb3JtYXQiOiJucCJ9LCJkb3VibGUiOnsiZHR5cGUiOiJGNjQiLCJzaGFwZSI6WzJdLCJkYXRh" +
    "X29mZnNldHMiOlswLDE2XX0sImxheWVyLndlaWdodCI6eyJkdHlwZSI6IkYzMiIsInNoYXBlIjpbMiwzXSwiZGF0YV9vZmZzZXRzIjpbMTYs" +
    "NDBdfSwic2NhbGFyIjp7ImR0eXBlIjoiRjMyIiwic2hhcGUiOltdLCJkYXRhX29mZnNldHMiOls0MCw0NF19LCJoYWxmIjp7ImR0eXBlIjoi" +
    "RjE2Iiwic2hhcGUiOls0XSwiZGF0YV9vZmZzZXRzIjpbNDQsNTJdfX0gICAgmpmZmZmZuT/8qfHSTWJQvwAAwD8AAADAAACAPgAAQEDNzMw9" +
    "AAAAgAAAgEAAPADB/3sBAA==";

  it("reads a file the Python implementation wrote", () => {
    const { tensors, metadata } = readSafetensors(Buffer.from(PYTHON_FILE, "base64"), FILE);
    expect({ ...metadata }).toEqual({ format: "np" });
    const got = Object.fromEntries([...tensors].map(([k, t]) => [k, [t.shape, Array.from(t.data as Float32Array)]]));
    expect(got).toEqual({
      double: [[2], [Math.fround(0.1), Math.fround(-1e-3)]],
      "layer.weight": [[2, 3], [1.5, -2, 0.25, 3, Math.fround(0.1), -0]],
      scalar: [[], [4]],
      half: [[4], [1, -2.5, 65504, 2 ** -24]],
    });
  });

  it("writes byte for byte what the Python implementation writes for tensors in name order", () => {
    // Python orders by dtype size then name; with one dtype and sorted names ours matches it
    // (checked against safetensors 0.8.0's safetensors.numpy.save).
    const tensors = new Map([
      ["a", f32([2], [1, 2])],
      ["b", f32([], [3])],
    ]);
    const header =
      '{"__metadata__":{"format":"np"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},' +
      '"b":{"dtype":"F32","shape":[],"data_offsets":[8,12]}}';
    const padded = header + " ".repeat((8 - (header.length % 8)) % 8);
    expect(writeSafetensors(tensors, { format: "np" })).toEqual(craft(padded, f32Bytes([1, 2, 3])));
  });
});

describe("broken and hostile files", () => {
  const entry = (over: object = {}) => ({ dtype: "F32", shape: [2], data_offsets: [0, 8], ...over });

  it("file shorter than 8 bytes", () => {
    expect(only(() => readSafetensors(new Uint8Array(5), FILE))).toEqual({
      code: "AESM2001",
      path: "",
      message: "file too short: 5 bytes, a safetensors file starts with an 8-byte header length",
      file: FILE,
    });
  });

  it("header length beyond the file", () => {
    const bytes = craft("{}", new Uint8Array(90), 123456n);
    expect(bytes.length).toBe(100);
    expect(only(() => readSafetensors(bytes, FILE))).toEqual({
      code: "AESM2002",
      path: "",
      message: "header length 123456 exceeds file size 100",
      file: FILE,
    });
  });

  it("a header of 2^40 bytes claimed by a 16-byte file errors without allocating", () => {
    const bytes = craft("{}      ", new Uint8Array(0), 2n ** 40n);
    expect(bytes.length).toBe(16);
    const before = process.memoryUsage().arrayBuffers;
    const d = only(() => readSafetensors(bytes, FILE));
    expect(d.code).toBe("AESM2002");
    expect(d.message).toBe("header length 1099511627776 exceeds file size 16");
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(1 << 20);
  });

  it("a header length of 2^64 - 1 (not exactly a double) is compared exactly", () => {
    const bytes = craft("{}", new Uint8Array(0), 2n ** 64n - 1n);
    expect(only(() => readSafetensors(bytes, FILE)).message).toBe("header length 18446744073709551615 exceeds file size 10");
  });

  it("a header over the 100 MB limit, even when the file is that large", () => {
    const n = 100_000_008;
    const bytes = new Uint8Array(8 + n);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(n), true);
    expect(only(() => readSafetensors(bytes, FILE))).toMatchObject({
      code: "AESM2003",
      message: "header length 100000008 exceeds the limit of 100000000 bytes",
    });
  });

  it("header not UTF-8", () => {
    const bytes = craft("{}");
    bytes[9] = 0xff;
    expect(only(() => readSafetensors(bytes, FILE))).toMatchObject({ code: "AESM2004", message: "header is not valid UTF-8" });
  });

  it("header not JSON", () => {
    const d = only(() => readCrafted('{"a": '));
    expect(d.code).toBe("AESM2005");
    expect(d.message).toMatch(/^header is not valid JSON: /);
  });

  it("header JSON but not an object", () => {
    expect(only(() => readCrafted("[1, 2]"))).toMatchObject({
      code: "AESM2006",
      message: "header is not a JSON object (got an array)",
    });
    expect(only(() => readCrafted("null")).message).toBe("header is not a JSON object (got null)");
    expect(only(() => readCrafted('"x"')).message).toBe('header is not a JSON object (got the string "x")');
  });

  it("duplicate names, which JSON.parse would silently merge", () => {
    const text = `{"w":${JSON.stringify(entry())},"v":${JSON.stringify(entry())},"w":${JSON.stringify(entry())}}`;
    expect(only(() => readCrafted(text, new Uint8Array(8)))).toEqual({
      code: "AESM2007",
      path: "w",
      message: "duplicate tensor name in header",
      file: FILE,
    });
  });

  it("duplicate names spelled differently (escapes)", () => {
    const text = `{"w":${JSON.stringify(entry())},"\\u0077":${JSON.stringify(entry())}}`;
    expect(only(() => readCrafted(text, new Uint8Array(8)))).toMatchObject({ code: "AESM2007", path: "w" });
  });

  it("duplicate names hidden behind strings that contain braces and quotes", () => {
    const text = `{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4],"x":"}\\",{\\"a\\":"},"a":${JSON.stringify(entry())}}`;
    expect(only(() => readCrafted(text, new Uint8Array(8)))).toMatchObject({ code: "AESM2007", path: "a" });
  });

  it("duplicate __metadata__", () => {
    expect(only(() => readCrafted('{"__metadata__":{},"__metadata__":{}}'))).toMatchObject({
      code: "AESM2007",
      path: "__metadata__",
      message: 'duplicate "__metadata__" in header',
    });
  });

  it("__metadata__ not an object of strings", () => {
    expect(only(() => readCrafted('{"__metadata__":[1]}'))).toMatchObject({
      code: "AESM2008",
      message: '"__metadata__" must be an object of strings, got an array',
    });
    expect(only(() => readCrafted('{"__metadata__":{"epoch":3}}'))).toMatchObject({
      code: "AESM2008",
      message: '"__metadata__" value for "epoch" must be a string, got number 3',
    });
  });

  it("entry not an object", () => {
    expect(only(() => readCrafted({ w: [1, 2] }))).toEqual({
      code: "AESM2009",
      path: "w",
      message: "entry must be an object with dtype, shape and data_offsets, got an array",
      file: FILE,
    });
  });

  it("missing fields", () => {
    expect(only(() => readCrafted({ w: { dtype: "F32" } }))).toMatchObject({
      code: "AESM2009",
      path: "w",
      message: "entry lacks shape, data_offsets",
    });
  });

  it("unsupported dtypes", () => {
    for (const dtype of ["I64", "I32", "U8", "BOOL", "F8_E4M3", "constructor"])
      expect(only(() => readCrafted({ w: entry({ dtype }) }, new Uint8Array(8)))).toEqual({
        code: "AESM2010",
        path: "w",
        message: `unsupported dtype ${dtype} (expected F32, F16, BF16 or F64)`,
        file: FILE,
      });
    expect(only(() => readCrafted({ w: entry({ dtype: 4 }) }, new Uint8Array(8))).message).toBe(
      "dtype must be a string, got number 4",
    );
  });

  it("shape not an array of non-negative safe integers", () => {
    for (const shape of [2, [2, -1], [1.5], ["2"], [2 ** 53], null])
      expect(only(() => readCrafted({ w: entry({ shape }) }, new Uint8Array(8)))).toEqual({
        code: "AESM2011",
        path: "w",
        message: `shape must be an array of non-negative integers, got ${JSON.stringify(shape)}`,
        file: FILE,
      });
  });

  it("offsets not integers, wrong arity, or begin after end", () => {
    for (const data_offsets of [[0], [0, 8, 9], [0, 8.5], [-1, 8], ["0", "8"], { begin: 0 }])
      expect(only(() => readCrafted({ w: entry({ data_offsets }) }, new Uint8Array(8)))).toMatchObject({
        code: "AESM2012",
        path: "w",
        message: `data_offsets must be [begin, end] with non-negative integers, got ${JSON.stringify(data_offsets)}`,
      });
    expect(only(() => readCrafted({ w: entry({ data_offsets: [8, 0] }) }, new Uint8Array(8)))).toMatchObject({
      code: "AESM2012",
      path: "w",
      message: "data_offsets [8, 0]: begin is after end",
    });
  });

  it("truncated: data beyond the end of the file", () => {
    // Header text is 61 bytes here; data would end at 8 + 61 + 3931 = 4000, the file is 3000 bytes.
    const header = { w: entry({ shape: [983, 1], data_offsets: [2, 3931] }) };
    const text = JSON.stringify(header);
    const bytes = craft(header, new Uint8Array(3000 - 8 - text.length));
    expect(8 + text.length + 3931).toBe(4000);
    expect(only(() => readSafetensors(bytes, FILE))).toEqual({
      code: "AESM2013",
      path: "w",
      message: "truncated: data ends at byte 4000, file has 3000",
      file: FILE,
    });
  });

  it("byte length differs from numel × dtype size", () => {
    const short = { w: entry({ shape: [16, 30], data_offsets: [0, 1900] }) };
    expect(only(() => readCrafted(short, new Uint8Array(1920)))).toEqual({
      code: "AESM2014",
      path: "w",
      message: "F32 [16, 30] needs 1920 bytes, data_offsets [0, 1900] hold 1900",
      file: FILE,
    });
    const half = { w: entry({ dtype: "F16", shape: [3], data_offsets: [0, 4] }) };
    expect(only(() => readCrafted(half, new Uint8Array(8))).message).toBe(
      "F16 [3] needs 6 bytes, data_offsets [0, 4] hold 4",
    );
  });

  it("a shape whose size overflows a double cannot pass for a small tensor", () => {
    const shape = Array(40).fill(2 ** 52);
    expect(only(() => readCrafted({ w: entry({ shape }) }, new Uint8Array(8))).message).toBe(
      `F32 ${"[" + shape.join(", ") + "]"} needs more than 2^53 bytes, data_offsets [0, 8] hold 8`,
    );
    // ... while a zero dimension after huge ones is simply empty.
    const empty = readCrafted({ w: entry({ shape: [2 ** 52, 2 ** 52, 0], data_offsets: [8, 8] }) }, new Uint8Array(8));
    expect(empty.tensors.get("w")!.data.length).toBe(0);
  });

  it("overlapping data ranges", () => {
    const header = {
      a: entry({ shape: [4], data_offsets: [0, 16] }),
      b: entry({ shape: [4], data_offsets: [8, 24] }),
      e: entry({ shape: [0], data_offsets: [4, 4] }), // empty: overlaps nothing
      c: entry({ shape: [2], data_offsets: [24, 32] }),
    };
    expect(only(() => readCrafted(header, new Uint8Array(32)))).toEqual({
      code: "AESM2015",
      path: "b",
      message: 'data [8, 24) overlaps tensor "a" [0, 16)',
      file: FILE,
    });
  });

  it("a range nested inside an earlier, longer one overlaps it", () => {
    const header = {
      a: entry({ shape: [8], data_offsets: [0, 32] }),
      b: entry({ shape: [1], data_offsets: [8, 12] }),
      c: entry({ shape: [1], data_offsets: [16, 20] }),
    };
    expect(diagnosticsOf(() => readCrafted(header, new Uint8Array(32))).map((d) => d.path)).toEqual(["b", "c"]);
  });

  it("reports every broken entry at once, in header order", () => {
    const header = {
      a: entry({ dtype: "I64" }),
      b: entry(),
      c: entry({ shape: [3] }),
      d: { shape: [1] },
    };
    expect(diagnosticsOf(() => readCrafted(header, new Uint8Array(8))).map((d) => [d.code, d.path])).toEqual([
      ["AESM2010", "a"],
      ["AESM2014", "c"],
      ["AESM2009", "d"],
    ]);
  });

  it("__proto__ and other Object.prototype names are ordinary tensor names", () => {
    const header = `{"__proto__":${JSON.stringify(entry())},"toString":${JSON.stringify(entry({ data_offsets: [8, 16] }))}}`;
    const { tensors } = readCrafted(header, f32Bytes([1, 2, 3, 4]));
    expect([...tensors.keys()]).toEqual(["__proto__", "toString"]);
    expect(Array.from(tensors.get("__proto__")!.data as Float32Array)).toEqual([1, 2]);
    expect(Array.from(tensors.get("toString")!.data as Float32Array)).toEqual([3, 4]);
    expect(({} as Record<string, unknown>)["polluted"]).toBeUndefined();
  });

  it("deeply nested JSON in an entry does not overflow the stack", () => {
    const deep = "[".repeat(5000) + "]".repeat(5000);
    const text = `{"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8],"x":${deep}}}`;
    expect(readCrafted(text, new Uint8Array(8)).tensors.get("w")!.shape).toEqual([2]);
  });

  it("gaps between tensors and trailing bytes are tolerated", () => {
    const header = { a: entry({ shape: [1], data_offsets: [4, 8] }) };
    const { tensors } = readCrafted(header, concat(new Uint8Array(4), f32Bytes([5]), new Uint8Array(4)));
    expect(Array.from(tensors.get("a")!.data as Float32Array)).toEqual([5]);
  });

  it("missing file", () => {
    const path = join(tmp, "nope.safetensors");
    expect(existsSync(path)).toBe(false);
    expect(only(() => readSafetensorsFile(path))).toEqual({ code: "AESM4001", path: "", message: "no such file", file: path });
  });

  it("a file is read in slices into one buffer (past readFileSync's 2 GiB)", () => {
    const path = join(tmp, "slices.safetensors");
    writeFileSync(path, Uint8Array.from({ length: 1003 }, (_, i) => (i * 31) % 256));
    for (const slice of [1, 7, 1000, 1003, 1 << 20]) expect(Array.from(readWholeFile(path, slice)), `slice ${slice}`).toEqual(Array.from(readFileSync(path)));
  });

  it("a file larger than one buffer holds is refused by name and size, before reading", () => {
    const path = join(tmp, "huge.safetensors");
    writeFileSync(path, "");
    truncateSync(path, bufferConstants.MAX_LENGTH + 1); // sparse: no disk used
    expect(only(() => readSafetensorsFile(path))).toEqual({
      code: "AESM4001",
      path: "",
      message: `cannot read: the file has ${bufferConstants.MAX_LENGTH + 1} bytes, more than the ${bufferConstants.MAX_LENGTH} one buffer holds (split the checkpoint)`,
      file: path,
    });
    rmSync(path);
  });

  it("a folder where a file should be", () => {
    expect(only(() => readSafetensorsFile(tmp))).toMatchObject({ code: "AESM4001", message: "cannot read: EISDIR" });
  });

  it("errors are AesmErrors whose text names the file and tensor", () => {
    try {
      readCrafted({ w: entry({ dtype: "I64" }) }, new Uint8Array(8));
      expect.unreachable();
    } catch (e) {
      expect(e).toBeInstanceOf(AesmError);
      expect((e as Error).message).toBe("w.safetensors: w: unsupported dtype I64 (expected F32, F16, BF16 or F64)");
    }
  });
});
