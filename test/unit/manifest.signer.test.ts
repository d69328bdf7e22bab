// The synchronous ES256 signer, checked against an independent verifier (jose) and the JWKS.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { compactVerify, createLocalJWKSet, decodeProtectedHeader, errors, jwtVerify, type JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isSepalError, ErrorCodes } from '../../hub/errors.ts';
import { generateSigningKey, jwks, loadSigningKey, publishedKeys } from '../../hub/manifest/keyset.ts';
import { ManifestSigner } from '../../hub/manifest/signer.ts';
import { MANIFEST_ALGS, MANIFEST_TYP, parseManifestClaims, type ManifestBody } from '../../proto/manifest.ts';

const ISSUER = 'https://hub.example.org:8444';
const NOW = 1_900_000_000_123; // ms, deliberately not a whole second
const LIFETIME = 7 * 86_400_000;

const body: ManifestBody = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 3, lr: 0.05 }, isolation: 'subprocess' },
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
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sepal-signer-'));
  keyA = await makeKey();
  keyB = await makeKey();
});

afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

function signer(key: Key, clock: () => number = () => NOW): ManifestSigner {
  return new ManifestSigner({ issuer: ISSUER, federationId: 'fed-1', kid: key.kid, privateKey: key.privateKey, lifetimeMs: LIFETIME, clock });
}

/** The JWKS a hub would publish with only `key` active. */
function jwksOf(...keys: Key[]): ReturnType<typeof createLocalJWKSet> {
  const records = keys.map((k, i) => ({ kid: k.kid, publicJwk: JSON.stringify(k.publicJwk), createdAt: i, retiredAt: null }));
  return createLocalJWKSet(jwks(publishedKeys(records, () => null, NOW)));
}

const verifyOpts = (nodeId: string) => ({
  issuer: ISSUER,
  audience: nodeId,
  subject: nodeId,
  typ: MANIFEST_TYP,
  algorithms: [...MANIFEST_ALGS],
  currentDate: new Date(NOW + 1000),
});

function swapPart(jws: string, index: 0 | 1 | 2, value: string): string {
  const parts = jws.split('.');
  parts[index] = value;
  return parts.join('.');
}

