// The last good manifest on disk and the gate in front of it: round-trip across restarts, file
// modes, no temp files left, a crash between the two writes, the unverified first manifest that
// enrollment stores, files left by a previous node identity, and damage reported as STATE_INVALID.
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { JSONWebKeySet } from 'jose';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateSigningKey, jwks, loadSigningKey, publishedKeys } from '../../hub/manifest/keyset.ts';
import { ManifestSigner } from '../../hub/manifest/signer.ts';
import type { ManifestBody } from '../../proto/manifest.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { isAgentError } from '../../agent/errors.ts';
import { writeFileAtomicSync } from '../../agent/fsutil.ts';
import { statePaths, storeManifest } from '../../agent/enroll/store.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { ManifestVerifier, type VerifiedManifest } from '../../agent/manifest/verify.ts';
import { LastGoodStore, MANIFEST_FILES } from '../../agent/manifest/last-good.ts';
import { ManifestGate } from '../../agent/manifest/gate.ts';

const ISSUER = 'https://hub.example.org:8444';
const NODE = 'n-0000000000000001';
const START = 1_900_000_000_000;
const posix = process.platform !== 'win32';

const body: ManifestBody = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: {} },
  datasets: [],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

let keyDir: string;
let signer: ManifestSigner;
let jwksDoc: JSONWebKeySet;

beforeAll(async () => {
  keyDir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-lastgood-keys-'));
  const { kid, publicJwk } = await generateSigningKey(keyDir);
  const { privateKey } = await loadSigningKey(keyDir, kid);
  signer = new ManifestSigner({ issuer: ISSUER, federationId: 'fed', kid, privateKey, lifetimeMs: 3_600_000, clock: () => START });
  jwksDoc = jwks(publishedKeys([{ kid, publicJwk: JSON.stringify(publicJwk), createdAt: 0, retiredAt: null }], () => null, START));
});
afterAll(() => fs.rmSync(keyDir, { recursive: true, force: true }));

let tmp: string;
let stateDir: string;
let clock: FakeClock;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-lastgood-'));
  stateDir = path.join(tmp, 'state');
  clock = new FakeClock(START);
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function jwsFor(version: number, nodeId = NODE): string {
  return signer.sign({ nodeId, org: 'org-a', version, body }).jws;
}

function verifier(nodeId = NODE): ManifestVerifier {
  return new ManifestVerifier({ expected: { issuer: ISSUER, nodeId, org: 'org-a', federationId: 'fed' }, jwks: () => Promise.resolve(jwksDoc), clock });
}

function verified(version: number, nodeId = NODE): Promise<VerifiedManifest> {
  return verifier(nodeId).verify(jwsFor(version, nodeId), version - 1);
}

function store(opts: { nodeId?: string; writeFile?: (f: string, d: string, m: number) => void } = {}): LastGoodStore {
  return new LastGoodStore({ stateDir, nodeId: opts.nodeId ?? NODE, clock, ...(opts.writeFile === undefined ? {} : { writeFile: opts.writeFile }) });
}

const manifestDir = (): string => path.join(stateDir, 'manifest');
const mode = (p: string): number => fs.statSync(p).mode & 0o777;

