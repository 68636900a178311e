// The ONNX reader: round trips through our own emitter at several opsets, the forms of
// foreign models (Constant nodes, runtime side inputs, old opsets), and its errors.

import { readFileSync } from "node:fs";
import onnxProto from "onnx-proto";
import { describe, expect, it } from "vitest";
import { AesmError } from "../../src/core/diagnostics.ts";
import { f32, tensor } from "../../src/core/tensor.ts";
import { emitModel, encodeModel, readModel, type ModelProto } from "../../src/backends/onnx/index.ts";
import { Graph, printGraph, verifyGraph } from "../../src/ir/index.ts";
import { allOpsGraph, smallGraph } from "./graphs.ts";

const { onnx } = onnxProto;
const T = onnx.AttributeProto.AttributeType;

function roundTrip(g: Graph, opset: number): Graph {
  const back = readModel(encodeModel(emitModel(g, { opset })));
  verifyGraph(back, `reading opset ${opset}`);
  return back;
}

function errorOf(f: () => unknown): AesmError {
  try {
    f();
  } catch (e) {
    if (e instanceof AesmError) return e;
    throw e;
  }
  throw new Error("expected an AesmError");
}

/** A minimal model around `nodes`, with float inputs x [2,3] (and more by name). */
function model(nodes: onnxProto.onnx.INodeProto[], opts: { inputs?: string[]; init?: onnxProto.onnx.ITensorProto[]; opset?: number } = {}): Uint8Array {
  const vi = (name: string, dims: (number | string)[] = [2, 3], elemType = 1) => ({
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === "number" ? { dimValue: d } : { dimParam: d })) } } },
  });
  const m: ModelProto = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: "", version: opts.opset ?? 17 }],
    graph: {
      name: "t",
      node: nodes,
      input: (opts.inputs ?? ["x"]).map((n) => (n === "shape" ? vi(n, [2], 7) : vi(n))),
      initializer: opts.init ?? [],
      output: [{ name: "y" }],
    },
  });
  return encodeModel(m);
}

describe("round trip through the emitter", () => {
  it.each([13, 17, 18, 20, 21])("opset %i reads back the same IR (no Gelu)", (opset) => {
    const g = allOpsGraph({ gelu: false });
    expect(printGraph(roundTrip(g, opset))).toBe(printGraph(g));
  });

  it.each([20, 21])("opset %i keeps Gelu as one node", (opset) => {
    const g = allOpsGraph();
    expect(printGraph(roundTrip(g, opset))).toBe(printGraph(g));
  });

  it.each([13, 17, 18, 19])("opset %i reads Gelu back as its erf decomposition", (opset) => {
    const back = roundTrip(allOpsGraph(), opset);
    const i = back.nodes.findIndex((n) => n.op === "Erf" && n.inputs[0]!.name === "gelu_div");
    expect(back.nodes.slice(i - 1, i + 4).map((n) => n.op)).toEqual(["Div", "Erf", "Add", "Mul", "Mul"]);
    expect(back.nodes[i + 3]!.outputs[0]!.name).toBe("gelu");
    expect(back.nodes[i + 3]!.scope).toBe("layer.0");
    expect(back.nodes.some((n) => n.op === "Gelu")).toBe(false);
  });

  it("keeps output aliases (input, constant, repeated value), metadata and the graph name", () => {
    const g = smallGraph();
    for (const opset of [13, 17, 21]) {
      const back = roundTrip(g, opset);
      expect(printGraph(back)).toBe(printGraph(g));
      expect(back.metadata).toEqual({ "aesm.version": "test" });
      expect(back.name).toBe("small");
    }
  });

  it("keeps symbolic dims as strings and static dims as numbers", () => {
    const back = roundTrip(allOpsGraph(), 17);
    expect(back.inputs.map((v) => v.type.shape)).toEqual([["batch", 4], ["batch"], ["batch"]]);
  });

  it("keeps float attributes as the decimals they were written as", () => {
    const back = roundTrip(allOpsGraph(), 17);
    expect(back.nodes.find((n) => n.op === "LeakyRelu")!.attrs).toEqual({ alpha: 0.01 });
    expect(back.nodes.find((n) => n.op === "Gemm")!.attrs).toEqual({ transA: 0, transB: 1, alpha: 0.5, beta: 1 });
  });
});

