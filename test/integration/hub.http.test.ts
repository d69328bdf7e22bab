// The HTTPS side against a real running hub: real TLS 1.3 on loopback, the client trusting only
// the hub's CA; OpenSSL judges the CRL and promtool the metrics exposition.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { execFileSync, spawnSync } from 'node:child_process';
import * as grpc from '@grpc/grpc-js';
import { ErrorCodes } from '../../proto/errors.ts';
import { createCaMaterial, pemToDerList } from '../../hub/ca/bootstrap.ts';
import type { InitResult } from '../../hub/service/init.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import {
  type HttpsResult, type TestHub, client, enrollTestNode, expectRpcError, httpsRequest, metricValue, nodeClient, sha256,
  startTestHub, tempDir, unaryCall, watchManifest,
} from '../helpers/hub.ts';

const PUBLIC_URL = 'https://hub.example.org:9444';
const GRPC_PUBLIC = 'hub.example.org:7443';
const MANIFEST = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 0 } },
  datasets: [],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

let hub: TestHub & { init: InitResult };

beforeAll(async () => {
  hub = await startTestHub({
    configure: (c) => ({ ...c, grpc: { ...c.grpc, publicAddress: GRPC_PUBLIC }, https: { ...c.https, publicUrl: PUBLIC_URL } }),
  });
});
afterAll(async () => {
  await hub.stop();
});

function get(p: string, headers: Record<string, string> = {}): Promise<HttpsResult> {
  return httpsRequest(`${hub.httpsUrl}${p}`, hub.caPem, { headers });
}

function json(r: HttpsResult): Record<string, unknown> {
  expect(String(r.headers['content-type'])).toMatch(/^application\/json/);
  return JSON.parse(r.body.toString()) as Record<string, unknown>;
}

function errorCodeOf(r: HttpsResult): unknown {
  return (json(r)['error'] as { code?: unknown } | undefined)?.code;
}

async function auditRows(event: string, reason?: string) {
  const all = await hub.running.hub.ctx.store.readAudit(0, 100_000);
  return all.filter((e) => e.event === event && (reason === undefined || e.reason === reason));
}

