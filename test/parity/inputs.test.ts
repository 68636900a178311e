// Parity inputs: generated coverage (scenario combinations, edge and out-of-range ids, extreme
// dense values), and supplied/saved files (.jsonl, .npz) with errors naming file, row and field.

import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { parseJsonlInputs, readInputsFile, writeInputsFile } from "../../src/parity/input-files.ts";
import { EXTREME_DENSE, generateInputs, int64ToNumbers, outOfRangeIds, scenarioCoverage } from "../../src/parity/inputs.ts";
import { encodeNpy, parseNpy, readZip, writeZip } from "../../src/parity/npy.ts";
import { smallSpec, writeModelFiles } from "./models.ts";

const spec = smallSpec();

function errorOf(f: () => unknown): AesmError {
  try {
    f();
  } catch (e) {
    if (e instanceof AesmError) return e;
    throw e;
  }
  throw new Error("expected an AesmError");
}

describe("int64ToNumbers", () => {
  it("is Number() of each value, small or not, also on a view that does not start its buffer", () => {
    const values = [0n, 1n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n + 5n, -1n, -(2n ** 31n), -(2n ** 63n), 2n ** 63n - 1n, 2n ** 53n + 1n];
    const all = BigInt64Array.from([7n, ...values]);
    const view = all.subarray(1);
    expect(Array.from(int64ToNumbers(view))).toEqual(values.map((v) => Number(v)));
  });
});

describe("generateInputs", () => {
  const b = generateInputs(spec, { rows: 4000, seed: 3 });

  it("walks every combination of scenario values first", () => {
    const combos = new Set<string>();
    for (let r = 0; r < 6; r++) combos.add(`${b.scenarios.page![r]}/${b.scenarios.slot![r]}`);
    expect(combos.size).toBe(6);
    const cov = scenarioCoverage(spec, b);
    for (const l of spec.scenarios) for (const v of l.values) expect(cov[l.name]![v]).toBeGreaterThan(0);
  });

  it("covers edge ids, out-of-range ids and extreme dense values, and stays in range for scenarios", () => {
    const ids = Array.from(b.features.item as BigInt64Array);
    expect(ids).toContain(0n);
    expect(ids).toContain(19n);
    const bad = new Set(outOfRangeIds(20));
    expect(ids.filter((i) => bad.has(i)).length).toBeGreaterThan(20);
    expect(ids.every((i) => (i >= 0n && i < 20n) || bad.has(i))).toBe(true);
    const price = Array.from(b.features.price as Float32Array);
    expect(price).toContain(1000);
    expect(price).toContain(-1000);
    expect(price.some((x) => Object.is(x, -0))).toBe(true);
    expect(new Set(EXTREME_DENSE).has(100)).toBe(true);
    expect(Array.from(b.scenarios.slot!).every((s) => s >= 0n && s < 3n)).toBe(true);
  });

  it("is a function of the seed", () => {
    const again = generateInputs(spec, { rows: 4000, seed: 3 });
    expect(again).toEqual(b);
    expect(generateInputs(spec, { rows: 4000, seed: 4 }).features.price).not.toEqual(b.features.price);
  });

  it("cycles each level's values when there are more combinations than rows", () => {
    const few = generateInputs(spec, { rows: 3, seed: 0 });
    expect(Array.from(few.scenarios.slot!)).toEqual([0n, 1n, 2n]);
  });
});

