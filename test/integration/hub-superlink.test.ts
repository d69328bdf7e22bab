// The hub registers Flower keys with a REAL Flower SuperLink (flower-superlink 1.23.0 from the
// project's venv, made by test/flower/setup-venv.sh): TLS with an openssl-made CA and server
// certificate for 127.0.0.1 (ECDSA P-256), supernode authentication on, every API on a loopback
// port. Enrollment registers the node's key and records Flower's node id exactly (checked against
// the SuperLink's own database); revocation unregisters it; a registration whose answer was lost
// is recovered with ListNodes; a key Flower already unregistered is failed, not retried.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { DatabaseSync } from 'node:sqlite';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { EnrollResponse } from '../../proto/api.ts';
import { FLOWER_CONTROL_API_VERSION } from '../../proto/flower/control.ts';
import { checkFlowerPublicKey, flowerKeySpkiPem } from '../../hub/enroll/flower-key.ts';
import { createControlClient, type ControlApi, type SuperlinkNode } from '../../hub/flower/control-client.ts';
import type { FlowerRegistration } from '../../hub/store/store.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { flowerPublicKeyLine } from '../helpers/flower-key.ts';
import { REPO, cli, client, freePorts, startTestHub, tempDir, unaryCall, type TestHub } from '../helpers/hub.ts';
import { waitUntil } from '../helpers/wait.ts';

const run = promisify(execFile);
const FLOWER_VERSION = FLOWER_CONTROL_API_VERSION; // what proto/flower/control.proto mirrors
const VENV = process.env['SEPAL_FLWR_VENV'] ?? path.join(REPO, '.venv-flwr');
const SUPERLINK_BIN = path.join(VENV, 'bin', 'flower-superlink');

function flowerVersion(): string | null {
  const lib = path.join(VENV, 'lib');
  if (!fs.existsSync(SUPERLINK_BIN) || !fs.existsSync(lib)) return null;
  for (const py of fs.readdirSync(lib)) {
    const site = path.join(lib, py, 'site-packages');
    const info = fs.existsSync(site) ? fs.readdirSync(site).find((f) => /^flwr-[^-]+\.dist-info$/.test(f)) : undefined;
    if (info !== undefined) return info.slice('flwr-'.length, -'.dist-info'.length);
  }
  return null;
}

const VERSION = flowerVersion();
const SKIP = VERSION === null
  ? `flower-superlink not found at ${SUPERLINK_BIN}: run test/flower/setup-venv.sh (or point SEPAL_FLWR_VENV at a venv with flwr ${FLOWER_VERSION})`
  : null;
if (SKIP !== null) console.warn(`hub-superlink.test.ts skipped: ${SKIP}`);

async function openssl(cwd: string, ...args: string[]): Promise<void> {
  await run('openssl', args, { cwd });
}

