// onnxruntime-node sessions for compiled models: execution-provider selection that never
// falls back silently, and InputBatch → ort.Tensor feeds checked against the model's inputs.

import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import * as ort from "onnxruntime-node";
import type { InputBatch } from "../core/batch.ts";
import { AesmError, userError, type Diagnostic } from "../core/diagnostics.ts";

export type Provider = "cpu" | "cuda" | "tensorrt";

export interface SessionOptions {
  /** Execution provider (default "cpu"). One that is not installed is an error, never a fallback. */
  provider?: Provider;
  /** Graph optimisation level (default "all"). */
  optimization?: "disabled" | "all";
  /** Intra-op threads (default: onnxruntime's choice). */
  threads?: number;
  /** Values per scenario level; when given, run() rejects indices outside [0, S) (MODEL.md §1). */
  scenarioSizes?: Record<string, number>;
}

export interface ModelSession {
  readonly path: string;
  readonly provider: Provider;
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  /** Run on a batch; returns the requested outputs (default all) as float32 arrays, row-major. */
  run(batch: InputBatch, outputNames?: string[]): Promise<Record<string, Float32Array>>;
  close(): Promise<void>;
}

/** onnxruntime's provider lists, per aesm provider: TensorRT hands unsupported subgraphs to CUDA. */
const ORT_PROVIDERS: Record<Provider, string[]> = {
  cpu: ["cpu"],
  cuda: ["cuda"],
  tensorrt: ["tensorrt", "cuda"],
};

/** Shared libraries onnxruntime-node loads for a provider that is not bundled with the package. */
function providerLibrary(provider: "cuda" | "tensorrt"): string {
  return process.platform === "win32" ? `onnxruntime_providers_${provider}.dll` : `libonnxruntime_providers_${provider}.so`;
}

function ortBinaryDir(): string {
  // dist/index.js → bin/napi-v6/<platform>/<arch>, where onnxruntime-node looks for provider libraries.
  const main = createRequire(import.meta.url).resolve("onnxruntime-node");
  return join(dirname(main), "..", "bin", "napi-v6", process.platform, process.arch);
}

const NEEDS: Record<"cuda" | "tensorrt", string> = {
  cuda: "needs an NVIDIA GPU with CUDA 12 and cuDNN 9",
  tensorrt: "needs an NVIDIA GPU with CUDA 12, cuDNN 9 and TensorRT 10",
};

/** The one-line AESM3001 for a provider missing from this install, with how to get it. */
export function providerUnavailableMessage(provider: "cuda" | "tensorrt"): string {
  const head = `execution provider "${provider}" is not available in this onnxruntime-node install`;
  // onnxruntime-node's install script downloads the GPU providers (CUDA and TensorRT come
  // together) only for linux/x64, and only when its install flag asks for cuda12.
  if (process.platform === "linux" && process.arch === "x64")
    return `${head}; install the CUDA build: ONNXRUNTIME_NODE_INSTALL=cuda12 node node_modules/onnxruntime-node/script/install.js (${NEEDS[provider]})`;
  return `${head}; onnxruntime-node ships GPU providers for linux/x64 only (this is ${process.platform}/${process.arch})`;
}

/** AESM3001 unless onnxruntime-node can offer `provider` here. */
function checkProvider(provider: Provider): void {
  if (provider === "cpu") return;
  if (!(provider in ORT_PROVIDERS)) throw userError("AESM3001", "provider", `unknown execution provider "${provider}" (cpu, cuda, tensorrt)`);
  const listed = ort.listSupportedBackends().find((b) => b.name === provider);
  const present = listed && (listed.bundled || existsSync(join(ortBinaryDir(), providerLibrary(provider))));
  if (!present) throw userError("AESM3001", "provider", providerUnavailableMessage(provider));
}

const firstLine = (e: unknown) => (e instanceof Error ? e.message : String(e)).trim().split("\n")[0]!;

/** Open a session on the model at `modelPath` (from the path, so external data resolves). */
export async function openSession(modelPath: string, options: SessionOptions = {}): Promise<ModelSession> {
  const provider = options.provider ?? "cpu";
  checkProvider(provider);
  if (!existsSync(modelPath)) throw userError("AESM3005", "", "cannot load ONNX model: no such file", modelPath);
  const ortOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: ORT_PROVIDERS[provider],
    graphOptimizationLevel: options.optimization ?? "all",
    ...(options.threads !== undefined ? { intraOpNumThreads: options.threads } : {}),
  };
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(modelPath, ortOptions);
  } catch (e) {
    const msg = firstLine(e);
    // The provider library exists but could not be loaded (e.g. CUDA or cuDNN missing on the machine).
    if (provider !== "cpu" && /ExecutionProvider|provider|shared library/i.test(msg) && !/Load model/i.test(msg))
      throw userError("AESM3001", "provider", `execution provider "${provider}" failed to start (${NEEDS[provider]}): ${msg}`);
    throw userError("AESM3005", "", `cannot load ONNX model: ${msg}`, modelPath);
  }
  return new OrtModelSession(modelPath, provider, session, options.scenarioSizes ?? {});
}

