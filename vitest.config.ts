// Test runner settings: generous timeouts, since several suites spawn the CLI, start
// onnxruntime sessions or a headless browser, and CI machines have two cores.
import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 180_000,
    hookTimeout: 180_000,
  },
});
