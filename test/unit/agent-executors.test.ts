// The reconcile executors with the real runner and planner: datasets are verified before the
// SuperNode starts (a sha256 mismatch blocks the start and is a security event), the SuperNode runs
// under the supervisor with the adapter's argv and a Flower environment, a changed manifest
// restarts it, an unchanged one does not, and a stop ends the process. flower-supernode is a
// stand-in script here (the real one runs in test/e2e/flower.test.ts).
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeRuntime } from '../../agent/daemon/executors.ts';
import { ApplyRunner } from '../../agent/reconcile/runner.ts';
import { silentLogger } from '../../agent/log.ts';
import { systemClock } from '../../agent/runtime/clock.ts';
import { ErrorCodes, isAgentError } from '../../agent/errors.ts';
import { parseManifestBody, type ManifestBody } from '../../proto/manifest.ts';

let dir: string;
let fake: string;
let runtime: NodeRuntime;
let runner: ApplyRunner;
let events: Array<{ code: string; detail: Record<string, unknown> }>;

function body(over: Record<string, unknown> = {}): ManifestBody {
  const r = parseManifestBody({
    superlink: { address: '127.0.0.1:9092' },
    supernode: { nodeConfig: { 'partition-id': 0 } },
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    ...over,
  });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.value;
}

const launches = () => (fs.existsSync(path.join(dir, 'launches')) ? fs.readFileSync(path.join(dir, 'launches'), 'utf8').trim().split('\n') : []);
const lastEnv = () => JSON.parse(fs.readFileSync(path.join(dir, 'env.json'), 'utf8')) as Record<string, string>;

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 400 && !ok(); i++) await new Promise((r) => setTimeout(r, 50));
  if (!ok()) throw new Error(`timed out: ${what}`);
}

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-exec-'));
  fake = path.join(dir, 'bin', 'flower-supernode');
  fs.mkdirSync(path.dirname(fake));
  // Records each launch (argv on one line) and its environment, then stays up until signalled.
  fs.writeFileSync(fake, [
    '#!/bin/sh',
    'if [ "$1" = "--version" ]; then echo "Flower version: 1.23.0"; exit 0; fi',
    `echo "$*" >> "${dir}/launches"`,
    `node -e 'require("fs").writeFileSync(process.argv[1], JSON.stringify(process.env))' "${dir}/env.json" 2>/dev/null || env > "${dir}/env.txt"`,
    'exec sleep 600',
  ].join('\n') + '\n', { mode: 0o755 });
  events = [];
  runtime = new NodeRuntime({
    stateDir: path.join(dir, 'state'),
    flowerKeyPath: path.join(dir, 'state', 'identity', 'flower.key'),
    supernode: { command: fake, stopGraceMs: 2000, uncleanExitHoldoffMs: 0 },
    runtimeDir: path.join(dir, 'run'),
    openvpn: { command: 'openvpn', stopGraceMs: 2000, connectWaitMs: 0 },
    identity: () => null,
    fetchVpnSecret: () => Promise.reject(new Error('no VPN in these tests')),
    clock: systemClock,
    log: silentLogger(),
    env: { PATH: `${path.dirname(process.execPath)}${path.delimiter}/usr/bin${path.delimiter}/bin`, HOME: dir },
    onChange: () => undefined,
    onSecurityEvent: (code, detail) => events.push({ code, detail }),
  });
  runner = new ApplyRunner({ executors: runtime.executors(), observe: () => runtime.observe() });
});

