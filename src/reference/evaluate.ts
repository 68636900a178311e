// MODEL.md §1–§7 as a direct float64 program: the semantic oracle the parity harness
// compares ONNX against. Shares no code with lowering, passes or backends.

import type { Activation, GateSpec, MlpSpec, ModelSpec, SelectSpec } from "../dsl/spec.ts";
import type { Weights } from "../weights/layout.ts";
import type { InputBatch } from "../core/batch.ts";
import { type Diagnostic, AesmError, userError } from "../core/diagnostics.ts";
import { applyActivation, sigmoid } from "./numerics.ts";
import { type SelectionPolicy, SelectionScratch, resolvePolicy, selectRow } from "./select.ts";
import { type WasmUnit, WasmUnitEngine, unitParamElements, wasmUnitsAvailable } from "./wasm-unit.ts";

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
  /**
   * The unit layers' kernels: "wasm" (the default where WebAssembly SIMD runs) or "js". They
   * compute the same numbers bit for bit; "js" is there to show it.
   */
  kernels?: "wasm" | "js";
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

/** Rows evaluated together: a chunk's activations stay in cache, and memory stays bounded. */
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
  /** Its parameters in the evaluation's WebAssembly engine, when float64 units run there. */
  wasm?: WasmUnit;
}

interface MixtureLayer {
  path: string;
  /** Width of h, the experts' input. */
  inW: number;
  experts: UnitLayer[][];
  gates: UnitLayer[][];
  /**
   * When every gate is a single projection (no hidden units), the G projections stacked into
   * one Linear(→G·E) (and BN over G·E channels): its output channel g·E + e is gate g's
   * channel e, so one pass writes Z [n, G, E] with exactly the numbers of the G gates.
   */
  stackedGates: UnitLayer | null;
  policy: SelectionPolicy;
  outW: number;
}

interface CompiledModel {
  /** The widest row anything in the model reads or writes (sizes the Workspace). */
  maxWidth: number;
  /** Embedding tables [vocab, dim], by feature index; null for dense features. */
  featureTables: (Float64Array | null)[];
  scenarioTables: Float64Array[];
  taskTable: Float64Array | null;
  scenarioLayers: MixtureLayer[][]; // [level][i]
  taskLayers: MixtureLayer[];
  /** Tower MLP, then its Linear(→1) as a unit without batch norm or activation. */
  towers: { layers: UnitLayer[]; out: UnitLayer }[];
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
    const stackedGates = layer.gate.units.length === 0 ? stackGates(gates.map((g) => g[0]!)) : null;
    const policy = resolvePolicy(layer.select, indexNames, layer.experts, this.f32);
    return { path, inW, experts, gates, stackedGates, policy, outW };
  }
}

/** Single-projection gates (the same input, E outputs each) as one unit of G·E outputs; see MixtureLayer. */
function stackGates(gates: UnitLayer[]): UnitLayer {
  const { inW, outW: E } = gates[0]!.linear;
  const cat = (part: (u: UnitLayer) => Float64Array): Float64Array => {
    const size = part(gates[0]!).length;
    const out = new Float64Array(gates.length * size);
    gates.forEach((u, g) => out.set(part(u), g * size));
    return out;
  };
  return {
    linear: {
      inW,
      outW: gates.length * E,
      weight: cat((u) => u.linear.weight),
      bias: gates[0]!.linear.bias ? cat((u) => u.linear.bias!) : null,
    },
    bn: gates[0]!.bn
      ? { gamma: cat((u) => u.bn!.gamma), beta: cat((u) => u.bn!.beta), mean: cat((u) => u.bn!.mean), denom: cat((u) => u.bn!.denom) }
      : null,
    act: "none",
  };
}

/** The widest row of the model: any unit's input or output, expert input, or Z row (G·E). */
function widestRow(m: Omit<CompiledModel, "maxWidth">, F: number): number {
  let w = F;
  const units = (layers: UnitLayer[]): void => {
    for (const u of layers) w = Math.max(w, u.linear.inW, u.linear.outW);
  };
  for (const layer of [...m.scenarioLayers.flat(), ...m.taskLayers]) {
    layer.experts.forEach(units);
    layer.gates.forEach(units);
    w = Math.max(w, layer.inW, layer.gates.length * layer.experts.length);
  }
  for (const t of m.towers) units([...t.layers, t.out]);
  return w;
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
    return { layers, out: { linear: p.linear(`towers.${t.name}.out`, w, 1, true), bn: null, act: "none" as const } };
  });

  if (p.problems.length) throw new AesmError(p.problems);
  const model = { featureTables, scenarioTables, taskTable, scenarioLayers, taskLayers, towers };
  const F = spec.features.reduce((n, f) => n + f.dim, 0);
  return { ...model, maxWidth: widestRow(model, F) };
}

