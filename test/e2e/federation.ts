// A whole Sepal + Flower federation on loopback, from real parts: the hub (in this process), an
// OpenID provider with the device flow (oidc-provider, in this process), `flower-superlink` with
// TLS and SuperNode authentication, and one `sepal-agent` process per organisation, each enrolled
// through the device flow and running its own `flower-supernode`. Used by test/e2e/flower.test.ts
// and by `npm run demo` (test/e2e/demo.ts); `say` receives the progress lines.
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { REPO, cli, freePorts, metricValue, startTestHub, type TestHub } from '../helpers/hub.ts';
import { startTestIdp, type TestIdp } from '../helpers/oidc.ts';
import {
  ensureFlowerVenv, flowerBin, flwrRun, makeSuperlinkTls, startSuperlink, supernodeList,
  type ConfigMap, type FlwrRunResult, type Superlink, type SupernodeInfo,
} from '../helpers/flower.ts';

const AGENT = path.join(REPO, 'agent/cli/main.ts');
const AUDIENCE = 'https://hub.sepal.test';
const CLIENT_ID = 'sepal-agent';

export interface OrgSpec {
  readonly org: string;
  /** The IdP user who approves this organisation's enrollment (role sepal-enroll). */
  readonly user: string;
}

export interface FederationOptions {
  readonly orgs: readonly OrgSpec[];
  /** Node certificate lifetime on the hub (60 s and up). */
  readonly leafLifetimeSeconds: number;
  readonly say?: (line: string) => void;
  /** Called with each device-flow prompt before it is approved (the demo shows it). */
  readonly onPrompt?: (org: string, facts: Record<string, string>) => void;
}

export interface AgentProc {
  readonly org: string;
  readonly stateDir: string;
  readonly metricsPort: number;
  readonly child: ChildProcess;
  nodeId: string;
  logs(): string;
  exited(): boolean;
}

interface StatusFile {
  state: string;
  cert: { serial: string; notAfter: string };
  manifest: { version: number; lastResult: string | null };
  children: Record<string, { state: string; pid?: number; restarts?: number }>;
}

export interface HubNode {
  id: string;
  org: string;
  state: string;
  certSerial: string | null;
  certNotAfter: string | null;
  flower: { nodeId: string | null; state: string; summary: string } | null;
  status: { supernodeState?: string } | null;
}

export class Federation {
  readonly work: string;
  readonly agents: AgentProc[] = [];
  hub: TestHub | null = null;
  idp: TestIdp | null = null;
  superlink: Superlink | null = null;
  readonly #opts: FederationOptions;
  #closed = false;

  constructor(opts: FederationOptions) {
    this.#opts = opts;
    this.work = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-federation-'));
  }

