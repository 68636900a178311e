// Shape and dtype inference, one rule per op. The graph calls it when a node is
// added; the verifier calls it again to check recorded types.

import { InvariantError, assertNever } from "../core/diagnostics.ts";
import type { DType } from "../core/tensor.ts";
import type { AttrValue, Attrs, OpKind } from "./ops.ts";
import { type Dim, type Shape, type ValueType, formatType, isFloat } from "./types.ts";

type Rule = (ins: ValueType[], attrs: Attrs, fail: (msg: string) => never) => ValueType[];

export function attrInt(attrs: Attrs, name: string, fallback?: number): number {
  const v: AttrValue | undefined = attrs[name] ?? fallback;
  if (typeof v !== "number") throw new InvariantError(`attribute ${name} must be a number, got ${JSON.stringify(v)}`);
  return v;
}

export function attrInts(attrs: Attrs, name: string, fallback?: number[]): number[] {
  const v: AttrValue | undefined = attrs[name] ?? fallback;
  if (!Array.isArray(v)) throw new InvariantError(`attribute ${name} must be a list, got ${JSON.stringify(v)}`);
  return v;
}

export function attrString(attrs: Attrs, name: string, fallback?: string): string {
  const v: AttrValue | undefined = attrs[name] ?? fallback;
  if (typeof v !== "string") throw new InvariantError(`attribute ${name} must be a string, got ${JSON.stringify(v)}`);
  return v;
}

/** Normalise a possibly negative axis against a rank. */
export function normAxis(axis: number, rank: number): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new InvariantError(`axis ${axis} out of range for rank ${rank}`);
  return a;
}

/** Numpy broadcasting of shapes; symbolic dims broadcast only with themselves or 1. */
export function broadcastShapes(shapes: Shape[], fail: (msg: string) => never): Shape {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d === 1) d = x;
      else if (d !== x) fail(`cannot broadcast ${shapes.map((s) => `[${s.join(",")}]`).join(" with ")}`);
    }
    out.push(d);
  }
  return out;
}

function same(ins: ValueType[], fail: (msg: string) => never, what = "operands"): DType {
  const dt = ins[0]!.dtype;
  for (const t of ins) if (t.dtype !== dt) fail(`${what} must share a dtype, got ${ins.map(formatType).join(", ")}`);
  return dt;
}

const arity =
  (n: number, rule: Rule): Rule =>
  (ins, attrs, fail) => {
    if (ins.length !== n) fail(`expects ${n} inputs, got ${ins.length}`);
    return rule(ins, attrs, fail);
  };

const binary: Rule = arity(2, (ins, _a, fail) => [
  { dtype: same(ins, fail), shape: broadcastShapes([ins[0]!.shape, ins[1]!.shape], fail) },
]);
const compare: Rule = arity(2, (ins, _a, fail) => {
  same(ins, fail);
  return [{ dtype: "bool", shape: broadcastShapes([ins[0]!.shape, ins[1]!.shape], fail) }];
});
const logic: Rule = arity(2, (ins, _a, fail) => {
  if (ins.some((t) => t.dtype !== "bool")) fail("operands must be bool");
  return [{ dtype: "bool", shape: broadcastShapes([ins[0]!.shape, ins[1]!.shape], fail) }];
});
const unaryFloat: Rule = arity(1, (ins, _a, fail) => {
  if (!isFloat(ins[0]!.dtype)) fail(`operand must be floating point, got ${formatType(ins[0]!)}`);
  return [{ ...ins[0]!, shape: [...ins[0]!.shape] }];
});
const unaryAny: Rule = arity(1, (ins) => [{ ...ins[0]!, shape: [...ins[0]!.shape] }]);

function reduce(keepType: boolean): Rule {
  return arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    if (!isFloat(t.dtype) && keepType) fail("operand must be floating point");
    const axes = attrInts(attrs, "axes").map((a) => normAxis(a, t.shape.length));
    const keep = attrInt(attrs, "keepdims", 1) === 1;
    const shape: Dim[] = [];
    t.shape.forEach((d, i) => {
      if (axes.includes(i)) {
        if (keep) shape.push(1);
      } else shape.push(d);
    });
    return [{ dtype: t.dtype, shape }];
  });
}

