// What a pass is: a small declared object with a kebab-case id, a one-line summary
// and a run function (graph, ctx) → { graph, changed }, filling its statistics in ctx.

import type { Graph } from "../ir/graph.ts";

export interface PassOptions {
  /**
   * Allow rewrites that are exact in real arithmetic but can flip a selection on a
   * near-tie in float32 (reported separately by parity). Off by default.
   */
  nearTieRewrites?: boolean;
  /** Sparse dispatch of selected experts: decided by the cost model, forced, or off. */
  sparseDispatch?: "auto" | "always" | "never";
  /** Rows per call the sparse-dispatch cost model assumes (the batch dim is symbolic); default 1024. */
  sparseTargetBatch?: number;
  /** Experts to prune per layer (from calibration): layer path → expert indices never selected. */
  prunedExperts?: Record<string, number[]>;
}

export interface PassContext {
  options: PassOptions;
  /** Counters the pass reports (`experts-fused: 12`), shown by `compile --stats`. */
  stats: Record<string, number>;
}

export interface PassResult {
  graph: Graph;
  changed: boolean;
}

export interface Pass {
  /** Kebab-case id, used by --passes, --print-after and bisect. */
  id: string;
  /** One line: what it does. */
  summary: string;
  run(graph: Graph, ctx: PassContext): PassResult;
}

/** A pass broke an invariant or changed the numbers: names the pass. */
export class PassError extends Error {
  constructor(
    readonly pass: string,
    message: string,
  ) {
    super(`pass ${pass}: ${message}`);
    this.name = "PassError";
  }
}

export function bump(ctx: PassContext, key: string, by = 1): void {
  ctx.stats[key] = (ctx.stats[key] ?? 0) + by;
}
