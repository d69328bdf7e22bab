// CA rotation end to end with real OpenVPN 2.6 in two network namespaces of the test's own (the
// set-up of test/e2e/vpn.test.ts, shared in test/helpers/vpn-e2e.ts): a running hub (`serve`,
// vpn.crlFile pointing at the OpenVPN server's crl.pem), `sepal-hub ca ...` from separate CLI
// processes, an enrolled `sepal-agent run` whose OpenVPN client runs in the client namespace, and
// short-lived "probe" clients (plain `openvpn` with the identity of a node enrolled by the agent
// CLI) that present one chosen certificate to the server and are stopped once the server has
// decided.
//
// What it shows, with the server's own log lines:
//   - issuing rotation: after prepare-issuing the CRL copy holds two CRLs and OpenVPN loads both
//     ("CRL: loaded 2 CRLs"); after activate a certificate of the new issuing CA is accepted by the
//     server that was never restarted; revoked certificates of either issuer are refused, whichever
//     position their issuer's CRL has in the file (so the second CRL is read);
//   - OpenVPN 2.6 does not refuse a certificate whose issuer has no CRL in the file: it logs
//     "VERIFY WARNING: depth=0, unable to get certificate CRL" and lets it in — a revocation is
//     only enforced for issuers whose CRL the file holds (a second server with a hand-cut crl.pem);
//   - root rotation: the server gets the new root in ca.pem and is restarted (OpenVPN reads `ca`
//     at start only), the agent renews (trusting both roots), activate, the agent renews under the
//     new root (a server still on the ca.pem from before refuses such a certificate: "unable to get
//     local issuer certificate"), `vpn server-config` again for a server certificate under it,
//     restart, and after the old leaves have expired `ca prune`: the agent keeps only the new root
//     and the tunnel stays up.
// Every tunnel gap is printed (one line each). Skips, saying why, without root, /dev/net/tun, ip
// or openvpn, as vpn.test.ts does. Runs for about two and a half minutes: leaves live 60 s and the
// agent renews about every 30 s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync, type ChildProcess } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { cli, httpsRequest, metricValue, type TestHub } from '../helpers/hub.ts';
import { runAgentCli, type RunningAgent } from '../helpers/agent.ts';
import { createNetPair, netnsUnavailable, type NetPair } from '../helpers/netns.ts';
import { waitUntil } from '../helpers/wait.ts';
import {
  SERVER_TUN_IP, normSerial as norm, publishVpnManifest, readAgentStatus, recordConnectsHook, scrapeMetrics, startOpenVpnServer,
  startVpnAgent, startVpnHub, tcpThroughTunnel, vpnWorkDir, writeVpnServerConfig, type Connect, type OpenVpnServer,
} from '../helpers/vpn-e2e.ts';

const why = netnsUnavailable();
if (why !== null) console.warn(`vpn rotation e2e: skipped: ${why}`);

const ORG = 'org-vpn-rot';
const MAIN_PORT = 1194;
const PROBE_PORT = 1195;

let pair: NetPair;
let hub: TestHub;
let work: string;
let outDir: string;
let stateDir: string;
let metricsPort: number;
let agent: RunningAgent | null = null;
let agentNodeId = '';
let main: OvpnServer | null = null;
let probeServer: OvpnServer | null = null;
const retiredServerLogs: string[] = [];
const probes: ChildProcess[] = [];

// ---- certificates and CRLs ----

