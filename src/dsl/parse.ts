// Validation of a model description (input form, or an already normalised ModelSpec) into a
// ModelSpec: every problem is collected with a stable code and a path, then thrown as one AesmError.
//
// Diagnostic codes (stable; never reuse a retired one):
//   AESM1001  invalid JSON syntax                                  (load.ts)
//   AESM1002  the model module failed to load or evaluate          (load.ts)
//   AESM1003  the model module exports no model                    (load.ts)
//   AESM1004  duplicate key in a JSON object                       (load.ts)
//   AESM1010  wrong type (object, array, string, boolean, number or integer expected)
//   AESM1011  unknown key
//   AESM1012  missing required key
//   AESM1013  unknown `kind`
//   AESM1014  unknown enum value (activation, aesm mask)
//   AESM1019  unsupported ModelSpec version
//   AESM1020  number not finite or not > 0 (eps)
//   AESM1021  integer or list length out of range (size < 1, size or length above the cap, k < 1, negative count)
//   AESM1030  nothing declared: no feature, scenario level or task
//   AESM1031  a scenario level with fewer than 2 values
//   AESM1032  an expert MLP with no units (experts need an output width)
//   AESM1040  invalid name (feature, level, value, task, model)
//   AESM1041  reserved name (`__proto__`, `constructor`, `prototype`)
//   AESM1042  duplicate name across features, scenario levels and tasks (they share the ONNX namespace)
//   AESM1043  duplicate value within a scenario level
//   AESM1050  selection larger than the layer: aesm specific/shared or topK k > experts
//   AESM1051  aesm selects nothing: specific + shared = 0
//   AESM1052  fixed: a `specific` key that is not a declared value (or task name)
//   AESM1053  fixed: expert index out of range
//   AESM1054  fixed: expert index repeated in one list
//   AESM1055  fixed: a value (or task) that selects no expert
//   AESM1099  too many problems; the rest are not listed

import { AesmError, type Diagnostic } from "../core/diagnostics.ts";
import {
  ACTIVATIONS,
  type Activation,
  type FeatureSpec,
  type GateSpec,
  type MlpSpec,
  type ModelSpec,
  type ScenarioLevelSpec,
  type SelectSpec,
  type TaskLayersSpec,
  type TaskSpec,
} from "./spec.ts";
import type { ModelInput } from "./builders.ts";

/** Names become tensor, weight and ONNX value names. */
export const NAME_PATTERN = /^[A-Za-z_][A-Za-z0-9_]*$/;
/** The model's own name may also become a file name, so `-` and `.` are allowed (not first). */
const MODEL_NAME_PATTERN = /^[A-Za-z0-9_][A-Za-z0-9_.-]*$/;
/** Names that would alias Object.prototype members wherever a later stage keys a plain object by name. */
const RESERVED_NAMES = new Set(["__proto__", "constructor", "prototype"]);
/** Every size (dims, vocab, units, experts, layers, k) must fit an int32 ONNX dimension. */
export const MAX_SIZE = 2 ** 31 - 1;
/** Longest list accepted (units, values, expert indices): bounds work on hostile input. */
export const MAX_LIST = 65_536;
/** Beyond this many problems the rest are summarised in one AESM1099. */
const MAX_DIAGNOSTICS = 100;

const DEFAULT_BN_EPS = 1e-3;
const DEFAULT_AESM_EPS = 1e-9;
const DEFAULT_MODEL_NAME = "model";

// ---- paths and value descriptions ----

/** `a.b`, `a.0`, or `a["odd key"]`, so a path stays unambiguous whatever the user named things. */
export function joinPath(path: string, key: string | number): string {
  if (typeof key === "number") return path === "" ? String(key) : `${path}.${key}`;
  if (NAME_PATTERN.test(key)) return path === "" ? key : `${path}.${key}`;
  return `${path}[${JSON.stringify(key)}]`;
}

function quote(s: string): string {
  const q = JSON.stringify(s);
  return q.length > 42 ? `${q.slice(0, 40)}…"` : q;
}

/** A short description of a value for "got …" messages. */
function describe(x: unknown): string {
  if (x === null) return "null";
  if (Array.isArray(x)) return "an array";
  switch (typeof x) {
    case "string":
      return quote(x);
    case "number":
    case "boolean":
    case "undefined":
      return String(x);
    case "bigint":
      return `${x}n`;
    case "function":
      return "a function";
    case "symbol":
      return "a symbol";
    default:
      return "an object";
  }
}

