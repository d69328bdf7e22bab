// The agent's manifest verifier against manifests signed by the hub's real ManifestSigner and
// against hand-built JWS: every rejection reason, in its place in the order of checks, and the
// JWKS refetch on an unknown kid (once, then not again within the cooldown) on a fake clock.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { JSONWebKeySet, JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateSigningKey, jwks, loadSigningKey, publishedKeys } from '../../hub/manifest/keyset.ts';
import { ManifestSigner } from '../../hub/manifest/signer.ts';
import { MANIFEST_TYP, type ManifestBody } from '../../proto/manifest.ts';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import { AgentError } from '../../agent/errors.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { isManifestRejection, ManifestVerifier, MANIFEST_REJECTION_CODES } from '../../agent/manifest/verify.ts';

const ISSUER = 'https://hub.example.org:8444';
const FED = 'fed-1';
const NODE = 'n-0000000000000001';
const ORG = 'org-a';
const START = 1_900_000_000_000;
const LIFETIME = 3_600_000;

const body: ManifestBody = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 3 } },
  datasets: [{ name: 'mnist', path: '/srv/data/mnist', sha256: 'b'.repeat(64) }],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: true } },
};

interface Key { kid: string; publicJwk: JWK; privateKey: crypto.KeyObject }

let dir: string;
let keyA: Key;
let keyB: Key;

