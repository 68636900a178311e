// docs/diagnostics.md lists every stable code that src/ uses, and nothing src/ no longer uses;
// each entry has a meaning, an example message and a fix.

import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { REPO } from "./helpers.ts";

function sourceFiles(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? sourceFiles(join(dir, e.name)) : e.name.endsWith(".ts") ? [join(dir, e.name)] : [],
  );
}

const CODE = /AESM\d{4}/g;
const codesInSrc = new Set(sourceFiles(join(REPO, "src")).flatMap((f) => readFileSync(f, "utf8").match(CODE) ?? []));
const doc = readFileSync(join(REPO, "docs/diagnostics.md"), "utf8");
/** `### AESMdddd` headings, each followed by its entry up to the next heading. */
const entries = new Map([...doc.matchAll(/^### (AESM\d{4})\n([\s\S]*?)(?=^##|(?![\s\S]))/gm)].map((m) => [m[1]!, m[2]!]));

describe("docs/diagnostics.md", () => {
  it("lists every code used in src/", () => {
    expect([...codesInSrc].filter((c) => !entries.has(c)).sort()).toEqual([]);
  });

  it("lists no code that src/ does not use, and mentions none outside its entries", () => {
    expect([...entries.keys()].filter((c) => !codesInSrc.has(c)).sort()).toEqual([]);
    expect([...new Set(doc.match(CODE))].filter((c) => !codesInSrc.has(c)).sort()).toEqual([]);
  });

  it("lists each code once, in order", () => {
    const headings = [...doc.matchAll(/^### (AESM\d{4})$/gm)].map((m) => m[1]!);
    expect(headings).toEqual([...new Set(headings)].sort());
  });

  it("gives each code a meaning, an example in the CLI's format, and a fix", () => {
    for (const [code, body] of entries) {
      expect(body.split("\n")[0]!.trim(), code).not.toBe("");
      expect(body, code).toMatch(new RegExp(`^- Example: \`error\\[${code}\\]: .+\`$`, "m"));
      expect(body, code).toMatch(/^- Fix: \S/m);
    }
  });
});