/** `"a"`, `"a" or "b"`, `"a", "b" or "c"`. */
function oneOf(options: readonly string[]): string {
  const q = options.map((o) => quote(o));
  return q.length <= 1 ? q.join("") : `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}`;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++)
      cur[j] = Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = cur;
  }
  return prev[b.length]!;
}

/** The closest allowed key, if close enough to be a likely typo (a few edits, or an abbreviation). */
function suggest(key: string, allowed: readonly string[]): string | undefined {
  const k = key.toLowerCase();
  let best: string | undefined;
  let bestD = Math.max(1, Math.floor(key.length / 3)) + 1;
  for (const a of allowed) {
    const d = editDistance(k, a.toLowerCase());
    if (d < bestD) [best, bestD] = [a, d];
  }
  if (best !== undefined || k.length < 3) return best;
  return allowed.find((a) => a.length >= 3 && (k.startsWith(a.toLowerCase()) || a.toLowerCase().startsWith(k)));
}

// ---- the problem collector ----

class Problems {
  readonly list: Diagnostic[] = [];
  private dropped = 0;
  constructor(private readonly file: string | undefined) {}

  add(code: string, path: string, message: string): void {
    if (this.list.length >= MAX_DIAGNOSTICS) {
      this.dropped++;
      return;
    }
    this.list.push({ code, path, message, ...(this.file !== undefined ? { file: this.file } : {}) });
  }

  get failed(): boolean {
    return this.list.length > 0;
  }

  error(): AesmError {
    const list = [...this.list];
    if (this.dropped > 0)
      list.push({
        code: "AESM1099",
        path: "",
        message: `too many problems; ${this.dropped} more not shown`,
        ...(this.file !== undefined ? { file: this.file } : {}),
      });
    return new AesmError(list);
  }
}

// ---- safe reading of untrusted data ----

type Obj = Record<string, unknown>;

function isObject(x: unknown): x is Obj {
  return typeof x === "object" && x !== null && !Array.isArray(x);
}

/** Own property only: an inherited `constructor` or a prototype set via `__proto__` is never read. */
function own(o: Obj, key: string): unknown {
  return Object.hasOwn(o, key) ? o[key] : undefined;
}

/** Build a record from entries without ever invoking the `__proto__` setter. */
function record<V>(entries: Iterable<readonly [string, V]>): Record<string, V> {
  return Object.fromEntries(entries) as Record<string, V>;
}

/** Reads one object-shaped part: checks its type and keys, and hands out its fields. */
class Reader {
  private constructor(
    private readonly p: Problems,
    readonly path: string,
    readonly o: Obj,
  ) {}

  /** `undefined` (after reporting) unless `x` is an object; unknown keys are reported here. */
  static of(p: Problems, x: unknown, path: string, keys: readonly string[]): Reader | undefined {
    if (!isObject(x)) {
      p.add("AESM1010", path, `${path === "" ? "model " : ""}must be an object, got ${describe(x)}`);
      return undefined;
    }
    for (const k of Object.keys(x)) {
      if (keys.includes(k)) continue;
      const guess = suggest(k, keys);
      p.add("AESM1011", joinPath(path, k), `unknown key ${quote(k)}${guess ? ` (did you mean ${quote(guess)}?)` : ""}`);
    }
    return new Reader(p, path, x);
  }

  at(key: string): string {
    return joinPath(this.path, key);
  }

  /** An absent key and an explicit `undefined` are the same (TypeScript optional semantics). */
  optional(key: string): unknown {
    return own(this.o, key);
  }

  required(key: string): unknown {
    const v = own(this.o, key);
    if (v === undefined) this.p.add("AESM1012", this.path, `missing required key ${quote(key)}`);
    return v;
  }
}

interface IntRange {
  min: number;
  max?: number;
}

