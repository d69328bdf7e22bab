// Enroll with device-flow access tokens from a real OpenID provider (oidc-provider on loopback),
// and the admin API with bearer tokens. Every refusal: the coded error, an audit entry, nothing
// issued.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import type { EnrollResponse } from '../../proto/api.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { flowerPublicKeyLine } from '../helpers/flower-key.ts';
import { type TestHub, client, expectRpcError, httpsGet, startTestHub, unaryCall } from '../helpers/hub.ts';
import { startTestIdp, type TestIdp } from '../helpers/oidc.ts';

// oidc-provider's resource indicators must be absolute URIs (Keycloak's audience is any string).
const AUDIENCE = 'https://hub.sepal.test';
let idp: TestIdp;
let hub: TestHub;

beforeAll(async () => {
  idp = await startTestIdp({
    clientId: 'sepal-agent',
    audience: AUDIENCE,
    users: [
      { id: 'alice', password: 'pw-a', org: 'org-a', roles: ['sepal-enroll'] },
      { id: 'bob', password: 'pw-b', org: 'org-a', roles: ['offline_access'] },
      { id: 'carol', password: 'pw-c', roles: ['sepal-enroll'] },
      { id: 'dave', password: 'pw-d', org: 'org-a', roles: ['sepal-admin'] },
      { id: 'erin', password: 'pw-e', org: 'org-b', roles: ['sepal-admin', 'sepal-enroll'] },
    ],
  });
  hub = await startTestHub({
    configure: (c) => ({
      ...c,
      idp: {
        issuer: idp.issuer, clientId: 'sepal-agent', audience: AUDIENCE, scopes: ['openid'],
        algorithms: ['ES256', 'RS256'], roleClaim: 'realm_access.roles', orgClaim: 'org',
        enrollRole: 'sepal-enroll', adminRole: 'sepal-admin', clockToleranceSeconds: 5,
      },
      enrollment: { maxPerSubjectPerMinute: 100, maxPerAddressPerMinute: 1000 },
    }),
  });
});
afterAll(async () => {
  await hub?.stop();
  await idp?.close();
});

function req(accessToken: string, over: Record<string, unknown> = {}) {
  return { csrDer: makeCsr(newKey()), flowerPublicKey: flowerPublicKeyLine(), accessToken, name: 'host', ...over };
}

async function state(code: string): Promise<{ nodes: number; denials: number }> {
  const audit = await hub.running.hub.ctx.store.readAudit(0, 100_000);
  return { nodes: (await hub.running.hub.ctx.store.listNodes()).length, denials: audit.filter((e) => e.event === 'security.denied' && e.reason === code).length };
}

async function expectRefused(token: string, status: grpc.status, code: string, over: Record<string, unknown> = {}): Promise<void> {
  const before = await state(code);
  const c = client(hub);
  const r = await expectRpcError(unaryCall(c, 'Enroll', req(token, over)));
  c.close();
  expect(r).toEqual({ status, code });
  const after = await state(code);
  expect(after.nodes).toBe(before.nodes);
  expect(after.denials).toBe(before.denials + 1);
}

async function enroll(token: string): Promise<EnrollResponse> {
  const c = client(hub);
  try {
    return await unaryCall<EnrollResponse>(c, 'Enroll', req(token));
  } finally {
    c.close();
  }
}