/** A CA and a server certificate for 127.0.0.1 signed by it, ECDSA P-256, made by openssl. */
async function makeTls(dir: string): Promise<{ ca: string; cert: string; key: string }> {
  fs.writeFileSync(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  await openssl(dir, 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'ca.key');
  await openssl(dir, 'req', '-x509', '-new', '-key', 'ca.key', '-sha256', '-days', '2', '-subj', '/CN=Sepal test SuperLink CA', '-out', 'ca.pem');
  await openssl(dir, 'ecparam', '-name', 'prime256v1', '-genkey', '-noout', '-out', 'server.key');
  await openssl(dir, 'req', '-new', '-key', 'server.key', '-subj', '/CN=127.0.0.1', '-out', 'server.csr');
  await openssl(dir, 'x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '2', '-sha256', '-extfile', 'server.ext', '-out', 'server.pem');
  return { ca: path.join(dir, 'ca.pem'), cert: path.join(dir, 'server.pem'), key: path.join(dir, 'server.key') };
}

interface Superlink {
  readonly child: ChildProcess;
  readonly controlAddress: string;
  readonly caFile: string;
  readonly database: string;
  output(): string;
  stop(): Promise<void>;
}

async function startSuperlink(dir: string): Promise<Superlink> {
  const tls = await makeTls(dir);
  const [serverAppIo = 0, fleet = 0, control = 0] = await freePorts(3);
  const database = path.join(dir, 'state.db');
  // --isolation process: the SuperLink starts no ServerApp process of its own, so the only process
  // this test owns is this one.
  const child = spawn(SUPERLINK_BIN, [
    '--isolation', 'process',
    '--ssl-ca-certfile', tls.ca, '--ssl-certfile', tls.cert, '--ssl-keyfile', tls.key,
    '--enable-supernode-auth',
    '--database', database,
    '--storage-dir', path.join(dir, 'storage'),
    '--serverappio-api-address', `127.0.0.1:${serverAppIo}`,
    '--fleet-api-address', `127.0.0.1:${fleet}`,
    '--control-api-address', `127.0.0.1:${control}`,
  ], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FLWR_HOME: path.join(dir, 'flwr-home'), PATH: `${path.join(VENV, 'bin')}:${process.env['PATH'] ?? ''}` },
  });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => { out += b.toString(); });
  child.stderr?.on('data', (b: Buffer) => { out += b.toString(); });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    child,
    controlAddress: `127.0.0.1:${control}`,
    caFile: tls.ca,
    database,
    output: () => out,
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      await exited;
      clearTimeout(t);
    },
  };
}

/** Flower's own record of a node: its SQLite node table keeps the uint64 id as a signed int64. */
function superlinkDbNode(database: string, flowerNodeId: string): { nodeId: string; status: string } | undefined {
  const db = new DatabaseSync(database, { readOnly: true });
  try {
    const st = db.prepare('SELECT node_id, status FROM node');
    st.setReadBigInts(true); // ids above 2^53 must not pass through a number here either
    const rows = st.all() as Array<{ node_id: bigint; status: string }>;
    const ids = rows.map((r) => ({ nodeId: BigInt.asUintN(64, r.node_id).toString(), status: r.status }));
    return ids.find((r) => r.nodeId === flowerNodeId);
  } finally {
    db.close();
  }
}

