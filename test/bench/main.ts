// npm run bench [-- --json FILE] [--seconds N]
// Issuance benchmarks for the hub (targets in DESIGN.md and issue 2):
//   crypto_limit_per_s        node:crypto alone: one ECDSA P-256 verify + one sign, one core
//   issuance_inprocess_per_s  the hub's renewal path in-process: CSR parse + verify + sign + store
//   issuance_grpc_per_s       Renew over gRPC mTLS, hub in its own process, reused connections
//   grpc_ceiling_per_s        the same transport answering a canned response (no crypto, no store)
// Times are measured here and only reported; no test asserts on them.
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { parseArgs } from 'node:util';
import { loadAgentApi, channelOptions } from '../../proto/load.ts';
import { hubPaths, type HubPaths } from '../../hub/datadir.ts';
import { initDataDir } from '../../hub/service/init.ts';
import { openHub } from '../../hub/runtime.ts';
import { enrollNode, renewCertificate } from '../../hub/service/issuance.ts';
import { derToPem } from '../../hub/ca/pem.ts';
import { silentLogger } from '../../hub/log.ts';
import { HubMetrics } from '../../hub/metrics.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { AGENT_NODE_FLAGS, bundle } from '../../installers/bundle.ts';
import { freePorts } from '../helpers/hub.ts';

const { values: args } = parseArgs({ options: { json: { type: 'string' }, seconds: { type: 'string' }, 'agent-seconds': { type: 'string' } } });
/** How long the idle agent is watched (the target needs at least 60 s). */
const AGENT_SECONDS = Number(args['agent-seconds'] ?? '60');
const SECONDS = Number(args.seconds ?? '4');
const REPO = path.resolve(import.meta.dirname, '../..');

interface Result { name: string; value: number; unit: string; target: string; met: boolean | null }
const results: Result[] = [];

function timeLoop(seconds: number, body: () => void): number {
  for (let i = 0; i < 200; i++) body(); // warm-up
  const end = performance.now() + seconds * 1000;
  let n = 0;
  const t0 = performance.now();
  while (performance.now() < end) {
    for (let i = 0; i < 50; i++) body();
    n += 50;
  }
  return n / ((performance.now() - t0) / 1000);
}

/** Keeps `concurrency` calls in flight on this one thread for `seconds`; completed calls per second. */
async function timeConcurrent(seconds: number, concurrency: number, body: () => Promise<void>): Promise<number> {
  for (let i = 0; i < 200; i++) await body();
  let n = 0;
  const t0 = performance.now();
  const end = t0 + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (performance.now() < end) {
      await body();
      n++;
    }
  }));
  return n / ((performance.now() - t0) / 1000);
}


function rssOf(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m === null ? 0 : Number(m[1]) * 1024;
  } catch {
    return 0;
  }
}

