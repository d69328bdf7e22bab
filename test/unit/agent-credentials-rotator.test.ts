// The certificate rotator with a FakeClock (no sleeps, no real timers) and a stubbed Renew that
// issues real certificates from a throwaway CA: when it renews, how it backs off and resets, the
// expired and revoked paths, and every answer it must refuse (files untouched). The identity on
// disk is real: after each step the key and certificate there are checked as a pair.
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { AgentError, ErrorCodes, type ErrorCode } from '../../agent/errors.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { spkiDer } from '../../agent/enroll/keys.ts';
import { IDENTITY_FILES, realFs, statePaths, type StatePaths, type StoreFs } from '../../agent/enroll/store.ts';
import { CertificateRotator, DEFAULT_MIN_RENEW_INTERVAL_MS, type RenewalResult, type RotationState } from '../../agent/credentials/rotator.ts';
import type { CurrentIdentity } from '../../agent/credentials/identity.ts';
import { loadIdentity } from '../../agent/credentials/identity.ts';
import { rotateOnce, type RenewFn, type RenewResult } from '../../agent/credentials/rotate.ts';
import { derToPem, pemBlocks } from '../../agent/enroll/der.ts';
import { caPinCheck } from '../../agent/cli/doctor.ts';
import { DEFAULT_BACKOFF, backoffDelay, renewAt, type BackoffOptions } from '../../agent/credentials/schedule.ts';
import {
  FLOWER_KEY, FLOWER_PUB, HOUR, answer, capturingLogger, createTestCa, csrSpki, enrollIdentity, newKey, nodeRecord, type TestCa,
} from './agent-credentials.fixtures.ts';

const NODE = 'n-00000000000000a1';
const ORG = 'org-a';
const LIFETIME = 24 * HOUR;
const BACKDATE = 60_000;

let T0: number;
let ca: TestCa;
let foreign: TestCa;
beforeAll(() => {
  T0 = Math.floor(Date.now() / 1000) * 1000;
  ca = createTestCa(T0);
  foreign = createTestCa(T0, 'fed-other');
});

let tmp: string;
let paths: StatePaths;
let clock: FakeClock;
let random: number;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-rotator-'));
  paths = statePaths(path.join(tmp, 'state'));
  random = 0.5;
  clock = new FakeClock(T0, () => random);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

const NB0 = (): number => T0 - BACKDATE;
const NA0 = (): number => T0 - BACKDATE + LIFETIME;

function enroll(validity = { notBefore: NB0(), notAfter: NA0() }): void {
  enrollIdentity(paths, ca, nodeRecord(ca, NODE, ORG, T0), validity);
}

/** A hub that issues what the real one does: this node, this org, the CSR's key, 24 h from now. */
const goodHub = (): RenewFn => (csr) => {
  const now = clock.now();
  return Promise.resolve(answer(ca, ca.leaf({ spki: csrSpki(csr), nodeId: NODE, org: ORG, notBefore: now - BACKDATE, notAfter: now - BACKDATE + LIFETIME })));
};

const failing = (code: ErrorCode): RenewFn => () => Promise.reject(new AgentError(code, `stub: ${code}`));

interface Harness {
  readonly rotator: CertificateRotator;
  readonly calls: Buffer[];
  readonly states: RotationState[];
  readonly rotated: CurrentIdentity[];
  readonly results: RenewalResult[];
  readonly logs: () => Array<Record<string, unknown>>;
  /** Replaces what the stubbed hub does from now on. */
  hub: RenewFn;
}

function harness(opts: { hub?: RenewFn; fs?: StoreFs; backoff?: BackoffOptions; onRotated?: (i: CurrentIdentity) => void } = {}): Harness {
  const { log, lines } = capturingLogger();
  const h: Harness = {
    calls: [], states: [], rotated: [], results: [], logs: lines,
    hub: opts.hub ?? goodHub(),
    rotator: undefined as unknown as CertificateRotator,
  };
  const rotator = new CertificateRotator({
    clock,
    paths,
    renew: (csr, id, signal) => {
      h.calls.push(csr);
      return h.hub(csr, id, signal);
    },
    onRotated: opts.onRotated ?? ((i) => h.rotated.push(i)),
    onState: (s) => h.states.push(s),
    onRenewal: (r) => h.results.push(r),
    log,
    ...(opts.fs === undefined ? {} : { fs: opts.fs }),
    ...(opts.backoff === undefined ? {} : { backoff: opts.backoff }),
  });
  return Object.assign(h, { rotator });
}

