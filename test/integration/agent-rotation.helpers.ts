// Helpers for the agent rotation integration tests (not a test file itself): a hub that publishes
// its real gRPC port (the agent dials the address recorded at enrollment), a state dir enrolled by
// the real `sepal-agent enroll --token` with a token from `sepal-hub token create`, and the
// checks that an identity on disk is a matching, valid pair that openssl verifies.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { IDENTITY_FILES } from '../../agent/enroll/store.ts';
import { REPO, cli, type TestHub } from '../helpers/hub.ts';

export const AGENT = path.join(REPO, 'agent/cli/main.ts');
const run = promisify(execFile);

/** `sepal-agent enroll --token` into `stateDir`; returns the node id. */
export async function enrollWithCli(hub: TestHub, stateDir: string, org = 'org-a'): Promise<string> {
  const t = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', org, '--json']);
  if (t.code !== 0) throw new Error(`token create failed: ${t.stderr}`);
  const token = (JSON.parse(t.stdout) as { token: string }).token;
  const child = spawn(process.execPath, [AGENT, 'enroll', '--hub', hub.httpsUrl, '--ca-sha256', hub.init.rootFingerprint, '--state-dir', stateDir, '--token', token, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const code = await new Promise<number | null>((resolve) => child.once('close', resolve));
  if (code !== 0) throw new Error(`sepal-agent enroll exited ${code}: ${stderr}`);
  return (JSON.parse(stdout.trimEnd().split('\n').at(-1) ?? '') as { nodeId: string }).nodeId;
}

/** What openssl says about identity/: `openssl verify -CAfile ca.pem -untrusted chain.pem tls.crt`. */
export async function opensslVerify(identityDir: string): Promise<string> {
  const f = (n: string): string => path.join(identityDir, n);
  const { stdout } = await run('openssl', ['verify', '-CAfile', f(IDENTITY_FILES.ca), '-untrusted', f(IDENTITY_FILES.chain), f(IDENTITY_FILES.tlsCert)], { encoding: 'utf8' });
  return stdout.trim();
}

/** The public key of tls.key and of tls.crt as openssl prints them (PEM SPKI). */
export async function opensslPublicKeys(identityDir: string): Promise<{ key: string; cert: string }> {
  const [key, cert] = await Promise.all([
    run('openssl', ['pkey', '-in', path.join(identityDir, IDENTITY_FILES.tlsKey), '-pubout'], { encoding: 'utf8' }),
    run('openssl', ['x509', '-in', path.join(identityDir, IDENTITY_FILES.tlsCert), '-noout', '-pubkey'], { encoding: 'utf8' }),
  ]);
  return { key: key.stdout, cert: cert.stdout };
}

export function serialOnDisk(identityDir: string): string {
  return new crypto.X509Certificate(fs.readFileSync(path.join(identityDir, IDENTITY_FILES.tlsCert))).serialNumber.toLowerCase();
}

/** The hub's audit entries for one node, in order. */
export async function auditFor(hub: TestHub, nodeId: string): Promise<Array<{ event: string; actor: string; detail: Record<string, unknown> }>> {
  const all = await hub.running.hub.ctx.store.readAudit(0, 100_000);
  return all.filter((e) => e.nodeId === nodeId).map((e) => ({ event: e.event, actor: e.actor, detail: JSON.parse(e.detail) as Record<string, unknown> }));
}
