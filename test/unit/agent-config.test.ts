// agent.json validation: every key optional with a default; unknown keys (at any depth), wrong
// types, out-of-range values and contradictions are CONFIG_INVALID naming the option path; the
// command line wins over the file; the result is deeply frozen; the schema documents itself.
import { afterAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  AgentConfigSchema, DEFAULT_METRICS_PORT, defaultAgentConfig, defaultConfigFile, defaultRuntimeDir, describeConfig, loadAgentConfig, parseAgentConfig,
} from '../../agent/config.ts';
import { defaultStateDir } from '../../agent/enroll/store.ts';
import { AgentError, ErrorCodes } from '../../agent/errors.ts';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-config-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function writeConfig(name: string, text: string): string {
  const f = path.join(tmp, name);
  fs.writeFileSync(f, text);
  return f;
}

function rejection(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  throw new Error('expected CONFIG_INVALID');
}

function rejectedPaths(input: unknown): { code: string; path: unknown; paths: string[]; message: string } {
  const e = rejection(() => parseAgentConfig(input, 'agent.json'));
  const issues = (e.detail?.['issues'] ?? []) as Array<{ path: string }>;
  return { code: e.code, path: e.detail?.['path'], paths: issues.map((i) => i.path), message: e.message };
}

function frozenGaps(o: unknown, where = '(root)', gaps: string[] = []): string[] {
  if (o !== null && typeof o === 'object') {
    if (!Object.isFrozen(o)) gaps.push(where);
    for (const [k, v] of Object.entries(o)) frozenGaps(v, `${where}.${k}`, gaps);
  }
  return gaps;
}

const DEFAULTS = {
  stateDir: defaultStateDir(),
  runtimeDir: process.platform === 'win32' ? defaultRuntimeDir() : '/run/sepal-agent',
  logLevel: 'info',
  metrics: { listen: '127.0.0.1:9478', enabled: true, allowNonLoopback: false },
  hub: { statusIntervalSeconds: 60, reconnectBaseMs: 1000, reconnectCapMs: 60_000, rpcDeadlineMs: 10_000 },
  renewal: { backoffBaseMs: 1000, backoffCapMs: 300_000 },
  supernode: { command: 'flower-supernode', stopGraceMs: 10_000, uncleanExitHoldoffMs: null },
  openvpn: { command: 'openvpn', stopGraceMs: 5000, connectWaitMs: 30_000 },
};

describe('defaults', () => {
  it('an empty file means every default', () => {
    expect(defaultAgentConfig()).toEqual(DEFAULTS);
    expect(parseAgentConfig({}, 'agent.json')).toEqual(DEFAULTS);
  });

  it('a partial section keeps the defaults of its other keys', () => {
    const c = parseAgentConfig({ hub: { statusIntervalSeconds: 30 }, metrics: { enabled: false } }, 'agent.json');
    expect(c.hub).toEqual({ ...DEFAULTS.hub, statusIntervalSeconds: 30 });
    expect(c.metrics).toEqual({ ...DEFAULTS.metrics, enabled: false });
    expect(c.renewal).toEqual(DEFAULTS.renewal);
  });

  it('accepts a full config unchanged', () => {
    const full = {
      stateDir: '/srv/sepal/state', runtimeDir: '/run/sepal-agent-2', logLevel: 'debug',
      metrics: { listen: '[::1]:19478', enabled: true, allowNonLoopback: false },
      hub: { statusIntervalSeconds: 5, reconnectBaseMs: 100, reconnectCapMs: 1000, rpcDeadlineMs: 120_000 },
      renewal: { backoffBaseMs: 2000, backoffCapMs: 2000 },
      supernode: { command: '/opt/flwr/bin/flower-supernode', stopGraceMs: 5000, uncleanExitHoldoffMs: 0 },
      openvpn: { command: '/usr/sbin/openvpn', stopGraceMs: 2000, connectWaitMs: 0 },
    };
    expect(parseAgentConfig(structuredClone(full), 'agent.json')).toEqual(full);
  });

  it('the default metrics port collides with none of node_exporter, DCGM, OpenTelemetry or Flower', () => {
    expect(DEFAULT_METRICS_PORT).toBe(9478);
    for (const taken of [9100, 9400, 9464, 9090, 9091, 9092, 9093, 9094, 9095, 9096, 9445, 9454]) expect(DEFAULT_METRICS_PORT).not.toBe(taken);
    expect(defaultAgentConfig().metrics.listen).toBe(`127.0.0.1:${DEFAULT_METRICS_PORT}`);
  });

  it('the default config file is under /etc/sepal (Windows: %ProgramData%)', () => {
    expect(defaultConfigFile('linux', {})).toBe('/etc/sepal/agent.json');
    expect(defaultConfigFile('win32', { ProgramData: 'D:\\PD' })).toBe('D:\\PD\\Sepal\\Agent\\agent.json');
  });
});

