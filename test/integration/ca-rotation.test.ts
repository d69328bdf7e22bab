// A root rotation of a running federation, end to end: a hub serving (in this process) with
// 60-second certificates, two real `sepal-agent run` processes renewing on their own, and every
// `sepal-hub ca` step run from the CLI in another process, as an operator would. Nothing is
// restarted; no renewal may fail; each agent ends up trusting the new root only.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import tls from 'node:tls';
import { cli, freePorts, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { enrollWithToken, runAgentCli, startAgent, writeStandInSupernode, type RunningAgent } from '../helpers/agent.ts';
import { ErrorCodes } from '../../proto/errors.ts';

interface Agent {
  readonly name: string;
  readonly stateDir: string;
  run: RunningAgent | null;
}

let hub: TestHub;
let work: string;
const agents: Agent[] = [];

function certs(file: string): crypto.X509Certificate[] {
  const text = fs.readFileSync(file, 'utf8');
  return [...text.matchAll(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g)].map((m) => new crypto.X509Certificate(m[0]));
}

const sha256 = (c: crypto.X509Certificate): string => crypto.hash('sha256', c.raw, 'hex');

/** SHA-256 of the roots in the agent's ca.pem, and the issuing CA its certificate came from. */
function trustOf(a: Agent): { roots: string[]; issuer: string; serial: string } {
  const id = path.join(a.stateDir, 'identity');
  const leaf = certs(path.join(id, 'tls.crt'))[0]!;
  const chain = certs(path.join(id, 'chain.pem'));
  return { roots: certs(path.join(id, 'ca.pem')).map(sha256), issuer: chain.find((c) => leaf.checkIssued(c))?.fingerprint256 ?? '?', serial: leaf.serialNumber };
}

async function caStatus(): Promise<{ rootSha256: string; rows: Array<{ role: string; state: string; sha256: string; keyId: string }>; nodesNotRenewed: string[] | null }> {
  const r = await cli(['ca', 'status', '--data-dir', hub.paths.dataDir, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as Awaited<ReturnType<typeof caStatus>>;
}

/** The certificate chain the hub's HTTPS listener presents now, verified against `caPem` only. */
function servedChain(caPem: string): Promise<crypto.X509Certificate[]> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({ host: '127.0.0.1', port: hub.running.httpsPort, servername: 'localhost', ca: caPem, minVersion: 'TLSv1.3' }, () => {
      const out: crypto.X509Certificate[] = [];
      let c = s.getPeerCertificate(true) as tls.DetailedPeerCertificate | undefined;
      while (c?.raw !== undefined && !out.some((x) => x.raw.equals(c!.raw))) {
        out.push(new crypto.X509Certificate(c.raw));
        c = c.issuerCertificate;
      }
      s.end();
      resolve(out);
    });
    s.once('error', reject);
  });
}

const pemOf = (cs: readonly crypto.X509Certificate[]): string => cs.map((c) => c.toString()).join('');

function renewFailures(): string[] {
  return agents.flatMap((a) => (a.run?.logs() ?? '').split('\n').filter((l) => l.includes('"event":"cert.renew_failed"') || l.includes('"event":"cert.expired"')));
}

beforeAll(async () => {
  const [m1, m2] = await freePorts(2);
  hub = await startTestHub({
    fixedPorts: true,
    configure: (c) => ({
      ...c,
      certificates: { ...c.certificates, leafLifetimeSeconds: 60 },
    }),
  });
  work = tempDir('sepal-ca-rotation-');
  const supernode = writeStandInSupernode(path.join(work, 'bin'));
  for (const [i, port] of [m1, m2].entries()) {
    const a: Agent = { name: `rot-${i}`, stateDir: path.join(work, `state-${i}`), run: null };
    await enrollWithToken(hub, 'org-r', a.stateDir, a.name);
    a.run = startAgent({ configFile: path.join(work, `agent-${i}.json`), config: { supernode: { command: supernode } }, stateDir: a.stateDir, metricsPort: port ?? 0 });
    agents.push(a);
  }
});

