// `sepal-agent run` end to end against a real hub: an agent enrolled with a token runs as a
// child process, follows manifests published from the hub CLI, reports status the hub shows,
// serves metrics promtool accepts, and goes loudly 'revoked' when the hub revokes it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { cli, freePorts, metricValue, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { enrollWithToken, runAgentCli, startAgent, writeStandInSupernode, type RunningAgent } from '../helpers/agent.ts';
const MANIFEST = {
  superlink: { address: 'superlink.example.org:9092' },
  supernode: { nodeConfig: { 'partition-id': 0 } },
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};

let hub: TestHub;
let work: string;
let stateDir: string;
let metricsPort: number;
let daemon: RunningAgent | null = null;
let fakeSupernode = '';

function get(p: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    http.get(`http://127.0.0.1:${metricsPort}${p}`, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => { body += s; });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    }).on('error', reject);
  });
}

function statusFile(): { state: string; manifest: { version: number; lastResult: string | null }; hub: { connected: boolean }; children: Record<string, { state: string; pid?: number }> } | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(stateDir, 'status.json'), 'utf8')) as ReturnType<typeof statusFile>;
  } catch {
    return null;
  }
}

beforeAll(async () => {
  const [mPort] = await freePorts(1);
  metricsPort = mPort ?? 0;
  hub = await startTestHub({ fixedPorts: true });
  work = tempDir('sepal-daemon-it-');
  stateDir = path.join(work, 'state');
  await enrollWithToken(hub, 'org-d', stateDir, 'daemon-test');
  // A stand-in for flower-supernode (the real one runs in test/e2e/flower.test.ts): it answers
  // --version like Flower 1.23's flwr does, records its argv and stays up until signalled.
  fakeSupernode = writeStandInSupernode(path.join(work, 'bin'));
  // Defaults, except the SuperNode command and what the command line sets.
  daemon = startAgent({ configFile: path.join(work, 'agent.json'), config: { supernode: { command: fakeSupernode } }, stateDir, metricsPort });
});

