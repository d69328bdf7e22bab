// The single executables of `npm run package` (issue 7): built (or reused when their inputs are
// unchanged) by the package function itself, then run on a PATH that has no `node`, as on a host
// without Node: --version, --help and doctor of the agent; --version, --help, init, token create
// and serve of the hub; and the agent enrolled against that hub, both executables talking gRPC
// with their inlined .proto. NODE_OPTIONS points at a missing file throughout: the executables
// ignore it (execArgvExtension "none"). The foreign-platform builds are checked by their headers:
// win-x64 a PE32+ with the SEA resource and the fuse flipped, linux-arm64 an aarch64 ELF.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { executablePath, packageAll, type PackagedExecutable } from '../../installers/package.ts';
import { SEA_FUSE } from '../../installers/sea.ts';
import { AGENT_NODE_FLAGS } from '../../installers/bundle.ts';
import { freePorts, REPO, tempDir } from '../helpers/hub.ts';

const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const work = tempDir('sepal-sea-');
const noNodeBin = path.join(work, 'bin');
const home = path.join(work, 'home');
let built: PackagedExecutable[] = [];
const children: ChildProcess[] = [];

/** A PATH with every program of the usual directories except node: this host has /usr/bin/node. */
function pathWithoutNode(): string {
  fs.mkdirSync(noNodeBin, { recursive: true });
  for (const dir of ['/usr/local/sbin', '/usr/local/bin', '/usr/sbin', '/usr/bin', '/sbin', '/bin']) {
    let names: string[] = [];
    try { names = fs.readdirSync(dir); } catch { continue; }
    for (const n of names) {
      if (n === 'node' || n === 'nodejs') continue;
      const link = path.join(noNodeBin, n);
      if (!fs.existsSync(link)) fs.symlinkSync(path.join(dir, n), link);
    }
  }
  return noNodeBin;
}

function env(): NodeJS.ProcessEnv {
  return { PATH: noNodeBin, HOME: home, LANG: 'C.UTF-8', NODE_OPTIONS: `--require=${path.join(work, 'missing.cjs')}` };
}

function run(exe: string, args: readonly string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(exe, args, { env: env(), cwd: home, encoding: 'utf8', timeout: 30_000 });
  if (r.error !== undefined) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

beforeAll(async () => {
  pathWithoutNode();
  fs.mkdirSync(home, { recursive: true });
  // First run on a clean host: fetches the linux-arm64 and win-x64 Node packages (~100 MB).
  built = await packageAll({ log: () => {} });
}, 600_000);

afterAll(async () => {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      const exited = new Promise((resolve) => c.once('exit', resolve));
      c.kill('SIGKILL');
      await exited;
    }
  }
  fs.rmSync(work, { recursive: true, force: true });
});

describe('npm run package', () => {
  it('writes every executable under dist/', () => {
    expect(built.map((b) => path.relative(REPO, b.path)).sort()).toEqual([
      'dist/linux-arm64/sepal-agent', 'dist/linux-arm64/sepal-hub', 'dist/sepal-agent', 'dist/sepal-agent.exe', 'dist/sepal-hub',
    ]);
    for (const b of built) expect(fs.statSync(b.path).size).toBe(b.bytes);
  });

  it('has no node on the PATH the executables run with', () => {
    const r = spawnSync('sh', ['-c', 'command -v node || command -v nodejs'], { env: env(), encoding: 'utf8' });
    expect(r.status).not.toBe(0);
    expect(r.stdout).toBe('');
  });
});

