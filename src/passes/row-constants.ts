// Values that are the same on every row, folded. The lowering has no Shape/Expand, so a
// task's index and embedding (lower/features.ts) are computed per row from the batch:
// zeros = Mul(s_0, 0), index_t = Add(zeros, t), emb_t = Gather(tasks.weight, index_t), and the
// task selections' one-hots from index_t. All of these are row-constant.
//
//   1. Find them: a seed Mul(x, 0) of an integer [batch, …] value, then every node over
//      row-constants and constants (elementwise ops, Gather from a constant table, OneHot,
//      Unsqueeze behind the batch axis), each evaluated once on a one-row representative
//      with the interpreter's kernels.
//   2. Fold them where they meet per-row values:
//        - an elementwise op whose other operand carries the batch dim reads the one-row
//          constant instead (broadcasting gives the same result, bit for bit);
//        - a gate input Concat(h, c, emb_t) → MatMul(·, W) → Add(·, b) drops emb_t:
//          MatMul(Concat(h, c), W[h, c rows]) + (b + emb_t · W[emb rows]) — float32
//          reassociation of the dot product, the constant part summed in float64 and rounded;
//      the row-constant computation itself is then dead.
//   3. Z[:, i, :] for a constant one-hot i: ReduceSum(Mul(Z, onehot), [1]) → Gather(Z, i,
//      axis 1), exact (the other terms are 0·Z = 0).

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, inferTypes, normAxis } from "../ir/infer.ts";
import { ELEMENTWISE_OPS } from "../ir/ops.ts";
import { sameType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { evaluateRows } from "./rowwise.ts";
import { scalarOf } from "./mixture.ts";
import { type Pass, bump } from "./pass.ts";


/** A leading symbolic batch dim. */
function batchLeading(v: Value): boolean {
  return v.type.shape.length >= 1 && typeof v.type.shape[0] === "string";
}

/** The one-row value of `n`'s single output, if `n` is row-constant given `known`; else null. */
function evaluateRowConstant(n: Node, known: Map<Value, Tensor>): Tensor | null {
  // seed: an integer [batch, …] value times 0
  if (n.op === "Mul" && n.outputs.length === 1 && batchLeading(n.outputs[0]!) && !n.inputs.some((v) => known.has(v))) {
    const rest = n.outputs[0]!.type.shape.slice(1);
    if (!rest.every((d) => typeof d === "number")) return null;
    const shape = [1, ...(rest as number[])];
    const [x, c] = scalarOf(n.inputs[1]!) === 0 ? n.inputs : [n.inputs[1]!, n.inputs[0]!];
    if (scalarOf(c!) !== 0 || (x!.type.dtype !== "int64" && x!.type.dtype !== "int32") || !batchLeading(x!)) return null;
    const size = shape.reduce((a, b) => a * b, 1);
    return { dtype: x!.type.dtype, shape, data: x!.type.dtype === "int64" ? new BigInt64Array(size) : new Int32Array(size) };
  }
  return evaluateRows(n, (v) => known.get(v), 1, { gather: true });
}

interface GateSplit {
  concat: Node;
  matmul: Node;
  add: Node;
}

/** Concat(parts, axis 1) [batch, F] read only by MatMul(·, W [F, N]) whose only reader is Add(·, b [N]). */
function matchGateSplit(graph: Graph, concat: Node): GateSplit | null {
  const out = concat.outputs[0]!;
  if (concat.op !== "Concat" || out.type.shape.length !== 2 || normAxis(attrInt(concat.attrs, "axis"), 2) !== 1) return null;
  if (out.users.size !== 1 || graph.isGraphOutput(out)) return null;
  const matmul = [...out.users][0]!;
  const W = matmul.inputs[1]!;
  if (matmul.op !== "MatMul" || matmul.inputs[0] !== out || !W.isConstant || W.type.shape.length !== 2 || W.type.dtype !== "float32") return null;
  const mm = matmul.outputs[0]!;
  if (mm.users.size !== 1 || graph.isGraphOutput(mm)) return null;
  const add = [...mm.users][0]!;
  const bIdx = add.inputs[0] === mm ? 1 : 0;
  const b = add.inputs[bIdx]!;
  const N = W.type.shape[1] as number;
  if (add.op !== "Add" || !b.isConstant || b.type.dtype !== "float32" || b.type.shape.length !== 1 || b.type.shape[0] !== N) return null;
  return { concat, matmul, add };
}

/**
 * MatMul(Concat(parts), W) + b with the row-constant parts moved into the bias:
 * b' = fround(b + Σ_parts emb · W[rows of the part]) in float64.
 */
function splitGate(graph: Graph, m: GateSplit, known: Map<Value, Tensor>): boolean {
  const parts = m.concat.inputs;
  if (!parts.some((p) => known.has(p)) || parts.every((p) => known.has(p))) return false;
  const W = m.matmul.inputs[1]!;
  const [F, N] = W.type.shape as [number, number];
  const w = W.data!.data as Float32Array;
  const addIn = m.add.inputs[0] === m.matmul.outputs[0] ? 1 : 0;
  const b = m.add.inputs[addIn]!.data!.data as Float32Array;
  const bias = Float64Array.from(b);
  const keptRows: number[] = [];
  const kept: Value[] = [];
  let row = 0;
  for (const p of parts) {
    const d = p.type.shape[1];
    if (typeof d !== "number") return false;
    const r = known.get(p);
    if (r) {
      const x = r.data as Float32Array;
      for (let j = 0; j < d; j++) for (let k = 0; k < N; k++) bias[k]! += x[j]! * w[(row + j) * N + k]!;
    } else {
      kept.push(p);
      for (let j = 0; j < d; j++) keptRows.push(row + j);
    }
    row += d;
  }
  if (row !== F) return false;
  const Wk = new Float32Array(keptRows.length * N);
  keptRows.forEach((r, i) => Wk.set(w.subarray(r * N, (r + 1) * N), i * N));
  const scope = m.matmul.scope;
  const input =
    kept.length === 1 ? kept[0]! : graph.op("Concat", kept, { axis: 1 }, { scope: m.concat.scope, names: [m.concat.outputs[0]!.name] });
  const Wc = graph.addConstant(`${W.name}.per_row`, { dtype: "float32", shape: [keptRows.length, N], data: Wk });
  const bc = graph.addConstant(`${m.add.inputs[addIn]!.name}.with_constant_inputs`, { dtype: "float32", shape: [N], data: Float32Array.from(bias) });
  const mm = graph.op("MatMul", [input, Wc], {}, { scope, names: [m.matmul.outputs[0]!.name] });
  const sum = graph.op("Add", [mm, bc], {}, { scope: m.add.scope, names: [m.add.outputs[0]!.name] });
  graph.replaceAllUsesWith(m.add.outputs[0]!, sum);
  return true;
}

/** A constant [1, …, G, …, 1] with one 1 at position i on axis `axis` and 0 elsewhere: i, else null. */
function oneHotConstant(c: Value, axis: number, rank: number): number | null {
  if (!c.isConstant || c.type.dtype !== "float32" || c.type.shape.length !== rank) return null;
  if (c.type.shape.some((d, k) => k !== axis && d !== 1)) return null;
  const x = c.data!.data as Float32Array;
  let at = -1;
  for (let g = 0; g < x.length; g++) {
    if (x[g] === 1 && at < 0) at = g;
    else if (x[g] !== 0) return null;
  }
  return at;
}

/** ReduceSum(Mul(Z, onehot), [a], keepdims 0) with a constant one-hot along a → Gather(Z, i, axis a). */
function pickRow(graph: Graph, sum: Node): boolean {
  if (sum.op !== "ReduceSum" || attrInt(sum.attrs, "keepdims", 1) !== 0) return false;
  const mul = sum.inputs[0]!.producer;
  const rank = sum.inputs[0]!.type.shape.length;
  const axes = attrInts(sum.attrs, "axes");
  if (!mul || mul.op !== "Mul" || axes.length !== 1 || sum.inputs[0]!.users.size !== 1) return false;
  const axis = normAxis(axes[0]!, rank);
  for (const k of [1, 0]) {
    const Z = mul.inputs[1 - k]!;
    const i = oneHotConstant(mul.inputs[k]!, axis, rank);
    if (i === null || i < 0 || Z.type.shape.length !== rank || !sameType(Z.type, sum.inputs[0]!.type)) continue;
    const idx = graph.addConstant(`${sum.scope}.row_${i}`, { dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(i)) });
    const picked = graph.op("Gather", [Z, idx], { axis }, { scope: sum.scope, names: [sum.outputs[0]!.name] });
    graph.replaceAllUsesWith(sum.outputs[0]!, picked);
    return true;
  }
  return false;
}