/** An integer in [min, max] (max defaults to MAX_SIZE), or `undefined` after reporting. */
function readInt(p: Problems, x: unknown, path: string, range: IntRange): number | undefined {
  if (typeof x !== "number" || !Number.isInteger(x)) {
    p.add("AESM1010", path, `must be an integer, got ${describe(x)}`);
    return undefined;
  }
  if (x < range.min) {
    p.add("AESM1021", path, `must be ≥ ${range.min}, got ${x}`);
    return undefined;
  }
  const max = range.max ?? MAX_SIZE;
  if (x > max) {
    p.add("AESM1021", path, `must be ≤ ${max}, got ${x}`);
    return undefined;
  }
  return x + 0; // normalises -0
}

const SIZE: IntRange = { min: 1 };
const COUNT: IntRange = { min: 0 };

/** A finite number > 0 (epsilons). */
function readPositive(p: Problems, x: unknown, path: string): number | undefined {
  if (typeof x !== "number") {
    p.add("AESM1010", path, `must be a number, got ${describe(x)}`);
    return undefined;
  }
  if (!Number.isFinite(x)) {
    p.add("AESM1020", path, `must be finite, got ${x}`);
    return undefined;
  }
  if (!(x > 0)) {
    p.add("AESM1020", path, `must be > 0, got ${x}`);
    return undefined;
  }
  return x;
}

function readBool(p: Problems, x: unknown, path: string): boolean | undefined {
  if (typeof x !== "boolean") {
    p.add("AESM1010", path, `must be a boolean, got ${describe(x)}`);
    return undefined;
  }
  return x;
}

function readString(p: Problems, x: unknown, path: string): string | undefined {
  if (typeof x !== "string") {
    p.add("AESM1010", path, `must be a string, got ${describe(x)}`);
    return undefined;
  }
  return x;
}

/** An array of at most MAX_LIST items, copied (holes read as `undefined`). */
function readList(p: Problems, x: unknown, path: string): unknown[] | undefined {
  if (!Array.isArray(x)) {
    p.add("AESM1010", path, `must be an array, got ${describe(x)}`);
    return undefined;
  }
  if (x.length > MAX_LIST) {
    p.add("AESM1021", path, `must have at most ${MAX_LIST} items, got ${x.length}`);
    return undefined;
  }
  return Array.from({ length: x.length }, (_, i) => x[i]);
}

/** A list of integers in `range`; `undefined` if the list or any item is invalid. */
function readIntList(p: Problems, x: unknown, path: string, range: IntRange): number[] | undefined {
  const list = readList(p, x, path);
  if (!list) return undefined;
  const out = list.map((v, i) => readInt(p, v, joinPath(path, i), range));
  return out.every((v) => v !== undefined) ? (out as number[]) : undefined;
}

/**
 * An object tagged with `kind`: reads the kind first, then checks the keys that kind allows.
 * With a missing or unknown kind nothing else is reported: its keys cannot be judged.
 */
function readTagged<K extends string>(
  p: Problems,
  x: unknown,
  path: string,
  keysByKind: { readonly [k in K]: readonly string[] },
): { r: Reader; kind: K } | undefined {
  if (!isObject(x)) {
    p.add("AESM1010", path, `must be an object, got ${describe(x)}`);
    return undefined;
  }
  const kinds = Object.keys(keysByKind) as K[];
  const kind = own(x, "kind");
  if (kind === undefined) p.add("AESM1012", path, `missing required key "kind"`);
  else if (typeof kind !== "string")
    p.add("AESM1010", joinPath(path, "kind"), `must be a string, got ${describe(kind)}`);
  else if (!(kinds as string[]).includes(kind))
    p.add("AESM1013", joinPath(path, "kind"), `unknown kind ${quote(kind)} (expected ${oneOf(kinds)})`);
  else return { r: Reader.of(p, x, path, keysByKind[kind as K])!, kind: kind as K };
  return undefined;
}

function readEnum<E extends string>(
  p: Problems,
  x: unknown,
  path: string,
  options: readonly E[],
  what: string,
): E | undefined {
  if (typeof x !== "string") {
    p.add("AESM1010", path, `must be a string, got ${describe(x)}`);
    return undefined;
  }
  if (!(options as readonly string[]).includes(x)) {
    p.add("AESM1014", path, `unknown ${what} ${quote(x)} (expected ${oneOf(options)})`);
    return undefined;
  }
  return x as E;
}

