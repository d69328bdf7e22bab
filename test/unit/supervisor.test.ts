// The child supervisor against real child processes (this Node binary running -e scripts) and a
// FakeClock for every timer the supervisor owns: which delay was scheduled is read from status()
// and the clock, never measured. Waits are for events (status changes, log lines) with generous
// timeouts, so a loaded machine only makes the tests slower.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { backoffDelay } from '../../agent/credentials/schedule.ts';
import { ErrorCodes } from '../../agent/errors.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { ChildSupervisor, type SupervisorOptions, type SupervisorStatus } from '../../agent/supervise/supervisor.ts';
import { capturingLogger } from './agent-credentials.fixtures.ts';

const NODE = process.execPath;
const WAIT_MS = 20_000;
const GRACE_MS = 5_000;
const BACKOFF = { baseMs: 100, capMs: 1_000 };

// Child scripts (node -e; process.argv is [node, ...args]).
const CRASH = 'process.exit(1)';
const CLEAN_EXIT = 'process.exit(0)';
const ECHO = 'console.log(JSON.stringify({ argv: process.argv.slice(1), env: process.env.SEPAL_T ?? null, home: process.env.HOME ?? null, cwd: process.cwd() }))';
const WAIT_FOREVER = 'setInterval(() => {}, 1e6);';
const OBEY_TERM = `process.on('SIGTERM', () => { console.log('got SIGTERM'); process.exit(0); }); console.log('ready'); ${WAIT_FOREVER}`;
const IGNORE_TERM = `process.on('SIGTERM', () => console.log('ignoring SIGTERM')); console.log('ready'); ${WAIT_FOREVER}`;
/** Fails its first argv[2] runs (counted in the file argv[1]), then stays up until SIGUSR2. */
const FAIL_FIRST_N = `
  const fs = process.getBuiltinModule('node:fs');
  const [file, n] = process.argv.slice(1);
  const runs = (fs.existsSync(file) ? Number(fs.readFileSync(file, 'utf8')) : 0) + 1;
  fs.writeFileSync(file, String(runs));
  if (runs <= Number(n)) process.exit(1);
  process.on('SIGUSR2', () => process.exit(1));
  console.log('ready'); ${WAIT_FOREVER}`;
/** Starts a grandchild in its own group (stdio ignored so it holds no pipe), prints its pid, then
 *  waits, or exits at once with argv[1] === 'exit'. */
const WITH_GRANDCHILD = `
  const { spawn } = process.getBuiltinModule('node:child_process');
  const g = spawn(process.execPath, ['-e', ${JSON.stringify(WAIT_FOREVER)}], { stdio: 'ignore' });
  console.log('grandchild ' + g.pid);
  if (process.argv[1] === 'exit') process.exit(3);
  ${WAIT_FOREVER}`;