/** Every file of identity/, for "nothing changed" checks. */
function snapshot(): Record<string, string> {
  return Object.fromEntries(fs.readdirSync(paths.identity).sort().map((f) => [f, fs.readFileSync(path.join(paths.identity, f), 'utf8')]));
}

/** The pair on disk: key and certificate match, the certificate chains to ca.pem and is valid at `now`. */
function diskPair(now = clock.now()): { serial: string; notBefore: number; notAfter: number; spki: Buffer } {
  const key = crypto.createPrivateKey(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.tlsKey)));
  const cert = new crypto.X509Certificate(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.tlsCert)));
  const chain = new crypto.X509Certificate(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.chain)));
  const root = new crypto.X509Certificate(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.ca)));
  expect(spkiDer(crypto.createPublicKey(key)).equals(spkiDer(cert.publicKey)), 'tls.key and tls.crt are a pair').toBe(true);
  expect(cert.verify(chain.publicKey) && chain.verify(root.publicKey), 'tls.crt chains to ca.pem').toBe(true);
  expect(cert.validFromDate.getTime() <= now && now < cert.validToDate.getTime(), 'tls.crt is valid now').toBe(true);
  return { serial: cert.serialNumber.toLowerCase(), notBefore: cert.validFromDate.getTime(), notAfter: cert.validToDate.getTime(), spki: spkiDer(cert.publicKey) };
}

function leftovers(): string[] {
  return fs.readdirSync(paths.root).filter((n) => n.startsWith('.identity-'));
}

