// When to renew and how long to wait after a failure. Pure: time and randomness come in as
// arguments, so the bounds are tested with chosen random values and no clock.
//
// Renewal lands uniformly in [0.60, 0.73] of the lifetime after notBefore. The window is centred
// near two thirds (0.665), so a 24 h certificate renews between 14.4 h and 17.5 h: agents that got
// their certificates at the same moment (a fleet enrolled together, or all renewed right after a
// hub outage) spread over about 3 h instead of arriving together, and at least 27 % of the
// lifetime (6.5 h of a 24 h certificate; 97 s of the hub's 5-minute minimum, with its 1-minute
// backdate) is left for retries before expiry. Whatever the inputs, renewal is never later than
// notAfter − 5 % of the lifetime.
//
// Retries use capped exponential backoff with full jitter (uniform in [0, min(cap, base·2^n)]):
// agents that failed together do not retry together.

export const RENEW_WINDOW_START = 0.6;
export const RENEW_WINDOW_END = 0.73;
/** Renewal never falls in the last 5 % of the lifetime. */
export const RENEW_LATEST_BEFORE_END = 0.05;

export const DEFAULT_BACKOFF_BASE_MS = 1_000;
export const DEFAULT_BACKOFF_CAP_MS = 5 * 60_000;

export interface BackoffOptions {
  readonly baseMs: number;
  readonly capMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = Object.freeze({ baseMs: DEFAULT_BACKOFF_BASE_MS, capMs: DEFAULT_BACKOFF_CAP_MS });

/** A value from a random source, forced into [0, 1) so a misbehaving source cannot widen a bound. */
function unit(r: number): number {
  if (!Number.isFinite(r)) throw new TypeError('random() must return a finite number');
  return Math.min(Math.max(r, 0), 1 - Number.EPSILON);
}

/**
 * Unix ms at which to renew a certificate valid from `notBefore` to `notAfter` (Unix ms), given
 * `random` uniform in [0, 1). A certificate with no lifetime at all is renewed at once (notBefore).
 */
export function renewAt(notBefore: number, notAfter: number, random: number): number {
  if (!Number.isFinite(notBefore) || !Number.isFinite(notAfter)) throw new TypeError('notBefore and notAfter must be finite');
  const lifetime = notAfter - notBefore;
  if (lifetime <= 0) return notBefore;
  const fraction = RENEW_WINDOW_START + (RENEW_WINDOW_END - RENEW_WINDOW_START) * unit(random);
  const latest = notAfter - RENEW_LATEST_BEFORE_END * lifetime;
  return Math.floor(Math.min(notBefore + fraction * lifetime, latest));
}

/** Delay in ms before retry number `attempt` (0 for the first retry): uniform in
 *  [0, min(capMs, baseMs·2^attempt)] ("full jitter"). */
export function backoffDelay(attempt: number, opts: BackoffOptions, random: number): number {
  if (!Number.isInteger(attempt) || attempt < 0) throw new TypeError(`attempt must be a non-negative integer, got ${attempt}`);
  if (!(opts.baseMs > 0) || !(opts.capMs >= opts.baseMs) || !Number.isFinite(opts.capMs)) {
    throw new TypeError('backoff needs 0 < baseMs <= capMs < Infinity');
  }
  // 2 ** attempt is Infinity past 1023; min() with the cap keeps it finite.
  const ceiling = Math.min(opts.capMs, opts.baseMs * 2 ** attempt);
  return Math.round(unit(random) * ceiling);
}
