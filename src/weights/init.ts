// Seeded random weights for any model, scaled so that its outputs are sensitive to
// inputs, scenarios and tasks: parity tests on flat softmaxes or saturated sigmoids prove little.

import { constants as bufferConstants } from "node:buffer";
import { invariant, userError } from "../core/diagnostics.ts";
import { Rng } from "../core/random.ts";
import { type Tensor, numel } from "../core/tensor.ts";
import type { Activation, ExpertLayerSpec, ModelSpec } from "../dsl/spec.ts";
import { type TensorSlot, type Weights, canonicalLayout, layoutSize } from "./layout.ts";

/**
 * Standard deviation, across experts, that gate logits aim for: wide enough that
 * softmaxes are peaked and different gates prefer different experts, not so wide
 * that every selection is one-hot.
 */
export const GATE_LOGIT_STD = 2.5;

/**
 * Base norm of a tower's output weight vector, before the depth gains below. Across
 * rows, std(w·u) = sqrt(wᵀ Cov(u) w) depends on how the upstream layers correlate, so
 * no data-free choice hits a spread exactly; towerOutNorm scales this for depth, and
 * calibrateTowers makes the spread exact given an evaluator.
 */
export const TOWER_OUT_NORM = 2.1;

/**
 * Growth of the tower output norm per mixture layer that mixes up to `m` experts per
 * row: 1 + 0.4·(m − 1)/(m + 1). At He scale the mean square of relu activations is kept
 * but their variance across rows shrinks with depth (more of it becomes a mean all rows
 * share); averaging experts shrinks it further, the more so the more are mixed. From
 * 1 for one expert to about 1.3 for all of 6–8 (fitted on one-level models).
 */
export function mixtureGain(m: number): number {
  return 1 + (0.4 * (m - 1)) / (m + 1);
}

/**
 * Growth of the tower output norm per hidden tower layer, by its activation, for the
 * same reason; measured likewise. Linear layers keep the variance; sigmoid, at gain 1,
 * keeps about a twenty-fifth of it (slope 1/4 at 0).
 */
export const TOWER_LAYER_GAIN: Readonly<Record<Activation, number>> = {
  relu: 1.35,
  leaky_relu: 1.35,
  gelu: 1.35,
  tanh: 1.15,
  none: 1,
  sigmoid: 5,
};

/** The most experts a layer's policy mixes for one row. */
export function mixedExperts(layer: ExpertLayerSpec): number {
  const sel = layer.select;
  switch (sel.kind) {
    case "all":
      return layer.experts;
    case "topK":
      return Math.min(sel.k, layer.experts);
    case "aesm":
      return Math.min(sel.specific + sel.shared, layer.experts);
    case "fixed": {
      let most = new Set(sel.shared).size;
      for (const experts of Object.values(sel.specific)) most = Math.max(most, new Set([...experts, ...sel.shared]).size);
      return Math.max(1, most);
    }
  }
}

/**
 * The output norm for `task`'s tower. Measured with the reference evaluator on parity
 * inputs over one-level models (1–4 stacked layers; all, topK and aesm policies; with
 * and without batch norm; 12 seeds each), this puts the median tower logit std between
 * about 1.7 and 3 (the most for deep batch-norm stacks), the least of any near 0.9.
 */
export function towerOutNorm(spec: ModelSpec, task: string): number {
  const t = spec.tasks.find((x) => x.name === task);
  invariant(t !== undefined, () => `towerOutNorm: no task ${task}`);
  let norm = TOWER_OUT_NORM * TOWER_LAYER_GAIN[t.tower.act] ** t.tower.units.length;
  for (const lvl of spec.scenarios) norm *= mixtureGain(mixedExperts(lvl)) ** lvl.layers;
  if (spec.taskLayers) norm *= mixtureGain(mixedExperts(spec.taskLayers)) ** spec.taskLayers.layers;
  return norm;
}

/** Standard deviation, across rows, that calibrateTowers gives tower (sigmoid) logits. */
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
/** Largest float32 data a checkpoint aesm writes can hold: the file is one buffer, read back as one (4 GiB), less room for the header. */
export const MAX_CHECKPOINT_BYTES = bufferConstants.MAX_LENGTH - 2 ** 26;

