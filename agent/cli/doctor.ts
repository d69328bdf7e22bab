// sepal-agent doctor: preflight checks, each pass or fail with a fix hint; exit 1 if one fails.
import crypto from 'node:crypto';
import fs from 'node:fs';
import https from 'node:https';
import { execFile } from 'node:child_process';
import { loadAgentConfig } from '../config.ts';
import { loadIdentity, type CurrentIdentity } from '../credentials/identity.ts';
import { detectHost } from '../detect/index.ts';
import { readNodeRecord, statePaths, type StatePaths } from '../enroll/store.ts';
import { runOptions } from './run.ts';
import { SUPPORTED_DIALECTS, detectFlower } from '../flower/supernode.ts';
import { isAgentError } from '../errors.ts';

interface Check {
  readonly name: string;
  readonly ok: boolean;
  /** 'warn' checks are reported but do not fail the run (an optional tool missing). */
  readonly severity: 'fail' | 'warn';
  readonly detail: string;
  readonly fix?: string;
}

const CLOCK_SKEW_MS = 60_000;

function version(cmd: string): Promise<string | null> {
  return new Promise((resolve) => {
    execFile(cmd, ['--version'], { timeout: 5000 }, (err, stdout, stderr) => {
      if (err !== null && (err as NodeJS.ErrnoException).code === 'ENOENT') resolve(null);
      else resolve(`${stdout}${stderr}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown version');
    });
  });
}

function hubDate(url: string, caPem: string): Promise<{ status: number; date: number | null }> {
  return new Promise((resolve, reject) => {
    const req = https.get(`${url.replace(/\/$/, '')}/healthz`, { ca: caPem, timeout: 5000, minVersion: 'TLSv1.3' }, (res) => {
      res.resume();
      const d = res.headers.date;
      resolve({ status: res.statusCode ?? 0, date: d === undefined ? null : Date.parse(d) });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
  });
}

function modeOk(file: string, max: number): boolean {
  const st = fs.statSync(file, { throwIfNoEntry: false });
  return process.platform === 'win32' || (st !== undefined && (st.mode & 0o777 & ~max) === 0);
}

/** ca.pem against the root pinned at enrollment. Without it but with other roots is the normal
 *  state after a root rotation: renewals only install roots the trusted ones vouched for. */
export function caPinCheck(id: CurrentIdentity): Check {
  const fingerprints = id.roots.map((r) => crypto.createHash('sha256').update(r.raw).digest('hex'));
  const fix = 'enroll again (--force) with the fingerprint from the hub operator';
  const current = fingerprints[0];
  if (current === undefined) return { name: 'CA pin', ok: false, severity: 'fail', detail: 'ca.pem holds no root', fix };
  const detail = fingerprints.includes(id.node.caSha256)
    ? `root ${id.node.caSha256.slice(0, 16)}… is in ca.pem`
    : `the federation root was rotated since enrollment: ca.pem holds root ${current.slice(0, 16)}…, pinned was ${id.node.caSha256.slice(0, 16)}…`;
  return { name: 'CA pin', ok: true, severity: 'fail', detail, fix };
}

async function checks(paths: StatePaths, supernode: string, openvpn: string): Promise<Check[]> {
  const out: Check[] = [];
  const node = readNodeRecord(paths.nodeJson);
  if (node === null) {
    out.push({ name: 'enrolled', ok: false, severity: 'fail', detail: `no identity in ${paths.root}`, fix: 'run sepal-agent enroll --hub URL --ca-sha256 FINGERPRINT' });
    return out;
  }
  out.push({ name: 'enrolled', ok: true, severity: 'fail', detail: `node ${node.nodeId} in ${node.org}` });
  out.push({
    name: 'state dir permissions', severity: 'fail',
    ok: modeOk(paths.root, 0o700) && modeOk(`${paths.identity}/tls.key`, 0o600) && modeOk(`${paths.identity}/flower.key`, 0o600),
    detail: `${paths.root} 0700, keys 0600`, fix: `chmod 700 ${paths.root} && chmod 600 ${paths.identity}/*.key`,
  });
  let caPem = '';
  try {
    const id = loadIdentity(paths);
    caPem = id.caPem;
    out.push(caPinCheck(id));
    const left = id.notAfter - Date.now();
    out.push({
      name: 'certificate', ok: left > 0, severity: 'fail',
      detail: left > 0 ? `valid until ${new Date(id.notAfter).toISOString()}, matches tls.key` : `expired ${new Date(id.notAfter).toISOString()}`,
      fix: 'start the agent (it renews while the certificate is valid); an expired certificate needs sepal-agent enroll --force',
    });
  } catch (e) {
    out.push({ name: 'certificate', ok: false, severity: 'fail', detail: (e as Error).message, fix: 'enroll again: sepal-agent enroll --force' });
  }
  try {
    const r = await hubDate(node.hubUrl, caPem);
    out.push({ name: 'hub reachable', ok: r.status === 200, severity: 'fail', detail: `${node.hubUrl} answered ${r.status}`, fix: 'check the network path and firewall to the hub (HTTPS and gRPC ports)' });
    if (r.date !== null) {
      const skew = Math.abs(Date.now() - r.date);
      out.push({ name: 'clock', ok: skew <= CLOCK_SKEW_MS, severity: 'fail', detail: `${Math.round(skew / 1000)} s from the hub's clock`, fix: 'enable time synchronisation (systemd-timesyncd, chrony)' });
    }
  } catch (e) {
    out.push({ name: 'hub reachable', ok: false, severity: 'fail', detail: `${node.hubUrl}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, fix: 'check DNS, routes and firewall to the hub; the hub must be running' });
  }
  // The agent runs the SuperNode: a missing or unsupported Flower is a failure.
  try {
    const f = await detectFlower(supernode);
    out.push({ name: 'flower-supernode', ok: true, severity: 'fail', detail: `${f.binary}: Flower ${f.version} (supported: ${SUPPORTED_DIALECTS.map((d) => d.versions).join(', ')})`, fix: '' });
  } catch (e) {
    out.push({
      name: 'flower-supernode', ok: false, severity: 'fail', detail: `${isAgentError(e) ? e.code : 'ERROR'}: ${(e as Error).message}`,
      fix: `pip install flwr==${SUPPORTED_DIALECTS[0]?.versions.replace('.x', '.0') ?? ''} in a venv and set supernode.command to its bin/flower-supernode`,
    });
  }
  const v = await version(openvpn);
  out.push({ name: 'openvpn', ok: v !== null, severity: 'warn', detail: v ?? `${openvpn} not found`, fix: 'apt install openvpn' });
  const facts = await detectHost().catch(() => null);
  out.push({ name: 'GPU', ok: (facts?.gpus.length ?? 0) > 0, severity: 'warn', detail: facts === null ? 'detection failed' : `${facts.gpus.length} GPU(s)${facts.gpus[0] === undefined ? '' : `: ${facts.gpus[0].model}`}`, fix: 'install the NVIDIA driver (nvidia-smi) or ROCm (rocm-smi) if this host has GPUs' });
  return out;
}

export async function cmdDoctor(argv: string[], out: { write(s: string): unknown }): Promise<number> {
  const o = runOptions(argv);
  const config = loadAgentConfig(o.config, { stateDir: o.stateDir });
  const results = await checks(statePaths(config.stateDir), config.supernode.command, config.openvpn.command);
  let failed = false;
  for (const c of results) {
    const mark = c.ok ? 'ok  ' : c.severity === 'warn' ? 'warn' : 'FAIL';
    if (!c.ok && c.severity === 'fail') failed = true;
    out.write(`${mark}  ${c.name}: ${c.detail}\n`);
    if (!c.ok && c.fix !== undefined) out.write(`      fix: ${c.fix}\n`);
  }
  return failed ? 1 : 0;
}
