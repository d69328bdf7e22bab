// The agent's metrics registry and heartbeats, without sockets: every documented name appears in a
// scrape with its type, the setters do what docs/metrics.md says (one-hot child state, byte counters
// that survive OpenVPN restarts, GPUs that come and go), and a loop that stops beating is seen.
import { describe, expect, it } from 'vitest';
import { AgentMetrics } from '../../agent/metrics/registry.ts';
import { formatHostPort, isLoopbackIp, parseHostPort } from '../../agent/metrics/address.ts';
import { Heartbeats } from '../../agent/metrics/heartbeats.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';
import { AGENT_VERSION } from '../../agent/version.ts';

/** name -> type, from the # TYPE lines of a text exposition. */
function types(text: string): Map<string, string> {
  return new Map([...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => [m[1] as string, m[2] as string]));
}

/** The value of one sample line, by its exact name{labels} prefix. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

const EXPECTED: Record<string, string> = {
  sepal_agent_build_info: 'gauge',
  sepal_agent_cert_expiry_timestamp_seconds: 'gauge',
  sepal_agent_renewals_total: 'counter',
  sepal_agent_manifest_version: 'gauge',
  sepal_agent_manifest_rejections_total: 'counter',
  sepal_agent_last_hub_contact_timestamp_seconds: 'gauge',
  sepal_agent_hub_connected: 'gauge',
  sepal_agent_revoked: 'gauge',
  sepal_agent_ready: 'gauge',
  sepal_agent_child_up: 'gauge',
  sepal_agent_child_restarts_total: 'counter',
  sepal_agent_child_state: 'gauge',
  sepal_agent_child_last_exit_code: 'gauge',
  sepal_agent_child_last_exit_timestamp_seconds: 'gauge',
  sepal_agent_vpn_up: 'gauge',
  sepal_agent_vpn_bytes_received_total: 'counter',
  sepal_agent_vpn_bytes_sent_total: 'counter',
  sepal_agent_vpn_last_connected_timestamp_seconds: 'gauge',
  sepal_agent_vpn_reconnect_gap_seconds: 'gauge',
  sepal_agent_gpu_utilization_ratio: 'gauge',
  sepal_agent_gpu_memory_used_bytes: 'gauge',
  sepal_agent_gpu_memory_total_bytes: 'gauge',
  sepal_agent_gpu_temperature_celsius: 'gauge',
};

const A100 = { index: 0, uuid: 'GPU-8f6c', model: 'NVIDIA A100-SXM4-40GB', utilizationRatio: 0.42, memoryUsedBytes: 1_073_741_824, memoryTotalBytes: 42_949_672_960, temperatureCelsius: 51 };
const A100_LABELS = '{gpu="0",uuid="GPU-8f6c",model="NVIDIA A100-SXM4-40GB"}';

function populated(): AgentMetrics {
  const m = new AgentMetrics();
  m.setCertNotAfter(1_700_086_400_000);
  m.renewal('success');
  m.renewal('failure');
  m.renewal('failure');
  m.renewal('refused');
  m.setManifestVersion(7n);
  m.manifestRejected('MANIFEST_EXPIRED');
  m.hubContact(1_700_000_000_500);
  m.setHubConnected(true);
  m.setRevoked(false);
  m.setReady(true);
  m.setChildUp('supernode', true);
  m.childRestarted('supernode');
  m.setChildLastExit('supernode', 3, 1_700_000_100_000);
  m.setChildState('supernode', 'running');
  m.setVpnUp(true);
  m.setVpnBytes({ received: 1000, sent: 500 });
  m.setVpnLastConnected(1_700_000_000_000);
  m.setVpnReconnectGap(2500);
  m.setGpus([A100]);
  return m;
}

describe('AgentMetrics', () => {
  it('a scrape carries every metric, with the right type and values', async () => {
    const { body, contentType } = await populated().scrape();
    expect(contentType).toMatch(/^text\/plain; version=0\.0\.4/);
    const t = types(body);
    for (const [name, type] of Object.entries(EXPECTED)) expect(t.get(name), name).toBe(type);
    for (const name of Object.keys(EXPECTED)) expect(body).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? `, 'm'));

    expect(sample(body, `sepal_agent_build_info{version="${AGENT_VERSION}",node="${process.versions.node}"}`)).toBe(1);
    expect(sample(body, 'sepal_agent_cert_expiry_timestamp_seconds')).toBe(1_700_086_400);
    expect(sample(body, 'sepal_agent_renewals_total{result="success"}')).toBe(1);
    expect(sample(body, 'sepal_agent_renewals_total{result="failure"}')).toBe(2);
    expect(sample(body, 'sepal_agent_renewals_total{result="refused"}')).toBe(1);
    expect(sample(body, 'sepal_agent_manifest_version')).toBe(7);
    expect(sample(body, 'sepal_agent_manifest_rejections_total{reason="MANIFEST_EXPIRED"}')).toBe(1);
    expect(sample(body, 'sepal_agent_last_hub_contact_timestamp_seconds')).toBe(1_700_000_000.5);
    expect(sample(body, 'sepal_agent_hub_connected')).toBe(1);
    expect(sample(body, 'sepal_agent_revoked')).toBe(0);
    expect(sample(body, 'sepal_agent_ready')).toBe(1);
    expect(sample(body, 'sepal_agent_child_up{child="supernode"}')).toBe(1);
    expect(sample(body, 'sepal_agent_child_restarts_total{child="supernode"}')).toBe(1);
    expect(sample(body, 'sepal_agent_child_state{child="supernode",state="running"}')).toBe(1);
    expect(sample(body, 'sepal_agent_child_last_exit_code{child="supernode"}')).toBe(3);
    expect(sample(body, 'sepal_agent_child_last_exit_timestamp_seconds{child="supernode"}')).toBe(1_700_000_100);
    expect(sample(body, 'sepal_agent_vpn_up')).toBe(1);
    expect(sample(body, 'sepal_agent_vpn_bytes_received_total')).toBe(1000);
    expect(sample(body, 'sepal_agent_vpn_bytes_sent_total')).toBe(500);
    expect(sample(body, 'sepal_agent_vpn_last_connected_timestamp_seconds')).toBe(1_700_000_000);
    expect(sample(body, 'sepal_agent_vpn_reconnect_gap_seconds')).toBe(2.5);
    expect(sample(body, `sepal_agent_gpu_utilization_ratio${A100_LABELS}`)).toBe(0.42);
    expect(sample(body, `sepal_agent_gpu_memory_used_bytes${A100_LABELS}`)).toBe(1_073_741_824);
    expect(sample(body, `sepal_agent_gpu_memory_total_bytes${A100_LABELS}`)).toBe(42_949_672_960);
    expect(sample(body, `sepal_agent_gpu_temperature_celsius${A100_LABELS}`)).toBe(51);
  });

  it('renewal results exist at 0 before the first renewal', async () => {
    const { body } = await new AgentMetrics({ defaultMetrics: false }).scrape();
    for (const r of ['success', 'failure', 'refused']) expect(sample(body, `sepal_agent_renewals_total{result="${r}"}`)).toBe(0);
  });

  it('process metrics are prefixed, and no gauge ends in _total', async () => {
    const { body } = await new AgentMetrics().scrape();
    const t = types(body);
    expect(t.get('sepal_agent_process_cpu_seconds_total')).toBe('counter');
    expect(t.get('sepal_agent_process_resident_memory_bytes')).toBe('gauge');
    expect(t.get('sepal_agent_nodejs_active_handles')).toBe('gauge');
    expect(t.has('sepal_agent_nodejs_active_handles_total')).toBe(false);
    for (const [name, type] of t) {
      expect(name.startsWith('sepal_agent_'), name).toBe(true);
      if (name.endsWith('_total')) expect(type, name).toBe('counter');
    }
  });

  it('defaultMetrics: false leaves only the agent metrics', async () => {
    const { body } = await new AgentMetrics({ defaultMetrics: false }).scrape();
    expect([...types(body).keys()].sort()).toEqual(Object.keys(EXPECTED).sort());
  });

  it('child state is one-hot over the states seen, and named children start at 0', async () => {
    const m = new AgentMetrics({ defaultMetrics: false, children: ['openvpn'], childStates: ['stopped', 'running'] });
    let { body } = await m.scrape();
    expect(sample(body, 'sepal_agent_child_up{child="openvpn"}')).toBe(0);
    expect(sample(body, 'sepal_agent_child_restarts_total{child="openvpn"}')).toBe(0);
    expect(sample(body, 'sepal_agent_child_state{child="openvpn",state="stopped"}')).toBe(0);
    m.setChildState('openvpn', 'running');
    m.setChildState('openvpn', 'reconnecting');
    ({ body } = await m.scrape());
    const states = [...body.matchAll(/^sepal_agent_child_state\{child="openvpn",state="([^"]+)"\} (\d+)$/gm)].map((x) => [x[1], Number(x[2])]);
    expect(Object.fromEntries(states)).toEqual({ stopped: 0, running: 0, reconnecting: 1 });
  });

  it('VPN byte counters follow absolute counts across an OpenVPN restart', async () => {
    const m = new AgentMetrics({ defaultMetrics: false });
    m.setVpnBytes({ received: 1000, sent: 100 });
    m.setVpnBytes({ received: 1500, sent: 100 });
    m.setVpnBytes({ received: 200, sent: 50 }); // restarted: counts begin again at 0
    m.setVpnBytes({ received: 300, sent: 60 });
    const { body } = await m.scrape();
    expect(sample(body, 'sepal_agent_vpn_bytes_received_total')).toBe(1500 + 300);
    expect(sample(body, 'sepal_agent_vpn_bytes_sent_total')).toBe(100 + 60);
    expect(() => m.setVpnBytes({ received: -1, sent: 0 })).toThrow(TypeError);
    expect(() => m.setVpnBytes({ received: Number.NaN, sent: 0 })).toThrow(TypeError);
  });

  it('GPUs that disappear lose their series; N/A values are left out', async () => {
    const m = new AgentMetrics({ defaultMetrics: false });
    m.setGpus([A100, { ...A100, index: 1, uuid: 'GPU-2', temperatureCelsius: null, utilizationRatio: undefined }]);
    let { body } = await m.scrape();
    expect(sample(body, 'sepal_agent_gpu_memory_used_bytes{gpu="1",uuid="GPU-2",model="NVIDIA A100-SXM4-40GB"}')).toBe(1_073_741_824);
    expect(body).not.toContain('sepal_agent_gpu_temperature_celsius{gpu="1"');
    expect(body).not.toContain('sepal_agent_gpu_utilization_ratio{gpu="1"');
    m.setGpus([A100]);
    ({ body } = await m.scrape());
    expect(body).not.toContain('uuid="GPU-2"');
    expect(sample(body, `sepal_agent_gpu_temperature_celsius${A100_LABELS}`)).toBe(51);
  });

  it('a rejection reason that is not a code is folded into "other"', async () => {
    const m = new AgentMetrics({ defaultMetrics: false });
    m.manifestRejected('bad signature from "hub"\n');
    m.manifestRejected('x'.repeat(65));
    const { body } = await m.scrape();
    expect(sample(body, 'sepal_agent_manifest_rejections_total{reason="other"}')).toBe(2);
  });

  it('no certificate exports 0, and flags go back to 0', async () => {
    const m = populated();
    m.setCertNotAfter(null);
    m.setHubConnected(false);
    m.setRevoked(true);
    m.setReady(false);
    m.setVpnUp(false);
    m.setChildUp('supernode', false);
    const { body } = await m.scrape();
    expect(sample(body, 'sepal_agent_cert_expiry_timestamp_seconds')).toBe(0);
    expect(sample(body, 'sepal_agent_hub_connected')).toBe(0);
    expect(sample(body, 'sepal_agent_revoked')).toBe(1);
    expect(sample(body, 'sepal_agent_ready')).toBe(0);
    expect(sample(body, 'sepal_agent_vpn_up')).toBe(0);
    expect(sample(body, 'sepal_agent_child_up{child="supernode"}')).toBe(0);
  });

  it('two instances do not share a registry', async () => {
    const a = new AgentMetrics({ defaultMetrics: false });
    const b = new AgentMetrics({ defaultMetrics: false });
    a.setManifestVersion(3);
    expect(sample((await b.scrape()).body, 'sepal_agent_manifest_version')).toBe(0);
  });
});

describe('Heartbeats', () => {
  it('healthy while every loop beats within the limit, stalled once one stops', () => {
    const clock = new FakeClock();
    const hb = new Heartbeats(clock);
    hb.beat('status');
    hb.beat('manifest');
    clock.advance(50_000);
    hb.beat('status');
    let r = hb.check(clock.now(), 60_000);
    expect(r.ok).toBe(true);
    clock.advance(10_001); // manifest last beat 60_001 ms ago
    hb.beat('status');
    r = hb.check(clock.now(), 60_000);
    expect(r.ok).toBe(false);
    expect(r.loops['manifest']).toEqual({ lastProgressMs: clock.now() - 60_001, ok: false });
    expect(r.loops['status']).toEqual({ lastProgressMs: clock.now(), ok: true });
    hb.beat('manifest');
    expect(hb.check(clock.now(), 60_000).ok).toBe(true);
  });

  it('a loop that announces a long sleep is not stalled while it sleeps', () => {
    const clock = new FakeClock();
    const hb = new Heartbeats(clock);
    hb.beat('renewal', { expectNextWithinMs: 16 * 3600_000 });
    clock.advance(16 * 3600_000 + 59_000);
    expect(hb.check(clock.now(), 60_000).ok).toBe(true);
    clock.advance(2000);
    expect(hb.check(clock.now(), 60_000).loops['renewal']?.ok).toBe(false);
    // The next plain beat returns it to the general limit.
    hb.beat('renewal');
    clock.advance(61_000);
    expect(hb.check(clock.now(), 60_000).ok).toBe(false);
  });

  it('no loops is healthy; a removed loop is no longer watched', () => {
    const clock = new FakeClock();
    const hb = new Heartbeats(clock);
    expect(hb.check(clock.now(), 1000)).toEqual({ ok: true, loops: {} });
    hb.beat('vpn');
    clock.advance(5000);
    expect(hb.check(clock.now(), 1000).ok).toBe(false);
    hb.remove('vpn');
    expect(hb.check(clock.now(), 1000)).toEqual({ ok: true, loops: {} });
  });

  it('a loop named __proto__ is just a loop', () => {
    const hb = new Heartbeats(new FakeClock());
    hb.beat('__proto__');
    const r = hb.check(new FakeClock().now(), 1000);
    expect(Object.keys(r.loops)).toEqual(['__proto__']);
    expect(Object.getPrototypeOf(r.loops)).toBe(Object.prototype);
  });

  it('refuses a negative announced sleep', () => {
    expect(() => new Heartbeats(new FakeClock()).beat('x', { expectNextWithinMs: -1 })).toThrow(TypeError);
  });
});

describe('metrics listen addresses', () => {
  it('parses HOST:PORT with bracketed IPv6 and refuses the rest', () => {
    expect(parseHostPort('127.0.0.1:9478')).toEqual({ host: '127.0.0.1', port: 9478 });
    expect(parseHostPort('[::1]:0')).toEqual({ host: '::1', port: 0 });
    expect(parseHostPort('localhost:65535')).toEqual({ host: 'localhost', port: 65535 });
    for (const bad of ['::1:9478', '[zz]:1', '1.2.3:5', '999.0.0.1:1', 'h:65536', 'h:', ':9478', '-h:1', '[fe80::1%eth0]:1', 'a b:1']) {
      expect(parseHostPort(bad), bad).toBeNull();
    }
    expect(formatHostPort('::1', 9478)).toBe('[::1]:9478');
    expect(formatHostPort('127.0.0.1', 9478)).toBe('127.0.0.1:9478');
  });

  it('loopback is 127/8, ::1 and IPv4-mapped 127/8, never a name or a wildcard', () => {
    for (const ip of ['127.0.0.1', '127.255.0.9', '::1', '0:0:0:0:0:0:0:1', '::ffff:127.0.0.1']) expect(isLoopbackIp(ip), ip).toBe(true);
    for (const ip of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1', '::ffff:10.0.0.1', 'fe80::1', 'localhost', '']) expect(isLoopbackIp(ip), ip).toBe(false);
  });
});
