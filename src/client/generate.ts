// The typed client for a compiled model (`compile --emit-client`): a TypeScript module, built
// with ts-morph and formatted, whose `predict(rows)` takes rows typed by the model's own names.
//
// The generated module imports only onnxruntime-node, so it can be copied into a service that
// does not depend on aesm. What depends on the model (the Row and Prediction types, the input
// table) is built from the spec; the batching and row checks are the same text for every model.

import { dirname, relative, sep } from "node:path";
import { writeFileAtomic } from "../core/atomic.ts";
import type { FeatureSpec, ModelSpec } from "../dsl/spec.ts";
import { AESM_VERSION } from "../version.ts";

export interface ClientOptions {
  /**
   * The ONNX file as the client should find it, relative to the client module (`model.onnx`,
   * `../build/model.onnx`). The client resolves it against its own URL, so the pair can move together.
   */
  modelFile: string;
  /** Where the model was described, for the header comment. */
  source?: string;
}

/** Format as the repo's own code: 2 spaces, no tabs. */
const FORMAT = { indentSize: 2, tabSize: 2, convertTabsToSpaces: true, ensureNewLineAtEndOfFile: true } as const;

const q = (s: string) => JSON.stringify(s);

function featureDoc(f: FeatureSpec): string {
  return f.kind === "categorical"
    ? `Categorical id (\`number\` or \`bigint\`), vocabulary [0, ${f.vocab}); ids outside it read a zero embedding.`
    : `Dense feature: exactly ${f.dim} finite number${f.dim === 1 ? "" : "s"}.`;
}

/** The client module's source text for `spec`. */
export async function generateClient(spec: ModelSpec, options: ClientOptions): Promise<string> {
  const { Project, StructureKind, VariableDeclarationKind } = await import("ts-morph");
  const project = new Project({ useInMemoryFileSystem: true, compilerOptions: { strict: true } });
  const sf = project.createSourceFile("client.ts", "");

  sf.addImportDeclaration({ namespaceImport: "ort", moduleSpecifier: "onnxruntime-node" });

  sf.addInterface({
    name: "Row",
    isExported: true,
    docs: ["One input row: every feature and scenario level of the model, by name."],
    properties: [
      ...spec.features.map((f) => ({
        name: f.name,
        isReadonly: true,
        type: f.kind === "categorical" ? "number | bigint" : "readonly number[]",
        docs: [featureDoc(f)],
      })),
      ...spec.scenarios.map((l, i) => ({
        name: l.name,
        isReadonly: true,
        type: l.values.map(q).join(" | "),
        docs: [`Scenario level ${i}${i === 0 ? " (outermost)" : ""}.`],
      })),
    ],
  });
  sf.addInterface({
    name: "Prediction",
    isExported: true,
    docs: ["One probability per row and task, in row order."],
    properties: spec.tasks.map((t) => ({ name: t.name, isReadonly: true, type: "Float32Array" })),
  });

  sf.addVariableStatements([
    {
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: ["The ONNX file this client was generated for, relative to this module."],
      declarations: [{ name: "MODEL_FILE", initializer: q(options.modelFile) }],
    },
    {
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: ["Each scenario level's values, in index order (the model receives the index)."],
      declarations: [
        {
          name: "SCENARIOS",
          initializer: `{ ${spec.scenarios.map((l) => `${l.name}: [${l.values.map(q).join(", ")}]`).join(", ")} } as const`,
        },
      ],
    },
    {
      isExported: true,
      declarationKind: VariableDeclarationKind.Const,
      docs: ["The model's tasks: one output each."],
      declarations: [{ name: "TASKS", initializer: `[${spec.tasks.map((t) => q(t.name)).join(", ")}] as const` }],
    },
  ]);

  sf.addClass({
    kind: StructureKind.Class,
    name: "InvalidRowError",
    isExported: true,
    extends: "Error",
    docs: ["A row that does not fit the model: `row` is its 0-based index, `field` the offending input."],
    ctors: [
      {
        parameters: [
          { name: "row", type: "number", isReadonly: true },
          { name: "field", type: "string", isReadonly: true },
          { name: "detail", type: "string" },
        ],
        statements: ["super(`row ${row}: ${field}: ${detail}`);", 'this.name = "InvalidRowError";'],
      },
    ],
  });

  sf.addTypeAlias({
    name: "Input",
    docs: ["How one graph input is read from a row (MODEL.md §8: features in order, then scenario levels)."],
    type: [
      "",
      '{ readonly name: string; readonly kind: "categorical" }',
      '{ readonly name: string; readonly kind: "dense"; readonly dim: number }',
      '{ readonly name: string; readonly kind: "scenario"; readonly values: readonly string[] }',
    ].join("\n| "),
  });
  const inputs = [
    ...spec.features.map((f) =>
      f.kind === "categorical" ? `{ name: ${q(f.name)}, kind: "categorical" }` : `{ name: ${q(f.name)}, kind: "dense", dim: ${f.dim} }`,
    ),
    ...spec.scenarios.map((l) => `{ name: ${q(l.name)}, kind: "scenario", values: SCENARIOS.${l.name} }`),
  ];
  sf.addVariableStatement({
    declarationKind: VariableDeclarationKind.Const,
    declarations: [{ name: "INPUTS", type: "readonly Input[]", initializer: `[\n${inputs.map((i) => `${i},\n`).join("")}]` }],
  });

  sf.addStatements(RUNTIME);

  sf.addFunction({
    name: "toPrediction",
    docs: ["The task outputs of one run, as float32 arrays."],
    parameters: [{ name: "out", type: "ort.InferenceSession.OnnxValueMapType" }, { name: "rows", type: "number" }],
    returnType: "Prediction",
    statements: `return { ${spec.tasks.map((t) => `${t.name}: output(out, ${q(t.name)}, rows)`).join(", ")} };`,
  });

  sf.addStatements(SESSION);

  // The header goes in last: ts-morph puts imports first, above any leading comment.
  sf.insertText(0, [
    `// Typed client for the aesm model ${q(spec.name)}${options.source ? ` (${options.source})` : ""}, generated by aesm ${AESM_VERSION}`,
    "// with `aesm compile --emit-client`. Do not edit: regenerate it when the model changes.",
    "// An ES module that needs only onnxruntime-node; rows are checked before they reach the model.",
    "",
    "",
  ].join("\n"));
  sf.formatText(FORMAT);
  return sf.getFullText();
}

