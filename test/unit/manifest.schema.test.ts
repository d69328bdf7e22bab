// The shared manifest contract: what decodes, what is refused, and which path is reported.
import { describe, expect, it } from 'vitest';
import {
  ManifestClaimsSchema,
  isCidr,
  isHostPort,
  parseManifestBody,
  parseManifestClaims,
  type ManifestIssue,
} from '../../proto/manifest.ts';

// A self-signed P-256 certificate (openssl req -x509), only parsed, never trusted.
const CA_PEM = `-----BEGIN CERTIFICATE-----
MIIBmzCCAUGgAwIBAgIUYW2UFnHE5xpNJqhjfkvI4hinnREwCgYIKoZIzj0EAwIw
IjEgMB4GA1UEAwwXU2VwYWwgdGVzdCBTdXBlckxpbmsgQ0EwIBcNMjYxMTI4MTQ1
NzA5WhgPMjEyNjExMDQxNDU3MDlaMCIxIDAeBgNVBAMMF1NlcGFsIHRlc3QgU3Vw
ZXJMaW5rIENBMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEeWMmUE9WtVY82HOh
E4m3ZtQ9KF5TodIs1hg6TJ7Pqa3sCcpWBO/ejFUFi3NcCsFqfkrsL3j8M1CQn7Xe
b1hmBaNTMFEwHQYDVR0OBBYEFDYVxpT0QIDwdBc68UudK+t6YmNRMB8GA1UdIwQY
MBaAFDYVxpT0QIDwdBc68UudK+t6YmNRMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZI
zj0EAwIDSAAwRQIgfhbuNCSt345TjMX/kCObpijwZntJAOJa5I64ZJO9sIMCIQDe
kTwLvfCmnYlFO+TSXcsN/zTJ5ax/aRwuveFig34nqQ==
-----END CERTIFICATE-----
`;

const SHA = 'a'.repeat(64);

function fullBody(): Record<string, unknown> {
  return {
    superlink: { address: 'superlink.example.org:9092', caCertPem: CA_PEM },
    supernode: {
      nodeConfig: { 'partition-id': 0, 'num-partitions': 10, lr: 0.01, dataset: 'mnist', 'use.gpu': true },
      clientAppIoAddress: '127.0.0.1:9094',
      maxRetries: 0,
      maxWaitTimeSeconds: 30.5,
      isolation: 'subprocess',
    },
    vpn: {
      remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }, { host: '2001:db8::1', port: 443, proto: 'tcp' }],
      tlsCryptKeyRef: 'vpn/tls-crypt-v2/org-a',
      routes: ['10.8.0.0/24', 'fd00:8::/64'],
      superlinkAddress: '10.8.0.1:9092',
    },
    datasets: [
      { name: 'mnist-train', path: '/srv/data/mnist', sha256: SHA },
      { name: 'ct_scans.v2', path: 'D:\\data\\ct' },
    ],
    privacy: {
      differentialPrivacy: { enabled: true, epsilon: 1.5, delta: 1e-5 },
      secureAggregation: { enabled: true },
    },
    resources: { gpu: { required: true, minMemoryMiB: 16384, count: 2 } },
  };
}

function minimalBody(): Record<string, unknown> {
  return {
    superlink: { address: 'superlink:9092' },
    supernode: { nodeConfig: {} },
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
  };
}

const DELETE = Symbol('delete');

/** Sets (or, with DELETE, removes) the field at a dotted path; the last key is taken whole. */
function setIn(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = obj;
  while (keys.length > 1) node = node[keys.shift() ?? ''] as Record<string, unknown>;
  if (value === DELETE) delete node[keys[0] ?? ''];
  else node[keys[0] ?? ''] = value;
}

/** A fresh full body with the field at `path` set to `value` (or removed). */
function bodyWith(path: string, value: unknown): Record<string, unknown> {
  const b = fullBody();
  setIn(b, path, value);
  return b;
}

function issuesOf(body: unknown): ManifestIssue[] {
  const r = parseManifestBody(body);
  if (r.ok) throw new Error('expected the body to be refused');
  return r.issues;
}

/** The paths reported for a full body with `path` set to `value`. */
function refusedAt(path: string, value: unknown): string[] {
  return paths(issuesOf(bodyWith(path, value)));
}

const paths = (issues: ManifestIssue[]): string[] => issues.map((i) => i.path);

