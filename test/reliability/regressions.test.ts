// Replays every saved fuzz reproducer (fixtures/regressions/*.json). A "fixed" one must pass; an
// "open" one must still fail the way it was saved (when its owner fixes it, this test says so:
// set its status to "fixed" and remove it from src/fuzz/known.ts).

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { KNOWN_ISSUES, failureSignature, listReproducers, prepareCase, runCase } from "../../src/fuzz/index.ts";
import { REPO } from "../cli/cli-helpers.ts";

const DIR = join(REPO, "fixtures", "regressions");
const work = mkdtempSync(join(tmpdir(), "aesm-regressions-"));
afterAll(() => rmSync(work, { recursive: true, force: true }));

const reproducers = listReproducers(DIR);

describe("fuzz reproducers", () => {
  it("are well-formed", () => {
    for (const { path, r } of reproducers) {
      expect(["open", "fixed"], path).toContain(r.status);
      expect(r.failure.length, path).toBeGreaterThan(0);
      // An open reproducer's known issue must be listed, so the runner keeps triaging it.
      if (r.known && r.status === "open") expect(KNOWN_ISSUES.map((k) => k.id), `${path}: unknown known-issue id`).toContain(r.known);
    }
  });

  it.each(reproducers.map(({ path, r }) => [path.slice(DIR.length + 1), r] as const))("%s", async (_, r) => {
    const report = await runCase(r.case, { workDir: work });
    if (r.status === "fixed") {
      expect(report.mismatches, "a fixed reproducer fails again").toEqual([]);
      return;
    }
    const same = report.mismatches.filter((m) => failureSignature(m) === r.signature);
    expect(same.length, `open reproducer no longer fails as ${r.signature}: if fixed, set "status": "fixed"`).toBeGreaterThan(0);
    if (r.known) {
      // Still explained by its known issue: the triage in src/fuzz/known.ts keeps matching it.
      const issue = KNOWN_ISSUES.find((k) => k.id === r.known)!;
      const rows = issue.explains(prepareCase(r.case));
      for (const m of same) expect(rows.has(m.row!), `${m.message} is not explained by ${issue.id}`).toBe(true);
    }
  });
});
