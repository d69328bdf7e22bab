// When the agent renews and how long it waits after a failure: pure functions, tested at the
// edges of the random range and over many random values.
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_BACKOFF, DEFAULT_BACKOFF_BASE_MS, DEFAULT_BACKOFF_CAP_MS, RENEW_LATEST_BEFORE_END, RENEW_WINDOW_END, RENEW_WINDOW_START,
  backoffDelay, renewAt,
} from '../../agent/credentials/schedule.ts';
import { seeded } from '../helpers/random.ts';

const HOUR = 3_600_000;
const EDGES = [0, Number.MIN_VALUE, 0.25, 0.5, 0.75, 0.999, 0.999999999, 1 - Number.EPSILON];


describe('renewAt', () => {
  const notBefore = 1_700_000_000_000;
  const lifetimes = [5 * 60_000 + 60_000, HOUR, 24 * HOUR + 60_000, 30 * 24 * HOUR];

  it('documents a window around two thirds that ends well before the last 5 %', () => {
    expect(RENEW_WINDOW_START).toBe(0.6);
    expect(RENEW_WINDOW_END).toBe(0.73);
    expect(RENEW_LATEST_BEFORE_END).toBe(0.05);
    expect((RENEW_WINDOW_START + RENEW_WINDOW_END) / 2).toBeCloseTo(2 / 3, 1);
  });

  it('lands in [0.60, 0.73] of the lifetime after notBefore, never after notAfter - 5 %, for edge and random values', () => {
    const random = seeded(42);
    for (const lifetime of lifetimes) {
      const notAfter = notBefore + lifetime;
      const values = [...EDGES, ...Array.from({ length: 5000 }, random)];
      for (const r of values) {
        const at = renewAt(notBefore, notAfter, r);
        expect(Number.isInteger(at)).toBe(true);
        expect(at).toBeGreaterThanOrEqual(notBefore + Math.floor(0.6 * lifetime));
        expect(at).toBeLessThanOrEqual(notBefore + 0.73 * lifetime);
        expect(at).toBeLessThanOrEqual(notAfter - 0.05 * lifetime);
      }
    }
  });

  it('is exactly 0.60 at random 0, about two thirds at 0.5, just under 0.73 near 1, and monotonic', () => {
    const lifetime = 24 * HOUR;
    const notAfter = notBefore + lifetime;
    expect(renewAt(notBefore, notAfter, 0)).toBe(notBefore + 0.6 * lifetime);
    expect(renewAt(notBefore, notAfter, 0.5)).toBe(notBefore + Math.floor(0.665 * lifetime));
    const top = renewAt(notBefore, notAfter, 0.999999999);
    expect(top).toBeGreaterThan(notBefore + 0.7299 * lifetime);
    expect(top).toBeLessThanOrEqual(notBefore + 0.73 * lifetime);
    let prev = -Infinity;
    for (let r = 0; r < 1; r += 0.01) {
      const at = renewAt(notBefore, notAfter, r);
      expect(at).toBeGreaterThanOrEqual(prev);
      prev = at;
    }
  });

  it('spreads: random values cover the whole window (no clumping at one end)', () => {
    const lifetime = 24 * HOUR;
    const random = seeded(7);
    const fractions = Array.from({ length: 2000 }, () => (renewAt(notBefore, notBefore + lifetime, random()) - notBefore) / lifetime);
    expect(Math.min(...fractions)).toBeLessThan(0.605);
    expect(Math.max(...fractions)).toBeGreaterThan(0.725);
    // ten equal bins across the window each get a fair share
    const bins = new Array<number>(10).fill(0);
    for (const f of fractions) bins[Math.min(9, Math.floor(((f - 0.6) / 0.13) * 10))]! += 1;
    for (const b of bins) expect(b).toBeGreaterThan(120);
  });

  it('a random source out of range cannot move it outside the window; non-finite inputs are a TypeError', () => {
    const notAfter = notBefore + HOUR;
    expect(renewAt(notBefore, notAfter, -5)).toBe(notBefore + 0.6 * HOUR);
    expect(renewAt(notBefore, notAfter, 7)).toBeLessThanOrEqual(notBefore + 0.73 * HOUR);
    expect(() => renewAt(notBefore, notAfter, Number.NaN)).toThrow(TypeError);
    expect(() => renewAt(Number.NaN, notAfter, 0.5)).toThrow(TypeError);
    expect(() => renewAt(notBefore, Infinity, 0.5)).toThrow(TypeError);
  });

  it('a certificate with no lifetime is renewed at once', () => {
    expect(renewAt(notBefore, notBefore, 0.5)).toBe(notBefore);
    expect(renewAt(notBefore, notBefore - 1000, 0.5)).toBe(notBefore);
  });
});

