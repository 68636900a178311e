// The pass manager: optimisation levels as ordered lists of passes, per-pass
// statistics, verify-each (IR verifier + interpreter outputs compared with the
// previous stage), print-after, and bisection to the first pass that breaks parity.

import { runGraph } from "../backends/interp/index.ts";
import { AesmError, userError } from "../core/diagnostics.ts";
import type { Tensor } from "../core/tensor.ts";
import type { Graph } from "../ir/graph.ts";
import { printGraph } from "../ir/print.ts";
import { verifyGraph } from "../ir/verify.ts";
import { PASSES } from "./index.ts";
import { type Pass, type PassOptions, type PassResult, PassError } from "./pass.ts";

export type OptLevel = 0 | 1 | 2;

/** The passes of each level, in order. */
export function passesForLevel(level: OptLevel): Pass[] {
  const ids: Record<OptLevel, string[]> = {
    // faithful: the lowering as it is
    0: [],
    // safe clean-ups that never change a number
    1: ["remove-noops", "fold-constants", "compact-lookups", "cse", "dce"],
    // everything
    2: [
      "remove-noops",
      "fold-constants",
      "compact-lookups", // embedding lookups: clamp the id onto a zero row (3 nodes, not 7)
      "cse", // first: merges the task streams' identical first-layer experts before fusion
      "fold-batch-norm", // BN into the linear before it, so the fusions see MatMul + Add + act
      "select-closed-form", // AESM KL scores from Z directly (LSE, mean); exact in real arithmetic
      "prune-static", // drop selections of every expert; remove experts no row can select
      "prune-calibrated", // opt-in: remove experts calibration never selected (PassOptions.prunedExperts)
      "sparse-dispatch", // before fuse-experts: a layer dispatched sparsely no longer looks like a dense mixture
      "additive-mask", // after prune-static (which reads the Where mask): Softmax(Zi + mask), the mask from one OneHot
      "fuse-gates", // a layer's G gates → one MatMul producing Z [B, G, E]
      "row-constants", // after fuse-gates (one gate MatMul per stream to split): task index, embedding, one-hots folded
      "tabulate-index", // one-hots, q and gate signs of a scenario index: looked up in a table of its S rows
      "fuse-experts", // a layer's E experts → one wide MatMul; mixture → one batched MatMul; task streams stacked
      "cse", // the fused task-layer gates share constants and inputs
      "stack-streams", // after cse (one gate MatMul for streams that read the same input): per-task copies run once, stacked
      "absorb-unsqueeze", // the mixture's Unsqueeze of w: the reductions before it keep the axis
      "contract-as-matmul", // Zi kept as [.., 1, E] by absorb-unsqueeze: one MatMul of the one-hot row and Z
      "top-one-as-argmax", // last: TopK(k = 1) whose values are unused → ArgMax/ArgMin (other passes match TopK)
      "mask-per-set", // after top-one-as-argmax: one OneHot per single-index set, combined by Max
      "merge-contractions", // after top-one-as-argmax: a two-gate layer's Zi and gate gap in one MatMul + Split
      "argmax-pair", // after merge-contractions (Zi and s as rows of one value): ArgMax + ArgMin → one ArgMax over [s; −|s|]
      "flatten-concats", // [x0; emb(s_0)] for the first gate and x0 for its experts: one Concat
      "streams-block-diagonal", // the stacked towers as 2-D Gemm layers over [B, T·D]
      "bias-into-lookup", // the stacked gates' bias Adds into their MatMuls, through a ones column of the scenario table
      "streams-batch-first", // last of the stream passes: [T, B, …] → [B, T, …], per-stream weights side by side, 2-D Gemms
      "softmax-from-log", // a three-gate layer's P over the gates as Exp of the log-softmax it also takes
      "cse",
      "dce",
    ],
  };
  return ids[level].map(passById);
}

export function passById(id: string): Pass {
  const p = PASSES.find((x) => x.id === id);
  if (!p) throw userError("AESM1901", "passes", `unknown pass "${id}" (known: ${PASSES.map((x) => x.id).join(", ")})`);
  return p;
}

export interface PassStat {
  id: string;
  changed: boolean;
  nodesBefore: number;
  nodesAfter: number;
  paramsBefore: number;
  paramsAfter: number;
  ms: number;
  counters: Record<string, number>;
}

export interface VerifyEachOptions {
  feeds: Record<string, Tensor>;
  /** Largest absolute difference allowed between consecutive stages' outputs. */
  atol: number;
  /**
   * Rows of the feeds' batch not to compare, given two stages' outputs (1 = excused): e.g. a
   * selection flipped on a near-tie, which float32 reassociation may legitimately do.
   */
  excuseRows?: (before: Record<string, Tensor>, after: Record<string, Tensor>) => Uint8Array | null;
}

export interface PipelineOptions {
  passOptions?: PassOptions;
  verifyEach?: VerifyEachOptions;
  /** Pass ids after which to print the IR. */
  printAfter?: string[];
  print?: (passId: string, text: string) => void;
}

export interface OutputDiff {
  output: string;
  maxAbs: number;
  index: number;
}

