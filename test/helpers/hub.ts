// A real hub for tests: `init` into a temp dir, `serve` on 127.0.0.1 port 0, silent logs, and
// gRPC clients with whatever certificate a test wants to present.
import * as grpc from '@grpc/grpc-js';
import crypto from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { loadAgentApi, channelOptions } from '../../proto/load.ts';
import { ERROR_CODE_METADATA_KEY } from '../../proto/errors.ts';
import type { ManifestEnvelope } from '../../proto/api.ts';
import { hubPaths, type HubPaths } from '../../hub/datadir.ts';
import { initDataDir, type InitResult } from '../../hub/service/init.ts';
import { serveHub, type RunningHub } from '../../hub/runtime.ts';
import { enrollNode } from '../../hub/service/issuance.ts';
import { derToPem } from '../../hub/ca/pem.ts';
import { silentLogger } from '../../hub/log.ts';
import type { HubConfig } from '../../hub/config.ts';
import { makeCsr, newKey, type TestKey } from './csr.ts';

export const REPO = path.resolve(import.meta.dirname, '../..');
const run = promisify(execFile);

export function tempDir(prefix = 'sepal-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix));
}

export interface TestHub {
  readonly dir: string;
  /** What `init` reported (root fingerprint, config, first signing key). */
  readonly init: InitResult;
  readonly paths: HubPaths;
  readonly running: RunningHub;
  readonly grpcTarget: string;
  readonly httpsUrl: string;
  readonly caPem: string;
  stop(): Promise<void>;
}

export interface TestHubOptions {
  readonly configure?: (c: HubConfig) => HubConfig;
  readonly feedIntervalMs?: number;
  /** Listen on free ports chosen up front and publish exactly those (grpc.publicAddress,
   *  https.publicUrl), as agents and the real CLIs need: they find the hub through discovery and
   *  keep its address. Without it the listeners take port 0 and discovery is not usable. */
  readonly fixedPorts?: boolean;
}

export async function startTestHub(opts: TestHubOptions = {}): Promise<TestHub> {
  const dir = tempDir();
  const paths = hubPaths(path.join(dir, 'hub'));
  const [grpcPort = 0, httpsPort = 8444] = opts.fixedPorts === true ? await freePorts(2) : [];
  const init = await initDataDir(paths, {
    hostnames: ['localhost', '127.0.0.1'],
    configure: (c) => {
      const base = {
        ...c,
        grpc: { listen: `127.0.0.1:${grpcPort}`, publicAddress: `localhost:${grpcPort}` },
        https: { listen: `127.0.0.1:${opts.fixedPorts === true ? httpsPort : 0}`, publicUrl: `https://localhost:${httpsPort}` },
      };
      return opts.configure === undefined ? base : opts.configure(base);
    },
  });
  const running = await serveHub(paths, { log: silentLogger(), feedIntervalMs: opts.feedIntervalMs ?? 50 });
  return {
    dir,
    paths,
    running,
    init,
    grpcTarget: `localhost:${running.grpcPort}`,
    httpsUrl: `https://localhost:${running.httpsPort}`,
    caPem: running.hub.ctx.authority.bundlePem,
    stop: async () => {
      await running.close(1000);
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface TestNode {
  readonly nodeId: string;
  readonly org: string;
  readonly key: TestKey;
  readonly certPem: string;
  readonly chainPem: string;
  readonly serial: string;
}

/** Enrolls through the service layer (the Enroll RPC's authentication arrives with OIDC). */
export async function enrollTestNode(hub: TestHub, org = 'org-a'): Promise<TestNode> {
  const key = newKey();
  const { node, credentials } = await enrollNode(hub.running.hub.ctx, { org, name: 'test', csr: makeCsr(key), facts: null, flowerPublicKey: null, actor: 'test' });
  const certPem = derToPem(credentials.certDer, 'CERTIFICATE');
  return { nodeId: node.id, org, key, certPem, chainPem: certPem + credentials.chainDer.map((d) => derToPem(d, 'CERTIFICATE')).join(''), serial: credentials.serial };
}

export type AgentClient = grpc.Client & Record<string, (...a: unknown[]) => unknown>;

export function client(hub: TestHub, identity?: { keyPem: string; certChainPem: string }, caPem = hub.caPem): AgentClient {
  const { client: Ctor } = loadAgentApi();
  const creds = identity === undefined
    ? grpc.credentials.createSsl(Buffer.from(caPem))
    : grpc.credentials.createSsl(Buffer.from(caPem), Buffer.from(identity.keyPem), Buffer.from(identity.certChainPem));
  return new Ctor(hub.grpcTarget, creds, channelOptions(4 * 1024 * 1024)) as unknown as AgentClient;
}

export function nodeClient(hub: TestHub, node: TestNode): AgentClient {
  return client(hub, { keyPem: node.key.keyPem, certChainPem: node.chainPem });
}

export function unaryCall<Res>(c: AgentClient, method: string, req: unknown): Promise<Res> {
  return new Promise((resolve, reject) => {
    const fn = c[method] as (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Res) => void) => void;
    fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + 10_000 }, (e, r) => (e === null ? resolve(r) : reject(e)));
  });
}