describe('LastGoodStore', () => {
  it('starts empty: no manifest, floor 0', () => {
    expect(store().load()).toEqual({ manifest: null, floorVersion: 0 });
  });

  it('round-trips across a restart: the JWS, its claims, applied.json, and the floor', async () => {
    const m = await verified(3);
    const s = store();
    s.load();
    s.save(m);
    expect(s.version).toBe(3);

    const again = store().load();
    expect(again.floorVersion).toBe(3);
    expect(again.manifest?.jws).toBe(m.jws);
    expect(again.manifest?.version).toBe(3);
    expect(again.manifest?.kid).toBe(signer.kid);
    expect(again.manifest?.claims).toEqual(m.claims);
    expect(again.manifest?.applied).toEqual({
      version: 3, appliedAt: new Date(START).toISOString(), kid: signer.kid, nodeId: NODE,
      jwsSha256: crypto.createHash('sha256').update(m.jws).digest('hex'),
    });
    // The files as documented: current.jws is the JWS itself, applied.json is JSON.
    expect(fs.readFileSync(path.join(manifestDir(), MANIFEST_FILES.current), 'utf8')).toBe(`${m.jws}\n`);
    expect(JSON.parse(fs.readFileSync(path.join(manifestDir(), MANIFEST_FILES.applied), 'utf8'))).toMatchObject({ version: 3, kid: signer.kid });
  });

  it.runIf(posix)('writes 0600 files in a 0700 dir and leaves no temp files behind', async () => {
    const s = store();
    s.save(await verified(1));
    clock.advance(1000);
    s.save(await verified(2));
    expect(mode(manifestDir())).toBe(0o700);
    expect(mode(path.join(manifestDir(), MANIFEST_FILES.current))).toBe(0o600);
    expect(mode(path.join(manifestDir(), MANIFEST_FILES.applied))).toBe(0o600);
    expect(fs.readdirSync(manifestDir()).sort()).toEqual([MANIFEST_FILES.applied, MANIFEST_FILES.current]);
  });

  it('writes each file atomically, current.jws first', async () => {
    const writes: string[] = [];
    const s = store({ writeFile: (f, d, m) => { writes.push(path.basename(f)); writeFileAtomicSync(f, d, m); } });
    s.save(await verified(1));
    expect(writes).toEqual([MANIFEST_FILES.current, MANIFEST_FILES.applied]);
  });

  it('a crash between the two writes: the new JWS is kept but not vouched for, the floor stays at the old version', async () => {
    const s = store();
    s.save(await verified(1));
    let n = 0;
    const crashing = store({ writeFile: (f, d, m) => { if (++n === 2) throw new Error('killed'); writeFileAtomicSync(f, d, m); } });
    crashing.load();
    const v2 = await verified(2);
    expect(() => crashing.save(v2)).toThrow('killed');
    expect(crashing.version).toBe(1);

    const after = store().load();
    expect(after.manifest?.version).toBe(2);
    expect(after.manifest?.applied).toBeNull();
    expect(after.floorVersion).toBe(1);
  });

  it('refuses to save a manifest for another node or at or below the floor (caller mistakes)', async () => {
    const s = store();
    const v2 = await verified(2);
    s.save(v2);
    expect(() => s.save(v2)).toThrow(TypeError);
    expect(() => s.save(structuredClone({ ...v2, version: 1 }))).toThrow(TypeError);
    const other = await verified(5, 'n-other');
    expect(() => s.save(other)).toThrow(TypeError);
  });

  it('ignores files about another node (after a re-enrollment)', async () => {
    store().save(await verified(7));
    expect(store({ nodeId: 'n-0000000000000002' }).load()).toEqual({ manifest: null, floorVersion: 0 });
  });

  it('a first manifest stored by enrollment is present but not vouched for (floor 0)', () => {
    const jws = jwsFor(1);
    storeManifest(statePaths(stateDir), jws);
    const st = store().load();
    expect(st.manifest?.version).toBe(1);
    expect(st.manifest?.applied).toBeNull();
    expect(st.floorVersion).toBe(0);
  });

  it('an applied.json describing an older JWS of the same node still sets the floor', async () => {
    store().save(await verified(4));
    // Enrollment-style overwrite of current.jws only (applied.json now stale).
    storeManifest(statePaths(stateDir), jwsFor(6));
    const st = store().load();
    expect(st.manifest?.version).toBe(6);
    expect(st.manifest?.applied).toBeNull();
    expect(st.floorVersion).toBe(4);
  });

  it('damaged files are STATE_INVALID', async () => {
    const s = store();
    s.save(await verified(1));
    const cur = path.join(manifestDir(), MANIFEST_FILES.current);
    const app = path.join(manifestDir(), MANIFEST_FILES.applied);
    const good = fs.readFileSync(app, 'utf8');

    fs.writeFileSync(app, '{not json');
    expect(() => store().load()).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }));
    fs.writeFileSync(app, JSON.stringify({ ...JSON.parse(good), extra: 1 }));
    expect(() => store().load()).toThrow(expect.objectContaining({ code: ErrorCodes.STATE_INVALID }));
    fs.writeFileSync(app, good);

    for (const text of ['garbage', 'a.b.c', `${Buffer.from('{}').toString('base64url')}.${Buffer.from('{}').toString('base64url')}.x`]) {
      fs.writeFileSync(cur, text);
      let err: unknown;
      try {
        store().load();
      } catch (e) {
        err = e;
      }
      expect(isAgentError(err, ErrorCodes.STATE_INVALID)).toBe(true);
    }
  });
});

describe('ManifestGate', () => {
  it('accepts newer manifests, persists each, and leaves the last good one alone on a rejection', async () => {
    const s = store();
    s.load();
    const gate = new ManifestGate({ verifier: verifier(), store: s });
    await gate.accept(jwsFor(1));
    await gate.accept(jwsFor(2));
    expect(gate.version).toBe(2);
    await expect(gate.accept(jwsFor(1))).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_ROLLBACK });
    await expect(gate.accept(jwsFor(2))).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_ALREADY_APPLIED });
    await expect(gate.accept(jwsFor(3, 'n-other'))).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_WRONG_AUDIENCE });
    expect(gate.version).toBe(2);
    expect(store().load().manifest?.version).toBe(2);
  });

  it('serialises concurrent accepts: of two copies of the same manifest one is applied, the other already applied', async () => {
    const s = store();
    s.load();
    const gate = new ManifestGate({ verifier: verifier(), store: s });
    const jws = jwsFor(5);
    const [a, b] = await Promise.allSettled([gate.accept(jws), gate.accept(jws)]);
    expect(a.status).toBe('fulfilled');
    expect(b.status === 'rejected' && (b.reason as { code: string }).code).toBe(ErrorCodes.MANIFEST_ALREADY_APPLIED);
  });

  it('resume(): an accepted manifest runs as stored even once expired; an unvouched one is verified first', async () => {
    const s = store();
    s.save(await verified(3));
    clock.advance(10 * 3_600_000);
    const restarted = store();
    restarted.load();
    const resumed = await new ManifestGate({ verifier: verifier(), store: restarted }).resume();
    expect(resumed?.version).toBe(3);
    expect(resumed?.body).toEqual(body);

    // The first manifest enrollment stored, now expired: verification refuses it, nothing changes.
    fs.rmSync(manifestDir(), { recursive: true });
    storeManifest(statePaths(stateDir), jwsFor(1));
    const fresh = store();
    fresh.load();
    await expect(new ManifestGate({ verifier: verifier(), store: fresh }).resume()).rejects.toMatchObject({ code: ErrorCodes.MANIFEST_EXPIRED });
    expect(fresh.load().manifest?.applied).toBeNull();

    // Still valid: verified, vouched for, and the floor moves.
    clock = new FakeClock(START);
    const ok = store();
    ok.load();
    await expect(new ManifestGate({ verifier: verifier(), store: ok }).resume()).resolves.toMatchObject({ version: 1 });
    expect(store().load()).toMatchObject({ floorVersion: 1, manifest: { applied: { version: 1 } } });
  });
});
