// The task streams' per-task subgraphs run once, stacked on a new leading axis. After
// fuse-experts the T task streams of a task layer still select their experts one by one
// (T gate MatMuls, T selections), and each task's tower runs alone, although the T copies
// differ only in constants (gate bias, task one-hot, tower weights) and in which stream they
// read. This pass finds such copies and replaces them by one copy over [T, …] tensors:
//
//   anchors   the mixture weights fuse-experts stacks, Concat(Unsqueeze(w_t, [0, …]), axis 0),
//             and the task outputs (graph outputs of identical structure, one per stream)
//   lockstep  from the T anchor values back: nodes with the same op and attributes, one per
//             stream, become one node; inputs that are the same value for every stream stay
//             shared (broadcast), constants that differ are stacked into one [T, …] constant,
//             Gather(M, t, axis 0) for t = 0…T−1 reads M itself, anything else is stacked at
//             the boundary (Unsqueeze, Concat)
//   rules     elementwise ops broadcast; axes of reductions, softmax, TopK, Concat, Gather,
//             Unsqueeze, Squeeze shift by one; Reshape keeps the new axis (shape 0); MatMul
//             batches; Gather of a different constant row per stream becomes a product with a
//             stacked one-hot summed over that axis (exact); MatMul(Concat(h_t, c), W) with a
//             shared c splits into MatMul(h, W_h) + MatMul(c, W_c) (float32 reassociation)
//
// Values of the old copies read elsewhere (the `select:` outputs, a task's output) become
// Gather(stacked, t, axis 0). Everything else is exact: the same operations on the same
// numbers, only more of them per kernel.

import type { Tensor } from "../core/tensor.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { type Attrs, ELEMENTWISE_OPS, type OpKind } from "../ir/ops.ts";
import { sameType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

const ELEMENTWISE = ELEMENTWISE_OPS;

/** A stream-stacked value [T, …original shape], or a value every stream shares. */
type Stacked = { kind: "stacked"; value: Value } | { kind: "shared"; value: Value } | { kind: "constants"; values: Value[] };

function sameAttrs(a: Attrs, b: Attrs): boolean {
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && JSON.stringify(a[k]) === JSON.stringify(b[k]));
}

function scalarInt(v: Value): number | null {
  if (!v.isConstant || v.type.shape.length !== 0) return null;
  const d = v.data!.data;
  return d instanceof BigInt64Array ? Number(d[0]) : d instanceof Int32Array ? d[0]! : null;
}

class Stacker {
  private readonly memo = new Map<string, Stacked>();
  /** Old per-stream node → its stream and the stacked replacement's outputs (for values read outside). */
  readonly replaced = new Map<Node, { stream: number; outs: Value[] }>();
  constructor(
    readonly g: Graph,
    readonly T: number,
    public scope: string,
    readonly ctx: PassContext,
  ) {}

  op(op: OpKind, inputs: Value[], attrs: Attrs, name: string, outputs = 1): Value[] {
    return this.g.addNode(op, inputs, attrs, { scope: this.scope, names: Array.from({ length: outputs }, (_, i) => (i ? `${name}_${i}` : name)) });
  }

  /** [T, 1…, shape] constant from T constants, padded with ones to `rank` dims after T. */
  private stackConstants(values: Value[], rank: number): Value {
    const shape = values[0]!.type.shape as number[];
    const padded = [...new Array<number>(rank - shape.length).fill(1), ...shape];
    const n = shape.reduce((a, b) => a * b, 1);
    const dtype = values[0]!.type.dtype;
    const make = (len: number) =>
      dtype === "float32"
        ? new Float32Array(len)
        : dtype === "int64"
          ? new BigInt64Array(len)
          : dtype === "int32"
            ? new Int32Array(len)
            : dtype === "bool"
              ? new Uint8Array(len)
              : null;
    const data = make(n * this.T);
    if (data === null) throw new StackFailure(`constants of dtype ${dtype}`);
    values.forEach((v, t) => (data as Float32Array).set(v.data!.data as Float32Array, t * n));
    const t: Tensor = { dtype, shape: [this.T, ...padded], data } as Tensor;
    return this.g.addConstant(`${values[0]!.name}.streams`, t);
  }