function deferred<T>(): { promise: Promise<T>; resolve: (v: T) => void; reject: (e: unknown) => void } {
  let resolve!: (v: T) => void;
  let reject!: (e: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe('CertificateRotator: schedule and success', () => {
  it('renews at renewAt(), not a millisecond before; swaps in a matching pair; carries the Flower key and node.json over; plans the next', async () => {
    enroll();
    const h = harness();
    const before = snapshot();
    const old = diskPair();
    const loaded = h.rotator.start();
    expect(loaded.serial).toBe(old.serial);
    const due = renewAt(NB0(), NA0(), 0.5);
    expect(h.rotator.state).toBe('scheduled');
    expect(h.rotator.status().nextAttemptAt).toBe(due);
    expect(clock.pending()).toEqual([due, NA0()]); // the renewal, and the expiry watch

    clock.advance(due - T0 - 1);
    expect(h.calls).toHaveLength(0);
    clock.advance(1);
    expect(h.calls).toHaveLength(1);
    expect(h.rotator.state).toBe('renewing');
    await h.rotator.whenIdle();

    expect(h.states).toEqual(['scheduled', 'renewing', 'scheduled']);
    expect(h.results).toEqual(['success']);
    const now = diskPair();
    expect(now.serial).not.toBe(old.serial);
    expect(now.spki.equals(old.spki)).toBe(false);
    expect(now.spki.equals(csrSpki(h.calls[0]!))).toBe(true);
    const after = snapshot();
    for (const f of [IDENTITY_FILES.flowerKey, IDENTITY_FILES.flowerPub, IDENTITY_FILES.node, IDENTITY_FILES.ca]) expect(after[f], f).toBe(before[f]);
    expect(after[IDENTITY_FILES.flowerKey]).toBe(FLOWER_KEY);
    expect(after[IDENTITY_FILES.flowerPub]).toBe(FLOWER_PUB);
    expect(after[IDENTITY_FILES.tlsKey]).not.toBe(before[IDENTITY_FILES.tlsKey]);
    expect(fs.statSync(path.join(paths.identity, IDENTITY_FILES.tlsKey)).mode & 0o777).toBe(0o600);
    expect(leftovers()).toEqual([]);

    expect(h.rotated).toHaveLength(1);
    expect(h.rotated[0]?.serial).toBe(now.serial);
    expect(h.rotator.identity?.serial).toBe(now.serial);
    const next = renewAt(now.notBefore, now.notAfter, 0.5);
    expect(h.rotator.status()).toMatchObject({ state: 'scheduled', nextAttemptAt: next, consecutiveFailures: 0, notAfter: now.notAfter });
    expect(clock.pending()).toEqual([next, now.notAfter]);
    expect(h.logs().some((l) => l['event'] === 'cert.renewed' && l['serial'] === now.serial && l['previous'] === old.serial)).toBe(true);
    // and the transitions were logged by the one setter
    expect(h.logs().filter((l) => l['event'] === 'rotation.state').map((l) => `${String(l['from'])}->${String(l['to'])}`))
      .toEqual(['idle->scheduled', 'scheduled->renewing', 'renewing->scheduled']);
  });

  it('the jitter moves the renewal across the window with the random source', () => {
    const seen: number[] = [];
    for (const r of [0, 0.5, 0.999999]) {
      fs.rmSync(paths.root, { recursive: true, force: true });
      enroll();
      random = r;
      const h = harness();
      h.rotator.start();
      seen.push(h.rotator.status().nextAttemptAt ?? 0);
      h.rotator.stop();
    }
    const L = NA0() - NB0();
    expect(seen[0]).toBe(NB0() + 0.6 * L);
    expect(seen[1]).toBe(renewAt(NB0(), NA0(), 0.5));
    expect(seen[2]! - NB0()).toBeGreaterThan(0.7299 * L);
  });

  it('keeps rotating: three renewals in a row over three lifetimes, each on schedule', async () => {
    enroll();
    const h = harness();
    h.rotator.start();
    const serials = new Set([h.rotator.identity?.serial]);
    for (let i = 0; i < 3; i++) {
      const due = h.rotator.status().nextAttemptAt ?? 0;
      clock.advance(due - clock.now());
      await h.rotator.whenIdle();
      serials.add(diskPair().serial);
    }
    expect(serials.size).toBe(4);
    expect(h.results).toEqual(['success', 'success', 'success']);
    expect(h.calls).toHaveLength(3);
  });

  it('an identity already due at start-up is renewed within the first backoff step, not all agents at the same instant', () => {
    enroll({ notBefore: T0 - 20 * HOUR, notAfter: T0 + 4 * HOUR });
    random = 0.25;
    const h = harness();
    h.rotator.start();
    expect(h.rotator.status().nextAttemptAt).toBe(T0 + backoffDelay(0, DEFAULT_BACKOFF, 0.25));
  });

  it('after a success the next renewal is never sooner than the minimum interval (a certificate already due does not loop)', async () => {
    enroll();
    // The hub hands out a certificate that is valid but already past two thirds of its life.
    const h = harness({
      hub: (csr) => Promise.resolve(answer(ca, ca.leaf({ spki: csrSpki(csr), nodeId: NODE, org: ORG, notBefore: clock.now() - 10 * HOUR, notAfter: clock.now() + HOUR }))),
    });
    h.rotator.start();
    await h.rotator.renewNow();
    expect(h.results).toEqual(['success']);
    expect(h.rotator.status().nextAttemptAt).toBe(clock.now() + DEFAULT_MIN_RENEW_INTERVAL_MS);
  });

  it('renewNow() is single-flight: a second call while one runs joins it', async () => {
    enroll();
    const d = deferred<RenewResult>();
    const h = harness({ hub: () => d.promise });
    h.rotator.start();
    const a = h.rotator.renewNow();
    const b = h.rotator.renewNow();
    expect(h.calls).toHaveLength(1);
    expect(clock.pending()).toEqual([NA0()]); // the scheduled renewal was cancelled
    d.resolve(answer(ca, ca.leaf({ spki: csrSpki(h.calls[0]!), nodeId: NODE, org: ORG, notBefore: T0 - BACKDATE, notAfter: T0 + LIFETIME })));
    await Promise.all([a, b]);
    expect(h.results).toEqual(['success']);
    expect(h.calls).toHaveLength(1);
  });

  it('an onRotated callback that throws is logged and does not stop the rotator', async () => {
    enroll();
    const h = harness({ onRotated: () => { throw new Error('daemon bug'); } });
    h.rotator.start();
    await h.rotator.renewNow();
    expect(h.rotator.state).toBe('scheduled');
    expect(h.logs().some((l) => l['event'] === 'rotation.callback_failed' && l['callback'] === 'onRotated')).toBe(true);
  });
});

describe('CertificateRotator: failures and backoff', () => {
  it('retries with capped full-jitter backoff, counts failures, and resets the attempt counter after a success', async () => {
    enroll();
    random = 0.999999;
    const h = harness({ hub: failing(ErrorCodes.HUB_UNREACHABLE) });
    h.rotator.start();
    clock.advance((h.rotator.status().nextAttemptAt ?? 0) - clock.now());
    await h.rotator.whenIdle();

    const delays: number[] = [];
    for (let n = 0; n < 12; n++) {
      const st = h.rotator.status();
      expect(st.state).toBe('backoff');
      expect(st.consecutiveFailures).toBe(n + 1);
      expect(st.lastErrorCode).toBe(ErrorCodes.HUB_UNREACHABLE);
      const delay = (st.nextAttemptAt ?? 0) - clock.now();
      expect(delay).toBe(backoffDelay(n, DEFAULT_BACKOFF, random));
      delays.push(delay);
      clock.advance(delay - 1);
      expect(h.calls).toHaveLength(n + 1); // not a millisecond early
      clock.advance(1);
      expect(h.calls).toHaveLength(n + 2);
      await h.rotator.whenIdle();
    }
    expect(delays.slice(0, 4)).toEqual([1000, 2000, 4000, 8000]);
    expect(Math.max(...delays)).toBe(300_000); // capped at 5 min
    expect(delays.slice(-3)).toEqual([300_000, 300_000, 300_000]);
    expect(h.results.every((r) => r === 'failure')).toBe(true);

    h.hub = goodHub();
    clock.advance((h.rotator.status().nextAttemptAt ?? 0) - clock.now());
    await h.rotator.whenIdle();
    expect(h.results.at(-1)).toBe('success');
    expect(h.rotator.status()).toMatchObject({ state: 'scheduled', consecutiveFailures: 0, lastErrorCode: null });

    // The next failure starts again from the first step.
    h.hub = failing(ErrorCodes.TIMEOUT);
    await h.rotator.renewNow();
    expect(h.rotator.status().consecutiveFailures).toBe(1);
    expect((h.rotator.status().nextAttemptAt ?? 0) - clock.now()).toBe(backoffDelay(0, DEFAULT_BACKOFF, random));
  });

  it('honours custom backoff options, never waiting longer than the cap', async () => {
    enroll();
    const seq = [0.99, 0.1, 0.99, 0.5, 0.99, 0.99, 0.3];
    let i = 0;
    clock = new FakeClock(T0, () => seq[i++ % seq.length] ?? 0.5);
    const h = harness({ hub: failing(ErrorCodes.HUB_UNREACHABLE), backoff: { baseMs: 10, capMs: 40 } });
    h.rotator.start();
    await h.rotator.renewNow();
    for (let n = 0; n < 20; n++) {
      const delay = (h.rotator.status().nextAttemptAt ?? 0) - clock.now();
      expect(delay).toBeGreaterThanOrEqual(0);
      expect(delay).toBeLessThanOrEqual(Math.min(40, 10 * 2 ** n));
      clock.advance(delay);
      await h.rotator.whenIdle();
    }
    expect(h.calls).toHaveLength(21);
  });

  it('past notAfter the state is expired (at that very millisecond, even mid-backoff) and it keeps trying; a success recovers', async () => {
    enroll();
    const h = harness({ hub: failing(ErrorCodes.HUB_UNREACHABLE) });
    h.rotator.start();
    // Run the failing loop until just before expiry.
    while (clock.now() < NA0() - 1) {
      clock.advance(Math.min(60_000, NA0() - 1 - clock.now()));
      await h.rotator.whenIdle();
    }
    expect(h.rotator.state).toBe('backoff');
    const callsBefore = h.calls.length;
    expect(callsBefore).toBeGreaterThan(10);
    clock.advance(1);
    expect(h.rotator.state).toBe('expired');
    const expiredLog = h.logs().find((l) => l['event'] === 'cert.expired');
    expect(expiredLog?.['level']).toBe(50);

    // Still retrying, with backoff (at most one attempt per 5 min once the steps are capped).
    const statesAfter = h.states.length;
    for (let i = 0; i < 30; i++) {
      clock.advance(60_000);
      await h.rotator.whenIdle();
    }
    expect(h.calls.length - callsBefore).toBeGreaterThanOrEqual(5);
    expect(h.calls.length - callsBefore).toBeLessThanOrEqual(30);
    expect(h.states.slice(statesAfter)).toEqual([]); // never 'renewing' or 'backoff' while expired
    expect(h.rotator.state).toBe('expired');
    expect(h.results.every((r) => r === 'failure')).toBe(true);

    h.hub = goodHub();
    clock.advance(5 * 60_000);
    await h.rotator.whenIdle();
    expect(h.rotator.state).toBe('scheduled');
    expect(h.rotated).toHaveLength(1);
    diskPair();
  });

  it('an expired certificate the hub refuses as expired stops renewing (no retry can help) and says to enroll again', async () => {
    enroll({ notBefore: T0 - 2 * LIFETIME, notAfter: T0 - LIFETIME });
    const h = harness({ hub: failing(ErrorCodes.CLIENT_CERT_EXPIRED) });
    h.rotator.start();
    clock.advance(DEFAULT_BACKOFF.baseMs);
    await h.rotator.whenIdle();
    expect(h.calls).toHaveLength(1);
    expect(h.rotator.state).toBe('expired');
    expect(h.rotator.status().nextAttemptAt).toBeNull();
    expect(h.logs().find((l) => l['event'] === 'cert.expired_refused')?.['level']).toBe(50);
    clock.advance(24 * 3_600_000);
    await h.rotator.whenIdle();
    expect(h.calls).toHaveLength(1);
  });

  it('an identity already expired at start-up is reported expired and renewed at once', async () => {
    enroll({ notBefore: T0 - 2 * LIFETIME, notAfter: T0 - LIFETIME });
    const h = harness();
    h.rotator.start();
    expect(h.states).toEqual(['expired']);
    expect((h.rotator.status().nextAttemptAt ?? 0) - T0).toBeLessThanOrEqual(DEFAULT_BACKOFF.baseMs);
    clock.advance(DEFAULT_BACKOFF.baseMs);
    await h.rotator.whenIdle();
    expect(h.states).toEqual(['expired', 'scheduled']);
    diskPair();
  });

  it.each([ErrorCodes.NODE_REVOKED, ErrorCodes.CLIENT_CERT_REVOKED])('%s: state revoked, no more attempts, files kept, logged loudly', async (code) => {
    enroll();
    const h = harness({ hub: failing(code) });
    h.rotator.start();
    const before = snapshot();
    clock.advance((h.rotator.status().nextAttemptAt ?? 0) - clock.now());
    await h.rotator.whenIdle();
    expect(h.rotator.state).toBe('revoked');
    expect(h.results).toEqual(['refused']);
    expect(clock.pending()).toEqual([]);
    expect(h.rotator.status()).toMatchObject({ nextAttemptAt: null, lastErrorCode: code });
    const loud = h.logs().find((l) => l['event'] === 'node.revoked');
    expect(loud?.['level']).toBe(50);
    expect(String(loud?.['msg'])).toMatch(/REVOKED/);
    expect(loud?.['code']).toBe(code);

    clock.advance(7 * LIFETIME);
    await h.rotator.renewNow();
    expect(h.calls).toHaveLength(1);
    expect(h.rotator.state).toBe('revoked');
    expect(snapshot()).toEqual(before);
  });

  it.each([
    ['CLIENT_CERT_UNKNOWN', ErrorCodes.CLIENT_CERT_UNKNOWN, 'refused'],
    ['CSR_MALFORMED', ErrorCodes.CSR_MALFORMED, 'refused'],
    ['SHUTTING_DOWN', ErrorCodes.SHUTTING_DOWN, 'failure'],
    ['RATE_LIMITED', ErrorCodes.RATE_LIMITED, 'failure'],
  ] as const)('a hub refusal %s is counted as %s and retried', async (_n, code, result) => {
    enroll();
    const h = harness({ hub: failing(code) });
    h.rotator.start();
    await h.rotator.renewNow();
    expect(h.results).toEqual([result]);
    expect(h.rotator.state).toBe('backoff');
  });
});

describe('CertificateRotator: refuses what it must not install (state backoff, files unchanged)', () => {
  type Bad = (csrSpkiDer: Buffer, now: number) => RenewResult;
  const valid = (now: number): { notBefore: number; notAfter: number } => ({ notBefore: now - BACKDATE, notAfter: now + LIFETIME });
  const cases: Array<[string, Bad, ErrorCode]> = [
    ['a certificate for another key', (_s, now) => answer(ca, ca.leaf({ spki: spkiDer(newKey().publicKey), nodeId: NODE, org: ORG, ...valid(now) })), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['the wrong node id (CN)', (s, now) => answer(ca, ca.leaf({ spki: s, nodeId: 'n-00000000000000b2', org: ORG, ...valid(now) })), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['the wrong organisation (O)', (s, now) => answer(ca, ca.leaf({ spki: s, nodeId: NODE, org: 'org-b', ...valid(now) })), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['a foreign CA with its own bundle (pinned root missing)', (s, now) => answer(foreign, foreign.leaf({ spki: s, nodeId: NODE, org: ORG, ...valid(now) })), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['a foreign CA with our bundle', (s, now) => answer(foreign, foreign.leaf({ spki: s, nodeId: NODE, org: ORG, ...valid(now) }), [ca.rootDer]), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['a foreign leaf under our chain', (s, now) => ({ ...answer(ca, foreign.leaf({ spki: s, nodeId: NODE, org: ORG, ...valid(now) })) }), ErrorCodes.CLIENT_CERT_UNTRUSTED],
    ['an expired certificate', (s, now) => answer(ca, ca.leaf({ spki: s, nodeId: NODE, org: ORG, notBefore: now - 2 * HOUR, notAfter: now - HOUR })), ErrorCodes.CLIENT_CERT_EXPIRED],
    ['a not-yet-valid certificate', (s, now) => answer(ca, ca.leaf({ spki: s, nodeId: NODE, org: ORG, notBefore: now + HOUR, notAfter: now + LIFETIME })), ErrorCodes.CLIENT_CERT_EXPIRED],
    ['a certificate without clientAuth', (s, now) => answer(ca, ca.leafWithEku({ spki: s, nodeId: NODE, org: ORG, ...valid(now) }, '1.3.6.1.5.5.7.3.1')), ErrorCodes.CLIENT_CERT_WRONG_USAGE],
    ['bytes that are not a certificate', () => ({ certificateDer: Buffer.from('3003020101', 'hex'), chainDer: [], caBundleDer: [ca.rootDer], notAfterUnixMs: 1 }), ErrorCodes.CLIENT_CERT_UNTRUSTED],
  ];

  it.each(cases)('%s', async (_name, bad, code) => {
    enroll();
    const h = harness({ hub: (csr) => Promise.resolve(bad(csrSpki(csr), clock.now())) });
    h.rotator.start();
    const before = snapshot();
    const due = h.rotator.status().nextAttemptAt ?? 0;
    clock.advance(due - clock.now());
    await h.rotator.whenIdle();
    expect(h.rotator.state).toBe('backoff');
    expect(h.results).toEqual(['refused']);
    expect(h.rotator.status().lastErrorCode).toBe(code);
    expect(h.rotated).toEqual([]);
    expect(snapshot()).toEqual(before);
    expect(leftovers()).toEqual([]);
    expect(h.rotator.identity?.serial).toBe(diskPair().serial);
    const failed = h.logs().find((l) => l['event'] === 'cert.renew_failed');
    expect(failed?.['code']).toBe(code);
  });
});

describe('CertificateRotator: the swap, start-up and stop', () => {
  /** realFs, except that the `nth` rename throws once (an I/O error; the process lives on). */
  function failingRename(nth: number): StoreFs {
    let n = 0;
    return {
      ...realFs,
      rename: (from, to) => {
        if (++n === nth) throw new Error('EIO: simulated');
        realFs.rename(from, to);
      },
    };
  }

  it('a swap that fails before identity/ is retired leaves the old pair and no staging dir; it is retried', async () => {
    enroll();
    const h = harness({ fs: failingRename(1) });
    h.rotator.start();
    const before = snapshot();
    await h.rotator.renewNow();
    expect(h.rotator.state).toBe('backoff');
    expect(h.results).toEqual(['failure']);
    expect(snapshot()).toEqual(before);
    expect(leftovers()).toEqual([]);
    await h.rotator.renewNow();
    expect(h.results).toEqual(['failure', 'success']);
    diskPair();
  });

  it('a swap that fails after identity/ was retired is recovered at once: the complete new identity is adopted', async () => {
    enroll();
    const h = harness({ fs: failingRename(2) });
    const old = h.rotator.start();
    await h.rotator.renewNow();
    const now = diskPair();
    expect(now.serial).not.toBe(old.serial);
    expect(h.rotator.identity?.serial).toBe(now.serial);
    expect(h.rotator.state).toBe('scheduled');
    expect(h.results).toEqual(['success']);
    expect(h.rotated.map((i) => i.serial)).toEqual([now.serial]);
    expect(leftovers()).toEqual([]);
  });

  it('start() recovers an interrupted swap first, then loads', () => {
    enroll();
    const staging = path.join(paths.root, '.identity-0123456789ab');
    fs.mkdirSync(staging);
    fs.writeFileSync(path.join(staging, IDENTITY_FILES.tlsKey), 'half');
    const h = harness();
    h.rotator.start();
    expect(leftovers()).toEqual([]);
    expect(h.logs().some((l) => l['event'] === 'state.recovered')).toBe(true);
  });

  it('start() refuses an identity whose key and certificate are not a pair, and a state dir with no identity', () => {
    enroll();
    fs.writeFileSync(path.join(paths.identity, IDENTITY_FILES.tlsKey), newKey().privateKey.export({ type: 'pkcs8', format: 'pem' }));
    const h = harness();
    expect(() => h.rotator.start()).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
    fs.rmSync(paths.root, { recursive: true });
    const h2 = harness();
    expect(() => h2.rotator.start()).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
    expect(() => h2.rotator.renewNow()).toThrow(TypeError);
  });

  it('start() refuses a certificate for another node, and a ca.pem whose roots the certificate does not chain to', () => {
    enrollIdentity(paths, ca, { ...nodeRecord(ca, NODE, ORG, T0) }, { notBefore: NB0(), notAfter: NA0() });
    const node = JSON.parse(fs.readFileSync(paths.nodeJson, 'utf8')) as Record<string, string>;
    fs.writeFileSync(paths.nodeJson, JSON.stringify({ ...node, nodeId: 'n-00000000000000c3' }));
    expect(() => harness().rotator.start()).toThrow(/not issued to node n-00000000000000c3/);
    fs.writeFileSync(paths.nodeJson, JSON.stringify(node));
    fs.writeFileSync(path.join(paths.identity, IDENTITY_FILES.ca), derToPem(foreign.rootDer, 'CERTIFICATE'));
    expect(() => harness().rotator.start()).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }) as Error);
  });

  it('stop() cancels every timer and a call in flight; an answer arriving afterwards is not installed', async () => {
    enroll();
    const d = deferred<RenewResult>();
    let aborted = false;
    const h = harness({
      hub: (_csr, _id, signal) => {
        signal.addEventListener('abort', () => { aborted = true; });
        return d.promise;
      },
    });
    h.rotator.start();
    const before = snapshot();
    const running = h.rotator.renewNow();
    h.rotator.stop();
    expect(aborted).toBe(true);
    expect(h.rotator.state).toBe('stopped');
    expect(clock.pending()).toEqual([]);
    d.resolve(answer(ca, ca.leaf({ spki: csrSpki(h.calls[0]!), nodeId: NODE, org: ORG, notBefore: T0 - BACKDATE, notAfter: T0 + LIFETIME })));
    await running;
    await h.rotator.whenIdle();
    expect(snapshot()).toEqual(before);
    expect(h.results).toEqual([]);
    expect(h.rotated).toEqual([]);
    clock.advance(10 * LIFETIME);
    await h.rotator.renewNow();
    expect(h.calls).toHaveLength(1);
    expect(h.states).toEqual(['scheduled', 'renewing', 'stopped']);
  });
});

describe('root rotation: the roots a renewal installs', () => {
  let newCa: TestCa;
  /** The old root (`ca`) signs the new one: what the hub publishes while it rotates its root. */
  let cross: Buffer;
  const CROSS_VALIDITY = (): { notBefore: number; notAfter: number } => ({ notBefore: T0 - HOUR, notAfter: T0 + 30 * LIFETIME });
  beforeAll(() => {
    // Same federation, so the same root name as `ca`: only the keys tell the roots apart.
    newCa = createTestCa(T0);
    cross = ca.crossSign(newCa, CROSS_VALIDITY());
  });

  /** One rotateOnce from the identity on disk, against a hub issuing under `issuing` and sending `bundle`. */
  function renew(issuing: TestCa, bundle: readonly Buffer[]): Promise<{ rootsChanged: boolean }> {
    const now = clock.now();
    return rotateOnce(loadIdentity(paths), {
      paths,
      now: () => clock.now(),
      signal: new AbortController().signal,
      renew: (csr) => Promise.resolve(answer(issuing, issuing.leaf({ spki: csrSpki(csr), nodeId: NODE, org: ORG, notBefore: now - BACKDATE, notAfter: now + LIFETIME }), bundle)),
    });
  }

  function installedRoots(): string[] {
    const ders = pemBlocks(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.ca), 'utf8'), 'CERTIFICATE') ?? [];
    return ders.map((d) => crypto.hash('sha256', d, 'hex'));
  }

  async function refusal(p: Promise<unknown>): Promise<string> {
    try {
      await p;
    } catch (e) {
      if (e instanceof AgentError) return e.code;
      throw e;
    }
    return 'ok';
  }

  it('the old root vouches for the new one: both are installed; when the hub retires the old root it is dropped; node.json keeps the enrollment pin', async () => {
    enroll();
    const nodeJson = fs.readFileSync(paths.nodeJson, 'utf8');
    expect(caPinCheck(loadIdentity(paths))).toMatchObject({ ok: true, detail: expect.stringContaining('is in ca.pem') as string });

    expect(await renew(ca, [ca.rootDer, newCa.rootDer, cross])).toEqual(expect.objectContaining({ rootsChanged: true }));
    expect(installedRoots()).toEqual([ca.fingerprint, newCa.fingerprint]);
    // The hub switches to an issuing CA under the new root; the bundle is unchanged.
    expect(await renew(newCa, [newCa.rootDer, ca.rootDer, cross])).toEqual(expect.objectContaining({ rootsChanged: false }));
    expect(installedRoots()).toEqual([ca.fingerprint, newCa.fingerprint]);

    // The old root retired: a bundle holding the new root alone is accepted, since it is trusted now.
    expect(await renew(newCa, [newCa.rootDer])).toEqual(expect.objectContaining({ rootsChanged: true }));
    expect(installedRoots()).toEqual([newCa.fingerprint]);
    expect(fs.readFileSync(paths.nodeJson, 'utf8')).toBe(nodeJson);
    const id = loadIdentity(paths);
    expect(id.node.caSha256).toBe(ca.fingerprint);
    diskPair();
    const pinCheck = caPinCheck(id);
    expect(pinCheck.ok).toBe(true);
    expect(pinCheck.detail).toMatch(/rotated since enrollment/);
    expect(pinCheck.detail).toContain(newCa.fingerprint.slice(0, 16));

    expect(await renew(newCa, [newCa.rootDer])).toEqual(expect.objectContaining({ rootsChanged: false }));
    // The retired root is no longer trusted.
    const before = snapshot();
    expect(await refusal(renew(ca, [ca.rootDer]))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(snapshot()).toEqual(before);
  });

  it('a foreign root next to ours is not installed, and ca.pem stays byte for byte', async () => {
    enroll();
    const before = fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.ca), 'utf8');
    expect(await renew(ca, [ca.rootDer, foreign.rootDer])).toEqual(expect.objectContaining({ rootsChanged: false }));
    expect(fs.readFileSync(path.join(paths.identity, IDENTITY_FILES.ca), 'utf8')).toBe(before);
  });

  const refused: Array<[string, () => [TestCa, Buffer[]]]> = [
    ['a foreign root without a cross certificate, the leaf under it', () => [foreign, [ca.rootDer, foreign.rootDer]]],
    ['a foreign root alone', () => [foreign, [foreign.rootDer]]],
    ['the new root without a cross certificate', () => [newCa, [newCa.rootDer]]],
    ['a cross certificate signed by an untrusted root', () => [newCa, [ca.rootDer, newCa.rootDer, foreign.rootDer, foreign.crossSign(newCa, CROSS_VALIDITY())]]],
    ['an expired cross certificate', () => [newCa, [ca.rootDer, newCa.rootDer, ca.crossSign(newCa, { notBefore: T0 - 2 * HOUR, notAfter: T0 - HOUR })]]],
    ['a cross certificate that is not a CA certificate', () => [newCa, [ca.rootDer, newCa.rootDer, ca.crossSign(newCa, { ...CROSS_VALIDITY(), ca: false })]]],
  ];

  it.each(refused)('refused, nothing written: %s', async (_name, make) => {
    enroll();
    const [issuing, bundle] = make();
    const before = snapshot();
    const nodeJson = fs.readFileSync(paths.nodeJson, 'utf8');
    expect(await refusal(renew(issuing, bundle))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(snapshot()).toEqual(before);
    expect(fs.readFileSync(paths.nodeJson, 'utf8')).toBe(nodeJson);
    expect(leftovers()).toEqual([]);
  });
});
