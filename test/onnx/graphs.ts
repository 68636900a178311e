// Hand-built IR graphs shared by the ONNX and runtime suites: one that uses every op of
// the IR vocabulary (with a symbolic batch dim), and small ones with known numbers.

import { f32, tensor } from "../../src/core/tensor.ts";
import { Graph, type Value } from "../../src/ir/index.ts";

/**
 * Every OpKind at least once, over inputs x f32[batch,4], ids i64[batch], page i64[batch].
 * `gelu: false` leaves Gelu out, for exact round trips below opset 20 (where it is decomposed).
 */
export function allOpsGraph(opts: { gelu?: boolean } = {}): Graph {
  const g = new Graph("all_ops");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 4] });
  const ids = g.addInput("ids", { dtype: "int64", shape: ["batch"] });
  const page = g.addInput("page", { dtype: "int64", shape: ["batch"] });
  const emb = g.addConstant("features.ids.weight", f32([5, 3], [0.1, -0.2, 0.3, 0.4, 0.5, -0.6, 0.7, 0.8, 0.9, -1, 1.1, 1.2, 0.05, 0.15, -0.25]));
  const w = g.addConstant("w", f32([4, 3], [0.5, -1, 0.25, 1, 0.5, -0.5, -0.25, 0.75, 1, 0.1, 0.2, 0.3]));
  const w2 = g.addConstant("w2", f32([2, 3], [1, -1, 0.5, 0.25, 0.5, -2]));
  const b2 = g.addConstant("b2", f32([2], [0.1, -0.1]));
  const half = g.addConstant("half", f32([], [0.5]));
  const two = g.addConstant("two", f32([1], [2]));
  const one = g.addConstant("one", f32([], [1]));
  const zero = g.addConstant("zero", f32([], [0]));
  const s = "layer.0";
  const op = (o: Parameters<Graph["op"]>[0], ins: Value[], attrs: Parameters<Graph["op"]>[2] = {}, name?: string) =>
    g.op(o, ins, attrs, { scope: s, ...(name ? { names: [name] } : {}) });

  const e = op("Gather", [emb, ids], { axis: 0 }, "e");
  const h = op("MatMul", [x, w], {}, "h");
  const h2 = op("Add", [h, e], {}, "h2");
  const h3 = op("Mul", [op("Sub", [h2, half]), two]);
  const h4 = op("Div", [h3, two]);
  const act = [
    op("Relu", [h4]),
    op("LeakyRelu", [h4], { alpha: 0.01 }),
    op("Tanh", [h4]),
    op("Sigmoid", [h4]),
    op("Erf", [h4]),
    op("Exp", [op("Neg", [op("Abs", [h4])])]),
    op("Log", [op("Add", [op("Abs", [h4]), one])]),
    op("Sqrt", [op("Abs", [h4])]),
    op("Max", [h4, zero]),
    op("Min", [h4, zero]),
  ];
  if (opts.gelu !== false) act.push(op("Gelu", [h4], {}, "gelu"));
  let acc = act[0]!;
  for (const a of act.slice(1)) acc = op("Add", [acc, a]);
  const gm = op("Gemm", [acc, w2, b2], { transA: 0, transB: 1, alpha: 0.5, beta: 1 }, "gemm"); // [batch,2]
  const cat = op("Concat", [gm, acc], { axis: 1 }, "cat"); // [batch,5]
  const sm = op("Softmax", [cat], { axis: -1 }, "sm");
  const lsm = op("LogSoftmax", [cat], { axis: 1 }, "lsm");
  const rsum = op("ReduceSum", [sm], { axes: [1], keepdims: 1 }, "rsum"); // [batch,1]
  const rmax = op("ReduceMax", [lsm], { axes: [1], keepdims: 0 }, "rmax"); // [batch]
  const rmin = op("ReduceMin", [lsm], { axes: [-1], keepdims: 0 }, "rmin");
  const rmean = op("ReduceMean", [cat], { axes: [1], keepdims: 0 }, "rmean");
  const rlse = op("ReduceLogSumExp", [cat], { axes: [1], keepdims: 0 }, "rlse");
  const un = op("Unsqueeze", [acc], { axes: [1] }, "un"); // [batch,1,3]
  const tr = op("Transpose", [op("Reshape", [un], { shape: [0, 3, 1] }, "rs")], { perm: [0, 2, 1] }, "tr"); // [batch,1,3]
  const sq = op("Squeeze", [tr], { axes: [1] }, "sq"); // [batch,3]
  const sl = op("Slice", [sq], { starts: [0], ends: [2], axes: [1] }, "sl"); // [batch,2]
  const [topv, topi] = g.addNode("TopK", [cat], { k: 2, axis: -1, largest: 1 }, { scope: s, names: ["topv", "topi"] });
  const ge = op("GatherElements", [sm, topi!], { axis: 1 }, "ge"); // [batch,2]
  const oh = op("OneHot", [page], { depth: 3 }, "oh"); // [batch,3]
  const lt = op("Less", [sl, ge]);
  const gt = op("Greater", [topv!, sl]);
  const geq = op("GreaterOrEqual", [sl, ge]);
  const eq = op("Equal", [ids, page]); // [batch] bool
  const cond = op("Or", [op("And", [lt, op("Not", [gt])]), geq]);
  const wh = op("Where", [cond, sl, ge], {}, "wh"); // [batch,2]
  const eqf = op("Cast", [eq], { to: "float32" }, "eqf");
  const idsf = op("Cast", [ids], { to: "float32" }, "idsf");
  const mix = op("Add", [op("ReduceSum", [wh], { axes: [1], keepdims: 0 }), op("Mul", [eqf, idsf])]);
  // sparse dispatch's ops: the rows where ids = page, gathered, and scattered back over `wh`
  const nz = op("NonZero", [eq], { dim: "n_eq" }, "nz"); // [1,n_eq]
  const rows = op("Squeeze", [nz], { axes: [0] }, "rows"); // [n_eq]
  const picked = op("Add", [op("Gather", [ge, rows], { axis: 0 }), half], {}, "picked"); // [n_eq,2]
  const sc = op("ScatterND", [wh, op("Unsqueeze", [rows], { axes: [1] }), picked], {}, "sc"); // [batch,2]
  const mix2 = op("Add", [mix, op("ReduceSum", [sc], { axes: [1], keepdims: 0 })]);
  const logit = op("Add", [op("Add", [op("Add", [mix2, rmax]), op("Sub", [rmin, rmean])]), op("Sub", [rlse, op("Squeeze", [rsum], { axes: [1] })])]);
  g.setOutput("ctr", op("Sigmoid", [logit], {}, "ctr"));
  g.setOutput("select:layer.0", op("Identity", [oh], {}, "select:layer.0"));
  g.setOutput("topv", topv!);
  return g;
}

/** y = relu(x·W + b) with known numbers, plus aliasing outputs (an input, a constant, a repeat). */
export function smallGraph(): Graph {
  const g = new Graph("small");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
  const w = g.addConstant("w", f32([2, 2], [1, 2, 3, 4]));
  const b = g.addConstant("b", f32([2], [0.5, -10]));
  const y = g.op("Relu", [g.op("Add", [g.op("MatMul", [x, w], {}, { names: ["xw"] }), b], {}, { names: ["z"] })], {}, { names: ["y"] });
  g.setOutput("y", y);
  g.setOutput("y_again", y);
  g.setOutput("x_echo", x);
  g.setOutput("bias", b);
  g.metadata["aesm.version"] = "test";
  return g;
}

export function int64Tensor(shape: number[], values: number[]) {
  return tensor("int64", shape, values);
}