  /** The stacked form of `s` for an operand of an op whose original output rank is `rank`. */
  private operand(s: Stacked, rank: number): Value {
    if (s.kind === "shared") return s.value;
    if (s.kind === "constants") return this.stackConstants(s.values, rank);
    const r = s.value.type.shape.length - 1;
    if (r >= rank) return s.value;
    const axes = Array.from({ length: rank - r }, (_, i) => i + 1);
    return this.op("Unsqueeze", [s.value], { axes }, `${s.value.name}.aligned`)[0]!;
  }

  /** The stacked value of `vs` (one per stream), or null. */
  stack(vs: Value[]): Stacked {
    const key = vs.map((v) => v.id).join(",");
    const hit = this.memo.get(key);
    if (hit) return hit;
    const s = this.compute(vs);
    this.memo.set(key, s);
    return s;
  }

  private compute(vs: Value[]): Stacked {
    if (vs.every((v) => v === vs[0])) return { kind: "shared", value: vs[0]! };
    if (vs.some((v) => !sameType(v.type, vs[0]!.type))) return this.boundary(vs);
    if (vs.every((v) => v.isConstant)) return { kind: "constants", values: vs };
    // Gather(M, t, axis 0), t = 0…T−1: the streams of a stacked M
    const unstacked = vs.map((v) => (v.producer?.op === "Gather" && attrInt(v.producer.attrs, "axis", 0) === 0 ? v.producer : null));
    if (unstacked.every((n, t) => n && n.inputs[0] === unstacked[0]!.inputs[0] && scalarInt(n.inputs[1]!) === t) && unstacked[0]!.inputs[0]!.type.shape[0] === this.T)
      return { kind: "stacked", value: unstacked[0]!.inputs[0]! };
    const ns = vs.map((v) => v.producer);
    const n0 = ns[0];
    if (!n0 || new Set(ns).size !== ns.length || ns.some((n) => !n || n.op !== n0.op || !sameAttrs(n.attrs, n0.attrs) || n.inputs.length !== n0.inputs.length))
      return this.boundary(vs);
    const out = n0.outputs.indexOf(vs[0]!);
    if (ns.some((n, t) => n!.outputs.indexOf(vs[t]!) !== out)) return this.boundary(vs);
    // the same op on the same inputs: one value for every stream
    if (n0.inputs.every((v, j) => ns.every((n) => n!.inputs[j] === v))) return { kind: "shared", value: vs[0]! };
    const built = this.node(ns as Node[]);
    if (!built) return this.boundary(vs);
    return { kind: "stacked", value: built[out]! };
  }

  /** T values stacked as they are: Unsqueeze each on a new axis 0, Concat. */
  private boundary(vs: Value[]): Stacked {
    if (vs.some((v) => !sameType(v.type, vs[0]!.type))) throw new StackFailure("streams of different types");
    const parts = vs.map((v) => this.op("Unsqueeze", [v], { axes: [0] }, `${v.name}.stream`)[0]!);
    bump(this.ctx, "boundary-stacks");
    return { kind: "stacked", value: this.op("Concat", parts, { axis: 0 }, `${vs[0]!.name}.streams`)[0]! };
  }

