// The agent as integration tests drive it: its real CLI in a child process, a node enrolled with
// an enrollment token, `sepal-agent run` with a config file, and a stand-in flower-supernode for
// tests whose subject is not Flower (real Flower runs in test/e2e/flower.test.ts).
import fs from 'node:fs';
import path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { REPO, cli, type TestHub } from './hub.ts';

export const AGENT_CLI = path.join(REPO, 'agent/cli/main.ts');

/** Runs `sepal-agent ARGS` to completion. */
export function runAgentCli(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [AGENT_CLI, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (s: string) => { stdout += s; });
  child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s; });
  return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
}

/**
 * Writes `<binDir>/flower-supernode`: it answers --version as Flower 1.23's flwr does, writes its
 * argv one per line to `<binDir>/argv.txt` and stays up until signalled.
 */
export function writeStandInSupernode(binDir: string): string {
  fs.mkdirSync(binDir, { recursive: true });
  const file = path.join(binDir, 'flower-supernode');
  fs.writeFileSync(file, '#!/bin/sh\nif [ "$1" = "--version" ]; then echo "Flower version: 1.23.0"; exit 0; fi\nprintf "%s\\n" "$@" > "$(dirname "$0")/argv.txt"\nexec sleep 3600\n', { mode: 0o755 });
  return file;
}

/** `sepal-agent enroll --token` into `stateDir` with a fresh token for `org`; throws on failure. */
export async function enrollWithToken(hub: TestHub, org: string, stateDir: string, name: string): Promise<void> {
  const tok = await cli(['token', 'create', '--data-dir', hub.paths.dataDir, '--org', org, '--json']);
  if (tok.code !== 0) throw new Error(`token create: ${tok.stderr}`);
  const token = (JSON.parse(tok.stdout) as { token: string }).token;
  const r = await runAgentCli(['enroll', '--hub', hub.httpsUrl, '--ca-sha256', hub.init.rootFingerprint, '--token', token, '--state-dir', stateDir, '--name', name]);
  if (r.code !== 0) throw new Error(`enroll exited ${String(r.code)}: ${r.stderr}`);
}

export interface RunningAgent {
  readonly child: ChildProcess;
  /** stdout and stderr (the JSON log lines), as received. */
  logs(): string;
  /** SIGTERM, then SIGKILL after graceMs; resolves with the exit code (null when killed). */
  stop(graceMs?: number): Promise<number | null>;
}

/** `sepal-agent run` with `config` written to `configFile`, its metrics on 127.0.0.1:metricsPort. */
export function startAgent(opts: { configFile: string; config: Record<string, unknown>; stateDir: string; metricsPort: number }): RunningAgent {
  fs.writeFileSync(opts.configFile, JSON.stringify(opts.config));
  const child = spawn(process.execPath, [AGENT_CLI, 'run', '--config', opts.configFile, '--state-dir', opts.stateDir, '--metrics-addr', `127.0.0.1:${opts.metricsPort}`],
    { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const keep = (s: string) => { out = (out + s).slice(-2_000_000); };
  child.stdout.setEncoding('utf8').on('data', keep);
  child.stderr.setEncoding('utf8').on('data', keep);
  return {
    child,
    logs: () => out,
    stop: async (graceMs = 5000) => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), graceMs);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}
