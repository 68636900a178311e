// Greedy shrinking of a failing fuzz case: try one simplification of the spec at a time
// (fewer levels, tasks, features, experts, layers and units; simpler policy, gate and
// settings; fewer rows), keep it when the case still fails the same way, repeat to a fixpoint.

import type {
  GateInput,
  MlpInput,
  ModelInput,
  ScenarioLevelInput,
  SelectInput,
  TaskLayersInput,
} from "../dsl/builders.ts";
import { parseModel } from "../dsl/parse.ts";
import type { FuzzCase } from "./case.ts";

/** One candidate: a description (for the log) and the smaller case. */
export interface Shrink {
  step: string;
  c: FuzzCase;
}

type Layer = ScenarioLevelInput | TaskLayersInput;
type Mutable<T> = { -readonly [K in keyof T]: T[K] };

function clone(c: FuzzCase): FuzzCase {
  return structuredClone(c);
}

/** A policy valid for `experts` experts, or undefined if none is close to `s`. */
function fitSelect(s: SelectInput, experts: number): SelectInput | undefined {
  switch (s.kind) {
    case "all":
      return s;
    case "topK":
      return { kind: "topK", k: Math.min(s.k, experts) };
    case "aesm": {
      const specific = Math.min(s.specific, experts);
      const shared = Math.min(s.shared, experts);
      return specific + shared > 0 ? { ...s, specific, shared } : undefined;
    }
    case "fixed": {
      const keep = (l: readonly number[] | undefined) => (l ?? []).filter((e) => e < experts);
      const specific = Object.fromEntries(
        Object.entries(s.specific ?? {}).map(([k, v]) => [k, keep(v as number[])] as const).filter(([, v]) => v.length > 0),
      );
      return { kind: "fixed", specific, shared: keep(s.shared) };
    }
  }
}

/** Simplifications of one MLP (experts need ≥ 1 unit; towers may have none). */
function mlpSteps(m: MlpInput, minUnits: number): { step: string; m: MlpInput }[] {
  const out: { step: string; m: MlpInput }[] = [];
  const units = [...m.units];
  if (units.length > minUnits) out.push({ step: "drop last unit layer", m: { ...m, units: units.slice(0, -1) } });
  if (units.length > 1) out.push({ step: "keep one unit layer", m: { ...m, units: units.slice(0, 1) } });
  units.forEach((u, i) => {
    if (u > 1) out.push({ step: `units[${i}] → 1`, m: { ...m, units: units.map((x, j) => (j === i ? 1 : x)) } });
    if (u > 2) out.push({ step: `units[${i}] halved`, m: { ...m, units: units.map((x, j) => (j === i ? Math.ceil(x / 2) : x)) } });
  });
  if ((m.act ?? "relu") !== "relu") out.push({ step: "act → relu", m: { ...m, act: "relu" } });
  if (m.batchNorm) out.push({ step: "batch norm off", m: { ...m, batchNorm: false, bias: true } });
  if (m.bias === false && !m.batchNorm) out.push({ step: "bias on", m: { ...m, bias: true } });
  if (m.bias === true && m.batchNorm) out.push({ step: "bias off", m: { ...m, bias: false } });
  return out;
}

function gateSteps(g: GateInput | undefined): { step: string; g: GateInput }[] {
  if (!g) return [];
  const out: { step: string; g: GateInput }[] = [];
  const plain: GateInput = { kind: "gate" };
  if (JSON.stringify(g) !== JSON.stringify(plain)) out.push({ step: "gate → default", g: plain });
  if ((g.units ?? []).length > 0) out.push({ step: "gate hidden units dropped", g: { ...g, units: [] } });
  if (g.batchNorm) out.push({ step: "gate batch norm off", g: { ...g, batchNorm: false, bias: true } });
  return out;
}

function selectSteps(s: SelectInput, experts: number): { step: string; s: SelectInput }[] {
  const out: { step: string; s: SelectInput }[] = [];
  if (s.kind !== "all") out.push({ step: "select → all()", s: { kind: "all" } });
  if (s.kind === "topK" && s.k > 1) out.push({ step: "k → 1", s: { kind: "topK", k: 1 } });
  if (s.kind === "aesm") {
    if (s.mask === "reference") out.push({ step: "mask → masked", s: { ...s, mask: "masked" } });
    if ((s.eps ?? 1e-9) !== 1e-9) out.push({ step: "eps → 1e-9", s: { ...s, eps: 1e-9 } });
    if (s.specific > 0 && s.shared > 0) {
      out.push({ step: "specific → 0", s: { ...s, specific: 0 } });
      out.push({ step: "shared → 0", s: { ...s, shared: 0 } });
    }
    if (s.specific > 1) out.push({ step: "specific − 1", s: { ...s, specific: s.specific - 1 } });
    if (s.shared > 1) out.push({ step: "shared − 1", s: { ...s, shared: s.shared - 1 } });
    if (s.specific + s.shared >= 1 && experts > 1) out.push({ step: "aesm → topK(1)", s: { kind: "topK", k: 1 } });
  }
  if (s.kind === "fixed" && (s.shared ?? []).length > 0) out.push({ step: "fixed shared cleared", s: { ...s, shared: [] } });
  return out;
}

