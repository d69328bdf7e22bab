// The agent's Prometheus metrics on a registry of its own (never prom-client's global one), written
// only through the typed setters below. Timestamps come in as Unix milliseconds (the agent's Clock)
// and are exported in seconds. docs/metrics.md lists every name here.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { AGENT_VERSION } from '../version.ts';

export const RENEWAL_RESULTS = ['success', 'failure', 'refused'] as const;
export type RenewalResult = (typeof RENEWAL_RESULTS)[number];

/** States pre-set to 0 for every child seen, so that a state's series exists before it is entered. */
export const DEFAULT_CHILD_STATES = ['stopped', 'starting', 'running', 'backoff', 'holdoff', 'crash-loop', 'stopping', 'failed'] as const;

export interface GpuSample {
  /** The tool's index (nvidia-smi `index`), a label. */
  readonly index: number | string;
  readonly uuid: string;
  readonly model: string;
  /** 0..1; null or absent when the tool reports N/A. */
  readonly utilizationRatio?: number | null | undefined;
  readonly memoryUsedBytes?: number | null | undefined;
  readonly memoryTotalBytes?: number | null | undefined;
  readonly temperatureCelsius?: number | null | undefined;
}

export interface AgentMetricsOptions {
  /** process_* and nodejs_* metrics (prefixed sepal_agent_); default true. */
  readonly defaultMetrics?: boolean;
  /** Child names whose series exist (at 0) from the start, e.g. ['openvpn', 'supernode']. */
  readonly children?: readonly string[];
  readonly childStates?: readonly string[];
  /** Default: AGENT_VERSION. */
  readonly version?: string;
}

const PREFIX = 'sepal_agent_';
// A reason is a code from the verifier; anything else is folded so a bad caller cannot blow up the
// number of series.
const REASON_RE = /^[A-Za-z0-9_.:-]{1,64}$/;

/** A counter fed from an absolute count that restarts at 0 when its source restarts (OpenVPN's
 *  byte counts): it adds the growth, and after a drop it adds the new count (all of it is new). */
class AbsoluteFeed {
  readonly #counter: Counter;
  #last: number | null = null;

  constructor(counter: Counter) {
    this.#counter = counter;
  }

  set(total: number): void {
    if (!Number.isFinite(total) || total < 0) throw new TypeError(`byte count must be a finite number >= 0, got ${total}`);
    const delta = this.#last === null || total < this.#last ? total : total - this.#last;
    this.#last = total;
    if (delta > 0) this.#counter.inc(delta);
  }
}

export class AgentMetrics {
  readonly registry = new Registry();
  readonly #childStates: Set<string>;
  readonly #childStateSeen = new Map<string, Set<string>>();

  readonly #buildInfo: Gauge<'version' | 'node'>;
  readonly #certExpiry: Gauge;
  readonly #renewals: Counter<'result'>;
  readonly #manifestVersion: Gauge;
  readonly #manifestRejections: Counter<'reason'>;
  readonly #lastHubContact: Gauge;
  readonly #hubConnected: Gauge;
  readonly #revoked: Gauge;
  readonly #ready: Gauge;
  readonly #childUp: Gauge<'child'>;
  readonly #childRestarts: Counter<'child'>;
  readonly #childState: Gauge<'child' | 'state'>;
  readonly #childLastExitCode: Gauge<'child'>;
  readonly #childLastExitTime: Gauge<'child'>;
  readonly #vpnUp: Gauge;
  readonly #vpnReceived: AbsoluteFeed;
  readonly #vpnSent: AbsoluteFeed;
  readonly #vpnLastConnected: Gauge;
  readonly #vpnReconnectGap: Gauge;
  readonly #gpuUtilization: Gauge<GpuLabel>;
  readonly #gpuMemoryUsed: Gauge<GpuLabel>;
  readonly #gpuMemoryTotal: Gauge<GpuLabel>;
  readonly #gpuTemperature: Gauge<GpuLabel>;

  constructor(opts: AgentMetricsOptions = {}) {
    const registers = [this.registry];
    const gauge = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Gauge<L> =>
      new Gauge<L>({ name: PREFIX + name, help, labelNames, registers });
    const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []): Counter<L> =>
      new Counter<L>({ name: PREFIX + name, help, labelNames, registers });
    const gpuLabels: readonly GpuLabel[] = ['gpu', 'uuid', 'model'];