async function main(): Promise<void> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-bench-'));
  const children: ChildProcess[] = [];
  try {
    const paths: HubPaths = hubPaths(path.join(dir, 'hub'));
    const [grpcPort = 0, httpsPort = 0] = await freePorts(2);
    await initDataDir(paths, {
      hostnames: ['localhost', '127.0.0.1'],
      configure: (c) => ({ ...c, grpc: { listen: `127.0.0.1:${grpcPort}`, publicAddress: `localhost:${grpcPort}` }, https: { listen: `127.0.0.1:${httpsPort}`, publicUrl: `https://localhost:${httpsPort}` } }),
    });
    const hub = await openHub(paths, { log: silentLogger(), metrics: new HubMetrics({ defaultMetrics: false }) });
    const ctx = hub.ctx;

    // Inputs: CSRs from distinct keys, made before any clock starts.
    const csrs = Array.from({ length: 256 }, () => makeCsr(newKey()));

    // 1. crypto limit: the two operations issuance needs (verify the CSR's signature with a P-256
    // node key, sign a TBSCertificate-sized message with the issuing CA key), nothing else.
    const csrInfo = crypto.randomBytes(200);
    const tbs = crypto.randomBytes(420);
    const caKey = ctx.authority.issuer.key;
    const nodeKey = newKey();
    const csrSig = crypto.sign('sha256', csrInfo, nodeKey.privateKey);
    const cryptoLimit = timeLoop(SECONDS, () => {
      crypto.verify('sha256', csrInfo, nodeKey.publicKey, csrSig);
      crypto.sign('sha256', tbs, caKey);
    });
    results.push({ name: 'crypto_limit_per_s', value: cryptoLimit, unit: 'ops/s', target: 'reference', met: null });

    // 2. in-process issuance through the hub's own renewal path (store on disk, audit included).
    const enrolled = await Promise.all(Array.from({ length: 64 }, async (_, i) => {
      const key = newKey();
      const r = await enrollNode(ctx, { org: `org-${i % 4}`, name: `bench-${i}`, csr: makeCsr(key), facts: null, flowerPublicKey: null, actor: 'bench' });
      return { key, node: r.node, creds: r.credentials };
    }));
    // Renewals arrive concurrently at a server; so they do here (64 in flight, one thread).
    let k = 0;
    const renewOne = async (): Promise<void> => {
      const e = enrolled[k % enrolled.length];
      if (e === undefined) return;
      await renewCertificate(ctx, { nodeId: e.node.id, org: e.node.org, serial: e.creds.serial, notAfter: e.creds.notAfter, address: 'bench' }, csrs[k++ % csrs.length] as Buffer);
    };
    const inproc = await timeConcurrent(SECONDS, 64, renewOne);
    results.push({ name: 'issuance_inprocess_per_s', value: inproc, unit: 'ops/s', target: `>= ${(0.5 * cryptoLimit).toFixed(0)} (0.5 x crypto limit)`, met: inproc >= 0.5 * cryptoLimit });
    await hub.close();

    // 3. Renew over gRPC mTLS: `sepal-hub serve` in its own process, this process loads it.
    const serve = spawn(process.execPath, [path.join(REPO, 'hub/cli/main.ts'), 'serve', '--data-dir', paths.dataDir, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
    children.push(serve);
    await waitForPort(grpcPort);
    const { client: Ctor } = loadAgentApi();
    const caPem = fs.readFileSync(paths.rootCert);
    const clients = enrolled.slice(0, 8).map((e) => {
      const chain = derToPem(e.creds.certDer, 'CERTIFICATE') + e.creds.chainDer.map((d) => derToPem(d, 'CERTIFICATE')).join('');
      return new Ctor(`localhost:${grpcPort}`, grpc.credentials.createSsl(caPem, Buffer.from(e.key.keyPem), Buffer.from(chain)), channelOptions(64 * 1024));
    });
    const grpcRate = await loadTest(clients, csrs, SECONDS);
    const hubRss = rssOf(serve.pid ?? 0);
    results.push({ name: 'issuance_grpc_per_s', value: grpcRate, unit: 'ops/s', target: '>= 2000 (2 cores)', met: grpcRate >= 2000 });
    for (const c of clients) c.close();
    serve.kill('SIGTERM');

    // 4. The transport ceiling: same TLS + gRPC setup, canned answer.
    const ceiling = spawn(process.execPath, [path.join(REPO, 'test/bench/ceiling-server.ts'), paths.dataDir], { stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(ceiling);
    const ceilingPort = await new Promise<number>((resolve) => ceiling.stdout?.once('data', (d: Buffer) => resolve(Number(d.toString().trim()))));
    const cclients = enrolled.slice(0, 8).map((e) => {
      const chain = derToPem(e.creds.certDer, 'CERTIFICATE') + e.creds.chainDer.map((d) => derToPem(d, 'CERTIFICATE')).join('');
      return new Ctor(`localhost:${ceilingPort}`, grpc.credentials.createSsl(caPem, Buffer.from(e.key.keyPem), Buffer.from(chain)), channelOptions(64 * 1024));
    });
    const ceil = await loadTest(cclients, csrs, SECONDS);
    for (const c of cclients) c.close();
    results.push({ name: 'grpc_ceiling_per_s', value: ceil, unit: 'ops/s', target: 'reference', met: null });
    results.push({ name: 'issuance_grpc_added_us_per_call', value: (1 / grpcRate - 1 / ceil) * 1e6, unit: 'µs', target: '<= ~330', met: (1 / grpcRate - 1 / ceil) * 1e6 <= 330 });
    results.push({ name: 'hub_rss_after_grpc_load_mb', value: hubRss / 1024 / 1024, unit: 'MB', target: 'reported', met: null });

    // 5. An enrolled agent idling against a local hub: RSS and CPU over AGENT_SECONDS.
    const idle = await agentIdle(paths, httpsPort, children);
    results.push({ name: 'agent_idle_rss_mb', value: idle.rssMb, unit: 'MB', target: '<= 60', met: idle.rssMb <= 60 });
    results.push({ name: 'agent_idle_cpu_pct', value: idle.cpuPct, unit: '%', target: '<= 0.5', met: idle.cpuPct <= 0.5 });

    print();
    if (args.json !== undefined) {
      const out = {
        when: new Date().toISOString(), node: process.version, cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '', seconds: SECONDS,
        results: Object.fromEntries(results.map((r) => [r.name, { value: Number(r.value.toFixed(2)), unit: r.unit, target: r.target, met: r.met }])),
      };
      fs.writeFileSync(args.json, JSON.stringify(out, null, 2) + '\n');
      process.stdout.write(`wrote ${args.json}\n`);
    }
  } finally {
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function cpuTicks(pid: number): number {
  // /proc/PID/stat fields 14 and 15: utime and stime in clock ticks (USER_HZ, 100 on Linux).
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return Number(fields[11]) + Number(fields[12]);
}

async function agentIdle(paths: HubPaths, httpsPort: number, children: ChildProcess[]): Promise<{ rssMb: number; cpuPct: number }> {
  const run = (args: string[]) => new Promise<{ code: number | null; out: string }>((resolve) => {
    const c = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    c.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
    c.stderr?.on('data', (d: Buffer) => { out += d.toString(); });
    c.once('close', (code) => resolve({ code, out }));
  });
  const serve = spawn(process.execPath, [path.join(REPO, 'hub/cli/main.ts'), 'serve', '--data-dir', paths.dataDir, '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(serve);
  await waitForPort(httpsPort);
  const tok = await run([path.join(REPO, 'hub/cli/main.ts'), 'token', 'create', '--data-dir', paths.dataDir, '--org', 'bench', '--json']);
  const token = (JSON.parse(tok.out.trim().split('\n').at(-1) ?? '{}') as { token?: string }).token ?? '';
  const fingerprint = crypto.createHash('sha256').update(new crypto.X509Certificate(fs.readFileSync(paths.rootCert)).raw).digest('hex');
  const stateDir = path.join(path.dirname(paths.dataDir), 'agent-state');
  const enrolled = await run([path.join(REPO, 'agent/cli/main.ts'), 'enroll', '--hub', `https://localhost:${httpsPort}`, '--ca-sha256', fingerprint, '--token', token, '--state-dir', stateDir]);
  if (enrolled.code !== 0) throw new Error(`agent enroll failed: ${enrolled.out}`);
  const cfg = path.join(path.dirname(paths.dataDir), 'agent.json');
  fs.writeFileSync(cfg, JSON.stringify({ logLevel: 'warn' }));
  // The agent as it ships: the bundled JS with the shipped V8 flags (installers/bundle.ts), not the
  // TypeScript sources.
  const { agent: bundled } = await bundle();
  const agent = spawn(process.execPath, [...AGENT_NODE_FLAGS, bundled, 'run', '--config', cfg, '--state-dir', stateDir, '--metrics-addr', '127.0.0.1:0'], { stdio: ['ignore', 'ignore', 'inherit'] });
  children.push(agent);
  const pid = agent.pid ?? 0;
  await new Promise((r) => setTimeout(r, 15_000)); // warm-up: connect, first status report, GC settles
  const t0 = performance.now();
  const c0 = cpuTicks(pid);
  const rss: number[] = [];
  while (performance.now() - t0 < AGENT_SECONDS * 1000) {
    await new Promise((r) => setTimeout(r, 1000));
    rss.push(rssOf(pid));
  }
  const elapsed = (performance.now() - t0) / 1000;
  const cpuPct = ((cpuTicks(pid) - c0) / 100) / elapsed * 100;
  agent.kill('SIGTERM');
  serve.kill('SIGTERM');
  return { rssMb: rss.reduce((a, b) => a + b, 0) / rss.length / 1024 / 1024, cpuPct };
}

async function waitForPort(port: number): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => { s.destroy(); resolve(true); });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`port ${port} never opened`);
}

/** Keeps `inflight` calls per client going for `seconds`, returns completed calls per second. */
async function loadTest(clients: grpc.Client[], csrs: Buffer[], seconds: number, inflight = 32): Promise<number> {
  let done = 0;
  let failed = 0;
  let stop = false;
  let k = 0;
  const call = (c: grpc.Client): Promise<void> => new Promise((resolve) => {
    const renew = (c as unknown as Record<string, (req: unknown, cb: (e: grpc.ServiceError | null) => void) => void>)['Renew'];
    renew?.call(c, { csrDer: csrs[k++ % csrs.length] }, (e) => {
      if (e === null) done++;
      else failed++;
      resolve();
    });
  });
  const worker = async (c: grpc.Client): Promise<void> => {
    while (!stop) await call(c);
  };
  // warm-up: connections and JIT
  await Promise.all(clients.map((c) => Promise.all(Array.from({ length: 4 }, () => call(c)))));
  done = 0;
  failed = 0;
  const t0 = performance.now();
  const workers = clients.flatMap((c) => Array.from({ length: inflight }, () => worker(c)));
  await new Promise((r) => setTimeout(r, seconds * 1000));
  stop = true;
  const elapsed = (performance.now() - t0) / 1000;
  const counted = done;
  await Promise.all(workers);
  if (failed > 0) process.stderr.write(`warning: ${failed} calls failed during the load test\n`);
  return counted / elapsed;
}

function print(): void {
  const rows = [['metric', 'value', 'unit', 'target', 'met'], ...results.map((r) => [r.name, r.value.toFixed(r.value < 100 ? 1 : 0), r.unit, r.target, r.met === null ? '-' : r.met ? 'yes' : 'NO'])];
  const w = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  for (const r of rows) process.stdout.write(r.map((c, i) => c.padEnd(w[i] ?? 0)).join('  ') + '\n');
}

await main();
