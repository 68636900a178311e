// The stacked task towers (stack-streams) as plain 2-D layers over [B, T·D]: one Transpose and
// Reshape in, block-diagonal weights, and each task's output read straight from its column.
//
//   before                                            after
//     %h  = Squeeze(%mix [T, B, 1, D], [−2])            %x = Reshape(Transpose(%mix, [1, 0, 2, 3]), [0, T·D])
//     %a  = Relu(MatMul(%h, %W1 [T, D, H]) + %b1)       %a = Relu(MatMul(%x, blockdiag(W1) [T·D, T·H]) + %b1 [T·H])
//     %p  = Sigmoid(MatMul(%a, %W2 [T, H, 1]) + %b2)    %p = Sigmoid(MatMul(%a, blockdiag(W2)) + %b2)      [B, T]
//     %y  = Squeeze(%p, [2])                            %ctr = Gather(%p, 0, axis 1), %cvr = Gather(%p, 1, axis 1)
//     %ctr = Gather(%y, 0), %cvr = Gather(%y, 1)
//
// onnxruntime runs 2-D MatMul + Add (+ Relu) as one Gemm kernel; the stacked [T, B, ·] ones as
// separate batched kernels. Each task's column block only meets its own weights (the other
// blocks are exact zeros), so the dot products are the same sums. The last layer has one spare
// zero column (see below). Applied where every
// block-diagonal weight has at most BLOCK_DIAGONAL_LIMIT elements (towers are narrow; the
// zero blocks cost T× the multiply-adds).

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import type { OpKind } from "../ir/ops.ts";
import { eliminateDeadCode } from "./dce.ts";
import { BLOCK_DIAGONAL_LIMIT } from "./fusion-chains.ts";
import { onlyUser } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";

const UNARY = new Set<OpKind>(["Relu", "LeakyRelu", "Tanh", "Sigmoid", "Erf", "Gelu", "Neg", "Abs", "Exp", "Identity"]);

/** [T, K, N] constant → [T·K, T·N] with block t on the diagonal. */
export function blockDiagonal(w: Tensor): Tensor {
  const [T, K, N] = w.shape as [number, number, number];
  const src = w.data as Float32Array;
  const data = new Float32Array(T * K * T * N);
  for (let t = 0; t < T; t++)
    for (let k = 0; k < K; k++) data.set(src.subarray((t * K + k) * N, (t * K + k + 1) * N), (t * K + k) * T * N + t * N);
  return { dtype: "float32", shape: [T * K, T * N], data };
}

interface Chain {
  /** The stacked input: [T, B, D] or [T, B, 1, D] (the mixture before its Squeeze). */
  x: Value;
  ops: Node[];
  /** [T, B] after the final Squeeze. */
  last: Node;
}

/** Back from y [T, B] = Squeeze(p [T, B, 1], [2]) through stacked MatMul / Add / unary ops to their input. */
function matchChain(g: Graph, y: Value, T: number): Chain | null {
  const sq = y.producer;
  if (!sq || sq.op !== "Squeeze" || y.type.shape.length !== 2) return null;
  const p = sq.inputs[0]!;
  if (p.type.shape.length !== 3 || p.type.shape[0] !== T || p.type.shape[2] !== 1 || attrInts(sq.attrs, "axes").map((a) => normAxis(a, 3)).join() !== "2") return null;
  const ops: Node[] = [];
  let v = p;
  let consumer: Node = sq;
  for (;;) {
    const n = v.producer;
    if (!n || onlyUser(g, v) !== consumer) break;
    const x = n.inputs[0]!;
    if (UNARY.has(n.op)) ops.unshift(n);
    else if (n.op === "MatMul" && n.inputs[1]!.isConstant && n.inputs[1]!.type.shape.length === 3 && n.inputs[1]!.type.shape[0] === T && n.inputs[1]!.type.dtype === "float32") ops.unshift(n);
    else if (n.op === "Add" && n.inputs[1]!.isConstant && n.inputs[1]!.type.shape.length === 3 && n.inputs[1]!.type.shape[0] === T && n.inputs[1]!.type.shape[1] === 1) ops.unshift(n);
    else break;
    consumer = n;
    v = x;
  }
  if (!ops.some((n) => n.op === "MatMul") || v.type.shape.length !== 3 || v.type.shape[0] !== T) return null;
  // the mixture's Squeeze of [T, B, 1, D] is taken into the Transpose
  const s = v.producer;
  const x = s && s.op === "Squeeze" && onlyUser(g, v) === consumer && s.inputs[0]!.type.shape.length === 4 && s.inputs[0]!.type.shape[2] === 1 ? s.inputs[0]! : v;
  return { x, ops, last: sq };
}