function pemBlocks(text: string, label: string): string[] {
  return text.match(new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----\\n?`, 'g')) ?? [];
}

function certsIn(file: string): crypto.X509Certificate[] {
  return pemBlocks(fs.readFileSync(file, 'utf8'), 'CERTIFICATE').map((b) => new crypto.X509Certificate(b));
}

function firstCert(file: string): crypto.X509Certificate {
  const c = certsIn(file)[0];
  if (c === undefined) throw new Error(`${file}: no certificate`);
  return c;
}

function issuedBy(leaf: crypto.X509Certificate, ca: crypto.X509Certificate): boolean {
  return leaf.checkIssued(ca) && leaf.verify(ca.publicKey);
}

const sameCert = (a: crypto.X509Certificate, b: crypto.X509Certificate): boolean => a.fingerprint256 === b.fingerprint256;
const cn = (c: crypto.X509Certificate): string => /CN=(.*)/.exec(c.subject)?.[1] ?? '';

interface CrlInfo {
  readonly issuer: string;
  readonly serials: readonly string[];
  readonly pem: string;
}

/** Every CRL of a PEM file, in file order: its issuer and revoked serials (openssl's reading). */
function crlsIn(file: string): CrlInfo[] {
  if (!fs.existsSync(file)) return [];
  return pemBlocks(fs.readFileSync(file, 'utf8'), 'X509 CRL').map((pem) => {
    const text = execFileSync('openssl', ['crl', '-noout', '-issuer', '-text'], { input: pem, encoding: 'utf8' });
    const issuer = /^issuer=(.*)$/m.exec(text)?.[1] ?? '';
    return { issuer, serials: [...text.matchAll(/Serial Number: ([0-9A-Fa-f]+)/g)].map((m) => norm(m[1] ?? '')), pem };
  });
}

/** A distinguished name as a sorted "K=V|K=V" key: the issuing CAs share their CN and differ by
 *  OU (the generation), so whole names are compared. From openssl ("CN = x, OU = y") or Node
 *  ("CN=x\nOU=y"). */
function nameKey(s: string, sep: string): string {
  return s.split(sep).map((p) => p.trim().replace(/\s*=\s*/, '=')).filter((p) => p !== '').sort().join('|');
}
const crlIssuer = (c: CrlInfo): string => nameKey(c.issuer, ',');
const subjectOf = (c: crypto.X509Certificate): string => nameKey(c.subject, '\n');

// ---- hub data dir ----

const caDir = (): string => path.dirname(hub.paths.issuingCert);
const activeIssuing = (): crypto.X509Certificate => firstCert(hub.paths.issuingCert);
const preparedIssuing = (): crypto.X509Certificate => firstCert(path.join(caDir(), 'next', 'issuing.crt'));
const hubRoots = (): crypto.X509Certificate[] => certsIn(hub.paths.rootCert);

async function hubCli(args: string[]): Promise<unknown> {
  const r = await cli([...args, '--data-dir', hub.paths.dataDir]);
  expect(r.code, `sepal-hub ${args.join(' ')}: ${r.stderr}`).toBe(0);
  return args.includes('--json') ? JSON.parse(r.stdout) as unknown : r.stdout;
}

interface CaStatus {
  rows: Array<{ role: string; state: string; keyId: string; lastLeafExpiry?: string | null }>;
  nodesNotRenewed: string[] | null;
}

// ---- the agent ----

const status = () => readAgentStatus(stateDir);
const scrape = () => scrapeMetrics(metricsPort);

const agentLeaf = (): crypto.X509Certificate => firstCert(path.join(stateDir, 'identity', 'tls.crt'));
const agentRoots = (): crypto.X509Certificate[] => certsIn(path.join(stateDir, 'identity', 'ca.pem'));

/** The agent's JSON log lines, parsed (non-JSON lines skipped). */
function agentEvents(): Array<Record<string, unknown>> {
  const out: Array<Record<string, unknown>> = [];
  for (const line of (agent?.logs() ?? '').split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      out.push(JSON.parse(line) as Record<string, unknown>);
    } catch {
      // a partial line
    }
  }
  return out;
}

async function vpnUp(): Promise<boolean> {
  return metricValue(await scrape(), 'sepal_agent_vpn_up') === 1;
}

/**
 * Waits until the agent holds a certificate `accept` likes (renewed after `since`), the VPN server
 * recorded a connection presenting it and the tunnel is up; returns its serial and the reconnect
 * gap the agent measured for that renewal (rotation → CONNECTED, from its vpn.reconnected event).
 */
async function waitAgentRenewal(what: string, accept: (leaf: crypto.X509Certificate) => boolean, notSerial: string, timeoutMs = 75_000): Promise<{ serial: string; gapS: number }> {
  const serial = await waitUntil(`the agent renewed (${what})`, timeoutMs, () => {
    const leaf = agentLeaf();
    const s = norm(leaf.serialNumber);
    return s !== notSerial && accept(leaf) ? s : undefined;
  }, { failFast: agentGone });
  await waitUntil(`the VPN server saw the agent's new certificate (${what})`, 45_000, () => (main?.connects().some((c) => c.serial === serial) === true ? true : undefined), { failFast: agentGone });
  await waitUntil(`the tunnel up (${what})`, 30_000, async () => ((await vpnUp()) ? true : undefined));
  const gapMs = await waitUntil(`the agent's reconnect gap (${what})`, 20_000, () => {
    const ev = agentEvents();
    const at = ev.findIndex((e) => e['event'] === 'cert.renewed' && norm(String(e['serial'])) === serial);
    if (at < 0) return undefined;
    const rec = ev.slice(at).find((e) => e['event'] === 'vpn.reconnected');
    return typeof rec?.['gapMs'] === 'number' ? rec['gapMs'] : undefined;
  });
  return { serial, gapS: gapMs / 1000 };
}

function agentGone(): string | undefined {
  const c = agent?.child;
  return c !== undefined && (c.exitCode !== null || c.signalCode !== null) ? `the agent exited (${String(c.exitCode ?? c.signalCode)})` : undefined;
}

// ---- OpenVPN servers and probe clients ----

interface OvpnServer extends OpenVpnServer {
  readonly startedAt: number;
  /** The clients this run of the server admitted. */
  connects(): Connect[];
}

/** Runs `openvpn --cd dir --config server.conf` in the server namespace with a client-connect hook
 *  that records "<unix ms> <CN> <serial>" of every admitted client in dir/connects.log; its log
 *  joins retiredServerLogs once stopped. */
async function startServer(dir: string): Promise<OvpnServer> {
  const recorder = recordConnectsHook(dir);
  const startedAt = Date.now();
  const server = await startOpenVpnServer(pair, dir, recorder.openvpnArgs);
  return {
    child: server.child,
    startedAt,
    log: server.log,
    connects: () => recorder.connects().filter((c) => c.at >= startedAt),
    stop: async () => {
      await server.stop();
      retiredServerLogs.push(server.log());
    },
  };
}

/** Restarts the main server (it reads ca.pem and server.crt at start only); returns the tunnel
 *  gap: from the SIGTERM to the server admitting the agent again and the agent reporting it up. */
async function restartMain(): Promise<number> {
  const old = main;
  if (old === null) throw new Error('no server');
  const t0 = Date.now();
  await old.stop();
  main = await startServer(outDir);
  const back = await waitUntil('the agent connected to the restarted server', 90_000, () => main?.connects().find((c) => c.cn === agentNodeId), { failFast: agentGone });
  await waitUntil('the tunnel up after the restart', 30_000, async () => ((await vpnUp()) ? true : undefined));
  return (back.at - t0) / 1000;
}

interface ProbeNode {
  readonly nodeId: string;
  readonly dir: string;
  readonly leaf: crypto.X509Certificate;
  readonly serial: string;
}

/** A node enrolled with the agent CLI (no agent runs for it): its identity is what a probe presents.
 *  It pins the root that is active now: after a root rotation's activate, an enrollment pinning the
 *  old root fails (the enrolling agent trusts the pinned root alone, and the hub's TLS chain
 *  reaches only the active root; likewise a pin on the prepared root before activate). */
async function enrollProbe(name: string): Promise<ProbeNode> {
  const dir = path.join(work, `probe-${name}`);
  const tok = await hubCli(['token', 'create', '--org', ORG, '--json']) as { token: string };
  const pin = crypto.hash('sha256', (hubRoots()[0] as crypto.X509Certificate).raw, 'hex');
  const r = await runAgentCli(['enroll', '--hub', hub.httpsUrl, '--ca-sha256', pin, '--token', tok.token, '--state-dir', dir, '--name', name]);
  expect(r.code, `enroll ${name}: ${r.stderr}`).toBe(0);
  const leaf = firstCert(path.join(dir, 'identity', 'tls.crt'));
  const id = path.join(dir, 'identity');
  const chain = fs.readFileSync(path.join(id, 'chain.pem'), 'utf8');
  fs.writeFileSync(path.join(dir, 'client.crt'), fs.readFileSync(path.join(id, 'tls.crt'), 'utf8') + chain, { mode: 0o600 });
  // Every root the hub trusts now: the probe must accept whichever server certificate it meets.
  fs.writeFileSync(path.join(dir, 'ca.pem'), fs.readFileSync(hub.paths.rootCert, 'utf8') + chain, { mode: 0o600 });
  return { nodeId: cn(leaf), dir, leaf, serial: norm(leaf.serialNumber) };
}

/** VERIFY ERROR lines about `node`: naming its CN, or naming a CA (a chain that failed above the
 *  leaf). Other nodes' leaves (the agent's) never fail here, so a CA-level error is this probe's. */
function refusals(log: string, node: ProbeNode): string[] {
  return log.split('\n').filter((l) => /VERIFY ERROR: depth=\d+/.test(l) && (l.includes(`CN=${node.nodeId}`) || /VERIFY ERROR: depth=[1-9].*CN=Sepal (Issuing|Root) CA/.test(l)));
}

interface Verdict {
  readonly verdict: 'accepted' | 'refused';
  /** The server's log lines of this attempt about this certificate and the CRL. */
  readonly lines: string[];
}

/**
 * A one-off OpenVPN client in the client namespace presenting `node`'s certificate to `server`
 * (on `port`); returns what the server decided: admitted (its client-connect hook ran for the
 * serial) or refused (a VERIFY ERROR for the node's CN). No tun device: `dev null`.
 */
async function probe(server: OvpnServer, port: number, node: ProbeNode): Promise<Verdict> {
  const conf = path.join(node.dir, `probe-${port}.conf`);
  fs.writeFileSync(conf, [
    'client', 'dev null', 'nobind', `remote ${pair.server.ip} ${port} udp`,
    `ca ${path.join(node.dir, 'ca.pem')}`, `cert ${path.join(node.dir, 'client.crt')}`, `key ${path.join(node.dir, 'identity', 'tls.key')}`,
    `tls-crypt ${path.join(outDir, 'tls-crypt.key')}`, 'remote-cert-tls server', `verify-x509-name ${pair.server.ip} name`,
    'tls-version-min 1.2 or-highest', 'data-ciphers AES-256-GCM:CHACHA20-POLY1305', 'route-nopull', 'ifconfig-noexec',
    'explicit-exit-notify 1', 'connect-retry 1 2', 'suppress-timestamps', 'verb 3', '',
  ].join('\n'));
  const start = server.log().length;
  const since = Date.now();
  const child = pair.spawnIn(pair.client.ns, ['openvpn', '--config', conf]);
  probes.push(child);
  let clientLog = '';
  child.stdout?.setEncoding('utf8').on('data', (s: string) => { clientLog += s; });
  child.stderr?.setEncoding('utf8').on('data', (s: string) => { clientLog += s; });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  try {
    const verdict = await waitUntil(`the server's verdict on ${node.nodeId}`, 30_000, () => {
      if (server.connects().some((c) => c.serial === node.serial && c.at >= since - 1000)) return 'accepted' as const;
      // Refused at the leaf (the line names its CN) or higher up the chain (it names a CA).
      return refusals(server.log().slice(start), node).length > 0 ? 'refused' as const : undefined;
    }, { intervalMs: 100, failFast: () => (child.exitCode !== null ? `the probe client exited: ${clientLog.slice(-1500)}` : undefined) });
    const fresh = server.log().slice(start);
    const lines = fresh.split('\n').filter((l) => l.includes(`CN=${node.nodeId}`) || l.includes('CRL') || refusals(l, node).length > 0);
    return { verdict, lines };
  } finally {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(-child.pid, 'SIGTERM');
      } catch {
        // gone
      }
    }
    await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
  }
}

