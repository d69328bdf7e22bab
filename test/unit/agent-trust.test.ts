// What the agent trusts and when: the --ca-sha256 pin (normalisation, the first contact that checks
// it, the bundle that must hang off its roots), the pinned HTTPS client against real TLS servers on
// loopback, which roots of a CA bundle a node accepts across a root rotation, and the checks on the
// certificate the hub issues.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import { ErrorCodes } from '../../proto/errors.ts';
import { AgentError, UsageError } from '../../agent/errors.ts';
import {
  colonHex, fetchPinnedRoot, httpsGet, hubResource, normalizeFingerprint, parseHubUrl, type HttpsGet, type HttpsGetRequest,
} from '../../agent/enroll/bootstrap.ts';
import { acceptedRoots, checkIssuedCertificate, type IssuedCheck } from '../../agent/enroll/certificate.ts';
import { derToPem } from '../../agent/enroll/der.ts';
import { createCaMaterial, type CaMaterial } from '../../hub/ca/bootstrap.ts';
import { LeafIssuer, randomSerial } from '../../hub/ca/certificate.ts';
import { buildCertificate, basicConstraintsExt, extKeyUsageExt, nameDer, OID } from '../../hub/ca/x509.ts';
import { HOUR, createTestCa, type TestCa } from './agent-credentials.fixtures.ts';

function ca(name = 'fed-a'): CaMaterial {
  return createCaMaterial({ hostnames: ['localhost', '127.0.0.1'], federationId: name, now: new Date() });
}

function der(pem: string): Buffer {
  return new crypto.X509Certificate(pem).raw;
}

function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

async function codeOf(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AgentError) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a failure');
}

/** A `get` that answers every URL with `body` and records what it was asked. */
function stubGet(body: string, status = 200): { get: HttpsGet; calls: HttpsGetRequest[] } {
  const calls: HttpsGetRequest[] = [];
  return { calls, get: (req) => { calls.push(req); return Promise.resolve({ status, body: Buffer.from(body) }); } };
}

const HUB = parseHubUrl('https://hub.example.org:8444');
let fed: CaMaterial;
let other: CaMaterial;
let pin: string;
beforeAll(() => {
  fed = ca();
  other = ca('fed-b');
  pin = sha256(der(fed.rootCert));
});


/** The AgentError code `fn` throws, or 'ok'. */
function codeOfSync(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof AgentError) return e.code;
    throw e;
  }
  return 'ok';
}

describe('the --ca-sha256 pin', () => {
  it('accepts hex with or without colons, in any case, with an optional sha256: prefix', () => {
    const hex = 'ab'.repeat(32);
    expect(normalizeFingerprint(hex)).toBe(hex);
    expect(normalizeFingerprint(hex.toUpperCase())).toBe(hex);
    expect(normalizeFingerprint(colonHex(hex))).toBe(hex);
    expect(normalizeFingerprint(`sha256:${colonHex(hex).toLowerCase()}`)).toBe(hex);
    expect(normalizeFingerprint(` ${hex}\n`)).toBe(hex);
  });

  it('refuses anything that is not 32 bytes of hex', () => {
    for (const bad of ['', 'ab'.repeat(31), 'ab'.repeat(33), 'zz'.repeat(32), 'sha1:' + 'ab'.repeat(32), 'a:b'.repeat(32)]) {
      expect(normalizeFingerprint(bad), bad).toBeNull();
    }
  });
});

describe('--hub', () => {
  it('must be https without credentials, query or fragment; a path prefix is kept', () => {
    expect(() => parseHubUrl('http://hub:8444')).toThrow(UsageError);
    expect(() => parseHubUrl('https://u:p@hub:8444')).toThrow(UsageError);
    expect(() => parseHubUrl('https://hub:8444/?x=1')).toThrow(UsageError);
    expect(() => parseHubUrl('not a url')).toThrow(UsageError);
    const u = parseHubUrl('https://hub:8444/sepal');
    expect(hubResource(u, 'ca.pem').href).toBe('https://hub:8444/sepal/ca.pem');
    expect(hubResource(HUB, '.well-known/sepal-configuration').href).toBe('https://hub.example.org:8444/.well-known/sepal-configuration');
  });
});

