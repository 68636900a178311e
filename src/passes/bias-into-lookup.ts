// A constant bias added after a MatMul whose input carries a lookup row (an embedding Gather,
// e.g. the scenario indicator) moves into the MatMul: the lookup table gets a column of ones,
// every MatMul reading it gets a weight row there — the bias where the Add goes, zeros
// elsewhere.
//
//   before                                                  after
//     %e  = Gather(%T [S, d], %s)                              %e' = Gather([%T | 1] [S, d + 1], %s)
//     %c  = Concat(%a, %e)                                     %c' = Concat(%a, %e')
//     %y  = Add(MatMul(%c, %W [.., F, N]), %b [.., 1, N])      %y = MatMul(%c', [%W; %b] [.., F + 1, N])
//     %z  = MatMul(%c, %V)                                     %z = MatMul(%c', [%V; 0])
//
// onnxruntime fuses a bias only into 2-D Gemms; the stacked task layers' gate MatMuls are
// batched, so their bias is a separate Add. The bias now enters the dot product as 1·b (float32
// reassociation); the zero rows add exact zeros.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, normAxis } from "../ir/infer.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, bump } from "./pass.ts";

interface Reader {
  /** MatMul(v, W) with v holding the lookup's columns from `offset`. */
  mm: Node;
  offset: number;
  /** The Add of a constant bias in the MatMul's sum, if any. */
  bias: { add: Node; b: Value; other: Value } | null;
}

/** Follow single-reader Adds of non-constant terms up from a MatMul to an Add of a constant [N] or [.., 1, N]. */
function biasAbove(g: Graph, mm: Node): Reader["bias"] {
  let v = mm.outputs[0]!;
  for (;;) {
    if (v.users.size !== 1 || g.isGraphOutput(v)) return null;
    const a = [...v.users][0]!;
    if (a.op !== "Add") return null;
    const other = a.inputs[0] === v ? a.inputs[1]! : a.inputs[0]!;
    if (other.isConstant) {
      // b is [N], or [L…, 1, N] with L… the weight's leading (stream) dims: one bias row per weight block
      const W = mm.inputs[1]!.type.shape as number[];
      const lead = W.slice(0, -2);
      const s = other.type.shape as number[];
      const N = W.at(-1);
      const ok =
        other.type.dtype === "float32" &&
        s.at(-1) === N &&
        (s.length === 1 || (s.length === lead.length + 2 && s[s.length - 2] === 1 && lead.every((d, i) => s[i] === d)));
      return ok ? { add: a, b: other, other: v } : null;
    }
    v = a.outputs[0]!;
  }
}

/** The values holding the Gather's block (through Concats on the last axis) and the MatMuls reading them. */
function readersOf(g: Graph, gather: Node): { concats: Node[]; readers: Reader[] } | null {
  const concats: Node[] = [];
  const readers: Reader[] = [];
  const visit = (v: Value, offset: number): boolean => {
    if (g.isGraphOutput(v)) return false;
    for (const u of v.users) {
      if (u.op === "Concat" && u.outputs[0]!.type.shape.length === 2 && normAxis(attrInt(u.attrs, "axis"), 2) === 1) {
        let at = 0;
        for (const x of u.inputs) {
          if (x === v) break;
          const w = x.type.shape[1];
          if (typeof w !== "number") return false;
          at += w;
        }
        if (u.inputs.filter((x) => x === v).length !== 1) return false;
        concats.push(u);
        if (!visit(u.outputs[0]!, at + offset)) return false;
      } else if (u.op === "MatMul" && u.inputs[0] === v && u.inputs[1] !== v && u.inputs[1]!.isConstant && u.inputs[1]!.type.dtype === "float32" && u.inputs[1]!.type.shape.length >= 2) {
        readers.push({ mm: u, offset, bias: null });
      } else return false;
    }
    return true;
  };
  return visit(gather.outputs[0]!, 0) ? { concats, readers } : null;
}

