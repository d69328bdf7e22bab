// The agent's configuration file (JSON, default /etc/sepal/agent.json), validated once at start into
// a deeply frozen object. Every key is optional; unknown keys, wrong types and contradictions stop
// start-up with CONFIG_INVALID naming the option path. The schema is also the documentation:
// describeConfig() lists every option with its type, default and doc for docs/agent.md.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { z } from 'zod';
import { AgentError, ErrorCodes } from './errors.ts';
import { defaultStateDir } from './enroll/store.ts';
import { isLoopbackIp, parseHostPort } from './metrics/address.ts';

/** Linux: /etc/sepal/agent.json; Windows: %ProgramData%\Sepal\Agent\agent.json. */
export function defaultConfigFile(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env): string {
  if (platform === 'win32') return path.win32.join(env['ProgramData'] ?? 'C:\\ProgramData', 'Sepal', 'Agent', 'agent.json');
  return '/etc/sepal/agent.json';
}

/** Linux: /run/sepal-agent (tmpfs, systemd RuntimeDirectory=); Windows: %ProgramData%\Sepal\Agent\run. */
export function defaultRuntimeDir(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env): string {
  if (platform === 'win32') return path.win32.join(env['ProgramData'] ?? 'C:\\ProgramData', 'Sepal', 'Agent', 'run');
  return '/run/sepal-agent';
}

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * 9478: clear of node_exporter (9100), NVIDIA DCGM exporter (9400), OpenTelemetry's Prometheus
 * exporter (9464), the NVIDIA GPU exporters (9445, 9454), Prometheus/Pushgateway/Alertmanager
 * (9090-9094), Kafka (9092) and Flower's own ports (SuperLink ServerAppIo/Fleet/Control
 * 9091-9093, SuperNode ClientAppIo 9094 and the 9095 a second SuperNode takes, SimulationIo 9096 in
 * some versions). Prometheus' exporter port list is full from 9100 to 9999; 9478 is listed there
 * for a Redis Sentinel exporter, which has no business on a federated-learning data host.
 */
export const DEFAULT_METRICS_PORT = 9478;
export const DEFAULT_METRICS_LISTEN = `127.0.0.1:${DEFAULT_METRICS_PORT}`;

const hostPort = z.string().refine((s) => parseHostPort(s) !== null, 'expected HOST:PORT (IPv6 in brackets), port 0-65535');

const absolutePath = z.string().max(4096)
  .refine((s) => !s.includes('\0'), 'must not contain NUL')
  .refine((s) => path.isAbsolute(s), 'expected an absolute path');

// An executable, not a command line: argv is built by the agent and never goes through a shell.
const executable = z.string().min(1).max(4096)
  .refine((s) => !s.includes('\0'), 'must not contain NUL')
  .refine((s) => s.trim() === s, 'must not start or end with whitespace');

const ms = (min: number, max: number) => z.number().int().min(min).max(max);

/** A leaf option: schema, default and the doc line that docs/agent.md shows. */
function option<T extends z.ZodType>(schema: T, def: z.output<T> | (() => z.output<T>), doc: string, typeLabel?: string) {
  return schema.default(def as never).meta(typeLabel === undefined ? { description: doc } : { description: doc, typeLabel });
}

const MetricsSchema = z.strictObject({
  listen: option(hostPort, DEFAULT_METRICS_LISTEN,
    'Address of /metrics, /healthz and /readyz. Loopback only unless allowNonLoopback; overridden by --metrics-addr.', 'HOST:PORT'),
  enabled: option(z.boolean(), true, 'Serve the metrics and health endpoints at all.'),
  allowNonLoopback: option(z.boolean(), false,
    'Permit a listen address that is not loopback (the endpoints have no authentication: put a firewall in front).'),
}).superRefine((m, ctx) => {
  const hp = parseHostPort(m.listen);
  // Names are resolved (and checked) when listening; a literal address is refused here already.
  if (hp !== null && !m.allowNonLoopback && net.isIP(hp.host) !== 0 && !isLoopbackIp(hp.host)) {
    ctx.addIssue({ code: 'custom', path: ['listen'], message: `${hp.host} is not a loopback address; set metrics.allowNonLoopback to listen there` });
  }
});