describe("inputs files", () => {
  const { dir } = writeModelFiles(spec, { compile: false });
  const batch = generateInputs(spec, { rows: 300, seed: 5 });

  it("round-trips .jsonl exactly (float32 values, −0, int64 ids beyond 2^53)", () => {
    (batch.features.item as BigInt64Array)[7] = -(1n << 63n);
    const path = join(dir, "rows.jsonl");
    writeInputsFile(path, spec, batch);
    const text = readFileSync(path, "utf8");
    expect(text.split("\n")[7]).toContain('"item":"-9223372036854775808"');
    expect(readInputsFile(path, spec)).toEqual(batch);
  });

  it("round-trips .npz exactly", () => {
    const path = join(dir, "rows.npz");
    writeInputsFile(path, spec, batch);
    expect(readInputsFile(path, spec)).toEqual(batch);
  });

  it("reads what numpy's savez_compressed writes: int32 ids, Fortran-order float64, string scenario values", () => {
    const b = readInputsFile(join(import.meta.dirname, "fixtures", "small-numpy.npz"), spec);
    expect(b.rows).toBe(4);
    expect(Array.from(b.features.item as BigInt64Array)).toEqual([0n, 19n, -1n, 7n]);
    expect(Array.from(b.features.price as Float32Array)).toEqual([0.5, -1.25, 3, 1000, 0, -0, 2.5, 2.5, 2.5, -8, Math.fround(1e-20), 0.125]);
    expect(Array.from(b.scenarios.page!)).toEqual([0n, 1n, 0n, 1n]);
    expect(Array.from(b.scenarios.slot!)).toEqual([0n, 1n, 2n, 1n]);
  });

  it("accepts scenario values by name or index, and a number for a 1-wide dense feature", () => {
    const b = parseJsonlInputs('{"item": 3, "price": [1, 2, 3], "page": "search", "slot": 2}\n\n', spec, "rows.jsonl");
    expect(b.rows).toBe(1);
    expect(Array.from(b.scenarios.page!)).toEqual([1n]);
    expect(Array.from(b.scenarios.slot!)).toEqual([2n]);
  });

  it("names the file, line, row and field of every problem", () => {
    const text = [
      '{"item": 3, "price": [1, 2, 3], "page": "home", "slot": "top"}',
      '{"item": 1.5, "price": [1, 2], "page": "hme", "slot": 7, "label": 1}',
      "{not json",
      '{"price": [1, 2, 3], "page": "home", "slot": "mid"}',
    ].join("\n");
    const e = errorOf(() => parseJsonlInputs(text, spec, "rows.jsonl"));
    // syntax errors stop before field checks; the parser's own wording differs across Node versions
    expect(e.message).toMatch(/^rows\.jsonl:3:1: row 2: invalid JSON: Expected property name or '\}' in JSON at position 1/);
    expect(e.diagnostics).toHaveLength(1);
    const e2 = errorOf(() => parseJsonlInputs(text.split("\n").filter((_, i) => i !== 2).join("\n"), spec, "rows.jsonl"));
    expect(e2.message).toBe(
      [
        'rows.jsonl:2:1: label: row 1: "label" is not an input of the model (inputs: item, price, page, slot)',
        'rows.jsonl:2:1: item: row 1: "item" must be an integer id (a number, or a decimal string beyond 2^53), got 1.5',
        'rows.jsonl:2:1: price: row 1: "price" must be an array of 3 number(s), got 2 value(s)',
        'rows.jsonl:2:1: page: row 1: "page" must be one of "home", "search" or an index 0..1, got "hme"',
        'rows.jsonl:2:1: slot: row 1: "slot" must be one of "top", "mid", "bottom" or an index 0..2, got 7',
        'rows.jsonl:3:1: item: row 2: missing "item"',
      ].join("\n"),
    );
    expect(e2.diagnostics.map((d) => d.code)).toEqual(["AESM4105", "AESM4104", "AESM4104", "AESM4106", "AESM4106", "AESM4103"]);
    expect(e2.exitCode).toBe(2);
  });

  it("rejects an empty file, an unknown extension and a missing file", () => {
    expect(errorOf(() => parseJsonlInputs("\n", spec, "rows.jsonl")).message).toBe("rows.jsonl: no rows (one JSON object per line expected)");
    expect(errorOf(() => readInputsFile(join(dir, "rows.csv"), spec)).message).toBe(`${join(dir, "rows.csv")}: unsupported inputs file extension ".csv" (use .jsonl or .npz)`);
    expect(errorOf(() => readInputsFile(join(dir, "nope.jsonl"), spec)).message).toBe(`${join(dir, "nope.jsonl")}: no such file`);
  });

  it("names the array of a bad .npz: wrong dtype or shape, row counts, scenario values", () => {
    const path = join(dir, "bad.npz");
    const chunks = writeZip([
      { name: "item.npy", data: encodeNpy(new Float32Array([1, 2]), [2]) },
      { name: "price.npy", data: encodeNpy(new Float32Array(6), [2, 3]) },
      { name: "page.npy", data: encodeNpy(new BigInt64Array([0n, 5n]), [2]) },
      { name: "slot.npy", data: encodeNpy(new BigInt64Array([0n, 1n, 2n]), [3]) },
    ]);
    writeFileSync(path, Buffer.concat(chunks));
    expect(errorOf(() => readInputsFile(path, spec)).message).toBe(`${path}: slot: array "slot" has 3 rows, "item" has 2`);
    writeFileSync(
      path,
      Buffer.concat(
        writeZip([
          { name: "item.npy", data: encodeNpy(new Float32Array([1, 2]), [2]) },
          { name: "price.npy", data: encodeNpy(new Float32Array(6), [2, 3]) },
          { name: "page.npy", data: encodeNpy(new BigInt64Array([0n, 5n]), [2]) },
          { name: "slot.npy", data: encodeNpy(new BigInt64Array([0n, 1n]), [2]) },
        ]),
      ),
    );
    expect(errorOf(() => readInputsFile(path, spec)).message).toBe(
      [
        `${path}: item: array "item" must be integer ids of shape (2,), got '<f4' of shape (2)`,
        `${path}: page: row 1: "page" must be one of "home", "search" or an index 0..1, got 5`,
      ].join("\n"),
    );
    writeFileSync(path, "not a zip");
    expect(errorOf(() => readInputsFile(path, spec)).message).toBe(`${path}: not a readable .npz archive: not a zip archive (no end of central directory)`);
  });
});

describe("npy", () => {
  it("round-trips int64 and float32 arrays through the zip container", () => {
    const entries = readZip(Buffer.concat(writeZip([{ name: "a.npy", data: encodeNpy(new BigInt64Array([1n, -2n]), [2]) }])));
    const a = parseNpy(entries.get("a.npy")!);
    expect(a).toEqual({ kind: "int", dtype: "<i8", shape: [2], data: new BigInt64Array([1n, -2n]) });
    const f = parseNpy(encodeNpy(new Float32Array([0.5, -1, 2, 3]), [2, 2]));
    expect(f).toEqual({ kind: "float", dtype: "<f4", shape: [2, 2], data: new Float64Array([0.5, -1, 2, 3]) });
  });
});
