// validateWeights: every mismatch with the canonical layout is reported at once, naming
// its tensor, in layout order with extras last; loadWeights attributes them to the file.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { f32 } from "../../src/core/tensor.ts";
import { canonicalLayout, initWeights, loadWeights, saveWeights, validateWeights } from "../../src/weights/index.ts";
import { formatFloat } from "../../src/weights/validate.ts";
import { diagnosticsOf } from "./craft.ts";
import { oneLevelSpec, referenceSpec } from "./specs.ts";

const spec = oneLevelSpec();
const W0 = "scenario_layers.page.0.experts.0.layers.0.linear.weight"; // [6, 7]
const GATE = "scenario_layers.page.0.gates.1.out.weight"; // [4, 9]
const RV = "scenario_layers.page.0.experts.2.layers.0.bn.running_var"; // [16] in referenceSpec

const fresh = () => initWeights(spec, 1);
const tmp = mkdtempSync(join(tmpdir(), "aesm-validate-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("validateWeights", () => {
  it("accepts initialised weights for several models", () => {
    for (const s of [oneLevelSpec(), referenceSpec(), oneLevelSpec({ expertUnits: [], towerUnits: [] })])
      expect(() => validateWeights(s, initWeights(s, 3))).not.toThrow();
  });

  it("missing tensor", () => {
    const w = fresh();
    w.delete(W0);
    expect(diagnosticsOf(() => validateWeights(spec, w, "m.safetensors"))).toEqual([
      { code: "AESM2101", path: W0, message: "missing tensor (expected shape [6, 7])", file: "m.safetensors" },
    ]);
  });

  it("extra tensor, __proto__ included", () => {
    const w = fresh();
    const stray = "scenario_layers.page.0.experts.9.layers.0.linear.weight";
    w.set(stray, f32([1]));
    w.set("__proto__", f32([1]));
    expect(diagnosticsOf(() => validateWeights(spec, w))).toEqual([
      { code: "AESM2102", path: stray, message: "unexpected tensor (not part of this model)" },
      { code: "AESM2102", path: "__proto__", message: "unexpected tensor (not part of this model)" },
    ]);
  });

  it("misshapen tensor", () => {
    const w = fresh();
    w.set(GATE, f32([4, 8]));
    w.set("scenarios.page.weight", f32([6]));
    expect(diagnosticsOf(() => validateWeights(spec, w))).toEqual([
      { code: "AESM2103", path: "scenarios.page.weight", message: "shape [6], expected [3, 2]" },
      { code: "AESM2103", path: GATE, message: "shape [4, 8], expected [4, 9]" },
    ]);
  });

  it("NaN and Inf, reported at their first index", () => {
    const w = fresh();
    const a = w.get(W0)!.data as Float32Array;
    a[17] = NaN;
    a[20] = Infinity;
    (w.get(GATE)!.data as Float32Array)[3] = -Infinity;
    (w.get("towers.cvr.out.bias")!.data as Float32Array)[0] = Infinity;
    expect(diagnosticsOf(() => validateWeights(spec, w))).toEqual([
      { code: "AESM2104", path: W0, message: "contains NaN at index 17" },
      { code: "AESM2104", path: GATE, message: "contains -Inf at index 3" },
      { code: "AESM2104", path: "towers.cvr.out.bias", message: "contains Inf at index 0" },
    ]);
  });

  it("negative batch-norm running_var (other tensors may be negative)", () => {
    const s = referenceSpec();
    const w = initWeights(s, 2);
    (w.get(RV)!.data as Float32Array)[3] = -0.5;
    (w.get(RV)!.data as Float32Array)[5] = -0.1;
    (w.get(RV.replace("running_var", "running_mean"))!.data as Float32Array)[3] = -0.5;
    (w.get(RV.replace("running_var", "weight"))!.data as Float32Array)[3] = -0.5;
    expect(diagnosticsOf(() => validateWeights(s, w))).toEqual([
      { code: "AESM2105", path: RV, message: "running_var must be ≥ 0, got -0.5 at index 3" },
    ]);
  });

  it("running_var of zero is allowed (eps keeps the division finite)", () => {
    const s = referenceSpec();
    const w = initWeights(s, 2);
    (w.get(RV)!.data as Float32Array).fill(0);
    expect(() => validateWeights(s, w)).not.toThrow();
  });

  it("wrong dtype or value count", () => {
    const w = fresh();
    w.set(W0, { dtype: "float64", shape: [6, 7], data: new Float64Array(42) });
    w.set(GATE, { dtype: "float32", shape: [4, 9], data: new Float32Array(35) });
    expect(diagnosticsOf(() => validateWeights(spec, w))).toEqual([
      { code: "AESM2106", path: W0, message: "dtype float64, expected float32" },
      { code: "AESM2106", path: GATE, message: "holds 35 values, shape [4, 9] needs 36" },
    ]);
  });

  it("many problems at once: one error, layout order, extras last", () => {
    const s = referenceSpec();
    const w = initWeights(s, 4);
    const layout = canonicalLayout(s).map((t) => t.name);
    const late = layout[layout.length - 3]!;
    const early = layout[5]!;
    const mid = layout[40]!;
    w.set("zzz.extra", f32([2]));
    w.delete(late);
    (w.get(mid)!.data as Float32Array)[0] = NaN;
    w.set(early, f32([1, 2, 3]));
    (w.get(RV)!.data as Float32Array)[0] = -1;
    w.set("aaa.extra", f32([2]));
    const d = diagnosticsOf(() => validateWeights(s, w, "x.safetensors"));
    const byPos = (n: string) => (layout.includes(n) ? layout.indexOf(n) : Infinity);
    expect(d.map((x) => x.path)).toEqual([early, mid, RV, late, "zzz.extra", "aaa.extra"].sort((a, b) => byPos(a) - byPos(b)));
    expect(d.map((x) => x.code)).toEqual(
      [
        [early, "AESM2103"],
        [mid, "AESM2104"],
        [RV, "AESM2105"],
        [late, "AESM2101"],
      ]
        .sort((a, b) => byPos(a[0]!) - byPos(b[0]!))
        .map((x) => x[1])
        .concat(["AESM2102", "AESM2102"]),
    );
    expect(d.every((x) => x.file === "x.safetensors")).toBe(true);
  });

  it("formats float32 values with the fewest digits that read back the same", () => {
    expect(formatFloat(Math.fround(-0.1))).toBe("-0.1");
    expect(formatFloat(Math.fround(1e-30))).toBe("1e-30");
    expect(formatFloat(-0.5)).toBe("-0.5");
    expect(formatFloat(Math.fround(16777217))).toBe("16777216");
  });
});

describe("loadWeights / saveWeights", () => {
  it("round-trips initialised weights through a file", () => {
    const s = referenceSpec();
    const w = initWeights(s, 9);
    const path = join(tmp, "ref.safetensors");
    saveWeights(path, w, { seed: "9" });
    const back = loadWeights(path, s);
    expect([...back.keys()]).toEqual([...w.keys()]);
    for (const [k, t] of w) expect(back.get(k)!.data).toEqual(t.data);
  });

  it("names the file in every diagnostic", () => {
    const w = fresh();
    w.delete(W0);
    const path = join(tmp, "short.safetensors");
    saveWeights(path, w);
    expect(diagnosticsOf(() => loadWeights(path, spec))).toEqual([
      { code: "AESM2101", path: W0, message: "missing tensor (expected shape [6, 7])", file: path },
    ]);
  });

  it("format errors come before validation", () => {
    expect(diagnosticsOf(() => loadWeights(join(tmp, "absent.safetensors"), spec))[0]!.code).toBe("AESM4001");
  });
});
