// Parity harness: inputs, comparison metrics, the run and its report.
export * from "./compare.ts";
export * from "./inputs.ts";
export * from "./run.ts";
