// Enroll with single-use enrollment tokens against a real hub: `token create` from the CLI, the
// Enroll RPC over TLS, and every refusal coded, audited and leaving nothing issued.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import type { EnrollResponse } from '../../proto/api.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { flowerPublicKeyLine } from '../helpers/flower-key.ts';
import { type TestHub, cli, client, expectRpcError, startTestHub, unaryCall } from '../helpers/hub.ts';

let hub: TestHub;
beforeAll(async () => {
  hub = await startTestHub({ configure: (c) => ({ ...c, enrollment: { maxPerSubjectPerMinute: 5, maxPerAddressPerMinute: 1000 } }) });
});
afterAll(async () => {
  await hub.stop();
});

async function createToken(org: string, extra: string[] = []): Promise<{ token: string; id: string }> {
  const r = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', org, '--json', ...extra]);
  expect(r.code).toBe(0);
  return JSON.parse(r.stdout) as { token: string; id: string };
}

function enrollReq(token: string, over: Record<string, unknown> = {}) {
  return { csrDer: makeCsr(newKey()), flowerPublicKey: flowerPublicKeyLine(), enrollmentToken: token, name: 'host-1', facts: { hostname: 'host-1', os: 'Linux', arch: 'x64' }, ...over };
}

async function nodeCount(): Promise<number> {
  return (await hub.running.hub.ctx.store.listNodes()).length;
}

async function denials(code: string): Promise<number> {
  return (await hub.running.hub.ctx.store.readAudit(0, 100_000)).filter((e) => e.event === 'security.denied' && e.reason === code).length;
}

async function expectRefused(req: unknown, status: grpc.status, code: string): Promise<void> {
  const before = { nodes: await nodeCount(), denials: await denials(code) };
  const c = client(hub);
  const r = await expectRpcError(unaryCall(c, 'Enroll', req));
  c.close();
  expect(r).toEqual({ status, code });
  expect(await nodeCount()).toBe(before.nodes);
  expect(await denials(code)).toBe(before.denials + 1);
}

describe('enrollment tokens', () => {
  it('token create prints the token once; Enroll with it issues a certificate for the token\'s organisation; the token is then used up', async () => {
    const { token, id } = await createToken('org-t');
    const c = client(hub);
    const res = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(res.org).toBe('org-t');
    const cert = new crypto.X509Certificate(res.credentials.certificateDer);
    expect(cert.subject).toContain(`CN=${res.nodeId}`);
    expect(cert.subject).toContain('O=org-t');
    const node = await hub.running.hub.ctx.store.getNode(res.nodeId);
    expect(node?.flowerPublicKey?.startsWith('ecdsa-sha2-nistp384 ')).toBe(true);
    expect(node?.name).toBe('host-1');
    const audit = (await hub.running.hub.ctx.store.readAudit(0, 100_000)).find((e) => e.event === 'node.enrolled' && e.nodeId === res.nodeId);
    expect(audit?.actor).toBe(`token:${id}`);
    // the database keeps only a hash of the secret
    const list = await cli(['token', 'list', '--data-dir', hub.paths.dataDir, '--json']);
    expect(list.stdout).not.toContain(token.split('_').at(-1));
    expect((JSON.parse(list.stdout) as { tokens: Array<{ id: string; state: string }> }).tokens.find((t) => t.id === id)?.state).toBe('used');
    await expectRefused(enrollReq(token), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_EXHAUSTED);
  });

  it('a token with --uses 2 enrolls two nodes, then no more', async () => {
    const { token } = await createToken('org-u', ['--uses', '2']);
    const c = client(hub);
    const a = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    const b = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(a.nodeId).not.toBe(b.nodeId);
    await expectRefused(enrollReq(token), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_EXHAUSTED);
  });

  it('a revoked token is refused', async () => {
    const { token, id } = await createToken('org-r');
    const r = await cli(['token', 'revoke', id, '--data-dir', hub.paths.dataDir]);
    expect(r.code).toBe(0);
    await expectRefused(enrollReq(token), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_REVOKED);
  });

  it('an expired token is refused', async () => {
    const { token, id } = await createToken('org-e');
    // Age it: the store decides expiry by its clock; move the token's expiry into the past.
    const { DatabaseSync } = await import('node:sqlite');
    const db = new DatabaseSync(hub.paths.db);
    db.prepare('UPDATE enrollment_tokens SET expires_at = ? WHERE id = ?').run(Date.now() - 1000, id);
    db.close();
    await expectRefused(enrollReq(token), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_EXPIRED);
  });

  it('garbage, an unknown id and a wrong secret are all ENROLLMENT_TOKEN_INVALID', async () => {
    const { token } = await createToken('org-g');
    await expectRefused(enrollReq('not-a-token'), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_INVALID);
    await expectRefused(enrollReq(`sepal_et_0000000000000000_${'A'.repeat(43)}`), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_INVALID);
    const wrongSecret = token.slice(0, token.lastIndexOf('_') + 1) + 'B'.repeat(43);
    await expectRefused(enrollReq(wrongSecret), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_INVALID);
    // the real token still works afterwards: a failed attempt used nothing
    const c = client(hub);
    const ok = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(ok.org).toBe('org-g');
  });

  it('asking for another organisation than the token\'s is ORG_MISMATCH and does not use the token', async () => {
    const { token } = await createToken('org-m');
    await expectRefused(enrollReq(token, { org: 'org-other' }), grpc.status.PERMISSION_DENIED, ErrorCodes.ORG_MISMATCH);
    const c = client(hub);
    const ok = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token, { org: 'org-m' }));
    c.close();
    expect(ok.org).toBe('org-m');
  });

  it('a wrong secret learns nothing about the token\'s organisation, and wrong secrets cannot lock the real token out', async () => {
    const { token } = await createToken('org-w');
    const wrongSecret = token.slice(0, token.lastIndexOf('_') + 1) + 'C'.repeat(43);
    await expectRefused(enrollReq(wrongSecret, { org: 'org-other' }), grpc.status.UNAUTHENTICATED, ErrorCodes.ENROLLMENT_TOKEN_INVALID);
    for (let i = 0; i < 6; i++) {
      const c = client(hub);
      await expectRpcError(unaryCall(c, 'Enroll', enrollReq(wrongSecret)));
      c.close();
    }
    const c = client(hub);
    const ok = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(ok.org).toBe('org-w');
  });

  it('a bad Flower key or a bad CSR is refused and does not use the token', async () => {
    const { token } = await createToken('org-k');
    await expectRefused(enrollReq(token, { flowerPublicKey: 'ssh-rsa AAAA' }), grpc.status.INVALID_ARGUMENT, ErrorCodes.FLOWER_KEY_INVALID);
    await expectRefused(enrollReq(token, { csrDer: makeCsr(newKey(), { corruptSignature: true }) }), grpc.status.INVALID_ARGUMENT, ErrorCodes.CSR_BAD_SIGNATURE);
    await expectRefused(enrollReq(token, { csrDer: makeCsr(newKey(), { askForCa: true }) }), grpc.status.INVALID_ARGUMENT, ErrorCodes.CSR_CA_REQUESTED);
    const c = client(hub);
    const ok = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(ok.org).toBe('org-k');
  });

  it('no credential at all is UNAUTHENTICATED', async () => {
    await expectRefused({ csrDer: makeCsr(newKey()), flowerPublicKey: flowerPublicKeyLine() }, grpc.status.UNAUTHENTICATED, ErrorCodes.UNAUTHENTICATED);
  });

  it('enrollment is rate-limited per token', async () => {
    const { token } = await createToken('org-l', ['--uses', '100']);
    const c = client(hub);
    const codes: Array<string | undefined> = [];
    for (let i = 0; i < 7; i++) {
      try {
        await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
        codes.push('OK');
      } catch (e) {
        codes.push((e as grpc.ServiceError).metadata.get('sepal-error-code')[0] as string | undefined);
      }
    }
    c.close();
    expect(codes.slice(0, 5)).toEqual(['OK', 'OK', 'OK', 'OK', 'OK']);
    expect(codes.slice(5)).toEqual([ErrorCodes.RATE_LIMITED, ErrorCodes.RATE_LIMITED]);
  });
});