describe('ManifestBodySchema', () => {
  it('accepts a full body unchanged', () => {
    const r = parseManifestBody(fullBody());
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value).toEqual(fullBody());
  });

  it('accepts a minimal body and defaults datasets to []', () => {
    const r = parseManifestBody(minimalBody());
    expect(r).toEqual({ ok: true, value: { ...minimalBody(), datasets: [] } });
  });

  it('reports an unknown field at the top level by its name', () => {
    const issues = issuesOf(bodyWith('extra', 1));
    expect(issues).toEqual([{ path: 'extra', message: 'unknown field' }]);
  });

  it('reports unknown nested fields with their full path', () => {
    const b = fullBody();
    setIn(b, 'supernode.isolaton', 'process');
    setIn(b, 'vpn.remotes.1.weight', 2);
    setIn(b, 'privacy.differentialPrivacy.sigma', 1);
    setIn(b, 'resources.gpu.vendor', 'nvidia');
    const issues = issuesOf(b);
    expect(paths(issues).sort()).toEqual([
      'privacy.differentialPrivacy.sigma',
      'resources.gpu.vendor',
      'supernode.isolaton',
      'vpn.remotes.1.weight',
    ]);
    expect(issues.every((i) => i.message === 'unknown field')).toBe(true);
  });

  it('refuses a __proto__ key in nodeConfig instead of dropping it silently', () => {
    const b = JSON.parse('{"superlink":{"address":"s:1"},"supernode":{"nodeConfig":{"__proto__":{"x":1},"a":1}},"privacy":{"differentialPrivacy":{"enabled":false},"secureAggregation":{"enabled":false}}}') as unknown;
    const r = parseManifestBody(b);
    expect(r.ok).toBe(false);
    if (!r.ok) expect(paths(r.issues)).toEqual(['supernode.nodeConfig.__proto__']);
  });

  it('refuses wrong types with the path of the field', () => {
    expect(refusedAt('supernode.nodeConfig.lr', null)).toEqual(['supernode.nodeConfig.lr']);
    expect(refusedAt('supernode.nodeConfig.lr', { nested: 1 })).toEqual(['supernode.nodeConfig.lr']);
    expect(refusedAt('supernode.maxRetries', 1.5)).toEqual(['supernode.maxRetries']);
    expect(refusedAt('supernode.maxRetries', -1)).toEqual(['supernode.maxRetries']);
    expect(refusedAt('supernode.maxWaitTimeSeconds', 0)).toEqual(['supernode.maxWaitTimeSeconds']);
    expect(refusedAt('supernode.isolation', 'docker')).toEqual(['supernode.isolation']);
    expect(refusedAt('privacy.secureAggregation.enabled', 'yes')).toEqual(['privacy.secureAggregation.enabled']);
    expect(refusedAt('privacy.differentialPrivacy.epsilon', -1)).toEqual(['privacy.differentialPrivacy.epsilon']);
    expect(refusedAt('privacy.differentialPrivacy.delta', 1)).toEqual(['privacy.differentialPrivacy.delta']);
    expect(refusedAt('resources.gpu.count', 0)).toEqual(['resources.gpu.count']);
    expect(refusedAt('vpn.remotes.0.port', 70000)).toEqual(['vpn.remotes.0.port']);
    expect(refusedAt('vpn.remotes.0.proto', 'sctp')).toEqual(['vpn.remotes.0.proto']);
    expect(refusedAt('vpn.remotes', [])).toEqual(['vpn.remotes']);
    expect(refusedAt('vpn.routes', ['10.0.0.0/33'])).toEqual(['vpn.routes.0']);
    expect(refusedAt('vpn.tlsCryptKeyRef', '../../etc/shadow')).toEqual(['vpn.tlsCryptKeyRef']);
    expect(refusedAt('privacy', DELETE)).toEqual(['privacy']);
    expect(parseManifestBody('not an object')).toMatchObject({ ok: false, issues: [{ path: '' }] });
  });

  it('refuses bad host:port addresses', () => {
    for (const bad of ['superlink', 'superlink:0', 'superlink:65536', 'superlink:09092', ':9092', '::1:9092', '[::1]', '[fe80::1%eth0]:9092', '[example.org]:9092', '10.0.0.256:9092', '-bad.example:1', 'a_b.example:1', 'host:92 ', 'http://host:9092']) {
      expect(isHostPort(bad), bad).toBe(false);
      expect(refusedAt('superlink.address', bad), bad).toEqual(['superlink.address']);
    }
    for (const good of ['superlink:9092', 'a.b-c.example.org:1', '192.0.2.1:65535', '[::1]:9092', '[2001:db8::1]:443', 'localhost:9093']) {
      expect(isHostPort(good), good).toBe(true);
    }
    expect(refusedAt('supernode.clientAppIoAddress', 'localhost')).toEqual(['supernode.clientAppIoAddress']);
    expect(refusedAt('vpn.superlinkAddress', '10.8.0.1')).toEqual(['vpn.superlinkAddress']);
    expect(refusedAt('vpn.remotes.0.host', 'vpn.example.org:1194')).toEqual(['vpn.remotes.0.host']);
  });

  it('checks CIDRs', () => {
    for (const good of ['0.0.0.0/0', '10.8.0.0/24', '192.0.2.1/32', '::/0', 'fd00::/8', '2001:db8::/128']) expect(isCidr(good), good).toBe(true);
    for (const bad of ['10.8.0.0', '10.8.0.0/', '10.8.0.0/024', '10.8.0.0/33', '::/129', 'fe80::%eth0/64', 'host/24', '10.8.0.0/24/1']) expect(isCidr(bad), bad).toBe(false);
  });

  it('refuses a bad sha256', () => {
    for (const bad of ['A'.repeat(64), 'a'.repeat(63), 'a'.repeat(65), 'g'.repeat(64), '']) {
      expect(refusedAt('datasets.0.sha256', bad), bad).toEqual(['datasets.0.sha256']);
    }
  });

  it('refuses relative, traversing, UNC and control-character dataset paths', () => {
    for (const bad of ['data/mnist', './mnist', '~/mnist', '/srv/../etc', 'C:data', '\\\\server\\share\\x', 'C:\\data\\..\\x', '/srv/da\nta', '']) {
      expect(refusedAt('datasets.1.path', bad), JSON.stringify(bad)).toEqual(['datasets.1.path']);
    }
  });

  it('refuses duplicate dataset names and bad names', () => {
    expect(refusedAt('datasets.1.name', 'mnist-train')).toEqual(['datasets.1.name']);
    expect(refusedAt('datasets.1.name', 'has space')).toEqual(['datasets.1.name']);
  });

  it('refuses an oversized nodeConfig, bad keys and long values', () => {
    const big = Object.fromEntries(Array.from({ length: 65 }, (_, i) => [`k${i}`, i]));
    const issues = issuesOf(bodyWith('supernode.nodeConfig', big));
    expect(issues).toEqual([{ path: 'supernode.nodeConfig', message: 'at most 64 entries' }]);
    const exactly64 = Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, i]));
    expect(parseManifestBody({ ...minimalBody(), supernode: { nodeConfig: exactly64 } }).ok).toBe(true);

    expect(refusedAt('supernode.nodeConfig.bad key', 1)).toEqual(['supernode.nodeConfig.bad key']);
    expect(refusedAt(`supernode.nodeConfig.${'k'.repeat(65)}`, 1)).toEqual([`supernode.nodeConfig.${'k'.repeat(65)}`]);
    expect(refusedAt('supernode.nodeConfig.s', 'x'.repeat(1025))).toEqual(['supernode.nodeConfig.s']);
    expect(refusedAt('supernode.nodeConfig.s', 'a\nb')).toEqual(['supernode.nodeConfig.s']);
  });

  it('refuses a caCertPem that is not PEM certificates', () => {
    expect(refusedAt('superlink.caCertPem', 'hello')).toEqual(['superlink.caCertPem']);
    expect(refusedAt('superlink.caCertPem', CA_PEM.replace('MIIB', 'AAAA'))).toEqual(['superlink.caCertPem']);
    expect(refusedAt('superlink.caCertPem', CA_PEM.replaceAll('CERTIFICATE', 'PRIVATE KEY'))).toEqual(['superlink.caCertPem']);
    // A bundle of two is fine.
    expect(parseManifestBody({ ...fullBody(), superlink: { address: 's:1', caCertPem: CA_PEM + CA_PEM } }).ok).toBe(true);
  });
});

