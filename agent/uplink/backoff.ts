// Capped exponential backoff with full jitter: reconnect storms are spread, never synchronised.
export interface BackoffPolicy {
  readonly baseMs: number;
  readonly capMs: number;
}

export function fullJitter(attempt: number, policy: BackoffPolicy, random: () => number): number {
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return Math.floor(random() * ceiling);
}
