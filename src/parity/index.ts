// Parity harness: inputs (generated or supplied), comparison metrics, the run, and its reports.
export * from "./compare.ts";
export * from "./input-files.ts";
export * from "./inputs.ts";
export * from "./outputs-file.ts";
export * from "./progress.ts";
export * from "./report-html.ts";
export * from "./report-json.ts";
export * from "./report-text.ts";
export * from "./run.ts";
export * from "./tolerance.ts";