describe('Enroll with a device-flow access token', () => {
  it('a genuine token from the device flow enrolls into the organisation of its org claim, once', async () => {
    const { access_token } = await idp.deviceFlowTokens('alice', 'pw-a', { scope: 'openid' });
    const res = await enroll(access_token);
    expect(res.org).toBe('org-a');
    expect(new crypto.X509Certificate(res.credentials.certificateDer).subject).toContain('O=org-a');
    const entry = (await hub.running.hub.ctx.store.readAudit(0, 100_000)).find((e) => e.event === 'node.enrolled' && e.nodeId === res.nodeId);
    expect(entry?.actor).toBe('oidc:alice');
    await expectRefused(access_token, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_REPLAYED);
  });

  it('remembers a used token for as long as the clock tolerance still accepts it after exp', async () => {
    // exp is 1 s away; the hub tolerates 5 s of skew: a replay after exp must still be caught.
    const claims = idp.claimsFor('alice');
    delete claims['exp'];
    delete claims['iat'];
    const t = await idp.mintAccessToken(claims, { expiresInSeconds: 1 });
    await enroll(t);
    await new Promise((r) => setTimeout(r, 2500));
    await expectRefused(t, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_REPLAYED);
  });

  it('refuses a token issued in the future (beyond the tolerance)', async () => {
    const t = await idp.mintAccessToken({ ...idp.claimsFor('alice'), iat: Math.floor(Date.now() / 1000) + 3600 });
    await expectRefused(t, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_INVALID);
  });

  it('refuses a token from another issuer', async () => {
    const t = await idp.mintAccessToken({ ...idp.claimsFor('alice'), iss: 'https://evil.example' });
    await expectRefused(t, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_ISSUER_MISMATCH);
  });

  it('refuses a token for another audience', async () => {
    const t = await idp.mintAccessToken({ ...idp.claimsFor('alice'), aud: 'some-other-api' });
    await expectRefused(t, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_AUDIENCE_MISMATCH);
  });

  it('refuses an expired token', async () => {
    const claims = idp.claimsFor('alice');
    delete claims['iat'];
    delete claims['exp'];
    const t = await idp.mintAccessToken(claims, { expiresInSeconds: -120 });
    await expectRefused(t, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_EXPIRED);
  });

  it('refuses a forged signature, alg none and HMAC key confusion', async () => {
    await expectRefused(await idp.mintAccessToken(idp.claimsFor('alice'), { key: 'foreign' }), grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_INVALID);
    await expectRefused(await idp.mintAccessToken(idp.claimsFor('alice'), { none: true }), grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_INVALID);
    await expectRefused(await idp.mintAccessToken(idp.claimsFor('alice'), { alg: 'HS256' }), grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_INVALID);
  });

  it('refuses a genuine ID token', async () => {
    const idToken = await idp.getIdToken('alice', 'pw-a');
    await expectRefused(idToken, grpc.status.UNAUTHENTICATED, ErrorCodes.TOKEN_NOT_ACCESS_TOKEN);
  });

  it('refuses a user without the enroll role, and one without an organisation', async () => {
    const bob = (await idp.deviceFlowTokens('bob', 'pw-b', { scope: 'openid' })).access_token;
    await expectRefused(bob, grpc.status.PERMISSION_DENIED, ErrorCodes.ROLE_MISSING);
    const carol = (await idp.deviceFlowTokens('carol', 'pw-c', { scope: 'openid' })).access_token;
    await expectRefused(carol, grpc.status.PERMISSION_DENIED, ErrorCodes.ORG_CLAIM_MISSING);
  });

  it('refuses enrolling into another organisation than the user\'s own', async () => {
    const t = (await idp.deviceFlowTokens('alice', 'pw-a', { scope: 'openid' })).access_token;
    await expectRefused(t, grpc.status.PERMISSION_DENIED, ErrorCodes.ORG_MISMATCH, { org: 'org-b' });
    // the refusal did not spend the token
    expect((await enroll(t)).org).toBe('org-a');
  });
});

describe('admin API with bearer tokens', () => {
  it('an org-A admin sees only org-A nodes; an org-B admin cannot see or revoke them; a non-admin gets 403', async () => {
    const alice = (await idp.deviceFlowTokens('alice', 'pw-a', { scope: 'openid' })).access_token;
    const nodeA = (await enroll(alice)).nodeId;
    const dave = (await idp.deviceFlowTokens('dave', 'pw-d', { scope: 'openid' })).access_token;
    const erin = (await idp.deviceFlowTokens('erin', 'pw-e', { scope: 'openid' })).access_token;

    const listA = await httpsGet(hub, '/api/v1/nodes', { authorization: `Bearer ${dave}` });
    expect(listA.status).toBe(200);
    const nodes = (JSON.parse(listA.body.toString()) as { nodes: Array<{ id: string; org: string }> }).nodes;
    expect(nodes.map((n) => n.id)).toContain(nodeA);
    expect(new Set(nodes.map((n) => n.org))).toEqual(new Set(['org-a']));

    const seenByB = await httpsGet(hub, `/api/v1/nodes/${nodeA}`, { authorization: `Bearer ${erin}` });
    expect(seenByB.status).toBe(404);
    expect((JSON.parse(seenByB.body.toString()) as { error: { code: string } }).error.code).toBe(ErrorCodes.NOT_FOUND);

    const https = await import('node:https');
    const status = await new Promise<number>((resolve, reject) => {
      const r = https.request(`${hub.httpsUrl}/api/v1/nodes/${nodeA}/revoke`, { method: 'POST', ca: hub.caPem, headers: { authorization: `Bearer ${erin}` } }, (res) => { res.resume(); resolve(res.statusCode ?? 0); });
      r.on('error', reject);
      r.end();
    });
    expect(status).toBe(404);
    expect((await hub.running.hub.ctx.store.getNode(nodeA))?.state).toBe('active');

    const notAdmin = await httpsGet(hub, '/api/v1/nodes', { authorization: `Bearer ${alice}` });
    expect(notAdmin.status).toBe(403);
    expect((JSON.parse(notAdmin.body.toString()) as { error: { code: string } }).error.code).toBe(ErrorCodes.ROLE_MISSING);
  });
});
