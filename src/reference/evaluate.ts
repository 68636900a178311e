// MODEL.md §1–§7 as a direct float64 program: the semantic oracle the parity harness
// compares ONNX against. Shares no code with lowering, passes or backends.

import type { Activation, GateSpec, MlpSpec, ModelSpec, SelectSpec } from "../dsl/spec.ts";
import type { Weights } from "../weights/layout.ts";
import type { InputBatch } from "../core/batch.ts";
import { type Diagnostic, AesmError, userError } from "../core/diagnostics.ts";
import { applyActivation, sigmoid } from "./numerics.ts";
import { type SelectionPolicy, SelectionScratch, resolvePolicy, selectRow } from "./select.ts";

export interface ReferenceOptions {
  /**
   * "float64" (default): every step in double precision.
   * "float32": the same program emulating float32 arithmetic, to judge how much of an
   * ONNX-vs-reference difference is float32 noise. Granularity: weights, inputs and
   * constants (ε, eps, 0.01, 1/G) are float32 values; every product, sum, difference and
   * quotient is rounded with Math.fround. Dot products are one sequential sum over the
   * inputs, rounding each product and each partial sum, then the bias; the mixture rounds
   * each w·y and each running sum; batch norm rounds sqrt(σ² + ε) (and σ² + ε), y − μ, the
   * division, the scale and the shift; softmax and the KL scores round each exp, log,
   * difference, sum and quotient. Each activation (tanh, sigmoid, gelu) is one elementwise
   * op: evaluated in double from its float32 input and rounded once.
   */
  precision?: "float64" | "float32";
}

export interface LayerTrace {
  /** "scenario_layers.page.0" or "task_layers.0.ctr" (selectionLayerPaths order). */
  path: string;
  experts: number;
  /** Mixing weights w [B, E] row-major (0 for unselected experts). */
  weights: Float64Array;
  /** [B, E]: 1 where the expert is in the selected set A. */
  selected: Uint8Array;
  /**
   * For policies with a ranking (aesm, topK): per row, the smallest gap between a selected
   * and an unselected expert's score at the selection boundary (|score_k − score_{k+1}| in
   * the sorted order, min over the specific and shared rankings); Infinity when there is no
   * boundary (all, fixed, or k = E). Tells near-ties from real disagreements.
   */
  margin: Float64Array;
}

export interface ReferenceResult {
  /** Per task name, p_t [B]. */
  outputs: Record<string, Float64Array>;
  layers: LayerTrace[];
}

/** Rows evaluated together: bounds memory (all experts run densely) and stays in cache. */
const CHUNK_ROWS = 1024;

// ---------------------------------------------------------------------------------------
// Parameters, resolved once from the canonical names of MODEL.md §6.

interface Linear {
  inW: number;
  outW: number;
  /** [out, in] row-major (PyTorch layout). */
  weight: Float64Array;
  bias: Float64Array | null;
}

/** Inference batch norm with sqrt(σ² + ε) precomputed per channel. */
interface BatchNorm {
  gamma: Float64Array;
  beta: Float64Array;
  mean: Float64Array;
  denom: Float64Array;
}

/** One `act(BN(Linear(x)))` unit layer (BN optional). */
interface UnitLayer {
  linear: Linear;
  bn: BatchNorm | null;
  act: Activation;
}

interface MixtureLayer {
  path: string;
  experts: UnitLayer[][];
  gates: UnitLayer[][];
  policy: SelectionPolicy;
  outW: number;
}

interface CompiledModel {
  /** Embedding tables [vocab, dim], by feature index; null for dense features. */
  featureTables: (Float64Array | null)[];
  scenarioTables: Float64Array[];
  taskTable: Float64Array | null;
  scenarioLayers: MixtureLayer[][]; // [level][i]
  taskLayers: MixtureLayer[];
  towers: { layers: UnitLayer[]; out: Linear }[];
}

class ParamReader {
  readonly problems: Diagnostic[] = [];
  constructor(
    private readonly weights: Weights,
    private readonly f32: boolean,
  ) {}

