// Big-model figures for docs/performance.md: a model with ≥ 1 GiB of weights (one embedding table
// of vocab × 64 floats) through init → compile (inline and external data) → onnxruntime → parity,
// each step a separate process measured with /usr/bin/time -v (peak RSS, wall time).
//
//   node bin/aesm.mjs …  is what each step runs; this script only prepares files and measures.
//   tsx bench/big-model.ts [--vocab 4194304] [--dir /tmp/aesm-big] [--keep]
//   tsx bench/big-model.ts --over-2gib   in-process: 2.25 GiB of weights compiled at -O2 and written
//                                        with no option (the automatic external-data path), then
//                                        onnxruntime on it, and the same weights as a checkpoint
//                                        compiled by the CLI

import { spawnSync } from "node:child_process";
import { mkdirSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeOnnx } from "../src/backends/onnx/index.ts";
import { compileGraph } from "../src/compile.ts";
import { parseModel } from "../src/dsl/parse.ts";
import { initWeights, writeSafetensorsFile } from "../src/weights/index.ts";

const REPO = join(import.meta.dirname, "..");
const { values } = parseArgs({
  options: {
    vocab: { type: "string", default: String(4 * 2 ** 20) },
    dir: { type: "string", default: "/tmp/aesm-big" },
    keep: { type: "boolean", default: false },
    "over-2gib": { type: "boolean", default: false },
  },
});
const vocab = Number(values.vocab);
const dir = values.dir!;
mkdirSync(dir, { recursive: true });

const model = {
  name: "big-embedding",
  features: { item: { kind: "categorical", vocab, dim: 64 }, user: { kind: "categorical", vocab: 100_000, dim: 16 }, x: { kind: "dense", dim: 8 } },
  scenarios: {
    page: { values: ["home", "search", "feed"], dim: 4, experts: 8, expert: { kind: "mlp", units: [64] }, select: { kind: "aesm", specific: 2, shared: 1 } },
  },
  taskLayers: { dim: 4, experts: 4, expert: { kind: "mlp", units: [32] }, select: { kind: "aesm", specific: 1, shared: 1 } },
  tasks: { ctr: { tower: { kind: "mlp", units: [16] } }, cvr: { tower: { kind: "mlp", units: [16] } } },
};

interface Step {
  step: string;
  wallS: number;
  maxRssMiB: number;
  code: number;
}

/** Run `argv` under /usr/bin/time -v; peak resident set and elapsed wall time. */
function measure(step: string, argv: string[]): Step {
  const r = spawnSync("/usr/bin/time", ["-v", ...argv], { cwd: REPO, encoding: "utf8", maxBuffer: 64 * 2 ** 20 });
  const rss = Number(/Maximum resident set size \(kbytes\): (\d+)/.exec(r.stderr)?.[1] ?? NaN) / 1024;
  const wall = /Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)/.exec(r.stderr)?.[1] ?? "";
  const wallS = wall.split(":").reduce((s, p) => s * 60 + Number(p), 0);
  const out = { step, wallS, maxRssMiB: Math.round(rss), code: r.status ?? -1 };
  console.log(JSON.stringify(out));
  if (r.status !== 0) console.log(r.stdout.slice(-2000), r.stderr.slice(-4000));
  return out;
}

const mib = (p: string) => (statSync(p).size / 2 ** 20).toFixed(1);

/**
 * Past protobuf's limit: weights built in memory (a 9M × 64 table filled by an LCG: initWeights
 * would take minutes), compiled at -O2 and written by writeOnnx with no external-data option.
 */
