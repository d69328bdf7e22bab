// The set-up the real-OpenVPN end-to-end tests share (test/e2e/vpn.test.ts and
// test/e2e/vpn-rotation.test.ts): a work directory the OpenVPN server (it drops to nobody) can
// read, a hub whose vpn.crlFile is the server's crl.pem, `sepal-hub vpn server-config`, the
// OpenVPN server in the server namespace with a client-connect hook that records every admitted
// client, the organisation's VPN manifest, an enrolled `sepal-agent run` whose OpenVPN client
// runs in the client namespace, its metrics and status, and a TCP round trip through the tunnel.
import { expect } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { cli, freePorts, startTestHub, tempDir, type TestHub } from './hub.ts';
import { enrollWithToken, startAgent, writeStandInSupernode, type RunningAgent } from './agent.ts';
import type { NetPair } from './netns.ts';
import { waitUntil } from './wait.ts';

/** The tunnel network `vpn server-config` is given, and the server's address in it. */
export const VPN_NETWORK = '10.198.0.0/24';
export const SERVER_TUN_IP = '10.198.0.1';

/** A certificate serial as the tests compare them: lowercase hex, no colons, no leading zeros. */
export const normSerial = (serial: string): string => serial.replaceAll(':', '').toLowerCase().replace(/^0+/, '');

/** A fresh work directory with an empty `server` directory in it (outDir), both readable by the
 *  OpenVPN server, which drops to nobody: it must reach its files, the CRL and the hook's log. */
export function vpnWorkDir(prefix: string): { work: string; outDir: string } {
  const work = tempDir(prefix);
  fs.chmodSync(work, 0o755);
  const outDir = path.join(work, 'server');
  fs.mkdirSync(outDir, { mode: 0o755 });
  return { work, outDir };
}

/** A hub on free loopback ports with 60 s leaves and its VPN CRL copy at `crlFile`; also a free
 *  port for the agent's metrics. */
export async function startVpnHub(crlFile: string): Promise<{ hub: TestHub; metricsPort: number }> {
  const [mPort] = await freePorts(1);
  const hub = await startTestHub({
    fixedPorts: true,
    configure: (c) => ({
      ...c,
      certificates: { leafLifetimeSeconds: 60 },
      vpn: { crlFile },
    }),
  });
  return { hub, metricsPort: mPort ?? 0 };
}

/** `sepal-hub vpn server-config` into outDir (also the install dir) for a server named by its
 *  veth address, tunnel network VPN_NETWORK; expects it to succeed. */
export async function writeVpnServerConfig(hub: TestHub, pair: NetPair, outDir: string): Promise<void> {
  const sc = await cli(['vpn', 'server-config', '--data-dir', hub.paths.dataDir, '--out', outDir, '--name', pair.server.ip, '--network', VPN_NETWORK, '--install-dir', outDir]);
  expect(sc.code, sc.stderr).toBe(0);
}

/** One client the server admitted: when (unix ms), its CN and its serial (normSerial). */
export interface Connect {
  readonly at: number;
  readonly cn: string;
  readonly serial: string;
}

export interface ConnectRecorder {
  /** The hook script. */
  readonly hook: string;
  /** The OpenVPN options that run the hook for every admitted client. */
  readonly openvpnArgs: readonly string[];
  /** Every connection recorded so far, oldest first. */
  connects(): Connect[];
  /** The serials of connects(), in order. */
  serials(): string[];
}

/** Test-only overlay on the server's command line: writes dir/record-connect.sh, a client-connect
 *  hook that appends "<unix ms> <CN> <serial>" of every admitted client to dir/connects.log (kept
 *  across server restarts in the same dir). */
export function recordConnectsHook(dir: string): ConnectRecorder {
  const connectsFile = path.join(dir, 'connects.log');
  if (!fs.existsSync(connectsFile)) fs.writeFileSync(connectsFile, '');
  // The server drops to nobody before it runs the hook.
  fs.chmodSync(connectsFile, 0o666);
  const hook = path.join(dir, 'record-connect.sh');
  fs.writeFileSync(hook, `#!/bin/sh\necho "$(date +%s%3N) $common_name $tls_serial_hex_0" >> ${connectsFile}\nexit 0\n`, { mode: 0o755 });
  const connects = (): Connect[] => fs.readFileSync(connectsFile, 'utf8').split('\n').filter((l) => l.trim() !== '').map((l) => {
    const [at, name, serial] = l.trim().split(' ');
    return { at: Number(at), cn: name ?? '', serial: normSerial(serial ?? '') };
  });
  return { hook, openvpnArgs: ['--script-security', '2', '--client-connect', hook], connects, serials: () => connects().map((c) => c.serial) };
}

export interface OpenVpnServer {
  readonly child: ChildProcess;
  /** Its stdout and stderr, as received. */
  log(): string;
  /** SIGTERM to its process group; resolves once it has exited. */
  stop(): Promise<void>;
}

/** Runs `openvpn --cd dir --config server.conf ...extraArgs` in the server namespace and waits
 *  (20 s) for "Initialization Sequence Completed"; fails at once if it exits before, and stops it
 *  when it does not come up. */