    this.#buildInfo = gauge('build_info', 'Always 1; the agent version and the Node.js version it runs on', ['version', 'node']);
    this.#certExpiry = gauge('cert_expiry_timestamp_seconds', 'notAfter of the node certificate in use, Unix seconds (0: none)');
    this.#renewals = counter('renewals_total', 'Certificate renewal attempts by result (success, failure, refused by the hub)', ['result']);
    this.#manifestVersion = gauge('manifest_version', 'Version of the last manifest applied (0: none)');
    this.#manifestRejections = counter('manifest_rejections_total', 'Manifests refused by the agent, by reason code', ['reason']);
    this.#lastHubContact = gauge('last_hub_contact_timestamp_seconds', 'Last successful exchange with the hub, Unix seconds (0: never)');
    this.#hubConnected = gauge('hub_connected', '1 while the manifest stream to the hub is open');
    this.#revoked = gauge('revoked', '1 once the hub has said this node is revoked');
    this.#ready = gauge('ready', '1 while /readyz says ready (enrolled, certificate valid, manifest applied, children up)');
    this.#childUp = gauge('child_up', '1 while the child process runs', ['child']);
    this.#childRestarts = counter('child_restarts_total', 'Restarts of the child process after it exited', ['child']);
    this.#childState = gauge('child_state', '1 for the state the child process is in, 0 for the others', ['child', 'state']);
    this.#childLastExitCode = gauge('child_last_exit_code', 'Exit code of the child\'s last exit (-1: killed by a signal)', ['child']);
    this.#childLastExitTime = gauge('child_last_exit_timestamp_seconds', 'When the child last exited, Unix seconds', ['child']);
    this.#vpnUp = gauge('vpn_up', '1 while the VPN tunnel is connected');
    this.#vpnReceived = new AbsoluteFeed(counter('vpn_bytes_received_total', 'Bytes received through the VPN tunnel'));
    this.#vpnSent = new AbsoluteFeed(counter('vpn_bytes_sent_total', 'Bytes sent through the VPN tunnel'));
    this.#vpnLastConnected = gauge('vpn_last_connected_timestamp_seconds', 'When the VPN tunnel last came up, Unix seconds (0: never)');
    this.#vpnReconnectGap = gauge('vpn_reconnect_gap_seconds', 'Time from the last certificate rotation to the VPN being connected again with it, seconds (0: none yet)');
    this.#gpuUtilization = gauge('gpu_utilization_ratio', 'GPU utilisation, 0 to 1', gpuLabels);
    this.#gpuMemoryUsed = gauge('gpu_memory_used_bytes', 'GPU memory in use, bytes', gpuLabels);
    this.#gpuMemoryTotal = gauge('gpu_memory_total_bytes', 'GPU memory in total, bytes', gpuLabels);
    this.#gpuTemperature = gauge('gpu_temperature_celsius', 'GPU temperature, degrees Celsius', gpuLabels);

    this.#buildInfo.set({ version: opts.version ?? AGENT_VERSION, node: process.versions.node }, 1);
    for (const result of RENEWAL_RESULTS) this.#renewals.inc({ result }, 0);
    this.#childStates = new Set(opts.childStates ?? DEFAULT_CHILD_STATES);
    for (const child of opts.children ?? []) this.#initChild(child);

