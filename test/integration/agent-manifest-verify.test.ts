// The agent's manifest verifier against a real hub on loopback: the expected identity comes from the
// hub's discovery document, the JWKS is fetched over HTTPS trusting only the hub's CA (presenting
// the node's certificate, as the daemon does), manifests are published with the real CLI and the
// service and received over a real WatchManifest stream. Real signed manifests pass; tampered,
// expired, not yet valid, rolled back, wrong-audience, unknown-kid, alg none and HS256-with-the-
// public-key ones are each rejected with their reason while the last good version stays put; a key
// rotation is picked up through the unknown-kid refetch.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import path from 'node:path';
import type { JSONWebKeySet, JWK } from 'jose';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import { MANIFEST_TYP, type ManifestBodyInput } from '../../proto/manifest.ts';
import type { ManifestEnvelope } from '../../proto/api.ts';
import { generateSigningKey, loadSigningKey } from '../../hub/manifest/keyset.ts';
import { ManifestSigner } from '../../hub/manifest/signer.ts';
import { AgentError } from '../../agent/errors.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { isManifestRejection, ManifestVerifier, type VerifiedManifest } from '../../agent/manifest/verify.ts';
import { LastGoodStore } from '../../agent/manifest/last-good.ts';
import { ManifestGate } from '../../agent/manifest/gate.ts';
import {
  cli, enrollTestNode, httpsGet, nodeClient, startTestHub, tempDir, watchManifest,
  type AgentClient, type ManifestWatch, type TestHub, type TestNode,
} from '../helpers/hub.ts';

const BODY: ManifestBodyInput = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 1 } },
  datasets: [{ name: 'mnist', path: '/srv/data/mnist', sha256: 'c'.repeat(64) }],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: true } },
};

interface Discovery { issuer: string; federation_id: string }

let hub: TestHub;
let node: TestNode;
let other: TestNode;
let discovery: Discovery;
let work: string;
let grpcClient: AgentClient;
let watch: ManifestWatch;

