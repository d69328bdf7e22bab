// The agent API against a real hub: real TLS 1.3 on loopback, certificates made at test start,
// admin commands run as separate processes on the same data dir while the server runs.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { execFileSync } from 'node:child_process';
import { compactVerify, createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose';
import type { ManifestEnvelope, RenewResponse } from '../../proto/api.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { MANIFEST_TYP } from '../../proto/manifest.ts';
import { LeafIssuer, randomSerial } from '../../hub/ca/certificate.ts';
import { derToPem } from '../../hub/ca/pem.ts';
import { createCaMaterial } from '../../hub/ca/bootstrap.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import {
  type TestHub, type TestNode, cli, client, enrollTestNode, expectRpcError, httpsGet, nodeClient, startTestHub, tempDir, unaryCall,
} from '../helpers/hub.ts';

const MANIFEST = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 0 } },
  datasets: [],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

let hub: TestHub;

beforeAll(async () => {
  hub = await startTestHub();
});
afterAll(async () => {
  await hub.stop();
});

async function auditDenials(reason: string): Promise<number> {
  const all = await hub.running.hub.ctx.store.readAudit(0, 100_000);
  return all.filter((e) => e.event === 'security.denied' && e.reason === reason).length;
}

async function certCount(nodeId: string): Promise<number> {
  const all = await hub.running.hub.ctx.store.readAudit(0, 100_000);
  return all.filter((e) => e.nodeId === nodeId && (e.event === 'cert.renewed' || e.event === 'node.enrolled')).length;
}