/** Feature, level, value and task names: identifiers, not Object.prototype members. */
function checkName(p: Problems, name: string, path: string): boolean {
  if (!NAME_PATTERN.test(name)) {
    p.add("AESM1040", path, `invalid name ${quote(name)}: names must match ${NAME_PATTERN}`);
    return false;
  }
  if (RESERVED_NAMES.has(name)) {
    p.add("AESM1041", path, `reserved name ${quote(name)}`);
    return false;
  }
  return true;
}

// ---- the model parts ----
// Each reader returns its part, or `undefined` for a part it reported as invalid; dependent
// checks (a selection against `experts`) are skipped when what they depend on is invalid,
// so one mistake yields one diagnostic.

const FEATURE_KEYS = { categorical: ["kind", "vocab", "dim"], dense: ["kind", "dim"] } as const;

function readFeature(p: Problems, x: unknown, path: string, name: string): FeatureSpec | undefined {
  const t = readTagged(p, x, path, FEATURE_KEYS);
  if (!t) return undefined;
  if (t.kind === "dense") {
    const dim = readIntOpt(t.r, p, "dim", SIZE, true);
    return dim !== undefined ? { kind: "dense", name, dim } : undefined;
  }
  const vocab = readIntOpt(t.r, p, "vocab", SIZE, true);
  const dim = readIntOpt(t.r, p, "dim", SIZE, true);
  return vocab !== undefined && dim !== undefined ? { kind: "categorical", name, vocab, dim } : undefined;
}

/** Reads integer field `key`; an absent optional field yields `fallback`. */
function readIntOpt(
  r: Reader,
  p: Problems,
  key: string,
  range: IntRange,
  required: boolean,
  fallback?: number,
): number | undefined {
  const v = required ? r.required(key) : r.optional(key);
  if (v === undefined) return required ? undefined : fallback;
  return readInt(p, v, r.at(key), range);
}

function readBoolOpt(r: Reader, p: Problems, key: string, fallback: boolean): boolean | undefined {
  const v = r.optional(key);
  return v === undefined ? fallback : readBool(p, v, r.at(key));
}

/** Shared by MLPs and gates: act, batchNorm and bias with the MODEL.md §2 defaults. */
function readUnitSettings(r: Reader, p: Problems) {
  const actRaw = r.optional("act");
  const act: Activation | undefined =
    actRaw === undefined ? "relu" : readEnum(p, actRaw, r.at("act"), ACTIVATIONS, "activation");
  const batchNorm = readBoolOpt(r, p, "batchNorm", false);
  const bias = readBoolOpt(r, p, "bias", !(batchNorm ?? false));
  return { act, batchNorm, bias };
}

const UNIT_KEYS = ["kind", "units", "act", "batchNorm", "bias"] as const;

/** An MLP; experts need ≥ 1 unit (they define the layer's output width), towers may have none. */
function readMlp(p: Problems, x: unknown, path: string, needsUnits: boolean): MlpSpec | undefined {
  const r = readTagged(p, x, path, { mlp: UNIT_KEYS })?.r;
  if (!r) return undefined;
  const unitsRaw = r.required("units");
  const units = unitsRaw === undefined ? undefined : readIntList(p, unitsRaw, r.at("units"), SIZE);
  if (units && needsUnits && units.length === 0)
    p.add("AESM1032", r.at("units"), "must list at least one unit (an expert needs an output width)");
  const { act, batchNorm, bias } = readUnitSettings(r, p);
  if (!units || act === undefined || batchNorm === undefined || bias === undefined) return undefined;
  return { kind: "mlp", units, act, batchNorm, bias };
}

function readGate(p: Problems, x: unknown, path: string): GateSpec | undefined {
  if (x === undefined) return { kind: "gate", units: [], act: "relu", batchNorm: false, bias: true };
  const r = readTagged(p, x, path, { gate: UNIT_KEYS })?.r;
  if (!r) return undefined;
  const unitsRaw = r.optional("units");
  const units = unitsRaw === undefined ? [] : readIntList(p, unitsRaw, r.at("units"), SIZE);
  const { act, batchNorm, bias } = readUnitSettings(r, p);
  if (!units || act === undefined || batchNorm === undefined || bias === undefined) return undefined;
  return { kind: "gate", units, act, batchNorm, bias };
}