  /** One node for the T copies `ns`; returns its outputs, or null when no rule applies. */
  private node(ns: Node[]): Value[] | null {
    const n0 = ns[0]!;
    const existing = this.replaced.get(n0);
    if (existing) return existing.outs;
    const outRank = n0.outputs[0]!.type.shape.length;
    const name = commonName(ns.map((n) => n.outputs[0]!.name));
    const scope = commonName(ns.map((n) => n.scope));
    // stacking the inputs builds their nodes (in their own scopes) first; this node's come after
    const inputs = () => {
      const ins = n0.inputs.map((_, j) => this.stack(ns.map((n) => n.inputs[j]!)));
      this.scope = scope;
      return ins;
    };
    const shift = (a: number, rank: number) => normAxis(a, rank) + 1;
    let outs: Value[] | null = null;
    if (ELEMENTWISE.has(n0.op)) {
      const ins = inputs();
      if (ins.every((s) => s.kind !== "stacked" && s.kind !== "constants")) return null;
      outs = this.op(n0.op, ins.map((s) => this.operand(s, outRank)), { ...n0.attrs }, name);
    } else if (n0.op === "MatMul") {
      const concat = this.splitConcatMatMul(ns);
      if (concat) outs = [concat];
      else {
        const ins = inputs();
        if (ins.some((s, j) => s.kind === "shared" && n0.inputs[j]!.type.shape.length !== 2)) return null;
        if (ins.some((s, j) => s.kind !== "shared" && n0.inputs[j]!.type.shape.length < 2)) return null;
        const [a, b] = ins.map((s, j) => (s.kind === "constants" ? this.stackConstants(s.values, n0.inputs[j]!.type.shape.length) : s.value));
        outs = this.op("MatMul", [a!, b!], {}, name);
      }
    } else if (n0.op === "Gather") {
      const rank = n0.inputs[0]!.type.shape.length;
      const axis = normAxis(attrInt(n0.attrs, "axis", 0), rank);
      const rows = ns.map((n) => scalarInt(n.inputs[1]!));
      const data = this.stack(ns.map((n) => n.inputs[0]!));
      this.scope = scope;
      if (data.kind === "constants") return null;
      if (rows.every((r) => r !== null) && rows.some((r) => r !== rows[0])) {
        // a different constant row per stream: Σ over the axis of data · onehot(row_t)
        const G = n0.inputs[0]!.type.shape[axis] as number;
        const shape = [this.T, ...new Array<number>(rank).fill(1)];
        shape[axis + 1] = G;
        const hot = new Float32Array(this.T * G);
        rows.forEach((r, t) => (hot[t * G + (r! < 0 ? r! + G : r!)] = 1));
        if (n0.outputs[0]!.type.dtype !== "float32") return null;
        const c = this.g.addConstant(`${n0.outputs[0]!.name}.rows`, { dtype: "float32", shape, data: hot });
        const picked = this.op("Mul", [data.value, c], {}, `${name}.picked`)[0]!;
        outs = this.op("ReduceSum", [picked], { axes: [axis + 1], keepdims: 0 }, name);
      } else {
        const idx = this.stack(ns.map((n) => n.inputs[1]!));
        this.scope = scope;
        if (idx.kind !== "shared") return null;
        outs = this.op("Gather", [data.value, idx.value], { axis: axis + 1 }, name);
      }
    } else {
      const ins = inputs();
      if (ins.some((s) => s.kind !== "stacked")) return null; // shape ops do not broadcast
      const x = ins.map((s) => (s as { value: Value }).value);
      const inRank = n0.inputs[0]!.type.shape.length;
      const attrs: Attrs = { ...n0.attrs };
      switch (n0.op) {
        case "Softmax":
        case "LogSoftmax":
          attrs["axis"] = shift(attrInt(n0.attrs, "axis", -1), inRank);
          break;
        case "TopK":
          attrs["axis"] = shift(attrInt(n0.attrs, "axis", -1), inRank);
          break;
        case "Concat":
          attrs["axis"] = shift(attrInt(n0.attrs, "axis"), inRank);
          break;
        case "ReduceSum":
        case "ReduceMax":
        case "ReduceMin":
        case "ReduceMean":
        case "ReduceLogSumExp":
          attrs["axes"] = attrInts(n0.attrs, "axes").map((a) => shift(a, inRank));
          break;
        case "Squeeze":
          attrs["axes"] = attrInts(n0.attrs, "axes").map((a) => shift(a, inRank));
          break;
        case "Unsqueeze":
          attrs["axes"] = attrInts(n0.attrs, "axes").map((a) => shift(a, outRank));
          break;
        case "OneHot":
          break;
        case "Reshape":
          attrs["shape"] = [0, ...attrInts(n0.attrs, "shape")];
          break;
        case "Transpose":
          attrs["perm"] = [0, ...attrInts(n0.attrs, "perm").map((p) => p + 1)];
          break;
        default:
          return null;
      }
      outs = this.op(n0.op, x, attrs, name, n0.outputs.length);
    }
    ns.forEach((n, stream) => this.replaced.set(n, { stream, outs: outs! }));
    return outs;
  }