function verifyChain(leafPem: string): void {
  const dir = tempDir();
  try {
    fs.writeFileSync(path.join(dir, 'leaf.pem'), leafPem);
    execFileSync('openssl', ['verify', '-purpose', 'sslclient', '-CAfile', hub.paths.rootCert, '-untrusted', hub.paths.issuingCert, path.join(dir, 'leaf.pem')], { stdio: 'pipe' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('Renew over mTLS', () => {
  it('gives a valid, unrevoked node a new certificate for the same node and org from a new key', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const c = nodeClient(hub, node);
    const key2 = newKey('P-384');
    const res = await unaryCall<RenewResponse>(c, 'Renew', { csrDer: makeCsr(key2, { cn: 'n-ffffffffffffffff' }) });
    c.close();
    const cert = new crypto.X509Certificate(res.credentials.certificateDer);
    expect(cert.subject).toContain(`CN=${node.nodeId}`);
    expect(cert.subject).toContain('O=org-a');
    expect(cert.subjectAltName).toBe(`URI:spiffe://${hub.running.hub.ctx.config.federationId}/org/org-a/node/${node.nodeId}`);
    expect(cert.serialNumber.toLowerCase()).not.toBe(node.serial);
    expect(cert.publicKey.export({ type: 'spki', format: 'der' }).equals(key2.spkiDer)).toBe(true);
    expect(cert.ca).toBe(false);
    expect(Number(res.credentials.notAfterUnixMs)).toBe(Date.parse(cert.validTo));
    expect(res.credentials.chainDer).toHaveLength(1);
    expect(res.credentials.caBundleDer[0]?.equals(new crypto.X509Certificate(fs.readFileSync(hub.paths.rootCert)).raw)).toBe(true);
    verifyChain(cert.toString());
    const stored = await hub.running.hub.ctx.store.getCert(cert.serialNumber.toLowerCase());
    expect(stored?.nodeId).toBe(node.nodeId);
    expect(stored?.kind).toBe('renew');
  });

  it('lets the renewed certificate authenticate in turn', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const c1 = nodeClient(hub, node);
    const key2 = newKey();
    const res = await unaryCall<RenewResponse>(c1, 'Renew', { csrDer: makeCsr(key2) });
    c1.close();
    const certPem = derToPem(res.credentials.certificateDer, 'CERTIFICATE');
    const node2: TestNode = { ...node, key: key2, certPem, chainPem: certPem + res.credentials.chainDer.map((d) => derToPem(d, 'CERTIFICATE')).join('') };
    const c2 = nodeClient(hub, node2);
    const res2 = await unaryCall<RenewResponse>(c2, 'Renew', { csrDer: makeCsr(newKey()) });
    c2.close();
    expect(new crypto.X509Certificate(res2.credentials.certificateDer).subject).toContain(`CN=${node.nodeId}`);
  });
});

describe('refused callers (coded error, security event, nothing written)', () => {
  it('no client certificate', async () => {
    const before = await auditDenials(ErrorCodes.CLIENT_CERT_MISSING);
    const c = client(hub);
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_MISSING });
    expect(await auditDenials(ErrorCodes.CLIENT_CERT_MISSING)).toBe(before + 1);
  });

  it('a certificate from another CA', async () => {
    const other = createCaMaterial({ hostnames: ['localhost'], federationId: 'other', now: new Date() });
    const issuer = new LeafIssuer({ cert: new crypto.X509Certificate(other.issuingCert), certDer: new crypto.X509Certificate(other.issuingCert).raw, key: crypto.createPrivateKey(other.issuingKey) });
    const key = newKey();
    const now = Date.now();
    const leaf = issuer.issue({ spkiDer: key.spkiDer, nodeId: 'n-0123456789abcdef', org: 'org-a', uri: 'spiffe://other/org/org-a/node/n-0123456789abcdef', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000), serial: randomSerial() });
    const before = await auditDenials(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    const c = client(hub, { keyPem: key.keyPem, certChainPem: derToPem(leaf.der, 'CERTIFICATE') + other.issuingCert });
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_UNTRUSTED });
    expect(await auditDenials(ErrorCodes.CLIENT_CERT_UNTRUSTED)).toBe(before + 1);
  });

  it('an expired certificate from our own CA', async () => {
    const key = newKey();
    const now = Date.now();
    const leaf = hub.running.hub.ctx.authority.leafIssuer.issue({ spkiDer: key.spkiDer, nodeId: 'n-00000000000000aa', org: 'org-a', uri: 'spiffe://x/org/org-a/node/n-00000000000000aa', notBefore: new Date(now - 7200_000), notAfter: new Date(now - 3600_000), serial: randomSerial() });
    const c = client(hub, { keyPem: key.keyPem, certChainPem: derToPem(leaf.der, 'CERTIFICATE') + fs.readFileSync(hub.paths.issuingCert, 'utf8') });
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_EXPIRED });
  });

  it('a serverAuth-only certificate from our own CA (the hub\'s own server certificate)', async () => {
    const c = client(hub, { keyPem: fs.readFileSync(hub.paths.serverKey, 'utf8'), certChainPem: fs.readFileSync(hub.paths.serverCert, 'utf8') + fs.readFileSync(hub.paths.issuingCert, 'utf8') });
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_WRONG_USAGE });
  });

  it('a certificate signed by our CA that the store never recorded', async () => {
    const key = newKey();
    const now = Date.now();
    const leaf = hub.running.hub.ctx.authority.leafIssuer.issue({ spkiDer: key.spkiDer, nodeId: 'n-00000000000000bb', org: 'org-a', uri: 'spiffe://x/org/org-a/node/n-00000000000000bb', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000), serial: randomSerial() });
    const c = client(hub, { keyPem: key.keyPem, certChainPem: derToPem(leaf.der, 'CERTIFICATE') });
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_UNKNOWN });
  });

  it.each([
    ['bad signature', () => makeCsr(newKey(), { corruptSignature: true }), ErrorCodes.CSR_BAD_SIGNATURE],
    ['a CA request', () => makeCsr(newKey(), { askForCa: true }), ErrorCodes.CSR_CA_REQUESTED],
    ['garbage bytes', () => crypto.randomBytes(300), ErrorCodes.CSR_MALFORMED],
    ['an RSA key', () => {
      const dir = tempDir();
      try {
        execFileSync('openssl', ['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', path.join(dir, 'k'), '-subj', '/CN=x', '-outform', 'DER', '-out', path.join(dir, 'csr')], { stdio: 'pipe' });
        return fs.readFileSync(path.join(dir, 'csr'));
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    }, ErrorCodes.CSR_UNSUPPORTED_KEY],
    ['an unsupported curve (P-521)', () => {
      const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-521' });
      return makeCsr({ privateKey, publicKey, spkiDer: publicKey.export({ type: 'spki', format: 'der' }), keyPem: '' }, { hash: 'sha384' });
    }, ErrorCodes.CSR_UNSUPPORTED_KEY],
  ])('a CSR with %s', async (_name, make, code) => {
    const node = await enrollTestNode(hub, 'org-a');
    const before = await auditDenials(code);
    const c = nodeClient(hub, node);
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: make() }));
    c.close();
    expect(r).toEqual({ status: grpc.status.INVALID_ARGUMENT, code });
    expect(await auditDenials(code)).toBe(before + 1);
    expect(await certCount(node.nodeId)).toBe(1);
  });

  it('an oversized message', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const before = await auditDenials(ErrorCodes.MESSAGE_TOO_LARGE);
    const c = nodeClient(hub, node);
    const r = await expectRpcError(unaryCall(c, 'Renew', { csrDer: crypto.randomBytes(hub.running.hub.ctx.config.limits.maxMessageBytes + 10) }));
    c.close();
    expect(r).toEqual({ status: grpc.status.RESOURCE_EXHAUSTED, code: ErrorCodes.MESSAGE_TOO_LARGE });
    await expect.poll(() => auditDenials(ErrorCodes.MESSAGE_TOO_LARGE)).toBe(before + 1);
    expect(await certCount(node.nodeId)).toBe(1);
  });

  it('Enroll with an access token answers ENROLLMENT_UNAVAILABLE when no IdP is configured', async () => {
    const c = client(hub);
    const r = await expectRpcError(unaryCall(c, 'Enroll', { csrDer: makeCsr(newKey()), accessToken: 'eyJ.x.y' }));
    c.close();
    expect(r).toEqual({ status: grpc.status.FAILED_PRECONDITION, code: ErrorCodes.ENROLLMENT_UNAVAILABLE });
  });

  it('a TLS 1.2 client cannot connect', async () => {
    const err = await new Promise<Error | null>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: hub.running.grpcPort, maxVersion: 'TLSv1.2', ca: hub.caPem, servername: 'localhost', ALPNProtocols: ['h2'] });
      s.once('secureConnect', () => { s.destroy(); resolve(null); });
      s.once('error', (e) => resolve(e));
    });
    expect(err).not.toBeNull();
  });
});

