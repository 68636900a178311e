// Latency measurement on onnxruntime CPU: variants of one batch size timed round-robin (each
// iteration runs every variant once, in a rotating order), after a warm-up, so that drift in
// the machine's speed (turbo, neighbours on a shared host) hits every variant alike.

import * as ort from "onnxruntime-node";

export interface Variant {
  name: string;
  /** ONNX file. */
  path: string;
}

export interface Timing {
  name: string;
  iterations: number;
  /** Milliseconds per run: median, 10th and 90th percentile. */
  median: number;
  p10: number;
  p90: number;
}

export interface MeasureOptions {
  /** Intra-op threads; 0: onnxruntime's default (one per physical core). */
  threads: number;
  warmup: number;
  minIterations: number;
  maxIterations: number;
  /** Wall time to aim for, over all variants together. */
  budgetMs: number;
}

export async function openOrt(path: string, threads: number): Promise<ort.InferenceSession> {
  return ort.InferenceSession.create(path, {
    executionProviders: ["cpu"],
    graphOptimizationLevel: "all",
    ...(threads > 0 ? { intraOpNumThreads: threads, interOpNumThreads: 1 } : {}),
    executionMode: "sequential",
  });
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.round(q * (sorted.length - 1))))]!;
}

/** Time each variant on the same feeds; the sessions are opened once and closed at the end. */
export async function measureRoundRobin(variants: Variant[], feeds: (v: Variant) => Record<string, ort.Tensor>, opts: MeasureOptions): Promise<Timing[]> {
  const sessions = await Promise.all(variants.map((v) => openOrt(v.path, opts.threads)));
  const inputs = variants.map((v) => feeds(v));
  try {
    const runOnce = async (i: number): Promise<number> => {
      const t0 = process.hrtime.bigint();
      await sessions[i]!.run(inputs[i]!);
      return Number(process.hrtime.bigint() - t0) / 1e6;
    };
    let estimate = 0;
    for (let i = 0; i < variants.length; i++) {
      let last = 0;
      for (let w = 0; w < opts.warmup; w++) last = await runOnce(i);
      estimate += last;
    }
    const iterations = Math.min(opts.maxIterations, Math.max(opts.minIterations, Math.floor(opts.budgetMs / Math.max(estimate, 1e-3))));
    const samples = variants.map(() => [] as number[]);
    for (let it = 0; it < iterations; it++)
      for (let j = 0; j < variants.length; j++) {
        const i = (j + it) % variants.length;
        samples[i]!.push(await runOnce(i));
      }
    return variants.map((v, i) => {
      const s = samples[i]!.sort((a, b) => a - b);
      return { name: v.name, iterations, median: quantile(s, 0.5), p10: quantile(s, 0.1), p90: quantile(s, 0.9) };
    });
  } finally {
    await Promise.all(sessions.map((s) => s.release()));
  }
}