/**
 * Write the client for `spec` to `clientPath`, pointing at the ONNX file at `onnxPath`
 * (both as paths from the current folder), atomically.
 */
export async function writeClient(spec: ModelSpec, clientPath: string, onnxPath: string, source?: string): Promise<void> {
  let modelFile = relative(dirname(clientPath), onnxPath).split(sep).join("/");
  if (!modelFile.startsWith(".")) modelFile = `./${modelFile}`;
  const text = await generateClient(spec, { modelFile, ...(source !== undefined ? { source } : {}) });
  writeFileAtomic(clientPath, text);
}

/** `compile --emit-client`: write the client and return the line the CLI prints. */
export async function emitClient(spec: ModelSpec, clientPath: string, onnxPath: string, source?: string): Promise<string> {
  await writeClient(spec, clientPath, onnxPath, source);
  return `wrote ${clientPath}: typed client for ${onnxPath} (predict(rows) → ${spec.tasks.map((t) => t.name).join(", ")})\n`;
}

// ---- the model-independent part of the client ----

/** Row checking and batching: the same for every model, driven by INPUTS. */
const RUNTIME = `
const INT64_MIN = -(2n ** 63n);
const INT64_MAX = 2n ** 63n - 1n;

/** A value as a message shows it: strings quoted, bigints with \`n\`. */
function show(x: unknown): string {
  if (typeof x === "string") return JSON.stringify(x);
  if (typeof x === "bigint") return \`\${x}n\`;
  if (Array.isArray(x)) return \`an array of \${x.length}\`;
  if (x === null || typeof x !== "object") return String(x);
  return "an object";
}

/** An int64 id from a row: a safe integer number, or a bigint in the int64 range. */
function readId(x: unknown, row: number, field: string): bigint {
  if (typeof x === "bigint" && x >= INT64_MIN && x <= INT64_MAX) return x;
  if (typeof x === "number" && Number.isSafeInteger(x)) return BigInt(x);
  throw new InvalidRowError(row, field, \`must be an integer id (a safe integer number or an int64 bigint), got \${show(x)}\`);
}

/**
 * The rows as the graph's input tensors: int64 [B] ids and scenario indices, float32 [B, dim]
 * dense features. Checks every row, in order, and throws InvalidRowError at the first bad field.
 */
export function toFeeds(rows: readonly Row[]): Record<string, ort.Tensor> {
  if (!Array.isArray(rows)) throw new TypeError(\`rows must be an array, got \${show(rows)}\`);
  const B = rows.length;
  const data = INPUTS.map((input) => (input.kind === "dense" ? new Float32Array(B * input.dim) : new BigInt64Array(B)));
  // An index loop, not forEach: a hole in a sparse array is a missing row, not a skipped one.
  for (let r = 0; r < B; r++) {
    const row: unknown = rows[r];
    if (typeof row !== "object" || row === null || Array.isArray(row))
      throw new TypeError(\`row \${r}: must be an object with the model's inputs, got \${show(row)}\`);
    const fields = row as Record<string, unknown>;
    INPUTS.forEach((input, i) => {
      const x = Object.prototype.hasOwnProperty.call(fields, input.name) ? fields[input.name] : undefined;
      if (x === undefined) throw new InvalidRowError(r, input.name, "missing");
      const out = data[i]!;
      if (input.kind === "categorical") {
        (out as BigInt64Array)[r] = readId(x, r, input.name);
      } else if (input.kind === "scenario") {
        const index = typeof x === "string" ? input.values.indexOf(x) : -1;
        if (index < 0)
          throw new InvalidRowError(r, input.name, \`\${show(x)} is not one of \${input.values.map((v) => JSON.stringify(v)).join(", ")}\`);
        (out as BigInt64Array)[r] = BigInt(index);
      } else {
        if (!Array.isArray(x) || x.length !== input.dim)
          throw new InvalidRowError(r, input.name, \`must be an array of \${input.dim} numbers, got \${show(x)}\`);
        for (let d = 0; d < input.dim; d++) {
          const v: unknown = x[d];
          if (typeof v !== "number" || !Number.isFinite(v))
            throw new InvalidRowError(r, \`\${input.name}[\${d}]\`, \`must be a finite number, got \${show(v)}\`);
          (out as Float32Array)[r * input.dim + d] = v;
        }
      }
    });
  }
  const feeds: Record<string, ort.Tensor> = {};
  INPUTS.forEach((input, i) => {
    feeds[input.name] =
      input.kind === "dense"
        ? new ort.Tensor("float32", data[i] as Float32Array, [B, input.dim])
        : new ort.Tensor("int64", data[i] as BigInt64Array, [B]);
  });
  return feeds;
}

/** Output \`name\` of a run as float32 values, one per row. */
function output(out: ort.InferenceSession.OnnxValueMapType, name: string, rows: number): Float32Array {
  const t = out[name];
  const d = t?.data;
  if (!(d instanceof Float32Array) || d.length !== rows)
    throw new Error(\`the model returned no \${rows}-value float32 output "\${name}"; was it compiled from this model?\`);
  return d;
}
`;

