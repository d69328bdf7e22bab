// The behavioural contract every Store implementation must pass (SQLite now, PostgreSQL later).
// Implementation-neutral: only the Store interface and the audit chain verifier are used, and
// list order is never assumed unless the contract states it.
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, isSepalError, type ErrorCode } from '../../hub/errors.ts';
import { GENESIS_HASH, verifyAuditChain } from '../../hub/audit/chain.ts';
import type { AuditEntry, AuditEvent, AuditInput, ManifestBuilder, Store } from '../../hub/store/store.ts';
import { DAY, enrolledAudit, newCert, newNode, renewedAudit, serialFor, T0 } from './store.fixtures.ts';

const revokedAudit = (nodeId: string, org: string): AuditInput => ({ event: 'node.revoked', actor: 'cli', nodeId, org, detail: {} });

async function expectCode(p: Promise<unknown>, code: ErrorCode): Promise<void> {
  const err = await p.then(() => undefined, (e: unknown) => e);
  expect(isSepalError(err, code), `expected SepalError ${code}, got ${String(err)}`).toBe(true);
}

async function allAudit(store: Store): Promise<AuditEntry[]> {
  return store.readAudit(0, 1_000_000);
}

async function enroll(store: Store, id: string, org = 'org-a', now = T0, notAfter = T0 + 30 * DAY) {
  const serial = serialFor(`${id}/enroll`);
  const cert = newCert(serial, id, org, 'enroll', notAfter);
  const node = await store.enrollNode(newNode(id, org), cert, enrolledAudit(id, org, serial), now);
  return { node, cert, serial };
}

async function renew(store: Store, id: string, n: number, org = 'org-a', now = T0 + n * DAY, notAfter = now + 30 * DAY) {
  const serial = serialFor(`${id}/renew/${n}`);
  const cert = newCert(serial, id, org, 'renew', notAfter);
  await store.recordRenewal(cert, renewedAudit(id, org, serial), now);
  return { cert, serial };
}

const manifestBuilder = (kid = 'k1', ttl = 7 * DAY, now = T0): ManifestBuilder =>
  (nodeId, org, version) => ({ kid, jws: `jws:${nodeId}:${org}:${version}`, expiresAt: now + ttl });
const manifestAudit = (nodeId: string, org: string, version: number): AuditInput =>
  ({ event: 'manifest.published', actor: 'admin:alice', nodeId, org, detail: { version } });