export const rowConstants: Pass = {
  id: "row-constants",
  summary: "fold values that are equal on every row (the task index, embedding and one-hot) into constants",
  run(graph: Graph, ctx) {
    const known = new Map<Value, Tensor>();
    for (const n of graph.nodes) {
      const r = evaluateRowConstant(n, known);
      if (r) known.set(n.outputs[0]!, r);
    }
    let changed = false;
    const constantOf = new Map<Value, Value>();
    const asConstant = (v: Value) => {
      let c = constantOf.get(v);
      if (!c) constantOf.set(v, (c = graph.addConstant(`${v.name}.row`, known.get(v)!)));
      return c;
    };
    for (const n of [...graph.nodes]) {
      if (n.outputs.length === 1 && known.has(n.outputs[0]!)) continue; // part of the row-constant computation
      if (n.op === "Concat") {
        const m = matchGateSplit(graph, n);
        if (m && splitGate(graph, m, known)) {
          bump(ctx, "gate-inputs-folded");
          changed = true;
        }
        continue;
      }
      if (!ELEMENTWISE_OPS.has(n.op)) continue;
      n.inputs.forEach((v, i) => {
        if (!known.has(v)) return;
        const types = n.inputs.map((x, j) => (j === i ? { dtype: x.type.dtype, shape: known.get(v)!.shape } : x.type));
        const out = inferTypes(n.op, types, n.attrs, () => n.scope);
        if (!out.every((t, k) => sameType(t, n.outputs[k]!.type))) return; // the row constant carried the batch dim
        graph.setNodeInput(n, i, asConstant(v));
        bump(ctx, "operands-folded");
        changed = true;
      });
    }
    for (const n of [...graph.nodes]) {
      if (pickRow(graph, n)) {
        bump(ctx, "rows-picked");
        changed = true;
      }
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};
