// The SuperNode adapter: which `flower-supernode` this host has, and the argv, environment and
// files that run it from a manifest. Everything from the manifest reaches Flower as a separate
// argument or inside a file the agent writes (the node config as TOML), never through a shell.
//
// Flags change between Flower releases, so the adapter knows each supported version's dialect
// exactly (checked against `flower-supernode --help` of that version) and refuses any other.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { AgentError, ErrorCodes } from '../errors.ts';
import type { SupernodeConfig } from '../reconcile/steps.ts';
import { isUnclean, type ExitInfo } from '../supervise/policy.ts';

/** The SuperNode's ClientAppIo API when the manifest names none: loopback, Flower's own port. */
export const DEFAULT_CLIENTAPPIO_ADDRESS = '127.0.0.1:9094';

/** A Flower release line whose `flower-supernode` flags the adapter knows. */
export interface FlowerDialect {
  /** Human form for messages and docs ("1.23.x"). */
  readonly versions: string;
  readonly matches: (version: string) => boolean;
  /** Seconds the SuperLink keeps refusing a node's key after an unclean exit (see docs/flower.md). */
  readonly uncleanExitHoldoffSeconds: number;
}

/**
 * Flower 1.23: `--superlink`, `--root-certificates`, `--auth-supernode-private-key` (an OpenSSH
 * EC private key), `--node-config` (a path ending in `.toml` is read as a TOML file),
 * `--clientappio-api-address`, `--max-retries`, `--max-wait-time`, `--isolation`. It has no
 * `--version` (the sibling `flwr --version` tells), and it sends usage telemetry unless
 * FLWR_TELEMETRY_ENABLED=0.
 */
const FLOWER_1_23: FlowerDialect = {
  versions: '1.23.x',
  matches: (v) => /^1\.23\.\d+$/.test(v),
  // A node whose process died without saying goodbye stays "online" on the SuperLink until its
  // deadline (last heartbeat + 2 x 30 s; heartbeats every 17.5-22.5 s) passes; a new connection
  // with the same key is refused until then (measured 43-60.5 s after a SIGKILL). A SIGTERM signs
  // the node off: an immediate restart is accepted.
  uncleanExitHoldoffSeconds: 65,
};

export const SUPPORTED_DIALECTS: readonly FlowerDialect[] = Object.freeze([FLOWER_1_23]);

export function dialectFor(version: string): FlowerDialect {
  const d = SUPPORTED_DIALECTS.find((x) => x.matches(version));
  if (d === undefined) {
    throw new AgentError(ErrorCodes.FLOWER_VERSION_UNSUPPORTED,
      `flower-supernode ${version} is not supported by this agent (supported: ${SUPPORTED_DIALECTS.map((x) => x.versions).join(', ')}); install a supported Flower version`,
      { detail: { version } });
  }
  return d;
}

/** A SuperNode run at least this long had time to be activated by the SuperLink (a refused start
 *  — key not registered yet, or refused inside the window — exits within ~2 s, measured 0.7-1.6 s). */
export const ACTIVATED_AFTER_MS = 5000;

/**
 * The supervisor's holdoff for a SuperNode: after an unclean end of a run that was (probably)
 * activated, the SuperLink still counts the node online and refuses its key until the node's
 * deadline passes, so the next start waits `holdoffMs`. A start that failed at once was never
 * activated and leaves nothing to wait out: it is retried with the ordinary backoff (a node whose
 * key the hub registers a moment later is up seconds later, not a minute).
 */
export function supernodeRestartHoldoff(holdoffMs: number): (exit: ExitInfo) => number {
  return (exit) => (isUnclean(exit.reason) && exit.uptimeMs >= ACTIVATED_AFTER_MS ? holdoffMs : 0);
}