    if (opts.defaultMetrics ?? true) {
      // The event-loop monitor wakes the process every `precision` ms: at prom-client's default of
      // 10 ms that alone costs an idle agent ~0.3 % CPU (the budget is 0.5 %); 100 ms costs ~0.05 %.
      collectDefaultMetrics({ register: this.registry, prefix: PREFIX, eventLoopMonitoringPrecision: 100 });
      // prom-client names some gauges `..._total` (nodejs_active_handles_total and friends), a suffix
      // only counters may have: promtool check metrics refuses the scrape. The same counts remain,
      // by type, in the metrics without the suffix.
      for (const m of this.registry.getMetricsAsArray()) {
        if (m instanceof Gauge && m.name.endsWith('_total')) this.registry.removeSingleMetric(m.name);
      }
    }
  }

  /** The node certificate now in use: its notAfter in Unix ms; null when there is none. */
  setCertNotAfter(unixMs: number | null): void {
    this.#certExpiry.set(unixMs === null ? 0 : seconds(unixMs));
  }

  renewal(result: RenewalResult): void {
    this.#renewals.inc({ result });
  }

  setManifestVersion(version: number | bigint): void {
    this.#manifestVersion.set(Number(version));
  }

  manifestRejected(reason: string): void {
    this.#manifestRejections.inc({ reason: REASON_RE.test(reason) ? reason : 'other' });
  }

  hubContact(unixMs: number): void {
    this.#lastHubContact.set(seconds(unixMs));
  }

  setHubConnected(connected: boolean): void {
    this.#hubConnected.set(connected ? 1 : 0);
  }

  setRevoked(revoked: boolean): void {
    this.#revoked.set(revoked ? 1 : 0);
  }

  setReady(ready: boolean): void {
    this.#ready.set(ready ? 1 : 0);
  }

  setChildUp(child: string, up: boolean): void {
    this.#initChild(child);
    this.#childUp.set({ child }, up ? 1 : 0);
  }

  /** code -1 when a signal ended it; `at` in Unix ms. */
  setChildLastExit(child: string, code: number, at: number): void {
    this.#initChild(child);
    this.#childLastExitCode.set({ child }, code);
    this.#childLastExitTime.set({ child }, Math.floor(at / 1000));
  }

  childRestarted(child: string): void {
    this.#initChild(child);
    this.#childRestarts.inc({ child });
  }

  /** Sets `state` to 1 and every other state this child has had (or may have) to 0. */
  setChildState(child: string, state: string): void {
    const seen = this.#initChild(child);
    seen.add(state);
    for (const s of seen) this.#childState.set({ child, state: s }, s === state ? 1 : 0);
  }

  setVpnUp(up: boolean): void {
    this.#vpnUp.set(up ? 1 : 0);
  }

  /** OpenVPN's absolute byte counts (they start again from 0 when it restarts; handled here). */
  setVpnBytes(totals: { readonly received: number; readonly sent: number }): void {
    this.#vpnReceived.set(totals.received);
    this.#vpnSent.set(totals.sent);
  }

  setVpnLastConnected(unixMs: number): void {
    this.#vpnLastConnected.set(seconds(unixMs));
  }

  /** The tunnel's outage around the last certificate rotation. */
  setVpnReconnectGap(ms: number): void {
    if (!Number.isFinite(ms) || ms < 0) throw new TypeError(`gap must be a finite number >= 0, got ${ms}`);
    this.#vpnReconnectGap.set(ms / 1000);
  }

  /** The GPUs present now: series of GPUs no longer listed disappear; N/A values are left out. */
  setGpus(gpus: readonly GpuSample[]): void {
    const all = [this.#gpuUtilization, this.#gpuMemoryUsed, this.#gpuMemoryTotal, this.#gpuTemperature];
    for (const g of all) g.reset();
    for (const gpu of gpus) {
      const labels = { gpu: String(gpu.index), uuid: gpu.uuid, model: gpu.model };
      const put = (g: Gauge<GpuLabel>, v: number | null | undefined): void => {
        if (v !== null && v !== undefined && Number.isFinite(v)) g.set(labels, v);
      };
      put(this.#gpuUtilization, gpu.utilizationRatio);
      put(this.#gpuMemoryUsed, gpu.memoryUsedBytes);
      put(this.#gpuMemoryTotal, gpu.memoryTotalBytes);
      put(this.#gpuTemperature, gpu.temperatureCelsius);
    }
  }

  /** The text exposition and its content type, for /metrics. */
  async scrape(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }

  #initChild(child: string): Set<string> {
    let seen = this.#childStateSeen.get(child);
    if (seen === undefined) {
      seen = new Set(this.#childStates);
      this.#childStateSeen.set(child, seen);
      this.#childUp.set({ child }, 0);
      this.#childRestarts.inc({ child }, 0);
      for (const s of seen) this.#childState.set({ child, state: s }, 0);
    }
    return seen;
  }
}

type GpuLabel = 'gpu' | 'uuid' | 'model';

function seconds(unixMs: number): number {
  return unixMs / 1000;
}
