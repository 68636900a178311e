// `npm run bench` (not a test): onnxruntime CPU latency of the example model and a large one,
// -O0 against -O2 (and sparse dispatch forced or off), against one dense MatMul of equal FLOPs.
//   npm run bench -- [--threads 1,0] [--batches 1,64,256,1024] [--models search-ranker,large-ranker]
//                    [--budget-ms 4000] [--out results.md] [--update docs/performance.md]

import { createHash } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { cpus, loadavg, platform, release, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import * as ort from "onnxruntime-node";
import { writeOnnx } from "../src/backends/onnx/index.ts";
import { type CompileOptions, compileModel } from "../src/compile.ts";
import { writeFileAtomic } from "../src/core/atomic.ts";
import { type ModelSpec, loadModel } from "../src/dsl/index.ts";
import { generateInputs } from "../src/parity/inputs.ts";
import { PASSES } from "../src/passes/index.ts";
import { initWeights } from "../src/weights/index.ts";
import { matmulFlops, writeLimitMatMul } from "./flops.ts";
import { type Variant, measureRoundRobin } from "./measure.ts";
import { type BatchResult, LIMIT, type MachineInfo, type ModelResult, type Target, machineLine, modelTable, targetsTable, timingOf } from "./report.ts";

const { values: args } = parseArgs({
  options: {
    threads: { type: "string", default: "1" },
    batches: { type: "string", default: "1,64,256,1024" },
    models: { type: "string", default: "search-ranker,large-ranker" },
    "budget-ms": { type: "string", default: "4000" },
    out: { type: "string" },
    update: { type: "string" },
  },
});
const list = (s: string) => s.split(",").map((x) => x.trim()).filter(Boolean);
const threadSettings = list(args.threads!).map(Number);
const batches = list(args.batches!).map(Number);
const budgetMs = Number(args["budget-ms"]);

const root = join(import.meta.dirname, "..");
const tmp = mkdtempSync(join(tmpdir(), "aesm-bench-"));
const log = (s: string) => process.stderr.write(s + "\n");

function machine(): MachineInfo {
  const info = readFileSync("/proc/cpuinfo", "utf8");
  const model = /^model name\s*:\s*(.*)$/m.exec(info)?.[1] ?? cpus()[0]?.model ?? "unknown CPU";
  const family = /^cpu family\s*:\s*(\d+)/m.exec(info)?.[1];
  const num = /^model\s*:\s*(\d+)/m.exec(info)?.[1];
  const flags = /^flags\s*:\s*(.*)$/m.exec(info)?.[1]?.split(" ") ?? [];
  const isa = ["avx512f", "avx512_vnni", "amx_tile"].filter((f) => flags.includes(f)).join(", ");
  const virt = flags.includes("hypervisor") ? ", virtualised" : "";
  const ortVersion = (createRequire(import.meta.url)("onnxruntime-node/package.json") as { version: string }).version;
  return {
    cpu: `${model} (family ${family}, model ${num}${isa ? `; ${isa}` : ""}${virt})`,
    cores: cpus().length,
    node: process.version,
    onnxruntime: ortVersion,
    os: `${platform()} ${release()}`,
    load: [loadavg()[0]!, loadavg()[0]!],
  };
}

/** onnxruntime feeds for a batch of generated rows (MODEL.md §8 shapes). */
function feedsFor(spec: ModelSpec, rows: number): Record<string, ort.Tensor> {
  const b = generateInputs(spec, { rows, seed: 1 });
  const feeds: Record<string, ort.Tensor> = {};
  for (const f of spec.features)
    feeds[f.name] = f.kind === "categorical" ? new ort.Tensor("int64", b.features[f.name]!, [rows]) : new ort.Tensor("float32", b.features[f.name]!, [rows, f.dim]);
  for (const l of spec.scenarios) feeds[l.name] = new ort.Tensor("int64", b.scenarios[l.name]!, [rows]);
  return feeds;
}

function limitFeeds(rows: number, K: number): Record<string, ort.Tensor> {
  const a = new Float32Array(rows * K);
  for (let i = 0; i < a.length; i++) a[i] = Math.sin(i) * 0.5;
  return { a: new ort.Tensor("float32", a, [rows, K]) };
}

interface CompiledVariant extends Variant {
  nodes: number;
  parameters: number;
  note: string;
  hash: string;
}

const hasSparse = PASSES.some((p) => p.id === "sparse-dispatch");

/** -O0 and -O2; on the large model also -O2 with sparse dispatch forced and off (when the pass exists). */
function variantPlan(model: string): { name: string; options: CompileOptions; note: string }[] {
  const plan: { name: string; options: CompileOptions; note: string }[] = [
    { name: "-O0", options: { optLevel: 0 }, note: "the faithful lowering: one subgraph per expert, gate and task" },
    { name: "-O2", options: { optLevel: 2 }, note: hasSparse ? "default: sparse dispatch where the cost model says so" : "default" },
  ];
  if (model === "large-ranker" && hasSparse) {
    plan.push({ name: "-O2 sparse", options: { optLevel: 2, passOptions: { sparseDispatch: "always" } }, note: "sparse dispatch forced in every layer" });
    plan.push({ name: "-O2 dense", options: { optLevel: 2, passOptions: { sparseDispatch: "never" } }, note: "dense fused experts, no sparse dispatch" });
  }
  return plan;
}

async function benchModel(model: string): Promise<ModelResult[]> {
  const { spec } = await loadModel(join(root, "examples", `${model}.ts`));
  let t = performance.now();
  const weights = initWeights(spec, 0);
  log(`${model}: weights in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const variants: CompiledVariant[] = [];
  let denseFlops: number | null = null;
  for (const v of variantPlan(model)) {
    t = performance.now();
    // selection outputs off: what a served model returns (the task probabilities only)
    const { graph } = compileModel(spec, weights, { ...v.options, selectionOutputs: false });
    const path = join(tmp, `${model}${v.name.replace(/\W+/g, "_")}.onnx`);
    writeOnnx(path, graph, { opset: 17 });
    const hash = createHash("sha1").update(readFileSync(path)).digest("hex");
    variants.push({ name: v.name, path, nodes: graph.nodes.length, parameters: graph.parameterCount(), note: v.note, hash });
    // the useful work: the dense -O2 graph's (a sparse graph's MatMul sizes depend on the data)
    if (v.name === "-O2 dense" || (v.name === "-O2" && denseFlops === null)) denseFlops = matmulFlops(graph, 1);
    log(`${model} ${v.name}: ${graph.nodes.length} nodes, compiled in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  }
  if (denseFlops === null) {
    // -O2 dispatches sparsely and no dense variant exists: count the faithful graph's work
    const { graph } = compileModel(spec, weights, { optLevel: 2, selectionOutputs: false, passOptions: { sparseDispatch: "never" } });
    denseFlops = matmulFlops(graph, 1)!;
  }
  const limitPath = join(tmp, `${model}.limit.onnx`);
  const [K, N] = writeLimitMatMul(limitPath, denseFlops);

  const results: ModelResult[] = [];
  for (const threads of threadSettings) {
    const byBatch: BatchResult[] = [];
    for (const batch of batches) {
      // byte-identical variants are timed once
      const aliases: Record<string, string> = {};
      const unique: Variant[] = [];
      for (const v of variants) {
        const same = variants.find((u) => u.hash === v.hash && unique.includes(u));
        if (same) aliases[v.name] = same.name;
        else unique.push(v);
      }
      const modelFeeds = feedsFor(spec, batch);
      const mm = limitFeeds(batch, K);
      const timings = await measureRoundRobin([...unique, { name: LIMIT, path: limitPath }], (v) => (v.name === LIMIT ? mm : modelFeeds), {
        threads,
        warmup: 3,
        minIterations: 15,
        maxIterations: 1000,
        budgetMs,
      });
      byBatch.push({ batch, timings, aliases });
      log(`${model} threads=${threads || "default"} batch ${batch}: ${timings.map((x) => `${x.name} ${x.median.toFixed(3)} ms`).join(", ")}`);
    }
    results.push({
      model,
      threads,
      flopsPerRow: denseFlops,
      limitShape: [K, N],
      variants: variants.map((v) => ({ name: v.name, nodes: v.nodes, parameters: v.parameters, note: v.note })),
      batches: byBatch,
    });
  }
  return results;
}

function targets(results: ModelResult[]): Target[] {
  const primary = (model: string) => results.find((r) => r.model === model && r.threads === threadSettings[0]);
  const ratio = (r: ModelResult | undefined, batch: number, a: string, b: string) => {
    const br = r?.batches.find((x) => x.batch === batch);
    const ta = br && timingOf(br, a);
    const tb = br && timingOf(br, b);
    return ta && tb ? ta.median / tb.median : null;
  };
  const out: Target[] = [];
  const ex = primary("search-ranker");
  for (const [batch, want] of [
    [1, 3],
    [256, 1.5],
  ] as const) {
    const x = ratio(ex, batch, "-O0", "-O2");
    out.push({ text: `search-ranker: -O2 ≥ ${want}× faster than -O0 at batch ${batch}`, measured: x === null ? "not run" : `${x.toFixed(2)}×`, met: x === null ? null : x >= want });
  }
  const large = primary("large-ranker");
  const s = ratio(large, 1024, "-O2 dense", "-O2 sparse");
  out.push({
    text: "large-ranker: sparse dispatch beats dense fused compute at batch 1024",
    measured: s === null ? (hasSparse ? "not run" : "no sparse-dispatch pass") : `dense / sparse = ${s.toFixed(2)}×`,
    met: s === null ? null : s > 1,
  });
  return out;
}

const BEGIN = "<!-- bench:begin -->";
const END = "<!-- bench:end -->";

try {
  const info = machine();
  log(`${machineLine(info).replace(/ Load average.*$/, "")} Load average ${info.load[0].toFixed(1)}.`);
  const results: ModelResult[] = [];
  for (const m of list(args.models!)) results.push(...(await benchModel(m)));
  info.load[1] = loadavg()[0]!;
  const md = [
    machineLine(info),
    "",
    `Run: ${new Date().toISOString().slice(0, 10)}, \`npm run bench -- --threads ${args.threads} --batches ${args.batches}\`; ` +
      `variants alternate round-robin after 3 warm-up runs each, for about ${budgetMs / 1000} s per batch size (at least 15 iterations).`,
    "",
    targetsTable(targets(results)),
    ...results.map(modelTable),
  ].join("\n");
  process.stdout.write(md + "\n");
  if (args.out) writeFileAtomic(args.out, md + "\n");
  if (args.update) {
    const doc = readFileSync(args.update, "utf8");
    const a = doc.indexOf(BEGIN);
    const b = doc.indexOf(END);
    if (a < 0 || b < a) throw new Error(`${args.update} has no ${BEGIN} … ${END} section to replace`);
    writeFileAtomic(args.update, `${doc.slice(0, a + BEGIN.length)}\n${md}\n${doc.slice(b)}`);
    log(`updated ${args.update}`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
