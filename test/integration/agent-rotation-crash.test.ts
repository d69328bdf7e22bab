// Crash safety of certificate rotation: a child process rotates the identity against a real hub
// back to back and is killed with SIGKILL at a random moment, 200 times. After each kill the
// store's recovery runs (as the agent does at start) and the identity on disk must be a matching
// key and certificate, valid now, chaining to ca.pem (openssl agrees), issued by the hub to this
// node, and never older than the one before the kill.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { lockState, recoverState, statePaths, type StatePaths } from '../../agent/enroll/store.ts';
import { loadIdentity } from '../../agent/credentials/identity.ts';
import { REPO, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { enrollWithCli, opensslVerify } from './agent-rotation.helpers.ts';
import { seeded } from '../helpers/random.ts';

const CHILD = path.join(REPO, 'test/integration/agent-rotation-crash-child.ts');
const LANES = 2;
const KILLS_PER_LANE = 100;
const KILL_AFTER_MS = [5, 80] as const;
const MARK_TIMEOUT_MS = 15_000;

let hub: TestHub;
let work: string;
beforeAll(async () => {
  hub = await startTestHub({ fixedPorts: true });
  work = tempDir('sepal-rotation-crash-');
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

/** What the kill interrupted (see the marks in agent-rotation-crash-child.ts). */
type Phase = 'starting' | 'renew-call' | 'writing-new-dir' | 'mid-swap' | 'removing-old' | 'between';
const PHASE: Record<string, Phase> = { R: 'starting', B: 'renew-call', T: 'writing-new-dir', S: 'mid-swap', W: 'removing-old', D: 'between', F: 'between' };

interface Kill {
  readonly phase: Phase;
  readonly completed: number;
  readonly failed: number;
}

/** A child that has loaded its modules and waits for go() before it touches the state dir. */
interface Child {
  readonly proc: ChildProcessWithoutNullStreams;
  readonly loaded: Promise<void>;
  readonly closed: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Everything it wrote on stdout / stderr so far. */
  out(): string;
  err(): string;
  /** Resolves at its first mark `m` (rejects if it exits first). */
  reached(m: string): Promise<void>;
}

function spawnChild(dir: string): Child {
  const proc = spawn(process.execPath, [CHILD, dir], { stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  const waiters: Array<{ m: string; resolve: () => void }> = [];
  proc.stdout.setEncoding('utf8').on('data', (s: string) => {
    out += s;
    for (const w of waiters.splice(0)) {
      if (out.split('\n').includes(w.m)) w.resolve();
      else waiters.push(w);
    }
  });
  proc.stderr.setEncoding('utf8').on('data', (s: string) => { err += s; });
  const closed = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => proc.once('close', (code, signal) => resolve({ code, signal })));
  const reached = (m: string): Promise<void> => new Promise<void>((resolve, reject) => {
    if (out.split('\n').includes(m)) {
      resolve();
      return;
    }
    const timer = setTimeout(() => reject(new Error(`the child did not reach "${m}" within ${MARK_TIMEOUT_MS} ms: ${JSON.stringify(out)} ${err}`)), MARK_TIMEOUT_MS);
    waiters.push({ m, resolve: () => { clearTimeout(timer); resolve(); } });
    void closed.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`the child exited (${code ?? signal}) before "${m}": ${err}`));
    });
  });
  const loaded = reached('L');
  // The spare child is killed without ever being awaited; its rejection is not an error.
  loaded.catch(() => undefined);
  return { proc, loaded, closed, out: () => out, err: () => err, reached };
}

/** Lets `child` start, kills it 5-80 ms after its first Renew answer arrived (the first call of a
 *  fresh process is slow; timing from there spreads the kills over whole warm rotations), and
 *  reports what it was doing. `spawnNext` runs as soon as the child is under way, so the next
 *  child loads its modules while this one rotates. */
