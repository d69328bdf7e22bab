// The SuperLink registrar and its Control API client against a stub Control server (real grpc-js
// over TLS, Flower 1.23's semantics; see hub-flower.superlink-stub.ts) and a real SQLite store,
// with a fake clock and fixed jitter so backoff is checked without sleeping.
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes, isSepalError } from '../../hub/errors.ts';
import { checkFlowerPublicKey, flowerKeySpkiPem } from '../../hub/enroll/flower-key.ts';
import { backoffDelay } from '../../hub/flower/backoff.ts';
import { createControlClient, isSuperlinkError, readSuperlinkCa, type ControlApi } from '../../hub/flower/control-client.ts';
import { FlowerRegistrar } from '../../hub/flower/registrar.ts';
import { silentLogger } from '../../hub/log.ts';
import { HubMetrics } from '../../hub/metrics.ts';
import { nodeView } from '../../hub/service/views.ts';
import { SqliteStore } from '../../hub/store/sqlite.ts';
import type { AuditEntry } from '../../hub/store/store.ts';
import { flowerPublicKeyLine } from '../helpers/flower-key.ts';
import { freePorts, metricValue, tempDir } from '../helpers/hub.ts';
import { enrolledAudit, newCert, serialFor, T0 } from './store.fixtures.ts';
import { StubSuperlink } from './hub-flower.superlink-stub.ts';

const BIG = '18446744073709551557'; // > 2^53 (a JS number would read 18446744073709552000)
const BASE = 1000;
const CAP = 8000;

let dir: string;
let stub: StubSuperlink;
let store: SqliteStore;
let control: ControlApi;
let metrics: HubMetrics;
let now: number;
let registrar: FlowerRegistrar;

function makeRegistrar(c: ControlApi = control): FlowerRegistrar {
  return new FlowerRegistrar({
    store, control: c, log: silentLogger(), metrics, clock: () => now, random: () => 0.5,
    retry: { baseMs: BASE, capMs: CAP }, scanIntervalMs: 60_000,
  });
}

beforeEach(async () => {
  dir = tempDir('sepal-flower-');
  stub = await StubSuperlink.start(dir);
  store = SqliteStore.open(path.join(dir, 'hub.db'));
  control = createControlClient({ address: stub.address, caPem: Buffer.from(stub.caPem), callTimeoutMs: 2000 });
  metrics = new HubMetrics({ defaultMetrics: false });
  now = T0;
  registrar = makeRegistrar();
});

afterEach(async () => {
  await registrar.stop();
  control.close();
  await stub.stop();
  await store.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

let seq = 0;
/** Enrolls a node with a fresh Flower key straight into the store; returns its id and key. */
async function enroll(key = flowerPublicKeyLine()): Promise<{ id: string; line: string; pem: Buffer }> {
  const id = `n-${(++seq).toString(16).padStart(16, '0')}`;
  const line = checkFlowerPublicKey(key);
  const serial = serialFor(`${id}/enroll`);
  await store.enrollNode({ id, org: 'org-a', name: 'host', facts: null, flowerPublicKey: line }, newCert(serial, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', serial), now);
  return { id, line, pem: flowerKeySpkiPem(line) };
}

async function flower(id: string) {
  return (await store.getNode(id))!.flower;
}

async function revoke(id: string): Promise<void> {
  await store.revokeNode(id, { event: 'node.revoked', actor: 'cli', detail: {} }, now);
}

async function auditOf(id: string): Promise<AuditEntry[]> {
  return (await store.readAudit(0, 10_000)).filter((e) => e.nodeId === id && e.event.startsWith('flower.'));
}

async function metric(name: string, labels: Record<string, string>): Promise<number | undefined> {
  return metricValue(await metrics.registry.metrics(), name, labels);
}

describe('Flower key conversion', () => {
  it('turns the OpenSSH line into the PEM SPKI of the same P-384 key, as Flower\'s CLI does', () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const jwk = publicKey.export({ format: 'jwk' });
    const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x!, 'base64url'), Buffer.from(jwk.y!, 'base64url')]);
    const s = (b: Buffer | string): Buffer => { const v = Buffer.from(b); const l = Buffer.alloc(4); l.writeUInt32BE(v.length); return Buffer.concat([l, v]); };
    const line = `ecdsa-sha2-nistp384 ${Buffer.concat([s('ecdsa-sha2-nistp384'), s('nistp384'), s(point)]).toString('base64')} me@host`;
    const pem = flowerKeySpkiPem(line);
    expect(pem.toString()).toBe(publicKey.export({ type: 'spki', format: 'pem' }));
    expect(pem.toString()).toMatch(/^-----BEGIN PUBLIC KEY-----\n(?:[A-Za-z0-9+/=]{1,64}\n)+-----END PUBLIC KEY-----\n$/);
    expect(() => flowerKeySpkiPem('ssh-ed25519 AAAA')).toThrow(expect.objectContaining({ code: ErrorCodes.FLOWER_KEY_INVALID }));
  });
});

