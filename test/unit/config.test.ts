// hub.json validation: the default is accepted, anything unknown, mistyped or out of range is a
// CONFIG_INVALID naming the option path, and the parsed config is deeply frozen.
import { describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { defaultHubConfig, loadHubConfig, parseHubConfig, type HubConfig } from '../../hub/config.ts';
import { ErrorCodes, isSepalError, type SepalError } from '../../hub/errors.ts';
import { tempDir } from '../helpers/hub.ts';

const base = (): HubConfig => structuredClone(defaultHubConfig('fed-1', ['hub.example.org', '10.0.0.1']));

/** Deep-sets `value` at a dotted path in a copy of the default config. */
function withValue(p: string, value: unknown): Record<string, unknown> {
  const c = base() as unknown as Record<string, unknown>;
  const keys = p.split('.');
  let o = c;
  for (const k of keys.slice(0, -1)) o = o[k] as Record<string, unknown>;
  o[keys[keys.length - 1] as string] = value;
  return c;
}

function reject(input: unknown): SepalError {
  try {
    parseHubConfig(input, 'hub.json');
  } catch (e) {
    if (isSepalError(e)) return e;
    throw e;
  }
  throw new Error('expected parseHubConfig to reject the input');
}

function rejectedAt(input: unknown): { code: string; path: unknown; paths: string[] } {
  const e = reject(input);
  const issues = (e.detail?.['issues'] ?? []) as Array<{ path: string }>;
  return { code: e.code, path: e.detail?.['path'], paths: issues.map((i) => i.path) };
}

function isDeeplyFrozen(o: unknown, seen: string[] = [], where = '(root)'): string[] {
  if (o !== null && typeof o === 'object') {
    if (!Object.isFrozen(o)) seen.push(where);
    for (const [k, v] of Object.entries(o)) isDeeplyFrozen(v, seen, `${where}.${k}`);
  }
  return seen;
}

describe('parseHubConfig', () => {
  it('accepts the default config unchanged', () => {
    const c = parseHubConfig(base(), 'hub.json');
    expect(c).toEqual(base());
  });

  it('accepts a configured idp and the lifetime bounds themselves', () => {
    const c = withValue('idp', { issuer: 'https://idp.example.org/realms/fl', clientId: 'sepal-agent', audience: 'sepal-hub', scopes: ['openid'] });
    (c['certificates'] as Record<string, unknown>)['leafLifetimeSeconds'] = 60;
    (c['manifests'] as Record<string, unknown>)['lifetimeSeconds'] = 365 * 86400;
    (c['crl'] as Record<string, unknown>)['lifetimeSeconds'] = 600;
    const parsed = parseHubConfig(c, 'hub.json');
    expect(parsed.certificates.leafLifetimeSeconds).toBe(60);
    expect(parsed.manifests.lifetimeSeconds).toBe(365 * 86400);
    expect(parsed.crl.lifetimeSeconds).toBe(600);
    expect(parsed.idp?.clientId).toBe('sepal-agent');
  });

  it('returns a deeply frozen object that is not the input', () => {
    const input = withValue('idp', { issuer: 'https://idp.example.org', clientId: 'c', audience: 'a', scopes: ['openid', 'profile'] });
    const c = parseHubConfig(input, 'hub.json');
    expect(isDeeplyFrozen(c)).toEqual([]);
    expect(Object.isFrozen(input)).toBe(false);
    expect(() => { (c.grpc as { listen: string }).listen = '0.0.0.0:1'; }).toThrow(TypeError);
    expect(() => { c.hostnames.push('evil.example.org'); }).toThrow(TypeError);
    expect(() => { (c.idp?.scopes as string[])[0] = 'admin'; }).toThrow(TypeError);
    expect(c.grpc.listen).toBe('0.0.0.0:8443');
  });

  it.each([
    ['top level', 'extra'],
    ['in grpc', 'grpc.extra'],
    ['in https', 'https.publicURL'],
    ['in certificates', 'certificates.leafLifetime'],
    ['in manifests', 'manifests.lifetimeSecond'],
    ['in crl', 'crl.extra'],
    ['in limits', 'limits.maxMessageSize'],
  ])('rejects an unknown key %s, naming its path', (_where, p) => {
    const r = rejectedAt(withValue(p, 1));
    expect(r.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(r.path).toBe(p);
  });

  it('rejects an unknown key inside a configured idp', () => {
    const r = rejectedAt(withValue('idp', { issuer: 'https://idp.example.org', clientId: 'c', audience: 'a', scopes: [], clientSecret: 's' }));
    expect(r).toMatchObject({ code: ErrorCodes.CONFIG_INVALID, path: 'idp.clientSecret' });
  });

  it('names every unknown key, not only the first', () => {
    const c = withValue('grpc.a', 1);
    (c['https'] as Record<string, unknown>)['b'] = 2;
    const r = rejectedAt(c);
    expect(r.paths).toEqual(expect.arrayContaining(['grpc.a', 'https.b']));
  });

  it.each([
    ['version', 2],
    ['version', '1'],
    ['federationId', 'Has Spaces'],
    ['federationId', 7],
    ['hostnames', 'hub.example.org'],
    ['hostnames', []],
    ['grpc', null],
    ['grpc.listen', 8443],
    ['grpc.listen', 'no-port'],
    ['grpc.publicAddress', 'hub.example.org:70000'],
    ['https.publicUrl', 'http://hub.example.org:8444'],
    ['certificates.leafLifetimeSeconds', '86400'],
    ['certificates.leafLifetimeSeconds', 3600.5],
    ['manifests.lifetimeSeconds', null],
    ['limits.maxMessageBytes', '64k'],
    ['limits.rpcTimeoutMs', true],
    ['idp', 'https://idp.example.org'],
    ['idp', { issuer: 'not a url', clientId: 'c', audience: 'a', scopes: [] }],
  ])('rejects a wrong type or format at %s (%j)', (p, v) => {
    const r = rejectedAt(withValue(p, v));
    expect(r.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(String(r.path).startsWith(p)).toBe(true);
  });

  it('rejects a missing option, naming it', () => {
    const c = base() as unknown as Record<string, unknown>;
    delete (c['limits'] as Record<string, unknown>)['rpcTimeoutMs'];
    expect(rejectedAt(c)).toMatchObject({ code: ErrorCodes.CONFIG_INVALID, path: 'limits.rpcTimeoutMs' });
  });

  it.each([
    ['certificates.leafLifetimeSeconds', 59],
    ['certificates.leafLifetimeSeconds', 30 * 86400 + 1],
    ['certificates.leafLifetimeSeconds', 0],
    ['certificates.leafLifetimeSeconds', -86400],
    ['manifests.lifetimeSeconds', 299],
    ['manifests.lifetimeSeconds', 365 * 86400 + 1],
    ['crl.lifetimeSeconds', 599],
    ['crl.lifetimeSeconds', 30 * 86400 + 1],
    ['limits.maxMessageBytes', 4095],
    ['limits.maxMessageBytes', 4 * 1024 * 1024 + 1],
    ['limits.rpcTimeoutMs', 99],
  ])('rejects %s = %d as out of range', (p, v) => {
    expect(rejectedAt(withValue(p, v))).toMatchObject({ code: ErrorCodes.CONFIG_INVALID, path: p });
  });

  it('accepts the largest allowed leaf lifetime (30 days)', () => {
    expect(parseHubConfig(withValue('certificates.leafLifetimeSeconds', 30 * 86400), 'hub.json').certificates.leafLifetimeSeconds).toBe(30 * 86400);
  });

  it('rejects what is not an object at all', () => {
    for (const v of [null, [], 'hub', 42]) expect(rejectedAt(v).code).toBe(ErrorCodes.CONFIG_INVALID);
  });
});

describe('loadHubConfig', () => {
  it('reads a valid file, and refuses a missing file or invalid JSON with CONFIG_INVALID', () => {
    const dir = tempDir();
    try {
      const f = path.join(dir, 'hub.json');
      fs.writeFileSync(f, JSON.stringify(base()));
      expect(loadHubConfig(f).federationId).toBe('fed-1');
      fs.writeFileSync(f, '{"version": 1,');
      expect(() => loadHubConfig(f)).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG_INVALID }) as Error);
      expect(() => loadHubConfig(path.join(dir, 'missing.json'))).toThrow(expect.objectContaining({ code: ErrorCodes.CONFIG_INVALID }) as Error);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
