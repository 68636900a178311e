// aesm as a dependency, the way teams use it: `npm install <path to this repo>` in a
// fresh project, a model file there importing from "aesm", then the three commands.

import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO, tempDir } from "../cli/cli-helpers.ts";

const MODEL = `import { aesm, all, categorical, defineModel, dense, mlp } from "aesm";

export default defineModel({
  name: "user-model",
  features: { item: categorical({ vocab: 50, dim: 4 }), price: dense(2) },
  scenarios: {
    channel: { values: ["app", "web"], dim: 2, experts: 3, expert: mlp([8]), select: aesm({ specific: 1, shared: 1 }) },
  },
  tasks: { click: { tower: mlp([4]) } },
  taskLayers: { dim: 2, experts: 2, expert: mlp([8]), select: all() },
});
`;

/** npx, with npm's own warnings (e.g. about this repo's onnxruntime-node .npmrc key, inherited through the environment under `npm test`) dropped from stderr. */
function npx(cwd: string, args: string[]) {
  const r = spawnSync("npx", ["--no-install", ...args], { cwd, encoding: "utf8", timeout: 180_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr.replace(/^npm warn .*\n/gm, "") };
}

describe("installed as a dependency", () => {
  it("npm install <repo>, then init-weights, compile and parity on a model importing from aesm", () => {
    const dir = tempDir("aesm-user-");
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "user-project", private: true, type: "module" }));
    execFileSync("npm", ["install", REPO, "--no-audit", "--no-fund", "--loglevel=error"], { cwd: dir, timeout: 180_000 });
    writeFileSync(join(dir, "model.ts"), MODEL);

    const init = npx(dir, ["aesm", "init-weights", "model.ts", "--seed", "1", "-o", "w.safetensors"]);
    expect(init.stderr).toBe("");
    expect(init.status).toBe(0);
    expect(init.stdout).toBe("wrote w.safetensors: 23 tensors, 639 parameters (seed 1)\n");

    const compile = npx(dir, ["aesm", "compile", "model.ts", "--weights", "w.safetensors", "-o", "m.onnx"]);
    expect(compile.stderr).toBe("");
    expect(compile.status).toBe(0);
    expect(existsSync(join(dir, "m.onnx"))).toBe(true);

    const parity = npx(dir, ["aesm", "parity", "model.ts", "--weights", "w.safetensors", "--onnx", "m.onnx"]);
    expect(parity.status, parity.stdout + parity.stderr).toBe(0);
    expect(parity.stdout).toMatch(/^PASS/m);
  });
});