/** AESM4007 when the model's weights would not fit one checkpoint (or it declares too many tensors), before anything is allocated. */
export function checkCheckpointSize(spec: ModelSpec, file?: string): void {
  const { parameters } = layoutSize(spec, file);
  if (parameters * 4 > MAX_CHECKPOINT_BYTES)
    throw userError(
      "AESM4007",
      "",
      `the model has ${parameters.toLocaleString("en-US")} parameters (${((parameters * 4) / 2 ** 30).toFixed(1)} GiB as float32); aesm writes and reads checkpoints of at most ${(MAX_CHECKPOINT_BYTES / 2 ** 30).toFixed(1)} GiB`,
      file,
    );
}

export function initWeights(spec: ModelSpec, seed: number): Weights {
  invariant(Number.isSafeInteger(seed), () => `initWeights: seed must be an integer, got ${seed}`);
  checkCheckpointSize(spec);
  const ctx: InitContext = {
    acts: mlpActivations(spec),
    towerNorms: new Map(spec.tasks.map((t) => [`towers.${t.name}.out.weight`, towerOutNorm(spec, t.name)])),
  };
  const weights: Weights = new Map();
  for (const slot of canonicalLayout(spec)) {
    const rng = new Rng(hashSeed(seed, slot.name));
    weights.set(slot.name, drawSlot(slot, rng, ctx));
  }
  return weights;
}

interface InitContext {
  /** Activation after each MLP or gate linear, by owning prefix (see mlpActivations). */
  acts: Map<string, Activation>;
  /** towerOutNorm by the name of each tower's output weight. */
  towerNorms: Map<string, number>;
}

function drawSlot(slot: TensorSlot, rng: Rng, ctx: InitContext): Tensor {
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
      const act = ctx.acts.get(mlpPrefixOf(slot.name));
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
      // Zero-sum, so that the mean that relu-family features share cancels instead of
      // shifting every row's logit the same way (outputs piled up near 0 or 1); then a
      // fixed norm, so the spread does not also depend on the luck of ‖w‖.
      fill(() => rng.normal());
      if (data.length > 1) {
        const mean = data.reduce((a, b) => a + b, 0) / data.length;
        for (let i = 0; i < data.length; i++) data[i] = data[i]! - mean;
      }
      let sq = 0;
      for (const v of data) sq += v * v;
      const norm = ctx.towerNorms.get(slot.name);
      invariant(norm !== undefined, () => `initWeights: no tower owns ${slot.name}`);
      const scale = sq > 0 ? norm / Math.sqrt(sq) : 0;
      for (let i = 0; i < data.length; i++) data[i] = data[i]! * scale;
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

/**
 * Rescale each tower's output projection so that, over the evaluated rows, its logits
 * have standard deviation `target` and a mean equal to the tower's (small) bias.
 * `outputs` holds each task's probabilities (the model's outputs, MODEL.md §8) as an
 * evaluator computed them from `weights`. Exact in one step: a logit is
 * `w·u + b`, linear in the output projection, and nothing reads it but the sigmoid.
 * Tasks whose outputs are constant or saturated are left as they are.
 */
export function calibrateTowers(
  spec: ModelSpec,
  weights: Weights,
  outputs: Record<string, ArrayLike<number>>,
  target = TOWER_LOGIT_STD,
): Weights {
  const out: Weights = new Map(weights);
  for (const task of spec.tasks) {
    const probs = Object.prototype.hasOwnProperty.call(outputs, task.name) ? outputs[task.name] : undefined;
    invariant(probs !== undefined, () => `calibrateTowers: no outputs for task ${task.name}`);
    const wName = `towers.${task.name}.out.weight`;
    const bName = `towers.${task.name}.out.bias`;
    const w = weights.get(wName);
    const b = weights.get(bName);
    invariant(w !== undefined && b !== undefined, () => `calibrateTowers: weights lack ${wName} or ${bName}`);
    const bias = b.data[0] as number;
    // Row parts of the logits, w·u = logit(p) − b, where p is not saturated.
    const rows: number[] = [];
    for (let i = 0; i < probs.length; i++) {
      const l = Math.log(probs[i]! / (1 - probs[i]!)) - bias;
      if (Number.isFinite(l)) rows.push(l);
    }
    if (rows.length < 2) continue;
    const mean = rows.reduce((a, v) => a + v, 0) / rows.length;
    const std = Math.sqrt(rows.reduce((a, v) => a + (v - mean) ** 2, 0) / rows.length);
    if (!(std > 1e-12)) continue;
    const a = target / std;
    out.set(wName, { dtype: "float32", shape: [...w.shape], data: Float32Array.from(w.data as Float32Array, (v) => v * a) });
    out.set(bName, { dtype: "float32", shape: [...b.shape], data: Float32Array.of(bias - a * mean) });
  }
  return out;
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