const HubSchema = z.strictObject({
  statusIntervalSeconds: option(z.number().int().min(5).max(3600), 60,
    'How often ReportStatus is sent when nothing changed (it is also sent on every change).'),
  reconnectBaseMs: option(ms(100, 60_000), 1000,
    'First delay before reconnecting the manifest stream; doubles per failure, full jitter.'),
  reconnectCapMs: option(ms(1000, 3_600_000), 60_000,
    'Longest delay between reconnect attempts (spreads a fleet when the hub comes back).'),
  rpcDeadlineMs: option(ms(100, 120_000), 10_000, 'Deadline of each unary RPC to the hub (Renew, ReportStatus).'),
}).superRefine((h, ctx) => {
  if (h.reconnectBaseMs > h.reconnectCapMs) {
    ctx.addIssue({ code: 'custom', path: ['reconnectBaseMs'], message: `${h.reconnectBaseMs} is greater than hub.reconnectCapMs (${h.reconnectCapMs})` });
  }
});

const RenewalSchema = z.strictObject({
  backoffBaseMs: option(ms(100, 600_000), 1000, 'First retry delay after a failed renewal; doubles per failure, full jitter.'),
  backoffCapMs: option(ms(1000, 86_400_000), 300_000, 'Longest delay between renewal retries.'),
}).superRefine((r, ctx) => {
  if (r.backoffBaseMs > r.backoffCapMs) {
    ctx.addIssue({ code: 'custom', path: ['backoffBaseMs'], message: `${r.backoffBaseMs} is greater than renewal.backoffCapMs (${r.backoffCapMs})` });
  }
});

export const AgentConfigSchema = z.strictObject({
  stateDir: option(absolutePath, () => defaultStateDir(),
    'Keys, certificates, the last good manifest, the Flower key and the VPN profile (Windows: %ProgramData%\\Sepal\\Agent). Overridden by --state-dir.', 'path'),
  runtimeDir: option(absolutePath, () => defaultRuntimeDir(),
    'Sockets and other files that do not outlive the process (Windows: %ProgramData%\\Sepal\\Agent\\run).', 'path'),
  logLevel: option(z.enum(LOG_LEVELS), 'info', 'Lowest level written to the log (JSON lines on stdout).'),
  metrics: MetricsSchema.prefault({}).meta({ description: 'The loopback metrics and health listener.' }),
  hub: HubSchema.prefault({}).meta({ description: 'Talking to the hub.' }),
  renewal: RenewalSchema.prefault({}).meta({ description: 'Certificate renewal retries (renewal itself is at about 2/3 of the lifetime).' }),
  supernode: z.strictObject({
    command: option(executable, 'flower-supernode', 'The Flower SuperNode executable: a name looked up on PATH or an absolute path.', 'executable'),
    stopGraceMs: option(ms(100, 300_000), 10_000, 'On stop: SIGTERM to the SuperNode\'s process group, SIGKILL after this long.'),
    uncleanExitHoldoffMs: option(ms(0, 3_600_000).nullable(), null,
      'Least wait before restarting after a crash; null: the Flower version\'s own (65 s for 1.23: the SuperLink refuses the key for up to ~60 s after an unclean exit).', 'integer 0..3600000 | null'),
  }).prefault({}).meta({ description: 'The Flower SuperNode child process.' }),
  openvpn: z.strictObject({
    command: option(executable, 'openvpn', 'The OpenVPN 2.6 executable: a name looked up on PATH or an absolute path.', 'executable'),
    stopGraceMs: option(ms(100, 300_000), 5000, 'On stop: SIGTERM to OpenVPN\'s process group, SIGKILL after this long.'),
    connectWaitMs: option(ms(0, 600_000), 30_000,
      'How long starting the VPN waits for the tunnel before the SuperNode is started anyway (OpenVPN keeps trying); 0: no wait.'),
  }).prefault({}).meta({ description: 'The OpenVPN client child process.' }),
});

export type AgentConfig = z.output<typeof AgentConfigSchema>;

/** Command-line options that win over the file. */
export interface AgentConfigOverrides {
  /** --state-dir DIR (relative to the working directory). */
  readonly stateDir?: string | undefined;
  /** --metrics-addr HOST:PORT */
  readonly metricsAddr?: string | undefined;
}

export interface ConfigIssue {
  readonly path: string;
  readonly message: string;
}

/** Every option at its default, frozen. */
export function defaultAgentConfig(): Readonly<AgentConfig> {
  return parseAgentConfig({}, '(defaults)');
}

/** Validates an already-parsed JSON value; `source` names it in messages (the file, usually). */
export function parseAgentConfig(input: unknown, source: string, overrides: AgentConfigOverrides = {}): Readonly<AgentConfig> {
  const r = AgentConfigSchema.safeParse(input);
  if (!r.success) throw configError(source, toIssues(r.error.issues));
  const c = r.data;
  if (overrides.stateDir !== undefined) c.stateDir = checkOverride('--state-dir', 'stateDir', overrides.stateDir === '' ? '' : path.resolve(overrides.stateDir), absolutePath);
  if (overrides.metricsAddr !== undefined) {
    c.metrics = checkOverride('--metrics-addr', 'metrics.listen', { ...c.metrics, listen: overrides.metricsAddr }, MetricsSchema);
  }
  return deepFreeze(c);
}

