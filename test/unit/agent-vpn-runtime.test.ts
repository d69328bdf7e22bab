// The VPN child through the reconcile executors (real planner and runner): the tls-crypt key is
// fetched by its ref and written with the identity's files (0600 in a 0700 dir), OpenVPN runs under
// the supervisor with `--config FILE` and the VPN comes up before the SuperNode; its management
// interface drives the tunnel state, byte counts and connect times; a rotation rewrites cert/key and
// sends SIGUSR1 and the gap is measured; stop ends the process. Coded failures: OpenVPN missing,
// no TUN device, a bad or unavailable tls-crypt key (the key fetched earlier covers a hub outage),
// and a server that refuses the certificate. `openvpn` and `flower-supernode` are stand-ins here
// (agent-vpn.fixtures.ts); the real OpenVPN runs in agent-vpn-config.test.ts and test/e2e.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { NodeRuntime } from '../../agent/daemon/executors.ts';
import { ApplyRunner } from '../../agent/reconcile/runner.ts';
import { systemClock } from '../../agent/runtime/clock.ts';
import { AgentError, ErrorCodes, isAgentError } from '../../agent/errors.ts';
import type { VpnEvent, VpnIdentity } from '../../agent/vpn/runtime.ts';
import { checkTlsCryptKey } from '../../agent/vpn/runtime.ts';
import { parseManifestBody, type ManifestBody } from '../../proto/manifest.ts';
import { capturingLogger } from './agent-credentials.fixtures.ts';
import { tlsCryptKeyFile, writeFakeOpenvpn } from './agent-vpn.fixtures.ts';

/** A stand-in key file body (no key material; the label is split so key scanners see no key). */
const fakeKeyPem = (body: string): string => `-----BEGIN ${'PRIVATE'} KEY-----\n${body}\n-----END ${'PRIVATE'} KEY-----\n`;

let dir: string;
let openvpn: string;
let runtime: NodeRuntime;
let runner: ApplyRunner;
let identity: VpnIdentity;
let secret: string;
let fetches: string[];
let fetchFails: AgentError | null;
let vpnEvents: VpnEvent[];
let logs: () => Array<Record<string, unknown>>;

const cert = (n: number) => `-----BEGIN CERTIFICATE-----\nLEAF-${n}\n-----END CERTIFICATE-----\n`;

function body(vpn: Record<string, unknown> | null = {}): ManifestBody {
  const r = parseManifestBody({
    superlink: { address: '10.8.0.1:9092' },
    supernode: { nodeConfig: {} },
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    ...(vpn === null ? {} : {
      vpn: {
        remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }],
        tlsCryptKeyRef: 'fed/tls-crypt',
        routes: ['10.8.0.0/24'],
        superlinkAddress: '10.8.0.1:9092',
        ...vpn,
      },
    }),
  });
  if (!r.ok) throw new Error(JSON.stringify(r.issues));
  return r.value;
}

function make(over: { command?: string; tunDevice?: string | null; connectWaitMs?: number } = {}): void {
  const cap = capturingLogger();
  logs = cap.lines;
  runtime = new NodeRuntime({
    stateDir: path.join(dir, 'state'),
    flowerKeyPath: path.join(dir, 'state', 'identity', 'flower.key'),
    supernode: { command: path.join(dir, 'bin', 'flower-supernode'), stopGraceMs: 2000, uncleanExitHoldoffMs: 0 },
    runtimeDir: path.join(dir, 'run'),
    openvpn: { command: over.command ?? openvpn, stopGraceMs: 2000, connectWaitMs: over.connectWaitMs ?? 5000 },
    identity: () => identity,
    fetchVpnSecret: (ref) => {
      fetches.push(ref);
      return fetchFails === null ? Promise.resolve(Buffer.from(secret)) : Promise.reject(fetchFails);
    },
    onVpnEvent: (e) => vpnEvents.push(e),
    tunDevice: over.tunDevice === undefined ? null : over.tunDevice,
    clock: systemClock,
    log: cap.log,
    env: { PATH: `${path.dirname(process.execPath)}${path.delimiter}/usr/bin${path.delimiter}/bin`, HOME: dir },
    onChange: () => undefined,
    onSecurityEvent: () => undefined,
  });
  runner = new ApplyRunner({ executors: runtime.executors(), observe: () => runtime.observe() });
}