describe('first manifest', () => {
  it('a manifest published to an organisation (even before it has nodes) is signed for each node that enrolls into it', async () => {
    const fs = await import('node:fs');
    const path = await import('node:path');
    const file = path.join(hub.dir, 'org-f.json');
    fs.writeFileSync(file, JSON.stringify({
      superlink: { address: 'superlink.example.org:9092' }, supernode: { nodeConfig: { 'partition-id': 1 } },
      privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    }));
    const pub = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--org', 'org-f', '--file', file]);
    expect(pub.code).toBe(0);
    const { token } = await createToken('org-f');
    const c = client(hub);
    const res = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(res.manifest?.version).toBe('1');
    const { jwtVerify, createLocalJWKSet } = await import('jose');
    const jwks = await hub.running.hub.manifests.jwks();
    const { payload } = await jwtVerify(res.manifest?.jws ?? '', createLocalJWKSet(jwks), { audience: res.nodeId });
    expect(payload['org']).toBe('org-f');
    expect((payload['manifest'] as { supernode: { nodeConfig: Record<string, unknown> } }).supernode.nodeConfig['partition-id']).toBe(1);
  });
});

describe('first manifest, too large', () => {
  it('a manifest too large to deliver is refused for an organisation without nodes too, and is not kept for new nodes', async () => {
    const fs = await import('node:fs');
    const path = await import('node:path');
    const file = path.join(hub.dir, 'org-big.json');
    fs.writeFileSync(file, JSON.stringify({
      superlink: { address: 'superlink.example.org:9092' },
      supernode: { nodeConfig: Object.fromEntries(Array.from({ length: 64 }, (_, i) => [`k${i}`, 'x'.repeat(1000)])) },
      privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    }));
    const pub = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--org', 'org-big', '--file', file]);
    expect(pub.code).toBe(1);
    expect(pub.stderr).toContain(`error ${ErrorCodes.MANIFEST_INVALID}`);
    expect(await hub.running.hub.ctx.store.getOrgManifest('org-big')).toBeNull();
    const { token } = await createToken('org-big');
    const c = client(hub);
    const res = await unaryCall<EnrollResponse>(c, 'Enroll', enrollReq(token));
    c.close();
    expect(res.manifest).toBeNull();
  });
});