describe('ManifestSigner', () => {
  it('signs synchronously a JWS that jose verifies with the published JWKS', async () => {
    const out = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 7, body });
    expect(out).not.toBeInstanceOf(Promise);
    expect(out.kid).toBe(keyA.kid);
    expect(out.jti).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(decodeProtectedHeader(out.jws)).toEqual({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid });

    const { payload, protectedHeader } = await jwtVerify(out.jws, jwksOf(keyA), verifyOpts('node-1'));
    expect(protectedHeader.kid).toBe(keyA.kid);
    const iat = Math.floor(NOW / 1000);
    expect(payload).toEqual({
      iss: ISSUER, sub: 'node-1', aud: 'node-1', org: 'org-a', federation_id: 'fed-1',
      iat, nbf: iat, exp: Math.floor((NOW + LIFETIME) / 1000), jti: out.jti, version: 7, manifest: body,
    });
    expect(out.expiresAt).toBe((payload.exp ?? 0) * 1000);
    // The payload decodes with the shared schema, as the agent will decode it.
    expect(parseManifestClaims(payload).ok).toBe(true);

    const raw = await compactVerify(out.jws, jwksOf(keyA), { algorithms: ['ES256'] });
    expect(JSON.parse(new TextDecoder().decode(raw.payload))).toEqual(payload);
  });

  it('uses a fresh jti per manifest', () => {
    const s = signer(keyA);
    const jtis = new Set(Array.from({ length: 50 }, () => s.sign({ nodeId: 'n', org: 'o', version: 1, body }).jti));
    expect(jtis.size).toBe(50);
  });

  it('is refused for another audience, the wrong typ, or once expired', async () => {
    const { jws } = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    await expect(jwtVerify(jws, jwksOf(keyA), verifyOpts('node-2'))).rejects.toBeInstanceOf(errors.JWTClaimValidationFailed);
    await expect(jwtVerify(jws, jwksOf(keyA), { ...verifyOpts('node-1'), typ: 'JWT' })).rejects.toBeInstanceOf(errors.JWTClaimValidationFailed);
    await expect(jwtVerify(jws, jwksOf(keyA), { ...verifyOpts('node-1'), currentDate: new Date(NOW + LIFETIME + 1000) })).rejects.toBeInstanceOf(errors.JWTExpired);
  });

  it('is refused when the payload is tampered with', async () => {
    const { jws } = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    const payload = JSON.parse(Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString()) as { version: number };
    payload.version = 999;
    const tampered = swapPart(jws, 1, Buffer.from(JSON.stringify(payload)).toString('base64url'));
    await expect(jwtVerify(tampered, jwksOf(keyA), verifyOpts('node-1'))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
    await expect(compactVerify(tampered, jwksOf(keyA))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });

  it('is refused when the kid names a key the JWKS does not hold, or another key', async () => {
    const { jws } = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    // Signed by A, only B published.
    await expect(jwtVerify(jws, jwksOf(keyB), verifyOpts('node-1'))).rejects.toBeInstanceOf(errors.JWKSNoMatchingKey);
    // Header rewritten to claim B: B's key does not verify A's signature.
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyB.kid })).toString('base64url');
    await expect(jwtVerify(swapPart(jws, 0, header), jwksOf(keyA, keyB), verifyOpts('node-1'))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });

  it('is refused when signed by a different key under a published kid', async () => {
    const { jws: byB } = signer(keyB).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    const header = Buffer.from(JSON.stringify({ alg: 'ES256', typ: MANIFEST_TYP, kid: keyA.kid })).toString('base64url');
    await expect(jwtVerify(swapPart(byB, 0, header), jwksOf(keyA), verifyOpts('node-1'))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
    // ...and a signature from B spliced onto A's header and payload.
    const { jws: byA } = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    await expect(jwtVerify(swapPart(byA, 2, byB.split('.')[2] ?? ''), jwksOf(keyA, keyB), verifyOpts('node-1'))).rejects.toBeInstanceOf(errors.JWSSignatureVerificationFailed);
  });

  it('is verifiable after rotation while the old key stays published', async () => {
    const old = signer(keyA).sign({ nodeId: 'node-1', org: 'org-a', version: 1, body });
    const records = [
      { kid: keyA.kid, publicJwk: JSON.stringify(keyA.publicJwk), createdAt: 0, retiredAt: NOW },
      { kid: keyB.kid, publicJwk: JSON.stringify(keyB.publicJwk), createdAt: NOW, retiredAt: null },
    ];
    const lastExpiry = (kid: string): number | null => (kid === keyA.kid ? old.expiresAt : null);
    const during = createLocalJWKSet(jwks(publishedKeys(records, lastExpiry, NOW + 1000)));
    await expect(jwtVerify(old.jws, during, verifyOpts('node-1'))).resolves.toBeDefined();
    const after = publishedKeys(records, lastExpiry, old.expiresAt);
    expect(after.map((k) => k.kid)).toEqual([keyB.kid]);
  });

  it('follows the injected clock', async () => {
    let t = NOW;
    const s = signer(keyA, () => t);
    const first = s.sign({ nodeId: 'n', org: 'o', version: 1, body });
    t += 60_000;
    const second = s.sign({ nodeId: 'n', org: 'o', version: 2, body });
    expect(second.expiresAt - first.expiresAt).toBe(60_000);
    const { payload } = await jwtVerify(second.jws, jwksOf(keyA), { ...verifyOpts('n'), currentDate: new Date(t) });
    expect(payload.iat).toBe(Math.floor(t / 1000));
  });

  it('refuses to sign claims the agent would refuse', () => {
    const s = signer(keyA);
    const bad = (input: Parameters<ManifestSigner['sign']>[0]): unknown => {
      try {
        s.sign(input);
      } catch (e) {
        return e;
      }
      return null;
    };
    expect(isSepalError(bad({ nodeId: 'n', org: 'o', version: 0, body }), ErrorCodes.MANIFEST_INVALID)).toBe(true);
    expect(isSepalError(bad({ nodeId: '', org: 'o', version: 1, body }), ErrorCodes.MANIFEST_INVALID)).toBe(true);
    const unknownField = { ...body, extra: true } as unknown as ManifestBody;
    expect(isSepalError(bad({ nodeId: 'n', org: 'o', version: 1, body: unknownField }), ErrorCodes.MANIFEST_INVALID)).toBe(true);
  });

  it('checks a body again when it changed between calls, and signs the decoded body', async () => {
    const s = signer(keyA);
    const mutable = structuredClone(body);
    s.sign({ nodeId: 'n', org: 'o', version: 1, body: mutable });
    mutable.supernode.maxRetries = -1;
    expect(() => s.sign({ nodeId: 'n', org: 'o', version: 2, body: mutable })).toThrow(/manifest\.supernode\.maxRetries/);
    mutable.supernode.maxRetries = 5;
    const ok = s.sign({ nodeId: 'n', org: 'o', version: 3, body: mutable });
    const { payload } = await jwtVerify(ok.jws, jwksOf(keyA), verifyOpts('n'));
    expect(payload['manifest']).toEqual(mutable);

    // A body written without the defaulted field is signed with the default applied.
    const { datasets: _d, ...noDatasets } = body;
    const withDefault = s.sign({ nodeId: 'n', org: 'o', version: 4, body: noDatasets as ManifestBody });
    const decoded = await jwtVerify(withDefault.jws, jwksOf(keyA), verifyOpts('n'));
    expect(decoded.payload['manifest']).toEqual({ ...body, datasets: [] });
  });

  it('refuses options that could only produce unverifiable manifests', () => {
    const base = { issuer: ISSUER, federationId: 'fed-1', kid: keyA.kid, privateKey: keyA.privateKey, lifetimeMs: LIFETIME };
    expect(() => new ManifestSigner({ ...base, kid: keyB.kid })).toThrow(/does not match kid/);
    expect(() => new ManifestSigner({ ...base, lifetimeMs: 999 })).toThrow(TypeError);
    expect(() => new ManifestSigner({ ...base, issuer: '' })).toThrow(TypeError);
    expect(() => new ManifestSigner({ ...base, privateKey: crypto.createPublicKey(keyA.privateKey) })).toThrow(TypeError);
    const p384 = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' }).privateKey;
    expect(() => new ManifestSigner({ ...base, privateKey: p384 })).toThrow(TypeError);
  });
});
