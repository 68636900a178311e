// The compiler's version, recorded in every emitted model's metadata.
import { readFileSync } from "node:fs";

export const AESM_VERSION: string = (
  JSON.parse(readFileSync(new URL("../package.json", import.meta.url), "utf8")) as { version: string }
).version;