  /**
   * MatMul(Concat(h_t, c…, axis −1), W) with W and some Concat parts shared by every stream:
   * Σ_parts MatMul(part, W[rows of part]), stacked parts batched, shared ones computed once.
   */
  private splitConcatMatMul(ns: Node[]): Value | null {
    const n0 = ns[0]!;
    const W = n0.inputs[1]!;
    if (!ns.every((n) => n.inputs[1] === W) || !W.isConstant || W.type.shape.length !== 2 || W.type.dtype !== "float32") return null;
    const concats = ns.map((n) => n.inputs[0]!.producer);
    const c0 = concats[0];
    if (!c0 || c0.op !== "Concat" || concats.some((c) => !c || c.op !== "Concat" || c.inputs.length !== c0.inputs.length)) return null;
    const rank = c0.outputs[0]!.type.shape.length;
    if (rank !== 2 || normAxis(attrInt(c0.attrs, "axis"), 2) !== 1 || concats.some((c) => normAxis(attrInt(c!.attrs, "axis"), 2) !== 1)) return null;
    const parts = c0.inputs.map((_, j) => this.stack(concats.map((c) => c!.inputs[j]!)));
    this.scope = commonName(ns.map((n) => n.scope));
    if (!parts.some((p) => p.kind === "shared") || parts.some((p) => p.kind === "constants")) return null;
    const [, N] = W.type.shape as [number, number];
    const w = W.data!.data as Float32Array;
    let row = 0;
    let sum: Value | null = null;
    c0.inputs.forEach((p, j) => {
      const d = p.type.shape[1] as number;
      const Wp = this.g.addConstant(`${W.name}.rows_${row}_${row + d}`, { dtype: "float32", shape: [d, N], data: w.slice(row * N, (row + d) * N) });
      const term = this.op("MatMul", [(parts[j] as { value: Value }).value, Wp], {}, `${n0.outputs[0]!.name}.part${j}.streams`)[0]!;
      sum = sum ? this.op("Add", [sum, term], {}, `${n0.outputs[0]!.name}.streams`)[0]! : term;
      row += d;
    });
    bump(this.ctx, "concat-matmuls-split");
    return sum;
  }
}

class StackFailure extends Error {}

/** The T per-stream values an anchor stacks, and how to write the stacked value back. */
interface Anchor {
  values: Value[];
  finish(stacked: Value, s: Stacker): void;
}

/** Concat(Unsqueeze(x_t, [0, …]) for t = 0…T−1, axis 0): fuse-experts' stacked mixture weights. */
function concatAnchor(g: Graph, n: Node): Anchor | null {
  if (n.op !== "Concat" || attrInt(n.attrs, "axis") !== 0 || n.inputs.length < 2) return null;
  const uns = n.inputs.map((v) => v.producer);
  if (uns.some((u) => !u || u.op !== "Unsqueeze" || !sameAttrs(u.attrs, uns[0]!.attrs))) return null;
  const axes = attrInts(uns[0]!.attrs, "axes");
  if (!axes.includes(0)) return null;
  return {
    values: uns.map((u) => u!.inputs[0]!),
    finish(stacked, s) {
      const rest = axes.filter((a) => a !== 0);
      const out = rest.length ? s.op("Unsqueeze", [stacked], { axes: rest }, `${n.outputs[0]!.name}.stacked`)[0]! : stacked;
      g.replaceAllUsesWith(n.outputs[0]!, out);
    },
  };
}