async function makeKey(): Promise<Key> {
  const { kid, publicJwk } = await generateSigningKey(dir);
  const { privateKey } = await loadSigningKey(dir, kid);
  return { kid, publicJwk, privateKey };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sepal-agent-verify-'));
  keyA = await makeKey();
  keyB = await makeKey();
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

/** The JWKS the hub would serve with these keys active/retained. */
function jwksOf(...keys: Key[]): JSONWebKeySet {
  const records = keys.map((k, i) => ({ kid: k.kid, publicJwk: JSON.stringify(k.publicJwk), createdAt: i, retiredAt: null }));
  return jwks(publishedKeys(records, () => null, START));
}

function signer(opts: { key?: Key; issuer?: string; federationId?: string; at?: number } = {}): ManifestSigner {
  const key = opts.key ?? keyA;
  return new ManifestSigner({
    issuer: opts.issuer ?? ISSUER, federationId: opts.federationId ?? FED, kid: key.kid, privateKey: key.privateKey,
    lifetimeMs: LIFETIME, clock: () => opts.at ?? START,
  });
}

function sign(version: number, opts: Parameters<typeof signer>[0] & { nodeId?: string; org?: string } = {}): string {
  return signer(opts).sign({ nodeId: opts.nodeId ?? NODE, org: opts.org ?? ORG, version, body }).jws;
}

const b64 = (v: unknown): string => Buffer.from(typeof v === 'string' ? v : JSON.stringify(v)).toString('base64url');

function claims(version: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  const iat = Math.floor(START / 1000);
  return { iss: ISSUER, sub: NODE, aud: NODE, org: ORG, federation_id: FED, iat, nbf: iat, exp: iat + 3600, jti: 'j-1', version, manifest: body, ...over };
}

/** A JWS signed with ES256 by `key` over whatever header and payload are given. */
function forge(header: Record<string, unknown>, payload: unknown, key: Key = keyA): string {
  const input = `${b64(header)}.${b64(payload)}`;
  const sig = crypto.sign('sha256', Buffer.from(input), { key: key.privateKey, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

interface Harness { verifier: ManifestVerifier; clock: FakeClock; fetches: () => number; setJwks: (j: JSONWebKeySet | Error) => void }

function harness(opts: { jwks?: JSONWebKeySet; expected?: Partial<{ issuer: string; nodeId: string; org: string; federationId: string }> } = {}): Harness {
  const clock = new FakeClock(START);
  let current: JSONWebKeySet | Error = opts.jwks ?? jwksOf(keyA);
  let n = 0;
  const verifier = new ManifestVerifier({
    expected: { issuer: ISSUER, nodeId: NODE, org: ORG, federationId: FED, ...opts.expected },
    jwks: () => {
      n++;
      return current instanceof Error ? Promise.reject(current) : Promise.resolve(structuredClone(current));
    },
    clock,
  });
  return { verifier, clock, fetches: () => n, setJwks: (j) => { current = j; } };
}

async function rejection(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  throw new Error('expected the manifest to be rejected');
}

async function expectReason(p: Promise<unknown>, code: ErrorCode): Promise<AgentError> {
  const e = await rejection(p);
  expect(e.code, e.message).toBe(code);
  expect(isManifestRejection(e)).toBe(true);
  return e;
}

describe('ManifestVerifier: a good manifest', () => {
  it('passes and returns version, claims, body, kid and the JWS', async () => {
    const { verifier, fetches } = harness();
    const jws = sign(7);
    const m = await verifier.verify(jws, 6);
    expect(m.version).toBe(7);
    expect(m.kid).toBe(keyA.kid);
    expect(m.jws).toBe(jws);
    expect(m.body).toEqual(body);
    expect(m.claims).toMatchObject({ iss: ISSUER, sub: NODE, aud: NODE, org: ORG, federation_id: FED, version: 7 });
    expect(Object.isFrozen(m)).toBe(true);
    expect(fetches()).toBe(1);
    // The JWKS is cached: a second manifest costs no fetch.
    await verifier.verify(sign(8), 7);
    expect(fetches()).toBe(1);
  });

  it('accepts nbf and exp within the leeway (60 s by default)', async () => {
    const { verifier, clock } = harness();
    await expect(verifier.verify(sign(1, { at: START + 59_000 }), 0)).resolves.toBeDefined();
    clock.advance(LIFETIME + 59_000);
    await expect(verifier.verify(sign(2), 1)).resolves.toBeDefined();
  });

  it('verifies with the new key after a rotation (unknown kid -> refetch finds it)', async () => {
    const h = harness();
    await h.verifier.verify(sign(1), 0);
    h.setJwks(jwksOf(keyB, keyA));
    const m = await h.verifier.verify(sign(2, { key: keyB }), 1);
    expect(m.kid).toBe(keyB.kid);
    expect(h.fetches()).toBe(2);
  });
});

describe('ManifestVerifier: every reject reason', () => {
  it('a tampered payload (one byte flipped) is MANIFEST_BAD_SIGNATURE', async () => {
    const { verifier } = harness();
    const jws = sign(5);
    const [h, p, s] = jws.split('.') as [string, string, string];
    const bytes = Buffer.from(p, 'base64url');
    // Flip a bit inside the version digit: still JSON, still schema-valid, different content.
    const at = bytes.indexOf('"version":5') + '"version":'.length;
    bytes[at] = (bytes[at] ?? 0) ^ 0x01; // '5' -> '4'
    expect((JSON.parse(bytes.toString()) as { version: number }).version).toBe(4);
    await expectReason(verifier.verify(`${h}.${bytes.toString('base64url')}.${s}`, 0), ErrorCodes.MANIFEST_BAD_SIGNATURE);
    // A flipped byte in the signature, and a signature from another key under A's kid.
    const sig = Buffer.from(s, 'base64url');
    sig[10] = (sig[10] ?? 0) ^ 0xff;
    await expectReason(verifier.verify(`${h}.${p}.${sig.toString('base64url')}`, 0), ErrorCodes.MANIFEST_BAD_SIGNATURE);
    const byB = sign(5, { key: keyB }).split('.')[2] ?? '';
    await expectReason(verifier.verify(`${h}.${p}.${byB}`, 0), ErrorCodes.MANIFEST_BAD_SIGNATURE);
  });

  it('an expired manifest is MANIFEST_EXPIRED', async () => {
    const { verifier, clock } = harness();
    clock.advance(LIFETIME + 60_000);
    await expectReason(verifier.verify(sign(1), 0), ErrorCodes.MANIFEST_EXPIRED);
  });

  it('a manifest not yet valid is MANIFEST_NOT_YET_VALID', async () => {
    const { verifier } = harness();
    await expectReason(verifier.verify(sign(1, { at: START + 61_000 }), 0), ErrorCodes.MANIFEST_NOT_YET_VALID);
  });

  it('an older version is MANIFEST_ROLLBACK; the same version is MANIFEST_ALREADY_APPLIED', async () => {
    const { verifier } = harness();
    const e = await expectReason(verifier.verify(sign(4), 5), ErrorCodes.MANIFEST_ROLLBACK);
    expect(e.detail).toMatchObject({ version: 4, lastAppliedVersion: 5 });
    await expectReason(verifier.verify(sign(5), 5), ErrorCodes.MANIFEST_ALREADY_APPLIED);
    await expect(verifier.verify(sign(6), 5)).resolves.toMatchObject({ version: 6 });
  });

  it('a manifest for another node is MANIFEST_WRONG_AUDIENCE', async () => {
    const { verifier } = harness();
    await expectReason(verifier.verify(sign(1, { nodeId: 'n-0000000000000002' }), 0), ErrorCodes.MANIFEST_WRONG_AUDIENCE);
  });

  it('another org or federation is MANIFEST_WRONG_ORG', async () => {
    const { verifier } = harness();
    const e = await expectReason(verifier.verify(sign(1, { org: 'org-b' }), 0), ErrorCodes.MANIFEST_WRONG_ORG);
    expect(e.detail).toMatchObject({ claim: 'org' });
    const f = await expectReason(verifier.verify(sign(1, { federationId: 'fed-2' }), 0), ErrorCodes.MANIFEST_WRONG_ORG);
    expect(f.detail).toMatchObject({ claim: 'federation_id' });
  });

  it('another issuer is MANIFEST_WRONG_ISSUER (compared exactly)', async () => {
    const { verifier } = harness();
    await expectReason(verifier.verify(sign(1, { issuer: 'https://evil.example.org:8444' }), 0), ErrorCodes.MANIFEST_WRONG_ISSUER);
    await expectReason(verifier.verify(sign(1, { issuer: `${ISSUER}/` }), 0), ErrorCodes.MANIFEST_WRONG_ISSUER);
  });

  it('an unknown kid refetches the JWKS exactly once, and not again within the cooldown', async () => {
    const h = harness();
    await h.verifier.verify(sign(1), 0);
    expect(h.fetches()).toBe(1);
    const byB = sign(2, { key: keyB });
    await expectReason(h.verifier.verify(byB, 1), ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(h.fetches()).toBe(2);
    await expectReason(h.verifier.verify(byB, 1), ErrorCodes.MANIFEST_UNKNOWN_KID);
    h.clock.advance(59_999);
    await expectReason(h.verifier.verify(byB, 1), ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(h.fetches()).toBe(2);
    // A known kid meanwhile still verifies from the cache.
    await h.verifier.verify(sign(2), 1);
    expect(h.fetches()).toBe(2);
    h.clock.advance(1);
    await expectReason(h.verifier.verify(byB, 1), ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(h.fetches()).toBe(3);
  });

  it('concurrent manifests with an unknown kid share one refetch', async () => {
    const h = harness();
    await h.verifier.verify(sign(1), 0);
    const byB = sign(2, { key: keyB });
    const all = await Promise.allSettled([h.verifier.verify(byB, 1), h.verifier.verify(byB, 1), h.verifier.verify(byB, 1)]);
    expect(all.every((r) => r.status === 'rejected' && (r.reason as AgentError).code === ErrorCodes.MANIFEST_UNKNOWN_KID)).toBe(true);
    expect(h.fetches()).toBe(2);
  });

  it('a JWKS that cannot be fetched is "not now", not a rejection, and does not start the cooldown', async () => {
    const h = harness();
    await h.verifier.verify(sign(1), 0);
    h.setJwks(new Error('connection refused'));
    const e = await rejection(h.verifier.verify(sign(2, { key: keyB }), 1));
    expect(e.code).toBe(ErrorCodes.HUB_UNREACHABLE);
    expect(isManifestRejection(e)).toBe(false);
    h.setJwks(jwksOf(keyA, keyB));
    await expect(h.verifier.verify(sign(2, { key: keyB }), 1)).resolves.toMatchObject({ version: 2 });
    expect(h.fetches()).toBe(3);
  });

  it('a key the hub stopped publishing stops verifying once the cached JWKS is an hour old', async () => {
    const h = harness({ jwks: jwksOf(keyA, keyB) });
    await h.verifier.verify(sign(1, { key: keyB }), 0);
    h.setJwks(jwksOf(keyA));
    h.clock.advance(3_600_000);
    await expectReason(h.verifier.verify(sign(2, { key: keyB, at: START + 3_600_000 }), 1), ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(h.fetches()).toBe(2);
  });

  it('alg none is MANIFEST_BAD_ALG, with or without a signature', async () => {
    const { verifier } = harness();
    const unsigned = `${b64({ alg: 'none', typ: MANIFEST_TYP, kid: keyA.kid })}.${b64(claims(9))}.`;
    await expectReason(verifier.verify(unsigned, 0), ErrorCodes.MANIFEST_BAD_ALG);
    const real = sign(9).split('.')[2] ?? '';
    await expectReason(verifier.verify(unsigned + real, 0), ErrorCodes.MANIFEST_BAD_ALG);
    for (const alg of ['None', 'NONE', 'ES384', 'RS256', 'EdDSA', '', null, 42]) {
      await expectReason(verifier.verify(forge({ alg, typ: MANIFEST_TYP, kid: keyA.kid }, claims(9)), 0), ErrorCodes.MANIFEST_BAD_ALG);
    }
    await expectReason(verifier.verify(forge({ typ: MANIFEST_TYP, kid: keyA.kid }, claims(9)), 0), ErrorCodes.MANIFEST_BAD_ALG);
  });

  it('HS256 keyed with the public key bytes is MANIFEST_BAD_ALG', async () => {
    const { verifier } = harness();
    const header = { alg: 'HS256', typ: MANIFEST_TYP, kid: keyA.kid };
    const input = `${b64(header)}.${b64(claims(9))}`;
    const pub = crypto.createPublicKey(keyA.privateKey);
    // The classic confusion: the verifier's public key, in every encoding it might be held in.
    const secrets = [
      pub.export({ format: 'pem', type: 'spki' }),
      pub.export({ format: 'der', type: 'spki' }),
      JSON.stringify(keyA.publicJwk),
      Buffer.from(keyA.publicJwk.x ?? '', 'base64url'),
    ];
    for (const secret of secrets) {
      const mac = crypto.createHmac('sha256', secret).update(input).digest('base64url');
      await expectReason(verifier.verify(`${input}.${mac}`, 0), ErrorCodes.MANIFEST_BAD_ALG);
    }
  });

  it('a wrong typ is MANIFEST_BAD_TYP (even correctly signed)', async () => {
    const { verifier } = harness();
    for (const typ of ['JWT', 'jwt', 'application/sepal-manifest+jwt', `${MANIFEST_TYP} `, undefined]) {
      await expectReason(verifier.verify(forge({ alg: 'ES256', typ, kid: keyA.kid }, claims(9)), 0), ErrorCodes.MANIFEST_BAD_TYP);
    }
  });

  it('an unknown body field (or any schema violation) is MANIFEST_SCHEMA, with the field path', async () => {
    const { verifier } = harness();
    const header = { alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid };
    // Control: the same forging produces a manifest that passes.
    await expect(verifier.verify(forge(header, claims(9)), 0)).resolves.toMatchObject({ version: 9 });
    const e = await expectReason(verifier.verify(forge(header, claims(9, { manifest: { ...body, extra: true } })), 0), ErrorCodes.MANIFEST_SCHEMA);
    expect(e.detail?.['issues']).toEqual([{ path: 'manifest.extra', message: 'unknown field' }]);
    await expectReason(verifier.verify(forge(header, claims(9, { admin: true })), 0), ErrorCodes.MANIFEST_SCHEMA);
    await expectReason(verifier.verify(forge(header, claims(9, { version: '9' })), 0), ErrorCodes.MANIFEST_SCHEMA);
    await expectReason(verifier.verify(forge(header, claims(9, { aud: [NODE] })), 0), ErrorCodes.MANIFEST_SCHEMA);
    const { version: _v, ...noVersion } = claims(9);
    await expectReason(verifier.verify(forge(header, noVersion), 0), ErrorCodes.MANIFEST_SCHEMA);
    await expectReason(verifier.verify(forge(header, claims(9, { manifest: { ...body, datasets: [{ name: 'x', path: '../etc' }] } })), 0), ErrorCodes.MANIFEST_SCHEMA);
  });

  it('what is not a compact JWS, or carries no kid or key-bearing headers, is MANIFEST_MALFORMED', async () => {
    const { verifier, fetches } = harness();
    const good = sign(1);
    const [h, p, s] = good.split('.') as [string, string, string];
    const malformed = [
      '', 'abc', `${h}.${p}`, `${good}.x`, `${h}..${s}`, `${h}.${p}.${s}=`, ` ${good}`,
      `${b64('not json')}.${p}.${s}`, `${b64([1, 2])}.${p}.${s}`,
      'a'.repeat(256 * 1024 + 1),
      forge({ alg: 'ES256', typ: MANIFEST_TYP }, claims(1)),
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: '' }, claims(1)),
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: 7 }, claims(1)),
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid, jwk: keyB.publicJwk }, claims(1)),
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid, crit: ['exp'], exp: 1 }, claims(1)),
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid, jku: 'https://evil.example/jwks' }, claims(1)),
      `${h}.${p}.`,
      forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid }, 'not json'),
    ];
    for (const jws of malformed) await expectReason(verifier.verify(jws, 0), ErrorCodes.MANIFEST_MALFORMED);
    // Nothing that fails before the key lookup costs a JWKS fetch.
    expect(fetches()).toBeLessThanOrEqual(1);
  });
});

