// Work of a compiled graph in MatMul FLOPs, and the dense-MatMul "limit" model: one MatMul node
// with the same FLOPs per row, the fastest way this machine could do that much arithmetic.

import { writeOnnx } from "../src/backends/onnx/index.ts";
import { Rng } from "../src/core/random.ts";
import { Graph } from "../src/ir/graph.ts";

const dim = (d: number | string, batch: number): number | null => (typeof d === "number" ? d : d === "batch" ? batch : null);

/**
 * FLOPs (2 per multiply-add) of the graph's MatMul and Gemm nodes at `batch` rows; null when a
 * MatMul has a data-dependent dim (sparse dispatch: the rows an expert sees depend on the data).
 * A MatMul by a constant weight counts its non-zero entries only: the zero blocks of a
 * block-diagonal weight and the zero rows a pass pads a weight with are no useful work.
 * Elementwise work is left out: at these widths it is a few percent of the MatMuls'.
 */
export function matmulFlops(g: Graph, batch: number): number | null {
  let total = 0;
  for (const n of g.nodes) {
    if (n.op !== "MatMul" && n.op !== "Gemm") continue;
    const a = n.inputs[0]!.type.shape.map((d) => dim(d, batch));
    const b = n.inputs[1]!.type.shape.map((d) => dim(d, batch));
    if (a.some((d) => d === null) || b.some((d) => d === null)) return null;
    const A = a as number[];
    const B = b as number[];
    if (n.op === "Gemm") {
      const [m, k] = n.attrs.transA ? [A[1]!, A[0]!] : [A[0]!, A[1]!];
      const nOut = n.attrs.transB ? B[0]! : B[1]!;
      total += 2 * m * k * nOut;
      continue;
    }
    // numpy matmul: a rank-1 side is a vector; leading dims broadcast
    const m = A.length >= 2 ? A[A.length - 2]! : 1;
    const k = A[A.length - 1]!;
    const nOut = B.length >= 2 ? B[B.length - 1]! : 1;
    const lead = Math.max(A.length, B.length) - 2;
    let stack = 1;
    let stackB = 1;
    for (let i = 0; i < lead; i++) {
      const da = A[A.length - 3 - i] ?? 1;
      const db = B[B.length - 3 - i] ?? 1;
      stack *= Math.max(da, db);
      stackB *= db;
    }
    const w = n.inputs[1]!;
    if (w.isConstant && w.type.dtype === "float32" && B.length >= 2) {
      // a constant weight: only its non-zero entries are work (block-diagonal layouts add exact zeros)
      let nonZero = 0;
      for (const x of w.data!.data as Float32Array) if (x !== 0) nonZero++;
      total += 2 * (stack / stackB) * m * nonZero;
    } else total += 2 * stack * m * k * nOut;
  }
  return total;
}

/**
 * Write `[batch, K] × [K, N]` as an ONNX model that does `flopsPerRow` FLOPs per row, K ≈ N (a
 * square weight: the best-shaped GEMM for that work; its K·N weights equal the model's count of
 * multiply-adds per row, so it also reads as many weight bytes as the dense model). Input `a`,
 * output `y`. Returns [K, N].
 */
export function writeLimitMatMul(path: string, flopsPerRow: number): [number, number] {
  const K = Math.max(16, Math.round(Math.sqrt(flopsPerRow / 2) / 16) * 16);
  const N = Math.max(1, Math.round(flopsPerRow / (2 * K)));
  const rng = new Rng(1);
  const w = new Float32Array(K * N);
  for (let i = 0; i < w.length; i++) w[i] = rng.normal() / 16;
  const g = new Graph("matmul_limit");
  const a = g.addInput("a", { dtype: "float32", shape: ["batch", K] });
  const W = g.addConstant("w", { dtype: "float32", shape: [K, N], data: w });
  g.setOutput("y", g.op("MatMul", [a, W], {}, { names: ["y"] }));
  writeOnnx(path, g, { opset: 17 });
  return [K, N];
}