  /** The tensor `name` as float64 values, checked against `shape`; zeros (and a diagnostic) if unusable. */
  get(name: string, shape: number[]): Float64Array {
    const n = shape.reduce((a, b) => a * b, 1);
    const t = this.weights.get(name);
    if (!t) {
      this.problems.push({ code: "AESM2101", path: name, message: `missing tensor, expected shape [${shape.join(", ")}]` });
      return new Float64Array(n);
    }
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i])) {
      this.problems.push({
        code: "AESM2103",
        path: name,
        message: `tensor has shape [${t.shape.join(", ")}], expected [${shape.join(", ")}]`,
      });
      return new Float64Array(n);
    }
    if (!(t.data instanceof Float32Array || t.data instanceof Float64Array) || t.data.length !== n) {
      this.problems.push({ code: "AESM2106", path: name, message: `expected ${n} float32 values, got ${t.dtype}` });
      return new Float64Array(n);
    }
    const out = Float64Array.from(t.data);
    if (this.f32) for (let i = 0; i < n; i++) out[i] = Math.fround(out[i]!);
    return out;
  }

  linear(prefix: string, inW: number, outW: number, bias: boolean): Linear {
    return {
      inW,
      outW,
      weight: this.get(`${prefix}.weight`, [outW, inW]),
      bias: bias ? this.get(`${prefix}.bias`, [outW]) : null,
    };
  }

  batchNorm(prefix: string, width: number, eps: number): BatchNorm {
    const variance = this.get(`${prefix}.running_var`, [width]);
    const denom = new Float64Array(width);
    for (let i = 0; i < width; i++)
      denom[i] = this.f32
        ? Math.fround(Math.sqrt(Math.fround(variance[i]! + Math.fround(eps))))
        : Math.sqrt(variance[i]! + eps);
    return {
      gamma: this.get(`${prefix}.weight`, [width]),
      beta: this.get(`${prefix}.bias`, [width]),
      mean: this.get(`${prefix}.running_mean`, [width]),
      denom,
    };
  }

  /** MLP of MODEL.md §2: `<prefix>.layers.<j>.linear` / `.bn`. */
  mlp(prefix: string, mlp: MlpSpec, inW: number, eps: number): UnitLayer[] {
    const out: UnitLayer[] = [];
    let w = inW;
    mlp.units.forEach((u, j) => {
      out.push({
        linear: this.linear(`${prefix}.layers.${j}.linear`, w, u, mlp.bias),
        bn: mlp.batchNorm ? this.batchNorm(`${prefix}.layers.${j}.bn`, u, eps) : null,
        act: mlp.act,
      });
      w = u;
    });
    return out;
  }

  /** Gate (GateSpec): hidden `act(Linear)` with bias, then `out` Linear(→E), then BN if declared. */
  gate(prefix: string, gate: GateSpec, inW: number, experts: number, eps: number): UnitLayer[] {
    const out: UnitLayer[] = [];
    let w = inW;
    gate.units.forEach((u, j) => {
      out.push({ linear: this.linear(`${prefix}.layers.${j}.linear`, w, u, true), bn: null, act: gate.act });
      w = u;
    });
    out.push({
      linear: this.linear(`${prefix}.out`, w, experts, gate.bias),
      bn: gate.batchNorm ? this.batchNorm(`${prefix}.bn`, experts, eps) : null,
      act: "none",
    });
    return out;
  }

  mixture(
    path: string,
    layer: { experts: number; expert: MlpSpec; gate: GateSpec; select: SelectSpec },
    inW: number,
    gateInW: number,
    indexNames: readonly string[],
    eps: number,
  ): MixtureLayer {
    const experts: UnitLayer[][] = [];
    for (let e = 0; e < layer.experts; e++) experts.push(this.mlp(`${path}.experts.${e}`, layer.expert, inW, eps));
    const gates: UnitLayer[][] = [];
    for (let g = 0; g < indexNames.length; g++)
      gates.push(this.gate(`${path}.gates.${g}`, layer.gate, gateInW, layer.experts, eps));
    const outW = layer.expert.units.length ? layer.expert.units[layer.expert.units.length - 1]! : inW;
    return { path, experts, gates, policy: resolvePolicy(layer.select, indexNames, layer.experts), outW };
  }
}