describe("foreign forms", () => {
  it("folds Constant-node side inputs into attributes (ONNX's expanded softmax)", () => {
    const bytes = model([
      { output: ["axes"], opType: "Constant", attribute: [{ name: "value", type: T.TENSOR, t: { dims: [1], dataType: 7, int64Data: [1] } }] },
      { input: ["x"], output: ["m"], opType: "ReduceMax", attribute: [{ name: "axes", type: T.INTS, ints: [1] }, { name: "keepdims", type: T.INT, i: 1 }] },
      { input: ["x", "m"], output: ["d"], opType: "Sub" },
      { input: ["d"], output: ["e"], opType: "Exp" },
      { input: ["e", "axes"], output: ["s"], opType: "ReduceSum", attribute: [{ name: "keepdims", type: T.INT, i: 1 }] },
      { input: ["e", "s"], output: ["y"], opType: "Div" },
    ], { opset: 13 });
    const g = readModel(bytes);
    expect(g.constants).toEqual([]);
    expect(printGraph(g)).toBe(
      [
        "graph t(%x : f32[2,3]) {",
        '  %m : f32[2,1] = ReduceMax(%x) {axes=[1], keepdims=1}',
        "  %d : f32[2,3] = Sub(%x, %m)",
        "  %e : f32[2,3] = Exp(%d)",
        '  %s : f32[2,1] = ReduceSum(%e) {axes=[1], keepdims=1}',
        "  %y : f32[2,3] = Div(%e, %s)",
        "  return %y",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("a side input fed at run time needs constantInputs, and names the node and input otherwise", () => {
    const bytes = model([{ name: "reshape_it", input: ["x", "shape"], output: ["y"], opType: "Reshape" }], { inputs: ["x", "shape"] });
    const err = errorOf(() => readModel(bytes, "m.onnx"));
    expect(err.diagnostics[0]).toMatchObject({ code: "AESM3004", path: "reshape_it", file: "m.onnx" });
    expect(err.diagnostics[0]!.message).toBe(
      'node "reshape_it" (Reshape): input 1 (shape) "shape" is not a constant; the IR needs shape known when the model is read',
    );
    const g = readModel(bytes, undefined, { constantInputs: { shape: tensor("int64", [2], [3, 2]) } });
    expect(printGraph(g)).toContain("%y : f32[3,2] = Reshape(%x) {shape=[3,2]}");
    expect(g.inputs.map((v) => v.name)).toEqual(["x"]);
    expect(g.constants).toEqual([]); // used only as a side input
  });

  it("reads attribute forms of older opsets and variadic Max", () => {
    const g = readModel(
      model(
        [
          { input: ["x"], output: ["u"], opType: "Unsqueeze", attribute: [{ name: "axes", type: T.INTS, ints: [0] }] },
          { input: ["u"], output: ["s"], opType: "Squeeze", attribute: [{ name: "axes", type: T.INTS, ints: [0] }] },
          { input: ["s", "x", "s"], output: ["y"], opType: "Max" },
        ],
        { opset: 11 },
      ),
    );
    expect(g.nodes.map((n) => `${n.op}${JSON.stringify(n.attrs)}`)).toEqual(['Unsqueeze{"axes":[0]}', 'Squeeze{"axes":[0]}', "Max{}", "Max{}"]);
    expect(g.outputs[0]!.value.name).toBe("y");
  });

  it("reads a reduction without axes as one over all axes, and noop_with_empty_axes as Identity", () => {
    const all = readModel(model([{ input: ["x"], output: ["y"], opType: "ReduceMean", attribute: [{ name: "keepdims", type: T.INT, i: 0 }] }]));
    expect(all.nodes[0]!.attrs).toEqual({ axes: [0, 1], keepdims: 0 });
    const noop = readModel(
      model([{ input: ["x"], output: ["y"], opType: "ReduceSum", attribute: [{ name: "noop_with_empty_axes", type: T.INT, i: 1 }] }]),
    );
    expect(noop.nodes.map((n) => n.op)).toEqual(["Identity"]);
  });

  it("keeps dim_param as its string and gives an unnamed unknown dim its own symbol", () => {
    const bytes = encodeModel(
      onnx.ModelProto.create({
        irVersion: 8,
        opsetImport: [{ domain: "", version: 17 }],
        graph: {
          name: "t",
          node: [{ input: ["x"], output: ["y"], opType: "Relu" }],
          input: [{ name: "x", type: { tensorType: { elemType: 1, shape: { dim: [{}, { dimParam: "batch" }, { dimValue: 3 }] } } } }],
          output: [{ name: "y" }],
        },
      }),
    );
    expect(readModel(bytes).inputs[0]!.type.shape).toEqual(["x_dim0", "batch", 3]);
  });

  it("reads initialisers stored in typed fields, not raw_data", () => {
    const g = readModel(
      model([{ input: ["x", "b"], output: ["y"], opType: "Add" }], {
        init: [{ name: "b", dims: [3], dataType: 1, floatData: [1, 2, 3] }],
      }),
    );
    expect(g.constants[0]!.data).toEqual(f32([3], [1, 2, 3]));
  });
});

describe("errors", () => {
  it("rejects bytes that are not an ONNX model with AESM3003", () => {
    for (const bytes of [new TextEncoder().encode("hello, this is not a model\n"), new Uint8Array([0xff, 0xff, 0xff]), new Uint8Array()]) {
      const err = errorOf(() => readModel(bytes, "bad.onnx"));
      expect(err.diagnostics[0]!.code).toBe("AESM3003");
      expect(err.diagnostics[0]!.message).toMatch(/^not an ONNX model: /);
      expect(err.diagnostics[0]!.file).toBe("bad.onnx");
    }
    const source = readFileSync(new URL(import.meta.url));
    expect(errorOf(() => readModel(source)).diagnostics[0]!.code).toBe("AESM3003");
  });

  it("names an unsupported op and its node (AESM3004)", () => {
    const err = errorOf(() => readModel(model([{ name: "conv1", input: ["x"], output: ["y"], opType: "Conv" }])));
    expect(err.diagnostics[0]).toMatchObject({ code: "AESM3004", path: "conv1", message: 'node "conv1": unsupported op "Conv"' });
  });

  it("names an attribute the IR does not model", () => {
    const err = errorOf(() =>
      readModel(model([{ name: "sm", input: ["x"], output: ["y"], opType: "Softmax", attribute: [{ name: "bogus", type: T.INT, i: 1 }] }])),
    );
    expect(err.diagnostics[0]!.message).toBe('node "sm" (Softmax): unsupported attribute "bogus"');
  });

  it("names a dtype the IR does not carry (AESM3007)", () => {
    const bytes = encodeModel(
      onnx.ModelProto.create({
        irVersion: 8,
        opsetImport: [{ domain: "", version: 17 }],
        graph: { name: "t", node: [{ input: ["x"], output: ["y"], opType: "Identity" }], input: [{ name: "x", type: { tensorType: { elemType: 2, shape: { dim: [{ dimValue: 2 }] } } } }], output: [{ name: "y" }] },
      }),
    );
    expect(errorOf(() => readModel(bytes)).diagnostics[0]).toMatchObject({
      code: "AESM3007",
      path: "x",
      message: 'value "x" has dtype uint8, which the IR does not carry',
    });
  });

  it("names a node whose types do not check (AESM3008)", () => {
    const err = errorOf(() => readModel(model([{ name: "mm", input: ["x", "x"], output: ["y"], opType: "MatMul" }])));
    expect(err.diagnostics[0]!.code).toBe("AESM3008");
    expect(err.diagnostics[0]!.message).toMatch(/^node "mm" \(MatMul\): MatMul \(mm\): inner dims differ: \[2,3\] × \[2,3\]/);
  });
});