/** What `fixed.specific` may be keyed by in this layer: a level's values, or the task names. */
interface SelectDomain {
  /** `undefined` when the names themselves were invalid: key checks are then skipped. */
  names: string[] | undefined;
  /** "value" or "task", for messages. */
  noun: string;
}

const SELECT_KEYS = {
  aesm: ["kind", "specific", "shared", "eps", "mask"],
  all: ["kind"],
  topK: ["kind", "k"],
  fixed: ["kind", "specific", "shared"],
} as const;

function readSelect(
  p: Problems,
  x: unknown,
  path: string,
  experts: number | undefined,
  domain: SelectDomain,
): SelectSpec | undefined {
  const t = readTagged(p, x, path, SELECT_KEYS);
  if (!t) return undefined;
  const { r, kind } = t;

  /** ≤ experts, reported in the form users see most: `must be ≤ experts (8), got 9`. */
  const withinExperts = (n: number | undefined, at: string): number | undefined => {
    if (n === undefined || experts === undefined || n <= experts) return n;
    p.add("AESM1050", at, `must be ≤ experts (${experts}), got ${n}`);
    return undefined;
  };

  switch (kind) {
    case "all":
      return { kind };
    case "topK": {
      const k = withinExperts(readIntOpt(r, p, "k", SIZE, true), r.at("k"));
      return k === undefined ? undefined : { kind, k };
    }
    case "aesm": {
      const specific = withinExperts(readIntOpt(r, p, "specific", COUNT, true), r.at("specific"));
      const shared = withinExperts(readIntOpt(r, p, "shared", COUNT, true), r.at("shared"));
      if (specific !== undefined && shared !== undefined && specific + shared < 1)
        p.add("AESM1051", path, "specific + shared must be ≥ 1, got 0");
      const epsRaw = r.optional("eps");
      const eps = epsRaw === undefined ? DEFAULT_AESM_EPS : readPositive(p, epsRaw, r.at("eps"));
      const maskRaw = r.optional("mask");
      const mask =
        maskRaw === undefined ? "masked" : readEnum(p, maskRaw, r.at("mask"), ["masked", "reference"] as const, "mask");
      if (specific === undefined || shared === undefined || eps === undefined || mask === undefined) return undefined;
      return { kind, specific, shared, eps, mask };
    }
    case "fixed":
      return readFixed(p, r, experts, domain);
  }
}

function readFixed(
  p: Problems,
  r: Reader,
  experts: number | undefined,
  domain: SelectDomain,
): SelectSpec | undefined {
  let ok = true;
  /** A list of distinct expert indices in [0, experts). */
  const readExperts = (x: unknown, path: string): number[] | undefined => {
    const list = readList(p, x, path);
    if (!list) return undefined;
    const seen = new Set<number>();
    const out: number[] = [];
    list.forEach((v, i) => {
      const at = joinPath(path, i);
      if (typeof v !== "number" || !Number.isInteger(v)) {
        p.add("AESM1010", at, `must be an integer, got ${describe(v)}`);
        ok = false;
      } else if (v < 0) {
        p.add("AESM1053", at, `must be ≥ 0, got ${v}`);
        ok = false;
      } else if (experts !== undefined && v >= experts) {
        p.add("AESM1053", at, `must be < experts (${experts}), got ${v}`);
        ok = false;
      } else if (seen.has(v + 0)) {
        p.add("AESM1054", at, `duplicate expert ${v}`);
        ok = false;
      } else {
        seen.add(v + 0);
        out.push(v + 0);
      }
    });
    return out;
  };

  const given = new Map<string, number[]>();
  const specificRaw = r.optional("specific");
  const specificPath = r.at("specific");
  if (specificRaw !== undefined) {
    if (!isObject(specificRaw)) {
      p.add("AESM1010", specificPath, `must be an object, got ${describe(specificRaw)}`);
      ok = false;
    } else {
      for (const key of Object.keys(specificRaw)) {
        if (domain.names && !domain.names.includes(key)) {
          const guess = suggest(key, domain.names);
          p.add(
            "AESM1052",
            joinPath(specificPath, key),
            `unknown ${domain.noun} ${quote(key)} (expected ${oneOf(domain.names)})` +
              (guess ? `; did you mean ${quote(guess)}?` : ""),
          );
          ok = false;
          continue;
        }
        const list = readExperts(specificRaw[key], joinPath(specificPath, key));
        if (list) given.set(key, list);
        else ok = false;
      }
    }
  }
  const sharedRaw = r.optional("shared");
  const shared = sharedRaw === undefined ? [] : readExperts(sharedRaw, r.at("shared"));
  if (!shared) ok = false;
  if (!ok || !domain.names || experts === undefined) return undefined;

  // Every row must mix at least one expert, or its softmax would be over nothing.
  for (const name of domain.names)
    if ((given.get(name)?.length ?? 0) === 0 && shared!.length === 0) {
      p.add(
        "AESM1055",
        r.path,
        `${domain.noun} ${quote(name)} selects no experts (list it in specific, or make shared non-empty)`,
      );
      ok = false;
    }
  if (!ok) return undefined;
  // Canonical key order: the order the values (tasks) were declared.
  const specific = record(domain.names.filter((n) => given.has(n)).map((n) => [n, given.get(n)!] as const));
  return { kind: "fixed", specific, shared: shared! };
}