export async function startOpenVpnServer(pair: NetPair, dir: string, extraArgs: readonly string[] = []): Promise<OpenVpnServer> {
  let log = '';
  const child = pair.spawnIn(pair.server.ns, ['openvpn', '--suppress-timestamps', '--cd', dir, '--config', 'server.conf', ...extraArgs]);
  child.stdout?.setEncoding('utf8').on('data', (s: string) => { log += s; });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { log += s; });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const gone = () => (child.exitCode !== null || child.signalCode !== null ? `openvpn server exited: ${log.slice(-2000)}` : undefined);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    await exited;
  };
  try {
    await waitUntil(`the OpenVPN server in ${dir}`, 20_000, () => (log.includes('Initialization Sequence Completed') ? true : undefined), { intervalMs: 100, failFast: gone });
  } catch (e) {
    // Not left running when it never came up: nobody else holds it.
    await stop();
    throw e;
  }
  return { child, log: () => log, stop };
}

/** Publishes `org`'s manifest (written to `file`) with a VPN profile: one UDP remote at
 *  serverIp:port and the SuperLink at serverTunIp:9092; expects the publish to succeed. */
export async function publishVpnManifest(hub: TestHub, org: string, opts: { file: string; serverIp: string; port: number; serverTunIp: string }): Promise<void> {
  fs.writeFileSync(opts.file, JSON.stringify({
    superlink: { address: `${opts.serverTunIp}:9092` },
    supernode: { nodeConfig: {} },
    vpn: { remotes: [{ host: opts.serverIp, port: opts.port, proto: 'udp' }], tlsCryptKeyRef: 'default', routes: [], superlinkAddress: `${opts.serverTunIp}:9092` },
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
  }));
  const pub = await cli(['manifest', 'publish', '--data-dir', hub.paths.dataDir, '--org', org, '--file', opts.file]);
  expect(pub.code, pub.stderr).toBe(0);
}

/**
 * Enrolls a node of `org` named `name` into work/agent and starts `sepal-agent run` for it: its
 * OpenVPN client runs in the client namespace (openvpn.command is a wrapper, `ip netns exec NS
 * openvpn`), the SuperNode is a stand-in (real Flower: test/e2e/flower.test.ts), renewal backoff
 * 0.5–5 s, metrics on 127.0.0.1:metricsPort. Returns the agent and its state dir.
 */
export async function startVpnAgent(opts: { hub: TestHub; org: string; name: string; work: string; pair: NetPair; metricsPort: number }): Promise<{ agent: RunningAgent; stateDir: string }> {
  const stateDir = path.join(opts.work, 'agent');
  await enrollWithToken(opts.hub, opts.org, stateDir, opts.name);
  const bin = path.join(opts.work, 'bin');
  const supernode = writeStandInSupernode(bin);
  fs.writeFileSync(path.join(bin, 'openvpn-in-ns'), `#!/bin/sh\nexec ip netns exec ${opts.pair.client.ns} openvpn "$@"\n`, { mode: 0o755 });
  const runtimeDir = path.join(opts.work, 'run');
  fs.mkdirSync(runtimeDir, { mode: 0o700 });
  const agent = startAgent({
    configFile: path.join(opts.work, 'agent.json'),
    config: {
      runtimeDir,
      openvpn: { command: path.join(bin, 'openvpn-in-ns') },
      supernode: { command: supernode },
      renewal: { backoffBaseMs: 500, backoffCapMs: 5000 },
    },
    stateDir,
    metricsPort: opts.metricsPort,
  });
  return { agent, stateDir };
}

/** What the agent's status.json says (the parts these tests read), or null before it exists. */
export interface AgentStatus {
  state: string;
  cert: { serial: string };
  children: Record<string, { state: string; pid?: number }>;
}

export function readAgentStatus(stateDir: string): AgentStatus | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(stateDir, 'status.json'), 'utf8')) as AgentStatus;
  } catch {
    return null;
  }
}

/** GET http://127.0.0.1:port/metrics: the agent's Prometheus text. */
export function scrapeMetrics(port: number): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get({ host: '127.0.0.1', port, path: '/metrics' }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => { body += s; }).on('end', () => resolve(body));
    }).on('error', reject);
  });
}

/** A TCP round trip through the tunnel: a listener on serverTunIp (random port 7000–7999) in the
 *  server namespace answers "pong\n" to a client in the client namespace; returns what the client
 *  received (it gives up after 5 s). */
export async function tcpThroughTunnel(pair: NetPair, serverTunIp: string): Promise<string> {
  const port = 7000 + Math.floor(Math.random() * 1000);
  const listener = pair.spawnIn(pair.server.ns, [process.execPath, '-e', `require('node:net').createServer((s) => s.end('pong\\n')).listen(${port}, '${serverTunIp}', () => console.log('listening'))`]);
  try {
    await new Promise<void>((resolve, reject) => {
      listener.stdout?.on('data', () => resolve());
      listener.once('exit', (code) => reject(new Error(`listener exited ${String(code)}`)));
    });
    return pair.execIn(pair.client.ns, [process.execPath, '-e', `const s = require('node:net').connect(${port}, '${serverTunIp}'); s.on('data', (d) => { process.stdout.write(d); process.exit(0); }); s.on('error', () => process.exit(2)); setTimeout(() => process.exit(3), 5000);`]);
  } finally {
    if (listener.pid !== undefined) {
      try {
        process.kill(-listener.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
  }
}
