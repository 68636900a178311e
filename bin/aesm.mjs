#!/usr/bin/env node
// Entry point of the `aesm` command: registers the TypeScript loader (tsx), so that
// both aesm's sources and users' .ts model files load without a build step.
import { register } from "tsx/esm/api";

register();
const { main } = await import("../src/cli/main.ts");
process.exitCode = await main(process.argv.slice(2));
