// The TypeScript interpreter backend: ONNX-semantics kernels for every IR op and a graph runner.
export { type Kernel, KERNELS, broadcastIndex, broadcastShape, runKernel } from "./kernels.ts";
export { type RunOptions, type RunStats, runGraph, runGraphAll } from "./run.ts";
export { erf, erfc, gelu } from "./erf.ts";