function withFiles<T>(files: Record<string, string | Buffer>, fn: (dir: string) => T): T {
  const dir = tempDir();
  try {
    for (const [name, data] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), data);
    return fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('discovery, CA bundle, CRL', () => {
  it('/.well-known/sepal-configuration names the configured addresses, and its links are served', async () => {
    const r = await get('/.well-known/sepal-configuration');
    expect(r.status).toBe(200);
    const doc = json(r);
    expect(doc).toMatchObject({
      issuer: PUBLIC_URL,
      federation_id: hub.init.config.federationId,
      grpc_address: GRPC_PUBLIC,
      jwks_uri: `${PUBLIC_URL}/.well-known/jwks.json`,
      crl_uri: `${PUBLIC_URL}/crl.pem`,
      crl_der_uri: `${PUBLIC_URL}/crl.der`,
      ca_bundle_uri: `${PUBLIC_URL}/ca.pem`,
      manifest_typ: 'sepal-manifest+jwt',
      idp: null,
    });
    for (const key of ['jwks_uri', 'crl_uri', 'crl_der_uri', 'ca_bundle_uri']) {
      const served = await get(new URL(String(doc[key])).pathname);
      expect(served.status, key).toBe(200);
      expect(served.body.length, key).toBeGreaterThan(0);
    }
  });

  it('/ca.pem holds the root then the issuing CA; the root\'s SHA-256 is the fingerprint init reported', async () => {
    const r = await get('/ca.pem');
    expect(r.status).toBe(200);
    const ders = pemToDerList(r.body.toString());
    expect(ders).toHaveLength(2);
    const [rootDer, issuingDer] = ders as [Buffer, Buffer];
    expect(rootDer.equals(pemToDerList(fs.readFileSync(hub.paths.rootCert, 'utf8'))[0] as Buffer)).toBe(true);
    expect(issuingDer.equals(pemToDerList(fs.readFileSync(hub.paths.issuingCert, 'utf8'))[0] as Buffer)).toBe(true);
    expect(hub.init.rootFingerprint).toMatch(/^[0-9a-f]{64}$/);
    expect(sha256(rootDer)).toBe(hub.init.rootFingerprint);
    const root = new crypto.X509Certificate(rootDer);
    const issuing = new crypto.X509Certificate(issuingDer);
    expect(root.ca && issuing.ca).toBe(true);
    expect(root.verify(root.publicKey)).toBe(true);
    expect(issuing.verify(root.publicKey)).toBe(true);
  });

  it('/crl.der parses with openssl and verifies against the hub CA, and not against another CA', async () => {
    const r = await get('/crl.der');
    expect(r.status).toBe(200);
    expect(String(r.headers['content-type'])).toBe('application/pkix-crl');
    const other = createCaMaterial({ hostnames: ['localhost'], federationId: 'other', now: new Date() });
    withFiles({ 'crl.der': r.body, 'ca.pem': hub.caPem, 'other.pem': other.rootCert + other.issuingCert }, (dir) => {
      const ok = spawnSync('openssl', ['crl', '-inform', 'DER', '-in', path.join(dir, 'crl.der'), '-CAfile', path.join(dir, 'ca.pem'), '-noout', '-issuer'], { encoding: 'utf8' });
      expect(ok.status, ok.stderr).toBe(0);
      expect(ok.stderr).toContain('verify OK');
      const issuingSubject = execFileSync('openssl', ['x509', '-in', hub.paths.issuingCert, '-noout', '-subject'], { encoding: 'utf8' });
      expect(ok.stdout.trim().replace(/^issuer=/, '')).toBe(issuingSubject.trim().replace(/^subject=/, ''));
      const bad = spawnSync('openssl', ['crl', '-inform', 'DER', '-in', path.join(dir, 'crl.der'), '-CAfile', path.join(dir, 'other.pem'), '-noout'], { encoding: 'utf8' });
      expect(bad.status).not.toBe(0);
    });
  });

  it('/crl.pem is the same CRL as /crl.der', async () => {
    const der = (await get('/crl.der')).body;
    const pem = (await get('/crl.pem')).body.toString();
    const text = execFileSync('openssl', ['crl', '-inform', 'PEM', '-outform', 'DER'], { input: pem });
    expect(text.equals(der)).toBe(true);
  });
});

describe('health and metrics', () => {
  it('/healthz and /readyz answer 200 on a running hub', async () => {
    const h = await get('/healthz');
    expect(h.status).toBe(200);
    expect(json(h)).toEqual({ status: 'ok' });
    const r = await get('/readyz');
    expect(r.status).toBe(200);
    expect(json(r)).toEqual({ status: 'ready', checks: { grpc: true, https: true, crl: true } });
  });

  it('/metrics counts an enrollment, a denial, the nodes and an open manifest stream', async () => {
    const scrape = async () => {
      const r = await get('/metrics');
      expect(r.status).toBe(200);
      expect(String(r.headers['content-type'])).toMatch(/^text\/plain/);
      return r.body.toString();
    };
    const before = await scrape();
    for (const name of ['sepal_hub_certificates_issued_total', 'sepal_hub_issuance_duration_seconds', 'sepal_hub_denials_total', 'sepal_hub_nodes', 'sepal_hub_manifest_streams_open']) {
      expect(before).toContain(`# TYPE ${name} `);
    }
    const issued0 = metricValue(before, 'sepal_hub_certificates_issued_total', { kind: 'enroll' }) ?? 0;
    const hist0 = metricValue(before, 'sepal_hub_issuance_duration_seconds_count') ?? 0;
    const denied0 = metricValue(before, 'sepal_hub_denials_total', { reason: ErrorCodes.CLIENT_CERT_MISSING }) ?? 0;
    const streams0 = metricValue(before, 'sepal_hub_manifest_streams_open');
    expect(streams0).toBe(0);

    const node = await enrollTestNode(hub, 'org-metrics');
    const anon = client(hub);
    expect(await expectRpcError(unaryCall(anon, 'Renew', { csrDer: makeCsr(newKey()) }))).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_MISSING });
    anon.close();
    const c = nodeClient(hub, node);
    const w = watchManifest(c);
    await expect.poll(() => hub.running.grpc.streams.has(node.nodeId)).toBe(true);

    const after = await scrape();
    expect(metricValue(after, 'sepal_hub_certificates_issued_total', { kind: 'enroll' })).toBe(issued0 + 1);
    expect(metricValue(after, 'sepal_hub_issuance_duration_seconds_count')).toBe(hist0 + 1);
    expect(metricValue(after, 'sepal_hub_issuance_duration_seconds_bucket', { le: '+Inf' })).toBe(hist0 + 1);
    expect(metricValue(after, 'sepal_hub_denials_total', { reason: ErrorCodes.CLIENT_CERT_MISSING })).toBe(denied0 + 1);
    const nodes = await hub.running.hub.ctx.store.listNodes();
    expect(metricValue(after, 'sepal_hub_nodes', { state: 'active' })).toBe(nodes.filter((n) => n.state === 'active').length);
    expect(metricValue(after, 'sepal_hub_nodes', { state: 'revoked' })).toBe(nodes.filter((n) => n.state === 'revoked').length);
    expect(metricValue(after, 'sepal_hub_manifest_streams_open')).toBe(1);

    w.call.cancel();
    await w.ended;
    c.close();
    await expect.poll(async () => metricValue(await scrape(), 'sepal_hub_manifest_streams_open')).toBe(0);
  });

  it('promtool check metrics accepts a real scrape', async (ctx) => {
    const which = spawnSync('promtool', ['--version'], { encoding: 'utf8' });
    if (which.error !== undefined) {
      ctx.skip('promtool is not on PATH (Debian package "prometheus"); .ci/run does not install it yet');
    }
    // make sure labelled series exist in the scrape, not only their HELP/TYPE lines
    const node = await enrollTestNode(hub, 'org-promtool');
    await hub.running.hub.revoke(node.nodeId, 'test');
    const scrape = (await get('/metrics')).body.toString();
    expect(metricValue(scrape, 'sepal_hub_nodes', { state: 'revoked' })).toBeGreaterThanOrEqual(1);
    const r = spawnSync('promtool', ['check', 'metrics'], { input: scrape, encoding: 'utf8' });
    expect(r.status, `${r.stdout}${r.stderr}`).toBe(0);
  });
});

