// Opening a hub from its data dir, and running it (`serve`): gRPC + HTTPS listeners, the change
// feed that makes admin commands from other processes take effect, CRL refresh, the SuperLink
// registrar (when hub.json has a `superlink` section), and graceful shutdown (streams closed,
// registrar stopped, store flushed).
import type { FastifyInstance } from 'fastify';
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import path from 'node:path';
import { loadHubConfig, type HubConfig } from './config.ts';
import type { HubPaths } from './datadir.ts';
import { ErrorCodes } from '../proto/errors.ts';
import { SepalError } from './errors.ts';
import { listenOrExplain } from './listen.ts';
import { AccessTokenVerifier } from './enroll/access-token.ts';
import { oidcAdminAuthenticator } from './enroll/admin-auth.ts';
import { createEnrollHandler } from './enroll/enroll.ts';
import { createControlClient, readSuperlinkCa } from './flower/control-client.ts';
import { FlowerRegistrar } from './flower/registrar.ts';
import { startGrpcServer, type RunningGrpcServer } from './grpc/server.ts';
import { buildHttpServer } from './http/server.ts';
import type { AdminAuthenticator } from './http/admin.ts';
import { createLogger, type Logger } from './log.ts';
import { HubMetrics } from './metrics.ts';
import { caInventory, loadAuthority, type Authority } from './service/authority.ts';
import type { HubContext } from './service/context.ts';
import { CrlPublisher } from './service/crl.ts';
import { ChangeFeed } from './service/feed.ts';
import { ManifestService } from './service/manifests.ts';
import { revokeNode } from './service/revocation.ts';
import { SqliteStore } from './store/sqlite.ts';
import type { AuditEntry } from './store/store.ts';

export interface OpenHubOptions {
  readonly log?: Logger;
  readonly clock?: () => number;
  readonly metrics?: HubMetrics;
  /** Overrides applied after the config file is read (command-line flags). */
  readonly override?: (c: HubConfig) => HubConfig;
}

export interface OpenHub {
  readonly ctx: HubContext;
  readonly crl: CrlPublisher;
  readonly manifests: ManifestService;
  revoke(nodeId: string, actor: string): Promise<string[]>;
  /** Re-reads the CA material and the server certificate from the data dir (after a `ca` step);
   *  DATA_DIR_INVALID leaves the current one in place. */
  reloadAuthority(): Authority;
  close(): Promise<void>;
}

export async function openHub(paths: HubPaths, opts: OpenHubOptions = {}): Promise<OpenHub> {
  const fileConfig = loadHubConfig(paths.config);
  const config = opts.override === undefined ? fileConfig : opts.override(structuredClone(fileConfig));
  let authority = loadAuthority(paths);
  const store = SqliteStore.open(paths.db);
  await store.migrate();
  const ctx: HubContext = {
    config,
    paths,
    store,
    // Replaced as a whole by reloadAuthority (CA rotation); every use reads the current one.
    get authority() {
      return authority;
    },
    log: opts.log ?? createLogger(),
    metrics: opts.metrics ?? new HubMetrics(),
    clock: opts.clock ?? Date.now,
  };
  const crl = new CrlPublisher(ctx);
  const manifests = new ManifestService(ctx);
  return {
    ctx,
    crl,
    manifests,
    revoke: (nodeId, actor) => revokeNode(ctx, crl, nodeId, actor),
    reloadAuthority: () => {
      authority = loadAuthority(paths);
      return authority;
    },
    close: () => store.close(),
  };
}

export interface ServeOptions extends OpenHubOptions {
  readonly grpcAddr?: { host: string; port: number };
  readonly httpsAddr?: { host: string; port: number };
  readonly adminAuth?: AdminAuthenticator;
  readonly feedIntervalMs?: number;
}

export interface RunningHub {
  readonly hub: OpenHub;
  readonly grpcPort: number;
  readonly httpsPort: number;
  readonly grpc: RunningGrpcServer;
  readonly http: FastifyInstance;
  /** Registers Flower keys with the SuperLink; null without a `superlink` config section. */
  readonly registrar: FlowerRegistrar | null;
  /** Applies changes other processes made (normally every feedIntervalMs). */
  syncNow(): Promise<void>;
  close(graceMs?: number): Promise<void>;
}