type InputMeta = { name: string; isTensor: boolean; type?: string; shape?: ReadonlyArray<number | string> };

function describe(data: unknown): string {
  if (data instanceof BigInt64Array) return `${data.length} int64 values`;
  if (data instanceof Float32Array) return `${data.length} float32 values`;
  return data === null || data === undefined ? String(data) : `a ${(data as object).constructor?.name ?? typeof data}`;
}

class OrtModelSession implements ModelSession {
  readonly inputNames: readonly string[];
  readonly outputNames: readonly string[];
  private readonly meta: Map<string, InputMeta>;

  constructor(
    readonly path: string,
    readonly provider: Provider,
    private readonly session: ort.InferenceSession,
    private readonly scenarioSizes: Record<string, number>,
  ) {
    this.inputNames = [...session.inputNames];
    this.outputNames = [...session.outputNames];
    this.meta = new Map((session.inputMetadata as readonly InputMeta[]).map((m) => [m.name, m]));
  }

  /** ort.Tensors for every model input; all problems reported together (AESM3101–3103). */
  private feeds(batch: InputBatch): Record<string, ort.Tensor> {
    const B = batch.rows;
    if (!Number.isInteger(B) || B < 0) throw userError("AESM3103", "rows", `batch rows must be a non-negative integer, got ${B}`);
    const problems: Diagnostic[] = [];
    const feeds: Record<string, ort.Tensor> = {};
    for (const name of this.inputNames) {
      const isScenario = name in batch.scenarios;
      const data = isScenario ? batch.scenarios[name] : batch.features[name];
      if (data === undefined) {
        problems.push({ code: "AESM3102", path: name, message: `missing input "${name}"` });
        continue;
      }
      const meta = this.meta.get(name);
      const type = meta?.type ?? "float32";
      const rank = meta?.shape?.length ?? 1;
      if (type === "int64" ? !(data instanceof BigInt64Array) : type === "float32" ? !(data instanceof Float32Array) : true) {
        problems.push({ code: "AESM3103", path: name, message: `input "${name}" must be ${type}, got ${describe(data)}` });
        continue;
      }
      // [B] for ids and scenario indices, [B, dim] for dense features.
      let shape: number[];
      if (rank === 1) shape = [B];
      else {
        const dims = meta!.shape!.slice(1);
        const inner = dims.every((d) => typeof d === "number") ? (dims as number[]) : [B === 0 ? 0 : data.length / B];
        shape = [B, ...inner];
      }
      const n = shape.reduce((a, b) => a * b, 1);
      if (data.length !== n || !Number.isInteger(n)) {
        problems.push({
          code: "AESM3103",
          path: name,
          message: `input "${name}" must be ${n} ${type} values ([${shape.join(", ")}]), got ${describe(data)}`,
        });
        continue;
      }
      feeds[name] = new ort.Tensor(type as "int64" | "float32", data, shape);
    }
    if (problems.length) throw new AesmError(problems);
    for (const [level, S] of Object.entries(this.scenarioSizes)) {
      const idx = batch.scenarios[level];
      if (!idx) continue;
      for (let r = 0; r < idx.length; r++) {
        const s = idx[r]!;
        if (s < 0n || s >= BigInt(S)) throw userError("AESM3101", level, `scenario index ${s} out of range [0, ${S}) at row ${r}`);
      }
    }
    return feeds;
  }

  async run(batch: InputBatch, outputNames?: string[]): Promise<Record<string, Float32Array>> {
    const wanted = outputNames ?? [...this.outputNames];
    const unknown = wanted.filter((n) => !this.outputNames.includes(n));
    if (unknown.length)
      throw userError("AESM3104", unknown[0]!, `no output "${unknown[0]}" (the model's outputs: ${this.outputNames.join(", ")})`);
    const feeds = this.feeds(batch);
    let results: ort.InferenceSession.ReturnType;
    try {
      results = await this.session.run(feeds, wanted);
    } catch (e) {
      throw userError("AESM3105", "", `onnxruntime failed: ${firstLine(e)}`, this.path);
    }
    const out: Record<string, Float32Array> = {};
    for (const name of wanted) {
      const t = results[name]!;
      const d = t.data;
      out[name] = d instanceof Float32Array ? d : Float32Array.from(d as ArrayLike<number | bigint>, (v) => Number(v));
    }
    return out;
  }

  async close(): Promise<void> {
    await this.session.release();
  }
}
