import { describe, expect, it } from "vitest";
import { f32 } from "../../src/core/tensor.ts";
import { Graph, printGraph, verifyGraph, VerifyError } from "../../src/ir/index.ts";

function small(): Graph {
  const g = new Graph("small");
  const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
  const w = g.addConstant("w", f32([3, 2], [1, 2, 3, 4, 5, 6]));
  const b = g.addConstant("b", f32([2], [0.5, -0.5]));
  const y = g.op("MatMul", [x, w], {}, { names: ["xw"], scope: "layer" });
  const z = g.op("Add", [y, b], {}, { names: ["z"] });
  g.setOutput("out", g.op("Relu", [z], {}, { names: ["out"] }));
  return g;
}

describe("IR graph", () => {
  it("infers types and prints deterministically", () => {
    expect(printGraph(small())).toBe(
      [
        "graph small(%x : f32[batch,3]) {",
        "  const %w : f32[3,2]",
        "  const %b : f32[2]",
        "  %xw : f32[batch,2] = MatMul(%x, %w)  # layer",
        "  %z : f32[batch,2] = Add(%xw, %b)",
        "  %out : f32[batch,2] = Relu(%z)",
        "  return %out",
        "}",
        "",
      ].join("\n"),
    );
  });

  it("rejects ill-typed nodes naming the op and inputs", () => {
    const g = new Graph("bad");
    const x = g.addInput("x", { dtype: "float32", shape: ["batch", 3] });
    const w = g.addConstant("w", f32([4, 2]));
    expect(() => g.op("MatMul", [x, w], {}, { scope: "experts.0" })).toThrow(
      "MatMul (experts.0): inner dims differ: [batch,3] × [4,2]; inputs f32[batch,3], f32[4,2]",
    );
  });

  it("replaces uses, removes dead nodes and keeps the verifier happy", () => {
    const g = small();
    const relu = g.nodes[2]!;
    const add = g.nodes[1]!;
    g.replaceAllUsesWith(relu.outputs[0]!, add.outputs[0]!);
    g.removeNodes([relu]);
    verifyGraph(g);
    expect(g.outputs[0]!.value.name).toBe("z");
    expect(() => g.removeNodes([g.nodes[0]!])).toThrow("is read by Add");
    expect(g.nodes.length).toBe(2);
  });

  it("clones without sharing structure", () => {
    const g = small();
    const c = g.clone();
    verifyGraph(c);
    expect(printGraph(c)).toBe(printGraph(g));
    c.removeNodes([]);
    c.replaceAllUsesWith(c.nodes[2]!.outputs[0]!, c.nodes[1]!.outputs[0]!);
    expect(g.outputs[0]!.value.name).toBe("out");
  });

  it("verifier names a node whose recorded type is wrong", () => {
    const g = small();
    g.nodes[1]!.outputs[0]!.type = { dtype: "float32", shape: ["batch", 5] };
    expect(() => verifyGraph(g, "test-pass")).toThrow(VerifyError);
    expect(() => verifyGraph(g, "test-pass")).toThrow(
      "IR verification failed after test-pass: output %z is f32[batch,5], inference gives f32[batch,2] at %z : f32[batch,5] = Add(%xw, %b)",
    );
  });

  it("toposort restores order after out-of-order insertion", () => {
    const g = small();
    g.nodes.reverse();
    g.toposort();
    verifyGraph(g);
    expect(g.nodes.map((n) => n.op)).toEqual(["MatMul", "Add", "Relu"]);
  });
});