/** ArgMax/ArgMin: the axis removed (keepdims 0) or kept as 1 (default), int64. */
const argIndex: Rule = arity(1, (ins, attrs, fail) => {
  const t = ins[0]!;
  if (t.dtype === "bool") fail("operand must be numeric");
  const axis = normAxis(attrInt(attrs, "axis", 0), t.shape.length);
  const keep = attrInt(attrs, "keepdims", 1) === 1;
  const shape: Dim[] = [];
  t.shape.forEach((d, i) => {
    if (i !== axis) shape.push(d);
    else if (keep) shape.push(1);
  });
  return [{ dtype: "int64", shape }];
});

function matmulShape(a: Shape, b: Shape, fail: (msg: string) => never): Shape {
  if (a.length < 1 || b.length < 1) fail("MatMul operands must have rank ≥ 1");
  const a2 = a.length === 1 ? [1, a[0]!] : a;
  const b2 = b.length === 1 ? [b[0]!, 1] : b;
  const k1 = a2[a2.length - 1]!;
  const k2 = b2[b2.length - 2]!;
  if (k1 !== k2) fail(`inner dims differ: [${a.join(",")}] × [${b.join(",")}]`);
  const batch = broadcastShapes([a2.slice(0, -2), b2.slice(0, -2)], fail);
  const out = [...batch, a2[a2.length - 2]!, b2[b2.length - 1]!];
  if (a.length === 1) out.splice(out.length - 2, 1);
  if (b.length === 1) out.splice(out.length - 1, 1);
  return out;
}