describe('ManifestClaimsSchema', () => {
  const claims = () => ({
    iss: 'https://hub.example.org:8444',
    sub: 'node-1',
    aud: 'node-1',
    org: 'org-a',
    federation_id: 'fed-1',
    iat: 1_700_000_000,
    nbf: 1_700_000_000,
    exp: 1_700_086_400,
    jti: 'abc',
    version: 1,
    manifest: minimalBody(),
  });

  it('accepts a claim set and applies body defaults', () => {
    const r = parseManifestClaims(claims());
    expect(r.ok).toBe(true);
    if (r.ok) expect(r.value.manifest.datasets).toEqual([]);
  });

  it('refuses unknown claims, version 0, aud != sub and exp <= nbf', () => {
    expect(ManifestClaimsSchema.safeParse({ ...claims(), extra: 1 }).success).toBe(false);
    expect(parseManifestClaims({ ...claims(), version: 0 })).toMatchObject({ ok: false, issues: [{ path: 'version' }] });
    expect(parseManifestClaims({ ...claims(), aud: 'node-2' })).toMatchObject({ ok: false, issues: [{ path: 'aud' }] });
    expect(parseManifestClaims({ ...claims(), exp: 1_700_000_000 })).toMatchObject({ ok: false, issues: [{ path: 'exp' }] });
    expect(parseManifestClaims({ ...claims(), manifest: { ...minimalBody(), x: 1 } })).toMatchObject({ ok: false, issues: [{ path: 'manifest.x' }] });
  });
});