describe('transport and framing', () => {
  it('sends helmet\'s security headers on documents, errors and binary responses', async () => {
    for (const p of ['/healthz', '/ca.pem', '/crl.der', '/no/such/path', '/api/v1/nodes']) {
      const r = await get(p);
      const h = r.headers;
      expect(String(h['content-security-policy']), p).toContain("default-src 'none'");
      expect(String(h['content-security-policy']), p).toContain("frame-ancestors 'none'");
      expect(h['strict-transport-security'], p).toMatch(/max-age=\d+/);
      expect(h['x-content-type-options'], p).toBe('nosniff');
      expect(h['x-frame-options'], p).toBe('SAMEORIGIN');
      expect(h['referrer-policy'], p).toBe('no-referrer');
      expect(h['cross-origin-resource-policy'], p).toBe('same-origin');
      expect(h['x-powered-by'], p).toBeUndefined();
    }
  });

  it('an unknown path is 404 NOT_FOUND as JSON, for any method', async () => {
    const g = await get('/nope');
    expect(g.status).toBe(404);
    expect(errorCodeOf(g)).toBe(ErrorCodes.NOT_FOUND);
    const p = await httpsRequest(`${hub.httpsUrl}/api/v1/nope`, hub.caPem, { method: 'POST', json: {} });
    expect(p.status).toBe(404);
    expect(errorCodeOf(p)).toBe(ErrorCodes.NOT_FOUND);
  });

  it('refuses a TLS 1.2 client on the HTTPS port (and accepts TLS 1.3 with the same trust)', async () => {
    const connect = (maxVersion: tls.SecureVersion) => new Promise<{ err: Error | null; protocol: string | null }>((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port: hub.running.httpsPort, maxVersion, ca: hub.caPem, servername: 'localhost' });
      s.once('secureConnect', () => { const protocol = s.getProtocol(); s.destroy(); resolve({ err: null, protocol }); });
      s.once('error', (err) => resolve({ err, protocol: null }));
    });
    const old = await connect('TLSv1.2');
    expect(old.err).not.toBeNull();
    const ok = await connect('TLSv1.3');
    expect(ok).toEqual({ err: null, protocol: 'TLSv1.3' });
  });

  it('a client that does not trust the hub CA cannot connect', async () => {
    const other = createCaMaterial({ hostnames: ['localhost'], federationId: 'other', now: new Date() });
    await expect(httpsRequest(`${hub.httpsUrl}/healthz`, other.rootCert)).rejects.toMatchObject({ code: 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY' });
  });
});