/** Reads and validates the config. Without `file`, the default path, and a missing default file
 *  means all defaults; a file named explicitly must exist. `opts.defaultFile` stands in for the
 *  default path (tests). */
export function loadAgentConfig(file?: string, overrides: AgentConfigOverrides = {}, opts: { defaultFile?: string } = {}): Readonly<AgentConfig> {
  const explicit = file !== undefined;
  const where = file ?? opts.defaultFile ?? defaultConfigFile();
  let text: string;
  try {
    text = fs.readFileSync(where, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (!explicit && code === 'ENOENT') return parseAgentConfig({}, `${where} (absent: defaults)`, overrides);
    throw new AgentError(ErrorCodes.CONFIG_INVALID, `${where}: cannot read: ${code ?? (e as Error).message}`, { cause: e, detail: { file: where, path: '' } });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new AgentError(ErrorCodes.CONFIG_INVALID, `${where}: not valid JSON: ${(e as Error).message}`, { cause: e, detail: { file: where, path: '' } });
  }
  return parseAgentConfig(json, where, overrides);
}

export interface ConfigOptionDoc {
  /** Dotted option path, e.g. `metrics.listen`. */
  readonly path: string;
  /** What the value is: `integer 100..60000`, `boolean`, `"info" | "debug" | ...`, `HOST:PORT`. */
  readonly type: string;
  readonly default: unknown;
  readonly doc: string;
}

/** Every leaf option, in schema order, from the schema itself (docs/agent.md is checked against it).
 *  Platform-dependent defaults (stateDir, runtimeDir) are those of the running platform. */
export function describeConfig(): ConfigOptionDoc[] {
  const root = z.toJSONSchema(AgentConfigSchema, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const out: ConfigOptionDoc[] = [];
  const walk = (node: JsonSchema, prefix: string): void => {
    for (const [key, child] of Object.entries(node.properties ?? {})) {
      const p = prefix === '' ? key : `${prefix}.${key}`;
      if (child.type === 'object' && child.properties !== undefined) {
        walk(child, p);
        continue;
      }
      out.push({ path: p, type: typeLabel(child), default: child.default, doc: child.description ?? '' });
    }
  };
  walk(root, '');
  return out;
}

interface JsonSchema {
  type?: string;
  properties?: Record<string, JsonSchema>;
  default?: unknown;
  description?: string;
  typeLabel?: string;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
}

function typeLabel(s: JsonSchema): string {
  if (s.typeLabel !== undefined) return s.typeLabel;
  if (s.enum !== undefined) return s.enum.map((v) => JSON.stringify(v)).join(' | ');
  if (s.type === 'integer' && s.minimum !== undefined && s.maximum !== undefined) return `integer ${s.minimum}..${s.maximum}`;
  return s.type ?? 'unknown';
}

function toIssues(issues: readonly z.core.$ZodIssue[]): ConfigIssue[] {
  // An unknown key is reported at the key itself (`metrics.extra`), not at the object holding it.
  return issues.flatMap((i) => (i.code === 'unrecognized_keys'
    ? i.keys.map((k) => ({ path: [...i.path, k].map(String).join('.'), message: 'unknown option' }))
    : [{ path: i.path.map(String).join('.'), message: i.message }]));
}

function configError(source: string, issues: readonly ConfigIssue[]): AgentError {
  const text = issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ');
  return new AgentError(ErrorCodes.CONFIG_INVALID, `${source}: ${text}`, {
    detail: { path: issues[0]?.path ?? '', issues },
  });
}

function checkOverride<T extends z.ZodType>(flag: string, optionPath: string, value: unknown, schema: T): z.output<T> {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const prefix = optionPath.includes('.') ? optionPath.slice(0, optionPath.lastIndexOf('.')) : '';
  const issues = toIssues(r.error.issues).map((i) => ({ path: i.path === '' ? optionPath : prefix === '' ? i.path : `${prefix}.${i.path}`, message: i.message }));
  throw configError(flag, issues);
}

function deepFreeze<T>(o: T): T {
  if (o !== null && typeof o === 'object' && !Object.isFrozen(o)) {
    Object.freeze(o);
    for (const v of Object.values(o)) deepFreeze(v);
  }
  return o;
}
