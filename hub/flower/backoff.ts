// Capped exponential backoff with full jitter: the wait before try n+1 after n failures is uniform
// in [0, min(cap, base * 2^(n-1))). Spreads retries of many nodes after a SuperLink outage.

/** Milliseconds to wait after the `failures`-th failure in a row (failures >= 1). */
export function backoffDelay(failures: number, opts: { readonly baseMs: number; readonly capMs: number }, random: () => number = Math.random): number {
  if (!Number.isSafeInteger(failures) || failures < 1) throw new TypeError(`failures must be a positive integer, got ${failures}`);
  const window = Math.min(opts.capMs, opts.baseMs * 2 ** Math.min(failures - 1, 52));
  return Math.floor(random() * window);
}