export const streamsBlockDiagonal: Pass = {
  id: "streams-block-diagonal",
  summary: "the stacked towers as 2-D layers over [B, T·D] with block-diagonal weights; each task's output is its column",
  run(graph: Graph, ctx) {
    let changed = false;
    // the task outputs: Gather(y, t, axis 0) of one y [T, B] for t = 0…T−1
    const byY = new Map<Value, Node[]>();
    for (const o of graph.outputs) {
      const n = o.value.producer;
      if (!n || n.op !== "Gather" || attrInt(n.attrs, "axis", 0) !== 0 || !n.inputs[1]!.isConstant || n.inputs[1]!.type.shape.length !== 0) continue;
      const list = byY.get(n.inputs[0]!) ?? [];
      list.push(n);
      byY.set(n.inputs[0]!, list);
    }
    for (const [y, gathers] of byY) {
      const T = y.type.shape[0];
      if (typeof T !== "number" || gathers.length !== T || [...y.users].some((u) => !gathers.includes(u))) continue;
      const chain = matchChain(graph, y, T);
      if (!chain) continue;
      const big = chain.ops.some((n) => n.op === "MatMul" && n.inputs[1]!.type.shape.reduce((a, b) => (a as number) * (b as number), T) as number > BLOCK_DIAGONAL_LIMIT);
      if (big) {
        bump(ctx, "skipped:block-diagonal-too-large");
        continue;
      }
      const scope = chain.last.scope;
      const op = (o: OpKind, ins: Value[], attrs: Record<string, number | number[]>, name: string) => graph.op(o, ins, attrs, { scope, names: [name] });
      const rank = chain.x.type.shape.length;
      const D = chain.x.type.shape[rank - 1] as number;
      const moved = op("Transpose", [chain.x], { perm: rank === 4 ? [1, 0, 2, 3] : [1, 0, 2] }, `${chain.x.name}.by_row`);
      let h = op("Reshape", [moved], { shape: [0, T * D] }, `${chain.x.name}.flat`);
      // The last MatMul (and the bias after it) get one spare zero column: T column Gathers that
      // cover the whole axis are rewritten by onnxruntime into Split + T Squeezes, measured 4 %
      // slower at batch 1 on the example; the spare column keeps them plain Gathers.
      const lastMatMul = chain.ops.map((n) => n.op).lastIndexOf("MatMul");
      const spare = (t: Tensor, last: boolean): Tensor => {
        if (!last) return t;
        const [rows, cols] = t.shape.length === 2 ? (t.shape as [number, number]) : [1, t.shape[0]!];
        const data = new Float32Array(rows * (cols + 1));
        for (let i = 0; i < rows; i++) data.set((t.data as Float32Array).subarray(i * cols, (i + 1) * cols), i * (cols + 1));
        return { dtype: "float32", shape: t.shape.length === 2 ? [rows, cols + 1] : [cols + 1], data };
      };
      chain.ops.forEach((n, j) => {
        const name = `${n.outputs[0]!.name}.2d`;
        const last = j >= lastMatMul;
        if (n.op === "MatMul") {
          const W = graph.addConstant(`${n.inputs[1]!.name}.block_diagonal`, spare(blockDiagonal(n.inputs[1]!.data!), last));
          h = op("MatMul", [h, W], {}, name);
        } else if (n.op === "Add") {
          const b = n.inputs[1]!.data!;
          const flat: Tensor = { ...b, shape: [b.shape[0]! * b.shape[2]!] };
          h = op("Add", [h, graph.addConstant(`${n.inputs[1]!.name}.flat`, spare(flat, last))], {}, name);
        } else h = op(n.op, [h], { ...(n.attrs as Record<string, number>) }, name);
      });
      gathers.forEach((gt) => {
        const col = graph.op("Gather", [h, gt.inputs[1]!], { axis: 1 }, { scope: gt.scope, names: [`${gt.outputs[0]!.name}.column`] });
        graph.replaceAllUsesWith(gt.outputs[0]!, col);
      });
      bump(ctx, "towers-2d");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      for (const o of graph.outputs) if (o.value.producer && o.value.name !== o.name && !graph.hasName(o.name)) graph.renameValue(o.value, o.name);
      graph.toposort();
    }
    return { graph, changed };
  },
};