function show(label: string, v: Verdict): void {
  console.log(`${label}: ${v.verdict}\n  ${v.lines.map((l) => l.replace(/^\S+:\d+ /, '')).join('\n  ')}`);
}

/** A second server (port PROBE_PORT, its own tunnel network) with the main server's certificate,
 *  key and tls-crypt key but the given ca.pem and crl.pem. */
async function startProbeServer(name: string, caPem: string, crlPem: string): Promise<OvpnServer> {
  const dir = path.join(work, `server-${name}`);
  fs.mkdirSync(dir, { mode: 0o755 });
  for (const f of ['server.crt', 'server.key', 'tls-crypt.key']) fs.copyFileSync(path.join(outDir, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'ca.pem'), caPem, { mode: 0o644 });
  fs.writeFileSync(path.join(dir, 'crl.pem'), crlPem, { mode: 0o644 });
  const conf = fs.readFileSync(path.join(outDir, 'server.conf'), 'utf8')
    .replace(/^port \d+$/m, `port ${PROBE_PORT}`).replace(/^server 10\.198\.0\.0 /m, 'server 10.197.0.0 ');
  expect(conf).toContain(`port ${PROBE_PORT}`);
  fs.writeFileSync(path.join(dir, 'server.conf'), conf);
  return startServer(dir);
}

