// `sepal-agent enroll` without --token: the OAuth device flow against a real OpenID provider
// (oidc-provider on loopback) and a real hub that verifies the access token. The child's stdout is
// not a terminal, so it prints one `key: value` line per fact; the test reads the user code there
// and approves or denies it through the provider's own pages, as a person would.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { ErrorCodes } from '../../proto/errors.ts';
import { REPO, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { startTestIdp, type TestIdp } from '../helpers/oidc.ts';

const AGENT = path.join(REPO, 'agent/cli/main.ts');
const AUDIENCE = 'https://hub.sepal.test';
const CLIENT_ID = 'sepal-agent';
const USERS = [
  { id: 'alice', password: 'alice-pw', org: 'org-a', roles: ['sepal-enroll'] },
  { id: 'mallory', password: 'mallory-pw', org: 'org-a', roles: [] },
];

interface Agent {
  readonly child: ChildProcess;
  /** Resolves with the parsed facts once `expires_in:` (the last one) has been printed. */
  readonly prompt: Promise<Record<string, string>>;
  readonly done: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

function agent(args: string[]): Agent {
  const child = spawn(process.execPath, [AGENT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let onPrompt: (facts: Record<string, string>) => void = () => undefined;
  const prompt = new Promise<Record<string, string>>((resolve) => { onPrompt = resolve; });
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    stdout += s;
    const facts: Record<string, string> = {};
    for (const m of stdout.matchAll(/^([a-z_]+): (.*)$/gm)) facts[m[1] ?? ''] = m[2] ?? '';
    if ('expires_in' in facts) onPrompt(facts);
  });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.once('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
  return { child, prompt, done };
}

async function startHubFor(idp: TestIdp): Promise<TestHub> {
  return startTestHub({
    fixedPorts: true,
    configure: (c) => ({
      ...c,
      idp: {
        issuer: idp.issuer, clientId: CLIENT_ID, audience: AUDIENCE, scopes: ['openid', 'enroll'],
        algorithms: ['ES256'], roleClaim: 'realm_access.roles', orgClaim: 'org', enrollRole: 'sepal-enroll', adminRole: 'sepal-admin',
        clockToleranceSeconds: 30,
      },
    }),
  });
}

let idp: TestIdp;
let hub: TestHub;
let work: string;
beforeAll(async () => {
  idp = await startTestIdp({ clientId: CLIENT_ID, audience: AUDIENCE, users: USERS, pollIntervalSeconds: 1 });
  hub = await startHubFor(idp);
  work = tempDir('sepal-agent-device-');
});
afterAll(async () => {
  await hub.stop();
  await idp.close();
  fs.rmSync(work, { recursive: true, force: true });
});

let seq = 0;
function enrollArgs(h: TestHub = hub): { dir: string; args: string[] } {
  const dir = path.join(work, `state-${++seq}`);
  return { dir, args: ['enroll', '--hub', h.httpsUrl, '--ca-sha256', h.init.rootFingerprint, '--state-dir', dir] };
}

describe('sepal-agent enroll with the device flow', () => {
  it('prints one line per fact, and once the user approves, enrolls into the user\'s organisation', async () => {
    const { dir, args } = enrollArgs();
    const a = agent([...args, '--json']);
    const facts = await a.prompt;
    expect(Object.keys(facts)).toEqual(['verification_uri', 'user_code', 'verification_uri_complete', 'expires_in']);
    expect(facts['verification_uri']).toBe(`${idp.issuer}/device`);
    expect(facts['verification_uri_complete']).toContain(facts['user_code']);
    expect(Number(facts['expires_in'])).toBeGreaterThan(0);
    await idp.approve(facts['user_code'] ?? '', 'alice', 'alice-pw');
    const r = await a.done;
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout.trimEnd().split('\n').at(-1) ?? '') as { nodeId: string; org: string };
    expect(out.org).toBe('org-a');
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'identity', 'node.json'), 'utf8'))).toMatchObject({ nodeId: out.nodeId, org: 'org-a' });
    // No QR code and no countdown without a terminal: every stdout line is a fact or the result.
    expect(r.stdout.trimEnd().split('\n')).toHaveLength(5);
  });

  it('a denied login is DEVICE_ACCESS_DENIED and writes nothing', async () => {
    const { dir, args } = enrollArgs();
    const a = agent(args);
    const facts = await a.prompt;
    await idp.deny(facts['user_code'] ?? '', 'alice', 'alice-pw');
    const r = await a.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.DEVICE_ACCESS_DENIED}: `, 'm'));
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('a user without the enroll role gets through the IdP but the hub refuses: ROLE_MISSING', async () => {
    const { dir, args } = enrollArgs();
    const a = agent(args);
    await idp.approve((await a.prompt)['user_code'] ?? '', 'mallory', 'mallory-pw');
    const r = await a.done;
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.ROLE_MISSING}: `, 'm'));
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('Ctrl-C while waiting for approval exits 130 with CANCELLED and writes nothing', async () => {
    const { dir, args } = enrollArgs();
    const a = agent(args);
    await a.prompt;
    a.child.kill('SIGINT');
    const r = await a.done;
    expect(r.code).toBe(130);
    expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.CANCELLED}: `, 'm'));
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('SIGTERM does the same', async () => {
    const { dir, args } = enrollArgs();
    const a = agent(args);
    await a.prompt;
    a.child.kill('SIGTERM');
    const r = await a.done;
    expect(r.code).toBe(130);
    expect(fs.existsSync(dir)).toBe(false);
  });

  it('a code nobody approves in time is DEVICE_CODE_EXPIRED', async () => {
    const shortIdp = await startTestIdp({ clientId: CLIENT_ID, audience: AUDIENCE, users: USERS, pollIntervalSeconds: 1, deviceCodeTtlSeconds: 2 });
    const shortHub = await startHubFor(shortIdp);
    try {
      const { dir, args } = enrollArgs(shortHub);
      const a = agent(args);
      expect((await a.prompt)['expires_in']).toBe('2');
      const r = await a.done;
      expect(r.code).toBe(1);
      expect(r.stderr).toMatch(new RegExp(`^error ${ErrorCodes.DEVICE_CODE_EXPIRED}: `, 'm'));
      expect(fs.existsSync(dir)).toBe(false);
    } finally {
      await shortHub.stop();
      await shortIdp.close();
    }
  });
});
