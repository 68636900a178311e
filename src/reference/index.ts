// The reference evaluator: MODEL.md as a direct float64 program, the parity oracle.
// Lowering, passes and backends must not import from here (DESIGN.md: independent oracle).

export { evaluateReference } from "./evaluate.ts";
export type { LayerTrace, ReferenceOptions, ReferenceResult } from "./evaluate.ts";