describe.skipIf(SKIP !== null)(`hub and a real flower-superlink ${FLOWER_VERSION}${SKIP === null ? '' : ` (skipped: ${SKIP})`}`, () => {
  let dir: string;
  let superlink: Superlink;
  let hub: TestHub;
  let control: ControlApi;

  beforeAll(async () => {
    expect(VERSION, `the venv has flwr ${VERSION}; control.proto mirrors ${FLOWER_VERSION}: check it before changing the pin`).toBe(FLOWER_VERSION);
    dir = tempDir('sepal-superlink-');
    superlink = await startSuperlink(dir);
    control = createControlClient({ address: superlink.controlAddress, caPem: fs.readFileSync(superlink.caFile), callTimeoutMs: 5000 });
    await waitUntil('the SuperLink\'s Control API', 30_000, async () => {
      if (superlink.child.exitCode !== null) throw new Error(`flower-superlink exited: ${superlink.output()}`);
      return control.listNodes();
    }).catch((e: unknown) => {
      throw new Error(`${e instanceof Error ? e.message : 'failed'}; flower-superlink said: ${superlink.output()}`);
    });
    hub = await startTestHub({
      configure: (c) => ({
        ...c,
        enrollment: { maxPerSubjectPerMinute: 100, maxPerAddressPerMinute: 1000 },
        superlink: { controlAddress: superlink.controlAddress, caFile: superlink.caFile, callTimeoutMs: 5000, retryBaseMs: 200, retryCapMs: 2000, scanIntervalMs: 1000 },
      }),
    });
  }, 90_000);

  afterAll(async () => {
    await hub?.stop();
    control?.close();
    await superlink?.stop();
    if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true });
  });

  async function enroll(flowerLine: string): Promise<string> {
    const t = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', 'org-a', '--json']);
    expect(t.code, t.stderr).toBe(0);
    const { token } = JSON.parse(t.stdout) as { token: string };
    const c = client(hub);
    try {
      const res = await unaryCall<EnrollResponse>(c, 'Enroll', { csrDer: makeCsr(newKey()), flowerPublicKey: flowerLine, enrollmentToken: token, name: 'host', facts: null });
      return res.nodeId;
    } finally {
      c.close();
    }
  }

  function flowerState(nodeId: string, state: FlowerRegistration['state']): Promise<FlowerRegistration> {
    return waitUntil(`node ${nodeId} to be ${state}`, 30_000, async () => {
      const f = (await hub.running.hub.ctx.store.getNode(nodeId))?.flower;
      return f?.state === state ? f : undefined;
    });
  }

  async function onSuperlink(pem: Buffer): Promise<SuperlinkNode[]> {
    return (await control.listNodes()).filter((n) => n.publicKey.equals(pem));
  }

  it('enrollment registers the Flower key; the recorded node id is Flower\'s, exactly; revocation unregisters it', async () => {
    const line = flowerPublicKeyLine();
    const pem = flowerKeySpkiPem(line);
    const nodeId = await enroll(line);
    const reg = await flowerState(nodeId, 'registered');
    const id = reg.flowerNodeId!;
    expect(id).toMatch(/^[1-9][0-9]{0,19}$/);
    // what the Control API lists, and what the SuperLink's own database holds
    expect((await onSuperlink(pem)).map((n) => [n.flowerNodeId, n.status])).toEqual([[id, 'registered']]);
    expect(superlinkDbNode(superlink.database, id)).toEqual({ nodeId: id, status: 'registered' });

    const list = await cli(['node', 'list', '--data-dir', hub.paths.dataDir]);
    expect(list.stdout).toMatch(new RegExp(`${nodeId} .*${id}\\s+registered`));

    const revoked = await cli(['node', 'revoke', nodeId, '--data-dir', hub.paths.dataDir]);
    expect(revoked.code, revoked.stderr).toBe(0);
    const after = await flowerState(nodeId, 'unregistered');
    expect(after.flowerNodeId).toBe(id);
    expect((await onSuperlink(pem)).map((n) => [n.flowerNodeId, n.status])).toEqual([[id, 'unregistered']]);
    expect(superlinkDbNode(superlink.database, id)?.status).toBe('unregistered');
    const audit = (await hub.running.hub.ctx.store.readAudit(0, 100_000)).filter((e) => e.nodeId === nodeId).map((e) => e.event);
    expect(audit).toEqual(['node.enrolled', 'flower.registered', 'node.revoked', 'flower.unregistered']);
  });

  it('a registration whose answer was lost (the key is already in use on the SuperLink) is recovered with ListNodes', async () => {
    const line = flowerPublicKeyLine();
    const pem = flowerKeySpkiPem(line);
    const earlier = await control.register(pem); // as if by a call whose answer never got recorded
    const nodeId = await enroll(line);
    const reg = await flowerState(nodeId, 'registered');
    expect(reg.flowerNodeId).toBe(earlier);
    expect(await onSuperlink(pem)).toHaveLength(1);
    const entry = (await hub.running.hub.ctx.store.readAudit(0, 100_000)).find((e) => e.nodeId === nodeId && e.event === 'flower.registered');
    expect(entry?.detail).toBe(`{"flowerNodeId":"${earlier}","recovered":true}`);
  });

  it('a key Flower has unregistered before is refused for good: failed, with its code, not retried', async () => {
    const line = flowerPublicKeyLine();
    const pem = flowerKeySpkiPem(line);
    await control.unregister(await control.register(pem));
    const nodeId = await enroll(checkFlowerPublicKey(line));
    const reg = await flowerState(nodeId, 'failed');
    expect(reg.lastError).toBe('SUPERLINK_REJECTED');
    expect(reg.lastErrorMessage).toContain('enroll the node again');
    const show = JSON.parse((await cli(['node', 'show', nodeId, '--data-dir', hub.paths.dataDir, '--json'])).stdout) as { flower: { summary: string } };
    expect(show.flower.summary).toBe('failed (SUPERLINK_REJECTED)');
  });
});