function over2GiB(): void {
  const vocab = 9 * 2 ** 20;
  const base = { ...model, features: { item: { kind: "categorical", vocab: 16, dim: 64 }, x: { kind: "dense", dim: 8 } } };
  const w = initWeights(parseModel(base), 1);
  const spec = parseModel({ ...base, features: { ...base.features, item: { kind: "categorical", vocab, dim: 64 } } });
  const table = new Float32Array(vocab * 64);
  for (let i = 0, x = 1; i < table.length; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    table[i] = (x / 2 ** 32 - 0.5) * 2;
  }
  w.set("features.item.weight", { dtype: "float32", shape: [vocab, 64], data: table });
  let t = performance.now();
  const graph = compileGraph(spec, w, { optLevel: 2 });
  const compileS = (performance.now() - t) / 1000;
  t = performance.now();
  const path = join(dir, "over", "big.onnx");
  const bytes = writeOnnx(path, graph, {});
  const writeS = (performance.now() - t) / 1000;
  const files = Object.fromEntries(readdirSync(join(dir, "over")).map((f) => [f, statSync(join(dir, "over", f)).size]));
  const peak = Math.round(process.resourceUsage().maxRSS / 1024);
  const ortScript = `
const ort = require("onnxruntime-node");
(async () => {
  const s = await ort.InferenceSession.create(process.argv[1]);
  const B = 1024, ids = (n) => BigInt64Array.from({ length: B }, (_, i) => BigInt((i * 7919) % n));
  await s.run({ item: new ort.Tensor("int64", ids(${vocab}), [B]), x: new ort.Tensor("float32", new Float32Array(B * 8).fill(0.5), [B, 8]), page: new ort.Tensor("int64", ids(3), [B]) });
})();`;
  const ort = measure("onnxruntime: load from path + run 1024 rows", [process.execPath, "-e", ortScript, path]);
  const checker = measure("onnx.checker.check_model(path, full_check=True)", ["/usr/bin/python3", "-c", "import onnx,sys; onnx.checker.check_model(sys.argv[1], full_check=True)", path]);
  // the same weights as a checkpoint past 2 GiB, compiled by the CLI
  const big = { ...base, features: { ...base.features, item: { kind: "categorical", vocab, dim: 64 } } };
  const modelPath = join(dir, "over", "big.json");
  const weightsPath = join(dir, "over", "big.safetensors");
  writeFileSync(modelPath, JSON.stringify(big));
  writeSafetensorsFile(weightsPath, w);
  w.clear();
  const cli = measure(`aesm compile -O2 of a ${mib(weightsPath)} MiB checkpoint`, [process.execPath, join(REPO, "bin", "aesm.mjs"), "compile", modelPath, "-w", weightsPath, "-o", join(dir, "over", "cli.onnx")]);
  console.log(JSON.stringify({ weightsGiB: (table.byteLength / 2 ** 30).toFixed(2), compileS, writeS, bytes, files, peakRssMiB: peak, steps: [ort, checker, cli] }, null, 2));
}

if (values["over-2gib"]) {
  over2GiB();
  if (!values.keep) rmSync(dir, { recursive: true, force: true });
  process.exit(0);
}
const modelPath = join(dir, "big.json");
const weightsPath = join(dir, "big.safetensors");
writeFileSync(modelPath, JSON.stringify(model));

let t = performance.now();
const spec = parseModel(model);
const weights = initWeights(spec, 1);
let params = 0;
for (const w of weights.values()) params += w.data.length;
writeSafetensorsFile(weightsPath, weights);
console.log(`weights: ${params.toLocaleString("en-US")} parameters, ${mib(weightsPath)} MiB, made in ${((performance.now() - t) / 1000).toFixed(1)} s`);
weights.clear();

const aesm = [process.execPath, join(REPO, "bin", "aesm.mjs")];
const steps: Step[] = [];
const ext = join(dir, "ext", "big.onnx");
const inl = join(dir, "inline", "big.onnx");
steps.push(measure("compile -O2, external data (threshold 1 KiB)", [...aesm, "compile", modelPath, "-w", weightsPath, "-o", ext, "--external-data-threshold", "1024"]));
steps.push(measure("compile -O2, one file (inline)", [...aesm, "compile", modelPath, "-w", weightsPath, "-o", inl]));
// onnxruntime alone: load the external-data model from its path and run 2048 rows.
const ortScript = `
const ort = require("onnxruntime-node");
(async () => {
  const s = await ort.InferenceSession.create(process.argv[1]);
  const B = 2048, big = (n) => BigInt64Array.from({ length: B }, (_, i) => BigInt((i * 7919) % n));
  const feeds = {
    item: new ort.Tensor("int64", big(${vocab}), [B]), user: new ort.Tensor("int64", big(100000), [B]),
    x: new ort.Tensor("float32", Float32Array.from({ length: B * 8 }, (_, i) => Math.sin(i)), [B, 8]),
    page: new ort.Tensor("int64", big(3), [B]),
  };
  const out = await s.run(feeds);
  console.log(Object.keys(out).length, "outputs");
})();`;
steps.push(measure("onnxruntime: load from path + run 2048 rows", [process.execPath, "-e", ortScript, ext]));
steps.push(measure("onnx.checker.check_model(path, full_check=True)", ["/usr/bin/python3", "-c", "import onnx,sys; onnx.checker.check_model(sys.argv[1], full_check=True)", ext]));
steps.push(measure("parity, 2048 rows, cpu (external-data model)", [...aesm, "parity", modelPath, "-w", weightsPath, "--onnx", ext, "--rows", "2048", "--summary", "--no-progress"]));

t = performance.now();
const files = Object.fromEntries(
  ["ext", "inline"].flatMap((d) => readdirSync(join(dir, d)).map((f) => [`${d}/${f}`, `${mib(join(dir, d, f))} MiB`])),
);
console.log(JSON.stringify({ params, weightsMiB: mib(weightsPath), files, steps }, null, 2));
if (!values.keep) rmSync(dir, { recursive: true, force: true });
