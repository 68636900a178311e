// Gates (MODEL.md §3, spec GateSpec): one subgraph per gate producing its expert logits,
// and the stacking of a layer's gates into Z [batch, G, E].

import type { GateSpec } from "../dsl/spec.ts";
import type { Value } from "../ir/graph.ts";
import type { Lowering } from "./context.ts";
import { lowerActivation, lowerBatchNorm, lowerLinear } from "./mlp.ts";

/**
 * Gate g's logits z_g [batch, E] from its input (`[h; c_l]`, or `[h_t; c_{L−1}; task_emb(t)]`):
 *   hidden j: act(Linear(x))                 (always with bias: `<prefix>.layers.<j>.linear`)
 *   out:      Linear(→E)  [+ BN]             (`<prefix>.out`, bias when gate.bias; `<prefix>.bn`)
 * The output is named `<scope>.logits`.
 */
export function lowerGate(cx: Lowering, x: Value, gate: GateSpec, prefix: string, scope: string): Value {
  let h = x;
  gate.units.forEach((_, j) => {
    const at = `${scope}.layers.${j}`;
    h = lowerLinear(cx, h, `${prefix}.layers.${j}.linear`, true, scope, `${at}.linear`);
    h = lowerActivation(cx, h, gate.act, scope, at);
  });
  const name = `${scope}.logits`;
  if (!gate.batchNorm) return lowerLinear(cx, h, `${prefix}.out`, gate.bias, scope, name);
  const z = lowerLinear(cx, h, `${prefix}.out`, gate.bias, scope, `${scope}.out`);
  return lowerBatchNorm(cx, z, `${prefix}.bn`, scope, name);
}

/**
 * Z [batch, G, E] from the gates' logits, gate g at Z[:, g, :]:
 *   Unsqueeze(z_g, axes=[1]) per gate → Concat(axis=1)
 */
export function stackGateLogits(cx: Lowering, logits: Value[], scope: string): Value {
  const parts = logits.map((z, g) => cx.op("Unsqueeze", [z], { axes: [1] }, scope, `${scope}.z${g}`));
  if (parts.length === 1) return parts[0]!;
  return cx.op("Concat", parts, { axis: 1 }, scope, `${scope}.Z`);
}