function compileModel(spec: ModelSpec, weights: Weights, f32: boolean): CompiledModel {
  const p = new ParamReader(weights, f32);
  const eps = spec.batchNorm.eps;
  const featureTables = spec.features.map((f) =>
    f.kind === "categorical" ? p.get(`features.${f.name}.weight`, [f.vocab, f.dim]) : null,
  );
  const scenarioTables = spec.scenarios.map((l) => p.get(`scenarios.${l.name}.weight`, [l.values.length, l.dim]));
  const tl = spec.taskLayers;
  const taskTable = tl ? p.get("tasks.weight", [spec.tasks.length, tl.dim]) : null;

  let h = spec.features.reduce((n, f) => n + f.dim, 0); // x0 width F
  let c = 0; // indicator width of c_l
  const scenarioLayers = spec.scenarios.map((lvl) => {
    c += lvl.dim;
    const layers: MixtureLayer[] = [];
    for (let i = 0; i < lvl.layers; i++) {
      const m = p.mixture(`scenario_layers.${lvl.name}.${i}`, lvl, h, h + c, lvl.values, eps);
      layers.push(m);
      h = m.outW;
    }
    return layers;
  });

  const taskLayers: MixtureLayer[] = [];
  if (tl) {
    const taskNames = spec.tasks.map((t) => t.name);
    for (let i = 0; i < tl.layers; i++) {
      // gate input [h_t; c_{L-1}; task_emb(t)] (MODEL.md §4)
      const m = p.mixture(`task_layers.${i}`, tl, h, h + c + tl.dim, taskNames, eps);
      taskLayers.push(m);
      h = m.outW;
    }
  }

  const towers = spec.tasks.map((t) => {
    const layers = p.mlp(`towers.${t.name}`, t.tower, h, eps);
    const w = t.tower.units.length ? t.tower.units[t.tower.units.length - 1]! : h;
    return { layers, out: p.linear(`towers.${t.name}.out`, w, 1, true) };
  });

  if (p.problems.length) throw new AesmError(p.problems);
  return { featureTables, scenarioTables, taskTable, scenarioLayers, taskLayers, towers };
}

// ---------------------------------------------------------------------------------------
// Inputs (MODEL.md §1, §8).

interface Inputs {
  /** Per feature: categorical ids as table rows (−1 = out of range → zero embedding), or dense values. */
  features: (Int32Array | Float32Array | Float64Array)[];
  /** Per scenario level: validated indices. */
  scenarios: Int32Array[];
}

