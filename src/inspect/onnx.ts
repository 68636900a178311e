// What an ONNX file holds, read straight from its ModelProto (any producer's, not only aesm's):
// IR version and opsets, inputs and outputs with shapes, an op histogram, initializer sizes, and,
// for a model aesm compiled, the spec and compiler version recorded in metadata_props.

import { readFileSync } from "node:fs";
import { AesmError, userError } from "../core/diagnostics.ts";
import { parseModel } from "../dsl/parse.ts";
import { decodeModel } from "../backends/onnx/index.ts";
import { onnxDtypeName } from "../backends/onnx/opsets.ts";
import { type IoReport, type ModelReport, inspectSpec } from "./model.ts";

/** Keys `compile` writes into metadata_props (src/compile.ts). */
export const METADATA_VERSION_KEY = "aesm.version";
export const METADATA_MODEL_KEY = "aesm.model";

export interface OnnxReport {
  irVersion: number;
  /** Opset per domain; `""` is the default domain (ai.onnx). */
  opsets: { domain: string; version: number }[];
  producer: { name: string; version: string };
  graphName: string;
  inputs: IoReport[];
  outputs: IoReport[];
  /** Nodes per op type (`domain.Op` outside the default domain), most frequent first. */
  ops: { op: string; count: number }[];
  nodes: number;
  initializers: { tensors: number; values: number };
  /** All metadata_props, in file order. */
  metadata: { key: string; value: string }[];
  /** Present when the file says aesm made it. */
  aesm?: {
    compilerVersion?: string;
    /** The model spec recorded at compile time, as a report; absent if the record is unreadable. */
    model?: ModelReport;
    /** Why the recorded spec could not be read, if it could not. */
    modelError?: string;
  };
}

type Long = { toNumber(): number };
const num = (x: number | Long | null | undefined): number => (x == null ? 0 : typeof x === "number" ? x : x.toNumber());

interface ValueInfoLike {
  name?: string | null;
  type?: { tensorType?: { elemType?: number | null; shape?: { dim?: { dimValue?: number | Long | null; dimParam?: string | null }[] | null } | null } | null } | null;
}

function ioReport(v: ValueInfoLike): IoReport {
  const tt = v.type?.tensorType;
  if (!tt) return { name: v.name ?? "", dtype: "(not a tensor)", shape: [] };
  const shape = (tt.shape?.dim ?? []).map((d) => (d.dimParam ? d.dimParam : d.dimValue != null ? num(d.dimValue) : "?"));
  return { name: v.name ?? "", dtype: onnxDtypeName(tt.elemType ?? 0), shape };
}

/** Inspect ONNX bytes. AESM3003 when they are not an ONNX model. */
export function inspectOnnxBytes(bytes: Uint8Array, file?: string): OnnxReport {
  const model = decodeModel(bytes, file);
  const graph = model.graph!;

  const histogram = new Map<string, number>();
  for (const n of graph.node ?? []) {
    const op = n.domain && n.domain !== "ai.onnx" ? `${n.domain}.${n.opType ?? "?"}` : (n.opType ?? "?");
    histogram.set(op, (histogram.get(op) ?? 0) + 1);
  }
  const ops = [...histogram].map(([op, count]) => ({ op, count })).sort((a, b) => b.count - a.count || (a.op < b.op ? -1 : 1));

  // Graph inputs that are also initializers are constants with a default, not inputs a caller feeds.
  const initNames = new Set((graph.initializer ?? []).map((t) => t.name ?? ""));
  const values = (graph.initializer ?? []).reduce((n, t) => n + (t.dims ?? []).reduce<number>((a, d) => a * num(d), 1), 0);
  const metadata = (model.metadataProps ?? []).map((p) => ({ key: p.key ?? "", value: p.value ?? "" }));

  const report: OnnxReport = {
    irVersion: num(model.irVersion),
    opsets: (model.opsetImport ?? []).map((o) => ({ domain: o.domain ?? "", version: num(o.version) })),
    producer: { name: model.producerName ?? "", version: model.producerVersion ?? "" },
    graphName: graph.name ?? "",
    inputs: (graph.input ?? []).filter((v) => !initNames.has(v.name ?? "")).map(ioReport),
    outputs: (graph.output ?? []).map(ioReport),
    ops,
    nodes: graph.node?.length ?? 0,
    initializers: { tensors: graph.initializer?.length ?? 0, values },
    metadata,
  };

  const version = metadata.find((m) => m.key === METADATA_VERSION_KEY)?.value;
  const spec = metadata.find((m) => m.key === METADATA_MODEL_KEY)?.value;
  if (version !== undefined || spec !== undefined || report.producer.name === "aesm") {
    report.aesm = {};
    if (version !== undefined) report.aesm.compilerVersion = version;
    if (spec !== undefined) {
      try {
        report.aesm.model = inspectSpec(parseModel(JSON.parse(spec)));
      } catch (e) {
        const why = e instanceof AesmError ? e.diagnostics.map((d) => `${d.path ? `${d.path}: ` : ""}${d.message}`).join("; ") : (e as Error).message;
        report.aesm.modelError = `metadata "${METADATA_MODEL_KEY}" is not a valid model: ${why}`;
      }
    }
  }
  return report;
}

/** Inspect an ONNX file: AESM4001 if it cannot be read, AESM3003 if it is not ONNX. */
export function inspectOnnxFile(path: string): OnnxReport {
  let bytes: Buffer;
  try {
    bytes = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw userError("AESM4001", "", code === "ENOENT" ? "no such file" : `cannot read: ${code ?? String(e)}`, path);
  }
  return inspectOnnxBytes(bytes, path);
}
