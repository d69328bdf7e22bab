// The supervisor's pure parts: the restart policy (backoff, crash-loop window, holdoff) and the
// output plumbing (line splitting, the token bucket). Data in, data out; no processes.
import { describe, expect, it } from 'vitest';
import { backoffDelay } from '../../agent/credentials/schedule.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { LineSplitter, TokenBucket } from '../../agent/supervise/output.ts';
import {
  classifyExit, isCrashLoop, isUnclean, isUnrequested, nextStart, recordExit, restartDelay, uncleanExitHoldoff, type ExitInfo,
  type ExitReason,
} from '../../agent/supervise/policy.ts';

const exit = (reason: ExitReason): ExitInfo => ({ code: reason === 'exit' ? 0 : 1, signal: null, at: 0, reason, uptimeMs: 10 });

describe('restart policy', () => {
  it('classifies exits', () => {
    expect(classifyExit(0, null, false, false)).toBe('exit');
    expect(classifyExit(2, null, false, false)).toBe('error');
    expect(classifyExit(null, 'SIGSEGV', false, false)).toBe('signal');
    expect(classifyExit(null, 'SIGTERM', true, false)).toBe('stopped');
    expect(classifyExit(143, null, true, false)).toBe('stopped');
    expect(classifyExit(null, 'SIGKILL', true, true)).toBe('killed');
    expect(['exit', 'error', 'signal', 'spawn-failed'].every((r) => isUnrequested(r as ExitReason))).toBe(true);
    expect(isUnrequested('stopped') || isUnrequested('killed')).toBe(false);
    expect((['error', 'signal', 'killed'] as const).every(isUnclean)).toBe(true);
    expect((['exit', 'stopped', 'spawn-failed'] as const).some(isUnclean)).toBe(false);
  });

  it('holds off only after unclean exits with uncleanExitHoldoff', () => {
    const h = uncleanExitHoldoff(60_000);
    expect(h(exit('error'))).toBe(60_000);
    expect(h(exit('signal'))).toBe(60_000);
    expect(h(exit('killed'))).toBe(60_000);
    expect(h(exit('exit'))).toBe(0);
    expect(h(exit('stopped'))).toBe(0);
    expect(h(exit('spawn-failed'))).toBe(0);
  });

  it('keeps only the exits inside the window and flags more than maxExits', () => {
    const opts = { maxExits: 2, windowMs: 1_000 };
    let h = recordExit([], 0, 0, opts);
    h = recordExit(h, 500, 500, opts);
    expect(isCrashLoop(h, opts)).toBe(false);
    h = recordExit(h, 900, 900, opts);
    expect(h).toEqual([0, 500, 900]);
    expect(isCrashLoop(h, opts)).toBe(true);
    h = recordExit(h, 1_600, 1_600, opts); // 0 and 500 have aged out
    expect(h).toEqual([900, 1_600]);
    expect(isCrashLoop(h, opts)).toBe(false);
  });

  it('backs off with full jitter below the cap, and at [cap/2, cap] in a crash loop', () => {
    const b = { baseMs: 100, capMs: 1_000 };
    for (const r of [0, 0.3, 0.999]) {
      for (let a = 0; a < 20; a++) {
        const d = restartDelay(a, false, b, r);
        expect(d).toBe(backoffDelay(a, b, r));
        expect(d).toBeLessThanOrEqual(Math.min(1_000, 100 * 2 ** a));
        const loop = restartDelay(a, true, b, r);
        expect(loop).toBeGreaterThanOrEqual(500);
        expect(loop).toBeLessThanOrEqual(1_000);
      }
    }
  });

  it('waits for the later of backoff and holdoff; a crash loop is called so whichever is longer', () => {
    expect(nextStart(1_000, 200, 0, false)).toEqual({ at: 1_200, reason: 'backoff' });
    expect(nextStart(1_000, 200, 0, true)).toEqual({ at: 1_200, reason: 'crash-loop' });
    expect(nextStart(1_000, 200, 61_000, false)).toEqual({ at: 61_000, reason: 'holdoff' });
    // A child that fails at every start under a holdoff longer than the backoff cap (Flower's 65 s
    // against 60 s) must still show as crash-loop: that is the state operators alert on.
    expect(nextStart(1_000, 200, 61_000, true)).toEqual({ at: 61_000, reason: 'crash-loop' });
    expect(nextStart(1_000, 90_000, 61_000, true)).toEqual({ at: 91_000, reason: 'crash-loop' });
  });
});

function splitter(max: number): { s: LineSplitter; out: Array<[string, boolean]> } {
  const out: Array<[string, boolean]> = [];
  return { s: new LineSplitter(max, (l, t) => out.push([l, t])), out };
}

describe('LineSplitter', () => {
  it('splits across chunks, drops CR of CRLF and flushes a last partial line at the end', () => {
    const { s, out } = splitter(100);
    s.push(Buffer.from('one\r\ntw'));
    s.push(Buffer.from('o\n\nthr'));
    expect(out).toEqual([['one', false], ['two', false], ['', false]]);
    s.push(Buffer.from('ee'));
    s.end();
    expect(out.at(-1)).toEqual(['three', false]);
  });

  it('keeps a UTF-8 character split between chunks whole', () => {
    const { s, out } = splitter(100);
    const bytes = Buffer.from('grüße\n');
    s.push(bytes.subarray(0, 3)); // cuts the ü in half
    s.push(bytes.subarray(3));
    expect(out).toEqual([['grüße', false]]);
  });

  it('cuts a long line once, marks it, and skips the rest of it, also across chunks', () => {
    const { s, out } = splitter(10);
    s.push('x'.repeat(25) + '\nok\n');
    expect(out).toEqual([['x'.repeat(10), true], ['ok', false]]);
    out.length = 0;
    for (let i = 0; i < 50; i++) s.push('y'.repeat(7)); // 350 chars with no newline: bounded memory
    s.push('tail\nnext\n');
    expect(out).toEqual([['y'.repeat(10), true], ['next', false]]);
    out.length = 0;
    s.push('z'.repeat(12));
    s.end();
    expect(out).toEqual([['z'.repeat(10), true]]);
  });
});

describe('TokenBucket', () => {
  it('allows a burst, then refills at the rate on the injected clock', () => {
    const clock = new FakeClock();
    const b = new TokenBucket(clock, 3, 10);
    expect([b.take(), b.take(), b.take(), b.take()]).toEqual([true, true, true, false]);
    expect(b.msUntilToken()).toBe(100);
    clock.advance(99);
    expect(b.take()).toBe(false);
    clock.advance(1);
    expect(b.take()).toBe(true);
    clock.advance(60_000);
    expect([b.take(), b.take(), b.take(), b.take()]).toEqual([true, true, true, false]);
  });
});