function readInputs(spec: ModelSpec, batch: InputBatch): Inputs {
  const B = batch.rows;
  if (!Number.isInteger(B) || B < 0)
    throw userError("AESM3103", "rows", `batch rows must be a non-negative integer, got ${B}`);
  const problems: Diagnostic[] = [];
  const features: Inputs["features"] = [];
  for (const f of spec.features) {
    const data = batch.features[f.name];
    if (data === undefined) {
      problems.push({ code: "AESM3102", path: f.name, message: `missing input "${f.name}"` });
      features.push(new Int32Array(0));
    } else if (f.kind === "categorical") {
      if (!(data instanceof BigInt64Array) || data.length !== B) {
        problems.push({
          code: "AESM3103",
          path: f.name,
          message: `input "${f.name}" must be ${B} int64 ids ([rows]), got ${describe(data)}`,
        });
        features.push(new Int32Array(0));
        continue;
      }
      // ids outside [0, vocab) read a zero embedding (MODEL.md §1)
      const vocab = BigInt(f.vocab);
      const rows = new Int32Array(B);
      for (let r = 0; r < B; r++) {
        const id = data[r]!;
        rows[r] = id >= 0n && id < vocab ? Number(id) : -1;
      }
      features.push(rows);
    } else {
      const ok = (data instanceof Float32Array || data instanceof Float64Array) && data.length === B * f.dim;
      if (!ok)
        problems.push({
          code: "AESM3103",
          path: f.name,
          message: `input "${f.name}" must be ${B * f.dim} float32 values ([rows=${B}, dim=${f.dim}]), got ${describe(data)}`,
        });
      features.push(ok ? (data as Float32Array | Float64Array) : new Float32Array(0));
    }
  }
  const scenarios: Int32Array[] = [];
  for (const lvl of spec.scenarios) {
    const data = batch.scenarios[lvl.name];
    if (data === undefined) {
      problems.push({ code: "AESM3102", path: lvl.name, message: `missing input "${lvl.name}"` });
      scenarios.push(new Int32Array(0));
    } else if (!(data instanceof BigInt64Array) || data.length !== B) {
      problems.push({
        code: "AESM3103",
        path: lvl.name,
        message: `input "${lvl.name}" must be ${B} int64 scenario indices ([rows]), got ${describe(data)}`,
      });
      scenarios.push(new Int32Array(0));
    } else scenarios.push(new Int32Array(0)); // filled below once shapes are known good
  }
  if (problems.length) throw new AesmError(problems);

  spec.scenarios.forEach((lvl, l) => {
    const data = batch.scenarios[lvl.name]!;
    const S = lvl.values.length;
    const bigS = BigInt(S);
    const idx = new Int32Array(B);
    for (let r = 0; r < B; r++) {
      const s = data[r]!;
      if (s < 0n || s >= bigS)
        throw userError("AESM3101", lvl.name, `scenario index ${s} out of range [0, ${S}) at row ${r}`);
      idx[r] = Number(s);
    }
    scenarios[l] = idx;
  });
  return { features, scenarios };
}

function describe(data: unknown): string {
  if (ArrayBuffer.isView(data) && "length" in data)
    return `${data.constructor.name}(${(data as unknown as { length: number }).length})`;
  return typeof data;
}

// ---------------------------------------------------------------------------------------
// Kernels over a chunk of n rows; row-major [n, width] Float64Arrays.

/** out[r, o] = Σ_k x[r, k]·W[o, k] + b[o] (MODEL.md §2, PyTorch layout). */
function applyLinear(lin: Linear, x: Float64Array, n: number, f32: boolean): Float64Array {
  const out = new Float64Array(n * lin.outW);
  if (f32) linearFloat32(lin, x, n, out);
  else linearFloat64(lin, x, n, out);
  return out;
}

// Both kernels sum each output sequentially over k, then add the bias. They work on four
// outputs at a time, sharing each x load between four independent sums: the numbers are
// those of the plain loop, about twice as fast.

function linearFloat64({ inW, outW, weight, bias }: Linear, x: Float64Array, n: number, out: Float64Array): void {
  for (let r = 0; r < n; r++) {
    const xo = r * inW;
    const oo = r * outW;
    let o = 0;
    for (; o + 3 < outW; o += 4) {
      const w0 = o * inW;
      const w1 = w0 + inW;
      const w2 = w1 + inW;
      const w3 = w2 + inW;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      for (let k = 0; k < inW; k++) {
        const xk = x[xo + k]!;
        a0 += xk * weight[w0 + k]!;
        a1 += xk * weight[w1 + k]!;
        a2 += xk * weight[w2 + k]!;
        a3 += xk * weight[w3 + k]!;
      }
      if (bias !== null) {
        a0 += bias[o]!;
        a1 += bias[o + 1]!;
        a2 += bias[o + 2]!;
        a3 += bias[o + 3]!;
      }
      out[oo + o] = a0;
      out[oo + o + 1] = a1;
      out[oo + o + 2] = a2;
      out[oo + o + 3] = a3;
    }
    for (; o < outW; o++) {
      const w0 = o * inW;
      let a0 = 0;
      for (let k = 0; k < inW; k++) a0 += x[xo + k]! * weight[w0 + k]!;
      out[oo + o] = bias === null ? a0 : a0 + bias[o]!;
    }
  }
}