export const stackStreams: Pass = {
  id: "stack-streams",
  summary: "run the task streams' per-task copies (selection, gates, towers) once over a stacked leading axis",
  run(graph: Graph, ctx) {
    let changed = false;
    const anchors: Anchor[] = [];
    for (const n of graph.nodes) {
      const a = concatAnchor(graph, n);
      if (a) anchors.push(a);
    }
    // the task outputs: graph outputs read by no selection, one per stream
    const outs = graph.outputs.filter((o) => !o.name.startsWith("select:"));
    if (outs.length >= 2 && outs.every((o) => o.value.producer && sameType(o.value.type, outs[0]!.value.type)))
      anchors.push({
        values: outs.map((o) => o.value),
        finish(stacked, s) {
          outs.forEach((o, t) => {
            const idx = graph.addConstant(`${o.name}.stream`, { dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(t)) });
            const v = s.op("Gather", [stacked, idx], { axis: 0 }, `${o.name}.from_streams`)[0]!;
            graph.replaceAllUsesWith(o.value, v);
          });
        },
      });
    for (const a of anchors) {
      const T = a.values.length;
      // an earlier group may have stacked this one already (its values are dead copies now)
      if (a.values.some((v) => v.users.size === 0 && !graph.isGraphOutput(v))) continue;
      const scope = commonScope(a.values.map((v) => v.producer?.scope ?? ""));
      const s = new Stacker(graph, T, scope, ctx);
      const before = new Set(graph.nodes);
      let stacked: Stacked | null = null;
      try {
        stacked = s.stack(a.values);
      } catch (e) {
        if (!(e instanceof StackFailure)) throw e;
        bump(ctx, `skipped:${e.message}`);
      }
      if (!stacked || stacked.kind !== "stacked" || s.replaced.size === 0) {
        // nothing ran in lockstep: drop what was built, the copies stay
        graph.removeNodes(graph.nodes.filter((n) => !before.has(n)));
        continue;
      }
      // old copies read outside the stacked region (select: outputs) read their stream of the stack
      for (const [old, { stream, outs: mine }] of s.replaced)
        old.outputs.forEach((v, i) => {
          const external = [...v.users].some((u) => !s.replaced.has(u)) || graph.isGraphOutput(v);
          if (!external) return;
          const idx = graph.addConstant(`${v.name}.stream`, { dtype: "int64", shape: [], data: BigInt64Array.of(BigInt(stream)) });
          const picked = graph.op("Gather", [mine[i]!, idx], { axis: 0 }, { scope: old.scope, names: [`${v.name}.from_streams`] });
          graph.replaceAllUsesWith(v, picked);
        });
      a.finish(stacked.value, s);
      bump(ctx, "groups-stacked");
      bump(ctx, "copies-merged", s.replaced.size);
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      // outputs keep their names (no Identity alias in the ONNX) once their old producers are gone
      for (const o of graph.outputs)
        if (o.value.producer && o.value.name !== o.name && !graph.hasName(o.name)) graph.renameValue(o.value, o.name);
      graph.toposort();
    }
    return { graph, changed };
  },
};

/** The dotted name with the parts that differ between streams replaced by `streams` (`task_layers.0.ctr.select` → `task_layers.0.streams.select`). */
function commonName(names: string[]): string {
  const parts = names.map((n) => n.split("."));
  if (parts.some((p) => p.length !== parts[0]!.length)) return `${names[0]!}.streams`;
  let merged = false;
  const out = parts[0]!.map((p, i) => {
    if (parts.every((q) => q[i] === p)) return p;
    merged = true;
    return "streams";
  });
  return merged ? out.join(".") : `${names[0]!}.streams`;
}

function commonScope(scopes: string[]): string {
  const parts = scopes.map((s) => s.split("."));
  const out: string[] = [];
  for (let i = 0; ; i++) {
    const p = parts[0]?.[i];
    if (p === undefined || parts.some((q) => q[i] !== p)) break;
    out.push(p);
  }
  return out.join(".") || "streams";
}