/** W [.., F, N] with one row inserted at `row`: per leading index, `fill(lead)` (N values). */
function insertRow(W: Tensor, row: number, fill: (lead: number) => Float32Array | null): Tensor {
  const shape = W.shape as number[];
  const r = shape.length;
  const [F, N] = [shape[r - 2]!, shape[r - 1]!];
  const lead = shape.slice(0, r - 2).reduce((a, b) => a * b, 1);
  const src = W.data as Float32Array;
  const data = new Float32Array(lead * (F + 1) * N);
  for (let l = 0; l < lead; l++) {
    const base = l * (F + 1) * N;
    data.set(src.subarray(l * F * N, l * F * N + row * N), base);
    const f = fill(l);
    if (f) data.set(f, base + row * N);
    data.set(src.subarray(l * F * N + row * N, (l + 1) * F * N), base + (row + 1) * N);
  }
  return { dtype: "float32", shape: [...shape.slice(0, r - 2), F + 1, N], data };
}

export const biasIntoLookup: Pass = {
  id: "bias-into-lookup",
  summary: "move a constant bias after a MatMul into it, through a column of ones added to an embedding table its input carries",
  run(graph: Graph, ctx) {
    let changed = false;
    for (const gather of [...graph.nodes]) {
      if (gather.op !== "Gather" || !graph.nodes.includes(gather) || attrInt(gather.attrs, "axis", 0) !== 0) continue;
      const table = gather.inputs[0]!;
      if (!table.isConstant || table.type.dtype !== "float32" || table.type.shape.length !== 2 || gather.outputs[0]!.type.shape.length !== 2) continue;
      const reach = readersOf(graph, gather);
      if (!reach || reach.readers.length === 0) continue;
      // the biases to move: Adds that are not a 2-D MatMul's own (onnxruntime fuses those), each taken once
      const taken = new Set<Node>();
      for (const r of reach.readers) {
        const b = biasAbove(graph, r.mm);
        const plain2d = r.mm.outputs[0]!.type.shape.length === 2 && b?.add.inputs.includes(r.mm.outputs[0]!) && b.b.type.shape.length === 1;
        if (b && !plain2d && !taken.has(b.add)) {
          r.bias = b;
          taken.add(b.add);
        }
      }
      if (taken.size === 0) continue;
      const [S, d] = table.type.shape as [number, number];
      const t = table.data!.data as Float32Array;
      const wider = new Float32Array(S * (d + 1));
      for (let i = 0; i < S; i++) {
        wider.set(t.subarray(i * d, (i + 1) * d), i * (d + 1));
        wider[i * (d + 1) + d] = 1;
      }
      const scope = gather.scope;
      const T2 = graph.addConstant(`${table.name}.with_ones`, { dtype: "float32", shape: [S, d + 1], data: wider });
      const e2 = graph.op("Gather", [T2, gather.inputs[1]!], { axis: 0 }, { scope, names: [`${gather.outputs[0]!.name}.with_ones`] });
      // rebuild the Concats in order (each reads the new values of its inputs)
      const renamed = new Map<Value, Value>([[gather.outputs[0]!, e2]]);
      for (const c of reach.concats) {
        const nc = graph.op("Concat", c.inputs.map((x) => renamed.get(x) ?? x), { ...c.attrs }, { scope: c.scope, names: [`${c.outputs[0]!.name}.with_ones`] });
        renamed.set(c.outputs[0]!, nc);
      }
      for (const r of reach.readers) {
        const W = r.mm.inputs[1]!;
        const row = r.offset + d;
        const N = W.type.shape.at(-1) as number;
        const b = r.bias?.b.data!.data as Float32Array | undefined;
        const perBlock = r.bias !== null && r.bias.b.type.shape.length > 1;
        const W2 = graph.addConstant(`${W.name}.with_bias_row`, insertRow(W.data!, row, (l) => (b ? b.subarray((perBlock ? l : 0) * N, ((perBlock ? l : 0) + 1) * N) : null)));
        const out = graph.op("MatMul", [renamed.get(r.mm.inputs[0]!)!, W2], {}, { scope: r.mm.scope, names: [`${r.mm.outputs[0]!.name}.with_bias`] });
        const old = r.mm.outputs[0]!;
        graph.replaceAllUsesWith(old, out);
        if (r.bias) graph.replaceAllUsesWith(r.bias.add.outputs[0]!, r.bias.other === old ? out : r.bias.other);
      }
      eliminateDeadCode(graph);
      bump(ctx, "biases-moved", taken.size);
      changed = true;
    }
    if (changed) graph.toposort();
    return { graph, changed };
  },
};