/** Float32 emulation of the same: every product and every partial sum rounded. */
function linearFloat32({ inW, outW, weight, bias }: Linear, x: Float64Array, n: number, out: Float64Array): void {
  const fr = Math.fround;
  for (let r = 0; r < n; r++) {
    const xo = r * inW;
    const oo = r * outW;
    let o = 0;
    for (; o + 3 < outW; o += 4) {
      const w0 = o * inW;
      const w1 = w0 + inW;
      const w2 = w1 + inW;
      const w3 = w2 + inW;
      let a0 = 0;
      let a1 = 0;
      let a2 = 0;
      let a3 = 0;
      for (let k = 0; k < inW; k++) {
        const xk = x[xo + k]!;
        a0 = fr(a0 + fr(xk * weight[w0 + k]!));
        a1 = fr(a1 + fr(xk * weight[w1 + k]!));
        a2 = fr(a2 + fr(xk * weight[w2 + k]!));
        a3 = fr(a3 + fr(xk * weight[w3 + k]!));
      }
      if (bias !== null) {
        a0 = fr(a0 + bias[o]!);
        a1 = fr(a1 + bias[o + 1]!);
        a2 = fr(a2 + bias[o + 2]!);
        a3 = fr(a3 + bias[o + 3]!);
      }
      out[oo + o] = a0;
      out[oo + o + 1] = a1;
      out[oo + o + 2] = a2;
      out[oo + o + 3] = a3;
    }
    for (; o < outW; o++) {
      const w0 = o * inW;
      let a0 = 0;
      for (let k = 0; k < inW; k++) a0 = fr(a0 + fr(x[xo + k]! * weight[w0 + k]!));
      out[oo + o] = bias === null ? a0 : fr(a0 + bias[o]!);
    }
  }
}

/** In place: BN(y) = γ·((y − μ) / sqrt(σ² + ε)) + β (MODEL.md §2). */
function applyBatchNorm(bn: BatchNorm, y: Float64Array, n: number, width: number, f32: boolean): void {
  const { gamma, beta, mean, denom } = bn;
  for (let r = 0; r < n; r++)
    for (let c = 0; c < width; c++) {
      const i = r * width + c;
      if (f32) {
        const norm = Math.fround(Math.fround(y[i]! - mean[c]!) / denom[c]!);
        y[i] = Math.fround(Math.fround(gamma[c]! * norm) + beta[c]!);
      } else y[i] = gamma[c]! * ((y[i]! - mean[c]!) / denom[c]!) + beta[c]!;
    }
}

/** A stack of unit layers (an expert MLP or a gate); returns x itself when the stack is empty. */
function applyStack(layers: UnitLayer[], x: Float64Array, n: number, f32: boolean): Float64Array {
  let h = x;
  for (const layer of layers) {
    h = applyLinear(layer.linear, h, n, f32);
    if (layer.bn) applyBatchNorm(layer.bn, h, n, layer.linear.outW, f32);
    applyActivation(layer.act, h, n * layer.linear.outW, f32);
  }
  return h;
}

/** [a; b] on the feature axis. */
function concatColumns(a: Float64Array, aW: number, b: Float64Array, bW: number, n: number): Float64Array {
  const w = aW + bW;
  const out = new Float64Array(n * w);
  for (let r = 0; r < n; r++) {
    out.set(a.subarray(r * aW, (r + 1) * aW), r * w);
    out.set(b.subarray(r * bW, (r + 1) * bW), r * w + aW);
  }
  return out;
}

/** Copy table row `idx[r]` (or zeros when −1) into out[r, off : off + dim]. */
function gatherRows(
  table: Float64Array,
  dim: number,
  idx: Int32Array,
  r0: number,
  n: number,
  out: Float64Array,
  outW: number,
  off: number,
): void {
  for (let r = 0; r < n; r++) {
    const row = idx[r0 + r]!;
    if (row >= 0) out.set(table.subarray(row * dim, (row + 1) * dim), r * outW + off);
    // else: already zero
  }
}