describe('unknown keys', () => {
  it.each([
    ['(root)', { extra: 1 }, 'extra'],
    ['metrics', { metrics: { extra: true } }, 'metrics.extra'],
    ['hub', { hub: { statusInterval: 60 } }, 'hub.statusInterval'],
    ['renewal', { renewal: { backoffBase: 1 } }, 'renewal.backoffBase'],
    ['supernode', { supernode: { args: ['--insecure'] } }, 'supernode.args'],
    ['openvpn', { openvpn: { Command: 'x' } }, 'openvpn.Command'],
  ])('in %s: reported at the key itself', (_where, input, keyPath) => {
    const r = rejectedPaths(input);
    expect(r.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(r.path).toBe(keyPath);
    expect(r.message).toContain(`${keyPath}: unknown option`);
    expect(r.message.startsWith('agent.json: ')).toBe(true);
  });

  it('lists every problem, not only the first', () => {
    const r = rejectedPaths({ a: 1, metrics: { b: 2 }, hub: { rpcDeadlineMs: 'soon' } });
    expect(r.paths.sort()).toEqual(['a', 'hub.rpcDeadlineMs', 'metrics.b']);
  });
});

describe('wrong types and ranges', () => {
  it.each([
    ['stateDir', { stateDir: 42 }],
    ['stateDir', { stateDir: 'relative/dir' }],
    ['stateDir', { stateDir: '' }],
    ['runtimeDir', { runtimeDir: ['x'] }],
    ['logLevel', { logLevel: 'verbose' }],
    ['metrics', { metrics: 'on' }],
    ['metrics.listen', { metrics: { listen: 9478 } }],
    ['metrics.listen', { metrics: { listen: 'localhost' } }],
    ['metrics.listen', { metrics: { listen: '127.0.0.1:70000' } }],
    ['metrics.listen', { metrics: { listen: '::1:9478' } }],
    ['metrics.listen', { metrics: { listen: '999.1.1.1:9478' } }],
    ['metrics.enabled', { metrics: { enabled: 'yes' } }],
    ['metrics.allowNonLoopback', { metrics: { allowNonLoopback: 1 } }],
    ['hub.statusIntervalSeconds', { hub: { statusIntervalSeconds: 0 } }],
    ['hub.statusIntervalSeconds', { hub: { statusIntervalSeconds: 1.5 } }],
    ['hub.rpcDeadlineMs', { hub: { rpcDeadlineMs: '10s' } }],
    ['hub.reconnectCapMs', { hub: { reconnectCapMs: -1 } }],
    ['renewal.backoffBaseMs', { renewal: { backoffBaseMs: null } }],
    ['supernode.command', { supernode: { command: '' } }],
    ['supernode.command', { supernode: { command: ' flower-supernode' } }],
    ['openvpn.command', { openvpn: { command: 'open\u0000vpn' } }],
  ])('%s: %j', (where, input) => {
    const r = rejectedPaths(input);
    expect(r.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(r.path).toBe(where);
    expect(r.message).toContain(`${where}: `);
  });

  it('a config that is not an object is refused at the root', () => {
    for (const input of [[], null, 'x', 3]) expect(rejectedPaths(input).path).toBe('');
  });
});

describe('contradictions', () => {
  it('renewal.backoffBaseMs above renewal.backoffCapMs', () => {
    const r = rejectedPaths({ renewal: { backoffBaseMs: 10_000, backoffCapMs: 5000 } });
    expect(r.path).toBe('renewal.backoffBaseMs');
    expect(r.message).toContain('renewal.backoffCapMs');
  });

  it('a base above the default cap is a contradiction too', () => {
    expect(rejectedPaths({ renewal: { backoffBaseMs: 400_000 } }).path).toBe('renewal.backoffBaseMs');
  });

  it('hub.reconnectBaseMs above hub.reconnectCapMs', () => {
    const r = rejectedPaths({ hub: { reconnectBaseMs: 5000, reconnectCapMs: 1000 } });
    expect(r.path).toBe('hub.reconnectBaseMs');
    expect(r.message).toContain('hub.reconnectCapMs');
  });

  it('a literal non-loopback metrics address without metrics.allowNonLoopback', () => {
    for (const listen of ['0.0.0.0:9478', '[::]:9478', '10.1.2.3:9478', '[fe80::1]:9478']) {
      const r = rejectedPaths({ metrics: { listen } });
      expect(r.path).toBe('metrics.listen');
      expect(r.message).toContain('metrics.allowNonLoopback');
    }
    expect(parseAgentConfig({ metrics: { listen: '0.0.0.0:9478', allowNonLoopback: true } }, 'agent.json').metrics.listen).toBe('0.0.0.0:9478');
    expect(parseAgentConfig({ metrics: { listen: '127.8.9.10:9478' } }, 'agent.json').metrics.listen).toBe('127.8.9.10:9478');
  });
});

describe('command-line overrides', () => {
  it('--state-dir and --metrics-addr win over the file', () => {
    const f = writeConfig('over.json', JSON.stringify({ stateDir: '/srv/a', metrics: { listen: '127.0.0.1:1111', enabled: false } }));
    const c = loadAgentConfig(f, { stateDir: '/srv/b', metricsAddr: '[::1]:2222' });
    expect(c.stateDir).toBe('/srv/b');
    expect(c.metrics).toEqual({ listen: '[::1]:2222', enabled: false, allowNonLoopback: false });
  });

  it('a relative --state-dir is taken from the working directory', () => {
    expect(parseAgentConfig({}, 'agent.json', { stateDir: 'agent-2' }).stateDir).toBe(path.resolve('agent-2'));
  });

  it('undefined overrides change nothing', () => {
    expect(parseAgentConfig({}, 'agent.json', { stateDir: undefined, metricsAddr: undefined })).toEqual(DEFAULTS);
  });

  it('a bad override names the flag and the option', () => {
    for (const [o, where] of [[{ metricsAddr: 'nope' }, 'metrics.listen'], [{ metricsAddr: '0.0.0.0:9478' }, 'metrics.listen'], [{ stateDir: '' }, 'stateDir']] as const) {
      const e = rejection(() => parseAgentConfig({}, 'agent.json', o));
      expect(e.code).toBe(ErrorCodes.CONFIG_INVALID);
      expect(e.detail?.['path']).toBe(where);
      expect(e.message).toMatch(/^--(metrics-addr|state-dir): /);
    }
  });

  it('a non-loopback --metrics-addr is fine when the file allows it', () => {
    expect(parseAgentConfig({ metrics: { allowNonLoopback: true } }, 'agent.json', { metricsAddr: '0.0.0.0:9478' }).metrics.listen).toBe('0.0.0.0:9478');
  });
});

describe('deep freeze', () => {
  it('every object in the result is frozen, and writes throw', () => {
    const c = loadAgentConfig(writeConfig('freeze.json', '{"hub":{"statusIntervalSeconds":10}}'), { metricsAddr: '127.0.0.1:0' });
    expect(frozenGaps(c)).toEqual([]);
    expect(() => { (c as { logLevel: string }).logLevel = 'trace'; }).toThrow(TypeError);
    expect(() => { (c.hub as { statusIntervalSeconds: number }).statusIntervalSeconds = 1; }).toThrow(TypeError);
    expect(frozenGaps(defaultAgentConfig())).toEqual([]);
  });

  it('each call returns a fresh object (defaults are not shared)', () => {
    expect(defaultAgentConfig()).not.toBe(defaultAgentConfig());
    expect(defaultAgentConfig().metrics).not.toBe(defaultAgentConfig().metrics);
  });
});

describe('loading the file', () => {
  it('a missing default file means all defaults', () => {
    expect(loadAgentConfig(undefined, {}, { defaultFile: path.join(tmp, 'absent', 'agent.json') })).toEqual(DEFAULTS);
    expect(loadAgentConfig(undefined, { stateDir: '/srv/x' }, { defaultFile: path.join(tmp, 'absent.json') }).stateDir).toBe('/srv/x');
  });

  it('a present default file is read', () => {
    const f = writeConfig('default.json', '{"logLevel":"warn"}');
    expect(loadAgentConfig(undefined, {}, { defaultFile: f }).logLevel).toBe('warn');
  });

  it('a missing file named explicitly is an error', () => {
    const missing = path.join(tmp, 'nope.json');
    const e = rejection(() => loadAgentConfig(missing));
    expect(e.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(e.message).toContain(missing);
    expect(e.message).toContain('ENOENT');
  });

  it('a directory is not a config file', () => {
    expect(rejection(() => loadAgentConfig(tmp)).code).toBe(ErrorCodes.CONFIG_INVALID);
  });

  it('malformed JSON is CONFIG_INVALID naming the file', () => {
    const f = writeConfig('bad.json', '{ "logLevel": "info", }');
    const e = rejection(() => loadAgentConfig(f));
    expect(e.code).toBe(ErrorCodes.CONFIG_INVALID);
    expect(e.message).toContain(`${f}: not valid JSON`);
  });

  it('schema errors from a file name the file and the path', () => {
    const f = writeConfig('unknown.json', '{"metrics":{"extra":1}}');
    const e = rejection(() => loadAgentConfig(f));
    expect(e.message).toBe(`${f}: metrics.extra: unknown option`);
  });
});

describe('describeConfig', () => {
  const docs = describeConfig();
  const leafPaths = (o: object, prefix = ''): string[] => Object.entries(o).flatMap(([k, v]) =>
    (v !== null && typeof v === 'object' && !Array.isArray(v) ? leafPaths(v as object, `${prefix}${k}.`) : [`${prefix}${k}`]));

  it('lists every option of the schema, each with a doc, a type and the real default', () => {
    const defaults = defaultAgentConfig();
    expect(docs.map((d) => d.path).sort()).toEqual(leafPaths(defaults).sort());
    for (const d of docs) {
      expect(d.doc.length, d.path).toBeGreaterThan(10);
      expect(d.type, d.path).not.toBe('unknown');
      const actual = d.path.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)[k], defaults);
      expect(d.default, d.path).toEqual(actual);
    }
  });

  it('describes types a reader can act on', () => {
    const byPath = new Map(docs.map((d) => [d.path, d]));
    expect(byPath.get('metrics.listen')?.type).toBe('HOST:PORT');
    expect(byPath.get('metrics.allowNonLoopback')?.type).toBe('boolean');
    expect(byPath.get('hub.statusIntervalSeconds')?.type).toBe('integer 5..3600');
    expect(byPath.get('logLevel')?.type).toContain('"info"');
  });

  it('is generated from the exported schema', () => {
    expect(Object.keys(AgentConfigSchema.shape).sort()).toEqual([...new Set(docs.map((d) => d.path.split('.')[0]))].sort());
  });
});