export function storeContractSuite(
  name: string,
  makeStore: () => Promise<{ store: Store; cleanup: () => Promise<void> }>,
): void {
  describe(`Store contract: ${name}`, () => {
    let store: Store;
    let cleanup: () => Promise<void>;

    beforeEach(async () => {
      ({ store, cleanup } = await makeStore());
      await store.migrate(); // idempotent: makeStore may already have migrated
    });
    afterEach(async () => {
      await cleanup();
    });

    /** Asserts the audit log grew by exactly these events since `before`, and the chain verifies. */
    async function expectNewAudit(before: number, events: AuditEvent[]): Promise<AuditEntry[]> {
      const all = await allAudit(store);
      const fresh = all.filter((e) => e.seq > before);
      expect(fresh.map((e) => e.event)).toEqual(events);
      const v = verifyAuditChain(all);
      expect(v).toMatchObject({ ok: true, count: all.length });
      expect(await store.auditHead()).toBe(all.at(-1)?.seq ?? 0);
      return fresh;
    }

    describe('nodes and enrollment', () => {
      it('enrolls a node with its certificate and one audit entry', async () => {
        const { node, cert, serial } = await enroll(store, 'n1');
        expect(node).toEqual({
          id: 'n1', org: 'org-a', name: 'name of n1', state: 'active', createdAt: T0, revokedAt: null,
          facts: JSON.stringify({ os: 'linux', id: 'n1' }), flowerPublicKey: 'ecdsa-sha2-nistp256 AAAAn1',
          lastSeenAt: node.lastSeenAt, manifestVersion: 0, certSerial: serial, certNotAfter: cert.notAfter, status: null,
          flower: { state: 'pending', flowerNodeId: null, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: T0, since: T0 },
        });
        expect(await store.getNode('n1')).toEqual(node);

        const stored = await store.getCert(serial);
        expect(stored).not.toBeNull();
        expect(stored!.der).toBeInstanceOf(Buffer);
        expect(Buffer.compare(stored!.der, cert.der)).toBe(0);
        expect({ ...stored!, der: null }).toEqual({
          serial, nodeId: 'n1', org: 'org-a', kind: 'enroll', notBefore: cert.notBefore, notAfter: cert.notAfter,
          fingerprint: cert.fingerprint, der: null, issuedAt: T0, revokedAt: null,
        });

        const [entry] = await expectNewAudit(0, ['node.enrolled']);
        expect(entry).toMatchObject({
          seq: 1, at: T0, actor: 'cli', nodeId: 'n1', org: 'org-a', reason: null, prevHash: GENESIS_HASH,
          detail: `{"name":"name of n1","serial":"${serial}"}`,
        });
      });

      it('returns null for unknown nodes and certificates', async () => {
        expect(await store.getNode('nope')).toBeNull();
        expect(await store.getCert(serialFor('nope'))).toBeNull();
        expect(await store.certAcceptance(serialFor('nope'))).toEqual({ cert: null, node: null });
        expect(await store.latestManifest('nope')).toBeNull();
      });

      it('lists nodes, optionally filtered by org', async () => {
        await enroll(store, 'a1', 'org-a');
        await enroll(store, 'b1', 'org-b', T0 + 1);
        await enroll(store, 'a2', 'org-a', T0 + 2);
        const ids = async (f?: { org?: string }) => (await store.listNodes(f)).map((n) => n.id).sort();
        expect(await ids()).toEqual(['a1', 'a2', 'b1']);
        expect(await ids({ org: 'org-a' })).toEqual(['a1', 'a2']);
        expect(await ids({ org: 'org-b' })).toEqual(['b1']);
        expect(await ids({ org: 'org-c' })).toEqual([]);
        expect((await store.listNodes({ org: 'org-b' }))[0]).toEqual(await store.getNode('b1'));
      });

      it('refuses a duplicate node id with ALREADY_EXISTS and writes nothing', async () => {
        const first = await enroll(store, 'n1');
        const head = await store.auditHead();
        const serial = serialFor('other');
        await expectCode(store.enrollNode(newNode('n1', 'org-b'), newCert(serial, 'n1', 'org-b', 'enroll'),
          enrolledAudit('n1', 'org-b', serial), T0 + 5), ErrorCodes.ALREADY_EXISTS);
        expect(await store.getNode('n1')).toEqual(first.node);
        expect(await store.getCert(serial)).toBeNull();
        await expectNewAudit(head, []);
      });

      it('is atomic: an enrollment whose certificate serial exists leaves no node and no audit entry', async () => {
        const { serial } = await enroll(store, 'n1');
        const head = await store.auditHead();
        await expectCode(store.enrollNode(newNode('n2'), newCert(serial, 'n2', 'org-a', 'enroll'),
          enrolledAudit('n2', 'org-a', serial), T0 + 5), ErrorCodes.ALREADY_EXISTS);
        expect(await store.getNode('n2')).toBeNull();
        expect((await store.getCert(serial))!.nodeId).toBe('n1');
        expect((await store.listNodes()).map((n) => n.id)).toEqual(['n1']);
        await expectNewAudit(head, []);
      });

      it('stores status reports and bumps lastSeenAt without audit entries', async () => {
        await enroll(store, 'n1');
        const head = await store.auditHead();
        await store.recordStatus('n1', '{"flower":"running"}', T0 + 1000);
        let n = await store.getNode('n1');
        expect(n).toMatchObject({ status: '{"flower":"running"}', lastSeenAt: T0 + 1000 });
        await store.touchNode('n1', T0 + 2000);
        n = await store.getNode('n1');
        expect(n).toMatchObject({ status: '{"flower":"running"}', lastSeenAt: T0 + 2000 });
        await expectNewAudit(head, []);
        await expectCode(store.recordStatus('nope', '{}', T0), ErrorCodes.NOT_FOUND);
        await expectCode(store.touchNode('nope', T0), ErrorCodes.NOT_FOUND);
      });
    });

    describe('Flower registration', () => {
      const BIG = '18446744073709551557'; // > 2^53: a JS number would round it
      const registeredAudit = (id: string): AuditInput => ({ event: 'flower.registered', actor: 'hub:registrar', detail: { flowerNodeId: id } });
      const unregisteredAudit = (id: string | null): AuditInput => ({ event: 'flower.unregistered', actor: 'hub:registrar', detail: { flowerNodeId: id } });
      const failedAudit = (code: string): AuditInput => ({ event: 'flower.registration_failed', actor: 'hub:registrar', reason: code, detail: {} });
      const retriedAudit: AuditInput = { event: 'flower.registration_retried', actor: 'cli', detail: {} };
      const unavailable = { code: ErrorCodes.SUPERLINK_UNAVAILABLE, message: 'connect ECONNREFUSED' };
      const rejected = { code: ErrorCodes.SUPERLINK_REJECTED, message: 'public key not valid' };
      const enrollKeyless = async (id: string) => {
        const serial = serialFor(`${id}/enroll`);
        return store.enrollNode({ ...newNode(id), flowerPublicKey: null }, newCert(serial, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', serial), T0);
      };

      it('a node with a Flower key starts pending and due at once; one without a key has no registration', async () => {
        await enroll(store, 'n1');
        const keyless = await enrollKeyless('n2');
        expect(keyless.flower).toBeNull();
        expect(await store.dueFlowerWork(T0 - 1, 10)).toEqual([]);
        expect(await store.dueFlowerWork(T0, 10)).toEqual([
          { nodeId: 'n1', org: 'org-a', state: 'pending', flowerPublicKey: 'ecdsa-sha2-nistp256 AAAAn1', flowerNodeId: null, attempts: 0 },
        ]);
        expect(await store.nextFlowerAttemptAt()).toBe(T0);
      });

      it('refuses a Flower key another node has (even a revoked one) with FLOWER_KEY_INVALID and writes nothing', async () => {
        await enroll(store, 'n1');
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 1);
        const head = await store.auditHead();
        const serial = serialFor('n2/enroll');
        await expectCode(store.enrollNode({ ...newNode('n2'), flowerPublicKey: 'ecdsa-sha2-nistp256 AAAAn1' }, newCert(serial, 'n2', 'org-a', 'enroll'),
          enrolledAudit('n2', 'org-a', serial), T0 + 2), ErrorCodes.FLOWER_KEY_INVALID);
        expect(await store.getNode('n2')).toBeNull();
        expect(await store.getCert(serial)).toBeNull();
        await expectNewAudit(head, []);
      });

      it('records Flower\'s node id exactly, audited, and takes the node out of the queue', async () => {
        await enroll(store, 'n1');
        const head = await store.auditHead();
        const reg = await store.recordFlowerRegistered('n1', BIG, registeredAudit(BIG), T0 + 10);
        expect(reg).toEqual({ state: 'registered', flowerNodeId: BIG, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: null, since: T0 + 10 });
        expect((await store.getNode('n1'))!.flower).toEqual(reg);
        expect((await store.nodeByFlowerId(BIG))?.id).toBe('n1');
        expect(await store.nodeByFlowerId('42')).toBeNull();
        expect(await store.dueFlowerWork(T0 + 1e9, 10)).toEqual([]);
        expect(await store.nextFlowerAttemptAt()).toBeNull();
        const [entry] = await expectNewAudit(head, ['flower.registered']);
        expect(entry).toMatchObject({ nodeId: 'n1', org: 'org-a', actor: 'hub:registrar', detail: `{"flowerNodeId":"${BIG}"}` });
        // not pending any more: a second answer changes nothing
        expect(await store.recordFlowerRegistered('n1', BIG, registeredAudit(BIG), T0 + 11)).toBeNull();
        expect(await store.recordFlowerFailed('n1', rejected, failedAudit(rejected.code), T0 + 11)).toBeNull();
        await expectNewAudit(head, ['flower.registered']);
      });

      it('refuses ids that are not a non-zero uint64 in decimal', async () => {
        await enroll(store, 'n1');
        for (const bad of ['0', '18446744073709551616', '-1', '1e3', '007', '', ' 1']) {
          await expect(store.recordFlowerRegistered('n1', bad, registeredAudit(bad), T0), bad).rejects.toThrow(TypeError);
        }
        await expect(store.recordFlowerRegistered('n1', 7 as unknown as string, registeredAudit('7'), T0)).rejects.toThrow(TypeError);
        expect((await store.getNode('n1'))!.flower?.state).toBe('pending');
        expect(await store.recordFlowerRegistered('n1', '18446744073709551615', registeredAudit('max'), T0)).toMatchObject({ flowerNodeId: '18446744073709551615' });
      });

      it('a retry counts the attempt, keeps the error and the next time, writes no audit entry', async () => {
        await enroll(store, 'n1');
        const head = await store.auditHead();
        const r1 = await store.recordFlowerRetry('n1', 'pending', unavailable, T0 + 5000, T0 + 1);
        expect(r1).toEqual({ state: 'pending', flowerNodeId: null, attempts: 1, lastError: 'SUPERLINK_UNAVAILABLE', lastErrorMessage: 'connect ECONNREFUSED', nextAttemptAt: T0 + 5000, since: T0 });
        expect(await store.dueFlowerWork(T0 + 4999, 10)).toEqual([]);
        expect(await store.dueFlowerWork(T0 + 5000, 10)).toMatchObject([{ nodeId: 'n1', attempts: 1 }]);
        expect(await store.nextFlowerAttemptAt()).toBe(T0 + 5000);
        expect(await store.recordFlowerRetry('n1', 'pending', unavailable, T0 + 9000, T0 + 5000)).toMatchObject({ attempts: 2, nextAttemptAt: T0 + 9000 });
        // a retry for a state the node is not in changes nothing
        expect(await store.recordFlowerRetry('n1', 'unregister-pending', unavailable, T0 + 1, T0 + 5000)).toBeNull();
        expect(await store.recordFlowerRetry('ghost', 'pending', unavailable, T0 + 1, T0 + 5000)).toBeNull();
        await expectNewAudit(head, []);
        // success clears the error and the count
        expect(await store.recordFlowerRegistered('n1', '5', registeredAudit('5'), T0 + 9000)).toMatchObject({ state: 'registered', attempts: 0, lastError: null, lastErrorMessage: null });
      });

      it('a refused key is failed with its code, audited; an operator retry makes it pending again', async () => {
        await enroll(store, 'n1');
        await enrollKeyless('n2');
        const head = await store.auditHead();
        const failed = await store.recordFlowerFailed('n1', rejected, failedAudit(rejected.code), T0 + 10);
        expect(failed).toEqual({ state: 'failed', flowerNodeId: null, attempts: 0, lastError: 'SUPERLINK_REJECTED', lastErrorMessage: 'public key not valid', nextAttemptAt: null, since: T0 + 10 });
        expect(await store.dueFlowerWork(T0 + 1e9, 10)).toEqual([]);
        const [entry] = await expectNewAudit(head, ['flower.registration_failed']);
        expect(entry).toMatchObject({ nodeId: 'n1', org: 'org-a', reason: 'SUPERLINK_REJECTED' });

        const again = await store.retryFlowerRegistration('n1', retriedAudit, T0 + 20);
        expect(again).toEqual({ state: 'pending', flowerNodeId: null, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: T0 + 20, since: T0 + 20 });
        expect(await store.dueFlowerWork(T0 + 20, 10)).toMatchObject([{ nodeId: 'n1', state: 'pending' }]);
        await expectNewAudit(head, ['flower.registration_failed', 'flower.registration_retried']);

        const head2 = await store.auditHead();
        await expectCode(store.retryFlowerRegistration('n1', retriedAudit, T0 + 21), ErrorCodes.INVALID_ARGUMENT); // pending, not failed
        await expectCode(store.retryFlowerRegistration('n2', retriedAudit, T0 + 21), ErrorCodes.INVALID_ARGUMENT); // no Flower key
        await expectCode(store.retryFlowerRegistration('ghost', retriedAudit, T0 + 21), ErrorCodes.NOT_FOUND);
        await store.recordFlowerFailed('n1', rejected, failedAudit(rejected.code), T0 + 30);
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 31);
        await expectCode(store.retryFlowerRegistration('n1', retriedAudit, T0 + 32), ErrorCodes.INVALID_ARGUMENT); // revoked
        await expectNewAudit(head2, ['flower.registration_failed', 'node.revoked']);
        // revoking a failed registration leaves it failed: nothing is on the SuperLink
        expect((await store.getNode('n1'))!.flower?.state).toBe('failed');
      });

      it('revocation marks a registered key unregister-pending in the same transaction; unregistering is audited', async () => {
        await enroll(store, 'n1');
        await enrollKeyless('n2');
        await store.recordFlowerRegistered('n1', BIG, registeredAudit(BIG), T0 + 1);
        const head = await store.auditHead();
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 100);
        await store.revokeNode('n2', revokedAudit('n2', 'org-a'), T0 + 100);
        await expectNewAudit(head, ['node.revoked', 'node.revoked']);
        expect((await store.getNode('n1'))!.flower).toEqual({ state: 'unregister-pending', flowerNodeId: BIG, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: T0 + 100, since: T0 + 100 });
        expect((await store.getNode('n2'))!.flower).toBeNull();
        expect(await store.dueFlowerWork(T0 + 100, 10)).toEqual([
          { nodeId: 'n1', org: 'org-a', state: 'unregister-pending', flowerPublicKey: 'ecdsa-sha2-nistp256 AAAAn1', flowerNodeId: BIG, attempts: 0 },
        ]);
        expect((await store.nodeByFlowerId(BIG))?.id).toBe('n1');
        // a second revocation changes nothing
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 200);
        expect((await store.getNode('n1'))!.flower?.since).toBe(T0 + 100);

        expect(await store.recordFlowerRetry('n1', 'unregister-pending', unavailable, T0 + 300, T0 + 101)).toMatchObject({ attempts: 1, nextAttemptAt: T0 + 300 });
        const head2 = await store.auditHead();
        const done = await store.recordFlowerUnregistered('n1', null, unregisteredAudit(BIG), T0 + 300);
        expect(done).toEqual({ state: 'unregistered', flowerNodeId: BIG, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: null, since: T0 + 300 });
        expect(await store.dueFlowerWork(T0 + 1e9, 10)).toEqual([]);
        expect(await store.nodeByFlowerId(BIG)).toBeNull();
        expect(await store.recordFlowerUnregistered('n1', null, unregisteredAudit(BIG), T0 + 301)).toBeNull();
        const [entry] = await expectNewAudit(head2, ['flower.unregistered']);
        expect(entry).toMatchObject({ nodeId: 'n1', org: 'org-a', detail: `{"flowerNodeId":"${BIG}"}` });
      });

      it('a node revoked while pending is unregister-pending without an id; the id found later is recorded', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2');
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 5);
        await store.revokeNode('n2', revokedAudit('n2', 'org-a'), T0 + 5);
        expect((await store.getNode('n1'))!.flower).toMatchObject({ state: 'unregister-pending', flowerNodeId: null, nextAttemptAt: T0 + 5 });
        expect(await store.recordFlowerUnregistered('n1', '77', unregisteredAudit('77'), T0 + 6)).toMatchObject({ state: 'unregistered', flowerNodeId: '77' });
        expect(await store.recordFlowerUnregistered('n2', null, unregisteredAudit(null), T0 + 6)).toMatchObject({ state: 'unregistered', flowerNodeId: null });
      });

      it('a registration answered after the node was revoked keeps the id and stays unregister-pending, due at once', async () => {
        await enroll(store, 'n1');
        await store.recordFlowerRetry('n1', 'pending', unavailable, T0 + 50, T0 + 1);
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 10);
        const head = await store.auditHead();
        const reg = await store.recordFlowerRegistered('n1', BIG, registeredAudit(BIG), T0 + 20);
        expect(reg).toEqual({ state: 'unregister-pending', flowerNodeId: BIG, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: T0 + 20, since: T0 + 20 });
        await expectNewAudit(head, ['flower.registered']);
        expect(await store.dueFlowerWork(T0 + 20, 10)).toMatchObject([{ nodeId: 'n1', state: 'unregister-pending', flowerNodeId: BIG }]);
        // the failure of a call that was in flight for the old state changes nothing now
        expect(await store.recordFlowerFailed('n1', rejected, failedAudit(rejected.code), T0 + 21)).toBeNull();
        expect(await store.recordFlowerRetry('n1', 'pending', unavailable, T0 + 99, T0 + 21)).toBeNull();
        await expectNewAudit(head, ['flower.registered']);
      });

      it('one Flower node id belongs to one live node (ALREADY_EXISTS, nothing written)', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2');
        await store.recordFlowerRegistered('n1', BIG, registeredAudit(BIG), T0 + 1);
        const head = await store.auditHead();
        await expectCode(store.recordFlowerRegistered('n2', BIG, registeredAudit(BIG), T0 + 2), ErrorCodes.ALREADY_EXISTS);
        expect((await store.getNode('n2'))!.flower?.state).toBe('pending');
        await expectNewAudit(head, []);
      });

      it('lists due work earliest first, at most limit', async () => {
        for (const [i, id] of ['a', 'b', 'c'].entries()) await enroll(store, id, 'org-a', T0 + 10 - i);
        expect((await store.dueFlowerWork(T0 + 10, 10)).map((w) => w.nodeId)).toEqual(['c', 'b', 'a']);
        expect((await store.dueFlowerWork(T0 + 10, 2)).map((w) => w.nodeId)).toEqual(['c', 'b']);
        expect((await store.dueFlowerWork(T0 + 9, 10)).map((w) => w.nodeId)).toEqual(['c', 'b']);
      });
    });

    describe('renewal and certificate acceptance', () => {
      it('records a renewal: new cert, node points at it, one audit entry', async () => {
        await enroll(store, 'n1');
        const head = await store.auditHead();
        const { cert, serial } = await renew(store, 'n1', 1);
        const node = await store.getNode('n1');
        expect(node).toMatchObject({ certSerial: serial, certNotAfter: cert.notAfter, state: 'active' });
        expect(await store.getCert(serial)).toMatchObject({ kind: 'renew', nodeId: 'n1', org: 'org-a', issuedAt: T0 + DAY, revokedAt: null });
        const [entry] = await expectNewAudit(head, ['cert.renewed']);
        expect(entry).toMatchObject({ nodeId: 'n1', org: 'org-a', actor: 'node:n1', at: T0 + DAY, detail: `{"serial":"${serial}"}` });
      });

      it('refuses renewal for a revoked node (NODE_REVOKED) and an unknown one (NOT_FOUND), writing nothing', async () => {
        await enroll(store, 'n1');
        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 10);
        const head = await store.auditHead();
        await expectCode(renew(store, 'n1', 1), ErrorCodes.NODE_REVOKED);
        await expectCode(renew(store, 'ghost', 1), ErrorCodes.NOT_FOUND);
        expect(await store.getCert(serialFor('n1/renew/1'))).toBeNull();
        expect(await store.getCert(serialFor('ghost/renew/1'))).toBeNull();
        await expectNewAudit(head, []);
      });

      it('refuses a renewal that reuses a serial (ALREADY_EXISTS) and leaves the node unchanged', async () => {
        const { serial, node } = await enroll(store, 'n1');
        const head = await store.auditHead();
        const dup = newCert(serial, 'n1', 'org-a', 'renew', T0 + 60 * DAY);
        await expectCode(store.recordRenewal(dup, renewedAudit('n1', 'org-a', serial), T0 + DAY), ErrorCodes.ALREADY_EXISTS);
        expect(await store.getNode('n1')).toEqual(node);
        expect((await store.getCert(serial))!.kind).toBe('enroll');
        await expectNewAudit(head, []);
      });


      it('concurrent renewals: each is all or nothing, a refused or failing one does not sink the others', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2');
        await enroll(store, 'n3');
        await store.revokeNode('n2', revokedAudit('n2', 'org-a'), T0 + 1);
        const head = await store.auditHead();
        const dupSerial = serialFor('n3/enroll');
        const results = await Promise.allSettled([
          renew(store, 'n1', 1),
          renew(store, 'n2', 1),
          store.recordRenewal(newCert(dupSerial, 'n3', 'org-a', 'renew'), renewedAudit('n3', 'org-a', dupSerial), T0 + DAY),
          renew(store, 'n1', 2),
          renew(store, 'n3', 3),
        ]);
        expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'rejected', 'fulfilled', 'fulfilled']);
        expect(isSepalError((results[1] as PromiseRejectedResult).reason, ErrorCodes.NODE_REVOKED)).toBe(true);
        expect(isSepalError((results[2] as PromiseRejectedResult).reason, ErrorCodes.ALREADY_EXISTS)).toBe(true);
        expect((await store.getNode('n1'))!.certSerial).toBe(serialFor('n1/renew/2'));
        expect((await store.getNode('n2'))!.certSerial).toBe(serialFor('n2/enroll'));
        expect((await store.getNode('n3'))!.certSerial).toBe(serialFor('n3/renew/3'));
        await expectNewAudit(head, ['cert.renewed', 'cert.renewed', 'cert.renewed']);
        expect(verifyAuditChain(await allAudit(store)).ok).toBe(true);
      });
      it('certAcceptance returns the certificate and its node in one read', async () => {
        await enroll(store, 'n1');
        const { cert, serial } = await renew(store, 'n1', 1);
        const acc = await store.certAcceptance(serial);
        expect(acc.cert).toEqual(await store.getCert(serial));
        expect(Buffer.compare(acc.cert!.der, cert.der)).toBe(0);
        expect(acc.node).toEqual(await store.getNode('n1'));

        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 5 * DAY);
        const after = await store.certAcceptance(serial);
        expect(after.cert!.revokedAt).toBe(T0 + 5 * DAY);
        expect(after.node).toMatchObject({ state: 'revoked', revokedAt: T0 + 5 * DAY });
      });
    });

    describe('revocation', () => {
      it('revokes the node and all its certificates; idempotent; NOT_FOUND for unknown nodes', async () => {
        const a = await enroll(store, 'n1');
        const r1 = await renew(store, 'n1', 1);
        const r2 = await renew(store, 'n1', 2);
        const other = await enroll(store, 'n2');
        const head = await store.auditHead();

        const revoked = await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 9 * DAY);
        expect([...revoked].sort()).toEqual([a.serial, r1.serial, r2.serial].sort());
        expect(await store.getNode('n1')).toMatchObject({ state: 'revoked', revokedAt: T0 + 9 * DAY });
        for (const s of revoked) expect((await store.getCert(s))!.revokedAt).toBe(T0 + 9 * DAY);
        expect(await store.getNode('n2')).toMatchObject({ state: 'active', revokedAt: null });
        expect((await store.getCert(other.serial))!.revokedAt).toBeNull();
        const [entry] = await expectNewAudit(head, ['node.revoked']);
        expect(entry).toMatchObject({ nodeId: 'n1', org: 'org-a', at: T0 + 9 * DAY });

        const head2 = await store.auditHead();
        expect(await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + 10 * DAY)).toEqual([]);
        expect(await store.getNode('n1')).toMatchObject({ revokedAt: T0 + 9 * DAY });
        await expectNewAudit(head2, []);

        await expectCode(store.revokeNode('ghost', revokedAudit('ghost', 'org-a'), T0), ErrorCodes.NOT_FOUND);
        await expectNewAudit(head2, []);
      });

      it('listRevokedCerts lists revoked certificates that have not expired', async () => {
        // n1: enroll cert expires at T0+2d, renewal at T0+40d; n2 stays active.
        const a = await enroll(store, 'n1', 'org-a', T0, T0 + 2 * DAY);
        const r = await renew(store, 'n1', 1, 'org-a', T0 + DAY, T0 + 40 * DAY);
        await enroll(store, 'n2', 'org-a', T0, T0 + 40 * DAY);
        expect(await store.listRevokedCerts(T0)).toEqual([]);

        await store.revokeNode('n1', revokedAudit('n1', 'org-a'), T0 + DAY + 1);
        const sorted = async (now: number) => (await store.listRevokedCerts(now)).sort((x, y) => x.serial.localeCompare(y.serial));
        expect(await sorted(T0 + DAY + 1)).toEqual([
          { serial: a.serial, revokedAt: T0 + DAY + 1, notAfter: T0 + 2 * DAY },
          { serial: r.serial, revokedAt: T0 + DAY + 1, notAfter: T0 + 40 * DAY },
        ].sort((x, y) => x.serial.localeCompare(y.serial)));
        // once the enrollment cert has expired it drops off the list
        expect(await store.listRevokedCerts(T0 + 3 * DAY)).toEqual([{ serial: r.serial, revokedAt: T0 + DAY + 1, notAfter: T0 + 40 * DAY }]);
        expect(await store.listRevokedCerts(T0 + 41 * DAY)).toEqual([]);
      });
    });

    describe('enrollment credentials', () => {
      const tokenAudit = (org: string): AuditInput => ({ event: 'token.created', actor: 'cli', org, detail: {} });
      const newToken = (id: string, org = 'org-a', uses = 1, expiresAt = T0 + DAY) =>
        ({ id, secretHash: serialFor(`secret/${id}`), org, expiresAt, uses, createdBy: 'cli' });

      it('creates, lists, reads and revokes enrollment tokens, with audit entries', async () => {
        const head = await store.auditHead();
        const t = await store.createEnrollmentToken(newToken('t1'), tokenAudit('org-a'), T0);
        await store.createEnrollmentToken(newToken('t2', 'org-b'), tokenAudit('org-b'), T0 + 1);
        expect(t).toMatchObject({ id: 't1', org: 'org-a', usesLeft: 1, usesTotal: 1, revokedAt: null, expiresAt: T0 + DAY });
        expect((await store.listEnrollmentTokens({ org: 'org-b' })).map((x) => x.id)).toEqual(['t2']);
        expect(await store.getEnrollmentToken('nope')).toBeNull();
        expect(await store.revokeEnrollmentToken('t1', { event: 'token.revoked', actor: 'cli', detail: {} }, T0 + 2)).toBe(true);
        expect(await store.revokeEnrollmentToken('t1', { event: 'token.revoked', actor: 'cli', detail: {} }, T0 + 3)).toBe(false);
        await expectCode(store.revokeEnrollmentToken('nope', { event: 'token.revoked', actor: 'cli', detail: {} }, T0), ErrorCodes.NOT_FOUND);
        await expectNewAudit(head, ['token.created', 'token.created', 'token.revoked']);
      });

      it('enrollNode consumes a token use in the same transaction; every refusal writes nothing', async () => {
        await store.createEnrollmentToken(newToken('t1', 'org-a', 1), tokenAudit('org-a'), T0);
        await store.createEnrollmentToken(newToken('t2', 'org-a', 1, T0 + 10), tokenAudit('org-a'), T0);
        await store.createEnrollmentToken(newToken('t3', 'org-b', 1), tokenAudit('org-b'), T0);
        const claim = (id: string, secret = `secret/${id}`) => ({ kind: 'token' as const, id, secretHash: serialFor(secret) });
        const attempt = (nodeId: string, c: ReturnType<typeof claim>, now = T0 + 100) => {
          const serial = serialFor(`${nodeId}/enroll`);
          return store.enrollNode(newNode(nodeId), newCert(serial, nodeId, 'org-a', 'enroll'), enrolledAudit(nodeId, 'org-a', serial), now, c);
        };
        const head = await store.auditHead();
        await expectCode(attempt('x1', claim('t1', 'wrong')), ErrorCodes.ENROLLMENT_TOKEN_INVALID);
        await expectCode(attempt('x2', claim('ghost')), ErrorCodes.ENROLLMENT_TOKEN_INVALID);
        await expectCode(attempt('x3', claim('t2')), ErrorCodes.ENROLLMENT_TOKEN_EXPIRED);
        await expectCode(attempt('x4', claim('t3')), ErrorCodes.ORG_MISMATCH);
        await expectNewAudit(head, []);
        expect(await store.listNodes()).toEqual([]);
        await attempt('n1', claim('t1'));
        expect((await store.getEnrollmentToken('t1'))!.usesLeft).toBe(0);
        await expectCode(attempt('n2', claim('t1')), ErrorCodes.ENROLLMENT_TOKEN_EXHAUSTED);
        await store.revokeEnrollmentToken('t3', { event: 'token.revoked', actor: 'cli', detail: {} }, T0);
        expect((await store.listNodes()).map((n) => n.id)).toEqual(['n1']);
      });

      it('an OIDC token id (issuer, jti) enrolls once; a replay writes nothing', async () => {
        const claim = { kind: 'oidc' as const, issuer: 'https://idp', jti: 'j1', expiresAt: T0 + DAY };
        const attempt = (nodeId: string) => {
          const serial = serialFor(`${nodeId}/enroll`);
          return store.enrollNode(newNode(nodeId), newCert(serial, nodeId, 'org-a', 'enroll'), enrolledAudit(nodeId, 'org-a', serial), T0, claim);
        };
        await attempt('n1');
        const head = await store.auditHead();
        await expectCode(attempt('n2'), ErrorCodes.TOKEN_REPLAYED);
        await expectNewAudit(head, []);
        expect(await store.getNode('n2')).toBeNull();
        // the same jti from another issuer is another token
        const serial = serialFor('n3/enroll');
        await store.enrollNode(newNode('n3'), newCert(serial, 'n3', 'org-a', 'enroll'), enrolledAudit('n3', 'org-a', serial), T0, { ...claim, issuer: 'https://other' });
        expect(await store.getNode('n3')).not.toBeNull();
      });
    });

    describe('manifests', () => {
      it('allocates strictly increasing versions per node and skips revoked nodes', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2', 'org-b');
        await enroll(store, 'n3');
        await store.revokeNode('n3', revokedAudit('n3', 'org-a'), T0 + 1);
        const head = await store.auditHead();

        const calls: string[] = [];
        const build: ManifestBuilder = (nodeId, org, version) => {
          calls.push(`${nodeId}/${org}/${version}`);
          return manifestBuilder()(nodeId, org, version);
        };
        const first = await store.publishManifests(['n1', 'n2', 'n3'], build, manifestAudit, T0 + 100);
        expect(calls).toEqual(['n1/org-a/1', 'n2/org-b/1']);
        expect(first).toEqual([
          { nodeId: 'n1', version: 1, kid: 'k1', jws: 'jws:n1:org-a:1', issuedAt: T0 + 100, expiresAt: T0 + 7 * DAY },
          { nodeId: 'n2', version: 1, kid: 'k1', jws: 'jws:n2:org-b:1', issuedAt: T0 + 100, expiresAt: T0 + 7 * DAY },
        ]);
        const second = await store.publishManifests(['n1'], manifestBuilder(), manifestAudit, T0 + 200);
        const third = await store.publishManifests(['n1', 'n2'], manifestBuilder(), manifestAudit, T0 + 300);
        expect(second.map((m) => m.version)).toEqual([2]);
        expect(third.map((m) => `${m.nodeId}@${m.version}`)).toEqual(['n1@3', 'n2@2']);

        expect(await store.latestManifest('n1')).toEqual(third[0]);
        expect(await store.latestManifest('n2')).toEqual(third[1]);
        expect(await store.latestManifest('n3')).toBeNull();
        expect(await store.getNode('n1')).toMatchObject({ manifestVersion: 3 });
        expect(await store.getNode('n2')).toMatchObject({ manifestVersion: 2 });
        expect(await store.getNode('n3')).toMatchObject({ manifestVersion: 0 });

        const fresh = await expectNewAudit(head, Array<AuditEvent>(5).fill('manifest.published'));
        expect(fresh.map((e) => `${e.nodeId}/${e.org}/${e.detail}`)).toEqual([
          'n1/org-a/{"version":1}', 'n2/org-b/{"version":1}', 'n1/org-a/{"version":2}', 'n1/org-a/{"version":3}', 'n2/org-b/{"version":2}',
        ]);
      });

      it('is all-or-nothing: a build failure for the second node stores nothing for the first', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2');
        await store.publishManifests(['n1'], manifestBuilder(), manifestAudit, T0 + 1);
        const head = await store.auditHead();
        const before = await store.latestManifest('n1');

        const failing: ManifestBuilder = (nodeId, org, version) => {
          if (nodeId === 'n2') throw new Error('signer exploded');
          return manifestBuilder('k2')(nodeId, org, version);
        };
        await expect(store.publishManifests(['n1', 'n2'], failing, manifestAudit, T0 + 2)).rejects.toThrow('signer exploded');
        expect(await store.latestManifest('n1')).toEqual(before);
        expect(await store.latestManifest('n2')).toBeNull();
        expect(await store.getNode('n1')).toMatchObject({ manifestVersion: 1 });
        expect(await store.lastManifestExpiryForKey('k2')).toBeNull();
        await expectNewAudit(head, []);

        // the version is not burnt: the next publish for n1 gets 2
        const next = await store.publishManifests(['n1', 'n2'], manifestBuilder(), manifestAudit, T0 + 3);
        expect(next.map((m) => `${m.nodeId}@${m.version}`)).toEqual(['n1@2', 'n2@1']);
      });

      it('fails with NOT_FOUND for an unknown node and stores nothing', async () => {
        await enroll(store, 'n1');
        const head = await store.auditHead();
        await expectCode(store.publishManifests(['n1', 'ghost'], manifestBuilder(), manifestAudit, T0 + 1), ErrorCodes.NOT_FOUND);
        expect(await store.latestManifest('n1')).toBeNull();
        await expectNewAudit(head, []);
      });

      it('remembers the body last published to an organisation, per organisation', async () => {
        expect(await store.getOrgManifest('org-a')).toBeNull();
        await store.setOrgManifest('org-a', '{"v":1}', T0);
        await store.setOrgManifest('org-b', '{"v":9}', T0);
        await store.setOrgManifest('org-a', '{"v":2}', T0 + 1);
        expect(await store.getOrgManifest('org-a')).toBe('{"v":2}');
        expect(await store.getOrgManifest('org-b')).toBe('{"v":9}');
      });

      it('lastManifestExpiryForKey is the latest expiry signed with that key', async () => {
        await enroll(store, 'n1');
        await enroll(store, 'n2');
        expect(await store.lastManifestExpiryForKey('k1')).toBeNull();
        await store.publishManifests(['n1', 'n2'], manifestBuilder('k1', 7 * DAY), manifestAudit, T0);
        await store.publishManifests(['n1'], manifestBuilder('k1', 9 * DAY), manifestAudit, T0);
        await store.publishManifests(['n2'], manifestBuilder('k2', 3 * DAY), manifestAudit, T0);
        expect(await store.lastManifestExpiryForKey('k1')).toBe(T0 + 9 * DAY);
        expect(await store.lastManifestExpiryForKey('k2')).toBe(T0 + 3 * DAY);
        expect(await store.lastManifestExpiryForKey('k3')).toBeNull();
      });
    });

    describe('signing keys', () => {
      it('adds keys, retiring the previous active one, with an audit entry each', async () => {
        const rotated = (kid: string): AuditInput => ({ event: 'keys.rotated', actor: 'cli', detail: { kid } });
        expect(await store.listSigningKeys()).toEqual([]);
        await store.addSigningKey({ kid: 'k1', publicJwk: '{"kty":"OKP","x":"1"}' }, rotated('k1'), T0);
        await store.addSigningKey({ kid: 'k2', publicJwk: '{"kty":"OKP","x":"2"}' }, rotated('k2'), T0 + DAY);
        const keys = (await store.listSigningKeys()).sort((a, b) => a.kid.localeCompare(b.kid));
        expect(keys).toEqual([
          { kid: 'k1', publicJwk: '{"kty":"OKP","x":"1"}', createdAt: T0, retiredAt: T0 + DAY },
          { kid: 'k2', publicJwk: '{"kty":"OKP","x":"2"}', createdAt: T0 + DAY, retiredAt: null },
        ]);
        const head = await store.auditHead();
        await expectCode(store.addSigningKey({ kid: 'k1', publicJwk: '{}' }, rotated('k1'), T0 + 2 * DAY), ErrorCodes.ALREADY_EXISTS);
        // k2 is still the active key: the failed add retired nothing
        expect((await store.listSigningKeys()).filter((k) => k.retiredAt === null).map((k) => k.kid)).toEqual(['k2']);
        await expectNewAudit(head, []);
        const all = await allAudit(store);
        expect(all.map((e) => [e.event, e.detail])).toEqual([['keys.rotated', '{"kid":"k1"}'], ['keys.rotated', '{"kid":"k2"}']]);
      });
    });

    describe('audit log', () => {
      it('appends chained entries with canonical detail; reads them in pages; reports the head', async () => {
        expect(await store.auditHead()).toBe(0);
        expect(await store.readAudit(0, 10)).toEqual([]);
        expect(verifyAuditChain(await allAudit(store))).toEqual({ ok: true, count: 0, headHash: GENESIS_HASH });

        const e1 = await store.appendAudit({ event: 'security.denied', actor: 'peer:10.0.0.1', reason: ErrorCodes.CLIENT_CERT_UNKNOWN,
          nodeId: 'x', org: 'o', detail: { z: 1, a: { y: [1, 'two', null], b: true } } }, T0);
        expect(e1).toMatchObject({ seq: 1, at: T0, event: 'security.denied', actor: 'peer:10.0.0.1', reason: 'CLIENT_CERT_UNKNOWN',
          nodeId: 'x', org: 'o', detail: '{"a":{"b":true,"y":[1,"two",null]},"z":1}', prevHash: GENESIS_HASH });
        expect(e1.hash).toMatch(/^[0-9a-f]{64}$/);
        const e2 = await store.appendAudit({ event: 'token.created', actor: 'cli' }, T0 + 1);
        expect(e2).toMatchObject({ seq: 2, nodeId: null, org: null, reason: null, detail: '{}', prevHash: e1.hash });
        for (let i = 0; i < 8; i++) await store.appendAudit({ event: 'token.revoked', actor: 'cli', detail: { i } }, T0 + 2 + i);

        expect(await store.auditHead()).toBe(10);
        const all = await allAudit(store);
        expect(all[0]).toEqual(e1);
        expect(all[1]).toEqual(e2);
        expect(all.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
        expect((await store.readAudit(3, 4)).map((e) => e.seq)).toEqual([4, 5, 6, 7]);
        expect((await store.readAudit(8, 100)).map((e) => e.seq)).toEqual([9, 10]);
        expect(await store.readAudit(10, 100)).toEqual([]);
        expect(await store.readAudit(0, 0)).toEqual([]);
        expect(verifyAuditChain(all)).toEqual({ ok: true, count: 10, headHash: all[9]!.hash });
      });

      it('every write produces exactly its audit entries and the chain verifies', async () => {
        const events: AuditEvent[] = [];
        const step = async (write: () => Promise<unknown>, expected: AuditEvent[]) => {
          const before = await store.auditHead();
          await write();
          events.push(...expected);
          await expectNewAudit(before, expected);
        };
        await step(() => store.addSigningKey({ kid: 'k1', publicJwk: '{}' }, { event: 'keys.rotated', actor: 'cli', detail: { kid: 'k1' } }, T0), ['keys.rotated']);
        await step(() => enroll(store, 'n1'), ['node.enrolled']);
        await step(() => enroll(store, 'n2', 'org-b'), ['node.enrolled']);
        await step(() => renew(store, 'n1', 1), ['cert.renewed']);
        await step(() => store.recordStatus('n1', '{}', T0 + 5), []);
        await step(() => store.touchNode('n2', T0 + 6), []);
        await step(() => store.publishManifests(['n1', 'n2'], manifestBuilder(), manifestAudit, T0 + 7), ['manifest.published', 'manifest.published']);
        await step(() => store.revokeNode('n2', revokedAudit('n2', 'org-b'), T0 + 8), ['node.revoked']);
        await step(() => store.revokeNode('n2', revokedAudit('n2', 'org-b'), T0 + 9), []);
        await step(() => store.publishManifests(['n1', 'n2'], manifestBuilder(), manifestAudit, T0 + 10), ['manifest.published']);
        await step(() => store.appendAudit({ event: 'token.created', actor: 'cli' }, T0 + 11), ['token.created']);
        await step(() => renew(store, 'n2', 1).catch(() => undefined), []);
        const all = await allAudit(store);
        expect(all.map((e) => e.event)).toEqual(events);
        expect(verifyAuditChain(all)).toMatchObject({ ok: true, count: events.length });
      });
    });
  });
}