/** Polls until fn returns something other than undefined. */
async function eventually<T>(what: string, fn: () => T | undefined, timeoutMs = WAIT_MS): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Resolves with the first status (now or from onChange) that satisfies pred. */
function until(sup: ChildSupervisor, pred: (s: SupervisorStatus) => boolean, what = 'a status', timeoutMs = WAIT_MS): Promise<SupervisorStatus> {
  return new Promise((resolve, reject) => {
    const now = sup.status();
    if (pred(now)) {
      resolve(now);
      return;
    }
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}; status ${JSON.stringify(sup.status())}`));
    }, timeoutMs);
    const off = sup.onChange((s) => {
      if (!pred(s)) return;
      clearTimeout(timer);
      off();
      resolve(s);
    });
  });
}

/** The child's output lines as logged, in order. */
function output(c: ReturnType<typeof capturingLogger>, child: string, stream?: 'stdout' | 'stderr'): Array<Record<string, unknown>> {
  return c.lines().filter((l) => l['event'] === 'child.output' && l['child'] === child && (stream === undefined || l['stream'] === stream));
}

function waitLine(c: ReturnType<typeof capturingLogger>, child: string, text: string | RegExp): Promise<Record<string, unknown>> {
  const match = (l: Record<string, unknown>) => (typeof text === 'string' ? l['line'] === text : text.test(String(l['line'])));
  return eventually(`output line ${String(text)} from ${child}`, () => output(c, child).find(match));
}

/** Signal 0 is not enough: a zombie still answers it, and this container's pid 1 may not reap. */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).charAt(0);
    return state !== 'Z' && state !== 'X';
  } catch {
    return false;
  }
}

let tmp: string;
let clock: FakeClock;
let cap: ReturnType<typeof capturingLogger>;
let running: ChildSupervisor[];

beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-supervisor-'));
  clock = new FakeClock(1_700_000_000_000, () => 0.999);
  cap = capturingLogger();
  running = [];
});

afterEach(async () => {
  for (const sup of running) {
    let done = false;
    const p = sup.stop().then(() => { done = true; });
    for (let i = 0; i < 500 && !done; i++) {
      clock.advance(GRACE_MS);
      await sleep(20);
    }
    await p;
  }
  fs.rmSync(tmp, { recursive: true, force: true });
});

function supervisor(name: string, argv: string[], opts: Partial<SupervisorOptions> = {}): ChildSupervisor {
  const sup = new ChildSupervisor({
    name, spec: { argv }, clock, log: cap.log, backoff: BACKOFF, minUptimeMs: 5_000, stopGraceMs: GRACE_MS,
    crashLoop: { maxExits: 100, windowMs: 60_000 }, ...opts,
  });
  running.push(sup);
  return sup;
}

/** The delay the supervisor chose for the wait it is in. */
function scheduledDelay(s: SupervisorStatus): number {
  expect(s.nextStartAt).not.toBeNull();
  expect(s.lastExit).not.toBeNull();
  return (s.nextStartAt ?? 0) - (s.lastExit?.at ?? 0);
}

describe('ChildSupervisor', () => {
  it('passes argv literally without a shell, with the given env and cwd', async () => {
    const marker = path.join(tmp, 'pwned');
    const args = [`$(touch ${marker}); rm -rf`, `'; touch ${marker}; '`, `\`touch ${marker}\``, '*', '&& | > <', 'a b\tc', ''];
    const argv = [NODE, '-e', ECHO, ...args];
    // env replaces the agent's environment: HOME must not leak through.
    const sup = supervisor('echo', argv, { spec: { argv, env: { SEPAL_T: 'v' }, cwd: tmp } });
    sup.start();
    const line = await eventually('the echo', () => output(cap, 'echo', 'stdout')[0]);
    const got = JSON.parse(String(line['line'])) as { argv: string[]; env: string | null; home: string | null; cwd: string };
    expect(got.argv).toEqual(args);
    expect(got.env).toBe('v');
    expect(got.home).toBeNull();
    expect(fs.realpathSync(got.cwd)).toBe(fs.realpathSync(tmp));
    await until(sup, (s) => s.lastExit !== null, 'the exit');
    expect(fs.existsSync(marker)).toBe(false);
  });

  it('restarts after a crash with growing delays, bounded by the cap', async () => {
    const sup = supervisor('crash', [NODE, '-e', CRASH]);
    sup.start();
    const delays: number[] = [];
    for (let i = 0; i < 7; i++) {
      const s = await until(sup, (x) => x.state === 'backoff' && x.restarts === i, `backoff #${i}`);
      expect(s.lastExit).toMatchObject({ code: 1, signal: null, reason: 'error' });
      expect(s.reason).toBe('backoff');
      expect(s.crashLoop).toBe(false);
      const d = scheduledDelay(s);
      expect(clock.pending()).toContain(s.nextStartAt);
      delays.push(d);
      clock.advance(d - 1);
      expect(sup.status()).toMatchObject({ state: 'backoff', pid: null, restarts: i }); // not a millisecond early
      clock.advance(1);
    }
    expect(delays).toEqual([0, 1, 2, 3, 4, 5, 6].map((a) => backoffDelay(a, BACKOFF, 0.999)));
    expect(delays).toEqual([100, 200, 400, 799, 999, 999, 999]);
    expect(cap.lines().some((l) => l['event'] === 'child.restarted' && l['child'] === 'crash')).toBe(true);
  });

  it('resets the backoff once a run lasted minUptimeMs; readyLine marks it running', async () => {
    const counter = path.join(tmp, 'runs');
    const sup = supervisor('flaky', [NODE, '-e', FAIL_FIRST_N, counter, '3'], { readyLine: /^ready$/ });
    sup.start();
    for (let i = 0; i < 3; i++) {
      const s = await until(sup, (x) => x.state === 'backoff' && x.restarts === i, `backoff #${i}`);
      clock.advance(scheduledDelay(s));
    }
    await until(sup, (x) => x.state === 'starting' && x.restarts === 3, 'the fourth run');
    const up = await until(sup, (x) => x.state === 'running', 'the ready line');
    clock.advance(5_000); // minUptimeMs
    process.kill(up.pid ?? 0, 'SIGUSR2');
    const s = await until(sup, (x) => x.state === 'backoff' && x.restarts === 3, 'the exit after a long run');
    expect(s.lastExit).toMatchObject({ code: 1, reason: 'error', uptimeMs: 5_000 });
    expect(scheduledDelay(s)).toBe(backoffDelay(0, BACKOFF, 0.999)); // attempt 0 again, not 799
  });

  it('enters crash-loop after more than maxExits quick exits, reports it, retries at the cap and recovers', async () => {
    const counter = path.join(tmp, 'runs');
    const sup = supervisor('looper', [NODE, '-e', FAIL_FIRST_N, counter, '5'], { crashLoop: { maxExits: 3, windowMs: 60_000 } });
    const seen: SupervisorStatus[] = [];
    sup.onChange((s) => seen.push(s));
    sup.start();
    for (let i = 0; i < 3; i++) {
      const s = await until(sup, (x) => x.state === 'backoff' && x.restarts === i, `backoff #${i}`);
      expect(s.crashLoop).toBe(false);
      clock.advance(scheduledDelay(s));
    }
    const loop = await until(sup, (x) => x.state === 'crash-loop', 'the crash loop');
    expect(loop).toMatchObject({ crashLoop: true, reason: 'crash-loop', restarts: 3, pid: null, lastExit: { code: 1, signal: null, reason: 'error' } });
    expect(loop.error?.code).toBe(ErrorCodes.CHILD_CRASH_LOOP);
    expect(loop.error?.message).toContain('code 1');
    expect(scheduledDelay(loop)).toBeGreaterThanOrEqual(BACKOFF.capMs / 2);
    expect(scheduledDelay(loop)).toBeLessThanOrEqual(BACKOFF.capMs);
    expect(seen.some((s) => s.state === 'crash-loop' && s.crashLoop)).toBe(true);
    expect(cap.lines().some((l) => l['event'] === 'child.crash_loop' && l['level'] === 50)).toBe(true);

    clock.advance(scheduledDelay(loop)); // still retrying
    const again = await until(sup, (x) => x.state === 'crash-loop' && x.restarts === 4, 'the next retry');
    clock.advance(scheduledDelay(again));
    const up = await until(sup, (x) => x.state === 'running' && x.restarts === 5, 'the sixth run');
    expect(up.crashLoop).toBe(true); // not over until it has stayed up
    clock.advance(5_000);
    const ok = await until(sup, (x) => !x.crashLoop, 'the end of the crash loop');
    expect(ok).toMatchObject({ state: 'running', error: null });
  });

  it('waits out the holdoff after an unclean exit and does not call it a crash loop', async () => {
    const holdoffs: string[] = [];
    const sup = supervisor('held', [NODE, '-e', CRASH], {
      crashLoop: { maxExits: 1, windowMs: 30_000 },
      restartHoldoffMs: (e) => {
        holdoffs.push(`${e.reason}:${String(e.code)}`);
        return e.reason === 'error' || e.reason === 'signal' || e.reason === 'killed' ? 60_000 : 0;
      },
    });
    sup.start();
    for (let i = 0; i < 3; i++) {
      const s = await until(sup, (x) => x.state === 'holdoff' && x.restarts === i, `holdoff #${i}`);
      expect(s).toMatchObject({ reason: 'holdoff', crashLoop: false, error: null, pid: null });
      expect(s.nextStartAt).toBe((s.lastExit?.at ?? 0) + 60_000);
      expect(clock.pending()[0]).toBe(s.nextStartAt); // no earlier timer that could start it
      clock.advance(59_999);
      expect(sup.status()).toMatchObject({ state: 'holdoff', pid: null, restarts: i });
      clock.advance(1);
    }
    expect(holdoffs).toEqual(['error:1', 'error:1', 'error:1']);

    // A clean exit gets the plain backoff.
    const clean = supervisor('clean', [NODE, '-e', CLEAN_EXIT], { uncleanExitHoldoffMs: 60_000 });
    clean.start();
    const s = await until(clean, (x) => x.lastExit !== null && x.state !== 'starting', 'the clean exit');
    expect(s).toMatchObject({ state: 'backoff', reason: 'backoff', lastExit: { code: 0, reason: 'exit' } });
    expect(scheduledDelay(s)).toBeLessThanOrEqual(BACKOFF.baseMs);
  });

  it('applies the holdoff to restart(newSpec) after a forced kill, then runs the new argv', async () => {
    const sup = supervisor('swap', [NODE, '-e', IGNORE_TERM], { uncleanExitHoldoffMs: 60_000 });
    sup.start();
    await waitLine(cap, 'swap', 'ready');
    const done = sup.restart({ argv: [NODE, '-e', ECHO, 'second'] });
    await waitLine(cap, 'swap', 'ignoring SIGTERM');
    expect(sup.status().state).toBe('stopping');
    clock.advance(GRACE_MS);
    await done;
    const s = sup.status();
    expect(s).toMatchObject({ state: 'holdoff', restarts: 0, lastExit: { signal: 'SIGKILL', reason: 'killed' } });
    expect(s.nextStartAt).toBe((s.lastExit?.at ?? 0) + 60_000);
    clock.advance(60_000);
    const line = await eventually('the new argv', () => output(cap, 'swap', 'stdout').find((l) => String(l['line']).startsWith('{')));
    expect((JSON.parse(String(line['line'])) as { argv: string[] }).argv).toEqual(['second']);
  });

  it('stop() sends SIGTERM and resolves once the child is gone', async () => {
    const sup = supervisor('polite', [NODE, '-e', OBEY_TERM]);
    sup.start();
    await waitLine(cap, 'polite', 'ready');
    expect(sup.status().state).toBe('running');
    const p1 = sup.stop();
    expect(sup.stop()).toBe(p1); // idempotent: the same stop
    await p1;
    await waitLine(cap, 'polite', 'got SIGTERM');
    expect(sup.status()).toMatchObject({ state: 'stopped', pid: null, lastExit: { code: 0, signal: null, reason: 'stopped' } });
    await sup.stop();
    expect(clock.pending()).toEqual([]);
  });

  it('SIGKILLs a child that ignores SIGTERM once the grace is over', async () => {
    const sup = supervisor('stubborn', [NODE, '-e', IGNORE_TERM]);
    sup.start();
    await waitLine(cap, 'stubborn', 'ready');
    let resolved = false;
    const p = sup.stop().then(() => { resolved = true; });
    await waitLine(cap, 'stubborn', 'ignoring SIGTERM');
    expect(sup.status().state).toBe('stopping');
    expect(resolved).toBe(false);
    clock.advance(GRACE_MS);
    await p;
    expect(sup.status()).toMatchObject({ state: 'stopped', lastExit: { code: null, signal: 'SIGKILL', reason: 'killed' } });
    expect(cap.lines().some((l) => l['event'] === 'child.kill')).toBe(true);
  });

  it('stops the grandchildren with the group', async () => {
    const sup = supervisor('parent', [NODE, '-e', WITH_GRANDCHILD]);
    sup.start();
    const line = await waitLine(cap, 'parent', /^grandchild \d+$/);
    const gpid = Number(String(line['line']).split(' ')[1]);
    expect(alive(gpid)).toBe(true);
    await sup.stop();
    await eventually('the grandchild to be gone', () => (alive(gpid) ? undefined : true));
  });

  it('kills what a crashed child left behind in its group before restarting', async () => {
    const sup = supervisor('orphaner', [NODE, '-e', WITH_GRANDCHILD, 'exit']);
    sup.start();
    const line = await waitLine(cap, 'orphaner', /^grandchild \d+$/);
    const gpid = Number(String(line['line']).split(' ')[1]);
    await until(sup, (x) => x.state === 'backoff', 'the crash');
    await eventually('the orphaned grandchild to be gone', () => (alive(gpid) ? undefined : true));
  });

  it('cancels a pending restart on stop() during the backoff', async () => {
    const sup = supervisor('cancel', [NODE, '-e', CRASH]);
    sup.start();
    await until(sup, (x) => x.state === 'backoff', 'the backoff');
    await Promise.all([sup.stop(), sup.stop()]);
    expect(sup.status()).toMatchObject({ state: 'stopped', nextStartAt: null, reason: null, restarts: 0 });
    expect(clock.pending()).toEqual([]);
    clock.advance(60_000);
    await sleep(50);
    expect(sup.status()).toMatchObject({ state: 'stopped', pid: null, restarts: 0 });
  });

  it('reports a missing or non-executable binary as CHILD_SPAWN_FAILED without throwing', async () => {
    const missing = supervisor('missing', [path.join(tmp, 'no-such-binary'), '--flag'], { crashLoop: { maxExits: 1, windowMs: 60_000 } });
    expect(() => missing.start()).not.toThrow();
    const s = await until(missing, (x) => x.state === 'backoff', 'the failed spawn');
    expect(s.error).toMatchObject({ code: ErrorCodes.CHILD_SPAWN_FAILED, errno: 'ENOENT' });
    expect(s.lastExit).toMatchObject({ code: null, signal: null, reason: 'spawn-failed' });
    clock.advance(scheduledDelay(s));
    const loop = await until(missing, (x) => x.state === 'crash-loop', 'the crash loop of failed spawns');
    expect(loop.error?.code).toBe(ErrorCodes.CHILD_SPAWN_FAILED); // the cause, with crashLoop saying how often
    expect(loop.crashLoop).toBe(true);

    const file = path.join(tmp, 'not-executable');
    fs.writeFileSync(file, '#!/bin/sh\n', { mode: 0o644 });
    const noexec = supervisor('noexec', [file]);
    noexec.start();
    const t = await until(noexec, (x) => x.state === 'backoff', 'the failed spawn');
    expect(t.error).toMatchObject({ code: ErrorCodes.CHILD_SPAWN_FAILED, errno: 'EACCES' });
  });

  it('logs output lines tagged with the child, and counts and reports what the rate limit drops', async () => {
    const script = `for (let i = 0; i < 80; i++) console.log('line ' + i); ${WAIT_FOREVER}`;
    const sup = supervisor('chatty', [NODE, '-e', script], { output: { burst: 50, perSecond: 10 } });
    sup.start();
    await eventually('30 dropped lines', () => (sup.status().droppedLines === 30 ? true : undefined));
    const logged = output(cap, 'chatty');
    expect(logged.map((l) => l['line'])).toEqual(Array.from({ length: 50 }, (_, i) => `line ${i}`));
    expect(logged.every((l) => l['stream'] === 'stdout' && l['level'] === 30)).toBe(true);
    const summary = () => cap.lines().filter((l) => l['event'] === 'child.output_dropped' && l['child'] === 'chatty');
    expect(summary()).toEqual([]);
    clock.advance(100); // one token back at 10/s: the count is reported
    expect(summary()).toMatchObject([{ dropped: 30, droppedTotal: 30 }]);
  });

  it('caps long lines, marks them truncated, and logs stderr at warn', async () => {
    const script = `process.stderr.write('x'.repeat(10000) + '\\nshort\\n')`;
    const sup = supervisor('long', [NODE, '-e', script], { output: { maxLineLength: 4096 } });
    sup.start();
    const short = await waitLine(cap, 'long', 'short');
    const [first] = output(cap, 'long', 'stderr');
    expect(first).toMatchObject({ child: 'long', stream: 'stderr', level: 40, truncated: true });
    expect(String(first?.['line'])).toBe('x'.repeat(4096));
    expect(short['truncated']).toBeUndefined();
  });

  it('rejects a bad spec or options as a TypeError at construction', () => {
    const base = { name: 'x', spec: { argv: [NODE] }, clock, log: cap.log };
    expect(() => new ChildSupervisor({ ...base, spec: { argv: [] } })).toThrow(TypeError);
    expect(() => new ChildSupervisor({ ...base, spec: { argv: [NODE, 'a\0b'] } })).toThrow(TypeError);
    expect(() => new ChildSupervisor({ ...base, name: 'bad name' })).toThrow(TypeError);
    expect(() => new ChildSupervisor({ ...base, uncleanExitHoldoffMs: 1, restartHoldoffMs: () => 1 })).toThrow(TypeError);
    expect(() => new ChildSupervisor({ ...base, backoff: { baseMs: 10, capMs: 1 } })).toThrow(TypeError);
    expect(() => new ChildSupervisor({ ...base, crashLoop: { maxExits: 0, windowMs: 1 } })).toThrow(TypeError);
  });
});
