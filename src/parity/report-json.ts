// The `--json` report: a versioned, documented shape (docs/parity.md, and the JSON Schema in
// PARITY_REPORT_SCHEMA) for CI gates. Non-finite numbers become the strings "Infinity", "-Infinity", "NaN".

import { AESM_VERSION } from "../version.ts";
import { HISTOGRAM_BUCKETS } from "./compare.ts";
import type { ParityResult } from "./run.ts";

export const PARITY_SCHEMA_ID = "aesm.parity/v1";

/** Where the run's model, weights, ONNX and inputs came from (the result does not know files). */
export interface ReportContext {
  modelFile: string;
  weightsFile: string;
  onnxFile: string;
  inputs: { source: "generated"; seed: number } | { source: "file"; file: string };
  /** Fixed in tests; default now. */
  createdAt?: Date;
}

/** JSON has no Infinity or NaN: write them as strings a reader can tell apart from numbers. */
function num(x: number): number | string {
  return Number.isFinite(x) ? x : String(x);
}

function stats(s: { max: number; mean: number; median: number; p99: number }) {
  return { max: num(s.max), mean: num(s.mean), median: num(s.median), p99: num(s.p99) };
}

export function parityReportJson(r: ParityResult, ctx: ReportContext): Record<string, unknown> {
  return {
    schema: PARITY_SCHEMA_ID,
    aesm: AESM_VERSION,
    createdAt: (ctx.createdAt ?? new Date()).toISOString(),
    pass: r.pass,
    model: { name: r.model, file: ctx.modelFile, weights: ctx.weightsFile, onnx: ctx.onnxFile },
    inputs: {
      source: ctx.inputs.source,
      file: ctx.inputs.source === "file" ? ctx.inputs.file : null,
      seed: ctx.inputs.source === "generated" ? ctx.inputs.seed : null,
      rows: r.rows,
      coverage: r.coverage,
    },
    settings: {
      precision: r.precision,
      rule: "an element fails when |candidate - baseline| > atol and |candidate - baseline| / |baseline| > rtol",
      tolerances: r.tolerances,
      nearTie: r.nearTie,
      rmse: { multiplier: r.rmseMultiplier, floor: "atol/10", fp32Rows: r.fp32Rows },
      float32SuspectRows: r.float32Rows.suspects,
      histogramBuckets: [...HISTOGRAM_BUCKETS],
    },
    runs: r.runs.map((x) => ({ ...x })),
    comparisons: r.comparisons.map((c) => ({
      id: c.id,
      kind: c.kind,
      baseline: c.baseline,
      candidate: c.candidate,
      gating: c.gating,
      pass: c.pass,
      outputs: c.outputs.map((o) => ({
        name: o.name,
        atol: o.tolerance.atol,
        rtol: o.tolerance.rtol,
        count: o.count,
        checked: o.checked,
        failures: o.failures,
        pass: o.pass,
        abs: stats(o.abs),
        rel: stats(o.rel),
        ulp: stats(o.ulp),
        nan: o.nan,
        inf: o.inf,
        nonFiniteMismatches: o.nonFiniteMismatches,
        minPassingAtol: num(o.minPassingAtol),
        minPassingRtol: num(o.minPassingRtol),
        histogram: [...o.histogram],
        excused: {
          rows: o.excused.rows,
          nearTieRows: o.excused.nearTieRows,
          float32Rows: o.excused.float32Rows,
          failures: o.excused.failures,
          maxAbs: num(o.excused.maxAbs),
        },
        rmse: o.rmse
          ? {
              rows: o.rmse.rows,
              candidate: num(o.rmse.candidate),
              fp32: num(o.rmse.fp32),
              multiplier: o.rmse.multiplier,
              floor: o.rmse.floor,
              bound: num(o.rmse.bound),
              pass: o.rmse.pass,
            }
          : null,
        worst: o.worst.map((w) => ({
          row: w.row,
          reference: num(w.reference),
          candidate: num(w.candidate),
          abs: num(w.abs),
          rel: num(w.rel),
          ulp: num(w.ulp),
          scenario: w.scenario ?? {},
        })),
      })),
      selections: c.selections.map((s) => ({
        layer: s.layer,
        experts: s.experts,
        rows: s.rows,
        agree: s.agree,
        agreeFraction: s.agreeFraction,
        nearTies: s.nearTies,
        float32Unstable: s.float32Unstable,
        disagree: s.disagree,
        nearTieRows: s.nearTieRows,
        maxWeightError: num(s.maxWeightError),
        examples: s.examples.map((e) => ({
          row: e.row,
          kind: e.kind,
          margin: num(e.margin),
          reference: e.reference,
          candidate: e.candidate,
          scenario: e.scenario ?? {},
        })),
      })),
      selectionsUnavailable: [...c.selectionsUnavailable],
    })),
    selectionFrequency: r.frequencies.map((f) => ({ ...f })),
    problems: [...r.problems],
    attribution: [...r.attribution],
    timings: { ...r.timings },
  };
}

// ---------------------------------------------------------------------------------------
// JSON Schema (draft-07) of the report; docs/parity-report.schema.json is this, written out.