export function errorCode(e: unknown): string | undefined {
  const md = (e as grpc.ServiceError).metadata as grpc.Metadata | undefined;
  const v = md?.get(ERROR_CODE_METADATA_KEY)[0];
  return typeof v === 'string' ? v : undefined;
}

export async function expectRpcError(p: Promise<unknown>): Promise<{ status: grpc.status; code: string | undefined }> {
  try {
    await p;
  } catch (e) {
    return { status: (e as grpc.ServiceError).code, code: errorCode(e) };
  }
  throw new Error('expected the call to fail');
}

/** Runs the real CLI (on this Node) against a data dir. */
export async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await run(process.execPath, [path.join(REPO, 'hub/cli/main.ts'), ...args], { encoding: 'utf8' });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (e) {
    const x = e as { code?: number; stdout?: string; stderr?: string };
    return { code: typeof x.code === 'number' ? x.code : -1, stdout: x.stdout ?? '', stderr: x.stderr ?? '' };
  }
}

export function sha256(b: Buffer): string {
  return crypto.createHash('sha256').update(b).digest('hex');
}

/** HTTPS GET against the hub, trusting only its CA. */
export async function httpsGet(hub: TestHub, p: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> {
  const https = await import('node:https');
  return new Promise((resolve, reject) => {
    const req = https.request(`${hub.httpsUrl}${p}`, { ca: hub.caPem, headers }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

// ---- helpers for the HTTPS, admin API and CLI tests ----

/** startTestHub, and also what `init` reported (the root fingerprint, the config it wrote). */
export interface HttpsResult {
  readonly status: number;
  readonly body: Buffer;
  readonly headers: Record<string, string | string[] | undefined>;
}

/** Any HTTPS request, trusting only `caPem`; a `json` body is sent as application/json. */
export async function httpsRequest(url: string, caPem: string, opts: { method?: string; json?: unknown; headers?: Record<string, string> } = {}): Promise<HttpsResult> {
  const https = await import('node:https');
  const body = opts.json === undefined ? undefined : Buffer.from(JSON.stringify(opts.json));
  const headers = { ...(body === undefined ? {} : { 'content-type': 'application/json', 'content-length': String(body.length) }), ...opts.headers };
  return new Promise((resolve, reject) => {
    const req = https.request(url, { method: opts.method ?? 'GET', ca: caPem, headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

/** n distinct ports that were free a moment ago on 127.0.0.1 (for child processes, whose port 0
 *  we cannot see from outside): all are held open together, then released. */
export async function freePorts(n: number): Promise<number[]> {
  const servers = await Promise.all(Array.from({ length: n }, () => new Promise<net.Server>((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => resolve(s));
  })));
  const ports = servers.map((s) => {
    const a = s.address();
    return typeof a === 'object' && a !== null ? a.port : 0;
  });
  await Promise.all(servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))));
  return ports;
}

export interface ServeChild {
  readonly child: ChildProcess;
  /** Resolves with the `hub.ready` log line; rejects if the process exits before it. */
  readonly ready: Promise<{ grpcPort: number; httpsPort: number; rootFingerprint: string }>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>;
}

/** Runs `sepal-hub serve` as a child process on this Node. */
export function spawnServe(args: string[]): ServeChild {
  const child = spawn(process.execPath, [path.join(REPO, 'hub/cli/main.ts'), 'serve', ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  let onReady: (v: { grpcPort: number; httpsPort: number; rootFingerprint: string }) => void = () => undefined;
  let onEarlyExit: (e: Error) => void = () => undefined;
  const ready = new Promise<{ grpcPort: number; httpsPort: number; rootFingerprint: string }>((resolve, reject) => {
    onReady = resolve;
    onEarlyExit = reject;
  });
  // A caller that only awaits `exited` (a hub that must fail to start) does not see this rejection.
  ready.catch(() => undefined);
  child.stdout?.setEncoding('utf8');
  child.stderr?.setEncoding('utf8');
  child.stdout?.on('data', (s: string) => {
    const start = stdout.lastIndexOf('\n') + 1;
    stdout += s;
    for (const line of stdout.slice(start).split('\n')) {
      try {
        const o = JSON.parse(line) as { event?: string; grpcPort?: number; httpsPort?: number; rootFingerprint?: string };
        if (o.event === 'hub.ready') onReady({ grpcPort: o.grpcPort ?? 0, httpsPort: o.httpsPort ?? 0, rootFingerprint: o.rootFingerprint ?? '' });
      } catch {
        // a partial line; it is parsed again when the rest arrives
      }
    }
  });
  child.stderr?.on('data', (s: string) => { stderr += s; });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    child.once('exit', (code, signal) => {
      // 'exit' can come before the pipes are drained: wait for 'close'.
      child.once('close', () => {
        onEarlyExit(new Error(`serve exited (${code ?? signal}) before it was ready: ${stderr}`));
        resolve({ code, signal, stdout, stderr });
      });
    });
  });
  return { child, ready, exited };
}

/** An agent API client for any target (e.g. a hub running in a child process). */
export function clientAt(target: string, caPem: string, identity?: { keyPem: string; certChainPem: string }): AgentClient {
  return client({ grpcTarget: target, caPem } as TestHub, identity, caPem);
}

export interface ManifestWatch {
  readonly received: ManifestEnvelope[];
  readonly ended: Promise<{ status: grpc.status; code: string | undefined }>;
  readonly call: grpc.ClientReadableStream<ManifestEnvelope>;
}

/** Opens WatchManifest; `ended` resolves with the status and Sepal error code it ends with. */
export function watchManifest(c: AgentClient, knownVersion = '0'): ManifestWatch {
  const fn = c['WatchManifest'] as (req: unknown) => grpc.ClientReadableStream<ManifestEnvelope>;
  const call = fn.call(c, { knownVersion });
  const received: ManifestEnvelope[] = [];
  call.on('data', (m: ManifestEnvelope) => received.push(m));
  const ended = new Promise<{ status: grpc.status; code: string | undefined }>((resolve) => {
    call.on('error', (e: grpc.ServiceError) => resolve({ status: e.code, code: errorCode(e) }));
    call.on('end', () => resolve({ status: grpc.status.OK, code: undefined }));
  });
  return { received, ended, call };
}

/** One sample from a Prometheus text exposition: the value of `name` whose labels include `labels`. */
export function metricValue(text: string, name: string, labels: Record<string, string> = {}): number | undefined {
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (m === null || m[1] !== name) continue;
    const have = new Map([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have.get(k) === v)) return Number(m[3]);
  }
  return undefined;
}