const LAYER_KEYS = ["layers", "experts", "expert", "gate", "select"] as const;

/** The fields a scenario level and the task layers share. */
function readExpertLayer(p: Problems, r: Reader, domain: SelectDomain) {
  const layers = readIntOpt(r, p, "layers", SIZE, false, 1);
  const experts = readIntOpt(r, p, "experts", SIZE, true);
  const expertRaw = r.required("expert");
  const expert = expertRaw === undefined ? undefined : readMlp(p, expertRaw, r.at("expert"), true);
  const gate = readGate(p, r.optional("gate"), r.at("gate"));
  const selectRaw = r.required("select");
  const select = selectRaw === undefined ? undefined : readSelect(p, selectRaw, r.at("select"), experts, domain);
  return { layers, experts, expert, gate, select };
}

function readLevel(p: Problems, x: unknown, path: string, name: string): ScenarioLevelSpec | undefined {
  const r = Reader.of(p, x, path, ["values", "dim", ...LAYER_KEYS]);
  if (!r) return undefined;
  const valuesRaw = r.required("values");
  let values: string[] | undefined;
  if (valuesRaw !== undefined) {
    const list = readList(p, valuesRaw, r.at("values"));
    if (list) {
      const seen = new Set<string>();
      let ok = true;
      list.forEach((v, i) => {
        const at = joinPath(r.at("values"), i);
        const s = readString(p, v, at);
        if (s === undefined || !checkName(p, s, at)) ok = false;
        else if (seen.has(s)) {
          p.add("AESM1043", at, `duplicate value ${quote(s)}`);
          ok = false;
        } else seen.add(s);
      });
      if (list.length < 2) {
        // One value means one gate and nothing to select between: not a scenario level.
        p.add("AESM1031", r.at("values"), `must list at least 2 values, got ${list.length}`);
        ok = false;
      }
      if (ok) values = list as string[];
    }
  }
  const dim = readIntOpt(r, p, "dim", SIZE, true);
  const layer = readExpertLayer(p, r, { names: values, noun: "value" });
  if (!values || dim === undefined) return undefined;
  return complete<ScenarioLevelSpec>({ name, values, dim, ...layer });
}

/** The assembled part, or `undefined` if any field was invalid (already reported). */
function complete<T extends object>(part: { [K in keyof T]: T[K] | undefined }): T | undefined {
  return Object.values(part).every((v) => v !== undefined) ? (part as T) : undefined;
}

function readTask(p: Problems, x: unknown, path: string, name: string): TaskSpec | undefined {
  const r = Reader.of(p, x, path, ["tower"]);
  if (!r) return undefined;
  const towerRaw = r.required("tower");
  const tower = towerRaw === undefined ? undefined : readMlp(p, towerRaw, r.at("tower"), false);
  return tower ? { name, tower } : undefined;
}

function readTaskLayers(
  p: Problems,
  x: unknown,
  path: string,
  tasks: string[] | undefined,
): TaskLayersSpec | undefined {
  const r = Reader.of(p, x, path, ["dim", ...LAYER_KEYS]);
  if (!r) return undefined;
  const dim = readIntOpt(r, p, "dim", SIZE, true);
  const layer = readExpertLayer(p, r, { names: tasks, noun: "task" });
  if (dim === undefined) return undefined;
  return complete<TaskLayersSpec>({ dim, ...layer });
}