describe('backoffDelay', () => {
  const opts = { baseMs: 1000, capMs: 300_000 };

  it('defaults: base 1 s, cap 5 min', () => {
    expect(DEFAULT_BACKOFF_BASE_MS).toBe(1000);
    expect(DEFAULT_BACKOFF_CAP_MS).toBe(300_000);
    expect(DEFAULT_BACKOFF).toEqual({ baseMs: 1000, capMs: 300_000 });
    expect(Object.isFrozen(DEFAULT_BACKOFF)).toBe(true);
  });

  it('full jitter: uniform in [0, min(cap, base * 2^attempt)], from 0 at random 0 to the ceiling near 1', () => {
    for (let attempt = 0; attempt < 40; attempt++) {
      const ceiling = Math.min(300_000, 1000 * 2 ** attempt);
      expect(backoffDelay(attempt, opts, 0)).toBe(0);
      expect(backoffDelay(attempt, opts, 0.5)).toBe(Math.round(ceiling / 2));
      expect(backoffDelay(attempt, opts, 1 - Number.EPSILON)).toBe(ceiling);
      expect(backoffDelay(attempt, opts, 0.999999999)).toBe(ceiling);
    }
    expect(backoffDelay(0, opts, 0.999)).toBe(999);
    expect(backoffDelay(3, opts, 0.999)).toBe(7992);
  });

  it('never exceeds the cap, however many attempts (no overflow to Infinity or NaN)', () => {
    const random = seeded(1);
    for (const attempt of [9, 10, 50, 1023, 1024, 5000, Number.MAX_SAFE_INTEGER]) {
      for (let i = 0; i < 200; i++) {
        const d = backoffDelay(attempt, opts, random());
        expect(Number.isFinite(d)).toBe(true);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(300_000);
      }
      expect(backoffDelay(attempt, opts, 0.999999999)).toBe(300_000);
    }
  });

  it('stays within the bounds over many random values, and its mean is half the ceiling (full, not equal, jitter)', () => {
    const random = seeded(99);
    for (const attempt of [0, 2, 5, 12]) {
      const ceiling = Math.min(300_000, 1000 * 2 ** attempt);
      let sum = 0;
      const n = 4000;
      for (let i = 0; i < n; i++) {
        const d = backoffDelay(attempt, opts, random());
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThanOrEqual(ceiling);
        sum += d;
      }
      expect(sum / n / ceiling).toBeGreaterThan(0.45);
      expect(sum / n / ceiling).toBeLessThan(0.55);
    }
  });

  it('a caller mistake is a TypeError', () => {
    expect(() => backoffDelay(-1, opts, 0.5)).toThrow(TypeError);
    expect(() => backoffDelay(1.5, opts, 0.5)).toThrow(TypeError);
    expect(() => backoffDelay(0, { baseMs: 0, capMs: 10 }, 0.5)).toThrow(TypeError);
    expect(() => backoffDelay(0, { baseMs: 10, capMs: 5 }, 0.5)).toThrow(TypeError);
    expect(() => backoffDelay(0, { baseMs: 10, capMs: Infinity }, 0.5)).toThrow(TypeError);
    expect(() => backoffDelay(0, opts, Number.NaN)).toThrow(TypeError);
  });
});
