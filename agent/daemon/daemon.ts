// `sepal-agent run`: the daemon. It owns the state lock, loads the identity, keeps the
// certificate fresh (rotation swaps the hub connection in place), keeps a manifest stream open,
// applies each verified manifest through the planner, reports status to the hub, and serves
// metrics and health on loopback. State machine: starting -> running <-> degraded -> revoked;
// stopping -> stopped. The hub being away is 'degraded': the last good manifest keeps running.
import fs from 'node:fs';
import path from 'node:path';
import type { ManifestEnvelope, StatusReport, VpnSecretResponse } from '../../proto/api.ts';
import type { AgentConfig } from '../config.ts';
import { createHubRenew } from '../credentials/hub-renew.ts';
import type { CurrentIdentity } from '../credentials/identity.ts';
import { CertificateRotator, type RotationState } from '../credentials/rotator.ts';
import { detectHost, gpuSamples, toHostFacts } from '../detect/index.ts';
import { IDENTITY_FILES, lockState, statePaths, type StatePaths } from '../enroll/store.ts';
import { AgentError, ErrorCodes, isAgentError } from '../errors.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import { HubConnection, type TlsIdentity } from '../uplink/connection.ts';
import { cachedJwks } from '../uplink/jwks.ts';
import { ManifestStream } from '../uplink/manifest-stream.ts';
import { StatusReporter } from '../uplink/status-reporter.ts';
import type { Logger } from '../log.ts';
import { ManifestGate } from '../manifest/gate.ts';
import { LastGoodStore } from '../manifest/last-good.ts';
import { isManifestRejection, ManifestVerifier } from '../manifest/verify.ts';
import { Heartbeats } from '../metrics/heartbeats.ts';
import { AgentMetrics } from '../metrics/registry.ts';
import { buildMetricsServer, listenMetrics } from '../metrics/server.ts';
import { ApplyRunner, type ApplyResult } from '../reconcile/runner.ts';
import { systemClock, type Clock, type Timer } from '../runtime/clock.ts';
import type { VpnEvent } from '../vpn/runtime.ts';
import { NodeRuntime } from './executors.ts';

export type DaemonState = 'starting' | 'running' | 'degraded' | 'revoked' | 'stopping' | 'stopped';

export interface DaemonDeps {
  readonly config: Readonly<AgentConfig>;
  readonly log: Logger;
  readonly clock?: Clock;
}

/** What `sepal-agent status` reads (written atomically on every change). */
/** A child as `sepal-agent status` shows it. */
export interface ChildStatus {
  readonly state: string;
  readonly pid?: number;
  readonly restarts?: number;
  /** Coded reason it is not up (CHILD_CRASH_LOOP, CHILD_SPAWN_FAILED, FLOWER_NOT_FOUND, VPN_AUTH_FAILED...). */
  readonly error?: string;
  /** The VPN's tunnel state from OpenVPN ('connected', 'reconnecting', 'wait'...). */
  readonly tunnel?: string;
  readonly lastExit?: { readonly code: number | null; readonly signal: string | null; readonly reason: string; readonly at: string };
}

export interface StatusFile {
  readonly state: DaemonState;
  readonly pid: number;
  readonly startedAt: string;
  readonly updatedAt: string;
  readonly nodeId: string;
  readonly org: string;
  readonly cert: { readonly serial: string; readonly notAfter: string; readonly rotation: RotationState };
  readonly manifest: { readonly version: number; readonly lastResult: string | null };
  readonly hub: { readonly address: string; readonly connected: boolean; readonly lastContact: string | null };
  readonly children: Record<string, ChildStatus>;
  readonly rejectedManifests: readonly string[];
  readonly metrics: string | null;
}

const GPU_SAMPLE_MS = 15_000;
const TICK_MS = 10_000;
const APPLY_RETRY_MS = 30_000;

function tlsIdentity(id: CurrentIdentity): TlsIdentity {
  return { keyPem: id.keyPem, certChainPem: id.certPem + id.chainPem, rootsPem: id.caPem };
}