/** Simplifications of a scenario level or the task layers, applied through `set`. */
function layerSteps(layer: Layer, at: string, set: (l: Layer) => FuzzCase): Shrink[] {
  const out: Shrink[] = [];
  const with_ = (step: string, patch: Partial<Layer>) => out.push({ step: `${at}: ${step}`, c: set({ ...layer, ...patch } as Layer) });
  if ((layer.layers ?? 1) > 1) {
    with_("layers → 1", { layers: 1 });
    with_("layers − 1", { layers: (layer.layers ?? 1) - 1 });
  }
  for (const e of new Set([1, Math.ceil(layer.experts / 2), layer.experts - 1])) {
    if (e < 1 || e >= layer.experts) continue;
    const select = fitSelect(layer.select, e);
    if (select) with_(`experts → ${e}`, { experts: e, select });
  }
  for (const s of selectSteps(layer.select, layer.experts)) with_(s.step, { select: s.s });
  for (const m of mlpSteps(layer.expert, 1)) with_(`expert ${m.step}`, { expert: m.m });
  for (const g of gateSteps(layer.gate)) with_(g.step, { gate: g.g });
  if (layer.dim > 1) with_("dim → 1", { dim: 1 });
  return out;
}

/** Every one-step simplification of `c`, largest first. Some may be invalid models: callers validate. */
export function shrinkCandidates(c: FuzzCase): Shrink[] {
  const out: Shrink[] = [];
  const model = c.model;
  const edit = (step: string, f: (m: Mutable<ModelInput>, c: FuzzCase) => void) => {
    const n = clone(c);
    f(n.model as Mutable<ModelInput>, n);
    out.push({ step, c: n });
  };

  if (!c.inputs.keep && c.inputs.rows > 1)
    edit(`rows → ${Math.ceil(c.inputs.rows / 2)}`, (_, n) => (n.inputs.rows = Math.ceil(c.inputs.rows / 2)));
  if (model.taskLayers) edit("task layers removed", (m) => (m.taskLayers = null));

  const levels = Object.keys(model.scenarios);
  if (levels.length > 1)
    for (const name of levels)
      edit(`level ${name} removed`, (m) => (m.scenarios = Object.fromEntries(Object.entries(m.scenarios).filter(([k]) => k !== name))));
  const tasks = Object.keys(model.tasks);
  if (tasks.length > 1)
    for (const name of tasks)
      edit(`task ${name} removed`, (m) => {
        m.tasks = Object.fromEntries(Object.entries(m.tasks).filter(([k]) => k !== name));
        const tl = m.taskLayers;
        if (tl?.select.kind === "fixed" && tl.select.specific && name in tl.select.specific) {
          const specific = { ...tl.select.specific } as Record<string, readonly number[]>;
          delete specific[name];
          m.taskLayers = { ...tl, select: { ...tl.select, specific } };
        }
      });
  const features = Object.keys(model.features);
  if (features.length > 1)
    for (const name of features)
      edit(`feature ${name} removed`, (m) => (m.features = Object.fromEntries(Object.entries(m.features).filter(([k]) => k !== name))));

  for (const [name, level] of Object.entries(model.scenarios)) {
    out.push(
      ...layerSteps(level, `level ${name}`, (l) => {
        const n = clone(c);
        (n.model as Mutable<ModelInput>).scenarios = { ...n.model.scenarios, [name]: l as ScenarioLevelInput };
        return n;
      }),
    );
    if (level.values.length > 2) {
      const last = level.values[level.values.length - 1]!;
      const values = level.values.slice(0, -1);
      let select = level.select;
      if (select.kind === "fixed" && select.specific && last in select.specific) {
        const specific = { ...select.specific } as Record<string, readonly number[]>;
        delete specific[last];
        select = { ...select, specific };
      }
      edit(`level ${name}: value ${last} removed`, (m) => (m.scenarios = { ...m.scenarios, [name]: { ...level, values, select } }));
    }
  }
  if (model.taskLayers)
    out.push(
      ...layerSteps(model.taskLayers, "task layers", (l) => {
        const n = clone(c);
        (n.model as Mutable<ModelInput>).taskLayers = l as TaskLayersInput;
        return n;
      }),
    );
  for (const [name, task] of Object.entries(model.tasks))
    for (const s of mlpSteps(task.tower, 0))
      edit(`tower ${name}: ${s.step}`, (m) => (m.tasks = { ...m.tasks, [name]: { tower: s.m } }));

  for (const [name, f] of Object.entries(model.features)) {
    if (f.dim > 1) edit(`feature ${name}: dim → 1`, (m) => (m.features = { ...m.features, [name]: { ...f, dim: 1 } }));
    if (f.kind === "categorical" && f.vocab > 2)
      edit(`feature ${name}: vocab halved`, (m) => (m.features = { ...m.features, [name]: { ...f, vocab: Math.ceil(f.vocab / 2) } }));
    if (f.kind === "categorical") edit(`feature ${name} → dense`, (m) => (m.features = { ...m.features, [name]: { kind: "dense", dim: f.dim } }));
  }
  if ((model.batchNorm?.eps ?? 1e-3) !== 1e-3) edit("batch-norm eps → default", (m) => (m.batchNorm = { eps: 1e-3 }));

  if (c.weights.scale) edit("weight rescaling removed", (_, n) => delete n.weights.scale);
  if (c.options.nearTieRewrites) edit("near-tie rewrites off", (_, n) => (n.options.nearTieRewrites = false));
  if (c.options.sparseDispatch !== "never") edit("sparse dispatch never", (_, n) => (n.options.sparseDispatch = "never"));
  if (c.options.ortOptimization !== "disabled") edit("onnxruntime optimisation off", (_, n) => (n.options.ortOptimization = "disabled"));
  return out;
}