describe('admin API without an identity provider', () => {
  it('answers every route with 401 UNAUTHENTICATED, audits each refusal, and changes nothing', async () => {
    const node = await enrollTestNode(hub, 'org-admin');
    const routes: Array<{ method: string; url: string; route: string; json?: unknown }> = [
      { method: 'GET', url: '/api/v1/nodes', route: '/api/v1/nodes' },
      { method: 'GET', url: `/api/v1/nodes/${node.nodeId}`, route: '/api/v1/nodes/:id' },
      { method: 'POST', url: `/api/v1/nodes/${node.nodeId}/revoke`, route: '/api/v1/nodes/:id/revoke' },
      { method: 'POST', url: '/api/v1/manifests', route: '/api/v1/manifests', json: { nodeId: node.nodeId, manifest: MANIFEST } },
      { method: 'POST', url: '/api/v1/manifests', route: '/api/v1/manifests', json: { manifest: MANIFEST } },
    ];
    for (const bearer of [undefined, 'Bearer some-token']) {
      for (const r of routes) {
        const before = (await auditRows('security.denied', ErrorCodes.UNAUTHENTICATED)).length;
        const res = await httpsRequest(`${hub.httpsUrl}${r.url}`, hub.caPem, {
          method: r.method, ...(r.json === undefined ? {} : { json: r.json }), headers: bearer === undefined ? {} : { authorization: bearer },
        });
        expect(res.status, `${r.method} ${r.url}`).toBe(401);
        expect(errorCodeOf(res), `${r.method} ${r.url}`).toBe(ErrorCodes.UNAUTHENTICATED);
        const rows = await auditRows('security.denied', ErrorCodes.UNAUTHENTICATED);
        expect(rows.length, `${r.method} ${r.url}`).toBe(before + 1);
        const last = rows[rows.length - 1];
        expect(last?.actor).toBe('http:127.0.0.1');
        expect((JSON.parse(last?.detail ?? '{}') as { route?: string }).route).toBe(r.route);
        // the audit row never keeps the bearer token
        expect(JSON.stringify(last)).not.toContain('some-token');
      }
    }
    expect((await hub.running.hub.ctx.store.getNode(node.nodeId))?.state).toBe('active');
    expect((await hub.running.hub.ctx.store.getCert(node.serial))?.revokedAt).toBeNull();
    expect(await hub.running.hub.ctx.store.latestManifest(node.nodeId)).toBeNull();
  });
});
