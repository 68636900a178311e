// docs/passes.md describes every pass and lists -O1 and -O2 as pipeline.ts runs them.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { PASSES } from "../../src/passes/index.ts";
import { passesForLevel } from "../../src/passes/pipeline.ts";

const doc = readFileSync(join(import.meta.dirname, "../../docs/passes.md"), "utf8");

describe("docs/passes.md", () => {
  it("has a table row for every pass", () => {
    const rows = new Set([...doc.matchAll(/^\| `([a-z0-9-]+)` \|/gm)].map((m) => m[1]));
    expect(PASSES.map((p) => p.id).filter((id) => !rows.has(id))).toEqual([]);
  });

  it("lists the -O1 and -O2 passes in pipeline order", () => {
    const o1 = /^\| `-O1` \| (.*) \|/m.exec(doc)![1]!;
    expect([...o1.matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1])).toEqual(passesForLevel(1).map((p) => p.id));
    const o2 = /`-O2` today: ([\s\S]*?)\(`src\/passes\/pipeline.ts`/.exec(doc)![1]!;
    expect([...o2.matchAll(/`([a-z0-9-]+)`/g)].map((m) => m[1])).toEqual(passesForLevel(2).map((p) => p.id));
  });
});