export class AgentDaemon {
  readonly #config: Readonly<AgentConfig>;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #paths: StatePaths;
  readonly metrics = new AgentMetrics();
  readonly #beats: Heartbeats;
  #state: DaemonState = 'starting';
  #unlock: (() => void) | null = null;
  #rotator: CertificateRotator | null = null;
  #identity: CurrentIdentity | null = null;
  #connection: HubConnection | null = null;
  #stream: ManifestStream | null = null;
  #status: StatusReporter | null = null;
  #gate: ManifestGate | null = null;
  #runner: ApplyRunner | null = null;
  #runtime: NodeRuntime | null = null;
  readonly #restartsSeen: Record<string, number> = {};
  #http: Awaited<ReturnType<typeof buildMetricsServer>> | null = null;
  #metricsAddr: string | null = null;
  #facts: StatusReport['facts'] = null;
  #hubConnected = false;
  #lastContact: number | null = null;
  #lastApply: ApplyResult | null = null;
  #rejected: string[] = [];
  #retryTimer: Timer | null = null;
  #applyRetry: Timer | null = null;
  #tick: Timer | null = null;
  #gpuTimer: Timer | null = null;
  readonly #startedAt: number;

  constructor(deps: DaemonDeps) {
    this.#config = deps.config;
    this.#log = deps.log;
    this.#clock = deps.clock ?? systemClock;
    this.#paths = statePaths(deps.config.stateDir);
    this.#beats = new Heartbeats(this.#clock);
    this.#startedAt = this.#clock.now();
  }

  get state(): DaemonState {
    return this.#state;
  }

  get metricsAddress(): string | null {
    return this.#metricsAddr;
  }

  #setState(s: DaemonState): void {
    if (s === this.#state) return;
    this.#log.info({ event: 'agent.state', from: this.#state, to: s }, `agent ${s}`);
    this.#state = s;
    this.#changed();
  }

  /** Starts everything; throws a coded error (nothing left running) when it cannot. */
  async start(): Promise<void> {
    try {
      await this.#start();
    } catch (e) {
      await this.stop();
      throw e;
    }
  }

  async #start(): Promise<void> {
    const cfg = this.#config;
    this.#unlock = lockState(this.#paths);

