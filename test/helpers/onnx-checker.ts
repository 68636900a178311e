// The ONNX reference checker as a test helper: every suite that writes a model calls
// checkOnnxFile on it (MODEL.md §8: check_model(full_check) and strict shape inference).

import { spawnSync } from "node:child_process";

/** The Debian python3-onnx, not whatever `python3` a version manager puts first on PATH. */
export const CHECKER_PYTHON = "/usr/bin/python3";

const CHECK_SCRIPT = `
import sys
import onnx
m = onnx.load(sys.argv[1])
supported = onnx.defs.onnx_opset_version()
used = max([o.version for o in m.opset_import if o.domain in ("", "ai.onnx")] or [0])
if used > supported:
    sys.exit("python3-onnx %s checks opsets up to %d; this model uses opset %d" % (onnx.__version__, supported, used))
onnx.checker.check_model(m, full_check=True)
onnx.shape_inference.infer_shapes(m, check_type=True, strict_mode=True)
`;

const availability = new Map<string, true | string>();

/** Fails (never skips) when the checker cannot run, saying what to install. */
function requireChecker(python: string): void {
  let ok = availability.get(python);
  if (ok === undefined) {
    const r = spawnSync(python, ["-c", "import onnx"], { encoding: "utf8" });
    ok =
      r.status === 0
        ? true
        : `the ONNX checker needs ${python} with the onnx module; install python3-onnx (apt-get install python3-onnx)` +
          (r.error ? ` [${r.error.message}]` : r.stderr ? ` [${r.stderr.trim().split("\n").pop()}]` : "");
    availability.set(python, ok);
  }
  if (ok !== true) throw new Error(ok);
}

/**
 * Run onnx.checker.check_model(full_check=True) and strict shape inference on `path`;
 * throws with the checker's stderr. `python` is for testing the helper itself.
 */
export function checkOnnxFile(path: string, python: string = CHECKER_PYTHON): void {
  requireChecker(python);
  const r = spawnSync(python, ["-c", CHECK_SCRIPT, path], { encoding: "utf8" });
  if (r.status !== 0) throw new Error(`ONNX checker rejected ${path}:\n${(r.stderr || r.stdout || String(r.error)).trim()}`);
}
