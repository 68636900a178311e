// Differential fuzzing of the compiler: random valid models, weights and inputs; reference vs
// interpreter vs onnxruntime at every -O level and opset; shrinking; reproducer files.
export * from "./case.ts";
export * from "./check.ts";
export * from "./known.ts";
export { randomModel } from "./model.ts";
export * from "./reproducer.ts";
export * from "./runner.ts";
export * from "./shrink.ts";
