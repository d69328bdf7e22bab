// Network namespaces of the test's own, joined by a veth pair: two "hosts" on one machine for the
// VPN tests. Everything created here is named `sp<random>-…` and removed again by cleanup();
// nothing else on the machine is touched. Needs root, iproute2 and /dev/net/tun.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';

export interface NetnsHost {
  readonly ns: string;
  /** Address on the veth link (a /30 of 10.201.x.y). */
  readonly ip: string;
}

export interface NetPair {
  readonly server: NetnsHost;
  readonly client: NetnsHost;
  /** Spawns argv inside a namespace (`ip netns exec NS …`); no shell. */
  spawnIn(ns: string, argv: readonly string[], opts?: { env?: NodeJS.ProcessEnv; cwd?: string }): ChildProcess;
  /** Runs argv inside a namespace to completion; returns stdout, throws on failure. */
  execIn(ns: string, argv: readonly string[], timeoutMs?: number): string;
  cleanup(): void;
}

/** Why the namespace tests cannot run here, or null when they can. */
export function netnsUnavailable(): string | null {
  if (process.getuid?.() !== 0) return 'not root';
  if (!fs.existsSync('/dev/net/tun')) return '/dev/net/tun is missing';
  if (spawnSync('ip', ['-V'], { stdio: 'ignore' }).status !== 0) return 'iproute2 (ip) is not installed';
  if (spawnSync('openvpn', ['--version'], { stdio: 'ignore' }).status === null) return 'openvpn is not installed';
  const probe = `sp${crypto.randomBytes(3).toString('hex')}-probe`;
  const r = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' });
  if (r.status !== 0) return `cannot create a network namespace: ${r.stderr.trim()}`;
  spawnSync('ip', ['netns', 'del', probe]);
  return null;
}

function ip(args: string[]): void {
  execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

export function createNetPair(): NetPair {
  const id = crypto.randomBytes(3).toString('hex');
  const nsS = `sp${id}-s`;
  const nsC = `sp${id}-c`;
  const vethS = `sp${id}s`;
  const vethC = `sp${id}c`;
  // 10.201.A.B/30 from the random id: .1 the server, .2 the client.
  const a = crypto.randomInt(0, 256);
  const b = crypto.randomInt(0, 64) * 4;
  const sIp = `10.201.${a}.${b + 1}`;
  const cIp = `10.201.${a}.${b + 2}`;
  const created: Array<() => void> = [];
  const cleanup = () => {
    for (const undo of created.splice(0).reverse()) {
      try {
        undo();
      } catch {
        // already gone
      }
    }
  };
  try {
    ip(['netns', 'add', nsS]);
    created.push(() => ip(['netns', 'del', nsS]));
    ip(['netns', 'add', nsC]);
    created.push(() => ip(['netns', 'del', nsC]));
    ip(['link', 'add', vethS, 'type', 'veth', 'peer', 'name', vethC]);
    created.push(() => ip(['link', 'del', vethS])); // gone with the namespace too; harmless twice
    ip(['link', 'set', vethS, 'netns', nsS]);
    ip(['link', 'set', vethC, 'netns', nsC]);
    for (const [ns, dev, addr] of [[nsS, vethS, sIp], [nsC, vethC, cIp]] as const) {
      ip(['-n', ns, 'addr', 'add', `${addr}/30`, 'dev', dev]);
      ip(['-n', ns, 'link', 'set', dev, 'up']);
      ip(['-n', ns, 'link', 'set', 'lo', 'up']);
    }
  } catch (e) {
    cleanup();
    throw e;
  }
  return {
    server: { ns: nsS, ip: sIp },
    client: { ns: nsC, ip: cIp },
    spawnIn: (ns, argv, opts = {}) => spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], env: opts.env ?? process.env, cwd: opts.cwd, detached: true }),
    execIn: (ns, argv, timeoutMs = 20_000) => execFileSync('ip', ['netns', 'exec', ns, ...argv], { encoding: 'utf8', timeout: timeoutMs, stdio: ['ignore', 'pipe', 'pipe'] }),
    cleanup,
  };
}
