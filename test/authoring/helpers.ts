// A throwaway user project for authoring tests: a temp folder whose node_modules links `aesm`
// (this repo) and `onnxruntime-node`, as `npm install aesm` would, and the CLI run in-process.

import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";

export const REPO = join(import.meta.dirname, "..", "..");

export interface Project {
  dir: string;
  /** Write `text` to `name` under the project; returns the absolute path. */
  write(name: string, text: string): string;
  remove(): void;
}

/** `"type": "module"` like a current TypeScript project; `aesm` resolves through node_modules. */
export function userProject(prefix = "aesm-authoring-"): Project {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  writeFileSync(join(dir, "package.json"), '{ "name": "user-project", "private": true, "type": "module" }\n');
  mkdirSync(join(dir, "node_modules"));
  symlinkSync(REPO, join(dir, "node_modules", "aesm"), "dir");
  symlinkSync(join(REPO, "node_modules", "onnxruntime-node"), join(dir, "node_modules", "onnxruntime-node"), "dir");
  return {
    dir,
    write(name, text) {
      const p = join(dir, name);
      mkdirSync(dirname(p), { recursive: true });
      writeFileSync(p, text);
      return p;
    },
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export { type CliRun, runCli } from "../cli/cli-helpers.ts";

/** What a user-facing error must never show: a JavaScript stack or an exception's class name. */
export function expectNoStack(text: string): void {
  if (/\n\s+at /.test(text) || /\b\w*Error:/.test(text)) throw new Error(`stack trace or exception name in user output:\n${text}`);
}

/** A small valid model importing from "aesm", with `{{…}}` left for a test to vary. */
export const SMALL_MODEL = `import { aesm, all, categorical, defineModel, dense, mlp } from "aesm";

export default defineModel({
  name: "small",
  features: {
    user: categorical({ vocab: 10, dim: 2 }),
    x: dense(3),
  },
  scenarios: {
    page: {
      values: ["home", "search"],
      dim: 2,
      experts: 4,
      expert: mlp([4]),
      select: aesm({ specific: 1, shared: 1 }),
    },
  },
  taskLayers: { dim: 2, experts: 2, expert: mlp([3]), select: all() },
  tasks: {
    ctr: { tower: mlp([2]) },
    cvr: { tower: mlp([]) },
  },
});
`;
