// The reconcile executors: what each planned step does on this host. Datasets are checked for real
// (path present, sha256 when the manifest gives one: a mismatch blocks the SuperNode and is a
// security event). The SuperNode runs under a ChildSupervisor with the argv the Flower adapter
// builds from the manifest; its inputs (SuperLink CA, node config) are files under
// <stateDir>/supernode, rewritten atomically before each (re)start. The VPN (agent/vpn/runtime.ts)
// runs OpenVPN under a supervisor of its own; its state comes from OpenVPN's management interface.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { NodeRuntimeState, SupernodeConfig } from '../reconcile/steps.ts';
import type { Executors } from '../reconcile/runner.ts';
import { AgentError, ErrorCodes, isAgentError } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Clock } from '../runtime/clock.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import { ChildSupervisor, type ChildSpec, type ExitInfo, type SupervisorStatus } from '../supervise/supervisor.ts';
import { detectFlower, flowerEnv, nodeConfigToml, supernodeArgv, supernodeRestartHoldoff, type FlowerInstall } from '../flower/supernode.ts';
import { VpnRuntime, type VpnEvent, type VpnIdentity } from '../vpn/runtime.ts';

export type ChildName = 'supernode' | 'vpn';

/** A supervisor state, or: 'not-configured' (no manifest asks for the child), 'failed' (could not
 *  be started at all: Flower or OpenVPN missing, Flower unsupported, no TUN device; retried with
 *  the manifest). */
export type ChildStateName = SupervisorStatus['state'] | 'not-configured' | 'failed';

export interface ChildView {
  readonly state: ChildStateName;
  readonly configHash: string | null;
  readonly pid: number | null;
  readonly restarts: number;
  readonly lastExit: ExitInfo | null;
  /** Coded reason when the child is not up: CHILD_SPAWN_FAILED, CHILD_CRASH_LOOP, FLOWER_*, VPN_*. */
  readonly errorCode: string | null;
  readonly crashLoop: boolean;
  /** The VPN's tunnel state from OpenVPN's management interface, lower case ('connected',
   *  'reconnecting'...); null when unknown and always for the SuperNode. */
  readonly tunnel: string | null;
}

const idle = (state: ChildStateName = 'not-configured'): ChildView =>
  ({ state, configHash: null, pid: null, restarts: 0, lastExit: null, errorCode: null, crashLoop: false, tunnel: null });

export interface NodeRuntimeOptions {
  readonly stateDir: string;
  /** The node's Flower key (OpenSSH EC private key, 0600) from enrollment. */
  readonly flowerKeyPath: string;
  readonly supernode: {
    readonly command: string;
    readonly stopGraceMs: number;
    /** null: the Flower version's own (the SuperLink's refusal window after an unclean exit). */
    readonly uncleanExitHoldoffMs: number | null;
  };
  /** Sockets (OpenVPN's management socket); distinct per agent on one host. */
  readonly runtimeDir: string;
  readonly openvpn: {
    readonly command: string;
    readonly stopGraceMs: number;
    readonly connectWaitMs: number;
  };
  /** The node's current TLS identity (the VPN presents it too); null before enrollment. */
  readonly identity: () => VpnIdentity | null;
  /** GetVpnSecret over the hub connection. */
  readonly fetchVpnSecret: (ref: string) => Promise<Uint8Array>;
  /** Tunnel state, bytes, connects and reconnect gaps, for metrics. */
  readonly onVpnEvent?: (e: VpnEvent) => void;
  /** The TUN device checked before OpenVPN starts (tests); default /dev/net/tun on Linux. */
  readonly tunDevice?: string | null;
  readonly clock: Clock;
  readonly log: Logger;
  readonly env?: NodeJS.ProcessEnv;
  /** Called on every change of a child (state, restarts, exit). */
  readonly onChange: () => void;
  readonly onSecurityEvent: (code: string, detail: Record<string, unknown>) => void;
  /** Flower detection (tests replace it); default detectFlower. */
  readonly detect?: (command: string, env: NodeJS.ProcessEnv) => Promise<FlowerInstall>;
}

