// Known open failures, so that a long fuzz run keeps hunting new bugs instead of rediscovering
// one: each names its owner and reproducer, and says precisely which rows of a case it explains.
// A mismatch on a row no known issue explains is a new failure.

import type { PreparedCase } from "./check.ts";

export interface KnownIssue {
  id: string;
  summary: string;
  /** Where the fix belongs. */
  owner: string;
  /** The saved reproducer (under fixtures/regressions/), when there is one. */
  reproducer?: string;
  /** The rows of the case whose mismatches this issue accounts for. */
  explains(p: PreparedCase): Set<number>;
}

// Resolved: aesm-shared-score-underflow (the lowering's Log(u / P) was +inf where the softmax
// over gates underflowed), fixed in 98af9ed; reproducer fixtures/regressions/aesm-shared-score-underflow.json.

/** Issues the runner checks failures against; empty when none is open. */
export const KNOWN_ISSUES: readonly KnownIssue[] = [];
