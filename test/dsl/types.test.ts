// Runs the TypeScript compiler on types.check.ts with the project's options: zero diagnostics means
// every literal-type assertion holds and every `@ts-expect-error` marks a real error.

import { readFileSync, mkdtempSync, writeFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";

const here = dirname(fileURLToPath(import.meta.url));
const root = resolve(here, "../..");

function projectOptions(): ts.CompilerOptions {
  const configPath = join(root, "tsconfig.json");
  const config = ts.readConfigFile(configPath, ts.sys.readFile);
  if (config.error) throw new Error(ts.flattenDiagnosticMessageText(config.error.messageText, "\n"));
  return ts.parseJsonConfigFileContent(config.config, ts.sys, root).options;
}

function compile(files: string[]): string[] {
  const program = ts.createProgram(files, projectOptions());
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (!d.file || d.start === undefined) return text;
    const { line, character } = d.file.getLineAndCharacterOfPosition(d.start);
    return `${d.file.fileName}:${line + 1}:${character + 1}: ${text}`;
  });
}

describe("DSL literal types", () => {
  it("types.check.ts compiles with zero diagnostics", () => {
    expect(compile([join(here, "types.check.ts")])).toEqual([]);
  }, 60_000);

  it("has the expected-error cases it claims", () => {
    const text = readFileSync(join(here, "types.check.ts"), "utf8");
    expect(text.match(/@ts-expect-error/g)?.length).toBeGreaterThanOrEqual(12);
  });

  it("the harness catches an unused @ts-expect-error", () => {
    // A control: if the compiler stopped reporting unused directives, the test above would pass vacuously.
    const dir = mkdtempSync(join(tmpdir(), "aesm-types-"));
    try {
      const file = join(dir, "control.ts");
      writeFileSync(file, "// @ts-expect-error\nexport const x: number = 1;\n");
      expect(compile([file]).join("\n")).toContain("Unused '@ts-expect-error' directive");
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }, 60_000);
});
