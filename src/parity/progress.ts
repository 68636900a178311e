// A one-line progress bar on stderr for long parity runs (rows × evaluations), redrawn in
// place at most every 100 ms; silent unless stderr is a terminal.

export interface ProgressSink {
  /** `done` of `total` units; `label` says what is running. */
  update(done: number, total: number, label: string): void;
  /** Erase the bar (before the report is printed). */
  finish(): void;
}

export const silentProgress: ProgressSink = { update() {}, finish() {} };

/** A bar that writes through `write` (stderr), with the elapsed time and an estimate of what remains. */
export function terminalProgress(write: (s: string) => void, opts: { width?: number; now?: () => number; intervalMs?: number } = {}): ProgressSink {
  const width = opts.width ?? 28;
  const now = opts.now ?? (() => performance.now());
  const interval = opts.intervalMs ?? 100;
  const start = now();
  let last = -Infinity;
  let drawn = 0;
  return {
    update(done, total, label) {
      const t = now();
      if (t - last < interval && done < total) return;
      last = t;
      const frac = total > 0 ? Math.min(1, done / total) : 1;
      const filled = Math.round(frac * width);
      const elapsed = (t - start) / 1000;
      const eta = frac > 0 && frac < 1 ? ` eta ${formatSeconds((elapsed * (1 - frac)) / frac)}` : "";
      const line = `[${"█".repeat(filled)}${"░".repeat(width - filled)}] ${(frac * 100).toFixed(0).padStart(3)}% ${label} ${formatSeconds(elapsed)}${eta}`;
      write(`\r${line.padEnd(drawn)}`);
      drawn = line.length;
    },
    finish() {
      if (drawn) write(`\r${" ".repeat(drawn)}\r`);
      drawn = 0;
    },
  };
}

function formatSeconds(s: number): string {
  return s < 60 ? `${s.toFixed(1)}s` : `${Math.floor(s / 60)}m${Math.round(s % 60).toString().padStart(2, "0")}s`;
}
