import { describe, expect, it } from "vitest";
import { f32, tensor } from "../../src/core/tensor.ts";
import { runGraph, runGraphAll } from "../../src/backends/interp/index.ts";
import { Graph } from "../../src/ir/index.ts";

/** y = relu(x·W + b), plus a second output reading an intermediate and an int64 path. */
function small(): Graph {
  const g = new Graph("small");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 2] });
  const ids = g.addInput("ids", { dtype: "int64", shape: ["batch"] });
  const w = g.addConstant("w", f32([2, 3], [1, 0, -1, 0, 1, 1]));
  const b = g.addConstant("b", f32([3], [0, 0.5, 0]));
  const xw = g.op("MatMul", [x, w], {}, { names: ["xw"], scope: "layer" });
  const z = g.op("Add", [xw, b], {}, { names: ["z"], scope: "layer" });
  const y = g.op("Relu", [z], {}, { names: ["y"], scope: "layer" });
  const table = g.addConstant("table", f32([3, 1], [10, 20, 30]));
  const rows = g.op("Gather", [table, ids], { axis: 0 }, { names: ["rows"], scope: "lookup" });
  const sum = g.op("Add", [y, rows], {}, { names: ["sum"] });
  g.setOutput("y", y);
  g.setOutput("total", sum);
  return g;
}

const feeds = () => ({
  x: f32([2, 2], [1, 2, -3, 1]),
  ids: tensor("int64", [2], [2, 0]),
});

describe("runGraph", () => {
  it("returns outputs by name", () => {
    const out = runGraph(small(), feeds());
    expect(Object.keys(out)).toEqual(["y", "total"]);
    expect(out.y!.shape).toEqual([2, 3]);
    expect(Array.from(out.y!.data as Float32Array)).toEqual([1, 2.5, 1, 0, 1.5, 4]);
    expect(Array.from(out.total!.data as Float32Array)).toEqual([31, 32.5, 31, 10, 11.5, 14]);
  });

  it("runGraphAll keeps every value, and agrees with runGraph", () => {
    const g = small();
    const all = runGraphAll(g, feeds());
    const byName = new Map([...all].map(([v, t]) => [v.name, t]));
    expect([...byName.keys()].sort()).toEqual(["b", "ids", "rows", "sum", "table", "w", "x", "xw", "y", "z"]);
    expect(Array.from(byName.get("xw")!.data as Float32Array)).toEqual([1, 2, 1, -3, 1, 4]);
    expect(byName.get("total")).toBeUndefined();
    expect(byName.get("sum")!.data).toEqual(runGraph(g, feeds()).total!.data);
  });

  it("checks feeds against the graph inputs, naming the input", () => {
    const g = small();
    expect(() => runGraph(g, { x: feeds().x })).toThrow("graph input ids (i64[batch]) has no feed");
    expect(() => runGraph(g, { ...feeds(), extra: f32([1]) })).toThrow("feed extra is not an input of graph small");
    expect(() => runGraph(g, { ...feeds(), ids: f32([2], [0, 1]) })).toThrow("graph input ids: expected i64[batch], got [2] float32");
    expect(() => runGraph(g, { ...feeds(), x: f32([2, 3]) })).toThrow("graph input x: expected f32[batch,2], got [2,3] float32 (dim 1)");
    expect(() => runGraph(g, { ...feeds(), x: f32([2]) })).toThrow("graph input x: expected f32[batch,2], got rank 1");
    expect(() => runGraph(g, { ...feeds(), ids: tensor("int64", [3], [0, 0, 0]) })).toThrow(
      "graph input ids: dim 0 (batch) is 3, but batch = 2 elsewhere",
    );
    expect(() => runGraph(g, { ...feeds(), ids: { dtype: "int64", shape: [2], data: new Float32Array(2) } })).toThrow(
      "graph input ids: int64 data must be a BigInt64Array",
    );
  });

  it("runs an empty batch", () => {
    const out = runGraph(small(), { x: f32([0, 2]), ids: tensor("int64", [0]) });
    expect(out.total!.shape).toEqual([0, 3]);
  });

  it("names the node when a kernel fails", () => {
    const g = small();
    expect(() => runGraph(g, { ...feeds(), ids: tensor("int64", [2], [0, 3]) })).toThrow(
      "Gather -> %rows (lookup): Gather: index 3 out of range [-3, 3)",
    );
  });

  it("frees intermediates after their last use but keeps outputs that are also read later", () => {
    const g = new Graph("chain");
    let h = g.addInput("x", { dtype: "float32", shape: ["batch", 4] });
    const first = g.op("Relu", [h], {}, { names: ["r0"] });
    h = first;
    for (let i = 1; i < 10; i++) h = g.op("Neg", [h], {}, { names: [`r${i}`] });
    g.setOutput("last", h);
    g.setOutput("first", first); // an output read again later: must survive
    const stats = { peakLiveValues: 0, peakLiveBytes: 0 };
    const out = runGraph(g, { x: f32([1000, 4]) }, { stats });
    // r0 (kept), the current input and its result
    expect(stats.peakLiveValues).toBe(3);
    expect(stats.peakLiveBytes).toBe(3 * 1000 * 4 * 4);
    expect(out.first!.shape).toEqual([1000, 4]);
    expect(runGraphAll(g, { x: f32([1000, 4]) }).size).toBe(11);
  });

  it("handles a graph output that is an input or a constant", () => {
    const g = new Graph("pass");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch"] });
    const c = g.addConstant("c", f32([1], [7]));
    g.setOutput("x_out", x);
    g.setOutput("c_out", c);
    const out = runGraph(g, { x: f32([2], [1, 2]) });
    expect(Array.from(out.x_out!.data as Float32Array)).toEqual([1, 2]);
    expect(Array.from(out.c_out!.data as Float32Array)).toEqual([7]);
  });
});
