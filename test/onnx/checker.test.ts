// Emitted models pass the ONNX reference checker (full check, strict shape inference with
// type checks) at every opset python3-onnx 1.12 knows (≤ 17); higher opsets are run in ORT
// by test/runtime/opsets.test.ts.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { emitModel, encodeModel, writeOnnx } from "../../src/backends/onnx/index.ts";
import { checkOnnxFile } from "../helpers/onnx-checker.ts";
import { allOpsGraph, smallGraph } from "./graphs.ts";

const tmp = mkdtempSync(join(tmpdir(), "aesm-onnx-check-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("ONNX checker", () => {
  it.each([13, 14, 15, 16, 17])("accepts the every-op graph at opset %i", (opset) => {
    const path = join(tmp, `all_ops_${opset}.onnx`);
    writeOnnx(path, allOpsGraph(), { opset });
    checkOnnxFile(path);
  });

  it("accepts output aliases of inputs, constants and repeated values", () => {
    const path = join(tmp, "small.onnx");
    writeOnnx(path, smallGraph(), { opset: 17 });
    checkOnnxFile(path);
  });

  it("rejects a model whose value_info contradicts ONNX shape inference", () => {
    const m = emitModel(smallGraph(), { opset: 17 });
    m.graph!.valueInfo![0]!.type!.tensorType!.shape!.dim![1] = { dimValue: 7 }; // xw is [batch, 2]
    const path = join(tmp, "bad.onnx");
    writeFileSync(path, encodeModel(m));
    expect(() => checkOnnxFile(path)).toThrow(/ONNX checker rejected .*bad\.onnx/);
  });

  it("fails, naming the package to install, when python cannot import onnx", () => {
    const path = join(tmp, "small2.onnx");
    writeOnnx(path, smallGraph(), { opset: 17 });
    expect(() => checkOnnxFile(path, join(tmp, "no-such-python"))).toThrow(/install python3-onnx \(apt-get install python3-onnx\)/);
  });

  it("says which opsets it can check rather than failing obscurely", () => {
    const path = join(tmp, "o21.onnx");
    writeOnnx(path, smallGraph(), { opset: 21 });
    expect(() => checkOnnxFile(path)).toThrow(/checks opsets up to 17; this model uses opset 21/);
  });
});