describe('backoff', () => {
  it('is capped exponential with full jitter', () => {
    const o = { baseMs: 1000, capMs: 8000 };
    expect([1, 2, 3, 4, 5, 60].map((n) => backoffDelay(n, o, () => 0.999999))).toEqual([999, 1999, 3999, 7999, 7999, 7999]);
    expect(backoffDelay(3, o, () => 0)).toBe(0);
    expect(backoffDelay(2, o, () => 0.5)).toBe(1000);
    expect(() => backoffDelay(0, o)).toThrow(TypeError);
  });
});

describe('Control API client', () => {
  it('registers a key and reads the uint64 node id exactly, as a decimal string', async () => {
    stub.nextIds.push(BIG);
    const { pem } = await enroll();
    expect(await control.register(pem)).toBe(BIG);
    expect(stub.callsOf('RegisterNode')).toEqual([{ publicKey: pem }]);
    expect((await control.listNodes()).map((n) => [n.flowerNodeId, n.status])).toEqual([[BIG, 'registered']]);
    expect(await control.unregister(BIG)).toBe('unregistered');
    expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: BIG }]);
    expect(await control.unregister(BIG)).toBe('not-found');
  });

  it.each([
    [grpc.status.UNAVAILABLE, ErrorCodes.SUPERLINK_UNAVAILABLE, true],
    [grpc.status.DEADLINE_EXCEEDED, ErrorCodes.SUPERLINK_UNAVAILABLE, true],
    [grpc.status.INTERNAL, ErrorCodes.SUPERLINK_UNAVAILABLE, true],
    [grpc.status.FAILED_PRECONDITION, ErrorCodes.SUPERLINK_REJECTED, false],
    [grpc.status.PERMISSION_DENIED, ErrorCodes.SUPERLINK_REJECTED, true],
    [grpc.status.UNAUTHENTICATED, ErrorCodes.SUPERLINK_REJECTED, true],
    [grpc.status.NOT_FOUND, ErrorCodes.SUPERLINK_REJECTED, true],
  ])('maps status %s on RegisterNode to %s (retryable: %s)', async (status, code, retryable) => {
    stub.fault('RegisterNode', { status, details: 'scripted' });
    const { pem } = await enroll();
    const e = await control.register(pem).then(() => null, (x: unknown) => x);
    expect(isSuperlinkError(e)).toBe(true);
    expect(e).toMatchObject({ code, retryable, grpcStatus: status });
  });

  it('treats node id 0 (Flower could not create the node) as retryable', async () => {
    stub.nextIds.push('0');
    const { pem } = await enroll();
    await expect(control.register(pem)).rejects.toMatchObject({ code: ErrorCodes.SUPERLINK_UNAVAILABLE, retryable: true });
  });

  it('an unreachable SuperLink, a deadline and an untrusted certificate are SUPERLINK_UNAVAILABLE', async () => {
    const [port] = await freePorts(1);
    const { pem } = await enroll();
    const nowhere = createControlClient({ address: `127.0.0.1:${port}`, caPem: Buffer.from(stub.caPem), callTimeoutMs: 2000 });
    await expect(nowhere.register(pem)).rejects.toMatchObject({ code: ErrorCodes.SUPERLINK_UNAVAILABLE, retryable: true, grpcStatus: grpc.status.UNAVAILABLE });
    nowhere.close();

    stub.fault('ListNodes', { hang: true });
    const quick = createControlClient({ address: stub.address, caPem: Buffer.from(stub.caPem), callTimeoutMs: 200 });
    await expect(quick.listNodes()).rejects.toMatchObject({ code: ErrorCodes.SUPERLINK_UNAVAILABLE, grpcStatus: grpc.status.DEADLINE_EXCEEDED });
    quick.close();

    const other = await StubSuperlink.start(dir); // another CA
    const untrusting = createControlClient({ address: stub.address, caPem: Buffer.from(other.caPem), callTimeoutMs: 2000 });
    await expect(untrusting.listNodes()).rejects.toMatchObject({ code: ErrorCodes.SUPERLINK_UNAVAILABLE, grpcStatus: grpc.status.UNAVAILABLE });
    untrusting.close();
    await other.stop();
    expect(stub.callsOf('RegisterNode')).toEqual([]);
  });

  it('cancels a call when its signal aborts', async () => {
    stub.fault('ListNodes', { hang: true });
    const ac = new AbortController();
    const p = control.listNodes(ac.signal);
    setTimeout(() => ac.abort(), 50);
    await expect(p).rejects.toMatchObject({ code: ErrorCodes.SUPERLINK_UNAVAILABLE, grpcStatus: grpc.status.CANCELLED });
  });

  it('reads the CA file relative to the data dir and refuses one without a certificate', () => {
    expect(readSuperlinkCa(path.basename(stub.caFile), dir).toString()).toBe(stub.caPem);
    const bad = path.join(dir, 'bad.pem');
    fs.writeFileSync(bad, 'not a certificate');
    for (const f of [bad, path.join(dir, 'missing.pem')]) {
      const e = (() => { try { readSuperlinkCa(f, dir); return null; } catch (x) { return x; } })();
      expect(isSepalError(e, ErrorCodes.CONFIG_INVALID), String(e)).toBe(true);
    }
  });
});

