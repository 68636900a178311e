// The ONNX emitter: opset/IR versions, per-opset operator forms, names and initialisers,
// read from the ModelProto it builds.

import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import onnxProto from "onnx-proto";
import { afterAll, describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { f32 } from "../../src/core/tensor.ts";
import { emitModel as emitProto, encodeModel, writeOnnx, type EmitOptions } from "../../src/backends/onnx/index.ts";
import { Graph } from "../../src/ir/index.ts";
import { allOpsGraph, smallGraph } from "./graphs.ts";
import { decoded, num, type StrictModel, type StrictNode } from "./proto.ts";

const { onnx } = onnxProto;
const T = onnx.AttributeProto.AttributeType;

const tmp = mkdtempSync(join(tmpdir(), "aesm-onnx-emit-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** Emit and decode, so tests see the model as written. */
const emitModel = (g: Graph, options?: EmitOptions): StrictModel => decoded(emitProto(g, options));

function nodesOf(m: StrictModel, op: string) {
  return m.graph!.node.filter((n) => n.opType === op);
}

function initializer(m: StrictModel, name: string) {
  const t = m.graph!.initializer.find((i) => i.name === name);
  expect(t, `initializer ${name}`).toBeDefined();
  return t!;
}

function int64Values(m: StrictModel, name: string): number[] {
  const t = initializer(m, name);
  expect(t.dataType).toBe(onnx.TensorProto.DataType.INT64);
  const raw = t.rawData;
  return Array.from(new BigInt64Array(raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength)), Number);
}

function float32Values(m: StrictModel, name: string): number[] {
  const t = initializer(m, name);
  expect(t.dataType).toBe(onnx.TensorProto.DataType.FLOAT);
  return Array.from(new Float32Array(Uint8Array.from(t.rawData).buffer));
}

function attr(n: StrictNode, name: string) {
  return n.attribute?.find((a) => a.name === name);
}

/** A graph with one node of `op` over x f32[batch,3,1]. */
function oneOp(op: "ReduceMax" | "ReduceSum" | "Squeeze" | "Gelu", attrs: Record<string, number | number[]>): Graph {
  const g = new Graph("one");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3, 1] });
  g.setOutput("y", g.op(op, [x], attrs, { names: ["y"] }));
  return g;
}