/** GET over TLS trusting only the hub's CA, presenting the node's certificate. */
function mtlsGet(p: string, who: TestNode): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = https.request(`${hub.httpsUrl}${p}`, { ca: hub.caPem, key: who.key.keyPem, cert: who.chainPem, agent: false, minVersion: 'TLSv1.3' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function fetchJwks(): Promise<JSONWebKeySet> {
  const r = await mtlsGet('/.well-known/jwks.json', node);
  if (r.status !== 200) throw new Error(`JWKS: HTTP ${r.status}`);
  return JSON.parse(r.body.toString('utf8')) as JSONWebKeySet;
}

/** A verifier as the daemon builds it, counting its JWKS fetches. */
function verifierAt(clock: FakeClock): { verifier: ManifestVerifier; fetches: () => number } {
  let n = 0;
  const verifier = new ManifestVerifier({
    expected: { issuer: discovery.issuer, nodeId: node.nodeId, org: node.org, federationId: discovery.federation_id },
    jwks: () => {
      n++;
      return fetchJwks();
    },
    clock,
  });
  return { verifier, fetches: () => n };
}

/** Publishes BODY (with a marker) to one node through the real CLI; returns the version. */
async function publishWithCli(target: TestNode, marker: number): Promise<number> {
  const file = path.join(work, `m-${marker}.json`);
  fs.writeFileSync(file, JSON.stringify({ ...BODY, supernode: { nodeConfig: { 'partition-id': marker } } }));
  const r = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--node', target.nodeId, '--file', file, '--json']);
  expect(r.code, r.stderr).toBe(0);
  const [rec] = (JSON.parse(r.stdout) as { published: Array<{ version: number }> }).published;
  return rec?.version ?? -1;
}

/** The JWS of `version` as the node's open WatchManifest stream delivered it. */
async function delivered(version: number): Promise<string> {
  await expect.poll(() => watch.received.some((m: ManifestEnvelope) => m.version === String(version)), { timeout: 5000 }).toBe(true);
  return watch.received.find((m) => m.version === String(version))?.jws ?? '';
}

async function latestJws(target: TestNode): Promise<string> {
  return (await hub.running.hub.ctx.store.latestManifest(target.nodeId))?.jws ?? '';
}

async function rejection(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  throw new Error('expected a rejection');
}

const b64 = (v: unknown): string => Buffer.from(JSON.stringify(v)).toString('base64url');

beforeAll(async () => {
  hub = await startTestHub();
  node = await enrollTestNode(hub, 'org-a');
  other = await enrollTestNode(hub, 'org-a');
  work = tempDir('sepal-agent-manifest-it-');
  const d = await httpsGet(hub, '/.well-known/sepal-configuration');
  expect(d.status).toBe(200);
  discovery = JSON.parse(d.body.toString('utf8')) as Discovery;
  grpcClient = nodeClient(hub, node);
  watch = watchManifest(grpcClient);
  for (let i = 0; i < 200 && !hub.running.grpc.streams.has(node.nodeId); i++) await new Promise((r) => setTimeout(r, 25));
  if (!hub.running.grpc.streams.has(node.nodeId)) throw new Error('WatchManifest stream did not open');
});

afterAll(async () => {
  watch.call.cancel();
  grpcClient.close();
  await hub.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

// One agent's view, carried through the cases below in order.
let clock: FakeClock;
let agent: ReturnType<typeof verifierAt>;
let stateDir: string;
let store: LastGoodStore;
let gate: ManifestGate;
let jws1: string;
let m2: VerifiedManifest;

function keptLastGood(): void {
  expect(gate.version).toBe(m2.version);
  const onDisk = new LastGoodStore({ stateDir, nodeId: node.nodeId }).load();
  expect(onDisk.floorVersion).toBe(m2.version);
  expect(onDisk.manifest?.version).toBe(m2.version);
  expect(onDisk.manifest?.jws).toBe(m2.jws);
}

async function expectRejected(jws: string, code: ErrorCode, via: ManifestGate = gate): Promise<AgentError> {
  const e = await rejection(via.accept(jws));
  expect(e.code, e.message).toBe(code);
  expect(isManifestRejection(e)).toBe(true);
  keptLastGood();
  return e;
}

describe('agent manifest verification against a real hub', () => {
  it('verifies real manifests from the CLI and the service, received over WatchManifest', async () => {
    clock = new FakeClock(Date.now());
    agent = verifierAt(clock);
    stateDir = path.join(work, 'state');
    store = new LastGoodStore({ stateDir, nodeId: node.nodeId, clock });
    store.load();
    gate = new ManifestGate({ verifier: agent.verifier, store });

    const v1 = await publishWithCli(node, 1);
    jws1 = await delivered(v1);
    const m1 = await gate.accept(jws1);
    expect(m1.version).toBe(v1);
    expect(m1.claims.iss).toBe(discovery.issuer);
    expect(m1.claims.federation_id).toBe(discovery.federation_id);
    expect(agent.fetches()).toBe(1);

    const [rec2] = await hub.running.hub.manifests.publish({ nodeId: node.nodeId }, { ...BODY, supernode: { nodeConfig: { 'partition-id': 2 } } }, 'test');
    m2 = await gate.accept(await delivered(rec2?.version ?? -1));
    expect(m2.body.supernode.nodeConfig).toEqual({ 'partition-id': 2 });
    expect(gate.version).toBe(m2.version);
    expect(agent.fetches()).toBe(1);
    keptLastGood();
  });

  it('rejects tampered, rolled back, replayed, wrong-audience, expired, not yet valid, alg none, HS256 and unknown-kid manifests; the last good one stays', async () => {
    // A newer genuine manifest, not accepted yet: the raw material for the forgeries.
    const v3 = await publishWithCli(node, 3);
    const jws3 = await delivered(v3);
    const [h3, p3, s3] = jws3.split('.') as [string, string, string];
    const claims3 = JSON.parse(Buffer.from(p3, 'base64url').toString('utf8')) as { exp: number; nbf: number };
    const hubKey = (await fetchJwks()).keys[0] as JWK;

    // Tampered: one byte of the payload flipped.
    const bytes = Buffer.from(p3, 'base64url');
    const at = bytes.indexOf('"partition-id":3') + '"partition-id":'.length;
    bytes[at] = (bytes[at] ?? 0) ^ 0x01;
    await expectRejected(`${h3}.${bytes.toString('base64url')}.${s3}`, ErrorCodes.MANIFEST_BAD_SIGNATURE);

    // Rolled back (a genuine older manifest) and replayed (the one running).
    await expectRejected(jws1, ErrorCodes.MANIFEST_ROLLBACK);
    await expectRejected(m2.jws, ErrorCodes.MANIFEST_ALREADY_APPLIED);

    // Genuine, but addressed to another node.
    await hub.running.hub.manifests.publish({ nodeId: other.nodeId }, BODY, 'test');
    await expectRejected(await latestJws(other), ErrorCodes.MANIFEST_WRONG_AUDIENCE);

    // Genuine and newer, but checked by an agent whose clock is past exp, or well before nbf.
    const late = new ManifestGate({ verifier: verifierAt(new FakeClock((claims3.exp + 61) * 1000)).verifier, store });
    await expectRejected(jws3, ErrorCodes.MANIFEST_EXPIRED, late);
    const early = new ManifestGate({ verifier: verifierAt(new FakeClock((claims3.nbf - 120) * 1000)).verifier, store });
    await expectRejected(jws3, ErrorCodes.MANIFEST_NOT_YET_VALID, early);

    // alg none over the genuine payload, with and without the genuine signature.
    const none = b64({ alg: 'none', typ: MANIFEST_TYP, kid: hubKey.kid });
    await expectRejected(`${none}.${p3}.`, ErrorCodes.MANIFEST_BAD_ALG);
    await expectRejected(`${none}.${p3}.${s3}`, ErrorCodes.MANIFEST_BAD_ALG);

    // HS256 keyed with the hub's public key (PEM and JWK text), as anyone who read the JWKS could.
    const hs = b64({ alg: 'HS256', typ: MANIFEST_TYP, kid: hubKey.kid });
    const pem = crypto.createPublicKey({ key: hubKey, format: 'jwk' }).export({ format: 'pem', type: 'spki' });
    for (const secret of [pem, JSON.stringify(hubKey)]) {
      const mac = crypto.createHmac('sha256', secret).update(`${hs}.${p3}`).digest('base64url');
      await expectRejected(`${hs}.${p3}.${mac}`, ErrorCodes.MANIFEST_BAD_ALG);
    }

    // Signed by a well-formed key the hub never published: the JWKS is refetched exactly once, and
    // not again within the cooldown.
    const rogueDir = path.join(work, 'rogue');
    const { kid } = await generateSigningKey(rogueDir);
    const { privateKey } = await loadSigningKey(rogueDir, kid);
    const rogue = new ManifestSigner({ issuer: discovery.issuer, federationId: discovery.federation_id, kid, privateKey, lifetimeMs: 3_600_000 });
    const forged = rogue.sign({ nodeId: node.nodeId, org: node.org, version: v3 + 100, body: m2.body }).jws;
    const before = agent.fetches();
    await expectRejected(forged, ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(agent.fetches()).toBe(before + 1);
    const again = await expectRejected(forged, ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(agent.fetches()).toBe(before + 1);
    expect(again.detail?.['retryAt']).toBe(clock.now() + 60_000);

    // After all that, the genuine newer manifest still goes through.
    await expect(gate.accept(jws3)).resolves.toMatchObject({ version: v3 });
    expect(new LastGoodStore({ stateDir, nodeId: node.nodeId }).load().floorVersion).toBe(v3);
  });

  it('picks up a key rotated with the real CLI through the unknown-kid refetch, once the cooldown allows', async () => {
    const rot = await cli(['keys', 'rotate', '--data-dir', hub.paths.dataDir, '--json']);
    expect(rot.code, rot.stderr).toBe(0);
    const newKid = (JSON.parse(rot.stdout) as { kid: string }).kid;
    const v4 = await publishWithCli(node, 4);
    const jws4 = await delivered(v4);
    // The rogue manifest above refetched moments ago: this one waits for the cooldown.
    const before = agent.fetches();
    const e = await rejection(gate.accept(jws4));
    expect(e.code).toBe(ErrorCodes.MANIFEST_UNKNOWN_KID);
    expect(agent.fetches()).toBe(before);
    clock.advance(60_000);
    const m4 = await gate.accept(jws4);
    expect(m4.kid).toBe(newKid);
    expect(agent.fetches()).toBe(before + 1);
    expect(gate.version).toBe(v4);
    expect(new LastGoodStore({ stateDir, nodeId: node.nodeId }).load().manifest).toMatchObject({ version: v4, kid: newKid });
  });
});