async function sha256File(file: string, signal: AbortSignal): Promise<string> {
  const hash = crypto.createHash('sha256');
  const stream = fs.createReadStream(file, { signal });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export class NodeRuntime {
  readonly #opts: NodeRuntimeOptions;
  readonly children: Record<ChildName, ChildView> = { supernode: idle(), vpn: idle() };
  datasets: Record<string, { path: string; verifiedSha256: string | null }> = {};
  #supernode: ChildSupervisor | null = null;
  #supernodeHash: string | null = null;
  #install: FlowerInstall | null = null;
  readonly vpn: VpnRuntime;

  constructor(opts: NodeRuntimeOptions) {
    this.#opts = opts;
    this.vpn = new VpnRuntime({
      stateDir: opts.stateDir,
      runtimeDir: opts.runtimeDir,
      command: opts.openvpn.command,
      stopGraceMs: opts.openvpn.stopGraceMs,
      connectWaitMs: opts.openvpn.connectWaitMs,
      clock: opts.clock,
      log: opts.log,
      ...(opts.env === undefined ? {} : { env: opts.env }),
      ...(opts.tunDevice === undefined ? {} : { tunDevice: opts.tunDevice }),
      ...(opts.onVpnEvent === undefined ? {} : { onEvent: opts.onVpnEvent }),
      identity: opts.identity,
      fetchSecret: opts.fetchVpnSecret,
      onChange: () => this.#syncVpn(),
    });
  }

  /** What the planner compares with the manifest. A supervised child counts as running while its
   *  supervisor keeps it up (also during a backoff or crash loop: it is retrying, and a new plan
   *  would change nothing). */
  observe(): NodeRuntimeState {
    const sn = this.#supernode;
    const snRunning = sn !== null && sn.status().state !== 'stopped';
    const vpnRunning = this.vpn.running;
    return {
      supernode: { running: snRunning, configHash: snRunning ? this.#supernodeHash : null },
      vpn: { running: vpnRunning, configHash: vpnRunning ? this.vpn.view().configHash : null },
      datasets: { ...this.datasets },
    };
  }

  /** The Flower install found at the last start (version for status and doctor). */
  get flower(): FlowerInstall | null {
    return this.#install;
  }

  /** Stops the SuperNode, then the VPN (SIGTERM, then SIGKILL after the grace); resolves when
   *  both are gone. */
  async close(): Promise<void> {
    await this.#supernode?.stop();
    await this.vpn.close();
  }

  /** A renewed node certificate: the VPN reconnects with it (the SuperNode does not use it). */
  async rotated(): Promise<void> {
    await this.vpn.rotated();
  }

  executors(): Executors {
    return {
      'verify-dataset': async (step, signal) => {
        const st = fs.statSync(step.path, { throwIfNoEntry: false });
        if (st === undefined) {
          delete this.datasets[step.name];
          throw new AgentError(ErrorCodes.DATASET_MISSING, `dataset ${step.name}: ${step.path} does not exist`);
        }
        if (step.sha256 !== undefined) {
          if (!st.isFile()) throw new AgentError(ErrorCodes.DATASET_MISMATCH, `dataset ${step.name}: a sha256 is given but ${step.path} is not a file`);
          const got = await sha256File(step.path, signal);
          if (got !== step.sha256) {
            delete this.datasets[step.name];
            this.#opts.onSecurityEvent(ErrorCodes.DATASET_MISMATCH, { dataset: step.name, path: step.path, expected: step.sha256, actual: got });
            throw new AgentError(ErrorCodes.DATASET_MISMATCH, `dataset ${step.name}: sha256 of ${step.path} is ${got}, the manifest says ${step.sha256}`);
          }
        }
        this.datasets[step.name] = { path: step.path, verifiedSha256: step.sha256 ?? null };
      },
      'write-vpn-config': (step, signal) => this.vpn.configure(step.configHash, step.vpn, signal),
      'start-vpn': (step, signal) => this.vpn.start(step.configHash, signal),
      'restart-vpn': (step, signal) => this.vpn.start(step.configHash, signal),
      'stop-vpn': () => this.vpn.stop(),
      'start-supernode': (step) => this.#runSupernode(step.configHash, step.config),
      'restart-supernode': (step) => this.#runSupernode(step.configHash, step.config),
      'stop-supernode': async () => {
        await this.#supernode?.stop();
        this.#supernodeHash = null;
        this.#syncSupernode();
      },
    };
  }

  async #runSupernode(configHash: string, config: SupernodeConfig): Promise<void> {
    const o = this.#opts;
    const env = o.env ?? process.env;
    let install: FlowerInstall;
    try {
      install = await (o.detect ?? detectFlower)(o.supernode.command, env);
    } catch (e) {
      // Nothing can run: whatever ran before keeps running only if it is the same Flower; an
      // unusable install stops the old child too (it would be restarted into the same failure).
      await this.#supernode?.stop();
      this.#supernodeHash = null;
      this.children.supernode = { ...idle('failed'), configHash, errorCode: isAgentError(e) ? e.code : ErrorCodes.INTERNAL };
      o.onChange();
      throw e;
    }
    this.#install = install;
    const spec = this.#writeInputs(install, config, env);
    const holdoffMs = o.supernode.uncleanExitHoldoffMs ?? install.dialect.uncleanExitHoldoffSeconds * 1000;
    this.#supernodeHash = configHash;
    if (this.#supernode === null) {
      const sup = new ChildSupervisor({
        name: 'supernode', spec, clock: o.clock, log: o.log,
        stopGraceMs: o.supernode.stopGraceMs,
        restartHoldoffMs: supernodeRestartHoldoff(holdoffMs),
      });
      sup.onChange(() => this.#syncSupernode());
      this.#supernode = sup;
      sup.start();
    } else {
      // A new configuration: a clean stop (Flower signs the node off) and a start with it.
      await this.#supernode.restart(spec);
    }
    o.log.info({ event: 'supernode.configured', flower: install.version, configHash }, 'SuperNode (re)started with the manifest configuration');
    this.#syncSupernode();
  }

  /** Writes the SuperNode's input files (0600 in a 0700 dir) and returns its argv and env. */
  #writeInputs(install: FlowerInstall, config: SupernodeConfig, env: NodeJS.ProcessEnv): ChildSpec {
    const dir = path.join(this.#opts.stateDir, 'supernode');
    fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
    let rootCertificates: string | null = null;
    if (config.superlink.caCertPem !== undefined) {
      rootCertificates = path.join(dir, 'superlink-ca.pem');
      writeFileAtomicSync(rootCertificates, config.superlink.caCertPem.endsWith('\n') ? config.superlink.caCertPem : config.superlink.caCertPem + '\n', 0o600);
    }
    const nodeConfig = path.join(dir, 'node-config.toml');
    writeFileAtomicSync(nodeConfig, nodeConfigToml(config), 0o600);
    const flwrHome = path.join(this.#opts.stateDir, 'flwr');
    fs.mkdirSync(flwrHome, { recursive: true, mode: 0o700 });
    const argv = supernodeArgv(install, config, { rootCertificates, authPrivateKey: this.#opts.flowerKeyPath, nodeConfig });
    const childEnv: Record<string, string> = {};
    for (const [k, v] of Object.entries(flowerEnv(env, flwrHome, install.binary))) if (v !== undefined) childEnv[k] = v;
    return { argv, env: childEnv, cwd: dir };
  }

  #syncSupernode(): void {
    const sup = this.#supernode;
    if (sup === null) return;
    const s = sup.status();
    const prev = this.children.supernode;
    this.children.supernode = {
      state: s.state,
      configHash: s.state === 'stopped' ? null : this.#supernodeHash,
      pid: s.pid,
      restarts: s.restarts,
      lastExit: s.lastExit,
      errorCode: s.error?.code ?? null,
      crashLoop: s.crashLoop,
      tunnel: null,
    };
    const c = this.children.supernode;
    if (prev.state !== c.state || prev.restarts !== c.restarts || prev.lastExit !== c.lastExit || prev.errorCode !== c.errorCode) this.#opts.onChange();
  }

  #syncVpn(): void {
    const v = this.vpn.view();
    const prev = this.children.vpn;
    const next: ChildView = {
      state: v.state,
      configHash: v.configHash,
      pid: v.pid,
      restarts: v.restarts,
      lastExit: v.lastExit,
      errorCode: v.errorCode,
      crashLoop: v.crashLoop,
      tunnel: v.tunnel === null ? null : v.tunnel.toLowerCase(),
    };
    this.children.vpn = next;
    if (prev.state !== next.state || prev.restarts !== next.restarts || prev.lastExit !== next.lastExit || prev.errorCode !== next.errorCode
      || prev.tunnel !== next.tunnel || prev.pid !== next.pid || prev.configHash !== next.configHash) this.#opts.onChange();
  }
}
