// Every supported opset loads and runs in onnxruntime (CPU), and gives the numbers the
// interpreter gives for the same IR: this checks the emitter's per-opset forms end to end.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import type { InputBatch } from "../../src/core/batch.ts";
import { tensor } from "../../src/core/tensor.ts";
import { writeOnnx } from "../../src/backends/onnx/index.ts";
import { runGraph } from "../../src/backends/interp/index.ts";
import { openSession } from "../../src/runtime/index.ts";
import { allOpsGraph } from "../onnx/graphs.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-opsets-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

// float32 tolerance: ORT accumulates in float32, the interpreter in float64 rounded once.
const RTOL = 1e-5;
const ATOL = 1e-6;

const ROWS = 4;
const x = new Float32Array([0.1, 0.2, -0.3, 0.4, 1, -1, 0.5, 2, -2, 0.75, 0.3, -0.1, 0, 0, 0, 0]);
const ids = new BigInt64Array([1n, 4n, 0n, 2n]);
const page = new BigInt64Array([1n, 2n, 0n, 2n]);
const batch: InputBatch = { rows: ROWS, features: { x, ids }, scenarios: { page } };

function expectClose(name: string, got: Float32Array, want: ArrayLike<number>): void {
  expect(got.length, name).toBe(want.length);
  let worst = -1;
  let worstErr = 0;
  for (let i = 0; i < got.length; i++) {
    const err = Math.abs(got[i]! - want[i]!);
    if (err > ATOL + RTOL * Math.abs(want[i]!) && err >= worstErr) [worst, worstErr] = [i, err];
  }
  expect(worst, `${name}: index ${worst}: ORT ${got[worst]} vs interpreter ${want[worst]} (|Δ| ${worstErr})`).toBe(-1);
}

/** The every-op graph with each node result also a graph output, so ORT and the interpreter are compared node by node. */
function everyValueOut() {
  const g = allOpsGraph();
  for (const n of g.nodes) for (const o of n.outputs) if (!g.isGraphOutput(o)) g.setOutput(o.name, o);
  return g;
}

describe("opsets 13–21 in onnxruntime", () => {
  const g = everyValueOut();
  const want = runGraph(g, {
    x: tensor("float32", [ROWS, 4], x),
    ids: tensor("int64", [ROWS], ids),
    page: tensor("int64", [ROWS], page),
  });

  it.each([13, 14, 15, 16, 17, 18, 19, 20, 21])("opset %i loads, runs and matches the interpreter", async (opset) => {
    const path = join(tmp, `all_ops_${opset}.onnx`);
    writeOnnx(path, g, { opset });
    const s = await openSession(path);
    try {
      const got = await s.run(batch);
      expect(Object.keys(got)).toEqual(g.outputs.map((o) => o.name));
      for (const name of Object.keys(got)) {
        const w = want[name]!.data;
        expectClose(name, got[name]!, w instanceof BigInt64Array ? Array.from(w, Number) : (w as ArrayLike<number>));
      }
    } finally {
      await s.close();
    }
  });
});