const RULES: Record<OpKind, Rule> = {
  Add: binary,
  Sub: binary,
  Mul: binary,
  Div: binary,
  Max: binary,
  Min: binary,
  Clip: arity(3, (ins, _a, fail) => {
    const dtype = same(ins, fail);
    if (ins[1]!.shape.length !== 0 || ins[2]!.shape.length !== 0) fail("min and max must be scalars");
    return [{ dtype, shape: [...ins[0]!.shape] }];
  }),
  Less: compare,
  Greater: compare,
  GreaterOrEqual: compare,
  Equal: compare,
  And: logic,
  Or: logic,
  Not: arity(1, (ins, _a, fail) => {
    if (ins[0]!.dtype !== "bool") fail("operand must be bool");
    return [{ dtype: "bool", shape: [...ins[0]!.shape] }];
  }),
  Where: arity(3, (ins, _a, fail) => {
    if (ins[0]!.dtype !== "bool") fail("condition must be bool");
    const dt = same(ins.slice(1), fail, "branches");
    return [{ dtype: dt, shape: broadcastShapes(ins.map((t) => t.shape), fail) }];
  }),
  Identity: unaryAny,
  Neg: unaryAny,
  Abs: unaryAny,
  Exp: unaryFloat,
  Log: unaryFloat,
  Sqrt: unaryFloat,
  Relu: unaryFloat,
  LeakyRelu: unaryFloat,
  Tanh: unaryFloat,
  Sigmoid: unaryFloat,
  Erf: unaryFloat,
  Gelu: unaryFloat,
  Cast: arity(1, (ins, attrs) => [{ dtype: attrString(attrs, "to") as DType, shape: [...ins[0]!.shape] }]),
  MatMul: arity(2, (ins, _a, fail) => [{ dtype: same(ins, fail), shape: matmulShape(ins[0]!.shape, ins[1]!.shape, fail) }]),
  Gemm: (ins, attrs, fail) => {
    if (ins.length !== 2 && ins.length !== 3) fail(`expects 2 or 3 inputs, got ${ins.length}`);
    const dt = same(ins, fail);
    const [a, b] = ins as [ValueType, ValueType];
    if (a.shape.length !== 2 || b.shape.length !== 2) fail("operands must be 2-D");
    const [m, ka] = attrInt(attrs, "transA", 0) ? [a.shape[1]!, a.shape[0]!] : [a.shape[0]!, a.shape[1]!];
    const [kb, n] = attrInt(attrs, "transB", 0) ? [b.shape[1]!, b.shape[0]!] : [b.shape[0]!, b.shape[1]!];
    if (ka !== kb) fail(`inner dims differ: ${ka} vs ${kb}`);
    if (ins[2]) broadcastShapes([[m, n], ins[2].shape], fail);
    return [{ dtype: dt, shape: [m, n] }];
  },
  Softmax: unaryFloat,
  LogSoftmax: unaryFloat,
  ReduceSum: reduce(true),
  ReduceMax: reduce(true),
  ReduceMin: reduce(true),
  ReduceMean: reduce(true),
  ReduceLogSumExp: reduce(true),
  Concat: (ins, attrs, fail) => {
    if (ins.length < 1) fail("needs at least one input");
    const dt = same(ins, fail);
    const rank = ins[0]!.shape.length;
    const axis = normAxis(attrInt(attrs, "axis"), rank);
    let total: Dim = 0;
    const shape = [...ins[0]!.shape];
    for (const t of ins) {
      if (t.shape.length !== rank) fail("inputs must share a rank");
      t.shape.forEach((d, i) => {
        if (i !== axis && d !== shape[i]) fail(`dim ${i} differs: ${ins.map(formatType).join(", ")}`);
      });
      const d = t.shape[axis]!;
      if (typeof d !== "number" || typeof total !== "number") fail("cannot concatenate along a symbolic dim");
      total = (total as number) + (d as number);
    }
    shape[axis] = total;
    return [{ dtype: dt, shape }];
  },
  Gather: arity(2, (ins, attrs, fail) => {
    const [data, idx] = ins as [ValueType, ValueType];
    if (idx.dtype !== "int64" && idx.dtype !== "int32") fail("indices must be integers");
    const axis = normAxis(attrInt(attrs, "axis", 0), data.shape.length);
    return [{ dtype: data.dtype, shape: [...data.shape.slice(0, axis), ...idx.shape, ...data.shape.slice(axis + 1)] }];
  }),
  GatherElements: arity(2, (ins, attrs, fail) => {
    const [data, idx] = ins as [ValueType, ValueType];
    if (idx.dtype !== "int64") fail("indices must be int64");
    if (idx.shape.length !== data.shape.length) fail("indices must have the data's rank");
    normAxis(attrInt(attrs, "axis", 0), data.shape.length);
    return [{ dtype: data.dtype, shape: [...idx.shape] }];
  }),
  Unsqueeze: arity(1, (ins, attrs) => {
    const t = ins[0]!;
    const rank = t.shape.length + attrInts(attrs, "axes").length;
    const axes = attrInts(attrs, "axes").map((a) => normAxis(a, rank));
    const shape: Dim[] = [];
    let j = 0;
    for (let i = 0; i < rank; i++) shape.push(axes.includes(i) ? 1 : t.shape[j++]!);
    return [{ dtype: t.dtype, shape }];
  }),
  Squeeze: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const axes = attrInts(attrs, "axes").map((a) => normAxis(a, t.shape.length));
    for (const a of axes) if (t.shape[a] !== 1) fail(`cannot squeeze dim ${a} of ${formatType(t)}`);
    return [{ dtype: t.dtype, shape: t.shape.filter((_, i) => !axes.includes(i)) }];
  }),
  Reshape: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const target = attrInts(attrs, "shape");
    const shape: Dim[] = target.map((d, i) => (d === 0 ? t.shape[i]! : d));
    const inferred = shape.indexOf(-1);
    // Only static element counts can be checked; a symbolic dim must be carried through by 0.
    const staticIn = t.shape.filter((d) => typeof d === "number") as number[];
    const symIn = t.shape.filter((d) => typeof d !== "number");
    const symOut = shape.filter((d) => typeof d !== "number");
    if (symIn.length !== symOut.length || symIn.some((s, i) => s !== symOut[i]))
      fail(`symbolic dims must be kept in place (use 0): [${t.shape.join(",")}] → [${target.join(",")}]`);
    const nIn = staticIn.reduce((a, b) => a * b, 1);
    const known = (shape.filter((d) => typeof d === "number" && d !== -1) as number[]).reduce((a, b) => a * b, 1);
    if (inferred >= 0) {
      if (shape.indexOf(-1, inferred + 1) >= 0) fail("at most one -1");
      if (nIn % known !== 0) fail(`cannot reshape [${t.shape.join(",")}] to [${target.join(",")}]`);
      shape[inferred] = nIn / known;
    } else if (known !== nIn) fail(`cannot reshape [${t.shape.join(",")}] to [${target.join(",")}]`);
    return [{ dtype: t.dtype, shape }];
  }),
  Split: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const axis = normAxis(attrInt(attrs, "axis", 0), t.shape.length);
    const sizes = attrInts(attrs, "split");
    if (sizes.length === 0 || sizes.some((s) => !Number.isInteger(s) || s < 0)) fail("split must list non-negative sizes");
    const d = t.shape[axis];
    if (typeof d !== "number" || sizes.reduce((a, b) => a + b, 0) !== d) fail(`split sizes [${sizes}] do not add up to dim ${String(d)}`);
    return sizes.map((s) => ({ dtype: t.dtype, shape: t.shape.map((x, i) => (i === axis ? s : x)) }));
  }),
  Transpose: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const perm = attrInts(attrs, "perm");
    if (perm.length !== t.shape.length || [...perm].sort().some((p, i) => p !== i)) fail(`bad perm [${perm}]`);
    return [{ dtype: t.dtype, shape: perm.map((p) => t.shape[p]!) }];
  }),
  Slice: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const starts = attrInts(attrs, "starts");
    const ends = attrInts(attrs, "ends");
    const axes = attrInts(attrs, "axes");
    const shape = [...t.shape];
    axes.forEach((a0, i) => {
      const a = normAxis(a0, t.shape.length);
      const d = t.shape[a]!;
      if (typeof d !== "number") fail("cannot slice a symbolic dim");
      const clamp = (x: number) => Math.min(Math.max(x < 0 ? x + (d as number) : x, 0), d as number);
      shape[a] = Math.max(0, clamp(ends[i]!) - clamp(starts[i]!));
    });
    return [{ dtype: t.dtype, shape }];
  }),
  ArgMax: argIndex,
  ArgMin: argIndex,
  TopK: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    const axis = normAxis(attrInt(attrs, "axis", -1), t.shape.length);
    const k = attrInt(attrs, "k");
    const d = t.shape[axis]!;
    if (typeof d === "number" && k > d) fail(`k = ${k} exceeds dim ${d}`);
    const shape = [...t.shape];
    shape[axis] = k;
    return [
      { dtype: t.dtype, shape },
      { dtype: "int64", shape: [...shape] },
    ];
  }),
  OneHot: arity(1, (ins, attrs, fail) => {
    const t = ins[0]!;
    if (t.dtype !== "int64") fail("indices must be int64");
    return [{ dtype: "float32", shape: [...t.shape, attrInt(attrs, "depth")] }];
  }),
  // The count of non-zeros is known only at run time: a symbol named by the node, so that
  // every NonZero has its own (the interpreter binds each symbol once per run).
  NonZero: arity(1, (ins, attrs, fail) => {
    const dim = attrString(attrs, "dim");
    if (dim === "") fail("dim must name a symbol");
    return [{ dtype: "int64", shape: [ins[0]!.shape.length, dim] }];
  }),
  ScatterND: arity(3, (ins, attrs, fail) => {
    const [data, idx, upd] = ins as [ValueType, ValueType, ValueType];
    const reduction = attrString(attrs, "reduction", "none");
    if (reduction !== "none" && reduction !== "add") fail(`reduction must be "none" or "add", got "${reduction}"`);
    if (idx.dtype !== "int64") fail("indices must be int64");
    if (upd.dtype !== data.dtype) fail("updates must have the data's dtype");
    const q = idx.shape.length;
    const k = idx.shape[q - 1];
    if (q < 1 || typeof k !== "number" || k > data.shape.length) fail("indices' last dim must be static and at most the data's rank");
    const want = [...idx.shape.slice(0, -1), ...data.shape.slice(k as number)];
    if (want.length !== upd.shape.length || want.some((d, i) => d !== upd.shape[i]))
      fail(`updates must be [${want.join(",")}]`);
    return [{ dtype: data.dtype, shape: [...data.shape] }];
  }),
};

/** Output types of `op` applied to inputs of the given types; throws InvariantError naming the op. */
export function inferTypes(op: OpKind, ins: ValueType[], attrs: Attrs, where: () => string = () => ""): ValueType[] {
  const rule = RULES[op];
  if (!rule) assertNever(op as never, "op");
  const fail = (msg: string): never => {
    const w = where();
    throw new InvariantError(`${op}${w ? ` (${w})` : ""}: ${msg}; inputs ${ins.map(formatType).join(", ")}`);
  };
  return rule(ins, attrs, fail);
}