/**
 * One mixture layer (MODEL.md §3 / §4): Z [n, G, E] from every gate over `gateIn`, the
 * selection per row, then h' = Σ_e w[:, e]·expert_e(h) with every expert run densely.
 */
function applyMixture(
  layer: MixtureLayer,
  h: Float64Array,
  gateIn: Float64Array,
  index: Int32Array,
  n: number,
  r0: number,
  trace: LayerTrace,
  scratch: SelectionScratch,
  f32: boolean,
): Float64Array {
  const G = layer.gates.length;
  const E = layer.experts.length;
  const Z = new Float64Array(n * G * E);
  layer.gates.forEach((gate, g) => {
    const zg = applyStack(gate, gateIn, n, f32);
    for (let r = 0; r < n; r++) Z.set(zg.subarray(r * E, (r + 1) * E), (r * G + g) * E);
  });

  for (let r = 0; r < n; r++) {
    const row = r0 + r;
    trace.margin[row] = selectRow(
      layer.policy,
      Z,
      r * G * E,
      index[r]!,
      f32,
      scratch,
      trace.weights,
      row * E,
      trace.selected,
      row * E,
    );
  }

  const D = layer.outW;
  const out = new Float64Array(n * D);
  const w = trace.weights;
  layer.experts.forEach((expert, e) => {
    const y = applyStack(expert, h, n, f32);
    for (let r = 0; r < n; r++) {
      const we = w[(r0 + r) * E + e]!;
      // w = 0 terms add nothing (and skipping them keeps a non-finite unselected expert out)
      if (we === 0) continue;
      const o = r * D;
      if (f32) for (let d = 0; d < D; d++) out[o + d] = Math.fround(out[o + d]! + Math.fround(we * y[o + d]!));
      else for (let d = 0; d < D; d++) out[o + d] = out[o + d]! + we * y[o + d]!;
    }
  });
  return out;
}

// ---------------------------------------------------------------------------------------

/**
 * Evaluate the model of `spec` with `weights` on `batch`, exactly as MODEL.md §1–§5 (and
 * §7's `mask: "reference"`) define it. Throws AesmError for missing or misshapen weights
 * (AESM2101, 2103, 2106, the codes of src/weights/validate.ts), missing or misshapen
 * inputs (AESM3102, 3103) and out-of-range scenario indices (AESM3101).
 */