    // Metrics first, so a broken start is visible to Prometheus too.
    if (cfg.metrics.enabled) {
      this.#http = await buildMetricsServer({
        metrics: this.metrics,
        health: () => this.#beats.check(this.#clock.now(), 3 * TICK_MS),
        readiness: () => this.readiness(),
      });
      this.#metricsAddr = await listenMetrics(this.#http, cfg.metrics.listen, { allowNonLoopback: cfg.metrics.allowNonLoopback });
    }

    const rotator = new CertificateRotator({
      clock: this.#clock,
      paths: this.#paths,
      renew: createHubRenew({ deadlineMs: cfg.hub.rpcDeadlineMs * 3 }),
      onRotated: (id) => this.#onRotated(id),
      onState: (s) => this.#onRotationState(s),
      onRenewal: (r) => this.metrics.renewal(r),
      log: this.#log,
      backoff: { baseMs: cfg.renewal.backoffBaseMs, capMs: cfg.renewal.backoffCapMs },
    });
    this.#rotator = rotator;
    const id = rotator.start();
    this.#identity = id;
    const node = id.node;
    this.metrics.setCertNotAfter(id.notAfter);

    const facts = await detectHost().catch((e: unknown) => {
      this.#log.warn({ err: e, event: 'detect.failed' }, 'host detection failed');
      return null;
    });
    this.#facts = facts === null ? null : toHostFacts(facts);

    const connection = new HubConnection(node.grpcAddress, tlsIdentity(id));
    this.#connection = connection;
    const hubUrl = node.hubUrl.replace(/\/$/, '');
    const verifier = new ManifestVerifier({
      expected: { issuer: node.issuer ?? hubUrl, nodeId: node.nodeId, org: node.org, federationId: node.federationId },
      jwks: cachedJwks(hubUrl, () => tlsIdentity(this.#identity ?? id), path.join(this.#paths.manifestDir, 'jwks.json')),
      clock: this.#clock,
    });
    const store = new LastGoodStore({ stateDir: this.#paths.root, nodeId: node.nodeId, clock: this.#clock });
    store.load();
    this.#gate = new ManifestGate({ verifier, store });
    const runtime = new NodeRuntime({
      stateDir: this.#paths.root,
      flowerKeyPath: path.join(this.#paths.identity, IDENTITY_FILES.flowerKey),
      supernode: cfg.supernode,
      runtimeDir: cfg.runtimeDir,
      openvpn: cfg.openvpn,
      identity: () => this.#identity,
      fetchVpnSecret: async (ref) => (await connection.unary<VpnSecretResponse>('GetVpnSecret', { ref }, cfg.hub.rpcDeadlineMs)).tlsCryptKey,
      onVpnEvent: (e) => this.#onVpnEvent(e),
      clock: this.#clock,
      log: this.#log,
      onChange: () => this.#childrenChanged(),
      onSecurityEvent: (code, detail) => this.#securityEvent(code, detail),
    });
    this.#runtime = runtime;
    this.#runner = new ApplyRunner({
      executors: runtime.executors(),
      observe: () => runtime.observe(),
      onStep: (e) => this.#log.info({ event: 'reconcile.step', version: e.version, step: e.step.kind, phase: e.phase }, 'reconcile step'),
    });

    // The last good manifest runs before the hub is even asked: a hub outage changes nothing.
    try {
      const resumed = await this.#gate.resume();
      if (resumed !== null) await this.#apply(resumed.version, resumed.body);
    } catch (e) {
      // Only a real rejection is a security event; "cannot check now" waits for the stream.
      if (isManifestRejection(e)) this.#manifestFailed(e, 'resume');
      else this.#log.warn({ err: e, event: 'manifest.resume_deferred' }, 'the stored manifest cannot be verified yet');
    }

    this.#stream = new ManifestStream({
      connection,
      clock: this.#clock,
      log: this.#log,
      backoff: { baseMs: cfg.hub.reconnectBaseMs, capMs: cfg.hub.reconnectCapMs },
      knownVersion: () => this.#gate?.version ?? 0,
      onManifest: (env) => this.#onManifest(env),
      onConnected: (c) => this.#onConnected(c),
      onRevoked: () => void this.#onRevoked('stream'),
      onContact: () => this.#onContact(),
    });
    this.#status = new StatusReporter({
      connection,
      clock: this.#clock,
      log: this.#log,
      intervalMs: cfg.hub.statusIntervalSeconds * 1000,
      deadlineMs: cfg.hub.rpcDeadlineMs,
      report: () => this.#report(),
      onContact: () => {
        this.#onContact();
        this.#onConnected(true);
      },
      onRevoked: () => void this.#onRevoked('status'),
    });
    this.#stream.start();
    this.#status.start();
    this.#startTick();
    this.#sampleGpus();
    this.#setState('degraded'); // until the hub answers
    this.#log.info({ event: 'agent.started', nodeId: node.nodeId, org: node.org, hub: node.grpcAddress, metrics: this.#metricsAddr }, 'agent started');
  }

  /** Enrolled, certificate valid, manifest applied, and every child the manifest runs up: the
   *  SuperNode running, and the VPN (when the manifest has one) connected. */
  readiness(): { ready: boolean; checks: Record<string, boolean> } {
    const now = this.#clock.now();
    const id = this.#identity;
    const checks = {
      enrolled: id !== null,
      certValid: id !== null && now < id.notAfter && this.#state !== 'revoked',
      manifestApplied: this.#lastApply?.status === 'applied',
      childrenUp: this.#childrenUp(),
    };
    const ready = Object.values(checks).every(Boolean);
    return { ready, checks };
  }

  #childrenUp(): boolean {
    const rt = this.#runtime;
    if (rt === null) return false;
    const observed = rt.observe();
    const supernode = observed.supernode.running && rt.children.supernode.state === 'running';
    // A VPN is wanted exactly while it is configured and running (a manifest without one stops it).
    const vpn = !observed.vpn.running || rt.children.vpn.tunnel === 'connected';
    return supernode && vpn;
  }

  #onVpnEvent(e: VpnEvent): void {
    switch (e.type) {
      case 'tunnel':
        this.metrics.setVpnUp(e.state === 'CONNECTED');
        break;
      case 'connected':
        this.metrics.setVpnLastConnected(e.at);
        break;
      case 'bytes':
        this.metrics.setVpnBytes({ received: e.received, sent: e.sent });
        break;
      case 'reconnected':
        this.metrics.setVpnReconnectGap(e.gapMs);
        break;
    }
  }

  #startTick(): void {
    const tick = () => {
      this.#beats.beat('main', { expectNextWithinMs: TICK_MS });
      this.metrics.setReady(this.readiness().ready);
      this.#writeStatusFile(); // keeps 'last hub contact' and 'updated' current for `status`
      this.#tick = this.#clock.setTimeout(tick, TICK_MS);
    };
    tick();
  }

  #sampleGpus(): void {
    const run = () => {
      gpuSamples().then((s) => {
        this.metrics.setGpus(s.map((g) => ({
          index: g.index ?? '?', uuid: g.uuid ?? '', model: g.model ?? '',
          utilizationRatio: g.utilizationPct === null ? null : g.utilizationPct / 100,
          memoryUsedBytes: g.memoryUsedBytes, memoryTotalBytes: g.memoryTotalBytes, temperatureCelsius: g.temperatureC,
        })));
      }, (e: unknown) => this.#log.debug({ err: e, event: 'gpu.sample_failed' }, 'GPU sampling failed'))
        .finally(() => { this.#gpuTimer = this.#state === 'stopping' || this.#state === 'stopped' ? null : this.#clock.setTimeout(run, GPU_SAMPLE_MS); });
    };
    run();
  }

  #onContact(): void {
    this.#lastContact = this.#clock.now();
    this.metrics.hubContact(this.#lastContact);
  }

  #onConnected(connected: boolean): void {
    if (connected === this.#hubConnected) return;
    this.#hubConnected = connected;
    this.metrics.setHubConnected(connected);
    if (this.#state === 'running' || this.#state === 'degraded') this.#setState(connected ? 'running' : 'degraded');
    if (connected) this.#status?.changed();
  }

  #onRotated(id: CurrentIdentity): void {
    this.#identity = id;
    this.metrics.setCertNotAfter(id.notAfter);
    this.#connection?.swap(tlsIdentity(id));
    this.#stream?.restart();
    this.#log.info({ event: 'hub.connection_swapped', serial: id.serial }, 'hub connection now presents the renewed certificate');
    // The VPN presents the node certificate too: new files, then a reconnect (the gap is measured).
    this.#runtime?.rotated().catch((e: unknown) => {
      this.#log.error({ event: 'vpn.rotation_failed', err: e }, 'could not hand the renewed certificate to the VPN');
    });
    this.#changed();
  }

  #onRotationState(s: RotationState): void {
    if (s === 'revoked') void this.#onRevoked('renewal');
    this.#changed();
  }

  #onManifest(env: ManifestEnvelope): void {
    const gate = this.#gate;
    if (gate === null) return;
    this.#retryTimer?.cancel();
    gate.accept(env.jws).then(async (m) => {
      this.metrics.setManifestVersion(m.version);
      this.#log.info({ event: 'manifest.accepted', version: m.version, kid: m.kid }, 'manifest accepted');
      await this.#apply(m.version, m.body);
    }, (e: unknown) => {
      if (isAgentError(e, ErrorCodes.MANIFEST_ALREADY_APPLIED)) return;
      if (isManifestRejection(e)) {
        this.#manifestFailed(e, 'stream');
        // An unknown kid may be a key rotated a moment ago: try again once the JWKS may be refetched.
        const retryAt = e.code === ErrorCodes.MANIFEST_UNKNOWN_KID ? Number(e.detail?.['retryAt']) : NaN;
        if (Number.isFinite(retryAt)) this.#retryTimer = this.#clock.setTimeout(() => this.#onManifest(env), Math.max(0, retryAt - this.#clock.now()));
        return;
      }
      // Cannot check now (JWKS unreachable): try the same manifest again later.
      this.#log.warn({ err: e, event: 'manifest.deferred' }, 'manifest could not be verified yet; will retry');
      this.#retryTimer = this.#clock.setTimeout(() => this.#onManifest(env), 30_000);
    });
  }

  #manifestFailed(e: unknown, where: string): void {
    const code = isAgentError(e) ? e.code : ErrorCodes.INTERNAL;
    this.metrics.manifestRejected(code);
    this.#rejected.push(code);
    if (this.#rejected.length > 32) this.#rejected.shift();
    this.#securityEvent(code, { where, ...(isAgentError(e) ? e.detail : {}) });
    this.#status?.changed();
  }

  #securityEvent(code: string, detail: Record<string, unknown> | undefined): void {
    this.#log.warn({ event: 'security.manifest_rejected', reason: code, detail }, 'manifest rejected; the last good manifest keeps running');
  }

  async #apply(version: number | null, body: Parameters<ApplyRunner['apply']>[0] extends infer D ? D extends { body: infer B } ? B : never : never): Promise<void> {
    const runner = this.#runner;
    if (runner === null) return;
    const r = await runner.apply(version === null ? null : { version, body });
    if (r.status !== 'cancelled') this.#lastApply = r;
    if (version !== null && r.status === 'applied') this.metrics.setManifestVersion(version);
    if (r.status === 'failed') {
      this.#log.error({ event: 'reconcile.failed', version: r.version, step: r.step?.kind, err: r.error }, 'could not apply the manifest; retrying');
      // Try the same desired state again later (a dataset may appear), unless something newer came.
      this.#applyRetry?.cancel();
      this.#applyRetry = this.#clock.setTimeout(() => {
        this.#applyRetry = null;
        if (this.#lastApply === r && this.#state !== 'revoked' && this.#state !== 'stopping' && this.#state !== 'stopped') void this.#apply(version, body);
      }, APPLY_RETRY_MS);
    }
    this.#childrenChanged();
  }

  /** Child states into metrics (restarts as a counter of the supervisor's count) and status. */
  #childrenChanged(): void {
    const rt = this.#runtime;
    if (rt === null) return;
    for (const [child, view] of Object.entries(rt.children)) {
      this.metrics.setChildState(child, view.state);
      this.metrics.setChildUp(child, view.state === 'running');
      if (view.lastExit !== null) this.metrics.setChildLastExit(child, view.lastExit.code ?? -1, view.lastExit.at);
    }
    for (const [child, view] of Object.entries(rt.children)) {
      let seen = this.#restartsSeen[child] ?? 0;
      for (; seen < view.restarts; seen++) this.metrics.childRestarted(child);
      this.#restartsSeen[child] = seen;
    }
    this.metrics.setReady(this.readiness().ready);
    this.#changed();
  }

  async #onRevoked(source: string): Promise<void> {
    if (this.#state === 'revoked' || this.#state === 'stopping' || this.#state === 'stopped') return;
    this.#log.error({ event: 'node.revoked', source, nodeId: this.#identity?.node.nodeId }, 'THIS NODE HAS BEEN REVOKED by the hub: stopping the SuperNode and the VPN; files are kept; enroll again to rejoin');
    this.#setState('revoked');
    this.metrics.setRevoked(true);
    this.#stream?.stop();
    this.#status?.stop();
    this.#rotator?.stop();
    const runner = this.#runner;
    if (runner !== null) {
      const r = await runner.apply(null);
      if (r.status !== 'cancelled') this.#lastApply = r;
    }
    this.#changed();
  }

  #report(): StatusReport {
    return {
      ready: this.readiness().ready,
      supernodeState: this.#runtime?.children.supernode.state ?? 'not-configured',
      vpnState: this.#vpnState(),
      manifestVersion: String(this.#gate?.version ?? 0),
      facts: this.#facts,
      rejectedManifests: this.#rejected.splice(0),
      detailJson: JSON.stringify({
        daemon: this.#state,
        rotation: this.#rotator?.state ?? null,
        flower: this.#runtime?.flower?.version ?? null,
        supernode: this.#childDetail('supernode'),
        vpn: this.#childDetail('vpn'),
      }),
    };
  }

  /** The tunnel state while OpenVPN runs ('connected', 'reconnecting'...), else the child's. */
  #vpnState(): string {
    const v = this.#runtime?.children.vpn;
    if (v === undefined) return 'not-configured';
    return (v.state === 'running' || v.state === 'starting') && v.tunnel !== null ? v.tunnel : v.state;
  }

  #childDetail(child: 'supernode' | 'vpn'): ChildStatus {
    const v = this.#runtime?.children[child];
    if (v === undefined) return { state: 'not-configured' };
    return {
      state: v.state,
      ...(v.pid !== null ? { pid: v.pid } : {}),
      restarts: v.restarts,
      ...(v.errorCode !== null ? { error: v.errorCode } : {}),
      ...(v.tunnel !== null ? { tunnel: v.tunnel } : {}),
      ...(v.lastExit !== null ? { lastExit: { code: v.lastExit.code, signal: v.lastExit.signal, reason: v.lastExit.reason, at: new Date(v.lastExit.at).toISOString() } } : {}),
    };
  }

  #changed(): void {
    this.#status?.changed();
    this.#writeStatusFile();
  }

  #writeStatusFile(): void {
    const id = this.#identity;
    if (id === null) return;
    const file: StatusFile = {
      state: this.#state,
      pid: process.pid,
      startedAt: new Date(this.#startedAt).toISOString(),
      updatedAt: new Date(this.#clock.now()).toISOString(),
      nodeId: id.node.nodeId,
      org: id.node.org,
      cert: { serial: id.serial, notAfter: new Date(id.notAfter).toISOString(), rotation: this.#rotator?.state ?? 'idle' },
      manifest: { version: this.#gate?.version ?? 0, lastResult: this.#lastApply?.status ?? null },
      hub: { address: id.node.grpcAddress, connected: this.#hubConnected, lastContact: this.#lastContact === null ? null : new Date(this.#lastContact).toISOString() },
      children: { supernode: this.#childDetail('supernode'), vpn: this.#childDetail('vpn') },
      rejectedManifests: [...this.#rejected],
      metrics: this.#metricsAddr,
    };
    try {
      writeFileAtomicSync(statusFilePath(this.#paths.root), JSON.stringify(file, null, 2) + '\n', 0o644);
    } catch (e) {
      this.#log.warn({ err: e, event: 'status_file.failed' }, 'could not write the status file');
    }
  }

  /** Stops in order: hub loops, children (SuperNode before VPN), metrics; flushes state. */
  async stop(): Promise<void> {
    if (this.#state === 'stopped' || this.#state === 'stopping') return;
    const wasRevoked = this.#state === 'revoked';
    this.#state = 'stopping';
    this.#retryTimer?.cancel();
    this.#applyRetry?.cancel();
    this.#tick?.cancel();
    this.#gpuTimer?.cancel();
    this.#stream?.stop();
    this.#status?.stop();
    this.#rotator?.stop();
    await this.#rotator?.whenIdle();
    if (this.#runner !== null) {
      if (!wasRevoked) await this.#runner.apply(null);
      await this.#runner.close();
    }
    await this.#runtime?.close(); // nothing left running, whatever the last apply did
    this.#connection?.close();
    await this.#http?.close();
    this.#state = 'stopped';
    this.#writeStatusFile();
    this.#unlock?.();
    this.#unlock = null;
    this.#log.info({ event: 'agent.stopped' }, 'agent stopped');
  }
}

export function statusFilePath(stateDir: string): string {
  return path.join(stateDir, 'status.json');
}

export function readStatusFile(stateDir: string): StatusFile | null {
  try {
    return JSON.parse(fs.readFileSync(statusFilePath(stateDir), 'utf8')) as StatusFile;
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AgentError(ErrorCodes.STATE_INVALID, `${statusFilePath(stateDir)} is unreadable`, { cause: e });
  }
}
