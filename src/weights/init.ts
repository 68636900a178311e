// Seeded random weights for any model, scaled so that its outputs are sensitive to
// inputs, scenarios and tasks: parity tests on flat softmaxes or saturated sigmoids prove little.

import { invariant } from "../core/diagnostics.ts";
import { Rng } from "../core/random.ts";
import { type Tensor, numel } from "../core/tensor.ts";
import type { Activation, ModelSpec } from "../dsl/spec.ts";
import { type TensorSlot, type Weights, canonicalLayout } from "./layout.ts";

/**
 * Standard deviation, across experts, that gate logits aim for: wide enough that
 * softmaxes are peaked and different gates prefer different experts, not so wide
 * that every selection is one-hot.
 */
export const GATE_LOGIT_STD = 2.5;

/** Standard deviation, across rows, that tower (sigmoid) logits aim for: outputs spread over (0, 1). */
export const TOWER_LOGIT_STD = 2;

/** Range of the small, nonzero biases (so a dropped bias is noticed). */
const BIAS_RANGE = 0.1;

/**
 * Gain for a linear followed by `act` (PyTorch's calculate_gain; gelu as relu):
 * with weights N(0, gain²/fanIn) the mean square of activations stays near 1 layer to layer.
 */
export function activationGain(act: Activation): number {
  switch (act) {
    case "relu":
    case "gelu":
      return Math.SQRT2;
    case "leaky_relu":
      return Math.sqrt(2 / (1 + 0.01 ** 2));
    case "tanh":
      return 5 / 3;
    case "sigmoid":
    case "none":
      return 1;
  }
}

/**
 * Deterministic weights for `spec`: the same seed gives the same bytes. Each tensor
 * draws from its own generator, seeded from `seed` and its name, so adding a part to
 * a model leaves the other parts' weights unchanged.
 */
export function initWeights(spec: ModelSpec, seed: number): Weights {
  invariant(Number.isSafeInteger(seed), () => `initWeights: seed must be an integer, got ${seed}`);
  const acts = mlpActivations(spec);
  const weights: Weights = new Map();
  for (const slot of canonicalLayout(spec)) {
    const rng = new Rng(hashSeed(seed, slot.name));
    weights.set(slot.name, drawSlot(slot, rng, acts));
  }
  return weights;
}

function drawSlot(slot: TensorSlot, rng: Rng, acts: Map<string, Activation>): Tensor {
  const data = new Float32Array(numel(slot.shape));
  const fill = (draw: () => number) => {
    for (let i = 0; i < data.length; i++) data[i] = draw();
  };
  const fanIn = slot.fanIn ?? 1;
  switch (slot.role) {
    case "embedding":
      fill(() => rng.normal());
      break;
    case "linear.weight": {
      const act = acts.get(mlpPrefixOf(slot.name));
      invariant(act !== undefined, () => `initWeights: no MLP owns ${slot.name}`);
      const std = activationGain(act) / Math.sqrt(fanIn);
      fill(() => std * rng.normal());
      break;
    }
    case "gate.out.weight": {
      // Logit e is Σ_i W[e,i]·x_i, so across experts its std is std(W)·‖x‖, and ‖x‖² ≈ fanIn
      // for inputs with mean square near 1 (embeddings, and activations under the gains above).
      const std = GATE_LOGIT_STD / Math.sqrt(fanIn);
      fill(() => std * rng.normal());
      break;
    }
    case "tower.out.weight": {
      // Across rows, var(w·u) = Σ w_i² var(u_i) ≈ std(w)² · fanIn for unit-variance features.
      const std = TOWER_LOGIT_STD / Math.sqrt(fanIn);
      fill(() => std * rng.normal());
      break;
    }
    case "linear.bias":
    case "gate.out.bias":
    case "tower.out.bias":
    case "bn.bias":
    case "bn.running_mean":
      fill(() => rng.uniform(-BIAS_RANGE, BIAS_RANGE));
      break;
    case "bn.weight":
      fill(() => rng.uniform(0.8, 1.2));
      break;
    case "bn.running_var":
      fill(() => rng.uniform(0.5, 1.5));
      break;
  }
  return { dtype: "float32", shape: [...slot.shape], data };
}

/** `….layers.<j>.linear.{weight,bias}` → the MLP or gate prefix that owns it. */
function mlpPrefixOf(name: string): string {
  const m = /^(.*)\.layers\.\d+\.linear\.(weight|bias)$/.exec(name);
  return m ? m[1]! : "";
}

/**
 * The activation of every MLP and gate, keyed by the prefix its tensors carry in the
 * canonical layout. A lookup by whole prefix, not a parse of names, so that declared
 * names containing dots cannot confuse it.
 */
function mlpActivations(spec: ModelSpec): Map<string, Activation> {
  const acts = new Map<string, Activation>();
  for (const lvl of spec.scenarios)
    for (let i = 0; i < lvl.layers; i++) {
      const p = `scenario_layers.${lvl.name}.${i}`;
      for (let e = 0; e < lvl.experts; e++) acts.set(`${p}.experts.${e}`, lvl.expert.act);
      for (let g = 0; g < lvl.values.length; g++) acts.set(`${p}.gates.${g}`, lvl.gate.act);
    }
  const tl = spec.taskLayers;
  if (tl)
    for (let i = 0; i < tl.layers; i++) {
      for (let e = 0; e < tl.experts; e++) acts.set(`task_layers.${i}.experts.${e}`, tl.expert.act);
      for (let t = 0; t < spec.tasks.length; t++) acts.set(`task_layers.${i}.gates.${t}`, tl.gate.act);
    }
  for (const t of spec.tasks) acts.set(`towers.${t.name}`, t.tower.act);
  return acts;
}

/** FNV-1a over `seed:name`, a 32-bit seed for that tensor's generator. */
function hashSeed(seed: number, name: string): number {
  const s = `${seed}:${name}`;
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}