/** Whether a candidate is a valid model at all (the shrinker never reports an invalid one). */
export function isValidCase(c: FuzzCase): boolean {
  try {
    parseModel(c.model);
    return true;
  } catch {
    return false;
  }
}

export interface ShrinkOptions {
  /** Whether a candidate still fails the same way; also returns the rows that fail, for the last step. */
  fails: (c: FuzzCase) => Promise<{ failing: boolean; rows: number[] }>;
  /** Stop after this many candidates tried (default 400) or this long (default 180 s). */
  maxAttempts?: number;
  maxMs?: number;
  log?: (line: string) => void;
}

export interface ShrinkResult {
  c: FuzzCase;
  steps: string[];
  attempts: number;
}

/**
 * Shrink `start` (which fails) to a local minimum: each candidate that still fails is taken,
 * until a whole pass over the candidates finds none or the budget is spent.
 * Last, the inputs are cut to the failing rows only (and to one of them if that still fails).
 */
export async function shrinkCase(start: FuzzCase, opts: ShrinkOptions): Promise<ShrinkResult> {
  const maxAttempts = opts.maxAttempts ?? 400;
  const deadline = performance.now() + (opts.maxMs ?? 180_000);
  let current = start;
  let attempts = 0;
  const steps: string[] = [];
  const budget = () => attempts < maxAttempts && performance.now() < deadline;

  // Passes over the candidate list; after a success the list is rebuilt from the smaller case
  // and the pass goes on from the same position (candidates before it failed a moment ago).
  // Another pass follows while any made progress.
  let progress = true;
  while (progress && budget()) {
    progress = false;
    let list = shrinkCandidates(current);
    for (let i = 0; i < list.length && budget(); i++) {
      const cand = list[i]!;
      if (!isValidCase(cand.c)) continue;
      attempts++;
      if ((await opts.fails(cand.c)).failing) {
        current = cand.c;
        steps.push(cand.step);
        opts.log?.(`  shrink: ${cand.step}`);
        progress = true;
        list = shrinkCandidates(current);
        i--; // the same position in the new list
      }
    }
  }

  // The rows: only the failing ones, then a single one.
  if (!current.inputs.keep) {
    const { rows } = await opts.fails(current);
    rows.sort((a, b) => a - b);
    for (const keep of [rows, rows.slice(0, 1)]) {
      const same = current.inputs.keep ? keep.length === current.inputs.keep.length : keep.length === current.inputs.rows;
      if (keep.length === 0 || same) continue;
      const cand = clone(current);
      cand.inputs.keep = [...keep];
      attempts++;
      if ((await opts.fails(cand)).failing) {
        current = cand;
        steps.push(`rows → [${keep.join(", ")}]`);
      }
    }
  }
  return { c: current, steps, attempts };
}