describe('ManifestVerifier: order of checks', () => {
  it('header before key, signature before claims, identity before time, time before version', async () => {
    const { verifier, clock } = harness();
    // A bad alg is reported even with an unknown kid.
    await expectReason(verifier.verify(forge({ alg: 'HS256', typ: 'JWT', kid: 'nope' }, claims(1)), 0), ErrorCodes.MANIFEST_BAD_ALG);
    await expectReason(verifier.verify(forge({ alg: 'ES256', typ: 'JWT', kid: 'nope' }, claims(1)), 0), ErrorCodes.MANIFEST_BAD_TYP);
    // An unverifiable signature hides every claim problem.
    const wrongEverything = forge({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid }, claims(1, { aud: 'x', sub: 'x', iss: 'x', extra: 1 }), keyB);
    await expectReason(verifier.verify(wrongEverything, 5), ErrorCodes.MANIFEST_BAD_SIGNATURE);
    clock.advance(LIFETIME * 2);
    await expectReason(verifier.verify(sign(1, { issuer: 'https://x.example' }), 5), ErrorCodes.MANIFEST_WRONG_ISSUER);
    await expectReason(verifier.verify(sign(1, { nodeId: 'other' }), 5), ErrorCodes.MANIFEST_WRONG_AUDIENCE);
    await expectReason(verifier.verify(sign(1, { org: 'org-b' }), 5), ErrorCodes.MANIFEST_WRONG_ORG);
    await expectReason(verifier.verify(sign(1), 5), ErrorCodes.MANIFEST_EXPIRED);
  });

  it('refuses a caller mistake with a TypeError, not a rejection code', async () => {
    const { verifier } = harness();
    await expect(verifier.verify(sign(1), -1)).rejects.toBeInstanceOf(TypeError);
    expect(() => new ManifestVerifier({ expected: { issuer: '', nodeId: NODE, org: ORG, federationId: FED }, jwks: () => Promise.resolve({ keys: [] }), clock: new FakeClock() })).toThrow(TypeError);
  });

  it('every rejection code is a MANIFEST_* code in the shared catalogue', () => {
    for (const c of MANIFEST_REJECTION_CODES) expect(ErrorCodes[c]).toBe(c);
    expect(new Set(MANIFEST_REJECTION_CODES).size).toBe(13);
  });
});