describe('fetchPinnedRoot (first contact)', () => {
  it('fetches /ca.pem trusting nothing, and returns the pinned root alone as the trust anchor', async () => {
    const s = stubGet(fed.rootCert + fed.issuingCert);
    const root = await fetchPinnedRoot(HUB, pin, { get: s.get });
    expect(s.calls).toHaveLength(1);
    expect(s.calls[0]?.url.href).toBe('https://hub.example.org:8444/ca.pem');
    expect(s.calls[0]?.ca).toBeNull();
    expect(root.fingerprint).toBe(pin);
    expect(root.der).toEqual(der(fed.rootCert));
    expect(root.pem).toBe(fed.rootCert);
  });

  it('a different root is CA_FINGERPRINT_MISMATCH naming both fingerprints', async () => {
    const e = await codeOf(fetchPinnedRoot(HUB, pin, stubGet(other.rootCert + other.issuingCert)));
    expect(e.code).toBe(ErrorCodes.CA_FINGERPRINT_MISMATCH);
    expect(e.message).toContain(pin);
    expect(e.message).toContain(sha256(der(other.rootCert)));
  });

  it('the pin may name any root of the bundle, not only the first; the pinned root alone is returned', async () => {
    const root = await fetchPinnedRoot(HUB, pin, stubGet(other.rootCert + fed.rootCert + fed.issuingCert));
    expect(root.der).toEqual(der(fed.rootCert));
    expect(root.pem).toBe(fed.rootCert);
  });

  it('a bundle holding a certificate that does not chain to the pinned root is refused', async () => {
    const e = await codeOf(fetchPinnedRoot(HUB, pin, stubGet(fed.rootCert + fed.issuingCert + other.issuingCert)));
    expect(e.code).toBe(ErrorCodes.DISCOVERY_INVALID);
    expect(e.message).toMatch(/does not chain/);
  });

  it('a root rotation in progress: the pin may be either root; cross certificates and both issuing CAs chain', async () => {
    const now = Date.now();
    const oldCa = createTestCa(now);
    const newCa = createTestCa(now);
    const cross = oldCa.crossSign(newCa, { notBefore: now - HOUR, notAfter: now + 24 * HOUR });
    // The active (new) root first, as the hub serves it.
    const body = [newCa.rootDer, oldCa.rootDer, cross, newCa.issuingDer, oldCa.issuingDer].map((d) => derToPem(d, 'CERTIFICATE')).join('');
    expect((await fetchPinnedRoot(HUB, oldCa.fingerprint, stubGet(body))).der).toEqual(oldCa.rootDer);
    expect((await fetchPinnedRoot(HUB, newCa.fingerprint, stubGet(body))).der).toEqual(newCa.rootDer);

    const mismatch = await codeOf(fetchPinnedRoot(HUB, pin, stubGet(body)));
    expect(mismatch.code).toBe(ErrorCodes.CA_FINGERPRINT_MISMATCH);
    expect(mismatch.message).toContain(newCa.fingerprint);
    // The cross certificate carries the new root's name and key but is not a root.
    expect((await codeOf(fetchPinnedRoot(HUB, sha256(cross), stubGet(body)))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
    // A certificate chaining to no root of the bundle spoils it, whichever root is pinned.
    const stray = body + other.issuingCert;
    expect((await codeOf(fetchPinnedRoot(HUB, oldCa.fingerprint, stubGet(stray)))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
    expect((await codeOf(fetchPinnedRoot(HUB, newCa.fingerprint, stubGet(stray)))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
  });

  it('a pinned certificate that is not a self-signed CA is refused', async () => {
    const e = await codeOf(fetchPinnedRoot(HUB, sha256(der(fed.issuingCert)), stubGet(fed.issuingCert + fed.rootCert)));
    expect(e.code).toBe(ErrorCodes.DISCOVERY_INVALID);
  });

  it('junk, an HTTP error or other PEM is DISCOVERY_INVALID', async () => {
    expect((await codeOf(fetchPinnedRoot(HUB, pin, stubGet('<html>')))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
    expect((await codeOf(fetchPinnedRoot(HUB, pin, stubGet(fed.rootCert, 404)))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
    expect((await codeOf(fetchPinnedRoot(HUB, pin, stubGet(fed.rootKey)))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
  });
});

describe('httpsGet against real TLS servers', () => {
  const servers: https.Server[] = [];
  afterAll(async () => {
    await Promise.all(servers.map((s) => new Promise((r) => s.close(r))));
  });

  async function serve(cert: string, key: string, opts: https.ServerOptions = {}): Promise<URL> {
    const s = https.createServer({ cert, key, ...opts }, (_req, res) => res.end('hello'));
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
    return new URL(`https://localhost:${(s.address() as AddressInfo).port}/`);
  }

  it('first contact (ca null) reads from a server it cannot verify; pinned to the right root it verifies', async () => {
    const url = await serve(fed.serverCert + fed.issuingCert, fed.serverKey);
    expect((await httpsGet({ url, ca: null, maxBytes: 100 })).body.toString()).toBe('hello');
    expect((await httpsGet({ url, ca: fed.rootCert, maxBytes: 100 })).body.toString()).toBe('hello');
  });

  it('pinned to another root, the server is refused as unverifiable', async () => {
    const url = await serve(fed.serverCert + fed.issuingCert, fed.serverKey);
    const e = await codeOf(httpsGet({ url, ca: other.rootCert, maxBytes: 100 }));
    expect(e.code).toBe(ErrorCodes.HUB_UNREACHABLE);
    expect(e.message).toMatch(/does not verify against the pinned root/);
  });

  it('TLS below 1.3 is refused', async () => {
    const url = await serve(fed.serverCert + fed.issuingCert, fed.serverKey, { maxVersion: 'TLSv1.2' });
    expect((await codeOf(httpsGet({ url, ca: fed.rootCert, maxBytes: 100 }))).code).toBe(ErrorCodes.HUB_UNREACHABLE);
  });

  it('nothing listening is HUB_UNREACHABLE with the address; an oversized body is refused', async () => {
    const url = await serve(fed.serverCert + fed.issuingCert, fed.serverKey);
    expect((await codeOf(httpsGet({ url, ca: fed.rootCert, maxBytes: 2 }))).code).toBe(ErrorCodes.DISCOVERY_INVALID);
    const dead = new URL('https://127.0.0.1:1/');
    const e = await codeOf(httpsGet({ url: dead, ca: null, maxBytes: 100 }));
    expect(e.code).toBe(ErrorCodes.HUB_UNREACHABLE);
    expect(e.message).toContain('https://127.0.0.1:1');
  });
});

describe('checkIssuedCertificate', () => {
  const NODE = 'n-0123456789abcdef';
  let issuer: LeafIssuer;
  let issuingKey: crypto.KeyObject;
  let key: { publicKey: crypto.KeyObject; privateKey: crypto.KeyObject };

  beforeAll(() => {
    issuingKey = crypto.createPrivateKey(fed.issuingKey);
    issuer = new LeafIssuer({ cert: new crypto.X509Certificate(fed.issuingCert), certDer: der(fed.issuingCert), key: issuingKey });
    key = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  });

  function leaf(opts: { spki?: Buffer; nodeId?: string; notAfter?: Date } = {}): Buffer {
    const now = Date.now();
    return issuer.issue({
      spkiDer: opts.spki ?? key.publicKey.export({ type: 'spki', format: 'der' }),
      nodeId: opts.nodeId ?? NODE,
      org: 'org-a',
      uri: `spiffe://fed-a/org/org-a/node/${NODE}`,
      notBefore: new Date(now - 60_000),
      notAfter: opts.notAfter ?? new Date(now + 86_400_000),
      serial: randomSerial(),
    }).der;
  }

  function check(over: Partial<IssuedCheck> = {}): ReturnType<typeof checkIssuedCertificate> {
    return checkIssuedCertificate({
      certificateDer: leaf(),
      chainDer: [der(fed.issuingCert)],
      caBundleDer: [der(fed.rootCert)],
      anchors: [der(fed.rootCert)],
      publicKey: key.publicKey,
      nodeId: NODE,
      now: Date.now(),
      ...over,
    });
  }

  it('accepts a leaf for our key, chained through the issuing CA to the pinned root', () => {
    const r = check();
    expect(r.leaf.subject).toContain(`CN=${NODE}`);
    expect(r.chain).toHaveLength(1);
    expect(r.roots).toHaveLength(1);
  });

  it('refuses: another key, another node id, a bundle without the anchor, a broken chain', () => {
    const otherKey = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey;
    expect(codeOfSync(() => check({ certificateDer: leaf({ spki: otherKey.export({ type: 'spki', format: 'der' }) }) }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => check({ nodeId: 'n-ffffffffffffffff' }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => check({ caBundleDer: [der(other.rootCert)] }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => check({ caBundleDer: [der(other.rootCert), der(fed.rootCert)], chainDer: [der(other.issuingCert)] }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => check({ chainDer: [] }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => check({ certificateDer: Buffer.from('3003020100', 'hex') }))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
  });

  it('refuses a certificate that is not valid now (clock far ahead or behind)', () => {
    expect(codeOfSync(() => check({ now: Date.now() + 2 * 86_400_000 }))).toBe(ErrorCodes.CLIENT_CERT_EXPIRED);
    expect(codeOfSync(() => check({ now: Date.now() - 3_600_000 }))).toBe(ErrorCodes.CLIENT_CERT_EXPIRED);
  });

  it('refuses a certificate without clientAuth', () => {
    const issuingCert = new crypto.X509Certificate(fed.issuingCert);
    const serverOnly = buildCertificate({
      serial: randomSerial(),
      issuerName: nameDer([[OID.commonName, 'Sepal Issuing CA fed-a']]),
      subjectName: nameDer([[OID.commonName, NODE]]),
      notBefore: new Date(Date.now() - 60_000),
      notAfter: new Date(Date.now() + 3_600_000),
      spkiDer: key.publicKey.export({ type: 'spki', format: 'der' }),
      extensions: [basicConstraintsExt(false), extKeyUsageExt([OID.serverAuth])],
    }, issuingKey);
    expect(issuingCert.subject).toBe('CN=Sepal Issuing CA fed-a');
    expect(codeOfSync(() => check({ certificateDer: serverOnly }))).toBe(ErrorCodes.CLIENT_CERT_WRONG_USAGE);
  });
});

describe('acceptedRoots (root rotation)', () => {
  const NOW = Date.now();
  const VALID = { notBefore: NOW - HOUR, notAfter: NOW + 30 * 24 * HOUR };
  let oldCa: TestCa;
  let newCa: TestCa;
  let evil: TestCa;
  /** old root signs new root: what the hub publishes during a root rotation. */
  let cross: Buffer;

  beforeAll(() => {
    // The new root has the old one's name, as a rotated root may: only keys tell them apart.
    oldCa = createTestCa(NOW);
    newCa = createTestCa(NOW);
    evil = createTestCa(NOW, 'fed-evil');
    cross = oldCa.crossSign(newCa, VALID);
  });

  const x509 = (ders: readonly Buffer[]): crypto.X509Certificate[] => ders.map((d) => new crypto.X509Certificate(d));
  const accepted = (bundle: readonly Buffer[], anchors: readonly Buffer[], now = NOW): string[] =>
    acceptedRoots(x509(bundle), anchors, now).map((r) => sha256(r.raw));

  it('a root the trusted root vouches for with a cross certificate is accepted alongside it, in bundle order', () => {
    expect(accepted([newCa.rootDer, oldCa.rootDer, cross], [oldCa.rootDer])).toEqual([newCa.fingerprint, oldCa.fingerprint]);
    expect(accepted([oldCa.rootDer, newCa.rootDer, cross], [oldCa.rootDer])).toEqual([oldCa.fingerprint, newCa.fingerprint]);
  });

  it('an anchor the bundle no longer holds is dropped (the old root retired)', () => {
    expect(accepted([newCa.rootDer], [oldCa.rootDer, newCa.rootDer])).toEqual([newCa.fingerprint]);
  });

  it('trust does not flow backwards: anchored on the new root, the old root is not accepted', () => {
    expect(accepted([oldCa.rootDer, newCa.rootDer, cross], [newCa.rootDer])).toEqual([newCa.fingerprint]);
  });

  it('is transitive: a root vouched for by a root vouched for by the anchor', () => {
    const third = createTestCa(NOW, 'fed-third');
    // The third root listed before the one that vouches for it: accepted only once that one is.
    const bundle = [oldCa.rootDer, third.rootDer, newCa.rootDer, newCa.crossSign(third, VALID), cross];
    expect(accepted(bundle, [oldCa.rootDer])).toEqual([oldCa.fingerprint, third.fingerprint, newCa.fingerprint]);
  });

  it('ignores a root nothing trusted vouches for: no cross certificate, one from an untrusted root, one for another key', () => {
    expect(accepted([oldCa.rootDer, evil.rootDer], [oldCa.rootDer])).toEqual([oldCa.fingerprint]);
    expect(accepted([oldCa.rootDer, newCa.rootDer, evil.rootDer, evil.crossSign(newCa, VALID)], [oldCa.rootDer])).toEqual([oldCa.fingerprint]);
    // Same name as the vouched-for root, another key.
    const impostor = createTestCa(NOW);
    expect(accepted([oldCa.rootDer, impostor.rootDer, cross], [oldCa.rootDer])).toEqual([oldCa.fingerprint]);
  });

  it('a cross certificate must be valid now and a CA certificate', () => {
    const expired = oldCa.crossSign(newCa, { notBefore: NOW - 2 * HOUR, notAfter: NOW - HOUR });
    const future = oldCa.crossSign(newCa, { notBefore: NOW + HOUR, notAfter: NOW + 2 * HOUR });
    const notCa = oldCa.crossSign(newCa, { ...VALID, ca: false });
    for (const c of [expired, future, notCa]) {
      expect(accepted([oldCa.rootDer, newCa.rootDer, c], [oldCa.rootDer])).toEqual([oldCa.fingerprint]);
    }
    expect(accepted([oldCa.rootDer, newCa.rootDer, cross], [oldCa.rootDer], VALID.notAfter)).toEqual([oldCa.fingerprint]);
  });

  it('no accepted root is CLIENT_CERT_UNTRUSTED', () => {
    expect(codeOfSync(() => accepted([evil.rootDer], [oldCa.rootDer]))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => accepted([evil.rootDer, evil.crossSign(oldCa, VALID)], [oldCa.rootDer]))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    // An anchor that is not a root (here a cross certificate) anchors nothing.
    expect(codeOfSync(() => accepted([newCa.rootDer, cross], [cross]))).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(codeOfSync(() => accepted([oldCa.rootDer], [oldCa.rootDer]))).toBe('ok');
  });
});
