// `npm run fuzz -- --seconds N --seed S`: differential fuzzing for a time budget; new failures
// are shrunk and saved under fixtures/regressions/. Also replays or shrinks a single case.
//
//   --seconds N        time budget (default 60)          --seed S       run seed (default: time)
//   --save-dir DIR     where reproducers go (default fixtures/regressions; --no-save: nowhere)
//   --check-every N    run the ONNX checker on every N-th case's files (opsets ≤ 17; 0 = never; default 0)
//   --max-cases N      stop after N cases                --json FILE    write the summary as JSON
//   --case SEED        shrink and save the case of this case seed (with --known ID: keep that known failure)
//   --replay FILE      run one reproducer and print its mismatches

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { writeFileAtomic } from "../src/core/atomic.ts";
import {
  KNOWN_ISSUES,
  failureSignature,
  loadReproducer,
  randomCase,
  runCase,
  runFuzz,
  shrinkAndSave,
} from "../src/fuzz/index.ts";
import { checkOnnxFile } from "../test/helpers/onnx-checker.ts";

const REPO = join(import.meta.dirname, "..");

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    seed: { type: "string" },
    "save-dir": { type: "string", default: join(REPO, "fixtures", "regressions") },
    "no-save": { type: "boolean", default: false },
    "check-every": { type: "string", default: "0" },
    "max-cases": { type: "string" },
    json: { type: "string" },
    case: { type: "string" },
    known: { type: "string" },
    replay: { type: "string" },
  },
  strict: true,
});

function int(name: string, v: string | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v)) {
    console.error(`--${name} must be a non-negative integer, got "${v}"`);
    process.exit(2);
  }
  return Number(v);
}

const log = (line: string) => console.log(line);
const saveDir = values["no-save"] ? undefined : values["save-dir"];
// The Debian checker knows opsets up to 17; newer opsets are checked by onnxruntime alone.
const checkFile = (path: string, opset: number) => {
  if (opset <= 17) checkOnnxFile(path);
};

if (values.replay) {
  const r = loadReproducer(values.replay);
  const dir = mkdtempSync(join(tmpdir(), "aesm-replay-"));
  try {
    const report = await runCase(r.case, { workDir: dir });
    console.log(`${values.replay}: ${report.ok ? "passes" : "fails"} (status ${r.status}); ${report.excusedRows}/${report.rows} rows excused`);
    for (const m of report.mismatches) console.log(`  ${m.target}: ${m.message}`);
    process.exitCode = report.ok ? 0 : 1;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else if (values.case) {
  const seed = int("case", values.case)!;
  const c = randomCase(seed);
  const dir = mkdtempSync(join(tmpdir(), "aesm-shrink-"));
  try {
    const report = await runCase(c, { workDir: dir });
    const first = report.mismatches[0];
    if (!first) {
      console.log(`case ${seed} passes; nothing to shrink`);
    } else {
      const signature = failureSignature(first);
      const known = values.known ? KNOWN_ISSUES.filter((k) => k.id === values.known) : KNOWN_ISSUES;
      const f = await shrinkAndSave(c, first, signature, {
        saveDir,
        known,
        workDir: dir,
        seed,
        log,
        ...(values.known ? { knownId: values.known } : {}),
      });
      console.log(JSON.stringify(f, null, 2));
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
} else {
  const seed = int("seed", values.seed) ?? Date.now() % 2 ** 31;
  const seconds = int("seconds", values.seconds)!;
  const checkEvery = int("check-every", values["check-every"])!;
  const maxCases = int("max-cases", values["max-cases"]);
  log(`fuzzing for ${seconds} s, seed ${seed}${saveDir ? `, reproducers to ${saveDir}` : ""}`);
  const summary = await runFuzz({
    seconds,
    seed,
    ...(saveDir ? { saveDir } : {}),
    ...(maxCases !== undefined ? { maxCases } : {}),
    ...(checkEvery > 0 ? { checkFile, checkEvery } : {}),
    log,
  });
  log(JSON.stringify(summary, null, 2));
  if (values.json) writeFileAtomic(values.json, `${JSON.stringify(summary, null, 2)}\n`);
  process.exitCode = summary.failures.length ? 1 : 0;
}
