// The IR: graph, ops, types, inference, printer and verifier.
export * from "./graph.ts";
export * from "./infer.ts";
export * from "./ops.ts";
export * from "./print.ts";
export * from "./types.ts";
export * from "./verify.ts";
