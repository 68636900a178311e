// Batch-norm folding: inference batch norm is an affine map per channel, so it folds into
// the weight and bias of the linear before it (experts, gates, towers), removing 4 nodes.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

/** The lowered batch norm: Sub(y, μ) → Div(·, std) → Mul(·, γ) → Add(·, β), constants on the right. */
interface BatchNormChain {
  sub: Node;
  add: Node;
  mean: Value;
  std: Value;
  gamma: Value;
  beta: Value;
}

const BN_OPS = ["Sub", "Div", "Mul", "Add"] as const;

/** The BN chain starting at `sub`, or null when `sub` does not start one. */
function matchBatchNorm(graph: Graph, sub: Node): BatchNormChain | null {
  const operands: Value[] = [];
  let n = sub;
  for (let i = 0; i < BN_OPS.length; i++) {
    if (n.op !== BN_OPS[i] || n.inputs.length !== 2 || !n.inputs[1]!.isConstant || n.inputs[0]!.isConstant) return null;
    operands.push(n.inputs[1]!);
    if (i === BN_OPS.length - 1) break;
    const out = n.outputs[0]!;
    if (out.users.size !== 1 || graph.isGraphOutput(out)) return null;
    const next = [...out.users][0]!;
    if (next.inputs[0] !== out) return null;
    n = next;
  }
  const [mean, std, gamma, beta] = operands as [Value, Value, Value, Value];
  return { sub, add: n, mean, std, gamma, beta };
}

/** The linear a BN reads: MatMul(x, W const [in, out]) and an optional Add(·, b const); or why it is not one. */
type LinearMatch = { ok: true; matmul: Node; bias: Node | null; biasIndex: number } | { ok: false; reason: string };

function matchLinear(graph: Graph, y: Value): LinearMatch {
  const single = (v: Value) => v.users.size === 1 && !graph.isGraphOutput(v);
  if (!single(y)) return { ok: false, reason: "linear-output-shared" };
  let p = y.producer;
  let bias: Node | null = null;
  let biasIndex = -1;
  if (p && p.op === "Add") {
    const i = p.inputs.findIndex((v) => v.isConstant);
    const mm = p.inputs[1 - i];
    if (i < 0 || !mm || mm.isConstant || mm.producer?.op !== "MatMul") return { ok: false, reason: "no-linear-before" };
    if (!single(mm)) return { ok: false, reason: "linear-output-shared" };
    bias = p;
    biasIndex = i;
    p = mm.producer;
  }
  if (!p || p.op !== "MatMul") return { ok: false, reason: "no-linear-before" };
  const W = p.inputs[1]!;
  if (!W.isConstant || W.type.dtype !== "float32" || W.type.shape.length !== 2) return { ok: false, reason: "weight-not-constant" };
  return { ok: true, matmul: p, bias, biasIndex };
}

/** A per-channel constant as `width` float64 values (scalars broadcast), or null if it is not one. */
function channels(c: Value, width: number): Float64Array | null {
  if (c.type.dtype !== "float32") return null;
  const s = c.data!.shape;
  const src = c.data!.data as Float32Array;
  if (s.length > 2 || s.slice(0, -1).some((d) => d !== 1)) return null;
  if (src.length !== 1 && src.length !== width) return null;
  return Float64Array.from({ length: width }, (_, i) => src[src.length === 1 ? 0 : i]!);
}

/**
 * Folds `y = BN(x·W [+ b])` into `y = x·W' + b'`:
 *
 *   before:  %m = MatMul(%x, %W)          after:  %m = MatMul(%x, %W')
 *            %l = Add(%m, %b)                     %l = Add(%m, %b')
 *            %c = Sub(%l, %μ)
 *            %n = Div(%c, %std)
 *            %s = Mul(%n, %γ)
 *            %y = Add(%s, %β)
 *
 * with a = γ / std, W'[:, o] = W[:, o]·a[o], b' = (b − μ)·a + β (b = 0 without a bias Add;
 * then the Add is new). The folded constants are computed in float64 from the float32
 * ones and rounded once. Linears whose weights several streams share (task layers) get
 * one folded copy, so the streams still share it. A BN that does not follow a foldable
 * linear is left as it is, and counted under `skipped:<reason>`.
 */
export const foldBatchNorm: Pass = {
  id: "fold-batch-norm",
  summary: "fold inference batch norm into the weight and bias of the linear before it",
  run(graph: Graph, ctx: PassContext) {
    let changed = false;
    const folded = new Map<string, { W: Value; b: Value }>();
    for (const sub of [...graph.nodes]) {
      if (sub.op !== "Sub") continue;
      const bn = matchBatchNorm(graph, sub);
      if (!bn) continue;
      const lin = matchLinear(graph, sub.inputs[0]!);
      if (!lin.ok) {
        bump(ctx, `skipped:${lin.reason}`);
        continue;
      }
      const W = lin.matmul.inputs[1]!;
      const [inDim, outDim] = W.type.shape as [number, number];
      const b = lin.bias ? lin.bias.inputs[lin.biasIndex]! : null;
      const vecs = [bn.mean, bn.std, bn.gamma, bn.beta, ...(b ? [b] : [])].map((c) => channels(c, outDim));
      if (vecs.some((v) => v === null)) {
        bump(ctx, "skipped:not-per-channel");
        continue;
      }
      const [mean, std, gamma, beta, bias] = vecs as Float64Array[];
      const key = [W, b, bn.mean, bn.std, bn.gamma, bn.beta].map((v) => v?.id ?? "-").join(",");
      let consts = folded.get(key);
      if (!consts) {
        const a = gamma!.map((g, o) => g / std![o]!);
        const Wd = W.data!.data as Float32Array;
        const Wf = new Float32Array(inDim * outDim);
        for (let i = 0; i < inDim; i++) for (let o = 0; o < outDim; o++) Wf[i * outDim + o] = Wd[i * outDim + o]! * a[o]!;
        const bf = new Float32Array(outDim);
        for (let o = 0; o < outDim; o++) bf[o] = ((bias ? bias[o]! : 0) - mean![o]!) * a[o]! + beta![o]!;
        const base = bn.mean.name.replace(/\.running_mean$/, "");
        consts = {
          W: graph.addConstant(`${base}.folded.weight.T`, tensor([inDim, outDim], Wf)),
          b: graph.addConstant(`${base}.folded.bias`, tensor([outDim], bf)),
        };
        folded.set(key, consts);
      }
      graph.setNodeInput(lin.matmul, 1, consts.W);
      let y: Value;
      if (lin.bias) {
        graph.setNodeInput(lin.bias, lin.biasIndex, consts.b);
        y = lin.bias.outputs[0]!;
      } else {
        const m = lin.matmul.outputs[0]!;
        y = graph.op("Add", [m, consts.b], {}, { scope: lin.matmul.scope, names: [`${m.name}.biased`] });
      }
      graph.replaceAllUsesWith(bn.add.outputs[0]!, y);
      bump(ctx, "folded");
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};

function tensor(shape: number[], data: Float32Array): Tensor {
  return { dtype: "float32", shape, data };
}