function watch(c: ReturnType<typeof client>, knownVersion = '0'): { received: ManifestEnvelope[]; ended: Promise<{ status: grpc.status; code: string | undefined }>; call: grpc.ClientReadableStream<ManifestEnvelope> } {
  const fn = c['WatchManifest'] as (req: unknown) => grpc.ClientReadableStream<ManifestEnvelope>;
  const call = fn.call(c, { knownVersion });
  const received: ManifestEnvelope[] = [];
  call.on('data', (m: ManifestEnvelope) => received.push(m));
  const ended = new Promise<{ status: grpc.status; code: string | undefined }>((resolve) => {
    call.on('error', (e: grpc.ServiceError) => resolve({ status: e.code, code: e.metadata.get('sepal-error-code')[0] as string | undefined }));
    call.on('end', () => resolve({ status: grpc.status.OK, code: undefined }));
  });
  return { received, ended, call };
}

describe('manifests', () => {
  it('publish from the CLI (another process) reaches an open stream at once; versions increase; the JWS verifies against the JWKS', async () => {
    const node = await enrollTestNode(hub, 'org-m');
    const c = nodeClient(hub, node);
    const w = watch(c);
    await expect.poll(() => hub.running.grpc.streams.has(node.nodeId)).toBe(true);
    const file = path.join(hub.dir, 'm.json');
    fs.writeFileSync(file, JSON.stringify(MANIFEST));
    const p1 = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', node.nodeId, '--file', file, '--json']);
    expect(p1.code).toBe(0);
    await expect.poll(() => w.received.length, { timeout: 5000 }).toBe(1);
    const p2 = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--org', 'org-m', '--file', file]);
    expect(p2.code).toBe(0);
    await expect.poll(() => w.received.length, { timeout: 5000 }).toBe(2);
    expect(w.received.map((m) => m.version)).toEqual(['1', '2']);

    const jwks = JSON.parse((await httpsGet(hub, '/.well-known/jwks.json')).body.toString()) as JSONWebKeySet;
    const { payload, protectedHeader } = await jwtVerify(w.received[1]?.jws ?? '', createLocalJWKSet(jwks), {
      issuer: hub.running.hub.ctx.config.https.publicUrl, audience: node.nodeId, typ: MANIFEST_TYP, algorithms: ['ES256'],
    });
    expect(protectedHeader.kid).toBe(jwks.keys[0]?.kid);
    expect(payload.sub).toBe(node.nodeId);
    expect(payload['org']).toBe('org-m');
    expect(payload['version']).toBe(2);
    expect(payload['federation_id']).toBe(hub.running.hub.ctx.config.federationId);
    expect(payload['manifest']).toMatchObject({ superlink: MANIFEST.superlink });

    // a reconnecting agent that knows version 2 gets nothing older
    const w2 = watch(c, '2');
    const w3 = watch(c, '1');
    await expect.poll(() => w3.received.length).toBe(1);
    expect(w2.received).toHaveLength(0);
    w.call.cancel();
    w2.call.cancel();
    w3.call.cancel();
    c.close();
  });

  it('rejects an unknown field or a wrong type in manifest publish, writes nothing and records the denial', async () => {
    const node = await enrollTestNode(hub, 'org-bad');
    for (const bad of [{ ...MANIFEST, extra: 1 }, { ...MANIFEST, supernode: { nodeConfig: 'lr=0.1' } }]) {
      const file = path.join(hub.dir, 'bad.json');
      fs.writeFileSync(file, JSON.stringify(bad));
      const before = await auditDenials(ErrorCodes.MANIFEST_INVALID);
      const r = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', node.nodeId, '--file', file]);
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`error ${ErrorCodes.MANIFEST_INVALID}`);
      expect(await auditDenials(ErrorCodes.MANIFEST_INVALID)).toBe(before + 1);
    }
    expect(await hub.running.hub.ctx.store.latestManifest(node.nodeId)).toBeNull();
  });

  it('refuses a manifest too large to deliver once signed, and stores nothing', async () => {
    const node = await enrollTestNode(hub, 'org-big');
    const big = { ...MANIFEST, supernode: { nodeConfig: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'x'.repeat(1000)])) } };
    const file = path.join(hub.dir, 'big.json');
    fs.writeFileSync(file, JSON.stringify(big));
    const before = await auditDenials(ErrorCodes.MANIFEST_INVALID);
    const r = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', node.nodeId, '--file', file]);
    expect(r.code).toBe(1);
    expect(r.stderr).toContain(`error ${ErrorCodes.MANIFEST_INVALID}`);
    expect(await hub.running.hub.ctx.store.latestManifest(node.nodeId)).toBeNull();
    expect(await auditDenials(ErrorCodes.MANIFEST_INVALID)).toBe(before + 1);
  });

  it('keys rotate: both keys are published, new manifests use the new kid', async () => {
    const node = await enrollTestNode(hub, 'org-k');
    const file = path.join(hub.dir, 'mk.json');
    fs.writeFileSync(file, JSON.stringify(MANIFEST));
    expect((await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', node.nodeId, '--file', file])).code).toBe(0);
    const oldKid = (await hub.running.hub.ctx.store.latestManifest(node.nodeId))?.kid;
    const rot = await cli(['keys', 'rotate', '--data-dir', hub.paths.dataDir, '--json']);
    expect(rot.code).toBe(0);
    const { kid } = JSON.parse(rot.stdout) as { kid: string };
    expect(kid).not.toBe(oldKid);
    expect((await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', node.nodeId, '--file', file])).code).toBe(0);
    const latest = await hub.running.hub.ctx.store.latestManifest(node.nodeId);
    expect(latest?.kid).toBe(kid);
    const jwks = JSON.parse((await httpsGet(hub, '/.well-known/jwks.json')).body.toString()) as JSONWebKeySet;
    expect(jwks.keys.map((k) => k.kid).sort()).toEqual([kid, oldKid].sort());
    const verified = await compactVerify(latest?.jws ?? '', createLocalJWKSet(jwks));
    expect(verified.protectedHeader.kid).toBe(kid);
  });
});

describe('revocation', () => {
  it('node revoke from the CLI: the next call is refused, open streams close, the CRL lists the serial', async () => {
    const node = await enrollTestNode(hub, 'org-r');
    const c = nodeClient(hub, node);
    await unaryCall(c, 'ReportStatus', { ready: true, supernodeState: 'running' });
    const w = watch(c);
    await expect.poll(() => hub.running.grpc.streams.has(node.nodeId)).toBe(true);
    const r = await cli(['node', 'revoke', node.nodeId, '--data-dir', hub.paths.dataDir]);
    expect(r.code).toBe(0);
    // the very next call is refused, even before the server has seen the change feed
    const denied = await expectRpcError(unaryCall(c, 'Renew', { csrDer: makeCsr(newKey()) }));
    expect(denied).toEqual({ status: grpc.status.PERMISSION_DENIED, code: ErrorCodes.CLIENT_CERT_REVOKED });
    expect(await w.ended).toEqual({ status: grpc.status.PERMISSION_DENIED, code: ErrorCodes.NODE_REVOKED });
    c.close();

    const der = (await httpsGet(hub, '/crl.der')).body;
    const dir = tempDir();
    try {
      fs.writeFileSync(path.join(dir, 'crl.der'), der);
      fs.writeFileSync(path.join(dir, 'chain.pem'), fs.readFileSync(hub.paths.issuingCert, 'utf8') + fs.readFileSync(hub.paths.rootCert, 'utf8'));
      const text = execFileSync('openssl', ['crl', '-inform', 'DER', '-in', path.join(dir, 'crl.der'), '-CAfile', path.join(dir, 'chain.pem'), '-noout', '-text'], { encoding: 'utf8', stdio: 'pipe' });
      expect(text.replaceAll(':', '').toLowerCase()).toContain(node.serial);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    const pem = (await httpsGet(hub, '/crl.pem')).body.toString();
    expect(pem).toContain('-----BEGIN X509 CRL-----');
    expect(fs.readFileSync(hub.paths.crlPem, 'utf8')).toBe(pem);
  });
});

describe('status', () => {
  it('ReportStatus is stored with the node taken from the certificate, and node list shows it', async () => {
    const node = await enrollTestNode(hub, 'org-s');
    const c = nodeClient(hub, node);
    await unaryCall(c, 'ReportStatus', { ready: true, supernodeState: 'running', vpnState: 'CONNECTED', manifestVersion: '3', facts: { hostname: 'h', gpus: [{ vendor: 'nvidia', model: 'A100', memoryBytes: '85899345920' }] } });
    c.close();
    const list = await cli(['node', 'list', '--data-dir', hub.paths.dataDir, '--org', 'org-s', '--json']);
    const nodes = (JSON.parse(list.stdout) as { nodes: Array<{ id: string; lastSeenAt: string | null; status: { supernodeState: string } }> }).nodes;
    expect(nodes).toHaveLength(1);
    expect(nodes[0]?.id).toBe(node.nodeId);
    expect(nodes[0]?.lastSeenAt).not.toBeNull();
    expect(nodes[0]?.status.supernodeState).toBe('running');
    const table = await cli(['node', 'list', '--data-dir', hub.paths.dataDir, '--org', 'org-s']);
    expect(table.stdout).toContain('CONNECTED');
  });
});