/** Every unit layer of the model, once (gates stacked where they are, as they are evaluated). */
function unitLayers(m: CompiledModel): UnitLayer[] {
  const out: UnitLayer[] = [];
  for (const layer of [...m.scenarioLayers.flat(), ...m.taskLayers]) {
    for (const e of layer.experts) out.push(...e);
    if (layer.stackedGates) out.push(layer.stackedGates);
    else for (const g of layer.gates) out.push(...g);
  }
  for (const t of m.towers) out.push(...t.layers, t.out);
  return out;
}

/** A WebAssembly engine for chunks of up to `rows` rows, with every unit's parameters uploaded. */
function uploadUnits(m: CompiledModel, rows: number, f32: boolean): WasmUnitEngine {
  const precision = f32 ? "float32" : "float64";
  const units = unitLayers(m);
  const params = units.reduce((n, u) => n + unitParamElements(u.linear.inW, u.linear.outW, precision), 0);
  const engine = new WasmUnitEngine(precision, rows, m.maxWidth, m.maxWidth, params);
  for (const u of units) u.wasm = engine.upload(u.linear, u.bn);
  return engine;
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
// Kernels over a block of n rows; row-major [n, width] Float64Arrays. Each writes into a
// caller's buffer, which may be longer than n·width (the chunk's Workspace).

/** Buffers reused by every layer of a chunk, so that the row loops allocate nothing. */
class Workspace {
  /** The unit layers of a stack write alternately into these two. */
  readonly ping: Float64Array;
  readonly pong: Float64Array;
  /** An expert's input: the rows of h that give it a non-zero weight, gathered. */
  readonly block: Float64Array;
  /** Gate input, [h; c_l] or [h_t; c_{L-1}; task_emb(t)]. */
  readonly gateIn: Float64Array;
  /** Gate logits Z [n, G, E]. */
  readonly z: Float64Array;
  /** Rows of the chunk routed to one expert, ascending. */
  readonly rows: Int32Array;
  /** The WebAssembly kernels' instance, holding the units' parameters; null: JS kernels. */
  readonly engine: WasmUnitEngine | null;
  constructor(rows: number, width: number, engine: WasmUnitEngine | null) {
    this.engine = engine;
    this.ping = new Float64Array(rows * width);
    this.pong = new Float64Array(rows * width);
    this.block = new Float64Array(rows * width);
    this.gateIn = new Float64Array(rows * width);
    this.z = new Float64Array(rows * width);
    this.rows = new Int32Array(rows);
  }
}

// The kernels compute each output as one sequential sum over k, then add the bias: the
// numbers of the plain loop. They only share loads between independent sums, taking two
// rows and four outputs at a time (eight sums; an odd last row is paired with itself).

/**
 * Linear(x)[r, o] = Σ_k x[i, k]·W[o, k] + b[o] (MODEL.md §2, PyTorch layout) for i = rows[r]
 * (a block of gathered rows, read in place) or i = r when rows is null: one sequential sum
 * over k per output, then the bias. `f32`: the float32 emulation, every product and every
 * partial sum rounded. The JavaScript kernel, used where WebAssembly is not (wasm-unit.ts runs
 * the same sums in the same order with SIMD, bit for bit).
 */
function linearJs({ inW, outW, weight, bias }: Linear, x: Float64Array, rows: Int32Array | null, n: number, out: Float64Array, f32: boolean): void {
  const fr = Math.fround;
  for (let r = 0; r < n; r++) {
    const xa = (rows === null ? r : rows[r]!) * inW;
    const oa = r * outW;
    for (let o = 0; o < outW; o++) {
      const w = o * inW;
      let acc = 0;
      if (f32) {
        for (let k = 0; k < inW; k++) acc = fr(acc + fr(x[xa + k]! * weight[w + k]!));
        if (bias !== null) acc = fr(acc + bias[o]!);
      } else {
        for (let k = 0; k < inW; k++) acc += x[xa + k]! * weight[w + k]!;
        if (bias !== null) acc += bias[o]!;
      }
      out[oa + o] = acc;
    }
  }
}

/** In place: BN(y) = γ·((y − μ) / sqrt(σ² + ε)) + β (MODEL.md §2). */
function applyBatchNorm(bn: BatchNorm, y: Float64Array, n: number, width: number, f32: boolean): void {
  const { gamma, beta, mean, denom } = bn;
  const fr = Math.fround;
  for (let r = 0; r < n; r++) {
    const o = r * width;
    if (f32)
      for (let c = 0; c < width; c++) {
        const norm = fr(fr(y[o + c]! - mean[c]!) / denom[c]!);
        y[o + c] = fr(fr(gamma[c]! * norm) + beta[c]!);
      }
    else for (let c = 0; c < width; c++) y[o + c] = gamma[c]! * ((y[o + c]! - mean[c]!) / denom[c]!) + beta[c]!;
  }
}

/**
 * One unit layer, act(BN(Linear(x))), into `out`; x's rows as in linearJs. The WebAssembly
 * kernel (when the layer is uploaded to ws.engine) applies batch norm and relu to each sum as
 * it is written; the JavaScript kernel as passes (the same operations); other activations
 * follow as a pass.
 */
function applyUnit(layer: UnitLayer, x: Float64Array, rows: Int32Array | null, n: number, f32: boolean, out: Float64Array, ws: Workspace): void {
  const relu = layer.act === "relu";
  const fused = relu || layer.act === "none";
  if (layer.wasm && ws.engine) {
    ws.engine.apply(layer.wasm, x, rows, n, relu, out);
    if (!fused) applyActivation(layer.act, out, n * layer.linear.outW, f32);
    return;
  }
  linearJs(layer.linear, x, rows, n, out, f32);
  if (layer.bn) applyBatchNorm(layer.bn, out, n, layer.linear.outW, f32);
  applyActivation(layer.act, out, n * layer.linear.outW, f32);
}

/**
 * A stack of unit layers (an expert MLP, a gate, a tower MLP) over the rows of x (as in
 * linearJs). The result lies in ws.ping or ws.pong (read it before the next stack runs),
 * or is x itself when the stack is empty (rows must then be null).
 */
function applyStack(layers: UnitLayer[], x: Float64Array, rows: Int32Array | null, n: number, f32: boolean, ws: Workspace): Float64Array {
  let h = x;
  let from = rows;
  for (const layer of layers) {
    const out = h === ws.ping ? ws.pong : ws.ping;
    applyUnit(layer, h, from, n, f32, out, ws);
    h = out;
    from = null;
  }
  return h;
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
    const o = r * outW + off;
    if (row < 0) continue; // out of range: already zero
    const t = row * dim;
    for (let d = 0; d < dim; d++) out[o + d] = table[t + d]!;
  }
}

