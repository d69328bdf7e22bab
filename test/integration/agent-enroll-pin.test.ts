// `sepal-agent enroll` as a child process against a real hub on loopback: the root CA pin decides
// everything (a wrong pin writes nothing), the hub's refusals come back as its own codes, and an
// enrollment token from `sepal-hub token create` yields an identity that openssl and ssh-keygen
// accept; enrolling again is refused unless --force, which makes a new node.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync, spawn } from 'node:child_process';
import { ErrorCodes } from '../../proto/errors.ts';
import { AgentError } from '../../agent/errors.ts';
import { callEnroll } from '../../agent/enroll/hub-client.ts';
import { collectFacts } from '../../agent/enroll/facts.ts';
import { createCaMaterial } from '../../hub/ca/bootstrap.ts';
import { REPO, cli, freePorts, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';

const AGENT = path.join(REPO, 'agent/cli/main.ts');

interface Run { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }

function agent(args: string[]): Promise<Run> {
  const child = spawn(process.execPath, [AGENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  return new Promise((resolve) => child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr })));
}

let hub: TestHub;
let work: string;
let pin: string;
beforeAll(async () => {
  // The agent dials the grpc_address the hub publishes, so the hub must publish its real port.
  hub = await startTestHub({ fixedPorts: true });
  work = tempDir('sepal-agent-it-');
  pin = hub.init.rootFingerprint;
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

let seq = 0;
function stateDir(): string {
  return path.join(work, `state-${++seq}`);
}

function base(dir: string, fingerprint = pin): string[] {
  return ['enroll', '--hub', hub.httpsUrl, '--ca-sha256', fingerprint, '--state-dir', dir];
}

async function createToken(org: string): Promise<string> {
  const r = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', org, '--json']);
  expect(r.code, r.stderr).toBe(0);
  return (JSON.parse(r.stdout) as { token: string }).token;
}

function mode(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

describe('sepal-agent enroll against a real hub', () => {
  it('a wrong --ca-sha256 is CA_FINGERPRINT_MISMATCH: both fingerprints printed, nothing written', async () => {
    const dir = stateDir();
    const wrong = crypto.createHash('sha256').update('not the root').digest('hex');
    const r = await agent([...base(dir, wrong), '--token', 'garbage']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.CA_FINGERPRINT_MISMATCH}: `, 'm'));
    expect(r.stderr).toContain(pin);
    expect(r.stderr).toContain(wrong);
    expect(r.stdout).toBe('');
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('the right pin, in any spelling, gets as far as the hub, which refuses a garbage token with its own code', async () => {
    const dir = stateDir();
    const spelled = pin.toUpperCase().match(/../g)?.join(':') ?? pin;
    const r = await agent([...base(dir, spelled), '--token', 'garbage']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.ENROLLMENT_TOKEN_INVALID}: `, 'm'));
    expect(fs.existsSync(path.join(dir, 'identity'))).toBe(false);
  });

  it('enrolls with a token from `sepal-hub token create`; again is ALREADY_ENROLLED; --force makes a new node', async () => {
    const dir = stateDir();
    const r = await agent([...base(dir), '--token', await createToken('org-a'), '--name', 'lab-host-1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trimEnd().split('\n');
    const out = JSON.parse(lines.at(-1) ?? '') as { nodeId: string; org: string; certNotAfter: string; stateDir: string };
    expect(Object.keys(out).sort()).toEqual(['certNotAfter', 'nodeId', 'org', 'stateDir']);
    expect(out.nodeId).toMatch(/^n-[0-9a-f]{16}$/);
    expect(out.org).toBe('org-a');
    expect(out.stateDir).toBe(dir);
    expect(Date.parse(out.certNotAfter)).toBeGreaterThan(Date.now());

    const id = path.join(dir, 'identity');
    expect(mode(dir)).toBe(0o700);
    expect(mode(id)).toBe(0o700);
    expect(Object.fromEntries(fs.readdirSync(id).sort().map((f) => [f, mode(path.join(id, f))]))).toEqual({
      'ca.pem': 0o644, 'chain.pem': 0o644, 'flower.key': 0o600, 'flower.pub': 0o644, 'node.json': 0o644, 'tls.crt': 0o644, 'tls.key': 0o600,
    });
    const verify = execFileSync('openssl', ['verify', '-CAfile', path.join(id, 'ca.pem'), '-untrusted', path.join(id, 'chain.pem'), path.join(id, 'tls.crt')], { encoding: 'utf8' });
    expect(verify.trim()).toBe(`${path.join(id, 'tls.crt')}: OK`);
    const subject = execFileSync('openssl', ['x509', '-in', path.join(id, 'tls.crt'), '-noout', '-subject', '-nameopt', 'RFC2253'], { encoding: 'utf8' });
    expect(subject.trim()).toBe(`subject=CN=${out.nodeId},O=org-a`);
    expect(crypto.createHash('sha256').update(new crypto.X509Certificate(fs.readFileSync(path.join(id, 'ca.pem'))).raw).digest('hex')).toBe(pin);
    const pub = fs.readFileSync(path.join(id, 'flower.pub'), 'utf8').trim();
    expect(execFileSync('ssh-keygen', ['-y', '-f', path.join(id, 'flower.key')], { encoding: 'utf8' }).trim()).toBe(pub);
    const node = JSON.parse(fs.readFileSync(path.join(id, 'node.json'), 'utf8')) as Record<string, unknown>;
    expect(node).toMatchObject({ nodeId: out.nodeId, org: 'org-a', name: 'lab-host-1', caSha256: pin, grpcAddress: hub.grpcTarget, federationId: hub.init.config.federationId });
    // The hub registered this node with our Flower key.
    const registered = await hub.running.hub.ctx.store.getNode(out.nodeId);
    expect(registered?.flowerPublicKey).toBe(pub.split(' ').slice(0, 2).join(' '));

    const again = await agent([...base(dir), '--token', await createToken('org-a')]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(new RegExp(`^error ${ErrorCodes.ALREADY_ENROLLED}: .*${out.nodeId}`, 'm'));

    const forced = await agent([...base(dir), '--token', await createToken('org-a'), '--force']);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toContain(`enrolling as a NEW node; the old node ${out.nodeId} stays registered at the hub until revoked`);
    const newId = (JSON.parse(fs.readFileSync(path.join(id, 'node.json'), 'utf8')) as { nodeId: string }).nodeId;
    expect(newId).not.toBe(out.nodeId);
    expect(forced.stdout).toContain(`Enrolled: node ${newId} in organisation org-a.`);
    expect(forced.stdout).toContain('sudo systemctl enable --now sepal-agent');
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.identity'))).toEqual([]);
  });

  it('a manifest published to the organisation before enrollment is stored as manifest/current.jws', async () => {
    const manifest = {
      superlink: { address: 'superlink.example.org:9092' },
      supernode: { nodeConfig: { 'partition-id': 0 } },
      datasets: [],
      privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    };
    const file = path.join(work, 'manifest.json');
    fs.writeFileSync(file, JSON.stringify(manifest));
    const pub = await cli(['manifest', 'publish', '--org', 'org-m', '--file', file, '--data-dir', hub.paths.dataDir]);
    expect(pub.code, pub.stderr).toBe(0);
    const dir = stateDir();
    const r = await agent([...base(dir), '--token', await createToken('org-m'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const { nodeId } = JSON.parse(r.stdout.trimEnd().split('\n').at(-1) ?? '') as { nodeId: string };
    const jws = fs.readFileSync(path.join(dir, 'manifest', 'current.jws'), 'utf8').trim();
    const claims = JSON.parse(Buffer.from(jws.split('.')[1] ?? '', 'base64url').toString()) as { sub: string; org: string; manifest: unknown };
    expect(claims.sub).toBe(nodeId);
    expect(claims.org).toBe('org-m');
    expect(claims.manifest).toMatchObject({ superlink: manifest.superlink });
  });

  it('a hub that is not there is HUB_UNREACHABLE naming the address; bad flags are exit 2', async () => {
    const [port] = await freePorts(1);
    const r = await agent(['enroll', '--hub', `https://127.0.0.1:${port}`, '--ca-sha256', pin, '--state-dir', stateDir(), '--token', 't']);
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.HUB_UNREACHABLE}: .*127\\.0\\.0\\.1:${port}`, 'm'));
    const u = await agent(['enroll', '--hub', hub.httpsUrl]);
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/^usage error: --ca-sha256 is required/m);
    const v = await agent(['--version']);
    expect(v.code).toBe(0);
    expect(v.stdout.trim()).toMatch(/^\d+\.\d+\.\d+$/);
  });

  it('the gRPC channel trusts only the pinned root: the hub is unverifiable under another root', async () => {
    const foreign = createCaMaterial({ hostnames: ['localhost'], federationId: 'other', now: new Date() });
    const call = { csrDer: Buffer.from('30', 'hex'), flowerPublicKey: '', facts: collectFacts(), credential: { enrollmentToken: 'x' }, name: 'n', org: '' };
    const err = await callEnroll(hub.grpcTarget, foreign.rootCert, call).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(AgentError);
    expect((err as AgentError).code).toBe(ErrorCodes.HUB_UNREACHABLE);
    expect((err as AgentError).message).toContain(hub.grpcTarget);
    // Under the pinned root the same call reaches the hub, which answers with its own code.
    const ok = await callEnroll(hub.grpcTarget, hub.running.hub.ctx.authority.bundlePem.split(/(?<=-----END CERTIFICATE-----\n)/)[0] ?? '', call).then(() => null, (e: unknown) => e);
    expect((ok as AgentError).code).toBe(ErrorCodes.ENROLLMENT_TOKEN_INVALID);
  });
});
