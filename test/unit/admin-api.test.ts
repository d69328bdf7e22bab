// The admin API's authorisation rules, through Fastify's inject() on a hub opened from a real
// init'ed data dir (real store, CA and signer). Only the bearer-token check is a stub here: an
// AdminAuthenticator that maps fixed tokens to principals of two organisations.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { ErrorCodes } from '../../proto/errors.ts';
import { hubPaths } from '../../hub/datadir.ts';
import { SepalError } from '../../hub/errors.ts';
import { buildHttpServer } from '../../hub/http/server.ts';
import type { AdminAuthenticator, AdminPrincipal } from '../../hub/http/admin.ts';
import { silentLogger } from '../../hub/log.ts';
import { openHub, type OpenHub } from '../../hub/runtime.ts';
import { initDataDir } from '../../hub/service/init.ts';
import { enrollNode } from '../../hub/service/issuance.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { tempDir } from '../helpers/hub.ts';

const MANIFEST = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 0 } },
  datasets: [],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

const PRINCIPALS: Record<string, AdminPrincipal> = {
  'Bearer alice-token': { subject: 'alice', org: 'org-a' },
  'Bearer bob-token': { subject: 'bob', org: 'org-b' },
};
const ALICE = { authorization: 'Bearer alice-token' };
const BOB = { authorization: 'Bearer bob-token' };

const stubAuth: AdminAuthenticator = (authorization) => {
  if (authorization === 'Bearer viewer-token') return Promise.reject(new SepalError(ErrorCodes.PERMISSION_DENIED, 'no admin role'));
  if (authorization === 'Bearer crash-token') return Promise.reject(new Error('authenticator bug'));
  const p = authorization === undefined ? undefined : PRINCIPALS[authorization];
  return p === undefined ? Promise.reject(new SepalError(ErrorCodes.UNAUTHENTICATED, 'bad token')) : Promise.resolve(p);
};

let dir: string;
let hub: OpenHub;
let app: FastifyInstance;