const serverConfig = (): Promise<void> => writeVpnServerConfig(hub, pair, outDir);

// ---- state carried from one step to the next ----

let ca1: crypto.X509Certificate; // the issuing CA from init
let ca2: crypto.X509Certificate; // prepare-issuing
let ca3: crypto.X509Certificate; // prepare-root, under the new root
let root1: crypto.X509Certificate;
let root2: crypto.X509Certificate;
let p1: ProbeNode; // issued by ca1
let p2: ProbeNode; // issued by ca2
let initialCaPem: string; // the VPN server's ca.pem before any rotation

beforeAll(async () => {
  if (why !== null) return;
  ({ work, outDir } = vpnWorkDir('sepal-vpn-rot-e2e-'));
  pair = createNetPair();
  ({ hub, metricsPort } = await startVpnHub(path.join(outDir, 'crl.pem')));
  ca1 = activeIssuing();
  root1 = hubRoots()[0] as crypto.X509Certificate;
  await serverConfig();
  initialCaPem = fs.readFileSync(path.join(outDir, 'ca.pem'), 'utf8');
  main = await startServer(outDir);

  await publishVpnManifest(hub, ORG, { file: path.join(work, 'manifest.json'), serverIp: pair.server.ip, port: MAIN_PORT, serverTunIp: SERVER_TUN_IP });
  ({ agent, stateDir } = await startVpnAgent({ hub, org: ORG, name: 'vpn-rotation', work, pair, metricsPort }));
  agentNodeId = cn(agentLeaf());
}, 120_000);