const FLOWER_WORK_EVENTS: ReadonlySet<string> = new Set(['node.enrolled', 'node.revoked', 'flower.registration_retried']);
const CA_EVENTS: ReadonlySet<string> = new Set(['ca.prepared', 'ca.activated', 'ca.pruned', 'ca.server_renewed']);

/** The SuperLink registrar for config.superlink, started; null when there is no such section. */
function startRegistrar(ctx: HubContext): FlowerRegistrar | null {
  const sl = ctx.config.superlink;
  if (sl === null) return null;
  const control = createControlClient({
    address: sl.controlAddress,
    caPem: readSuperlinkCa(sl.caFile, ctx.paths.dataDir),
    callTimeoutMs: sl.callTimeoutMs,
  });
  const registrar = new FlowerRegistrar({
    store: ctx.store,
    control,
    log: ctx.log,
    metrics: ctx.metrics,
    clock: ctx.clock,
    retry: { baseMs: sl.retryBaseMs, capMs: sl.retryCapMs },
    scanIntervalMs: sl.scanIntervalMs,
    ownsControl: true,
  });
  ctx.log.info({ event: 'superlink.configured', controlAddress: sl.controlAddress }, 'registering Flower keys with the SuperLink');
  registrar.start();
  return registrar;
}

/** sepal_hub_ca_not_after_timestamp_seconds from the CA material loaded now. */
function exportCaMetrics(ctx: HubContext): void {
  const g = ctx.metrics.caNotAfter;
  g.reset();
  for (const e of caInventory(ctx.authority)) {
    if (e.role !== 'cross') g.set({ role: e.role, state: e.state, key_id: e.keyId.slice(0, 16) }, e.cert.validToDate.getTime() / 1000);
  }
}

export function splitHostPort(s: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  let host = s.slice(0, i);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  return { host, port: Number(s.slice(i + 1)) };
}

