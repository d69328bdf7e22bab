// Sliding-window rate limits for enrollment, per key (IdP subject, token id, source address).
// In memory, per hub process: enough to stop a script hammering one hub.
export class RateLimiter {
  readonly #max: number;
  readonly #windowMs: number;
  readonly #clock: () => number;
  readonly #hits = new Map<string, number[]>();

  constructor(max: number, windowMs: number, clock: () => number = Date.now) {
    this.#max = max;
    this.#windowMs = windowMs;
    this.#clock = clock;
  }

  /** Records an attempt; false when the key is over its limit (the attempt still counts). */
  take(key: string): boolean {
    const now = this.#clock();
    const from = now - this.#windowMs;
    const hits = (this.#hits.get(key) ?? []).filter((t) => t > from);
    hits.push(now);
    this.#hits.set(key, hits);
    if (this.#hits.size > 10_000) this.#sweep(from);
    return hits.length <= this.#max;
  }

  #sweep(from: number): void {
    for (const [k, v] of this.#hits) if (v.every((t) => t <= from)) this.#hits.delete(k);
  }
}
