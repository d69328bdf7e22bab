// The hub's discovery document as the agent decodes it: what the hub serves is accepted (extra
// fields ignored), anything the agent would act on wrongly is DISCOVERY_INVALID, and it is fetched
// trusting only the pinned root.
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../proto/errors.ts';
import { AgentError } from '../../agent/errors.ts';
import { parseHubUrl, type HttpsGetRequest, type PinnedRoot } from '../../agent/enroll/bootstrap.ts';
import { fetchDiscovery, parseDiscovery } from '../../agent/enroll/discovery.ts';

/** What hub/http/server.ts serves. */
function doc(over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer: 'https://hub.example.org:8444',
    federation_id: 'fed-a',
    grpc_address: 'hub.example.org:8443',
    jwks_uri: 'https://hub.example.org:8444/.well-known/jwks.json',
    crl_uri: 'https://hub.example.org:8444/crl.pem',
    crl_der_uri: 'https://hub.example.org:8444/crl.der',
    ca_bundle_uri: 'https://hub.example.org:8444/ca.pem',
    manifest_typ: 'sepal-manifest+jwt',
    idp: { issuer: 'https://idp.example.org/realms/fl', client_id: 'sepal-agent', audience: 'sepal-hub', scopes: ['openid', 'enroll'] },
    ...over,
  };
}

function invalid(input: unknown): string {
  try {
    parseDiscovery(input);
  } catch (e) {
    if (e instanceof AgentError && e.code === ErrorCodes.DISCOVERY_INVALID) return e.message;
    throw e;
  }
  throw new Error('expected DISCOVERY_INVALID');
}

describe('parseDiscovery', () => {
  it('accepts what the hub serves, with or without an IdP, ignoring fields it does not know', () => {
    const d = parseDiscovery(doc());
    expect(d.grpc_address).toBe('hub.example.org:8443');
    expect(d.idp?.scopes).toEqual(['openid', 'enroll']);
    expect(d).not.toHaveProperty('manifest_typ');
    expect(parseDiscovery(doc({ idp: null })).idp).toBeNull();
    expect(parseDiscovery(doc({ grpc_address: '[::1]:8443' })).grpc_address).toBe('[::1]:8443');
    expect(Object.isFrozen(d)).toBe(true);
  });

  it('an http IdP issuer passes here (device-flow allows it on loopback only)', () => {
    expect(parseDiscovery(doc({ idp: { issuer: 'http://127.0.0.1:9000', client_id: 'c', audience: 'a', scopes: [] } })).idp?.issuer).toBe('http://127.0.0.1:9000');
  });

  it('refuses what the agent would act on wrongly, naming the field', () => {
    expect(invalid(doc({ grpc_address: 'localhost:0' }))).toContain('grpc_address');
    expect(invalid(doc({ grpc_address: 'hub.example.org' }))).toContain('grpc_address');
    expect(invalid(doc({ grpc_address: 'a b:1' }))).toContain('grpc_address');
    expect(invalid(doc({ issuer: 'http://hub.example.org:8444' }))).toContain('issuer');
    expect(invalid(doc({ crl_uri: 'ftp://x/crl' }))).toContain('crl_uri');
    expect(invalid(doc({ federation_id: '' }))).toContain('federation_id');
    expect(invalid(doc({ federation_id: 'a\nb' }))).toContain('federation_id');
    expect(invalid(doc({ idp: { issuer: 'https://idp', client_id: 'c', audience: 'a', scopes: ['two words'] } }))).toContain('idp.scopes');
    expect(invalid(doc({ idp: { issuer: 'javascript:alert(1)', client_id: 'c', audience: 'a', scopes: [] } }))).toContain('idp.issuer');
    expect(invalid(doc({ idp: { issuer: 'https://idp', audience: 'a', scopes: [] } }))).toContain('idp.client_id');
    expect(invalid(doc({ idp: undefined }))).toContain('idp');
    const missing = doc();
    delete missing['jwks_uri'];
    expect(invalid(missing)).toContain('jwks_uri');
    expect(invalid([])).toBeTruthy();
    expect(invalid(null)).toBeTruthy();
  });
});

describe('fetchDiscovery', () => {
  const root: PinnedRoot = { der: Buffer.from('30', 'hex'), pem: '-----BEGIN CERTIFICATE-----\nMA==\n-----END CERTIFICATE-----\n', fingerprint: '00'.repeat(32) };
  const hub = parseHubUrl('https://hub.example.org:8444');

  it('asks for /.well-known/sepal-configuration trusting only the pinned root', async () => {
    const calls: HttpsGetRequest[] = [];
    const d = await fetchDiscovery(hub, root, { get: (req) => { calls.push(req); return Promise.resolve({ status: 200, body: Buffer.from(JSON.stringify(doc())) }); } });
    expect(d.federation_id).toBe('fed-a');
    expect(calls).toHaveLength(1);
    expect(calls[0]?.url.href).toBe('https://hub.example.org:8444/.well-known/sepal-configuration');
    expect(calls[0]?.ca).toBe(root.pem);
  });

  it('a non-JSON body or an HTTP error is DISCOVERY_INVALID', async () => {
    for (const [status, body] of [[200, '<html>'], [503, JSON.stringify(doc())]] as const) {
      const p = fetchDiscovery(hub, root, { get: () => Promise.resolve({ status, body: Buffer.from(body) }) });
      await expect(p).rejects.toMatchObject({ code: ErrorCodes.DISCOVERY_INVALID });
    }
  });
});
