export * from "./dsl/index.ts";