/**
 * Reads a record of named parts (features, levels, tasks) in declaration order.
 * `names` records every name seen so far across kinds: they share the ONNX graph's namespace.
 */
function readNamed<T>(
  p: Problems,
  x: unknown,
  path: string,
  noun: string,
  names: Map<string, string>,
  readOne: (x: unknown, path: string, name: string) => T | undefined,
): T[] | undefined {
  if (!isObject(x)) {
    p.add("AESM1010", path, `must be an object, got ${describe(x)}`);
    return undefined;
  }
  const keys = Object.keys(x);
  if (keys.length === 0) {
    p.add("AESM1030", path, `must declare at least one ${noun}`);
    return undefined;
  }
  let ok = true;
  const out: T[] = [];
  for (const key of keys) {
    const at = joinPath(path, key);
    if (!checkName(p, key, at)) ok = false;
    else if (names.has(key)) {
      const clash = `name ${quote(key)} is already used by ${names.get(key)}`;
      p.add("AESM1042", at, `${clash} (features, scenario levels and tasks share one namespace)`);
      ok = false;
    } else names.set(key, `${noun} ${quote(key)}`);
    const part = readOne(x[key], at, key);
    if (part === undefined) ok = false;
    else out.push(part);
  }
  return ok ? out : undefined;
}

function readInput(p: Problems, x: unknown): ModelSpec | undefined {
  const r = Reader.of(p, x, "", ["name", "features", "scenarios", "tasks", "taskLayers", "batchNorm"]);
  if (!r) return undefined;

  const nameRaw = r.optional("name");
  let name: string | undefined = DEFAULT_MODEL_NAME;
  if (nameRaw !== undefined) {
    name = readString(p, nameRaw, "name");
    if (name !== undefined && !MODEL_NAME_PATTERN.test(name)) {
      p.add("AESM1040", "name", `invalid name ${quote(name)}: model names must match ${MODEL_NAME_PATTERN}`);
      name = undefined;
    }
  }

  const names = new Map<string, string>();
  const features = readRequired(r, "features", (v) =>
    readNamed(p, v, "features", "feature", names, (f, at, n) => readFeature(p, f, at, n)),
  );
  const scenarios = readRequired(r, "scenarios", (v) =>
    readNamed(p, v, "scenarios", "scenario level", names, (l, at, n) => readLevel(p, l, at, n)),
  );
  const tasks = readRequired(r, "tasks", (v) =>
    readNamed(p, v, "tasks", "task", names, (t, at, n) => readTask(p, t, at, n)),
  );

  // `fixed` keys in task layers are checked against the task names when those are all valid
  // (a bad tower elsewhere does not matter); otherwise key checks would only add noise.
  const tasksRaw = r.optional("tasks");
  const taskKeys = isObject(tasksRaw) ? Object.keys(tasksRaw) : [];
  const taskNames =
    taskKeys.length > 0 && taskKeys.every((k) => NAME_PATTERN.test(k) && !RESERVED_NAMES.has(k)) ? taskKeys : undefined;
  const tlRaw = r.optional("taskLayers");
  // `null` and absent both mean: towers read the last scenario layer directly.
  const taskLayers = tlRaw === undefined || tlRaw === null ? null : readTaskLayers(p, tlRaw, "taskLayers", taskNames);

  let eps: number | undefined = DEFAULT_BN_EPS;
  const bnRaw = r.optional("batchNorm");
  if (bnRaw !== undefined) {
    const bn = Reader.of(p, bnRaw, "batchNorm", ["eps"]);
    const epsRaw = bn?.optional("eps");
    eps = !bn ? undefined : epsRaw === undefined ? DEFAULT_BN_EPS : readPositive(p, epsRaw, "batchNorm.eps");
  }

  if (!name || !features || !scenarios || !tasks || taskLayers === undefined || eps === undefined) return undefined;
  return { kind: "aesm.model", version: 1, name, features, scenarios, tasks, taskLayers, batchNorm: { eps } };
}

function readRequired<T>(r: Reader, key: string, read: (v: unknown) => T | undefined): T | undefined {
  const v = r.required(key);
  return v === undefined ? undefined : read(v);
}

// ---- the normalised form as input ----