afterAll(async () => {
  if (process.env['SEPAL_DEBUG'] !== undefined) for (const a of agents) console.log(a.run?.logs());
  await Promise.all(agents.map(async (a) => a.run?.stop(0)));
  await hub?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('root rotation of a running federation', () => {
  it('prepare → every node renews and trusts both roots → activate → nodes move to the new CA → prune → the new root alone, with no failed renewal', async () => {
    const oldRoot = fs.readFileSync(hub.paths.rootCert, 'utf8');
    const oldRootSha = hub.init.rootFingerprint;
    for (const a of agents) expect(trustOf(a).roots).toEqual([oldRootSha]);

    const prep = await cli(['ca', 'prepare-root', '--data-dir', hub.paths.dataDir, '--json']);
    expect(prep.code, prep.stderr).toBe(0);
    const newRootSha = (JSON.parse(prep.stdout) as { root: { sha256: string } }).root.sha256;

    // Too early: both nodes still trust the old root alone.
    const early = await cli(['ca', 'activate', '--data-dir', hub.paths.dataDir]);
    expect(early.code).toBe(1);
    expect(early.stderr).toMatch(new RegExp(`^error ${ErrorCodes.CA_NODES_NOT_RENEWED}\\b`, 'm'));
    expect((await caStatus()).nodesNotRenewed).toHaveLength(2);

    // Each node's next renewal brings the new root, vouched for by the old one.
    const t0 = Date.now();
    for (const a of agents) await expect.poll(() => trustOf(a).roots.sort(), { timeout: 90_000, interval: 500 }).toEqual([oldRootSha, newRootSha].sort());
    console.log(`both nodes trust the new root ${((Date.now() - t0) / 1000).toFixed(1)} s after prepare-root`);
    await expect.poll(async () => (await caStatus()).nodesNotRenewed, { timeout: 10_000 }).toEqual([]);

    const before = await servedChain(oldRoot);
    const act = await cli(['ca', 'activate', '--data-dir', hub.paths.dataDir, '--json']);
    expect(act.code, act.stderr).toBe(0);
    const activated = JSON.parse(act.stdout) as { issuingKeyId: string; rootSha256: string };
    expect(activated.rootSha256).toBe(newRootSha);
    const status = await caStatus();
    expect(status.rootSha256).toBe(newRootSha);
    const newIssuing = status.rows.find((r) => r.role === 'issuing' && r.state === 'active');
    expect(newIssuing?.keyId).toBe(activated.issuingKeyId);

    // serve switched its server certificate without a restart: under the new root now.
    const newRootPem = pemOf(certs(hub.paths.rootCert).filter((c) => sha256(c) === newRootSha));
    await expect.poll(async () => (await servedChain(newRootPem).catch(() => []))[0]?.serialNumber, { timeout: 10_000 }).not.toBe(before[0]?.serialNumber);
    await expect(servedChain(oldRoot)).rejects.toThrow();

    // Every node renews onto the new issuing CA by itself.
    const t1 = Date.now();
    for (const a of agents) {
      await expect.poll(() => {
        const issuer = certs(path.join(a.stateDir, 'identity', 'chain.pem'))[0];
        return issuer === undefined ? '' : crypto.hash('sha256', issuer.raw, 'hex');
      }, { timeout: 90_000, interval: 500 }).toBe(newIssuing?.sha256);
    }
    console.log(`both nodes hold certificates of the new issuing CA ${((Date.now() - t1) / 1000).toFixed(1)} s after activate`);

    // prune keeps the old root while a certificate under it is valid, then removes it.
    const kept = await cli(['ca', 'prune', '--data-dir', hub.paths.dataDir, '--json']);
    expect(kept.code, kept.stderr).toBe(0);
    expect((JSON.parse(kept.stdout) as { removedRoots: string[]; kept: unknown[] }).kept).toHaveLength(1);
    await expect.poll(async () => {
      const r = await cli(['ca', 'prune', '--data-dir', hub.paths.dataDir, '--json']);
      return (JSON.parse(r.stdout) as { removedRoots: string[] }).removedRoots.length;
    }, { timeout: 90_000, interval: 2000 }).toBe(1);
    expect((await caStatus()).rows.filter((r) => r.role === 'root').map((r) => r.sha256)).toEqual([newRootSha]);

    // The next renewal drops the old root from each node's trust.
    for (const a of agents) await expect.poll(() => trustOf(a).roots, { timeout: 90_000, interval: 500 }).toEqual([newRootSha]);

    expect(renewFailures()).toEqual([]);
    for (const a of agents) {
      expect(a.run?.child.exitCode).toBeNull();
      const st = JSON.parse(fs.readFileSync(path.join(a.stateDir, 'status.json'), 'utf8')) as { hub: { connected: boolean } };
      expect(st.hub.connected).toBe(true);
      const doctor = await runAgentCli(['doctor', '--state-dir', a.stateDir]);
      expect(doctor.stdout).toMatch(/^ok {4}CA pin: the federation root was rotated since enrollment/m);
    }

    // New enrollments pin the new root; the retired fingerprint no longer matches anything.
    const late = path.join(work, 'state-late');
    const tok = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', 'org-r', '--json']);
    const token = (JSON.parse(tok.stdout) as { token: string }).token;
    const refused = await runAgentCli(['enroll', '--hub', hub.httpsUrl, '--ca-sha256', oldRootSha, '--token', token, '--state-dir', late, '--name', 'late']);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(new RegExp(`\\b${ErrorCodes.CA_FINGERPRINT_MISMATCH}\\b`));
    const ok = await runAgentCli(['enroll', '--hub', hub.httpsUrl, '--ca-sha256', newRootSha, '--token', token, '--state-dir', late, '--name', 'late']);
    expect(ok.code, ok.stderr).toBe(0);
  }, 420_000);
});