export function evaluateReference(
  spec: ModelSpec,
  weights: Weights,
  batch: InputBatch,
  options: ReferenceOptions = {},
): ReferenceResult {
  const f32 = options.precision === "float32";
  const inputs = readInputs(spec, batch);
  const model = compileModel(spec, weights, f32);
  const B = batch.rows;
  const T = spec.tasks.length;
  const L = spec.scenarios.length;

  // traces in selectionLayerPaths order: scenario layers by level, then task layers by layer and task
  const newTrace = (path: string, E: number): LayerTrace => ({
    path,
    experts: E,
    weights: new Float64Array(B * E),
    selected: new Uint8Array(B * E),
    margin: new Float64Array(B),
  });
  const scenarioTraces = model.scenarioLayers.map((lvl) => lvl.map((m) => newTrace(m.path, m.experts.length)));
  const taskTraces = model.taskLayers.map((m) => spec.tasks.map((t) => newTrace(`${m.path}.${t.name}`, m.experts.length)));
  const scenarioScratch = model.scenarioLayers.map((lvl) =>
    lvl.map((m) => new SelectionScratch(m.gates.length, m.experts.length)),
  );
  const taskScratch = model.taskLayers.map((m) => new SelectionScratch(m.gates.length, m.experts.length));
  const outputs: Record<string, Float64Array> = {};
  for (const t of spec.tasks) outputs[t.name] = new Float64Array(B);

  const F = spec.features.reduce((s, f) => s + f.dim, 0);
  const cWidths: number[] = []; // width of c_l
  let cw = 0;
  for (const lvl of spec.scenarios) cWidths.push((cw += lvl.dim));
  const cLast = L ? cWidths[L - 1]! : 0;
  const dT = spec.taskLayers ? spec.taskLayers.dim : 0;

  for (let r0 = 0; r0 < B; r0 += CHUNK_ROWS) {
    const n = Math.min(CHUNK_ROWS, B - r0);

    // x0 = [f_1; f_2; …] in declaration order (§1)
    const x0 = new Float64Array(n * F);
    let off = 0;
    spec.features.forEach((f, k) => {
      const src = inputs.features[k]!;
      if (f.kind === "categorical") gatherRows(model.featureTables[k]!, f.dim, src as Int32Array, r0, n, x0, F, off);
      else
        for (let r = 0; r < n; r++)
          for (let d = 0; d < f.dim; d++) {
            const v = src[(r0 + r) * f.dim + d]!;
            x0[r * F + off + d] = f32 ? Math.fround(v) : v;
          }
      off += f.dim;
    });

    // c_l = [emb_0(s_0); …; emb_l(s_l)] (§1, and §7's fix for deeper trees)
    const indicators = spec.scenarios.map((_, l) => {
      const c = new Float64Array(n * cWidths[l]!);
      let o = 0;
      for (let m = 0; m <= l; m++) {
        gatherRows(model.scenarioTables[m]!, spec.scenarios[m]!.dim, inputs.scenarios[m]!, r0, n, c, cWidths[l]!, o);
        o += spec.scenarios[m]!.dim;
      }
      return c;
    });

    // scenario layers (§3)
    let h: Float64Array = x0;
    let hW = F;
    model.scenarioLayers.forEach((lvl, l) => {
      const index = inputs.scenarios[l]!.subarray(r0, r0 + n);
      lvl.forEach((m, i) => {
        const gateIn = concatColumns(h, hW, indicators[l]!, cWidths[l]!, n);
        h = applyMixture(m, h, gateIn, index, n, r0, scenarioTraces[l]![i]!, scenarioScratch[l]![i]!, f32);
        hW = m.outW;
      });
    });

    // task layers (§4): one stream per task, all starting at h_L; gates shared by all tasks
    const streams: Float64Array[] = spec.tasks.map(() => h);
    let sW = hW;
    if (model.taskLayers.length) {
      const cl = L ? indicators[L - 1]! : new Float64Array(0);
      const taskIndex = spec.tasks.map((_, t) => new Int32Array(n).fill(t));
      // [c_{L-1}; task_emb(t)] per task, the same on every row
      const extras = spec.tasks.map((_, t) => {
        const e = new Float64Array(n * (cLast + dT));
        const emb = model.taskTable!.subarray(t * dT, (t + 1) * dT);
        for (let r = 0; r < n; r++) {
          e.set(cl.subarray(r * cLast, (r + 1) * cLast), r * (cLast + dT));
          e.set(emb, r * (cLast + dT) + cLast);
        }
        return e;
      });
      model.taskLayers.forEach((m, i) => {
        for (let t = 0; t < T; t++) {
          const gateIn = concatColumns(streams[t]!, sW, extras[t]!, cLast + dT, n);
          streams[t] = applyMixture(m, streams[t]!, gateIn, taskIndex[t]!, n, r0, taskTraces[i]![t]!, taskScratch[i]!, f32);
        }
        sW = m.outW;
      });
    }

    // towers: MLP, Linear(→1), sigmoid (§4)
    spec.tasks.forEach((task, t) => {
      const tower = model.towers[t]!;
      const y = applyStack(tower.layers, streams[t]!, n, f32);
      const logit = applyLinear(tower.out, y, n, f32);
      const p = outputs[task.name]!;
      for (let r = 0; r < n; r++) p[r0 + r] = f32 ? Math.fround(sigmoid(logit[r]!)) : sigmoid(logit[r]!);
    });
  }

  return { outputs, layers: [...scenarioTraces.flat(), ...taskTraces.flat()] };
}