/**
 * A ModelSpec (`kind: "aesm.model"`, e.g. what defineModel returned, or a dumped spec) is turned
 * back into the input form and validated like any input, so nothing is trusted on its say-so.
 * Structural problems (the named arrays) are reported here; everything else by readInput.
 */
function specFormToInput(p: Problems, o: Obj): unknown {
  const version = own(o, "version");
  if (version !== 1) p.add("AESM1019", "version", `unsupported model spec version ${describe(version)} (expected 1)`);

  const named = (key: string): unknown => {
    const x = own(o, key);
    if (!Array.isArray(x)) {
      p.add("AESM1010", key, `must be an array, got ${describe(x)}`);
      return undefined;
    }
    const entries: [string, Obj][] = [];
    const seen = new Set<string>();
    x.forEach((item: unknown, i) => {
      const at = joinPath(key, i);
      const name = isObject(item) ? own(item, "name") : undefined;
      if (typeof name !== "string") {
        p.add("AESM1010", at, `must be an object with a string "name", got ${describe(item)}`);
        return;
      }
      if (seen.has(name)) p.add("AESM1042", at, `duplicate name ${quote(name)}`);
      seen.add(name);
      entries.push([name, record(Object.entries(item as Obj).filter(([k]) => k !== "name"))]);
    });
    return record(entries);
  };

  const input = record(Object.entries(o).filter(([k]) => k !== "kind" && k !== "version"));
  for (const key of ["features", "scenarios", "tasks"]) input[key] = named(key);
  return input;
}

/**
 * Validate a model description and return the normalised ModelSpec.
 * Accepts the input form (builders' output or a parsed JSON model file) or a ModelSpec.
 * Throws one AesmError with every problem found; `file` is recorded on each diagnostic.
 */
export function parseModel(input: unknown, file?: string): ModelSpec {
  const p = new Problems(file);
  let src = input;
  if (isObject(input) && own(input, "kind") === "aesm.model") {
    src = specFormToInput(p, input);
    if (p.failed) throw p.error();
  }
  const spec = readInput(p, src);
  if (p.failed || !spec) throw p.error();
  return spec;
}

// ---- back to the input form ----

function mlpInput(m: MlpSpec) {
  return { kind: m.kind, units: [...m.units], act: m.act, batchNorm: m.batchNorm, bias: m.bias };
}

function gateInput(g: GateSpec) {
  return { kind: g.kind, units: [...g.units], act: g.act, batchNorm: g.batchNorm, bias: g.bias };
}

function selectInput(s: SelectSpec) {
  switch (s.kind) {
    case "aesm":
      return { kind: s.kind, specific: s.specific, shared: s.shared, eps: s.eps, mask: s.mask };
    case "all":
      return { kind: s.kind };
    case "topK":
      return { kind: s.kind, k: s.k };
    case "fixed":
      return {
        kind: s.kind,
        specific: record(Object.entries(s.specific).map(([k, v]) => [k, [...v]] as const)),
        shared: [...s.shared],
      };
  }
}

function layerInput(l: TaskLayersSpec | ScenarioLevelSpec) {
  return {
    layers: l.layers,
    experts: l.experts,
    expert: mlpInput(l.expert),
    gate: gateInput(l.gate),
    select: selectInput(l.select),
  };
}

/**
 * The JSON input form of a spec, every default written out (`parseModel` of it deep-equals `spec`).
 * This is what a `.json` model file holds.
 */
export function toModelInput(spec: ModelSpec): ModelInput {
  const out: ModelInput = {
    name: spec.name,
    features: record(
      spec.features.map((f) => [
        f.name,
        f.kind === "categorical" ? { kind: f.kind, vocab: f.vocab, dim: f.dim } : { kind: f.kind, dim: f.dim },
      ] as const),
    ),
    scenarios: record(
      spec.scenarios.map((l) => [l.name, { values: [...l.values], dim: l.dim, ...layerInput(l) }] as const),
    ),
    tasks: record(spec.tasks.map((t) => [t.name, { tower: mlpInput(t.tower) }] as const)),
  };
  if (spec.taskLayers) out.taskLayers = { dim: spec.taskLayers.dim, ...layerInput(spec.taskLayers) };
  out.batchNorm = { eps: spec.batchNorm.eps };
  return out;
}