/** Largest absolute difference per output between two runs; worst first. Elements of `excused` rows (outputs' leading axis) are skipped. */
export function diffOutputs(a: Record<string, Tensor>, b: Record<string, Tensor>, excused?: Uint8Array | null): OutputDiff[] {
  const diffs: OutputDiff[] = [];
  for (const name of Object.keys(a)) {
    const x = a[name]!.data as Float32Array;
    const y = b[name]?.data as Float32Array | undefined;
    if (!y || y.length !== x.length) {
      diffs.push({ output: name, maxAbs: Infinity, index: -1 });
      continue;
    }
    let maxAbs = 0;
    let index = -1;
    const perRow = excused && excused.length ? x.length / excused.length : 0;
    for (let i = 0; i < x.length; i++) {
      if (perRow && excused![Math.floor(i / perRow)]) continue;
      const d = Math.abs(Number(x[i]) - Number(y[i]));
      if (d > maxAbs || Number.isNaN(d)) {
        maxAbs = Number.isNaN(d) ? Infinity : d;
        index = i;
      }
    }
    diffs.push({ output: name, maxAbs, index });
  }
  return diffs.sort((p, q) => q.maxAbs - p.maxAbs);
}

/** Run `passes` in order over `graph` (mutated in place or replaced); returns the result and per-pass statistics. */
export function runPipeline(graph: Graph, passes: Pass[], opts: PipelineOptions = {}): { graph: Graph; stats: PassStat[] } {
  const stats: PassStat[] = [];
  let expected = opts.verifyEach ? runGraph(graph, opts.verifyEach.feeds) : null;
  let g = graph;
  for (const pass of passes) {
    const nodesBefore = g.nodes.length;
    const paramsBefore = g.parameterCount();
    const ctx = { options: opts.passOptions ?? {}, stats: {} as Record<string, number> };
    const t0 = performance.now();
    let result: PassResult;
    try {
      result = pass.run(g, ctx);
    } catch (e) {
      // a pass that throws is a compiler bug: name the pass (its own PassError already does)
      throw e instanceof PassError || e instanceof AesmError ? e : new PassError(pass.id, `threw ${e instanceof Error ? `${e.name}: ${e.message}` : String(e)}`);
    }
    const ms = performance.now() - t0;
    g = result.graph;
    if (result.changed) g.toposort();
    stats.push({
      id: pass.id,
      changed: result.changed,
      nodesBefore,
      nodesAfter: g.nodes.length,
      paramsBefore,
      paramsAfter: g.parameterCount(),
      ms,
      counters: ctx.stats,
    });
    // printed before verification, so that the IR of a pass that breaks it can be seen
    if (opts.printAfter?.includes(pass.id)) opts.print?.(pass.id, printGraph(g));
    if (opts.verifyEach) {
      try {
        verifyGraph(g, pass.id);
      } catch (e) {
        throw new PassError(pass.id, (e as Error).message);
      }
      let got: Record<string, Tensor>;
      try {
        got = runGraph(g, opts.verifyEach.feeds);
      } catch (e) {
        throw new PassError(pass.id, `the interpreter cannot run the result: ${(e as Error)?.message ?? String(e)}`);
      }
      const worst = diffOutputs(expected!, got, opts.verifyEach.excuseRows?.(expected!, got))[0];
      if (worst && !(worst.maxAbs <= opts.verifyEach.atol))
        throw new PassError(
          pass.id,
          `changed output ${worst.output} by ${worst.maxAbs.toExponential(3)} at element ${worst.index} (allowed ${opts.verifyEach.atol})`,
        );
      expected = got;
    }
  }
  return { graph: g, stats };
}

export interface BisectStep {
  pass: string;
  ok: boolean;
  detail: string;
}

export interface BisectResult {
  /** The first pass after which the check fails; null when every prefix passes. */
  culprit: string | null;
  /** Whether the unoptimised graph itself fails the check (then no pass is to blame). */
  baselineFails: boolean;
  steps: BisectStep[];
}

/**
 * Apply passes one at a time to a copy of `graph`, checking each prefix; stop at the
 * first failing one. A pass that throws counts as failing, with its message.
 */
export function bisectPasses(
  graph: Graph,
  passes: Pass[],
  check: (g: Graph) => { ok: boolean; detail: string },
  passOptions: PassOptions = {},
): BisectResult {
  const steps: BisectStep[] = [];
  let g = graph.clone();
  const base = check(g);
  steps.push({ pass: "(none)", ok: base.ok, detail: base.detail });
  if (!base.ok) return { culprit: null, baselineFails: true, steps };
  for (const pass of passes) {
    let res: { ok: boolean; detail: string };
    try {
      g = pass.run(g, { options: passOptions, stats: {} }).graph;
      g.toposort();
      verifyGraph(g, pass.id);
      res = check(g);
    } catch (e) {
      res = { ok: false, detail: (e as Error).message.split("\n")[0]! };
    }
    steps.push({ pass: pass.id, ...res });
    if (!res.ok) return { culprit: pass.id, baselineFails: false, steps };
  }
  return { culprit: null, baselineFails: false, steps };
}
