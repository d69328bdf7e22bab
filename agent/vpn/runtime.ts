// The VPN child: the OpenVPN client run from a manifest's `vpn` section under a ChildSupervisor,
// watched through its management interface. configure() fetches the tls-crypt key from the hub and
// writes the client files (0600 in <stateDir>/vpn, 0700); start() checks OpenVPN and the TUN device,
// runs `openvpn --config FILE` and waits (bounded) for the tunnel; rotated() rewrites cert and key
// from the renewed identity and sends SIGUSR1, after which OpenVPN re-reads them (persist-key is
// off) and reconnects — the time from the rotation to the next CONNECTED is reported as the gap.
//
// The tunnel state comes only from the management interface. Whether the server refused this
// node's certificate cannot be read from OpenVPN directly under TLS 1.3 (the client just sees the
// handshake time out); the rule used: a handshake that fails (`tls-error`) after the server's own
// certificate was verified in that attempt means the server answered, proved itself, and then
// refused us -> VPN_AUTH_FAILED. An explicit AUTH_FAILED says so too.
import fs from 'node:fs';
import type { VpnConfig } from '../reconcile/steps.ts';
import { AgentError, ErrorCodes, isAgentError, type ErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import { ensurePrivateDir, writeFileAtomicSync } from '../fsutil.ts';
import { resolveExecutable } from '../flower/supernode.ts';
import { ChildSupervisor, type ChildSpec, type ExitInfo, type SpawnFn, type SupervisorStatus } from '../supervise/supervisor.ts';
import { MAX_SOCKET_PATH_BYTES, renderClientConfig, vpnPaths, type VpnPaths } from './config.ts';
import { ManagementClient, type ManagementEvent, type TunnelState } from './management.ts';

/** The node's TLS identity, as the VPN needs it (CurrentIdentity has these fields). */
export interface VpnIdentity {
  readonly keyPem: string;
  readonly certPem: string;
  /** Intermediates ('' when none). */
  readonly chainPem: string;
  readonly caPem: string;
}

export type VpnEvent =
  /** The tunnel state changed (null: OpenVPN not running or its management interface not reached). */
  | { readonly type: 'tunnel'; readonly state: TunnelState | null }
  | { readonly type: 'connected'; readonly at: number }
  | { readonly type: 'bytes'; readonly received: number; readonly sent: number }
  /** CONNECTED again after a certificate rotation: gapMs from the rotation to CONNECTED. */
  | { readonly type: 'reconnected'; readonly gapMs: number };

export interface VpnRuntimeOptions {
  readonly stateDir: string;
  readonly runtimeDir: string;
  readonly command: string;
  readonly stopGraceMs: number;
  /** start-vpn waits this long for CONNECTED before the SuperNode is started anyway (0: no wait). */
  readonly connectWaitMs: number;
  readonly clock: Clock;
  readonly log: Logger;
  /** OpenVPN's environment and the PATH the command is looked up on; default process.env. */
  readonly env?: NodeJS.ProcessEnv;
  readonly identity: () => VpnIdentity | null;
  /** GetVpnSecret: the tls-crypt key file the hub holds under `ref`. */
  readonly fetchSecret: (ref: string) => Promise<Uint8Array>;
  readonly onChange: () => void;
  readonly onEvent?: (e: VpnEvent) => void;
  /** The TUN device checked before a start; null: no check. Default /dev/net/tun on Linux. */
  readonly tunDevice?: string | null;
  readonly spawn?: SpawnFn;
  /** Seconds between byte counts from OpenVPN; default 5. */
  readonly bytecountSeconds?: number;
}

export type VpnProcessState = SupervisorStatus['state'] | 'not-configured' | 'failed';

export interface VpnView {
  readonly state: VpnProcessState;
  /** The management state (CONNECTED, RECONNECTING...) while OpenVPN runs, else null. */
  readonly tunnel: TunnelState | null;
  readonly configHash: string | null;
  readonly pid: number | null;
  readonly restarts: number;
  readonly lastExit: ExitInfo | null;
  readonly errorCode: ErrorCode | null;
  readonly crashLoop: boolean;
  /** When the tunnel last came up (Unix ms), else null. */
  readonly connectedAt: number | null;
}

const TLS_CRYPT_RE = /^(?:#[^\n]*\n)*-----BEGIN OpenVPN Static key V1-----\n(?:[0-9a-fA-F]{32}\n){16}-----END OpenVPN Static key V1-----\n?$/;
const MAX_SECRET_BYTES = 4096;
// Failures that say "the hub is not reachable now", not "there is no such key".
const TRANSIENT = new Set<string>([ErrorCodes.HUB_UNREACHABLE, ErrorCodes.TIMEOUT, ErrorCodes.SHUTTING_DOWN]);

/** The tls-crypt key file from the hub, checked: OpenVPN's static key format and nothing else. */
export function checkTlsCryptKey(raw: Uint8Array): string {
  if (raw.byteLength === 0 || raw.byteLength > MAX_SECRET_BYTES) {
    throw new AgentError(ErrorCodes.VPN_SECRET_INVALID, `the tls-crypt key from the hub has ${raw.byteLength} bytes`);
  }
  const text = Buffer.from(raw).toString('utf8').replace(/\r\n/g, '\n');
  if (!TLS_CRYPT_RE.test(text)) throw new AgentError(ErrorCodes.VPN_SECRET_INVALID, 'the tls-crypt key from the hub is not an OpenVPN static key file');
  return text.endsWith('\n') ? text : text + '\n';
}

export class VpnRuntime {
  readonly #o: VpnRuntimeOptions;
  readonly paths: VpnPaths;
  #supervisor: ChildSupervisor | null = null;
  #management: ManagementClient | null = null;
  /** The manifest section whose files are written, and its hash. */
  #written: { readonly configHash: string; readonly vpn: VpnConfig } | null = null;
  /** The hash OpenVPN runs with (null: not started). */
  #runningHash: string | null = null;
  #failure: ErrorCode | null = null;
  #tunnelError: ErrorCode | null = null;
  #tunnel: TunnelState | null = null;
  #connectedAt: number | null = null;
  #serverVerified = false;
  #rotationAt: number | null = null;
  #sawDownSinceRotation = false;
  readonly #waiters = new Set<() => void>();

  constructor(o: VpnRuntimeOptions) {
    this.#o = o;
    this.paths = vpnPaths(o.stateDir, o.runtimeDir);
  }

  view(): VpnView {
    const s = this.#supervisor?.status() ?? null;
    const state: VpnProcessState = this.#failure !== null ? 'failed' : s === null ? (this.#written === null ? 'not-configured' : 'stopped') : s.state;
    const spawnErr = s?.error ?? null;
    const errorCode = this.#failure
      ?? (spawnErr !== null && spawnErr.code === ErrorCodes.CHILD_SPAWN_FAILED && spawnErr.errno === 'ENOENT' ? ErrorCodes.VPN_NOT_FOUND : spawnErr?.code ?? null)
      ?? this.#tunnelError;
    return {
      state,
      tunnel: this.#tunnel,
      configHash: this.#runningHash,
      pid: s?.pid ?? null,
      restarts: s?.restarts ?? 0,
      lastExit: s?.lastExit ?? null,
      errorCode,
      crashLoop: s?.crashLoop ?? false,
      connectedAt: this.#connectedAt,
    };
  }

  /** Wanted by the applied manifest and not stopped: what the planner sees as running. */
  get running(): boolean {
    const s = this.#supervisor?.status();
    return this.#runningHash !== null && s !== undefined && s.state !== 'stopped';
  }

  // ---- steps ----

  /** write-vpn-config: the tls-crypt key from the hub, then every file OpenVPN reads. */
  async configure(configHash: string, vpn: VpnConfig, signal?: AbortSignal): Promise<void> {
    const id = this.#requireIdentity();
    const key = await this.#tlsCryptKey(vpn.tlsCryptKeyRef);
    signal?.throwIfAborted();
    const p = this.paths;
    ensurePrivateDir(p.dir);
    this.#writeIdentity(id);
    writeFileAtomicSync(p.tlsCrypt, key, 0o600);
    writeFileAtomicSync(p.tlsCryptRef, vpn.tlsCryptKeyRef + '\n', 0o600);
    writeFileAtomicSync(p.config, renderClientConfig({ vpn, paths: p }), 0o600);
    this.#written = { configHash, vpn };
    this.#o.log.info({ event: 'vpn.configured', configHash, remotes: vpn.remotes.length, routes: vpn.routes.length }, 'VPN client configuration written');
    this.#o.onChange();
  }

  /** start-vpn / restart-vpn: runs OpenVPN with the written files and waits (bounded) for the
   *  tunnel. Throws VPN_NOT_FOUND / VPN_TUN_UNAVAILABLE when it cannot run at all. */
  async start(configHash: string, signal?: AbortSignal): Promise<void> {
    const o = this.#o;
    if (this.#written?.configHash !== configHash) throw new AgentError(ErrorCodes.INTERNAL, 'start-vpn without its configuration written');
    let spec: ChildSpec;
    try {
      spec = this.#preflight();
    } catch (e) {
      await this.#halt();
      this.#failure = isAgentError(e) ? e.code : ErrorCodes.INTERNAL;
      o.onChange();
      throw e;
    }
    this.#failure = null;
    this.#tunnelError = null;
    this.#runningHash = configHash;
    if (this.#supervisor === null) {
      const sup = new ChildSupervisor({
        name: 'vpn', spec, clock: o.clock, log: o.log, stopGraceMs: o.stopGraceMs,
        ...(o.spawn === undefined ? {} : { spawn: o.spawn }),
      });
      sup.onChange(() => this.#supervisorChanged());
      this.#supervisor = sup;
      sup.start();
    } else {
      this.#setTunnel(null);
      await this.#supervisor.restart(spec);
    }
    this.#managementClient().start();
    o.log.info({ event: 'vpn.started', configHash }, 'OpenVPN started with the manifest configuration');
    o.onChange();
    await this.#waitConnected(o.connectWaitMs, signal);
  }

  /** stop-vpn: SIGTERM to OpenVPN's group (SIGKILL after the grace); resolves when it is gone. */
  async stop(): Promise<void> {
    await this.#halt();
    this.#runningHash = null;
    this.#failure = null;
    this.#tunnelError = null;
    this.#o.onChange();
  }

  /** A renewed certificate: rewrite ca/cert/key and make a running OpenVPN reconnect with them. */
  async rotated(): Promise<void> {
    if (this.#written === null) return;
    const id = this.#o.identity();
    if (id === null) return;
    this.#writeIdentity(id);
    const sup = this.#supervisor;
    if (sup === null || !this.running) return; // the next start reads the new files
    this.#rotationAt = this.#o.clock.now();
    this.#sawDownSinceRotation = false;
    const m = this.#management;
    if (m !== null && m.connected) {
      try {
        await m.signal('SIGUSR1');
        this.#o.log.info({ event: 'vpn.reconnecting', reason: 'certificate-rotated' }, 'VPN reconnecting with the renewed certificate');
        return;
      } catch (e) {
        this.#o.log.warn({ event: 'vpn.signal_failed', err: e }, 'could not signal OpenVPN through its management interface; restarting it');
      }
    }
    // No management connection: a restart reads the new files as well (and costs a little more).
    this.#sawDownSinceRotation = true;
    this.#setTunnel(null);
    await sup.restart();
  }

  async close(): Promise<void> {
    await this.#halt();
  }

  // ---- internals ----

  #requireIdentity(): VpnIdentity {
    const id = this.#o.identity();
    if (id === null) throw new AgentError(ErrorCodes.STATE_INVALID, 'no node identity to configure the VPN with');
    return id;
  }

  #writeIdentity(id: VpnIdentity): void {
    const p = this.paths;
    const nl = (s: string) => (s === '' || s.endsWith('\n') ? s : s + '\n');
    ensurePrivateDir(p.dir);
    // The server certificate chains to the federation's roots through the issuing CA.
    writeFileAtomicSync(p.ca, nl(id.caPem) + nl(id.chainPem), 0o600);
    // Leaf first; OpenVPN sends the rest of the file as the chain.
    writeFileAtomicSync(p.cert, nl(id.certPem) + nl(id.chainPem), 0o600);
    writeFileAtomicSync(p.key, nl(id.keyPem), 0o600);
  }

  async #tlsCryptKey(ref: string): Promise<string> {
    try {
      return checkTlsCryptKey(await this.#o.fetchSecret(ref));
    } catch (e) {
      const code = isAgentError(e) ? e.code : ErrorCodes.INTERNAL;
      if (code === ErrorCodes.VPN_SECRET_INVALID) throw e;
      // The hub is away: the key fetched last time for the same ref keeps the VPN up.
      const cached = TRANSIENT.has(code) ? this.#cachedKey(ref) : null;
      if (cached !== null) {
        this.#o.log.warn({ event: 'vpn.secret_cached', ref, code }, 'the hub is unreachable: using the tls-crypt key fetched earlier for this ref');
        return cached;
      }
      throw new AgentError(ErrorCodes.VPN_SECRET_UNAVAILABLE, `cannot get the VPN tls-crypt key "${ref}" from the hub (${code})`, { cause: e, detail: { ref, hubCode: code } });
    }
  }

  #cachedKey(ref: string): string | null {
    try {
      if (fs.readFileSync(this.paths.tlsCryptRef, 'utf8') !== ref + '\n') return null;
      return checkTlsCryptKey(fs.readFileSync(this.paths.tlsCrypt));
    } catch {
      return null;
    }
  }

  /** What must hold before OpenVPN can run: its argv, or a coded reason why not. */
  #preflight(): ChildSpec {
    const o = this.#o;
    const env = o.env ?? process.env;
    const binary = resolveExecutable(o.command, env);
    if (binary === null) {
      throw new AgentError(ErrorCodes.VPN_NOT_FOUND, `${o.command} not found${o.command.includes('/') ? '' : ' on PATH'}: install OpenVPN 2.6 (apt install openvpn) or set openvpn.command`, { detail: { command: o.command } });
    }
    const tun = o.tunDevice === undefined ? (process.platform === 'linux' ? '/dev/net/tun' : null) : o.tunDevice;
    if (tun !== null) {
      try {
        fs.accessSync(tun, fs.constants.R_OK | fs.constants.W_OK);
      } catch (e) {
        throw new AgentError(ErrorCodes.VPN_TUN_UNAVAILABLE, `${tun} is not available (${(e as NodeJS.ErrnoException).code ?? 'error'}): load the tun module, or give the container/service the device`, { detail: { device: tun } });
      }
    }
    const sock = this.paths.managementSocket;
    if (Buffer.byteLength(sock) > MAX_SOCKET_PATH_BYTES) {
      throw new AgentError(ErrorCodes.CONFIG_INVALID, `runtimeDir is too long for a unix socket (${sock})`, { detail: { path: 'runtimeDir' } });
    }
    try {
      fs.mkdirSync(o.runtimeDir, { recursive: true, mode: 0o700 });
      // A socket left by an OpenVPN that was killed would make the new one fail to listen.
      if (fs.lstatSync(sock, { throwIfNoEntry: false })?.isSocket() === true) fs.unlinkSync(sock);
    } catch (e) {
      throw new AgentError(ErrorCodes.STATE_INVALID, `cannot prepare ${o.runtimeDir}: ${(e as Error).message}`, { cause: e });
    }
    return { argv: [binary, '--config', this.paths.config], cwd: this.paths.dir, ...(o.env === undefined ? {} : { env: plainEnv(o.env) }) };
  }

  #managementClient(): ManagementClient {
    if (this.#management === null) {
      this.#management = new ManagementClient({
        socketPath: this.paths.managementSocket,
        clock: this.#o.clock,
        log: this.#o.log,
        bytecountSeconds: this.#o.bytecountSeconds ?? 5,
        onEvent: (e) => this.#onManagement(e),
        onConnection: (up) => {
          if (!up) this.#setTunnel(null);
        },
      });
    }
    return this.#management;
  }

  async #halt(): Promise<void> {
    this.#management?.stop();
    this.#management = null;
    await this.#supervisor?.stop();
    this.#setTunnel(null);
    this.#rotationAt = null;
  }

  #onManagement(e: ManagementEvent): void {
    switch (e.type) {
      case 'state':
        this.#onState(e.state, e.detail);
        return;
      case 'bytecount':
        this.#o.onEvent?.({ type: 'bytes', received: e.received, sent: e.sent });
        return;
      case 'log':
        this.#onLog(e.message);
        return;
      case 'fatal':
        this.#o.log.error({ event: 'vpn.fatal', message: e.message.slice(0, 300) }, 'OpenVPN reported a fatal error');
        if (/TUN|tun\/tap|TUNSETIFF/i.test(e.message)) this.#setTunnelError(ErrorCodes.VPN_TUN_UNAVAILABLE);
        return;
      default:
        return;
    }
  }

  #onLog(message: string): void {
    if (message.startsWith('VERIFY OK: depth=0')) this.#serverVerified = true;
    else if (message.includes('AUTH_FAILED')) this.#setTunnelError(ErrorCodes.VPN_AUTH_FAILED);
    else if (/^VERIFY (?:[A-Z0-9]+ )?ERROR/.test(message)) this.#setTunnelError(ErrorCodes.VPN_SERVER_UNTRUSTED);
    else if (/Cannot (?:open|allocate) TUN|TUNSETIFF/i.test(message)) this.#setTunnelError(ErrorCodes.VPN_TUN_UNAVAILABLE);
  }

  #onState(state: TunnelState, detail: string): void {
    const now = this.#o.clock.now();
    if (state === 'CONNECTED') {
      this.#tunnelError = null;
      this.#connectedAt = now;
      this.#o.onEvent?.({ type: 'connected', at: now });
      if (this.#rotationAt !== null && this.#sawDownSinceRotation) {
        const gapMs = Math.max(0, now - this.#rotationAt);
        this.#rotationAt = null;
        this.#o.log.info({ event: 'vpn.reconnected', gapMs }, `VPN connected again with the renewed certificate after ${gapMs} ms`);
        this.#o.onEvent?.({ type: 'reconnected', gapMs });
      }
    } else {
      if (this.#rotationAt !== null) this.#sawDownSinceRotation = true;
      if (state === 'RECONNECTING' || state === 'EXITING') {
        if (detail === 'auth-failure') this.#setTunnelError(ErrorCodes.VPN_AUTH_FAILED);
        else if (detail === 'tls-error' && this.#serverVerified) this.#setTunnelError(ErrorCodes.VPN_AUTH_FAILED);
      }
      if (state === 'WAIT' || state === 'CONNECTING' || state === 'RESOLVE' || state === 'TCP_CONNECT' || state === 'RECONNECTING') this.#serverVerified = false;
    }
    this.#setTunnel(state);
  }

  #setTunnelError(code: ErrorCode): void {
    if (this.#tunnelError === code) return;
    this.#tunnelError = code;
    const what = code === ErrorCodes.VPN_AUTH_FAILED ? 'the VPN server refused this node\'s certificate'
      : code === ErrorCodes.VPN_SERVER_UNTRUSTED ? 'the VPN server\'s certificate is not trusted'
        : 'OpenVPN cannot use the TUN device';
    this.#o.log.error({ event: 'vpn.failed', code }, what);
    this.#wake();
    this.#o.onChange();
  }

  #setTunnel(state: TunnelState | null): void {
    if (this.#tunnel === state) return;
    const from = this.#tunnel;
    this.#tunnel = state;
    this.#o.log.info({ event: 'vpn.state', from, to: state }, `VPN ${state === null ? 'down' : state.toLowerCase()}`);
    this.#o.onEvent?.({ type: 'tunnel', state });
    this.#wake();
    this.#o.onChange();
  }

  #supervisorChanged(): void {
    const s = this.#supervisor?.status();
    if (s !== undefined && s.state !== 'running' && s.state !== 'starting') this.#setTunnel(null);
    this.#wake();
    this.#o.onChange();
  }

  #wake(): void {
    for (const w of [...this.#waiters]) w();
  }

  /** Until CONNECTED, a VPN failure, the process leaving 'running', the signal, or `ms`. */
  #waitConnected(ms: number, signal: AbortSignal | undefined): Promise<void> {
    if (ms <= 0) return Promise.resolve();
    return new Promise((resolve) => {
      let timer: Timer | null = null;
      const done = (why: string) => {
        if (!this.#waiters.delete(check)) return;
        timer?.cancel();
        signal?.removeEventListener('abort', onAbort);
        if (why === 'timeout') this.#o.log.warn({ event: 'vpn.not_connected', waitedMs: ms }, `VPN not connected after ${ms} ms; going on (OpenVPN keeps trying)`);
        resolve();
      };
      const check = () => {
        const v = this.view();
        if (v.tunnel === 'CONNECTED') done('connected');
        else if (v.errorCode !== null || (v.state !== 'running' && v.state !== 'starting')) done('failed');
      };
      const onAbort = () => done('aborted');
      this.#waiters.add(check);
      timer = this.#o.clock.setTimeout(() => done('timeout'), ms);
      signal?.addEventListener('abort', onAbort, { once: true });
      check();
    });
  }
}

function plainEnv(env: NodeJS.ProcessEnv): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) if (v !== undefined) out[k] = v;
  return out;
}