export async function serveHub(paths: HubPaths, opts: ServeOptions = {}): Promise<RunningHub> {
  const hub = await openHub(paths, opts);
  const { ctx } = hub;
  // Everything started so far, undone in reverse if a later step fails (a port in use, say),
  // so a failed start never leaves a half-running hub behind.
  const undo: Array<() => Promise<void>> = [() => hub.close()];
  const unwind = async (): Promise<void> => {
    for (const f of undo.reverse()) await f().catch(() => undefined);
  };
  try {
    const vpnCrl = hub.crl.vpnCopyPath;
    if (vpnCrl !== null && fs.statSync(path.dirname(vpnCrl), { throwIfNoEntry: false })?.isDirectory() !== true) {
      throw new SepalError(ErrorCodes.CONFIG_INVALID, `vpn.crlFile: the directory of ${vpnCrl} does not exist`, { detail: { path: 'vpn.crlFile' } });
    }
    await hub.crl.refresh();
    exportCaMetrics(ctx);

    const registrar = startRegistrar(ctx);
    if (registrar !== null) undo.push(() => registrar.stop());

    let grpcServer: RunningGrpcServer | null = null;
    let httpsServer: { setSecureContext(o: { key: string; cert: string }): void } | null = null;
    /** A `ca` step (from any process) changed ca/ or tls/: new connections get the new material. */
    const reloadCa = async (seq: number): Promise<void> => {
      try {
        hub.reloadAuthority();
      } catch (err) {
        ctx.log.error({ err, event: 'ca.reload_failed', seq }, 'could not load the changed CA material; still serving the previous one');
        return;
      }
      exportCaMetrics(ctx);
      grpcServer?.reloadTls();
      httpsServer?.setSecureContext({ key: ctx.authority.serverKeyPem, cert: ctx.authority.serverChainPem });
      await hub.crl.refresh();
      ctx.log.info({ event: 'ca.reloaded', seq, rootFingerprint: ctx.authority.rootFingerprint, issuerKeyId: ctx.authority.issuerKeyId }, 'CA material reloaded');
    };
    const onChange = async (e: AuditEntry): Promise<void> => {
      if (CA_EVENTS.has(e.event)) {
        await reloadCa(e.seq);
        return;
      }
      // Enrollments, revocations and operator retries (from any process) may have queued work.
      if (registrar !== null && FLOWER_WORK_EVENTS.has(e.event)) registrar.kick();
      if (grpcServer === null || e.nodeId === null) {
        if (e.event === 'keys.rotated') ctx.log.info({ event: 'keys.seen', seq: e.seq }, 'signing keys changed');
        return;
      }
      if (e.event === 'node.revoked') {
        grpcServer.streams.close(e.nodeId, grpc.status.PERMISSION_DENIED, ErrorCodes.NODE_REVOKED, 'node revoked');
        // The revoking process regenerates too; doing it here as well covers one that died
        // between its commit and its CRL write. The CRL lock keeps the newest list on disk.
        await hub.crl.refresh();
      } else if (e.event === 'manifest.published' && grpcServer.streams.has(e.nodeId)) {
        const m = await ctx.store.latestManifest(e.nodeId);
        if (m !== null) grpcServer.streams.push(e.nodeId, { jws: m.jws, version: String(m.version) });
      }
    };
    const feed = new ChangeFeed(ctx.store, ctx.log, onChange);
    await feed.start(opts.feedIntervalMs ?? 250);
    undo.push(() => feed.stop());

    const g = opts.grpcAddr ?? splitHostPort(ctx.config.grpc.listen);
    const h = opts.httpsAddr ?? splitHostPort(ctx.config.https.listen);
    const verifier = ctx.config.idp === null ? null : new AccessTokenVerifier(ctx.config.idp);
    const running = await startGrpcServer({ ctx, host: g.host, port: g.port, enroll: createEnrollHandler({ ctx, verifier, firstManifest: (nodeId, org) => hub.manifests.firstManifest(nodeId, org) }) });
    grpcServer = running;
    undo.push(() => running.close(0));
    let listening = false;
    // A public address with port 0 (tests, local runs) means "the port the listener got".
    const pub = ctx.config.grpc.publicAddress;
    const grpcPublicAddress = pub.endsWith(':0') ? `${pub.slice(0, -2)}:${running.port}` : pub;
    const http = await buildHttpServer({
      ctx,
      grpcPublicAddress,
      crl: hub.crl,
      manifests: hub.manifests,
      revoke: async (nodeId, actor) => {
        const s = await hub.revoke(nodeId, actor);
        await feed.poll();
        return s;
      },
      https: { key: ctx.authority.serverKeyPem, cert: ctx.authority.serverChainPem },
      readiness: () => {
        const crl = hub.crl.isValid(ctx.clock());
        return { ready: listening && crl, checks: { grpc: true, https: listening, crl } };
      },
      ...(opts.adminAuth !== undefined ? { adminAuth: opts.adminAuth } : verifier !== null ? { adminAuth: oidcAdminAuthenticator(verifier) } : {}),
    });
    undo.push(() => http.close());
    await listenOrExplain(() => http.listen({ host: h.host, port: h.port }), h);
    httpsServer = http.server as unknown as { setSecureContext(o: { key: string; cert: string }): void };
    listening = true;
    const addr = http.server.address();
    const httpsPort = typeof addr === 'object' && addr !== null ? addr.port : h.port;
    ctx.log.info({ event: 'https.listening', host: h.host, port: httpsPort }, 'HTTPS listening');

    // Regenerate the CRL well before nextUpdate even when nothing is revoked.
    const crlTimer = setInterval(() => {
      if (hub.crl.isStale(ctx.clock())) hub.crl.refresh().catch((err: unknown) => ctx.log.error({ err, event: 'crl.refresh_failed' }, 'CRL refresh failed'));
    }, 60_000);
    crlTimer.unref();

    let closing: Promise<void> | null = null;
    return {
      hub,
      grpcPort: running.port,
      httpsPort,
      grpc: running,
      http,
      registrar,
      syncNow: () => feed.poll(),
      close: (graceMs = 5000) => {
        closing ??= (async () => {
          listening = false;
          clearInterval(crlTimer);
          await feed.stop();
          await Promise.all([running.close(graceMs), http.close(), registrar?.stop()]);
          await hub.close();
          ctx.log.info({ event: 'hub.stopped' }, 'hub stopped');
        })();
        return closing;
      },
    };
  } catch (e) {
    await unwind();
    throw e;
  }
}