/** Sessions: one per createRanker, plus the lazily opened one behind \`predict\`. */
const SESSION = `
/** A loaded model. */
export interface Ranker {
  /** Probabilities per task, in row order. Throws InvalidRowError for a row that does not fit. */
  predict(rows: readonly Row[]): Promise<Prediction>;
  /** Release the onnxruntime session. */
  close(): Promise<void>;
}

/** The default model path: MODEL_FILE next to this module. */
function defaultModelPath(): string {
  const url = new URL(MODEL_FILE.split("/").map(encodeURIComponent).join("/"), import.meta.url);
  const path = decodeURIComponent(url.pathname);
  return /^\\/[A-Za-z]:\\//.test(path) ? path.slice(1) : path; // file:///C:/… on Windows
}

/** Open the model (by default MODEL_FILE next to this module) in an onnxruntime session. */
export async function createRanker(modelPath: string = defaultModelPath(), options: ort.InferenceSession.SessionOptions = {}): Promise<Ranker> {
  const session = await ort.InferenceSession.create(modelPath, options);
  return {
    async predict(rows: readonly Row[]): Promise<Prediction> {
      const feeds = toFeeds(rows);
      // An empty batch has nothing to compute; some runtimes reject a zero-sized dimension.
      const out = rows.length === 0 ? emptyOutputs() : await session.run(feeds, [...TASKS]);
      return toPrediction(out, rows.length);
    },
    close: () => session.release(),
  };
}

function emptyOutputs(): ort.InferenceSession.OnnxValueMapType {
  const out: Record<string, ort.Tensor> = {};
  for (const task of TASKS) out[task] = new ort.Tensor("float32", new Float32Array(0), [0]);
  return out;
}

let shared: Promise<Ranker> | undefined;

/** \`createRanker().predict(rows)\` on a session opened on first use and kept for the process. */
export async function predict(rows: readonly Row[]): Promise<Prediction> {
  if (!shared) {
    shared = createRanker();
    shared.catch(() => (shared = undefined)); // a failed open is retried on the next call
  }
  return (await shared).predict(rows);
}
`;
