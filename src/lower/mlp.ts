// Building blocks of MODEL.md §2 as IR: Linear, inference batch norm, activations, and
// the MLPs of experts and towers made of them.

import { assertNever } from "../core/diagnostics.ts";
import type { Activation, MlpSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";

/** Slope of `leaky_relu` (MODEL.md §2). */
export const LEAKY_RELU_SLOPE = 0.01;

/**
 * Linear(x) = x·Wᵀ + b with W = `<prefix>.weight` `[out, in]`:
 *   %name.matmul = MatMul(x, %<prefix>.weight.T)   // [batch, out]
 *   %name        = Add(%name.matmul, %<prefix>.bias)
 * Without a bias the MatMul is the result.
 */
export function lowerLinear(cx: Lowering, x: Value, prefix: string, bias: boolean, scope: string, name: string): Value {
  const wt = cx.weightT(`${prefix}.weight`);
  if (!bias) return cx.op("MatMul", [x, wt], {}, scope, name);
  const xw = cx.op("MatMul", [x, wt], {}, scope, `${name}.matmul`);
  return cx.op("Add", [xw, cx.weight(`${prefix}.bias`)], {}, scope, name);
}

/**
 * Inference batch norm, literally: BN(y) = (y − μ) / sqrt(σ² + ε) · γ + β
 *   Sub(y, running_mean) → Div(·, <prefix>.std) → Mul(·, weight) → Add(·, bias)
 * `<prefix>.std` = sqrt(running_var + ε) is computed here in float64 and rounded once to
 * float32. Folding BN into the preceding linear is an optimisation pass, not lowering.
 */
export function lowerBatchNorm(cx: Lowering, y: Value, prefix: string, scope: string, name: string): Value {
  const eps = cx.spec.batchNorm.eps;
  const std = cx.constant(`${prefix}.std`, () => {
    const v = cx.tensor(`${prefix}.running_var`);
    const src = v.data as Float32Array;
    const out = new Float32Array(src.length);
    for (let i = 0; i < src.length; i++) out[i] = Math.sqrt(src[i]! + eps);
    return { dtype: "float32", shape: [...v.shape], data: out };
  });
  const centered = cx.op("Sub", [y, cx.weight(`${prefix}.running_mean`)], {}, scope, `${name}.centered`);
  const normed = cx.op("Div", [centered, std], {}, scope, `${name}.normed`);
  const scaled = cx.op("Mul", [normed, cx.weight(`${prefix}.weight`)], {}, scope, `${name}.scaled`);
  return cx.op("Add", [scaled, cx.weight(`${prefix}.bias`)], {}, scope, name);
}

/** One activation node (none for `none`), its output named `<name>.<act>`. */
export function lowerActivation(cx: Lowering, x: Value, act: Activation, scope: string, name: string): Value {
  switch (act) {
    case "none":
      return x;
    case "relu":
      return cx.op("Relu", [x], {}, scope, `${name}.relu`);
    case "tanh":
      return cx.op("Tanh", [x], {}, scope, `${name}.tanh`);
    case "sigmoid":
      return cx.op("Sigmoid", [x], {}, scope, `${name}.sigmoid`);
    case "gelu":
      return cx.op("Gelu", [x], {}, scope, `${name}.gelu`);
    case "leaky_relu":
      return cx.op("LeakyRelu", [x], { alpha: LEAKY_RELU_SLOPE }, scope, `${name}.leaky_relu`);
    default:
      return assertNever(act, "activation");
  }
}

/**
 * An MLP (experts, towers): per unit layer j, act(BN(Linear(x))) with weights under
 * `<prefix>.layers.<j>.linear` / `.bn`, nodes in `scope`, values named `<scope>.layers.<j>.…`.
 *   x → MatMul → [Add bias] → [Sub μ → Div std → Mul γ → Add β] → act → … → [batch, u_n]
 */
export function lowerMlp(cx: Lowering, x: Value, mlp: MlpSpec, prefix: string, scope: string): Value {
  let h = x;
  mlp.units.forEach((_, j) => {
    const at = `${scope}.layers.${j}`;
    h = lowerLinear(cx, h, `${prefix}.layers.${j}.linear`, mlp.bias, scope, `${at}.linear`);
    if (mlp.batchNorm) h = lowerBatchNorm(cx, h, `${prefix}.layers.${j}.bn`, scope, `${at}.bn`);
    h = lowerActivation(cx, h, mlp.act, scope, at);
  });
  return h;
}