afterAll(async () => {
  if (why !== null) return;
  if (process.env['SEPAL_DEBUG'] !== undefined) {
    console.log(`---- agent\n${agent?.logs() ?? ''}\n---- servers\n${[...retiredServerLogs, main?.log() ?? '', probeServer?.log() ?? ''].join('\n---- next server\n')}`);
  }
  for (const p of probes) {
    if (p.pid !== undefined && p.exitCode === null) {
      try { process.kill(-p.pid, 'SIGTERM'); } catch { /* gone */ }
    }
  }
  await agent?.stop(20_000);
  await main?.stop();
  await probeServer?.stop();
  await new Promise((r) => setTimeout(r, 500));
  pair?.cleanup();
  await hub?.stop();
  fs.rmSync(work, { recursive: true, force: true });
}, 60_000);

describe.skipIf(why !== null)('CA rotation with the agent\'s OpenVPN tunnel (real OpenVPN, network namespaces)', () => {
  it('the tunnel comes up with the enrollment certificate', async () => {
    await waitUntil('sepal_agent_vpn_up 1', 60_000, async () => ((await vpnUp()) ? true : undefined), { failFast: agentGone });
    await waitUntil('the server recorded the agent', 10_000, () => (main?.connects().some((c) => c.cn === agentNodeId) === true ? true : undefined));
    expect(issuedBy(agentLeaf(), ca1)).toBe(true);
    expect(crlsIn(path.join(outDir, 'crl.pem'))).toHaveLength(1);
    expect(await tcpThroughTunnel(pair, SERVER_TUN_IP)).toBe('pong\n');
  }, 90_000);

  // ---- issuing CA rotation: same root, no server restart ----

  it('prepare-issuing: the VPN CRL copy holds one CRL per issuing CA and OpenVPN loads both', async () => {
    const r = await hubCli(['ca', 'prepare-issuing', '--json']) as { kind: string };
    expect(r.kind).toBe('issuing');
    ca2 = preparedIssuing();
    expect(issuedBy(ca2, root1)).toBe(true);
    // Written by the CLI's own CRL refresh (and again by serve on the ca.prepared entry).
    const crls = crlsIn(path.join(outDir, 'crl.pem'));
    expect(crls.map(crlIssuer)).toEqual([subjectOf(ca1), subjectOf(ca2)]);

    // A node enrolled now still gets a certificate from the active (old) issuing CA; the server
    // re-reads crl.pem at this new handshake.
    p1 = await enrollProbe('p1');
    expect(issuedBy(p1.leaf, ca1)).toBe(true);
    const v = await probe(main as OvpnServer, MAIN_PORT, p1);
    show('old-issuer certificate, crl.pem = [CRL(old), CRL(new)]', v);
    expect(v.verdict).toBe('accepted');
    expect(v.lines.some((l) => /CRL: loaded 2 CRLs from file/.test(l))).toBe(true);
    expect(v.lines.some((l) => l.includes('VERIFY WARNING: depth=0'))).toBe(false);
  }, 60_000);

  it('activate: a certificate of the new issuing CA is accepted by the server that was not restarted', async () => {
    const serverPid = main?.child.pid;
    const r = await hubCli(['ca', 'activate', '--json']) as { rootChanged: boolean };
    expect(r.rootChanged).toBe(false);
    expect(sameCert(activeIssuing(), ca2)).toBe(true);
    expect(crlsIn(path.join(outDir, 'crl.pem')).map(crlIssuer)).toEqual([subjectOf(ca2), subjectOf(ca1)]);

    p2 = await enrollProbe('p2');
    expect(issuedBy(p2.leaf, ca2)).toBe(true);
    const v = await probe(main as OvpnServer, MAIN_PORT, p2);
    show('new-issuer certificate, crl.pem = [CRL(new), CRL(old)]', v);
    expect(v.verdict).toBe('accepted');
    // Its issuer's CRL was found: no "unable to get certificate CRL" for the leaf.
    expect(v.lines.some((l) => l.includes('VERIFY WARNING: depth=0'))).toBe(false);
    expect(v.lines.some((l) => l.includes(`VERIFY OK: depth=0`))).toBe(true);
    expect(main?.child.pid).toBe(serverPid);
    expect(main?.child.exitCode).toBeNull();
  }, 60_000);

  it('revocations: the server refuses revoked certificates of either issuer (both CRLs of the file are read)', async () => {
    const before = fs.statSync(path.join(outDir, 'crl.pem')).mtimeMs;
    for (const p of [p1, p2]) await hubCli(['node', 'revoke', p.nodeId]);
    await waitUntil('the CRL copy lists both revocations in both CRLs', 15_000, () => {
      if (fs.statSync(path.join(outDir, 'crl.pem')).mtimeMs === before) return undefined;
      const crls = crlsIn(path.join(outDir, 'crl.pem'));
      return crls.length === 2 && crls.every((c) => c.serials.includes(p1.serial) && c.serials.includes(p2.serial)) ? true : undefined;
    });
    const v2 = await probe(main as OvpnServer, MAIN_PORT, p2);
    show('revoked new-issuer certificate (its CRL first in crl.pem)', v2);
    expect(v2.verdict).toBe('refused');
    expect(v2.lines.some((l) => /VERIFY ERROR: depth=0, error=certificate revoked/.test(l))).toBe(true);
    const v1 = await probe(main as OvpnServer, MAIN_PORT, p1);
    show('revoked old-issuer certificate (its CRL second in crl.pem)', v1);
    expect(v1.verdict).toBe('refused');
    expect(v1.lines.some((l) => /VERIFY ERROR: depth=0, error=certificate revoked/.test(l))).toBe(true);
  }, 90_000);

  it('OpenVPN 2.6 lets a certificate in when crl.pem has no CRL of its issuer (a revocation then has no effect)', async () => {
    // A second server with the same files but a crl.pem cut by hand: only the old issuer's CRL,
    // which lists both probes' serials.
    const oldOnly = crlsIn(path.join(outDir, 'crl.pem')).filter((c) => crlIssuer(c) === subjectOf(ca1));
    expect(oldOnly).toHaveLength(1);
    probeServer = await startProbeServer('crl-cut', fs.readFileSync(path.join(outDir, 'ca.pem'), 'utf8'), oldOnly.map((c) => c.pem).join(''));

    const v2 = await probe(probeServer, PROBE_PORT, p2);
    show('revoked new-issuer certificate, crl.pem = [CRL(old) only]', v2);
    expect(v2.verdict).toBe('accepted');
    expect(v2.lines.some((l) => /VERIFY WARNING: depth=0, unable to get certificate CRL/.test(l))).toBe(true);
    const v1 = await probe(probeServer, PROBE_PORT, p1);
    show('revoked old-issuer certificate, crl.pem = [CRL(old) only]', v1);
    expect(v1.verdict).toBe('refused');
    await probeServer.stop();
    probeServer = null;
  }, 90_000);

  it('the agent renews onto the new issuing CA and reconnects with it; the server keeps running', async () => {
    const serverPid = main?.child.pid;
    const r = await waitAgentRenewal('onto the new issuing CA', (leaf) => issuedBy(leaf, ca2), '');
    console.log(`VPN tunnel gap, issuing rotation (agent renewed onto the new issuing CA, SIGUSR1): ${r.gapS} s`);
    expect(r.gapS).toBeGreaterThan(0);
    expect(main?.child.pid).toBe(serverPid);
    expect(main?.child.exitCode).toBeNull();
    expect(await tcpThroughTunnel(pair, SERVER_TUN_IP)).toBe('pong\n');
  }, 120_000);

  // ---- root rotation ----

  it('prepare-root: the VPN server gets the new root in ca.pem (restart); the agent renews and trusts both roots', async () => {
    const r = await hubCli(['ca', 'prepare-root', '--json']) as { kind: string; root: { keyId: string } };
    expect(r.kind).toBe('root');
    ca3 = preparedIssuing();
    const roots = hubRoots();
    expect(roots).toHaveLength(2);
    root2 = roots.find((x) => !sameCert(x, root1)) as crypto.X509Certificate;
    expect(issuedBy(ca3, root2)).toBe(true);
    expect(crlsIn(path.join(outDir, 'crl.pem')).map(crlIssuer).sort()).toEqual([subjectOf(ca1), subjectOf(ca2), subjectOf(ca3)].sort());

    // The VPN host fetches the hub's bundle (what sepal-crl-refresh.service does) and restarts.
    // `serve` publishes the new bundle when its change feed sees the ca.prepared entry, a moment
    // after the CLI returned: a fetch right away can still get the old bundle (seen here once).
    const cliDone = Date.now();
    const bundle = await waitUntil('/ca.pem with the new root and issuing CA', 10_000, async () => {
      const res = await httpsRequest(`${hub.httpsUrl}/ca.pem`, hub.caPem);
      if (res.status !== 200) return undefined;
      const text = res.body.toString('utf8');
      const inBundle = pemBlocks(text, 'CERTIFICATE').map((b) => new crypto.X509Certificate(b));
      return inBundle.some((c) => sameCert(c, root2)) && inBundle.some((c) => sameCert(c, ca3)) ? text : undefined;
    }, { intervalMs: 20 });
    console.log(`/ca.pem served the new root ${Date.now() - cliDone} ms after sepal-hub ca prepare-root returned`);
    fs.writeFileSync(path.join(outDir, 'ca.pem'), bundle, { mode: 0o644 });
    const before = norm(agentLeaf().serialNumber);
    const gap = await restartMain();
    console.log(`VPN tunnel gap, server restart for the new root in ca.pem: ${gap} s`);

    const ren = await waitAgentRenewal('after prepare-root', (leaf) => issuedBy(leaf, ca2) && agentRoots().length === 2, before);
    console.log(`VPN tunnel gap, agent renewal after prepare-root (still the old issuing CA, both roots trusted): ${ren.gapS} s`);
    const trusted = agentRoots();
    expect(trusted.some((c) => sameCert(c, root1))).toBe(true);
    expect(trusted.some((c) => sameCert(c, root2))).toBe(true);
  }, 180_000);

  it('activate (root): the agent renews under the new root and the server, which trusts it, lets it in', async () => {
    // The agent's renewal after prepare-root counts once the hub's status says so (a renewal in the
    // second the root was published may not).
    await waitUntil('ca status: every active node renewed since prepare-root', 60_000, async () => {
      const st = await hubCli(['ca', 'status', '--json']) as CaStatus;
      return st.nodesNotRenewed?.length === 0 ? true : undefined;
    }, { intervalMs: 2000 });
    const before = norm(agentLeaf().serialNumber);
    const r = await hubCli(['ca', 'activate', '--json']) as { rootChanged: boolean };
    expect(r.rootChanged).toBe(true);
    expect(sameCert(activeIssuing(), ca3)).toBe(true);
    const ren = await waitAgentRenewal('under the new root', (leaf) => issuedBy(leaf, ca3), before);
    console.log(`VPN tunnel gap, agent renewal under the new root (server cert still under the old root): ${ren.gapS} s`);
    // The server's certificate is still the first one, under the old root.
    expect(issuedBy(firstCert(path.join(outDir, 'server.crt')), ca1)).toBe(true);
    expect(await tcpThroughTunnel(pair, SERVER_TUN_IP)).toBe('pong\n');

    // Why the server needed the new root: the same server with its ca.pem from before the
    // rotation refuses a certificate under the new root; the main one (restarted with it) admits it.
    const p3 = await enrollProbe('p3');
    expect(issuedBy(p3.leaf, ca3)).toBe(true);
    const ok = await probe(main as OvpnServer, MAIN_PORT, p3);
    show('new-root certificate, server ca.pem with the new root', ok);
    expect(ok.verdict).toBe('accepted');
    probeServer = await startProbeServer('old-ca', initialCaPem, fs.readFileSync(path.join(outDir, 'crl.pem'), 'utf8'));
    const old = await probe(probeServer, PROBE_PORT, p3);
    show('new-root certificate, server ca.pem from before the rotation', old);
    expect(old.verdict).toBe('refused');
    expect(old.lines.some((l) => /VERIFY ERROR: depth=1, error=unable to get (local )?issuer certificate/.test(l))).toBe(true);
    await probeServer.stop();
    probeServer = null;
  }, 150_000);

  it('vpn server-config again: a server certificate under the new root; after a restart the tunnel is up', async () => {
    await serverConfig();
    expect(issuedBy(firstCert(path.join(outDir, 'server.crt')), ca3)).toBe(true);
    const gap = await restartMain();
    console.log(`VPN tunnel gap, server restart with a server certificate under the new root: ${gap} s`);
    expect(await tcpThroughTunnel(pair, SERVER_TUN_IP)).toBe('pong\n');
  }, 120_000);

  it('prune once the old leaves have expired: the agent keeps only the new root; the tunnel stays up', async () => {
    // Every certificate of the retired issuing CAs expires at most 60 s after it was issued.
    const until = await waitUntil('the retired issuing CAs\' last leaves expired', 100_000, async () => {
      const st = await hubCli(['ca', 'status', '--json']) as CaStatus;
      const retired = st.rows.filter((x) => x.role === 'issuing' && x.state === 'retired');
      expect(retired).toHaveLength(2);
      const last = Math.max(...retired.map((x) => (x.lastLeafExpiry == null ? 0 : Date.parse(x.lastLeafExpiry))));
      return last < Date.now() - 1000 ? last : undefined;
    }, { intervalMs: 2000 });
    expect(until).toBeLessThan(Date.now());
    const r = await hubCli(['ca', 'prune', '--json']) as { removedIssuing: string[]; removedRoots: string[] };
    expect(r.removedIssuing).toHaveLength(2);
    expect(r.removedRoots).toHaveLength(1);
    expect(hubRoots()).toHaveLength(1);
    expect(crlsIn(path.join(outDir, 'crl.pem')).map(crlIssuer)).toEqual([subjectOf(ca3)]);

    const before = norm(agentLeaf().serialNumber);
    const ren = await waitAgentRenewal('after prune', (leaf) => issuedBy(leaf, ca3) && agentRoots().length === 1, before);
    console.log(`VPN tunnel gap, agent renewal after prune (only the new root trusted): ${ren.gapS} s`);
    expect(sameCert(agentRoots()[0] as crypto.X509Certificate, root2)).toBe(true);
    expect(status()?.state).not.toBe('revoked');
    expect(await tcpThroughTunnel(pair, SERVER_TUN_IP)).toBe('pong\n');
  }, 240_000);
});