/** out[r] = [h[r]; c[r]; tail] ([h; c_l] for scenario gates, [h_t; c_{L-1}; task_emb(t)] for task gates). */
function gateInput(
  h: Float64Array,
  hW: number,
  c: Float64Array,
  cW: number,
  tail: Float64Array,
  n: number,
  out: Float64Array | Float32Array,
): void {
  const tW = tail.length;
  const w = hW + cW + tW;
  for (let r = 0; r < n; r++) {
    const o = r * w;
    for (let k = 0; k < hW; k++) out[o + k] = h[r * hW + k]!;
    for (let k = 0; k < cW; k++) out[o + hW + k] = c[r * cW + k]!;
    for (let k = 0; k < tW; k++) out[o + hW + cW + k] = tail[k]!;
  }
}

/**
 * One mixture layer (MODEL.md §3 / §4): Z [n, G, E] from every gate over the gate input
 * [h; c; tail] (see gateInput), the selection per row, then h' = Σ_e w[:, e]·expert_e(h).
 * Each expert runs only on the rows that give it a non-zero weight (gathered into one block):
 * a w = 0 term adds nothing, and leaving it out keeps a non-finite unselected expert out of
 * the sum. Per row, the terms are added in expert order.
 */
function applyMixture(
  layer: MixtureLayer,
  h: Float64Array,
  hW: number,
  gateTail: { c: Float64Array; cW: number; tail: Float64Array },
  index: Int32Array,
  n: number,
  r0: number,
  trace: LayerTrace,
  scratch: SelectionScratch,
  f32: boolean,
  ws: Workspace,
): Float64Array {
  const G = layer.gates.length;
  const E = layer.experts.length;
  const Z = ws.z;
  const stacked = layer.stackedGates;
  if (stacked?.wasm && ws.engine) {
    // the gate input is written straight into the kernel's input buffer
    gateInput(h, hW, gateTail.c, gateTail.cW, gateTail.tail, n, ws.engine.input(n, stacked.linear.inW));
    ws.engine.applyToInput(stacked.wasm, n, false, Z);
  } else if (stacked) {
    gateInput(h, hW, gateTail.c, gateTail.cW, gateTail.tail, n, ws.gateIn);
    applyUnit(stacked, ws.gateIn, null, n, f32, Z, ws);
  } else {
    gateInput(h, hW, gateTail.c, gateTail.cW, gateTail.tail, n, ws.gateIn);
    layer.gates.forEach((gate, g) => {
      const zg = applyStack(gate, ws.gateIn, null, n, f32, ws);
      for (let r = 0; r < n; r++) for (let e = 0; e < E; e++) Z[(r * G + g) * E + e] = zg[r * E + e]!;
    });
  }

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

  const inW = layer.inW;
  const D = layer.outW;
  const out = new Float64Array(n * D);
  const w = trace.weights;
  const rows = ws.rows;
  const block = ws.block;
  const fr = Math.fround;
  for (let e = 0; e < E; e++) {
    let m = 0;
    for (let r = 0; r < n; r++) if (w[(r0 + r) * E + e] !== 0) rows[m++] = r;
    if (m === 0) continue;
    const expert = layer.experts[e]!;
    let y: Float64Array;
    if (expert.length) y = applyStack(expert, h, rows, m, f32, ws); // reads the m rows of h in place
    else {
      // an expert without units is the identity: its output is its gathered input
      for (let j = 0; j < m; j++) {
        const src = rows[j]! * inW;
        const dst = j * inW;
        for (let k = 0; k < inW; k++) block[dst + k] = h[src + k]!;
      }
      y = block;
    }
    for (let j = 0; j < m; j++) {
      const r = rows[j]!;
      const we = w[(r0 + r) * E + e]!;
      const o = r * D;
      const yo = j * D;
      if (f32) for (let d = 0; d < D; d++) out[o + d] = fr(out[o + d]! + fr(we * y[yo + d]!));
      else for (let d = 0; d < D; d++) out[o + d] = out[o + d]! + we * y[yo + d]!;
    }
  }
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
  const useWasm = options.kernels !== "js" && wasmUnitsAvailable() && B > 0;
  const ws = new Workspace(Math.min(CHUNK_ROWS, B), model.maxWidth, useWasm ? uploadUnits(model, Math.min(CHUNK_ROWS, B), f32) : null);

  const F = spec.features.reduce((s, f) => s + f.dim, 0);
  const cWidths: number[] = []; // width of c_l
  let cw = 0;
  for (const lvl of spec.scenarios) cWidths.push((cw += lvl.dim));
  const cLast = L ? cWidths[L - 1]! : 0;
  const dT = spec.taskLayers ? spec.taskLayers.dim : 0;
  const noTail = new Float64Array(0);
  const taskEmb = spec.tasks.map((_, t) => (model.taskTable ? model.taskTable.subarray(t * dT, (t + 1) * dT) : noTail));

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
        const gate = { c: indicators[l]!, cW: cWidths[l]!, tail: noTail };
        h = applyMixture(m, h, hW, gate, index, n, r0, scenarioTraces[l]![i]!, scenarioScratch[l]![i]!, f32, ws);
        hW = m.outW;
      });
    });

    // task layers (§4): one stream per task, all starting at h_L; gates shared by all tasks
    const streams: Float64Array[] = spec.tasks.map(() => h);
    let sW = hW;
    if (model.taskLayers.length) {
      const cl = L ? indicators[L - 1]! : noTail;
      const taskIndex = spec.tasks.map((_, t) => new Int32Array(n).fill(t));
      model.taskLayers.forEach((m, i) => {
        for (let t = 0; t < T; t++) {
          const gate = { c: cl, cW: cLast, tail: taskEmb[t]! };
          streams[t] = applyMixture(m, streams[t]!, sW, gate, taskIndex[t]!, n, r0, taskTraces[i]![t]!, taskScratch[i]!, f32, ws);
        }
        sW = m.outW;
      });
    }

    // towers: MLP, Linear(→1), sigmoid (§4)
    spec.tasks.forEach((task, t) => {
      const tower = model.towers[t]!;
      const y = applyStack(tower.layers, streams[t]!, null, n, f32, ws);
      const logit = y === ws.ping ? ws.pong : ws.ping;
      applyUnit(tower.out, y, null, n, f32, logit, ws);
      const p = outputs[task.name]!;
      for (let r = 0; r < n; r++) p[r0 + r] = f32 ? Math.fround(sigmoid(logit[r]!)) : sigmoid(logit[r]!);
    });
  }

  return { outputs, layers: [...scenarioTraces.flat(), ...taskTraces.flat()] };
}