describe('sepal-agent (linux-x64) without Node', () => {
  const agent = executablePath('linux-x64', 'sepal-agent');

  it('--version prints the version and touches no state dir', () => {
    const defaultStateDir = '/var/lib/sepal-agent';
    const existedBefore = fs.existsSync(defaultStateDir);
    const r = run(agent, ['--version']);
    expect(r).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
    expect(fs.existsSync(defaultStateDir)).toBe(existedBefore);
    expect(fs.readdirSync(home)).toEqual([]);
  });

  it('--help prints the usage', () => {
    const r = run(agent, ['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`sepal-agent ${VERSION}`);
    expect(r.stdout).toContain('sepal-agent doctor [--config FILE] [--state-dir DIR]');
  });

  it('doctor runs its checks and exits 1 on an unenrolled host', () => {
    const state = path.join(work, 'agent-unenrolled');
    fs.mkdirSync(state);
    const r = run(agent, ['doctor', '--state-dir', state]);
    expect(r.code).toBe(1);
    expect(r.stdout).toContain(`FAIL  enrolled: no identity in ${state}`);
    expect(r.stdout).toContain('fix: run sepal-agent enroll');
  });

  it('carries the agent Node flags; the hub does not', () => {
    const agentBytes = fs.readFileSync(agent);
    for (const f of AGENT_NODE_FLAGS) expect(agentBytes.includes(f)).toBe(true);
    expect(fs.readFileSync(executablePath('linux-x64', 'sepal-hub')).includes('--max-semi-space-size=1')).toBe(false);
  });
});

describe('sepal-hub (linux-x64) without Node, and the agent enrolling against it', () => {
  const hub = executablePath('linux-x64', 'sepal-hub');
  const agent = executablePath('linux-x64', 'sepal-agent');

  it('--version and --help', () => {
    expect(run(hub, ['--version'])).toEqual({ code: 0, stdout: `${VERSION}\n`, stderr: '' });
    const h = run(hub, ['--help']);
    expect(h.code).toBe(0);
    expect(h.stdout).toContain(`sepal-hub ${VERSION}`);
  });

  it('init, token create, serve; agent enroll, doctor and status', async () => {
    const [grpcPort, httpsPort] = await freePorts(2);
    const dataDir = path.join(work, 'hub');
    const init = run(hub, ['init', '--data-dir', dataDir, '--hostname', 'localhost',
      '--grpc-listen', `127.0.0.1:${grpcPort}`, '--https-listen', `127.0.0.1:${httpsPort}`,
      '--grpc-public-addr', `localhost:${grpcPort}`, '--public-url', `https://localhost:${httpsPort}`]);
    expect(init.code, init.stderr).toBe(0);
    const fingerprint = /^\s+([0-9a-f]{64})$/m.exec(init.stdout)?.[1];
    expect(fingerprint).toBeDefined();
    const tok = run(hub, ['token', 'create', '--data-dir', dataDir, '--org', 'acme', '--json']);
    expect(tok.code, tok.stderr).toBe(0);
    const token = (JSON.parse(tok.stdout) as { token: string }).token;

    const serve = spawn(hub, ['serve', '--data-dir', dataDir], { env: env(), cwd: home, stdio: ['ignore', 'pipe', 'pipe'] });
    children.push(serve);
    await new Promise<void>((resolve, reject) => {
      let out = '';
      const timer = setTimeout(() => reject(new Error(`hub not ready: ${out}`)), 20_000);
      serve.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        if (out.includes('"event":"hub.ready"')) { clearTimeout(timer); resolve(); }
      });
      serve.once('exit', (code) => { clearTimeout(timer); reject(new Error(`hub exited ${code}: ${out}`)); });
    });

    const state = path.join(work, 'agent');
    const enroll = run(agent, ['enroll', '--hub', `https://localhost:${httpsPort}`, '--ca-sha256', fingerprint ?? '', '--token', token, '--state-dir', state, '--json']);
    expect(enroll.code, enroll.stderr).toBe(0);
    const enrolled = JSON.parse(enroll.stdout.trim().split('\n').at(-1) ?? '{}') as { nodeId: string; org: string };
    expect(enrolled.org).toBe('acme');

    // Enrolled, the hub reachable; flower-supernode is not installed here: doctor fails on it.
    const doctor = run(agent, ['doctor', '--state-dir', state]);
    expect(doctor.stdout).toContain(`ok    enrolled: node ${enrolled.nodeId} in acme`);
    expect(doctor.stdout).toMatch(/^ok {4}hub reachable: /m);
    expect(doctor.stdout).toMatch(/^FAIL {2}flower-supernode: /m);
    expect(doctor.code).toBe(1);

    const status = run(agent, ['status', '--state-dir', state, '--json']);
    expect(status.code, status.stderr).toBe(0);
    expect(status.stdout).toContain(enrolled.nodeId);

    const exited = new Promise<number | null>((resolve) => serve.once('exit', resolve));
    serve.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});

describe('foreign-platform executables', () => {
  it('win-x64: a PE32+ console executable with the SEA resource, the fuse set and no stale signature', () => {
    const b = fs.readFileSync(executablePath('win-x64', 'sepal-agent'));
    expect(b.subarray(0, 2).toString('latin1')).toBe('MZ');
    const pe = b.readUInt32LE(0x3c);
    expect(b.subarray(pe, pe + 4).toString('latin1')).toBe('PE\0\0');
    expect(b.readUInt16LE(pe + 4)).toBe(0x8664); // IMAGE_FILE_MACHINE_AMD64
    const opt = pe + 24;
    expect(b.readUInt16LE(opt)).toBe(0x20b); // PE32+
    expect(b.readUInt16LE(opt + 68)).toBe(3); // IMAGE_SUBSYSTEM_WINDOWS_CUI
    expect([b.readUInt32LE(opt + 112 + 32), b.readUInt32LE(opt + 112 + 36)]).toEqual([0, 0]); // no certificate table
    expect(b.includes(Buffer.from('NODE_SEA_BLOB', 'utf16le'))).toBe(true);
    expect(b.includes(`${SEA_FUSE}:1`)).toBe(true);
    expect(b.includes(`${SEA_FUSE}:0`)).toBe(false);
    for (const f of AGENT_NODE_FLAGS) expect(b.includes(f)).toBe(true);
  });

  it('linux-arm64: aarch64 ELF executables with the fuse set', () => {
    for (const program of ['sepal-agent', 'sepal-hub'] as const) {
      const b = fs.readFileSync(executablePath('linux-arm64', program));
      expect(b.subarray(0, 4)).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
      expect(b[4]).toBe(2); // ELFCLASS64
      expect(b[5]).toBe(1); // little-endian
      expect(b.readUInt16LE(18)).toBe(183); // EM_AARCH64
      expect(b.includes('NODE_SEA_BLOB')).toBe(true);
      expect(b.includes(`${SEA_FUSE}:1`)).toBe(true);
      expect((fs.statSync(executablePath('linux-arm64', program)).mode & 0o111) !== 0).toBe(true);
    }
  });
});