afterEach(async () => {
  await runner.close();
  await runtime.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('NodeRuntime executors', () => {
  it('a dataset whose sha256 does not match blocks the SuperNode: DATASET_MISMATCH, a security event, nothing started', async () => {
    const data = path.join(dir, 'train.npz');
    fs.writeFileSync(data, 'the real bytes');
    const wrong = crypto.createHash('sha256').update('other bytes').digest('hex');
    const r = await runner.apply({ version: 1, body: body({ datasets: [{ name: 'train', path: data, sha256: wrong }] }) });
    expect(r.status).toBe('failed');
    if (r.status !== 'failed') return;
    expect(isAgentError(r.error, ErrorCodes.DATASET_MISMATCH)).toBe(true);
    expect(r.step?.kind).toBe('verify-dataset');
    expect(events.map((e) => e.code)).toEqual([ErrorCodes.DATASET_MISMATCH]);
    expect(events[0]?.detail['expected']).toBe(wrong);
    expect(launches()).toEqual([]);
    expect(runtime.children.supernode.state).toBe('not-configured');
  });

  it('a missing dataset blocks it too (DATASET_MISSING); once the right file is there the SuperNode starts with it', async () => {
    const data = path.join(dir, 'train.npz');
    const spec = { datasets: [{ name: 'train', path: data, sha256: crypto.createHash('sha256').update('ok').digest('hex') }] };
    const r1 = await runner.apply({ version: 1, body: body(spec) });
    expect(r1.status === 'failed' && isAgentError(r1.error, ErrorCodes.DATASET_MISSING)).toBe(true);
    fs.writeFileSync(data, 'ok');
    const r2 = await runner.apply({ version: 1, body: body(spec) });
    expect(r2.status).toBe('applied');
    await until('launch', () => launches().length === 1);
    const toml = fs.readFileSync(path.join(dir, 'state', 'supernode', 'node-config.toml'), 'utf8');
    expect(toml).toContain(`"dataset.train" = "${data}"`);
  });

  it('starts the SuperNode with the adapter argv and a Flower environment (telemetry off, its bin first on PATH)', async () => {
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status).toBe('applied');
    await until('running', () => runtime.children.supernode.state === 'running' && fs.existsSync(path.join(dir, 'env.json')));
    const argv = (launches()[0] ?? '').split(' ');
    expect(argv.slice(0, 2)).toEqual(['--superlink', '127.0.0.1:9092']);
    expect(argv).toContain('--auth-supernode-private-key');
    const env = lastEnv();
    expect(env['FLWR_TELEMETRY_ENABLED']).toBe('0');
    expect(env['FLWR_HOME']).toBe(path.join(dir, 'state', 'flwr'));
    expect(env['PATH']?.split(path.delimiter)[0]).toBe(path.dirname(fake));
    // The node config file is private to the agent's user.
    expect(fs.statSync(path.join(dir, 'state', 'supernode', 'node-config.toml')).mode & 0o077).toBe(0);
  });

  it('restarts the SuperNode only when its own inputs change', async () => {
    await runner.apply({ version: 1, body: body() });
    await until('first launch', () => launches().length === 1);
    // Same SuperNode inputs, newer version: nothing to do.
    const same = await runner.apply({ version: 2, body: body() });
    expect(same.status === 'applied' && same.steps).toEqual([]);
    // New node config: one clean restart with it.
    const changed = await runner.apply({ version: 3, body: body({ supernode: { nodeConfig: { 'partition-id': 1 } } }) });
    expect(changed.status === 'applied' && changed.steps.map((s) => s.kind)).toEqual(['restart-supernode']);
    await until('second launch', () => launches().length === 2);
    expect(fs.readFileSync(path.join(dir, 'state', 'supernode', 'node-config.toml'), 'utf8')).toContain('"partition-id" = 1');
    expect(runtime.children.supernode.restarts).toBe(0); // asked-for restarts are not crash restarts
  });

  it('stopping (revocation or shutdown) ends the process', async () => {
    await runner.apply({ version: 1, body: body() });
    await until('running', () => runtime.children.supernode.pid !== null && runtime.children.supernode.state === 'running');
    const pid = runtime.children.supernode.pid ?? 0;
    const r = await runner.apply(null);
    expect(r.status === 'applied' && r.steps.map((s) => s.kind)).toEqual(['stop-supernode']);
    expect(runtime.children.supernode.state).toBe('stopped');
    expect(() => process.kill(pid, 0)).toThrow();
  });

  it('an unsupported Flower fails the apply with FLOWER_VERSION_UNSUPPORTED and shows the child as failed', async () => {
    fs.writeFileSync(fake, '#!/bin/sh\necho "Flower version: 1.42.0"\n', { mode: 0o755 });
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status === 'failed' && isAgentError(r.error, ErrorCodes.FLOWER_VERSION_UNSUPPORTED)).toBe(true);
    expect(runtime.children.supernode).toMatchObject({ state: 'failed', errorCode: ErrorCodes.FLOWER_VERSION_UNSUPPORTED });
  });
});