type Schema = Record<string, unknown>;
const int: Schema = { type: "integer", minimum: 0 };
const bool: Schema = { type: "boolean" };
const str: Schema = { type: "string" };
/** A number, or the string form of a non-finite one. */
const number: Schema = { oneOf: [{ type: "number" }, { enum: ["Infinity", "-Infinity", "NaN"] }] };
const obj = (properties: Record<string, Schema>, extra: Schema = {}): Schema => ({
  type: "object",
  additionalProperties: false,
  required: Object.keys(properties),
  properties,
  ...extra,
});
const arr = (items: Schema, extra: Schema = {}): Schema => ({ type: "array", items, ...extra });
const map = (values: Schema): Schema => ({ type: "object", additionalProperties: values });
const statsSchema = obj({ max: number, mean: number, median: number, p99: number });
const tolSchema = obj({ atol: { type: "number", minimum: 0 }, rtol: { type: "number", minimum: 0 } });

export const PARITY_REPORT_SCHEMA: Schema = {
  $schema: "http://json-schema.org/draft-07/schema#",
  $id: "urn:aesm:parity:v1",
  title: "aesm parity report (aesm.parity/v1)",
  ...obj({
    schema: { const: PARITY_SCHEMA_ID },
    aesm: str,
    createdAt: { type: "string", pattern: "^\\d{4}-\\d{2}-\\d{2}T\\d{2}:\\d{2}:\\d{2}(\\.\\d+)?Z$" },
    pass: bool,
    model: obj({ name: str, file: str, weights: str, onnx: str }),
    inputs: obj({
      source: { enum: ["generated", "file"] },
      file: { type: ["string", "null"] },
      seed: { type: ["integer", "null"] },
      rows: int,
      coverage: map(map(int)),
    }),
    settings: obj({
      precision: { enum: ["fp32", "fp16"] },
      rule: str,
      tolerances: map(tolSchema),
      nearTie: { type: "number", minimum: 0 },
      rmse: obj({ multiplier: { type: "number", minimum: 0 }, floor: { const: "atol/10" }, fp32Rows: int }),
      float32SuspectRows: int,
      histogramBuckets: arr(str, { minItems: HISTOGRAM_BUCKETS.length, maxItems: HISTOGRAM_BUCKETS.length }),
    }),
    runs: arr(
      obj({
        id: str,
        provider: { enum: ["cpu", "cuda", "tensorrt"] },
        optimization: { enum: ["disabled", "all"] },
        seconds: { type: "number", minimum: 0 },
        selectionOutputs: bool,
      }),
    ),
    comparisons: arr(
      obj({
        id: str,
        kind: { enum: ["reference", "optimization", "provider"] },
        baseline: str,
        candidate: str,
        gating: bool,
        pass: bool,
        outputs: arr(
          obj({
            name: str,
            atol: { type: "number", minimum: 0 },
            rtol: { type: "number", minimum: 0 },
            count: int,
            checked: int,
            failures: int,
            pass: bool,
            abs: statsSchema,
            rel: statsSchema,
            ulp: statsSchema,
            nan: int,
            inf: int,
            nonFiniteMismatches: int,
            minPassingAtol: number,
            minPassingRtol: number,
            histogram: arr(int, { minItems: HISTOGRAM_BUCKETS.length, maxItems: HISTOGRAM_BUCKETS.length }),
            excused: obj({ rows: int, nearTieRows: int, float32Rows: int, failures: int, maxAbs: number }),
            rmse: {
              oneOf: [
                { type: "null" },
                obj({ rows: int, candidate: number, fp32: number, multiplier: { type: "number" }, floor: { type: "number" }, bound: number, pass: bool }),
              ],
            },
            worst: arr(obj({ row: int, reference: number, candidate: number, abs: number, rel: number, ulp: number, scenario: map(str) })),
          }),
        ),
        selections: arr(
          obj({
            layer: str,
            experts: int,
            rows: int,
            agree: int,
            agreeFraction: { type: "number", minimum: 0, maximum: 1 },
            nearTies: int,
            float32Unstable: int,
            disagree: int,
            nearTieRows: int,
            maxWeightError: number,
            examples: arr(
              obj({
                row: int,
                kind: { enum: ["disagree", "near-tie", "float32"] },
                margin: number,
                reference: arr(int),
                candidate: arr(int),
                scenario: map(str),
              }),
            ),
          }),
        ),
        selectionsUnavailable: arr(str),
      }),
    ),
    selectionFrequency: arr(
      obj({
        layer: str,
        by: str,
        labels: arr(str),
        experts: int,
        rowsPerLabel: arr(int),
        reference: arr(arr({ type: "number", minimum: 0, maximum: 1 })),
        runs: map(arr(arr({ type: "number", minimum: 0, maximum: 1 }))),
      }),
    ),
    problems: arr(str),
    attribution: arr(str),
    timings: obj({
      referenceSeconds: { type: "number" },
      fp32Seconds: { type: "number" },
      onnxSeconds: { type: "number" },
      compareSeconds: { type: "number" },
      totalSeconds: { type: "number" },
    }),
  }),
};
