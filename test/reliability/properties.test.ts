// Property tests (fast-check) over hostile bytes and values: whatever the input, the readers
// either succeed or throw AesmError (a diagnostic the CLI prints), never another exception.

import fc from "fast-check";
import { describe, expect, it } from "vitest";
import { emitModel, encodeModel, readModel } from "../../src/backends/onnx/index.ts";
import { compileGraph } from "../../src/compile.ts";
import { AesmError } from "../../src/core/diagnostics.ts";
import { parseModel } from "../../src/dsl/parse.ts";
import { randomModel } from "../../src/fuzz/model.ts";
import { initWeights, readSafetensors, writeSafetensors } from "../../src/weights/index.ts";

/** Run `fn`; anything thrown must be an AesmError. */
function onlyDiagnostics(fn: () => unknown): void {
  try {
    fn();
  } catch (e) {
    if (!(e instanceof AesmError)) throw new Error(`threw ${(e as Error)?.name}: ${(e as Error)?.message}`);
  }
}

/** A JSON-ish value with the keys a model uses, so mutations reach deep into the validator. */
const KEYS = ["kind", "dim", "vocab", "units", "experts", "layers", "values", "select", "specific", "shared", "k", "gate", "expert", "tower", "__proto__", "constructor", "eps", "mask", "act"];
const value = fc.letrec((tie) => ({
  any: fc.oneof(
    { depthSize: "small" },
    fc.constantFrom(null, true, false, 0, -1, 1, 2, 1e400, -0, 2 ** 31, 2 ** 53, Number.NaN, 0.5, "", "mlp", "aesm", "fixed", "topK", "all", "gate", "dense", "categorical", "__proto__"),
    fc.integer({ min: -5, max: 40 }),
    fc.array(tie("any"), { maxLength: 4 }),
    fc.dictionary(fc.constantFrom(...KEYS), tie("any"), { maxKeys: 4 }),
  ),
})).any;

/** `model` with the value at a random path replaced (or a key added). */
function mutate(model: unknown, path: number[], v: unknown): unknown {
  const copy = structuredClone(model) as Record<string, unknown>;
  let node: Record<string, unknown> = copy;
  for (const step of path) {
    const keys = Object.keys(node);
    if (keys.length === 0) break;
    const k = keys[step % keys.length]!;
    const child = node[k];
    if (typeof child !== "object" || child === null) {
      node[k] = v;
      return copy;
    }
    node = child as Record<string, unknown>;
  }
  Object.defineProperty(node, KEYS[path.length % KEYS.length]!, { value: v, enumerable: true, writable: true, configurable: true });
  return copy;
}

describe("parseModel", () => {
  it("any value: a spec or diagnostics", () => {
    fc.assert(fc.property(value, (v) => onlyDiagnostics(() => parseModel(v))), { numRuns: 500 });
  });

  it("a valid model with one part replaced: a spec or diagnostics", () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 1000 }), fc.array(fc.nat(20), { maxLength: 8 }), value, (seed, path, v) =>
        onlyDiagnostics(() => parseModel(mutate(randomModel(seed), path, v))),
      ),
      { numRuns: 1000 },
    );
  }, 60_000);
});

describe("readSafetensors", () => {
  const spec = parseModel(randomModel(3));
  const bytes = writeSafetensors(initWeights(spec, 1));

  it("random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (b) => onlyDiagnostics(() => readSafetensors(b, "x"))), { numRuns: 500 });
  });

  it("a valid file with bytes overwritten, or truncated", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 6 }), fc.nat(), (edits, cut) => {
        const b = bytes.slice(0, bytes.length - (cut % 16 === 0 ? cut % bytes.length : 0));
        // Most edits land in the header (where the claims are): its first 8 + ~2 KB bytes.
        for (const [at, v] of edits) b[at % Math.min(b.length, 4096)] = v;
        onlyDiagnostics(() => readSafetensors(b, "x"));
      }),
      { numRuns: 1000 },
    );
  }, 60_000);
});

describe("ONNX reader", () => {
  const spec = parseModel(randomModel(5));
  // A copy: protobufjs hands back a Buffer, whose slice() would share memory with the edits below.
  const bytes = Uint8Array.from(encodeModel(emitModel(compileGraph(spec, initWeights(spec, 2), { optLevel: 2 }), { opset: 17 })));

  it("random bytes", () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 512 }), (b) => onlyDiagnostics(() => readModel(b, "x.onnx"))), { numRuns: 500 });
  });

  it("a valid model with bytes overwritten, or truncated", () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 4 }), fc.nat(), (edits, cut) => {
        const b = bytes.slice(0, cut % 3 === 0 ? bytes.length - (cut % bytes.length) : bytes.length);
        for (const [at, v] of edits) b[at % b.length] = v;
        onlyDiagnostics(() => readModel(b, "x.onnx"));
      }),
      { numRuns: 200 },
    );
  }, 60_000);

  it("the unmodified model reads", () => {
    expect(readModel(bytes, "x.onnx").nodes.length).toBeGreaterThan(0);
  });
});
