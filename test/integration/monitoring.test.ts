// docs/monitoring against the real thing: promtool accepts the rules, their unit tests and the
// scrape configuration, and every metric name the alerts and the Grafana dashboard use is exported
// by a real scrape of a running hub (in process, over HTTPS) and a running `sepal-agent run`
// (enrolled with a token, a stand-in flower-supernode, /metrics on loopback).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { REPO, freePorts, httpsRequest, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { enrollWithToken, startAgent, writeStandInSupernode, type RunningAgent } from '../helpers/agent.ts';

const MON = path.join(REPO, 'docs/monitoring');
const PROMTOOL = ['/usr/bin/promtool', '/usr/local/bin/promtool'].find((p) => fs.existsSync(p));

let hub: TestHub;
let work: string;
let metricsPort: number;
let daemon: RunningAgent | null = null;

function agentScrape(): Promise<string> {
  return new Promise((resolve, reject) => {
    http.get(`http://127.0.0.1:${metricsPort}/metrics`, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (s: string) => { body += s; });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

async function hubScrape(): Promise<string> {
  const r = await httpsRequest(`${hub.httpsUrl}/metrics`, hub.caPem);
  expect(r.status).toBe(200);
  return r.body.toString();
}

/** Metric families of a scrape (from its `# TYPE` lines, so labelled metrics without a series yet
 *  count), with their type. */
function families(scrape: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const m of scrape.matchAll(/^# TYPE (\S+) (\S+)$/gm)) out.set(m[1] ?? '', m[2] ?? '');
  return out;
}

/** Sample names of a scrape (lines that are not comments). */
function sampleNames(scrape: string): Set<string> {
  return new Set([...scrape.matchAll(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{|\s)/gm)].map((m) => m[1] ?? ''));
}

function namesUsedIn(file: string): Set<string> {
  return new Set([...fs.readFileSync(path.join(MON, file), 'utf8').matchAll(/sepal_(?:agent|hub)_[a-z0-9_]+/g)].map((m) => m[0]));
}

function promtool(args: string[], cwd = MON): { status: number | null; out: string } {
  const r = spawnSync(PROMTOOL ?? 'promtool', args, { cwd, encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

beforeAll(async () => {
  const [mPort] = await freePorts(1);
  metricsPort = mPort ?? 0;
  hub = await startTestHub({ fixedPorts: true });
  work = tempDir('sepal-monitoring-it-');
  const stateDir = path.join(work, 'state');
  await enrollWithToken(hub, 'org-m', stateDir, 'monitoring-test');
  const fakeSupernode = writeStandInSupernode(path.join(work, 'bin'));
  daemon = startAgent({ configFile: path.join(work, 'agent.json'), config: { supernode: { command: fakeSupernode } }, stateDir, metricsPort });
});

afterAll(async () => {
  if (process.env['SEPAL_DEBUG'] !== undefined) console.log(daemon?.logs());
  await daemon?.stop();
  await hub?.stop();
  if (work !== undefined) fs.rmSync(work, { recursive: true, force: true });
});

describe('promtool', () => {
  it('check rules accepts alerts.yml', (ctx) => {
    if (PROMTOOL === undefined) ctx.skip();
    const r = promtool(['check', 'rules', 'alerts.yml']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toMatch(/SUCCESS: \d+ rules found/);
  });

  it('test rules passes alerts.test.yml', (ctx) => {
    if (PROMTOOL === undefined) ctx.skip();
    const r = promtool(['test', 'rules', 'alerts.test.yml']);
    expect(r.status, r.out).toBe(0);
    expect(r.out).toContain('SUCCESS');
  });

  it('check config accepts prometheus.yml, with the hub CA and a targets file next to it', (ctx) => {
    if (PROMTOOL === undefined) ctx.skip();
    // prometheus.yml's paths are relative to its directory: give it a copy with the files it names.
    const dir = path.join(work, 'prometheus');
    fs.mkdirSync(path.join(dir, 'targets'), { recursive: true });
    fs.copyFileSync(path.join(MON, 'prometheus.yml'), path.join(dir, 'prometheus.yml'));
    fs.copyFileSync(path.join(MON, 'alerts.yml'), path.join(dir, 'alerts.yml'));
    fs.writeFileSync(path.join(dir, 'sepal-root.crt'), hub.caPem);
    fs.writeFileSync(path.join(dir, 'targets', 'sepal-agents.json'), JSON.stringify([{ targets: [`127.0.0.1:${metricsPort}`], labels: { node: 'n-test', org: 'org-m' } }]));
    const r = promtool(['check', 'config', 'prometheus.yml'], dir);
    expect(r.status, r.out).toBe(0);
    expect(r.out).not.toMatch(/WARNING|FAILED/);
  });
});

describe('alerts.yml conventions', () => {
  const rules = fs.readFileSync(path.join(MON, 'alerts.yml'), 'utf8');
  const tests = fs.readFileSync(path.join(MON, 'alerts.test.yml'), 'utf8');
  const alerts = [...rules.matchAll(/^\s*- alert: (\S+)$/gm)].map((m) => m[1] ?? '');

  it('every alert has a severity, a summary, a description and a runbook in docs/operations.md', () => {
    expect(alerts.length).toBeGreaterThan(10);
    const blocks = rules.split(/^\s*- alert: /m).slice(1);
    expect(blocks).toHaveLength(alerts.length);
    for (const b of blocks) {
      const name = b.split('\n')[0];
      expect(b, name).toMatch(/\n\s+severity: (critical|warning)\n/);
      expect(b, name).toMatch(/\n\s+summary: /);
      expect(b, name).toMatch(/\n\s+description: /);
      expect(b, name).toMatch(/\n\s+runbook_url: "docs\/operations\.md#[a-z0-9-]+"\n/);
    }
    // Every runbook anchor is a heading of docs/operations.md (GitHub's slugs of its headings).
    const slug = (h: string) => h.trim().toLowerCase().replace(/[^a-z0-9 -]/g, '').replace(/ /g, '-');
    const headings = new Set([...fs.readFileSync(path.join(MON, '..', 'operations.md'), 'utf8').matchAll(/^#{1,6} (.+)$/gm)].map((m) => slug(m[1] ?? '')));
    for (const m of rules.matchAll(/runbook_url: "docs\/operations\.md#([a-z0-9-]+)"/g)) expect(headings, m[1]).toContain(m[1]);
  });

  it('every alert is tested firing and not firing', () => {
    for (const a of alerts) {
      const cases = tests.split(/^\s*- eval_time: /m).slice(1).filter((c) => new RegExp(`\\n\\s*alertname: ${a}\\n`).test(c));
      expect(cases.some((c) => /exp_alerts: \[\]/.test(c)), `${a}: a case where it does not fire`).toBe(true);
      expect(cases.some((c) => /exp_labels:/.test(c)), `${a}: a case where it fires`).toBe(true);
    }
  });
});

describe('every metric in alerts.yml and grafana-dashboard.json is exported', () => {
  it('by a real scrape of the agent and the hub (GPU metrics: registered, shown without a GPU)', async () => {
    await expect.poll(async () => {
      try {
        return /^sepal_agent_hub_connected 1$/m.test(await agentScrape());
      } catch {
        return false;
      }
    }, { timeout: 20_000, interval: 250 }).toBe(true);
    const agent = await agentScrape();
    const hubText = await hubScrape();
    const fams = new Map([...families(agent), ...families(hubText)]);
    const samples = new Set([...sampleNames(agent), ...sampleNames(hubText)]);
    const metricsDoc = fs.readFileSync(path.join(REPO, 'docs/metrics.md'), 'utf8');
    const registry = fs.readFileSync(path.join(REPO, 'agent/metrics/registry.ts'), 'utf8');

    const used = new Set([...namesUsedIn('alerts.yml'), ...namesUsedIn('grafana-dashboard.json')]);
    expect(used.size).toBeGreaterThan(20);
    const missing: string[] = [];
    const gpuNotScraped: string[] = [];
    for (const name of used) {
      if (fams.has(name) || samples.has(name)) continue;
      // a histogram's series: NAME_bucket, NAME_sum, NAME_count of the family NAME
      const base = name.replace(/_(bucket|sum|count)$/, '');
      if (base !== name && fams.get(base) === 'histogram') continue;
      // GPU gauges have series only with a GPU and nvidia-smi/rocm-smi: then they must at least be
      // registered by the agent and documented.
      if (name.startsWith('sepal_agent_gpu_') && metricsDoc.includes(`\`${name}\``) && registry.includes(`'${name.slice('sepal_agent_'.length)}'`)) {
        gpuNotScraped.push(name);
        continue;
      }
      missing.push(name);
    }
    if (gpuNotScraped.length > 0) console.info(`GPU metrics not in this scrape (no GPU here), registered and documented: ${gpuNotScraped.join(', ')}`);
    expect(missing).toEqual([]);
    // the alerts reach both programs' metrics
    expect([...used].some((n) => n.startsWith('sepal_hub_'))).toBe(true);
    expect([...used].some((n) => n.startsWith('sepal_agent_gpu_'))).toBe(true);
  });
});
