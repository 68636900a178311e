// The closed op vocabulary of the IR. Every switch over OpKind ends in assertNever,
// and Record<OpKind, …> tables (shape inference, interpreter kernels, ONNX emission)
// make adding an op fail the build wherever it is not handled.

export const OP_KINDS = [
  // elementwise binary, numpy broadcasting
  "Add",
  "Sub",
  "Mul",
  "Div",
  "Max",
  "Min",
  "Clip", // (x, min, max): min(max(x, min), max), the bounds scalars of x's dtype
  // comparisons and logic (bool results)
  "Less",
  "Greater",
  "GreaterOrEqual",
  "Equal",
  "And",
  "Or",
  "Not",
  "Where",
  // elementwise unary
  "Identity",
  "Neg",
  "Abs",
  "Exp",
  "Log",
  "Sqrt",
  "Relu",
  "LeakyRelu", // {alpha}
  "Tanh",
  "Sigmoid",
  "Erf",
  "Gelu", // exact (erf) form; the ONNX emitter decomposes it below opset 20
  "Cast", // {to}
  // linear algebra
  "MatMul", // numpy matmul, batched with broadcasting
  "Gemm", // {transA, transB, alpha, beta}: 2-D A·B + C
  // normalisation and reductions
  "Softmax", // {axis}
  "LogSoftmax", // {axis}
  "ReduceSum", // {axes, keepdims}
  "ReduceMax",
  "ReduceMin",
  "ReduceMean",
  "ReduceLogSumExp",
  "ArgMax", // {axis, keepdims, select_last_index}: int64 index of the largest value (the first of equal ones by default)
  "ArgMin", // the same, smallest
  // shape and indexing
  "Concat", // {axis}
  "Gather", // {axis}
  "GatherElements", // {axis}
  "Unsqueeze", // {axes}
  "Squeeze", // {axes}
  "Reshape", // {shape}: ints, 0 = copy the input dim, -1 = infer
  "Transpose", // {perm}
  "Split", // {axis, split}: one output per size in `split`, consecutive parts along `axis`
  "Slice", // {starts, ends, axes}
  "TopK", // {k, axis, largest}: outputs (values, int64 indices); ties keep the lower index first
  "OneHot", // {depth, off?, on?}: int64 indices → float32 on a new last axis: `on` (default 1) at the index, `off` (default 0) elsewhere
  // data-dependent indexing (sparse expert dispatch)
  "NonZero", // {dim}: int64 [rank, dim] coordinates of the non-zero elements; `dim` names the data-dependent count
  "ScatterND", // {reduction?: "none" | "add"} (data, int64 indices [..., k], updates): data with slices replaced or added to; index tuples must not repeat
] as const;

export type OpKind = (typeof OP_KINDS)[number];

export function isOpKind(s: string): s is OpKind {
  return (OP_KINDS as readonly string[]).includes(s);
}

/** Attribute values: ints, floats, int lists, strings. */
export type AttrValue = number | number[] | string;
export type Attrs = Record<string, AttrValue>;

/**
 * Ops applied element by element with numpy broadcasting (Clip included: its bounds are
 * scalars): an extra leading axis, or a value that is the same on every row, passes through
 * them unchanged. Passes that move axes or values through ops use this list.
 */
export const ELEMENTWISE_OPS: ReadonlySet<OpKind> = new Set<OpKind>([
  "Add", "Sub", "Mul", "Div", "Max", "Min", "Clip",
  "Less", "Greater", "GreaterOrEqual", "Equal", "And", "Or", "Not", "Where",
  "Identity", "Neg", "Abs", "Exp", "Log", "Sqrt", "Relu", "LeakyRelu", "Tanh", "Sigmoid", "Erf", "Gelu", "Cast",
]);