async function until(what: string, ok: () => boolean): Promise<void> {
  for (let i = 0; i < 800 && !ok(); i++) await new Promise((r) => setTimeout(r, 25));
  if (!ok()) throw new Error(`timed out: ${what}`);
}

const file = (name: string) => path.join(dir, name);
const read = (name: string) => (fs.existsSync(file(name)) ? fs.readFileSync(file(name), 'utf8') : '');
const vpnDir = () => path.join(dir, 'state', 'vpn');

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-vpnrt-'));
  fs.mkdirSync(path.join(dir, 'bin'));
  openvpn = writeFakeOpenvpn(dir);
  fs.writeFileSync(path.join(dir, 'bin', 'flower-supernode'), [
    '#!/bin/sh',
    'if [ "$1" = "--version" ]; then echo "Flower version: 1.23.0"; exit 0; fi',
    `echo "supernode" >> "${dir}/launches"`,
    'exec sleep 600',
  ].join('\n') + '\n', { mode: 0o755 });
  identity = { keyPem: fakeKeyPem('KEY-1'), certPem: cert(1), chainPem: cert(100), caPem: cert(1000) };
  secret = tlsCryptKeyFile();
  fetches = [];
  fetchFails = null;
  vpnEvents = [];
  make();
});

afterEach(async () => {
  await runner.close();
  await runtime.close();
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('the VPN child', () => {
  it('fetches the tls-crypt key, writes the files privately, runs openvpn --config and waits for CONNECTED before the SuperNode', async () => {
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status === 'applied' && r.steps.map((s) => s.kind)).toEqual(['write-vpn-config', 'start-vpn', 'start-supernode']);
    expect(fetches).toEqual(['fed/tls-crypt']);
    // The VPN was connected when start-vpn returned, i.e. before the SuperNode was started.
    expect(vpnEvents.some((e) => e.type === 'connected')).toBe(true);
    await until('supernode launched', () => read('launches').trim().split('\n').length === 2);
    expect(read('launches').trim().split('\n')).toEqual([JSON.stringify(['--config', path.join(vpnDir(), 'client.conf')]), 'supernode']);
    expect(runtime.children.vpn).toMatchObject({ state: 'running', tunnel: 'connected', errorCode: null });
    expect(fs.statSync(vpnDir()).mode & 0o777).toBe(0o700);
    for (const f of ['client.conf', 'ca.pem', 'client.crt', 'client.key', 'tls-crypt.key', 'tls-crypt.ref']) {
      expect(fs.statSync(path.join(vpnDir(), f)).mode & 0o777, f).toBe(0o600);
    }
    expect(fs.readFileSync(path.join(vpnDir(), 'tls-crypt.key'), 'utf8')).toBe(secret);
    expect(fs.readFileSync(path.join(vpnDir(), 'client.crt'), 'utf8')).toBe(cert(1) + cert(100));
    expect(fs.readFileSync(path.join(vpnDir(), 'ca.pem'), 'utf8')).toBe(cert(1000) + cert(100));
    expect(fs.readFileSync(path.join(vpnDir(), 'client.conf'), 'utf8')).toContain(`management "${path.join(dir, 'run', 'openvpn.sock')}" unix`);
    await until('bytes', () => vpnEvents.some((e) => e.type === 'bytes'));
    expect(vpnEvents).toContainEqual({ type: 'tunnel', state: 'CONNECTED' });
    expect(vpnEvents).toContainEqual({ type: 'bytes', received: 1000, sent: 2000 });
    expect(vpnEvents.some((e) => e.type === 'connected')).toBe(true);
    // No key material in the log.
    const logText = JSON.stringify(logs());
    expect(logText).not.toContain(secret.split('\n')[4]);
    expect(logText).not.toContain('KEY-1');
  });

  it('an unchanged vpn section restarts nothing; a changed one rewrites the config and restarts openvpn', async () => {
    await runner.apply({ version: 1, body: body() });
    const same = await runner.apply({ version: 2, body: body() });
    expect(same.status === 'applied' && same.steps).toEqual([]);
    const changed = await runner.apply({ version: 3, body: body({ routes: ['10.8.0.0/24', '10.77.0.0/16'] }) });
    expect(changed.status === 'applied' && changed.steps.map((s) => s.kind)).toEqual(['write-vpn-config', 'restart-vpn']);
    expect(read('launches').split('\n').filter((l) => l.startsWith('[')).length).toBe(2);
    expect(fs.readFileSync(path.join(vpnDir(), 'client.conf'), 'utf8')).toContain('route 10.77.0.0 255.255.0.0');
    await until('connected again', () => runtime.children.vpn.tunnel === 'connected');
  });

  it('a rotation rewrites cert and key, then SIGUSR1 through the management interface; the gap to CONNECTED is reported', async () => {
    await runner.apply({ version: 1, body: body() });
    identity = { ...identity, certPem: cert(2), keyPem: fakeKeyPem('KEY-2') };
    await runtime.rotated();
    await until('reconnected', () => vpnEvents.some((e) => e.type === 'reconnected'));
    // When OpenVPN got the signal the new certificate was already in place.
    expect(read('usr1-certs').trim()).toBe('LEAF-2');
    expect(fs.readFileSync(path.join(vpnDir(), 'client.key'), 'utf8')).toContain('KEY-2');
    const gap = vpnEvents.find((e) => e.type === 'reconnected');
    expect(gap?.type === 'reconnected' && gap.gapMs).toBeGreaterThanOrEqual(100); // the stand-in waits 150 ms
    expect(logs().some((l) => l['event'] === 'vpn.reconnected' && typeof l['gapMs'] === 'number')).toBe(true);
    expect(read('launches').split('\n').filter((l) => l.startsWith('[')).length).toBe(1); // no process restart
  });

  it('stop (revocation: apply(null)) stops the SuperNode, then SIGTERMs openvpn; the process and its socket are gone', async () => {
    await runner.apply({ version: 1, body: body() });
    const pid = runtime.children.vpn.pid ?? 0;
    expect(pid).toBeGreaterThan(0);
    const r = await runner.apply(null);
    expect(r.status === 'applied' && r.steps.map((s) => s.kind)).toEqual(['stop-supernode', 'stop-vpn']);
    expect(() => process.kill(pid, 0)).toThrow();
    expect(runtime.children.vpn).toMatchObject({ state: 'stopped', tunnel: null, pid: null });
    expect(fs.existsSync(path.join(dir, 'run', 'openvpn.sock'))).toBe(false);
    expect(vpnEvents.at(-1)).toEqual({ type: 'tunnel', state: null });
  });

  it('a manifest that drops the vpn section stops it (the SuperNode, whose inputs did not change, keeps running)', async () => {
    await runner.apply({ version: 1, body: body() });
    const r = await runner.apply({ version: 2, body: body(null) });
    expect(r.status === 'applied' && r.steps.map((s) => s.kind)).toEqual(['stop-vpn']);
    expect(runtime.children.supernode.state).toBe('running');
    expect(runtime.children.vpn.state).toBe('stopped');
  });

  it('the server refusing the certificate (handshake fails after the server was verified) shows VPN_AUTH_FAILED', async () => {
    fs.writeFileSync(file('mode'), 'auth-failed');
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status).toBe('applied'); // the SuperNode is not held back by the tunnel; OpenVPN keeps trying
    await until('auth failed', () => runtime.children.vpn.errorCode === ErrorCodes.VPN_AUTH_FAILED);
    expect(runtime.children.vpn).toMatchObject({ state: 'running', tunnel: 'reconnecting' });
    expect(logs().some((l) => l['event'] === 'vpn.failed' && l['code'] === ErrorCodes.VPN_AUTH_FAILED)).toBe(true);
  });

  it('openvpn missing: VPN_NOT_FOUND, the child failed, the SuperNode not started', async () => {
    await runner.close();
    await runtime.close();
    make({ command: path.join(dir, 'no-such-openvpn') });
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status === 'failed' && isAgentError(r.error, ErrorCodes.VPN_NOT_FOUND)).toBe(true);
    expect(r.status === 'failed' && r.step?.kind).toBe('start-vpn');
    expect(runtime.children.vpn).toMatchObject({ state: 'failed', errorCode: ErrorCodes.VPN_NOT_FOUND });
    expect(read('launches')).toBe('');
  });

  it('no TUN device: VPN_TUN_UNAVAILABLE before anything is spawned', async () => {
    await runner.close();
    await runtime.close();
    make({ tunDevice: path.join(dir, 'no-such-tun') });
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status === 'failed' && isAgentError(r.error, ErrorCodes.VPN_TUN_UNAVAILABLE)).toBe(true);
    expect(runtime.children.vpn).toMatchObject({ state: 'failed', errorCode: ErrorCodes.VPN_TUN_UNAVAILABLE });
    expect(read('launches')).toBe('');
  });

  it('a tls-crypt key that is not an OpenVPN static key: VPN_SECRET_INVALID, nothing written', async () => {
    secret = 'not a key at all\n';
    const r = await runner.apply({ version: 1, body: body() });
    expect(r.status === 'failed' && isAgentError(r.error, ErrorCodes.VPN_SECRET_INVALID)).toBe(true);
    expect(fs.existsSync(path.join(vpnDir(), 'tls-crypt.key'))).toBe(false);
    expect(() => checkTlsCryptKey(Buffer.alloc(5000, 0x41))).toThrow(AgentError);
    expect(() => checkTlsCryptKey(Buffer.alloc(0))).toThrow(AgentError);
    // Line endings are normalised; the key itself must be exactly OpenVPN's format.
    const good = tlsCryptKeyFile();
    expect(checkTlsCryptKey(Buffer.from(good.replace(/\n/g, '\r\n')))).toBe(good);
    expect(() => checkTlsCryptKey(Buffer.from(good.replace(/^([0-9a-f]{32})$/m, '$1ff')))).toThrow(AgentError);
  });

  it('the hub unreachable: the key fetched earlier for the same ref is used; without one, VPN_SECRET_UNAVAILABLE', async () => {
    await runner.apply({ version: 1, body: body() });
    await runner.apply(null);
    fetchFails = new AgentError(ErrorCodes.HUB_UNREACHABLE, 'hub away');
    const again = await runner.apply({ version: 2, body: body() });
    expect(again.status).toBe('applied');
    expect(logs().some((l) => l['event'] === 'vpn.secret_cached')).toBe(true);
    // Another ref: nothing cached for it.
    const other = await runner.apply({ version: 3, body: body({ tlsCryptKeyRef: 'fed/other' }) });
    expect(other.status === 'failed' && isAgentError(other.error, ErrorCodes.VPN_SECRET_UNAVAILABLE)).toBe(true);
    // The hub saying there is no such key is not covered by the cache either.
    fetchFails = new AgentError(ErrorCodes.NOT_FOUND, 'no such key');
    const missing = await runner.apply({ version: 4, body: body({ tlsCryptKeyRef: 'fed/tls-crypt', routes: [] }) });
    expect(missing.status === 'failed' && isAgentError(missing.error, ErrorCodes.VPN_SECRET_UNAVAILABLE)).toBe(true);
    expect(missing.status === 'failed' && (missing.error as AgentError).detail?.['hubCode']).toBe(ErrorCodes.NOT_FOUND);
  });

  it('two agents on one host use their own runtimeDir sockets', async () => {
    await runner.apply({ version: 1, body: body() });
    const conf = fs.readFileSync(path.join(vpnDir(), 'client.conf'), 'utf8');
    expect(conf).toContain(path.join(dir, 'run', 'openvpn.sock'));
    expect(runtime.vpn.paths.managementSocket).toBe(path.join(dir, 'run', 'openvpn.sock'));
  });
});
