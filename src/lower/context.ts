// The state one lowering shares across model parts: the graph under construction, the
// checkpoint, and the constants made from it (each created once, under a stable name).

import { invariant } from "../core/diagnostics.ts";
import { type Tensor, tensor } from "../core/tensor.ts";
import type { ModelSpec } from "../dsl/spec.ts";
import { Graph, type Value } from "../ir/graph.ts";
import type { Attrs, OpKind } from "../ir/ops.ts";
import type { Weights } from "../weights/layout.ts";

/**
 * Constant layout: checkpoint tensors keep their canonical names and PyTorch layout,
 * except linear weights, which the graph multiplies as `MatMul(x, <name>.T)` with
 * `<name>.T` = Wᵀ `[in, out]` transposed once here. Values computed at lowering time
 * (batch-norm denominators, masks, scalars) get names that cannot collide with
 * canonical ones.
 */
export class Lowering {
  readonly graph: Graph;
  private readonly constants = new Map<string, Value>();

  constructor(
    readonly spec: ModelSpec,
    private readonly weights: Weights,
  ) {
    this.graph = new Graph(spec.name);
  }

  /** A checkpoint tensor, under its canonical name, as stored. */
  weight(name: string): Value {
    return this.constant(name, () => this.tensor(name));
  }

  /** `<name>.T`: the `[out, in]` linear weight `name` transposed to `[in, out]`. */
  weightT(name: string): Value {
    return this.constant(`${name}.T`, () => {
      const w = this.tensor(name);
      invariant(w.shape.length === 2, () => `lowering: ${name} must be 2-D, got [${w.shape}]`);
      const [rows, cols] = w.shape as [number, number];
      const src = w.data as Float32Array;
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
      return { dtype: "float32", shape: [cols, rows], data: out };
    });
  }

  /** A checkpoint tensor's data, for constants derived from it. */
  tensor(name: string): Tensor {
    const t = this.weights.get(name);
    invariant(t !== undefined, () => `lowering: weight ${name} is missing (weights must be validated first)`);
    invariant(t.dtype === "float32", () => `lowering: weight ${name} is ${t.dtype}, expected float32`);
    return t;
  }

  /** The constant `name`, made by `make` the first time it is asked for. */
  constant(name: string, make: () => Tensor): Value {
    let v = this.constants.get(name);
    if (!v) {
      v = this.graph.addConstant(name, make());
      invariant(v.name === name, () => `lowering: constant name ${name} is already taken by a value`);
      this.constants.set(name, v);
    }
    return v;
  }

  /** A rank-0 float32 constant, named `const.f32.<value>` unless a name is given. */
  f32(value: number, name = `const.f32.${value}`): Value {
    return this.constant(name, () => tensor("float32", [], [value]));
  }

  /** A rank-0 int64 constant, named `const.i64.<value>`. */
  i64(value: number): Value {
    return this.constant(`const.i64.${value}`, () => tensor("int64", [], [value]));
  }

  /** Add a single-output node in `scope`, its output named `name` (made unique by the graph). */
  op(op: OpKind, inputs: Value[], attrs: Attrs, scope: string, name: string): Value {
    return this.graph.op(op, inputs, attrs, { scope, names: [name] });
  }

  /** Add a node with several outputs. */
  ops(op: OpKind, inputs: Value[], attrs: Attrs, scope: string, names: string[]): Value[] {
    return this.graph.addNode(op, inputs, attrs, { scope, names });
  }
}