async function runAndKill(child: Child, rnd: () => number, spawnNext: () => void): Promise<Kill> {
  try {
    await child.loaded;
    child.proc.stdin.write('go\n');
    await child.reached('R');
    spawnNext();
    await child.reached('T');
    await new Promise((resolve) => setTimeout(resolve, KILL_AFTER_MS[0] + rnd() * (KILL_AFTER_MS[1] - KILL_AFTER_MS[0])));
  } finally {
    child.proc.kill('SIGKILL');
  }
  const { code, signal } = await child.closed;
  if (signal !== 'SIGKILL') throw new Error(`the child exited on its own (${code ?? signal}): ${child.err()}`);
  const marks = child.out().split('\n').filter((l) => l !== '');
  const phase = PHASE[marks.at(-1) ?? ''];
  if (phase === undefined) throw new Error(`unexpected output from the child: ${JSON.stringify(child.out())}`);
  return { phase, completed: marks.filter((m) => m === 'D').length, failed: marks.filter((m) => m === 'F').length };
}

interface Checked { readonly serial: string; readonly notBefore: number }

/** Recovery as the agent runs it at start, then every check on the pair. */
async function recoverAndCheck(paths: StatePaths): Promise<Checked> {
  const unlock = lockState(paths);
  try {
    recoverState(paths);
  } finally {
    unlock();
  }
  expect(fs.readdirSync(paths.root).filter((n) => n.startsWith('.identity-'))).toEqual([]);
  // tls.key and tls.crt are a pair, tls.crt chains through chain.pem to ca.pem, ca.pem holds the
  // pinned root, and the certificate names this node and organisation.
  const id = loadIdentity(paths);
  const now = Date.now();
  expect(id.notBefore <= now && now < id.notAfter, 'the certificate is valid now').toBe(true);
  expect(await opensslVerify(paths.identity)).toBe(`${path.join(paths.identity, 'tls.crt')}: OK`);
  return { serial: id.serial, notBefore: id.notBefore };
}


async function lane(index: number, seed: number): Promise<Kill[]> {
  const dir = path.join(work, `lane-${index}`);
  const nodeId = await enrollWithCli(hub, dir);
  const paths = statePaths(dir);
  const rnd = seeded(seed + index);
  let prev = await recoverAndCheck(paths);
  const kills: Kill[] = [];
  let next = spawnChild(dir);
  try {
    for (let i = 0; i < KILLS_PER_LANE; i++) {
      const child = next;
      const k = await runAndKill(child, rnd, () => {
        next = spawnChild(dir);
      });
      kills.push(k);
      const now = await recoverAndCheck(paths);
      // Never back to an older certificate; a new one is one the hub issued to this node.
      expect(now.notBefore, `kill ${i} (${k.phase}) went back to an older certificate`).toBeGreaterThanOrEqual(prev.notBefore);
      if (now.serial !== prev.serial) expect((await hub.running.hub.ctx.store.getCert(now.serial))?.nodeId).toBe(nodeId);
      prev = now;
    }
  } finally {
    // The spare child never got its go: it has not touched the state dir.
    next.proc.kill('SIGKILL');
    await next.closed;
  }
  return kills;
}

describe('rotation survives kill -9 at any moment', () => {
  it(`${LANES * KILLS_PER_LANE} SIGKILLs: after recovery, always a matching, valid pair that chains to ca.pem`, async () => {
    const seed = crypto.randomInt(2 ** 31);
    const t0 = performance.now();
    const kills = (await Promise.all(Array.from({ length: LANES }, (_, i) => lane(i, seed)))).flat();
    const by = (p: Phase): number => kills.filter((k) => k.phase === p).length;
    const summary = {
      kills: kills.length,
      midRotation: kills.length - by('between') - by('starting'),
      inRenewCall: by('renew-call'),
      writingNewDir: by('writing-new-dir'),
      midSwap: by('mid-swap'),
      removingOld: by('removing-old'),
      betweenRotations: by('between'),
      rotationsCompleted: kills.reduce((n, k) => n + k.completed, 0),
      rotationsFailed: kills.reduce((n, k) => n + k.failed, 0),
      seconds: Math.round((performance.now() - t0) / 100) / 10,
      seed,
    };
    console.log(`rotation crash test: ${JSON.stringify(summary)}`);
    expect(kills).toHaveLength(LANES * KILLS_PER_LANE);
    expect(summary.rotationsCompleted).toBeGreaterThan(0);
    expect(summary.rotationsFailed).toBe(0);
    // Most kills must land inside a rotation, or the test proves little.
    expect(summary.midRotation).toBeGreaterThan(kills.length / 2);
  }, 180_000);
});