beforeAll(async () => {
  dir = tempDir();
  const paths = hubPaths(path.join(dir, 'hub'));
  await initDataDir(paths, { hostnames: ['localhost'] });
  hub = await openHub(paths, { log: silentLogger() });
  await hub.crl.refresh();
  app = await buildHttpServer({
    ctx: hub.ctx,
    crl: hub.crl,
    manifests: hub.manifests,
    revoke: (nodeId, actor) => hub.revoke(nodeId, actor),
    readiness: () => ({ ready: true, checks: {} }),
    adminAuth: stubAuth,
  });
});
afterAll(async () => {
  await app.close();
  await hub.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function enroll(org: string): Promise<{ id: string; serial: string }> {
  const { node, credentials } = await enrollNode(hub.ctx, { org, name: `${org}-host`, csr: makeCsr(newKey()), facts: null, flowerPublicKey: null, actor: 'test' });
  return { id: node.id, serial: credentials.serial };
}

function body(r: LightMyRequestResponse): Record<string, unknown> {
  return r.json<Record<string, unknown>>();
}

function code(r: LightMyRequestResponse): unknown {
  return (body(r)['error'] as { code?: unknown } | undefined)?.code;
}

async function audit(event: string, reason?: string) {
  return (await hub.ctx.store.readAudit(0, 100_000)).filter((e) => e.event === event && (reason === undefined || e.reason === reason));
}

describe('authentication', () => {
  it('no token or an unknown token: 401 UNAUTHENTICATED with a security.denied audit row', async () => {
    for (const headers of [{}, { authorization: 'Bearer nobody' }]) {
      const before = (await audit('security.denied', ErrorCodes.UNAUTHENTICATED)).length;
      const r = await app.inject({ method: 'GET', url: '/api/v1/nodes', headers });
      expect(r.statusCode).toBe(401);
      expect(code(r)).toBe(ErrorCodes.UNAUTHENTICATED);
      expect((await audit('security.denied', ErrorCodes.UNAUTHENTICATED)).length).toBe(before + 1);
    }
  });

  it('a token without the admin role: 403 PERMISSION_DENIED, audited', async () => {
    const before = (await audit('security.denied', ErrorCodes.PERMISSION_DENIED)).length;
    const r = await app.inject({ method: 'GET', url: '/api/v1/nodes', headers: { authorization: 'Bearer viewer-token' } });
    expect(r.statusCode).toBe(403);
    expect(code(r)).toBe(ErrorCodes.PERMISSION_DENIED);
    expect((await audit('security.denied', ErrorCodes.PERMISSION_DENIED)).length).toBe(before + 1);
  });

  it('an authenticator that fails unexpectedly still answers 401 UNAUTHENTICATED, never 500', async () => {
    const r = await app.inject({ method: 'GET', url: '/api/v1/nodes', headers: { authorization: 'Bearer crash-token' } });
    expect(r.statusCode).toBe(401);
    expect(code(r)).toBe(ErrorCodes.UNAUTHENTICATED);
  });
});

describe('organisation scoping', () => {
  it('an org-A admin lists exactly the org-A nodes', async () => {
    const a1 = await enroll('org-a');
    const a2 = await enroll('org-a');
    const b1 = await enroll('org-b');
    const listA = await app.inject({ method: 'GET', url: '/api/v1/nodes', headers: ALICE });
    expect(listA.statusCode).toBe(200);
    const nodesA = body(listA)['nodes'] as Array<{ id: string; org: string }>;
    const expectedA = (await hub.ctx.store.listNodes({ org: 'org-a' })).map((n) => n.id);
    expect(nodesA.map((n) => n.id).sort()).toEqual(expectedA.sort());
    expect(nodesA.map((n) => n.id)).toEqual(expect.arrayContaining([a1.id, a2.id]));
    expect(nodesA.every((n) => n.org === 'org-a')).toBe(true);
    expect(listA.body).not.toContain(b1.id);
    const nodesB = body(await app.inject({ method: 'GET', url: '/api/v1/nodes', headers: BOB }))['nodes'] as Array<{ id: string }>;
    expect(nodesB.map((n) => n.id)).toContain(b1.id);
    expect(nodesB.map((n) => n.id)).not.toContain(a1.id);
  });

  it('GET of an own node shows it; of an org-B node is 404 NOT_FOUND like a missing node, with a PERMISSION_DENIED audit row', async () => {
    const a = await enroll('org-a');
    const b = await enroll('org-b');
    const own = await app.inject({ method: 'GET', url: `/api/v1/nodes/${a.id}`, headers: ALICE });
    expect(own.statusCode).toBe(200);
    expect(body(own)).toMatchObject({ id: a.id, org: 'org-a', state: 'active', certSerial: a.serial });

    const deniedBefore = await audit('security.denied', ErrorCodes.PERMISSION_DENIED);
    const foreign = await app.inject({ method: 'GET', url: `/api/v1/nodes/${b.id}`, headers: ALICE });
    expect(foreign.statusCode).toBe(404);
    expect(code(foreign)).toBe(ErrorCodes.NOT_FOUND);
    expect(foreign.body).not.toContain('org-b');
    const denied = await audit('security.denied', ErrorCodes.PERMISSION_DENIED);
    expect(denied.length).toBe(deniedBefore.length + 1);
    const row = denied[denied.length - 1];
    expect(row?.actor).toBe('admin:alice');
    expect(row?.org).toBe('org-a');
    expect((JSON.parse(row?.detail ?? '{}') as { nodeId?: string }).nodeId).toBe(b.id);

    // a node that does not exist at all: the same answer, and nothing to audit as a cross-org probe
    const missing = await app.inject({ method: 'GET', url: '/api/v1/nodes/n-0000000000000000', headers: ALICE });
    expect(missing.statusCode).toBe(404);
    expect(code(missing)).toBe(ErrorCodes.NOT_FOUND);
    expect((await audit('security.denied', ErrorCodes.PERMISSION_DENIED)).length).toBe(denied.length);
  });

  it('revoke of an org-B node by an org-A admin is 404 NOT_FOUND and revokes nothing', async () => {
    const b = await enroll('org-b');
    const deniedBefore = (await audit('security.denied', ErrorCodes.PERMISSION_DENIED)).length;
    const r = await app.inject({ method: 'POST', url: `/api/v1/nodes/${b.id}/revoke`, headers: ALICE });
    expect(r.statusCode).toBe(404);
    expect(code(r)).toBe(ErrorCodes.NOT_FOUND);
    expect((await hub.ctx.store.getNode(b.id))?.state).toBe('active');
    expect((await hub.ctx.store.getCert(b.serial))?.revokedAt).toBeNull();
    expect((await hub.ctx.store.listRevokedCerts(Date.now())).map((c) => c.serial)).not.toContain(b.serial);
    expect((await audit('node.revoked')).some((e) => e.nodeId === b.id)).toBe(false);
    expect((await audit('security.denied', ErrorCodes.PERMISSION_DENIED)).length).toBe(deniedBefore + 1);
  });

  it('revoke of an own node revokes it and its certificate; a second revoke revokes nothing more', async () => {
    const a = await enroll('org-a');
    const r = await app.inject({ method: 'POST', url: `/api/v1/nodes/${a.id}/revoke`, headers: ALICE });
    expect(r.statusCode).toBe(200);
    expect(body(r)).toEqual({ revoked: 1 });
    const node = await hub.ctx.store.getNode(a.id);
    expect(node?.state).toBe('revoked');
    expect(node?.revokedAt).not.toBeNull();
    expect((await hub.ctx.store.getCert(a.serial))?.revokedAt).not.toBeNull();
    expect((await hub.ctx.store.listRevokedCerts(Date.now())).map((c) => c.serial)).toContain(a.serial);
    const row = (await audit('node.revoked')).find((e) => e.nodeId === a.id);
    expect(row?.actor).toBe('admin:alice');
    const shown = await app.inject({ method: 'GET', url: `/api/v1/nodes/${a.id}`, headers: ALICE });
    expect(body(shown)['state']).toBe('revoked');

    const again = await app.inject({ method: 'POST', url: `/api/v1/nodes/${a.id}/revoke`, headers: ALICE });
    expect(again.statusCode).toBe(200);
    expect(body(again)).toEqual({ revoked: 0 });
  });
});

describe('manifests', () => {
  it('publishes to every active node of the admin\'s own organisation and to no other', async () => {
    const a = await enroll('org-pub-a');
    const b = await enroll('org-pub-b');
    const carol = { authorization: 'Bearer carol-token' };
    PRINCIPALS[carol.authorization] = { subject: 'carol', org: 'org-pub-a' };
    const r = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: carol, payload: { manifest: MANIFEST } });
    expect(r.statusCode).toBe(200);
    expect(body(r)).toEqual({ published: [{ nodeId: a.id, version: 1 }] });
    const m = await hub.ctx.store.latestManifest(a.id);
    expect(m?.version).toBe(1);
    expect((await audit('manifest.published')).find((e) => e.nodeId === a.id)?.actor).toBe('admin:carol');
    expect(await hub.ctx.store.latestManifest(b.id)).toBeNull();

    const one = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: carol, payload: { nodeId: a.id, manifest: MANIFEST } });
    expect(one.statusCode).toBe(200);
    expect(body(one)).toEqual({ published: [{ nodeId: a.id, version: 2 }] });
  });

  it('publishing to an org-B node by id is 404 NOT_FOUND and signs nothing', async () => {
    const b = await enroll('org-b');
    const r = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: ALICE, payload: { nodeId: b.id, manifest: MANIFEST } });
    expect(r.statusCode).toBe(404);
    expect(code(r)).toBe(ErrorCodes.NOT_FOUND);
    expect(await hub.ctx.store.latestManifest(b.id)).toBeNull();
  });

  it('an unknown field or a wrong type in the manifest is 400 MANIFEST_INVALID and publishes nothing', async () => {
    const a = await enroll('org-a');
    for (const manifest of [{ ...MANIFEST, extra: 1 }, { ...MANIFEST, supernode: { nodeConfig: { 'partition-id': 0 }, flags: ['--insecure'] } }, { ...MANIFEST, superlink: { address: 42 } }]) {
      const r = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: ALICE, payload: { nodeId: a.id, manifest } });
      expect(r.statusCode, JSON.stringify(manifest)).toBe(400);
      expect(code(r)).toBe(ErrorCodes.MANIFEST_INVALID);
    }
    expect(await hub.ctx.store.latestManifest(a.id)).toBeNull();
  });

  it('an unknown field in the request body is 400 INVALID_ARGUMENT, never dropped (a mistyped nodeId must not widen the target to the whole org)', async () => {
    const a1 = await enroll('org-typo');
    const a2 = await enroll('org-typo');
    const dave = { authorization: 'Bearer dave-token' };
    PRINCIPALS[dave.authorization] = { subject: 'dave', org: 'org-typo' };
    for (const payload of [{ nodeID: a1.id, manifest: MANIFEST }, { manifest: MANIFEST, dryRun: true }, { nodeId: a1.id }, {}]) {
      const r = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: dave, payload });
      expect(r.statusCode, JSON.stringify(payload)).toBe(400);
      expect(code(r)).toBe(ErrorCodes.INVALID_ARGUMENT);
    }
    expect(await hub.ctx.store.latestManifest(a1.id)).toBeNull();
    expect(await hub.ctx.store.latestManifest(a2.id)).toBeNull();
  });
});

describe('request validation', () => {
  it.each([
    ['GET', '/api/v1/nodes/xyz'],
    ['GET', '/api/v1/nodes/n-0123456789ABCDEF'],
    ['GET', '/api/v1/nodes/n-0123456789abcdef0'],
    ['GET', `/api/v1/nodes/${encodeURIComponent('n-0123456789abcdef/../x')}`],
    ['POST', '/api/v1/nodes/node-1/revoke'],
  ])('%s %s: a malformed node id is 400 INVALID_ARGUMENT', async (method, url) => {
    const r = await app.inject({ method: method as 'GET' | 'POST', url, headers: ALICE });
    expect(r.statusCode).toBe(400);
    expect(code(r)).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('a malformed nodeId in a manifest request is 400 INVALID_ARGUMENT', async () => {
    const r = await app.inject({ method: 'POST', url: '/api/v1/manifests', headers: ALICE, payload: { nodeId: 'n-1', manifest: MANIFEST } });
    expect(r.statusCode).toBe(400);
    expect(code(r)).toBe(ErrorCodes.INVALID_ARGUMENT);
  });
});