afterAll(async () => {
  if (process.env['SEPAL_DEBUG'] !== undefined) console.log(daemon?.logs());
  await daemon?.stop(0);
  await hub?.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('sepal-agent run', () => {
  it('connects to the hub and serves health, readiness and metrics on loopback', async () => {
    await expect.poll(() => statusFile()?.hub.connected ?? false, { timeout: 15_000 }).toBe(true);
    expect((await get('/healthz')).status).toBe(200);
    const scrape = (await get('/metrics')).body;
    expect(metricValue(scrape, 'sepal_agent_hub_connected')).toBe(1);
    expect(metricValue(scrape, 'sepal_agent_revoked')).toBe(0);
    expect(metricValue(scrape, 'sepal_agent_cert_expiry_timestamp_seconds')).toBeGreaterThan(Date.now() / 1000);
  });

  it('applies a manifest published on the hub, reports it, and turns ready', async () => {
    const file = path.join(work, 'm.json');
    fs.writeFileSync(file, JSON.stringify(MANIFEST));
    const pub = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--org', 'org-d', '--file', file]);
    expect(pub.code, pub.stderr).toBe(0);
    await expect.poll(() => statusFile()?.manifest.version ?? 0, { timeout: 10_000 }).toBe(1);
    await expect.poll(() => statusFile()?.manifest.lastResult, { timeout: 10_000 }).toBe('applied');
    await expect.poll(async () => metricValue((await get('/metrics')).body, 'sepal_agent_manifest_version'), { timeout: 5000 }).toBe(1);
    await expect.poll(async () => (await get('/readyz')).status, { timeout: 15_000 }).toBe(200);
    // The SuperNode runs under the supervisor with the manifest's configuration, every value its
    // own argument, the node config as a TOML file.
    expect(metricValue((await get('/metrics')).body, 'sepal_agent_child_up', { child: 'supernode' })).toBe(1);
    const sn = statusFile()?.children['supernode'];
    expect(sn?.state).toBe('running');
    expect(sn?.pid).toBeGreaterThan(0);
    const argvFile = path.join(path.dirname(fakeSupernode), 'argv.txt');
    await expect.poll(() => fs.existsSync(argvFile), { timeout: 5000 }).toBe(true);
    const argv = fs.readFileSync(argvFile, 'utf8').trim().split('\n');
    expect(argv.slice(0, 2)).toEqual(['--superlink', 'superlink.example.org:9092']);
    expect(argv[argv.indexOf('--auth-supernode-private-key') + 1]).toBe(path.join(stateDir, 'identity', 'flower.key'));
    const toml = argv[argv.indexOf('--node-config') + 1] ?? '';
    expect(toml.endsWith('.toml')).toBe(true);
    expect(fs.readFileSync(toml, 'utf8')).toContain('"partition-id" = 0');
    expect(argv).not.toContain('--insecure');
    // the hub shows the agent's report
    await expect.poll(async () => {
      const list = await cli(['node', 'list', '--data-dir', hub.paths.dataDir, '--org', 'org-d', '--json']);
      const n = (JSON.parse(list.stdout) as { nodes: Array<{ status: { manifestVersion?: string; supernodeState?: string } | null }> }).nodes[0];
      return n?.status?.manifestVersion ?? null;
    }, { timeout: 10_000 }).toBe('1');
  });

  it('its scrape passes promtool check metrics', async () => {
    const promtool = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => fs.existsSync(p));
    if (promtool === undefined) {
      console.warn('promtool not installed: skipping the promtool assertion (.ci/run installs it)');
      return;
    }
    const scrape = (await get('/metrics')).body;
    execFileSync(promtool, ['check', 'metrics'], { input: scrape, stdio: ['pipe', 'pipe', 'pipe'] });
  });

  it('sepal-agent status and doctor read the same state', async () => {
    const st = await runAgentCli(['status', '--state-dir', stateDir, '--config', path.join(work, 'agent.json'), '--json']);
    expect(st.code, st.stderr).toBe(0);
    const parsed = JSON.parse(st.stdout) as { node: { org: string }; status: { manifest: { version: number } } };
    expect(parsed.node.org).toBe('org-d');
    expect(parsed.status.manifest.version).toBe(1);
    const doc = await runAgentCli(['doctor', '--state-dir', stateDir, '--config', path.join(work, 'agent.json')]);
    expect(doc.stdout).toMatch(/^ok +certificate: valid until/m);
    expect(doc.stdout).toMatch(/^ok +hub reachable/m);
    expect(doc.stdout).toMatch(/^ok +CA pin/m);
    expect(doc.code, doc.stdout).toBe(0);
  });

  it('a revocation on the hub makes the agent revoked, loudly, and SIGTERM stops it cleanly', async () => {
    const nodeId = (JSON.parse(fs.readFileSync(path.join(stateDir, 'identity', 'node.json'), 'utf8')) as { nodeId: string }).nodeId;
    // The SuperNode's pid before the revocation (the agent may stop it before the CLI returns).
    const snPid = statusFile()?.children['supernode']?.pid ?? 0;
    expect(snPid).toBeGreaterThan(0);
    const r = await cli(['node', 'revoke', nodeId, '--data-dir', hub.paths.dataDir]);
    expect(r.code).toBe(0);
    await expect.poll(() => statusFile()?.state, { timeout: 10_000 }).toBe('revoked');
    // the SuperNode is stopped: its process is gone
    await expect.poll(() => statusFile()?.children['supernode']?.state, { timeout: 15_000 }).toBe('stopped');
    expect(() => process.kill(snPid, 0)).toThrow();
    expect(metricValue((await get('/metrics')).body, 'sepal_agent_revoked')).toBe(1);
    expect(daemon?.logs()).toContain('"event":"node.revoked"');
    // files are kept
    expect(fs.existsSync(path.join(stateDir, 'identity', 'tls.key'))).toBe(true);
    expect(await daemon?.stop(20_000)).toBe(0);
    expect(statusFile()?.state).toBe('stopped');
  });
});