describe("opset and IR version", () => {
  it.each([12, 22, 17.5])("rejects opset %s with AESM3002", (opset) => {
    let err: unknown;
    try {
      emitModel(smallGraph(), { opset });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(AesmError);
    expect((err as AesmError).diagnostics).toEqual([
      { code: "AESM3002", path: "opset", message: `unsupported opset ${opset} (supported: 13–21)` },
    ]);
  });

  it("pairs each opset with its IR version and imports only the default domain", () => {
    const table: Record<number, number> = { 13: 7, 14: 7, 15: 8, 16: 8, 17: 8, 18: 8, 19: 9, 20: 9, 21: 10 };
    for (const [opset, ir] of Object.entries(table)) {
      const m = emitModel(smallGraph(), { opset: Number(opset) });
      expect(num(m.irVersion)).toBe(ir);
      expect(m.opsetImport.map((o) => [o.domain, num(o.version)])).toEqual([["", Number(opset)]]);
    }
  });

  it("defaults to opset 17 / IR 8 and names the producer", () => {
    const m = emitModel(smallGraph(), { producerVersion: "1.2.3", docString: "a test" });
    expect(num(m.opsetImport[0]!.version)).toBe(17);
    expect(num(m.irVersion)).toBe(8);
    expect(m.producerName).toBe("aesm");
    expect(m.producerVersion).toBe("1.2.3");
    expect(m.docString).toBe("a test");
    expect(m.metadataProps.map((p) => [p.key, p.value])).toEqual([["aesm.version", "test"]]);
  });
});

describe("per-opset operator forms", () => {
  it("ReduceSum takes axes as an int64 input from opset 13", () => {
    for (const opset of [13, 17, 18, 21]) {
      const m = emitModel(oneOp("ReduceSum", { axes: [1], keepdims: 0 }), { opset });
      const [n] = nodesOf(m, "ReduceSum");
      expect(n!.input.length).toBe(2);
      expect(int64Values(m, n!.input[1]!)).toEqual([1]);
      expect(attr(n!, "axes")).toBeUndefined();
      expect(attr(n!, "keepdims")).toMatchObject({ type: T.INT });
      expect(num(attr(n!, "keepdims")!.i)).toBe(0);
    }
  });

  it("ReduceMax takes axes as an attribute below 18 and as an input from 18", () => {
    const at17 = nodesOf(emitModel(oneOp("ReduceMax", { axes: [1, -1] }), { opset: 17 }), "ReduceMax")[0]!;
    expect(at17.input.length).toBe(1);
    expect(attr(at17, "axes")!.type).toBe(T.INTS);
    expect(attr(at17, "axes")!.ints!.map(num)).toEqual([1, -1]);
    const m18 = emitModel(oneOp("ReduceMax", { axes: [1, -1] }), { opset: 18 });
    const at18 = nodesOf(m18, "ReduceMax")[0]!;
    expect(attr(at18, "axes")).toBeUndefined();
    expect(int64Values(m18, at18.input[1]!)).toEqual([1, -1]);
  });

  it("reducing over no axes stays the identity in both forms", () => {
    const m13 = emitModel(oneOp("ReduceMax", { axes: [] }), { opset: 13 });
    expect(m13.graph!.node.map((n) => n.opType)).toEqual(["Identity"]);
    const m18 = emitModel(oneOp("ReduceMax", { axes: [] }), { opset: 18 });
    const n = nodesOf(m18, "ReduceMax")[0]!;
    expect(num(attr(n, "noop_with_empty_axes")!.i)).toBe(1);
    expect(int64Values(m18, n.input[1]!)).toEqual([]);
  });

  it("Squeeze/Unsqueeze axes, Reshape shape, Slice bounds and TopK k are int64 initialisers", () => {
    const m = emitModel(allOpsGraph(), { opset: 13 });
    const sq = nodesOf(m, "Squeeze")[0]!;
    expect(int64Values(m, sq.input[1]!)).toEqual([1]);
    const un = nodesOf(m, "Unsqueeze")[0]!;
    expect(int64Values(m, un.input[1]!)).toEqual([1]);
    const rs = nodesOf(m, "Reshape")[0]!;
    expect(int64Values(m, rs.input[1]!)).toEqual([0, 3, 1]);
    const sl = nodesOf(m, "Slice")[0]!;
    expect(sl.input.slice(1).map((n) => int64Values(m, n))).toEqual([[0], [2], [1]]);
    const tk = nodesOf(m, "TopK")[0]!;
    expect(initializer(m, tk.input[1]!).dims.map(num)).toEqual([1]);
    expect(int64Values(m, tk.input[1]!)).toEqual([2]);
    expect(num(attr(tk, "axis")!.i)).toBe(-1);
    expect(num(attr(tk, "largest")!.i)).toBe(1);
    expect(attr(tk, "k")).toBeUndefined();
  });

  it("OneHot takes depth and float32 [0, 1] values as inputs", () => {
    const m = emitModel(allOpsGraph(), { opset: 17 });
    const oh = nodesOf(m, "OneHot")[0]!;
    expect(oh.attribute).toEqual([]);
    expect(int64Values(m, oh.input[1]!)).toEqual([3]);
    expect(float32Values(m, oh.input[2]!)).toEqual([0, 1]);
  });

  it("Cast writes `to` as the TensorProto enum", () => {
    const m = emitModel(allOpsGraph(), { opset: 17 });
    for (const n of nodesOf(m, "Cast")) {
      expect(attr(n, "to")!.type).toBe(T.INT);
      expect(num(attr(n, "to")!.i)).toBe(onnx.TensorProto.DataType.FLOAT);
    }
  });

  it("Gelu is native from opset 20 and the exact erf form below", () => {
    for (const opset of [20, 21]) {
      const m = emitModel(oneOp("Gelu", {}), { opset });
      expect(m.graph!.node.map((n) => n.opType)).toEqual(["Gelu"]);
      expect(m.graph!.node[0]!.attribute).toEqual([]); // approximate="none" by default
    }
    for (const opset of [13, 17, 19]) {
      const m = emitModel(oneOp("Gelu", {}), { opset });
      const ops = m.graph!.node.map((n) => `${n.opType}(${n.input.join(",")})->${n.output.join(",")}`);
      expect(ops).toEqual([
        "Div(x,y_sqrt2)->y_div",
        "Erf(y_div)->y_erf",
        "Add(y_erf,y_one)->y_add",
        "Mul(x,y_add)->y_mul",
        "Mul(y_mul,y_half)->y",
      ]);
      expect(float32Values(m, "y_sqrt2")).toEqual([Math.fround(Math.SQRT2)]);
      expect(float32Values(m, "y_one")).toEqual([1]);
      expect(float32Values(m, "y_half")).toEqual([0.5]);
    }
  });

  it("float attributes are FLOAT, int attributes INT, perm INTS", () => {
    const m = emitModel(allOpsGraph(), { opset: 17 });
    const lr = nodesOf(m, "LeakyRelu")[0]!;
    expect(attr(lr, "alpha")!.type).toBe(T.FLOAT);
    expect(attr(lr, "alpha")!.f).toBeCloseTo(0.01, 7);
    const gemm = nodesOf(m, "Gemm")[0]!;
    expect(gemm.attribute!.map((a) => [a.name, a.type])).toEqual([
      ["alpha", T.FLOAT],
      ["beta", T.FLOAT],
      ["transA", T.INT],
      ["transB", T.INT],
    ]);
    expect(attr(nodesOf(m, "Transpose")[0]!, "perm")!.ints!.map(num)).toEqual([0, 2, 1]);
  });
});

describe("names, initialisers and outputs", () => {
  it("keeps input and output names, writes dim_param batch, names nodes scope/Op_n uniquely", () => {
    const m = emitModel(allOpsGraph(), { opset: 17 });
    const g = m.graph!;
    expect(g.name).toBe("all_ops");
    expect(g.input.map((v) => v.name)).toEqual(["x", "ids", "page"]);
    expect(g.input[0]!.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || num(d.dimValue))).toEqual(["batch", 4]);
    expect(g.output.map((v) => v.name)).toEqual(["ctr", "select:layer.0", "topv"]);
    const names = g.node.map((n) => n.name);
    expect(new Set(names).size).toBe(names.length);
    expect(names[0]).toBe("layer.0/Gather_0");
    for (const n of g.node) expect(n.name).toMatch(new RegExp(`^layer\\.0/${n.opType}_\\d+$`));
  });

  it("every output name is produced by a node: aliases of inputs, constants and repeats get an Identity", () => {
    const m = emitModel(smallGraph(), { opset: 17 });
    const g = m.graph!;
    const producers = new Map(g.node.flatMap((n) => n.output.map((o) => [o, n] as const)));
    for (const o of g.output) expect(producers.has(o.name!), o.name!).toBe(true);
    const ids = nodesOf(m, "Identity").map((n) => `${n.input[0]}->${n.output[0]}`);
    expect(ids).toEqual(["y->y_again", "x->x_echo", "b->bias"]);
    expect(g.output.map((o) => o.name)).toEqual(["y", "y_again", "x_echo", "bias"]);
  });

  it("renames a value that has another output's name, so no ONNX name is defined twice", () => {
    const g = new Graph("crossed");
    const x = g.addInput("x", { dtype: "float32", shape: [2] });
    const a = g.op("Relu", [x], {}, { names: ["a"] });
    const b = g.op("Neg", [x], {}, { names: ["b"] });
    g.setOutput("b", a); // the value named "a" is exported as "b", and "b" as "a"
    g.setOutput("a", b);
    const m = emitModel(g, { opset: 17 });
    const defined = m.graph.node.flatMap((n) => n.output);
    expect(new Set(defined).size).toBe(defined.length);
    expect(m.graph.node.map((n) => `${n.opType}(${n.input.join(",")})->${n.output.join(",")}`)).toEqual([
      "Relu(x)->a_1",
      "Neg(x)->b_1",
      "Identity(a_1)->b",
      "Identity(b_1)->a",
    ]);
  });

  it("stores float32 and int64 initialisers as little-endian raw_data", () => {
    const m = emitModel(allOpsGraph(), { opset: 17 });
    const w = initializer(m, "w");
    expect(w.dataType).toBe(onnx.TensorProto.DataType.FLOAT);
    expect(w.dims.map(num)).toEqual([4, 3]);
    expect(w.floatData).toEqual([]);
    const view = new DataView(w.rawData.buffer, w.rawData.byteOffset, w.rawData.byteLength);
    expect(view.getFloat32(0, true)).toBe(0.5);
    expect(view.getFloat32(4, true)).toBe(-1);
    const k = initializer(m, nodesOf(m, "TopK")[0]!.input[1]!);
    expect(k.int64Data).toEqual([]);
    expect(Array.from(k.rawData)).toEqual([2, 0, 0, 0, 0, 0, 0, 0]);
    const half = initializer(m, "half");
    expect(half.dims).toEqual([]);
  });

  it("side-input initialiser names never clash with graph names", () => {
    const g = new Graph("clash");
    const x = g.addInput("x", { dtype: "float32", shape: [2, 3] });
    g.addConstant("y_axes", f32([1], [7]));
    g.setOutput("y", g.op("ReduceSum", [x], { axes: [1] }, { names: ["y"] }));
    const m = emitModel(g, { opset: 17 });
    const n = nodesOf(m, "ReduceSum")[0]!;
    expect(n.input[1]).toBe("y_axes_1");
    const names = m.graph!.initializer.map((t) => t.name);
    expect(new Set(names).size).toBe(names.length);
  });

  it("writes value_info for intermediate values only", () => {
    const m = emitModel(smallGraph(), { opset: 17 });
    expect(m.graph!.valueInfo.map((v) => v.name)).toEqual(["xw", "z"]);
    expect(emitModel(smallGraph(), { valueInfo: false }).graph!.valueInfo).toEqual([]);
  });

  it("writeOnnx writes the encoded model atomically", () => {
    const path = join(tmp, "sub", "small.onnx");
    const n = writeOnnx(path, smallGraph(), { opset: 17 });
    const bytes = readFileSync(path);
    expect(n).toBe(bytes.length);
    expect(Buffer.from(encodeModel(emitProto(smallGraph(), { opset: 17 })))).toEqual(bytes);
    expect(readdirSync(join(tmp, "sub"))).toEqual(["small.onnx"]); // no temp file left behind
  });

  it("writeOnnx leaves no file when emission fails", () => {
    const path = join(tmp, "bad.onnx");
    expect(() => writeOnnx(path, smallGraph(), { opset: 12 })).toThrow("unsupported opset 12");
    expect(existsSync(path)).toBe(false);
  });
});
