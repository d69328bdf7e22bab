// The agent's loopback metrics/health server: routes through inject(), then a real listener on
// 127.0.0.1:0 scraped over HTTP and checked by `promtool check metrics` (Debian `prometheus`),
// and the refusal of any address that is not loopback.
import { afterEach, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import type { FastifyInstance } from 'fastify';
import { AgentError, ErrorCodes } from '../../agent/errors.ts';
import { Heartbeats } from '../../agent/metrics/heartbeats.ts';
import { AgentMetrics } from '../../agent/metrics/registry.ts';
import { buildMetricsServer, listenMetrics, type Readiness } from '../../agent/metrics/server.ts';
import { FakeClock } from '../../agent/runtime/clock.ts';

const MAX_AGE_MS = 60_000;
const PROMTOOL = process.env['PROMTOOL'] ?? 'promtool';
const promtoolFound = spawnSync(PROMTOOL, ['--version'], { encoding: 'utf8' }).status === 0;

const apps: FastifyInstance[] = [];
afterEach(async () => {
  await Promise.all(apps.splice(0).map((a) => a.close()));
});

async function setup(opts: { readiness?: () => Readiness; metrics?: AgentMetrics } = {}) {
  const clock = new FakeClock();
  const heartbeats = new Heartbeats(clock);
  const metrics = opts.metrics ?? new AgentMetrics({ defaultMetrics: false });
  let checks: Record<string, boolean> = { enrolled: true, certValid: true, manifestApplied: true, childrenUp: true };
  const app = await buildMetricsServer({
    metrics,
    health: () => heartbeats.check(clock.now(), MAX_AGE_MS),
    readiness: opts.readiness ?? (() => ({ ready: Object.values(checks).every(Boolean), checks })),
  });
  apps.push(app);
  return { app, clock, heartbeats, metrics, setChecks: (c: Record<string, boolean>) => { checks = c; } };
}

function rejection(e: unknown): AgentError {
  if (e instanceof AgentError) return e;
  throw e;
}

describe('routes (inject)', () => {
  it('/metrics serves the registry as Prometheus text, with nosniff', async () => {
    const { app, metrics } = await setup();
    metrics.setManifestVersion(12);
    const res = await app.inject({ method: 'GET', url: '/metrics' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['content-type']).toMatch(/^text\/plain; version=0\.0\.4/);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.body).toMatch(/^sepal_agent_manifest_version 12$/m);
  });

  it('/metrics reports readiness in sepal_agent_ready', async () => {
    const { app, setChecks } = await setup();
    expect((await app.inject({ url: '/metrics' })).body).toMatch(/^sepal_agent_ready 1$/m);
    setChecks({ enrolled: true, certValid: false });
    expect((await app.inject({ url: '/metrics' })).body).toMatch(/^sepal_agent_ready 0$/m);
  });

  it('/healthz turns 503 when a loop stops beating', async () => {
    const { app, clock, heartbeats } = await setup();
    heartbeats.beat('renewal');
    heartbeats.beat('manifest-stream');
    let res = await app.inject({ url: '/healthz' });
    expect(res.statusCode).toBe(200);
    expect(res.headers['x-content-type-options']).toBe('nosniff');
    expect(res.json()).toEqual({
      status: 'ok',
      loops: { 'manifest-stream': { lastProgressMs: clock.now(), ok: true }, renewal: { lastProgressMs: clock.now(), ok: true } },
    });

    const stoppedAt = clock.now();
    clock.advance(MAX_AGE_MS - 1000);
    heartbeats.beat('renewal');
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
    clock.advance(1001);
    heartbeats.beat('renewal');
    res = await app.inject({ url: '/healthz' });
    expect(res.statusCode).toBe(503);
    expect(res.json()).toEqual({
      status: 'stalled',
      loops: { 'manifest-stream': { lastProgressMs: stoppedAt, ok: false }, renewal: { lastProgressMs: clock.now(), ok: true } },
    });

    heartbeats.beat('manifest-stream');
    expect((await app.inject({ url: '/healthz' })).statusCode).toBe(200);
  });

  it('/readyz reflects its checks', async () => {
    const { app, setChecks } = await setup();
    let res = await app.inject({ url: '/readyz' });
    expect(res.statusCode).toBe(200);
    expect(res.json()).toEqual({ status: 'ready', checks: { enrolled: true, certValid: true, manifestApplied: true, childrenUp: true } });
    for (const failing of ['enrolled', 'certValid', 'manifestApplied', 'childrenUp']) {
      const checks = { enrolled: true, certValid: true, manifestApplied: true, childrenUp: true, [failing]: false };
      setChecks(checks);
      res = await app.inject({ url: '/readyz' });
      expect(res.statusCode, failing).toBe(503);
      expect(res.json()).toEqual({ status: 'not-ready', checks });
    }
  });

  it('anything else is a JSON 404, also other methods on known paths', async () => {
    const { app } = await setup();
    for (const [method, url] of [['GET', '/'], ['GET', '/metrics/x'], ['POST', '/metrics'], ['DELETE', '/healthz'], ['GET', '/admin']] as const) {
      const res = await app.inject({ method, url });
      expect(res.statusCode, `${method} ${url}`).toBe(404);
      expect(res.json()).toEqual({ error: { code: 'NOT_FOUND', message: 'no such resource' } });
      expect(res.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  it('a failing dependency is a generic 500 that leaks nothing', async () => {
    const { app } = await setup({ readiness: () => { throw new Error('secret detail /var/lib/sepal-agent/identity'); } });
    const res = await app.inject({ url: '/readyz' });
    expect(res.statusCode).toBe(500);
    expect(res.json()).toEqual({ error: { code: 'INTERNAL', message: 'internal error' } });
    expect(res.body).not.toContain('secret');
  });
});

describe('listenMetrics', () => {
  it('a real scrape over HTTP passes promtool check metrics without complaints', async (ctx) => {
    if (!promtoolFound) {
      // DESIGN.md: a test skips only for what the machine cannot provide, and in CI nothing skips.
      if (process.env['CI'] !== undefined) throw new Error(`promtool not found (${PROMTOOL}); CI must install Debian "prometheus"`);
      console.warn(`skipping the promtool check: ${PROMTOOL} not found (install Debian "prometheus")`);
      ctx.skip();
    }
    const metrics = new AgentMetrics({ children: ['openvpn', 'supernode'] });
    metrics.setCertNotAfter(Date.now() + 86_400_000);
    metrics.renewal('success');
    metrics.setManifestVersion(3);
    metrics.manifestRejected('MANIFEST_ROLLBACK');
    metrics.hubContact(Date.now());
    metrics.setHubConnected(true);
    metrics.setChildUp('supernode', true);
    metrics.setChildState('supernode', 'running');
    metrics.childRestarted('openvpn');
    metrics.setVpnUp(true);
    metrics.setVpnBytes({ received: 123_456, sent: 7890 });
    metrics.setVpnLastConnected(Date.now());
    metrics.setGpus([{ index: 0, uuid: 'GPU-1', model: 'NVIDIA "A100"\\x', utilizationRatio: 1, memoryUsedBytes: 0, memoryTotalBytes: 4e10, temperatureCelsius: 33 }]);
    const { app } = await setup({ metrics });
    const addr = await listenMetrics(app, '127.0.0.1:0');
    expect(addr).toMatch(/^127\.0\.0\.1:\d+$/);
    const res = await fetch(`http://${addr}/metrics`);
    expect(res.status).toBe(200);
    const text = await res.text();
    expect(text).toContain('sepal_agent_gpu_utilization_ratio{');
    expect(text).toContain('sepal_agent_process_cpu_seconds_total');

    const check = spawnSync(PROMTOOL, ['check', 'metrics'], { input: text, encoding: 'utf8' });
    expect(check.stdout + check.stderr).toBe('');
    expect(check.status).toBe(0);

    // The check can fail: the gauges that AgentMetrics drops are exactly what promtool refuses.
    const bad = spawnSync(PROMTOOL, ['check', 'metrics'], { input: '# HELP x_total a gauge\n# TYPE x_total gauge\nx_total 1\n', encoding: 'utf8' });
    expect(bad.status).not.toBe(0);
    expect(bad.stdout + bad.stderr).toMatch(/_total/);
  });

  it('serves /healthz and /readyz over a real socket, then closes', async () => {
    const { app } = await setup();
    const addr = await listenMetrics(app, '127.0.0.1:0');
    expect((await fetch(`http://${addr}/healthz`)).status).toBe(200);
    expect((await fetch(`http://${addr}/readyz`)).status).toBe(200);
    await app.close();
    await expect(fetch(`http://${addr}/healthz`)).rejects.toThrow();
  });

  it('refuses non-loopback addresses with CONFIG_INVALID naming metrics.listen, before binding', async () => {
    for (const addr of ['0.0.0.0:0', '[::]:0', '10.255.255.1:0', '192.0.2.1:9478']) {
      const { app } = await setup();
      const e = rejection(await listenMetrics(app, addr).then(() => null, (err: unknown) => err));
      expect(e.code, addr).toBe(ErrorCodes.CONFIG_INVALID);
      expect(e.detail?.['path']).toBe('metrics.listen');
      expect(e.message).toContain('metrics.allowNonLoopback');
      expect(app.server.listening).toBe(false);
    }
  });

  it('refuses a malformed address', async () => {
    const { app } = await setup();
    const e = rejection(await listenMetrics(app, 'localhost').then(() => null, (err: unknown) => err));
    expect(e.code).toBe(ErrorCodes.CONFIG_INVALID);
  });

  it('accepts other loopback addresses and names that resolve to loopback only', async () => {
    const { app } = await setup();
    expect(await listenMetrics(app, '127.0.0.2:0')).toMatch(/^127\.0\.0\.2:\d+$/);
    const second = await setup();
    const addr = await listenMetrics(second.app, 'localhost:0');
    expect(addr).toMatch(/^(127\.0\.0\.1|\[::1\]):\d+$/);
  });

  it('binds a non-loopback address when the config allows it', async () => {
    const { app } = await setup();
    const addr = await listenMetrics(app, '0.0.0.0:0', { allowNonLoopback: true });
    expect(addr).toMatch(/^0\.0\.0\.0:\d+$/);
  });

  it('a port in use is LISTEN_FAILED naming the address', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    try {
      const port = (blocker.address() as net.AddressInfo).port;
      const { app } = await setup();
      const e = rejection(await listenMetrics(app, `127.0.0.1:${port}`).then(() => null, (err: unknown) => err));
      expect(e.code).toBe(ErrorCodes.LISTEN_FAILED);
      expect(e.message).toContain(`127.0.0.1:${port}`);
    } finally {
      await new Promise<void>((resolve) => blocker.close(() => resolve()));
    }
  });
});