describe('registrar', () => {
  it('registers a pending node and records Flower\'s node id exactly (above 2^53), audited and counted', async () => {
    stub.nextIds.push(BIG);
    const { id, pem } = await enroll();
    expect(await registrar.runOnce()).toEqual({ handled: 1, more: false });
    expect(stub.callsOf('RegisterNode')).toEqual([{ publicKey: pem }]);
    expect(await flower(id)).toEqual({ state: 'registered', flowerNodeId: BIG, attempts: 0, lastError: null, lastErrorMessage: null, nextAttemptAt: null, since: T0 });
    expect(nodeView((await store.getNode(id))!).flower).toMatchObject({ nodeId: BIG, state: 'registered', summary: 'registered' });
    const [entry] = await auditOf(id);
    expect(entry).toMatchObject({ event: 'flower.registered', actor: 'hub:registrar', detail: `{"flowerNodeId":"${BIG}"}` });
    expect(await metric('sepal_hub_superlink_registrations_total', { result: 'registered' })).toBe(1);
    // nothing left to do
    expect(await registrar.runOnce()).toEqual({ handled: 0, more: false });
    expect(stub.callsOf('RegisterNode')).toHaveLength(1);
  });

  it('retries with capped exponential backoff and full jitter while the SuperLink is unavailable, then registers', async () => {
    stub.fault('RegisterNode', { status: grpc.status.UNAVAILABLE }, 4);
    stub.nextIds.push('7');
    const { id } = await enroll();
    const expectedWaits = [500, 1000, 2000, 4000]; // random 0.5 of base * 2^(n-1), capped at 8000
    for (const [i, wait] of expectedWaits.entries()) {
      await registrar.runOnce();
      const f = await flower(id);
      expect(f).toMatchObject({ state: 'pending', attempts: i + 1, lastError: ErrorCodes.SUPERLINK_UNAVAILABLE, nextAttemptAt: now + wait });
      expect(f?.lastErrorMessage).toContain('UNAVAILABLE');
      expect(nodeView((await store.getNode(id))!).flower?.summary).toBe('registration pending (SUPERLINK_UNAVAILABLE)');
      // not due before its time: no call
      now += wait - 1;
      expect(await registrar.runOnce()).toEqual({ handled: 0, more: false });
      now += 1;
    }
    expect(stub.callsOf('RegisterNode')).toHaveLength(4);
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'registered', flowerNodeId: '7', attempts: 0, lastError: null });
    expect(await metric('sepal_hub_superlink_registrations_total', { result: 'retry' })).toBe(4);
    // retries are not audited; the registration is
    expect((await auditOf(id)).map((e) => e.event)).toEqual(['flower.registered']);
  });

  it('waits at most retryCapMs between tries', async () => {
    stub.fault('RegisterNode', { status: grpc.status.UNAVAILABLE }, 8);
    const { id } = await enroll();
    const r = new FlowerRegistrar({ store, control, log: silentLogger(), metrics, clock: () => now, random: () => 0.999, retry: { baseMs: BASE, capMs: CAP }, scanIntervalMs: 60_000 });
    const waits: number[] = [];
    for (let i = 0; i < 8; i++) {
      await r.runOnce();
      const next = (await flower(id))!.nextAttemptAt!;
      waits.push(next - now);
      now = next;
    }
    expect(waits).toEqual([999, 1998, 3996, 7992, 7992, 7992, 7992, 7992]);
  });

  it('a refused key becomes failed with its code, visibly, and is not retried', async () => {
    // a P-256 key in PEM, as the stub's refusal check sees it, is fine; force Flower's refusal
    stub.fault('RegisterNode', { status: grpc.status.FAILED_PRECONDITION, details: 'Public key is not valid' });
    const { id } = await enroll();
    await registrar.runOnce();
    expect(stub.callsOf('ListNodes')).toHaveLength(1); // it looked for the key before giving up
    const f = await flower(id);
    expect(f).toMatchObject({ state: 'failed', lastError: ErrorCodes.SUPERLINK_REJECTED, nextAttemptAt: null });
    expect(f?.lastErrorMessage).toContain('FAILED_PRECONDITION');
    expect(nodeView((await store.getNode(id))!).flower?.summary).toBe('failed (SUPERLINK_REJECTED)');
    const [entry] = await auditOf(id);
    expect(entry).toMatchObject({ event: 'flower.registration_failed', reason: 'SUPERLINK_REJECTED' });
    expect(await metric('sepal_hub_superlink_registrations_total', { result: 'failed' })).toBe(1);
    now += 24 * 3600_000;
    expect(await registrar.runOnce()).toEqual({ handled: 0, more: false });
    expect(stub.callsOf('RegisterNode')).toHaveLength(1);

    // an operator retry makes it pending again and the next pass registers it
    await store.retryFlowerRegistration(id, { event: 'flower.registration_retried', actor: 'cli', detail: {} }, now);
    stub.nextIds.push('99');
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'registered', flowerNodeId: '99' });
  });

  it('a stored key Flower could never accept fails as FLOWER_KEY_INVALID without calling the SuperLink', async () => {
    const id = 'n-00000000000000ff';
    const serial = serialFor(id);
    await store.enrollNode({ id, org: 'org-a', name: 'old', facts: null, flowerPublicKey: 'ecdsa-sha2-nistp256 AAAAbogus' }, newCert(serial, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', serial), now);
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'failed', lastError: ErrorCodes.FLOWER_KEY_INVALID });
    expect(stub.calls).toEqual([]);
  });

  it('revocation unregisters the exact Flower node id; the node ends unregistered, audited', async () => {
    stub.nextIds.push(BIG);
    const { id } = await enroll();
    await registrar.runOnce();
    await revoke(id);
    expect(await flower(id)).toMatchObject({ state: 'unregister-pending', flowerNodeId: BIG });
    expect(nodeView((await store.getNode(id))!).flower?.summary).toBe('unregistration pending');
    await registrar.runOnce();
    expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: BIG }]);
    expect(stub.nodes.find((n) => n.nodeId === BIG)?.status).toBe('unregistered');
    expect(await flower(id)).toMatchObject({ state: 'unregistered', flowerNodeId: BIG, nextAttemptAt: null });
    expect((await auditOf(id)).map((e) => [e.event, e.detail])).toEqual([
      ['flower.registered', `{"flowerNodeId":"${BIG}"}`],
      ['flower.unregistered', `{"flowerNodeId":"${BIG}","result":"unregistered"}`],
    ]);
    expect(await metric('sepal_hub_superlink_unregistrations_total', { result: 'unregistered' })).toBe(1);
  });

  it('NOT_FOUND on unregister means already gone: done', async () => {
    stub.nextIds.push('12345');
    const { id } = await enroll();
    await registrar.runOnce();
    stub.nodes.length = 0; // someone removed it on the SuperLink
    await revoke(id);
    await registrar.runOnce();
    expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: '12345' }]);
    expect(await flower(id)).toMatchObject({ state: 'unregistered', flowerNodeId: '12345' });
    expect(await metric('sepal_hub_superlink_unregistrations_total', { result: 'already_gone' })).toBe(1);
  });

  it('keeps retrying an unregistration (also a refused one) until it gets through', async () => {
    stub.nextIds.push('555');
    const { id } = await enroll();
    await registrar.runOnce();
    await revoke(id);
    stub.fault('UnregisterNode', { status: grpc.status.UNAVAILABLE });
    stub.fault('UnregisterNode', { status: grpc.status.PERMISSION_DENIED });
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'unregister-pending', attempts: 1, lastError: ErrorCodes.SUPERLINK_UNAVAILABLE, nextAttemptAt: now + 500 });
    now += 500;
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'unregister-pending', attempts: 2, lastError: ErrorCodes.SUPERLINK_REJECTED, nextAttemptAt: now + 1000 });
    now += 1000;
    await registrar.runOnce();
    expect(await flower(id)).toMatchObject({ state: 'unregistered', flowerNodeId: '555' });
    expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: '555' }, { nodeId: '555' }, { nodeId: '555' }]);
  });

  describe('crash safety: the SuperLink acted but its answer was never recorded', () => {
    it('a lost answer (deadline passed after the SuperLink registered): the retry finds the key with ListNodes and records that id', async () => {
      const quick = createControlClient({ address: stub.address, caPem: Buffer.from(stub.caPem), callTimeoutMs: 300 });
      const r = makeRegistrar(quick);
      stub.nextIds.push(BIG);
      stub.fault('RegisterNode', { answerAfterMs: 1500 });
      const { id } = await enroll();
      await r.runOnce();
      expect(await flower(id)).toMatchObject({ state: 'pending', attempts: 1, lastError: ErrorCodes.SUPERLINK_UNAVAILABLE });
      expect(stub.nodes.map((n) => n.nodeId)).toEqual([BIG]); // ...but the SuperLink has it
      now = (await flower(id))!.nextAttemptAt!;
      await r.runOnce();
      expect(stub.callsOf('RegisterNode')).toHaveLength(2); // the second was refused: key in use
      expect(stub.callsOf('ListNodes')).toHaveLength(1);
      expect(await flower(id)).toMatchObject({ state: 'registered', flowerNodeId: BIG, attempts: 0, lastError: null });
      expect((await auditOf(id)).map((e) => e.detail)).toEqual([`{"flowerNodeId":"${BIG}","recovered":true}`]);
      expect(await metric('sepal_hub_superlink_registrations_total', { result: 'recovered' })).toBe(1);
      await r.stop();
      quick.close();
    });

    it('the hub died after RegisterNode succeeded: a new registrar recovers the id', async () => {
      const { id, pem } = await enroll();
      stub.add(pem, BIG); // registered by the call of the process that died
      await registrar.runOnce();
      expect(await flower(id)).toMatchObject({ state: 'registered', flowerNodeId: BIG });
      expect(stub.nodes).toHaveLength(1);
    });

    it('the key is live on the SuperLink as another hub node\'s: failed, nothing adopted', async () => {
      stub.nextIds.push('31');
      const first = await enroll();
      await registrar.runOnce();
      // an older store that allowed a duplicate key (the store now refuses one at enrollment)
      const id = 'n-00000000000000aa';
      const serial = serialFor(id);
      await store.enrollNode({ id, org: 'org-a', name: 'dup', facts: null, flowerPublicKey: first.line + ' ' }, newCert(serial, id, 'org-a', 'enroll'), enrolledAudit(id, 'org-a', serial), now);
      await registrar.runOnce();
      const f = await flower(id);
      expect(f).toMatchObject({ state: 'failed', lastError: ErrorCodes.SUPERLINK_REJECTED });
      expect(f?.lastErrorMessage).toContain(first.id);
      expect(await flower(first.id)).toMatchObject({ state: 'registered', flowerNodeId: '31' });
    });

    it('the key was registered and unregistered before: failed, with what to do', async () => {
      const { id, pem } = await enroll();
      stub.add(pem, '8', 'unregistered');
      await registrar.runOnce();
      const f = await flower(id);
      expect(f).toMatchObject({ state: 'failed', lastError: ErrorCodes.SUPERLINK_REJECTED });
      expect(f?.lastErrorMessage).toContain('enroll the node again');
    });

    it('ListNodes unavailable after a refusal: stays pending and retries', async () => {
      stub.fault('RegisterNode', { status: grpc.status.FAILED_PRECONDITION });
      stub.fault('ListNodes', { status: grpc.status.UNAVAILABLE });
      const { id } = await enroll();
      await registrar.runOnce();
      expect(await flower(id)).toMatchObject({ state: 'pending', attempts: 1, lastError: ErrorCodes.SUPERLINK_UNAVAILABLE });
    });

    it('revoked before an id was recorded: the key is looked up and its node unregistered', async () => {
      const a = await enroll();
      const b = await enroll();
      stub.add(a.pem, BIG); // a's registration got through, its answer did not
      await revoke(a.id);
      await revoke(b.id);
      expect(await flower(a.id)).toMatchObject({ state: 'unregister-pending', flowerNodeId: null });
      await registrar.runOnce();
      expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: BIG }]);
      expect(await flower(a.id)).toMatchObject({ state: 'unregistered', flowerNodeId: BIG });
      expect(await flower(b.id)).toMatchObject({ state: 'unregistered', flowerNodeId: null });
      expect(await metric('sepal_hub_superlink_unregistrations_total', { result: 'not_registered' })).toBe(1);
    });

    it('revoked while its RegisterNode is in flight: the id is kept and unregistered next', async () => {
      let release: () => void = () => undefined;
      stub.fault('RegisterNode', { until: new Promise<void>((r) => { release = r; }) });
      stub.nextIds.push(BIG);
      const { id } = await enroll();
      const pass = registrar.runOnce();
      await new Promise((r) => setTimeout(r, 100));
      await revoke(id);
      release();
      await pass;
      expect(await flower(id)).toMatchObject({ state: 'unregister-pending', flowerNodeId: BIG, nextAttemptAt: now });
      await registrar.runOnce();
      expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: BIG }]);
      expect(await flower(id)).toMatchObject({ state: 'unregistered', flowerNodeId: BIG });
    });
  });

  it('passes never overlap, and a full batch says more is due', async () => {
    const r = new FlowerRegistrar({ store, control, log: silentLogger(), metrics, clock: () => now, random: () => 0.5, retry: { baseMs: BASE, capMs: CAP }, scanIntervalMs: 60_000, batchSize: 2 });
    for (let i = 0; i < 3; i++) await enroll();
    const [p1, p2] = [r.runOnce(), r.runOnce()];
    expect(await p1).toEqual({ handled: 2, more: true });
    expect(await p2).toEqual({ handled: 1, more: false });
    expect(stub.callsOf('RegisterNode')).toHaveLength(3);
    await r.stop();
  });

  it('runs by itself once started, wakes on kick, and stop cancels a call in flight', async () => {
    now = Date.now();
    const live = new FlowerRegistrar({ store, control, log: silentLogger(), metrics, clock: () => Date.now(), retry: { baseMs: 200, capMs: 1000 }, scanIntervalMs: 60_000 });
    const a = await enroll();
    live.start();
    await waitFor(async () => (await flower(a.id))?.state === 'registered');
    const b = await enroll();
    live.kick();
    await waitFor(async () => (await flower(b.id))?.state === 'registered');
    // a retry is picked up at its due time without a kick
    stub.fault('RegisterNode', { status: grpc.status.UNAVAILABLE });
    const c = await enroll();
    live.kick();
    await waitFor(async () => (await flower(c.id))?.state === 'registered');
    expect(stub.callsOf('RegisterNode')).toHaveLength(4);

    stub.fault('RegisterNode', { hang: true });
    const d = await enroll();
    live.kick();
    await waitFor(() => Promise.resolve(stub.callsOf('RegisterNode').length === 5));
    const t = Date.now();
    await live.stop();
    expect(Date.now() - t).toBeLessThan(1000); // the call (2 s deadline) was cancelled
    expect(live.state).toBe('stopped');
    expect(await flower(d.id)).toMatchObject({ state: 'pending', attempts: 0 }); // still due: nothing recorded
    live.kick(); // no effect once stopped
    expect(await live.runOnce()).toEqual({ handled: 0, more: false });
  });
});

async function waitFor(cond: () => Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 20));
  }
}