  #say(line: string): void {
    this.#opts.say?.(line);
  }

  async start(): Promise<void> {
    this.#say(`Flower venv: ${await ensureFlowerVenv()}`);

    const tls = await makeSuperlinkTls(path.join(this.work, 'superlink-tls'));
    this.superlink = await startSuperlink({ dir: path.join(this.work, 'superlink'), tls });
    this.#say(`SuperLink (flower-superlink, TLS, SuperNode auth): Fleet ${this.superlink.fleetAddress}, Control ${this.superlink.controlAddress}`);

    this.idp = await startTestIdp({
      clientId: CLIENT_ID, audience: AUDIENCE, pollIntervalSeconds: 1,
      users: this.#opts.orgs.map((o) => ({ id: o.user, password: `${o.user}-pw`, org: o.org, roles: ['sepal-enroll'] })),
    });
    this.#say(`OpenID provider (device flow): ${this.idp.issuer}`);

    const idp = this.idp;
    const superlink = this.superlink;
    this.hub = await startTestHub({
      fixedPorts: true,
      configure: (c) => ({
        ...c,
        certificates: { leafLifetimeSeconds: this.#opts.leafLifetimeSeconds },
        idp: {
          issuer: idp.issuer, clientId: CLIENT_ID, audience: AUDIENCE, scopes: ['openid', 'enroll'],
          algorithms: ['ES256'], roleClaim: 'realm_access.roles', orgClaim: 'org', enrollRole: 'sepal-enroll', adminRole: 'sepal-admin',
          clockToleranceSeconds: 30,
        },
        superlink: {
          controlAddress: superlink.controlAddress, caFile: tls.ca,
          callTimeoutMs: 10_000, retryBaseMs: 500, retryCapMs: 5_000, scanIntervalMs: 2_000,
        },
      }),
    });
    this.#say(`Sepal hub: ${this.hub.httpsUrl} (agent API ${this.hub.grpcTarget}), node certificates live ${this.#opts.leafLifetimeSeconds} s`);

    // Each organisation's manifest: where its SuperNode finds the SuperLink, the CA it trusts,
    // its data partition and a ClientAppIo port of its own (two SuperNodes share this host).
    const caPem = fs.readFileSync(tls.ca, 'utf8');
    const appIoPorts = await freePorts(this.#opts.orgs.length);
    for (const [i, o] of this.#opts.orgs.entries()) {
      const file = path.join(this.work, `manifest-${o.org}.json`);
      fs.writeFileSync(file, JSON.stringify({
        superlink: { address: superlink.fleetAddress, caCertPem: caPem },
        supernode: {
          nodeConfig: { 'partition-id': i, 'num-partitions': this.#opts.orgs.length },
          clientAppIoAddress: `127.0.0.1:${appIoPorts[i] ?? 0}`,
        },
        privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
      }));
      const r = await cli(['manifest', 'publish', '--data-dir', this.hub.paths.dataDir, '--org', o.org, '--file', file]);
      if (r.code !== 0) throw new Error(`manifest publish --org ${o.org}: ${r.stderr}`);
    }
    this.#say(`Manifests signed for ${this.#opts.orgs.map((o) => o.org).join(', ')}`);
  }

  /** `sepal-agent enroll` through the device flow, approved on the OpenID provider's own pages. */
  async enroll(o: OrgSpec): Promise<string> {
    const hub = this.#need(this.hub);
    const idp = this.#need(this.idp);
    const stateDir = path.join(this.work, `agent-${o.org}`);
    const child = spawn(process.execPath, [AGENT, 'enroll', '--hub', hub.httpsUrl, '--ca-sha256', hub.init.rootFingerprint, '--state-dir', stateDir, '--name', `${o.org}-host`, '--json'],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let onPrompt: (f: Record<string, string>) => void = () => undefined;
    const prompt = new Promise<Record<string, string>>((resolve) => { onPrompt = resolve; });
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s;
      const facts: Record<string, string> = {};
      for (const m of stdout.matchAll(/^([a-z_]+): (.*)$/gm)) facts[m[1] ?? ''] = m[2] ?? '';
      if ('expires_in' in facts) onPrompt(facts);
    });
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
    const done = new Promise<number | null>((resolve) => child.once('close', (code) => resolve(code)));
    const facts = await Promise.race([prompt, done.then((code) => { throw new Error(`enroll exited ${String(code)} before its prompt: ${stderr}`); })]);
    this.#opts.onPrompt?.(o.org, facts);
    await idp.approve(facts['user_code'] ?? '', o.user, `${o.user}-pw`);
    const code = await done;
    if (code !== 0) throw new Error(`enroll for ${o.org} exited ${String(code)}: ${stderr}`);
    const out = JSON.parse(stdout.trimEnd().split('\n').at(-1) ?? '{}') as { nodeId: string };
    this.#say(`Enrolled ${o.org}: node ${out.nodeId} (user ${o.user} approved the device code ${facts['user_code'] ?? ''})`);
    return out.nodeId;
  }

  /** `sepal-agent run` for an enrolled organisation, with the venv's flower-supernode. */
  async startAgent(o: OrgSpec, nodeId: string): Promise<AgentProc> {
    const stateDir = path.join(this.work, `agent-${o.org}`);
    const cfg = path.join(this.work, `agent-${o.org}.json`);
    fs.writeFileSync(cfg, JSON.stringify({
      logLevel: 'info',
      supernode: { command: flowerBin('flower-supernode') },
      hub: { statusIntervalSeconds: 5, reconnectBaseMs: 200, reconnectCapMs: 2000 },
      renewal: { backoffBaseMs: 500, backoffCapMs: 5000 },
    }));
    const [metricsPort] = await freePorts(1);
    const child = spawn(process.execPath, [AGENT, 'run', '--config', cfg, '--state-dir', stateDir, '--metrics-addr', `127.0.0.1:${metricsPort ?? 0}`],
      { stdio: ['ignore', 'pipe', 'pipe'] });
    let logs = '';
    const keep = (s: string) => { logs = (logs + s).slice(-2_000_000); };
    child.stdout.setEncoding('utf8').on('data', keep);
    child.stderr.setEncoding('utf8').on('data', keep);
    const a: AgentProc = {
      org: o.org, stateDir, metricsPort: metricsPort ?? 0, child, nodeId,
      logs: () => logs,
      exited: () => child.exitCode !== null || child.signalCode !== null,
    };
    this.agents.push(a);
    this.#say(`Agent for ${o.org} running (metrics on 127.0.0.1:${a.metricsPort})`);
    return a;
  }

  status(a: AgentProc): StatusFile | null {
    try {
      return JSON.parse(fs.readFileSync(path.join(a.stateDir, 'status.json'), 'utf8')) as StatusFile;
    } catch {
      return null;
    }
  }

  async metrics(a: AgentProc): Promise<string> {
    return new Promise((resolve, reject) => {
      http.get({ host: '127.0.0.1', port: a.metricsPort, path: '/metrics' }, (res) => {
        let body = '';
        res.setEncoding('utf8').on('data', (s: string) => { body += s; }).on('end', () => resolve(body));
      }).on('error', reject);
    });
  }

  async renewals(a: AgentProc): Promise<number> {
    return metricValue(await this.metrics(a), 'sepal_agent_renewals_total', { result: 'success' }) ?? 0;
  }

  async hubNodes(): Promise<HubNode[]> {
    const r = await cli(['node', 'list', '--data-dir', this.#need(this.hub).paths.dataDir, '--json']);
    if (r.code !== 0) throw new Error(`node list: ${r.stderr}`);
    return (JSON.parse(r.stdout) as { nodes: HubNode[] }).nodes;
  }

  async flowerNodes(): Promise<SupernodeInfo[]> {
    return supernodeList(this.#need(this.superlink));
  }

  async run(runConfig: ConfigMap, timeoutMs = 300_000): Promise<FlwrRunResult> {
    const resultPath = path.join(this.work, `result-${crypto.randomBytes(4).toString('hex')}.json`);
    return flwrRun({ superlink: this.#need(this.superlink), resultPath, runConfig, timeoutMs, workDir: this.work });
  }

  async revoke(nodeId: string): Promise<void> {
    const r = await cli(['node', 'revoke', nodeId, '--data-dir', this.#need(this.hub).paths.dataDir]);
    if (r.code !== 0) throw new Error(`node revoke: ${r.stderr}`);
  }

  /**
   * Stops everything this federation started, in order: agents (SIGTERM: each stops its
   * SuperNode), then any SuperNode group an agent left behind, the SuperLink, the hub, the IdP.
   * Safe to call twice and from a signal handler.
   */
  async close(opts: { keepWork?: boolean } = {}): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await Promise.all(this.agents.map(async (a) => {
      const pids = Object.values(this.status(a)?.children ?? {}).map((c) => c.pid).filter((p): p is number => typeof p === 'number');
      if (!a.exited()) {
        const gone = new Promise<void>((resolve) => a.child.once('exit', () => resolve()));
        a.child.kill('SIGTERM');
        const t = setTimeout(() => a.child.kill('SIGKILL'), 20_000);
        await gone;
        clearTimeout(t);
      }
      // The agent stops its SuperNode on SIGTERM; a process group it could not stop goes now.
      for (const pid of pids) {
        try {
          process.kill(-pid, 'SIGKILL');
        } catch {
          // already gone
        }
      }
    }));
    await this.superlink?.stop();
    await this.hub?.stop();
    await this.idp?.close();
    if (opts.keepWork !== true) fs.rmSync(this.work, { recursive: true, force: true });
  }

  #need<T>(v: T | null): T {
    if (v === null) throw new Error('federation not started');
    return v;
  }
}
