// The agent's manuals are checked against the code they describe: every configuration option the
// schema has is in docs/agent.md, every metric the agent and the hub register is in
// docs/metrics.md, and the links between the files in docs/ (and their #anchors) resolve.
//
// Metrics: prom-client's default process/runtime metrics (sepal_agent_process_*, sepal_agent_nodejs_*,
// and the hub's sepal_hub_process_*, sepal_hub_nodejs_*) are documented by family, not one by one:
// their exact set comes from the prom-client version and the platform (process_open_fds exists only
// on Linux, for instance), not from Sepal, so listing each would make this test fail on a library
// upgrade without the manual being any less right. For them the test requires the family prefixes
// to be named; every Sepal-specific metric must appear by its full name, in backticks.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { describeConfig } from '../../agent/config.ts';
import { AgentMetrics } from '../../agent/metrics/registry.ts';
import { HubMetrics } from '../../hub/metrics.ts';

const REPO = path.resolve(import.meta.dirname, '../..');
const DOCS = path.join(REPO, 'docs');
const read = (name: string): string => fs.readFileSync(path.join(DOCS, name), 'utf8');

const DEFAULT_FAMILIES = ['sepal_agent_process_', 'sepal_agent_nodejs_', 'sepal_hub_process_', 'sepal_hub_nodejs_'];

async function registeredNames(registry: { getMetricsAsJSON(): Promise<Array<{ name: string }>> }): Promise<string[]> {
  return (await registry.getMetricsAsJSON()).map((m) => m.name);
}

function isDefaultMetric(name: string): boolean {
  return DEFAULT_FAMILIES.some((p) => name.startsWith(p));
}

/** Markdown without fenced code blocks (a `[x](y)` in an example is not a link). */
function withoutCode(md: string): string {
  return md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '').replace(/`[^`\n]*`/g, '');
}

/** GitHub's heading anchors: lower case, punctuation other than - and _ dropped, spaces to -,
 *  duplicates numbered -1, -2, … */
function anchors(md: string): Set<string> {
  const out = new Set<string>();
  const seen = new Map<string, number>();
  const text = md.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
  for (const m of text.matchAll(/^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$/gm)) {
    const base = (m[1] ?? '')
      .replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
      .toLowerCase()
      .replace(/[^\p{L}\p{N}\p{M} _-]/gu, '')
      .replace(/ /g, '-');
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

describe('docs/agent.md', () => {
  const doc = read('agent.md');

  it('lists every configuration option of the schema, in backticks', () => {
    const options = describeConfig();
    expect(options.length).toBeGreaterThan(0);
    const missing = options.map((o) => o.path).filter((p) => !doc.includes(`\`${p}\``));
    expect(missing, 'options missing from docs/agent.md').toEqual([]);
  });

  it('shows each option with its default as describeConfig() gives it', () => {
    // Defaults are those of the running platform; the manual shows Linux's.
    if (process.platform !== 'linux') return;
    const rows = new Map([...doc.matchAll(/^\| `([A-Za-z.]+)` \|[^|\n]*(?:\\\|[^|\n]*)*\| `([^`]*)` \|/gm)].map((m) => [m[1], m[2]]));
    for (const o of describeConfig()) {
      expect(rows.get(o.path), `default of ${o.path}`).toBe(JSON.stringify(o.default));
    }
  });
});

describe('docs/metrics.md', () => {
  const doc = read('metrics.md');

  it('names every metric the agent registers (the default process metrics by family)', async () => {
    const names = await registeredNames(new AgentMetrics().registry);
    const own = names.filter((n) => !isDefaultMetric(n));
    expect(own.length).toBeGreaterThanOrEqual(20);
    expect(own.filter((n) => !doc.includes(`\`${n}\``)), 'agent metrics missing from docs/metrics.md').toEqual([]);
    expect(names.some((n) => n.startsWith('sepal_agent_process_'))).toBe(true);
    expect(doc).toContain('`sepal_agent_process_*`');
    expect(doc).toContain('`sepal_agent_nodejs_*`');
  });

  it('names every metric the hub registers (the default process metrics by family)', async () => {
    const names = await registeredNames(new HubMetrics().registry);
    const own = names.filter((n) => !isDefaultMetric(n));
    expect(own.length).toBeGreaterThanOrEqual(8);
    expect(own.filter((n) => !doc.includes(`\`${n}\``)), 'hub metrics missing from docs/metrics.md').toEqual([]);
    expect(doc).toContain('`sepal_hub_process_*`');
    expect(doc).toContain('`sepal_hub_nodejs_*`');
  });

  it('the process metrics it names by their short name exist', async () => {
    const names = new Set(await registeredNames(new AgentMetrics().registry));
    for (const short of ['process_resident_memory_bytes', 'process_cpu_seconds_total', 'process_start_time_seconds', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_heap_size_used_bytes']) {
      expect(names.has(`sepal_agent_${short}`), short).toBe(true);
      expect(doc).toContain(`\`${short}\``);
    }
  });
});

describe('links between the files in docs/', () => {
  const files = fs.readdirSync(DOCS).filter((f) => f.endsWith('.md'));

  it('finds the manuals', () => {
    expect(files).toEqual(expect.arrayContaining(['agent.md', 'metrics.md', 'enrollment.md', 'hub.md']));
  });

  for (const file of files) {
    it(`${file}: every relative link resolves to an existing file (and heading)`, () => {
      const md = read(file);
      const broken: string[] = [];
      for (const m of withoutCode(md).matchAll(/\[[^\]]*\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
        const target = m[1] ?? '';
        if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue; // https:, mailto:
        const [rel = '', fragment] = target.split('#', 2);
        const resolved = rel === '' ? path.join(DOCS, file) : path.resolve(DOCS, decodeURI(rel));
        if (!fs.existsSync(resolved)) {
          broken.push(`${target} (no such file)`);
          continue;
        }
        if (fragment !== undefined && fragment !== '' && resolved.endsWith('.md')) {
          if (!anchors(fs.readFileSync(resolved, 'utf8')).has(decodeURIComponent(fragment))) broken.push(`${target} (no such heading)`);
        }
      }
      expect(broken).toEqual([]);
    });
  }
});
