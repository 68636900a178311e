// The HTML report in a real headless browser (Debian's chromium, driven by playwright-core):
// it loads offline with no console errors, shows a histogram per output and the selection
// heatmaps, and a screenshot shows the heatmap drawn (many colours, not a blank box).

import { existsSync, mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { pathToFileURL } from "node:url";
import { chromium } from "playwright-core";
import { PNG } from "pngjs";
import { beforeAll, describe, expect, it } from "vitest";
import { main } from "../../src/cli/main.ts";
import { generateInputs, writeInputsFile } from "../../src/parity/index.ts";
import { smallSpec, writeModelFiles } from "./models.ts";

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

let html: string;

beforeAll(async () => {
  const spec = smallSpec();
  const f = writeModelFiles(spec);
  const rows = join(f.dir, "rows.jsonl");
  writeInputsFile(rows, spec, generateInputs(spec, { rows: 400, seed: 9, extreme: 0 }));
  html = join(f.dir, "report.html");
  let err = "";
  const code = await main(["parity", f.model, "-w", f.weights, "--onnx", f.onnx, "--inputs", rows, "--html", html, "--summary"], {
    out: () => {},
    err: (s) => (err += s),
    isTTY: false,
  });
  expect(err).toBe("");
  expect(code).toBe(0);
}, 60_000);

/** Distinct RGB colours and the share of pixels that are not near-white, in a PNG. */
function pixelStats(png: Buffer): { colours: number; inked: number } {
  const img = PNG.sync.read(png);
  const seen = new Set<number>();
  let inked = 0;
  for (let i = 0; i < img.data.length; i += 4) {
    const [r, g, b] = [img.data[i]!, img.data[i + 1]!, img.data[i + 2]!];
    seen.add((r << 16) | (g << 8) | b);
    if (r + g + b < 3 * 235) inked++;
  }
  return { colours: seen.size, inked: inked / (img.data.length / 4) };
}

describe("HTML report in chromium", () => {
  it("loads offline without console errors and draws the histograms and heatmaps", async () => {
    if (!existsSync(CHROMIUM))
      throw new Error(`${CHROMIUM} is missing: install Debian's chromium package (apt-get install -y chromium); .ci/run installs it`);
    const profile = mkdtempSync(join(tmpdir(), "aesm-chromium-"));
    const context = await chromium.launchPersistentContext(profile, { executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
    try {
      const page = await context.newPage();
      const problems: string[] = [];
      page.on("console", (m) => {
        if (m.type() === "error" || m.type() === "warning") problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      page.on("request", (r) => {
        if (!r.url().startsWith("file:")) problems.push(`network request: ${r.url()}`);
      });
      await page.setViewportSize({ width: 1280, height: 900 });
      await page.goto(pathToFileURL(html).href, { waitUntil: "load" });

      expect(await page.title()).toBe("aesm parity: small — PASS");
      expect(await page.locator("figure.histogram svg").count()).toBe(2);
      expect(await page.locator("figure.histogram").evaluateAll((els) => els.map((e) => e.getAttribute("data-output")))).toEqual(["ctr", "cvr"]);
      // three expert layers, each: the reference, cpu:disabled, cpu:all
      const maps = page.locator("figure.heatmap");
      expect(await maps.count()).toBe(9);
      expect(await maps.evaluateAll((els) => els.map((e) => `${e.getAttribute("data-layer")} ${e.getAttribute("data-source")}`))).toEqual([
        "scenario_layers.page.0 reference",
        "scenario_layers.page.0 cpu:disabled",
        "scenario_layers.page.0 cpu:all",
        "scenario_layers.slot.0 reference",
        "scenario_layers.slot.0 cpu:disabled",
        "scenario_layers.slot.0 cpu:all",
        "task_layers.0 reference",
        "task_layers.0 cpu:disabled",
        "task_layers.0 cpu:all",
      ]);
      // slot heatmap: 3 values × 4 experts
      expect(await page.locator('figure.heatmap[data-layer="scenario_layers.slot.0"][data-source="reference"] rect').count()).toBe(12);

      const shot = pixelStats(await page.locator('figure.heatmap[data-layer="scenario_layers.slot.0"][data-source="reference"] svg').screenshot());
      expect(shot.colours).toBeGreaterThan(8);
      expect(shot.inked).toBeGreaterThan(0.2);
      const hist = pixelStats(await page.locator('figure.histogram[data-output="ctr"] svg').screenshot());
      expect(hist.colours).toBeGreaterThan(4);

      // the JSON report rides along for tools
      const embedded = await page.locator("#aesm-parity-report").textContent();
      expect(JSON.parse(embedded ?? "{}").schema).toBe("aesm.parity/v1");
      if (process.env.AESM_SCREENSHOT) await page.screenshot({ path: process.env.AESM_SCREENSHOT, fullPage: true });
      expect(problems).toEqual([]);
    } finally {
      await context.close();
    }
  }, 60_000);
});