/** Resolves an executable name on PATH (or checks an absolute path); null when not found. */
export function resolveExecutable(command: string, env: NodeJS.ProcessEnv = process.env): string | null {
  const isFile = (p: string) => {
    try {
      const st = fs.statSync(p);
      if (!st.isFile()) return false;
      fs.accessSync(p, fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  };
  if (command.includes('/') || command.includes('\\')) return path.isAbsolute(command) && isFile(command) ? command : null;
  for (const dir of (env['PATH'] ?? '').split(path.delimiter)) {
    if (dir === '') continue;
    const p = path.join(dir, command);
    if (isFile(p)) return p;
  }
  return null;
}

function run(file: string, args: string[], env: NodeJS.ProcessEnv): Promise<{ ok: boolean; out: string }> {
  return new Promise((resolve) => {
    execFile(file, args, { env, timeout: 30_000, maxBuffer: 256 * 1024, windowsHide: true }, (err, stdout, stderr) => {
      resolve({ ok: err === null, out: `${stdout}\n${stderr}` });
    });
  });
}

const VERSION_RE = /(?:^|\s|v)(\d+\.\d+\.\d+)(?:\s|$)/m;

export interface FlowerInstall {
  readonly binary: string;
  readonly version: string;
  readonly dialect: FlowerDialect;
}

/**
 * Finds `flower-supernode` and its version: `flower-supernode --version` where the release has it,
 * else `flwr --version` next to it (the same Python environment installed both). Coded errors:
 * FLOWER_NOT_FOUND, FLOWER_VERSION_UNSUPPORTED.
 */
export async function detectFlower(command: string, env: NodeJS.ProcessEnv = process.env): Promise<FlowerInstall> {
  const binary = resolveExecutable(command, env);
  if (binary === null) {
    throw new AgentError(ErrorCodes.FLOWER_NOT_FOUND, `${command} was not found (config supernode.command; install Flower: pip install flwr==<supported version>)`, { detail: { command } });
  }
  const childEnv = flowerEnv(env, null);
  let version: string | null = null;
  const own = await run(binary, ['--version'], childEnv);
  if (own.ok) version = VERSION_RE.exec(own.out)?.[1] ?? null;
  if (version === null) {
    const flwr = path.join(path.dirname(binary), process.platform === 'win32' ? 'flwr.exe' : 'flwr');
    if (resolveExecutable(flwr, env) !== null) {
      const r = await run(flwr, ['--version'], childEnv);
      if (r.ok) version = VERSION_RE.exec(r.out)?.[1] ?? null;
    }
  }
  if (version === null) {
    throw new AgentError(ErrorCodes.FLOWER_VERSION_UNSUPPORTED, `cannot tell the version of ${binary} (neither it nor flwr beside it answered --version)`, { detail: { binary } });
  }
  return { binary, version, dialect: dialectFor(version) };
}

/** The environment Flower runs with: telemetry off (Flower reports usage to its vendor by
 *  default; a data host must not call out), its app cache under the agent's state. */
export function flowerEnv(base: NodeJS.ProcessEnv, flwrHome: string | null, binary: string | null = null): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...base, FLWR_TELEMETRY_ENABLED: '0', PYTHONUNBUFFERED: '1' };
  if (flwrHome !== null) env['FLWR_HOME'] = flwrHome;
  // The SuperNode starts `flower-superexec` by name: the directory of the flower-supernode in use
  // comes first on PATH, so a venv install finds its own.
  if (binary !== null) env['PATH'] = [path.dirname(binary), ...(base['PATH'] ?? '').split(path.delimiter).filter((d) => d !== '')].join(path.delimiter);
  return env;
}

// ---- the node config file ----

function tomlString(s: string): string {
  let out = '"';
  for (const ch of s) {
    const c = ch.codePointAt(0) ?? 0;
    if (ch === '"') out += '\\"';
    else if (ch === '\\') out += '\\\\';
    else if (c < 0x20 || c === 0x7f) out += `\\u${c.toString(16).padStart(4, '0')}`;
    else out += ch;
  }
  return out + '"';
}

function tomlValue(v: string | number | boolean): string {
  if (typeof v === 'string') return tomlString(v);
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  if (!Number.isFinite(v)) throw new TypeError('node config numbers must be finite');
  // JS prints integers plainly and others as `0.5` or `1.5e-7`/`1e+21`, all valid TOML.
  return String(v);
}

/**
 * The manifest's node config as a TOML document, every key quoted (so `a.b` stays one key, as it
 * does on Flower's command line). Each dataset also appears as `dataset.<name>` = its path unless
 * the node config sets that key itself, so a ClientApp finds the verified data by name.
 */
export function nodeConfigToml(config: Pick<SupernodeConfig, 'supernode' | 'datasets'>): string {
  const entries = new Map<string, string | number | boolean>();
  for (const d of config.datasets) entries.set(`dataset.${d.name}`, d.path);
  for (const [k, v] of Object.entries(config.supernode.nodeConfig)) entries.set(k, v);
  const lines = ['# Written by sepal-agent from the signed manifest; rewritten on every change.'];
  for (const [k, v] of [...entries].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) lines.push(`${tomlString(k)} = ${tomlValue(v)}`);
  return lines.join('\n') + '\n';
}

// ---- argv ----

export interface SupernodeFiles {
  /** The SuperLink's CA bundle from the manifest; null when the manifest has none (system roots). */
  readonly rootCertificates: string | null;
  /** The node's Flower key (OpenSSH EC private key, 0600) made at enrollment. */
  readonly authPrivateKey: string;
  /** nodeConfigToml() written to a file whose name ends in `.toml`. */
  readonly nodeConfig: string;
}

export function supernodeArgv(install: FlowerInstall, config: SupernodeConfig, files: SupernodeFiles): string[] {
  if (!install.dialect.matches(install.version)) throw new TypeError('dialect does not match the version');
  if (!files.nodeConfig.endsWith('.toml')) throw new TypeError('the node config file must end in .toml (Flower reads it as TOML only then)');
  const sn = config.supernode;
  const argv = [install.binary, '--superlink', config.superlink.address];
  if (files.rootCertificates !== null) argv.push('--root-certificates', files.rootCertificates);
  argv.push('--auth-supernode-private-key', files.authPrivateKey);
  argv.push('--node-config', files.nodeConfig);
  argv.push('--clientappio-api-address', sn.clientAppIoAddress ?? DEFAULT_CLIENTAPPIO_ADDRESS);
  if (sn.maxRetries !== undefined) argv.push('--max-retries', String(sn.maxRetries));
  if (sn.maxWaitTimeSeconds !== undefined) argv.push('--max-wait-time', String(sn.maxWaitTimeSeconds));
  if (sn.isolation !== undefined) argv.push('--isolation', sn.isolation);
  return argv;
}
