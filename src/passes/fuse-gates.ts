// Gate fusion: the G gates of a layer read the same input, so their logits come from one
// MatMul producing [B, G·E], reshaped to Z [B, G, E], instead of G MatMuls stacked.

import { invariant } from "../core/diagnostics.ts";
import type { Graph, Node, Value } from "../ir/graph.ts";
import { attrInt, attrInts, normAxis } from "../ir/infer.ts";
import { formatType, sameType } from "../ir/types.ts";
import { eliminateDeadCode } from "./dce.ts";
import { type Chain, buildFusedChains, commonScope, incompatibility, matchChain, weightPrefix } from "./fusion-chains.ts";
import { type Pass, type PassContext, bump } from "./pass.ts";

type Match<T> = { ok: true; value: T } | { ok: false; reason: string };

/** Z = Concat(Unsqueeze(z_0, [1]), …, Unsqueeze(z_{G−1}, [1]), axis=1) with z_g [B, E]: the logits z_g in order. */
function matchGateStack(graph: Graph, concat: Node): Match<Value[]> | null {
  const out = concat.outputs[0]!;
  if (out.type.shape.length !== 3 || normAxis(attrInt(concat.attrs, "axis"), 3) !== 1 || concat.inputs.length < 2) return null;
  const logits: Value[] = [];
  for (const v of concat.inputs) {
    const u = v.producer;
    if (!u || u.op !== "Unsqueeze") return null;
    const axes = attrInts(u.attrs, "axes");
    if (axes.length !== 1 || normAxis(axes[0]!, 3) !== 1) return null;
    logits.push(u.inputs[0]!);
  }
  // The per-gate values must die with the stack, or the gates would run twice.
  for (const v of concat.inputs) if (v.users.size !== 1 || graph.isGraphOutput(v)) return { ok: false, reason: "logits-escape" };
  for (const z of logits) if (z.users.size !== 1 || graph.isGraphOutput(z)) return { ok: false, reason: "logits-escape" };
  if (new Set(logits).size !== logits.length) return { ok: false, reason: "repeated-gate" };
  return { ok: true, value: logits };
}

/**
 * Fuses the gates of each layer and stream:
 *
 *   before (per gate g):                          after:
 *     %z_g = MatMul(%in, %W_g) + %b_g  [B, E]       %Z = Reshape(MatMul(%in, %W_cat) + %b_cat, [0, G, E])   [B, G, E]
 *     %Z   = Concat(Unsqueeze(%z_g, [1]) …, axis=1)
 *
 * Gates with hidden layers fuse the first hidden layer wide and later ones block-diagonal
 * or gate-batched (buildFusedChains); batch norm, folded or not, rides along as per-channel
 * constants. Task-layer gates are fused per task stream (each reads its own input), and
 * the streams share the fused weights. Gates that do not match structurally are left
 * alone and counted as `skipped:<reason>`.
 */
export const fuseGates: Pass = {
  id: "fuse-gates",
  summary: "compute a layer's gate logits Z [B, G, E] with one wide MatMul instead of one per gate",
  run(graph: Graph, ctx: PassContext) {
    let changed = false;
    const cache = new Map<string, Value>();
    for (const concat of [...graph.nodes]) {
      if (concat.op !== "Concat") continue;
      const stack = matchGateStack(graph, concat);
      if (!stack) continue;
      if (!stack.ok) {
        bump(ctx, `skipped:${stack.reason}`);
        continue;
      }
      const chains: Chain[] = [];
      let reason: string | null = null;
      for (const z of stack.value) {
        const c = matchChain(graph, z);
        if (!c.ok) {
          reason = c.reason;
          break;
        }
        chains.push(c.value);
      }
      reason ??= incompatibility(chains);
      if (reason) {
        bump(ctx, `skipped:${reason}`);
        continue;
      }
      const scope = gatesScope(chains);
      // streams that share the gates' weights (task layers) share the fused ones, named by the weights
      const constantName = weightPrefix(chains, "gates") ?? `${scope}.Z`;
      const Z = buildFusedChains(graph, chains[0]!.input, chains, { scope, name: `${scope}.Z`, constantName, cache });
      const old = concat.outputs[0]!;
      invariant(sameType(Z.type, old.type), () => `fuse-gates: ${scope} gives ${formatType(Z.type)}, the stack was ${formatType(old.type)}`);
      graph.replaceAllUsesWith(old, Z);
      bump(ctx, "layers-fused");
      bump(ctx, "gates-fused", chains.length);
      changed = true;
    }
    if (changed) {
      eliminateDeadCode(graph);
      graph.toposort();
    }
    return { graph, changed };
  },
};

/** `<path>.gates` from the gate nodes' scopes (`<path>.gates.<g>`). */
function gatesScope(chains: Chain[]): string {
  const common = commonScope(chains.flatMap((c) => c.nodes.map((n) => n.scope)));
  return common || "gates";
}
