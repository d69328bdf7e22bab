// The Debian packages end to end on this host (root): build both with installers/deb/build.ts,
// lintian (no error, no warning), dpkg -i, run the installed binaries, systemd-analyze verify the
// installed units, the maintainer scripts' systemd calls (with a shim: systemd is not PID 1
// here), upgrade (config and credentials kept), remove (state kept), purge (state, config and
// user gone) and nothing stray left. Uses dist/sepal-{agent,hub} and systemd/*.service when they
// exist, stand-ins otherwise.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDeb, PROFILES, type BuiltDeb, type DebPackageName } from '../../installers/deb/build.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const PKGS: DebPackageName[] = ['sepal-agent', 'sepal-hub'];
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;

function has(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`]).status === 0;
}

const isRoot = process.getuid?.() === 0;
const missing = ['dpkg-deb', 'dpkg', 'lintian', 'systemd-analyze', 'adduser', 'deb-systemd-helper'].filter((c) => !has(c));
const skipReason = !isRoot ? 'not root (dpkg -i needs root)' : missing.length > 0 ? `missing ${missing.join(', ')} (apt-get install lintian)` : '';
if (skipReason) process.stderr.write(`deb.test.ts skipped: ${skipReason}\n`);

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): { status: number; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env, timeout: 300_000, stdio: ['ignore', 'pipe', 'pipe'] });
  return { status: r.status ?? -1, out: `${r.stdout}${r.stderr}` };
}

function ok(cmd: string, args: string[], env?: NodeJS.ProcessEnv): string {
  const r = run(cmd, args, env);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.out}`);
  return r.out;
}

/** A stand-in executable answering --version and --help like the real CLIs. */
function standIn(dir: string, name: string): string {
  const f = path.join(dir, `${name}-stand-in`);
  fs.writeFileSync(f, `#!/bin/sh\ncase "$1" in\n  --version) echo ${VERSION} ;;\n  --help) echo "${name} ${VERSION} (stand-in)"; echo "Usage: ${name} COMMAND" ;;\n  *) exit 2 ;;\nesac\n`, { mode: 0o755 });
  return f;
}

function placeholderUnit(dir: string, name: DebPackageName): string {
  const p = PROFILES[name];
  const cond = name === 'sepal-agent' ? `${p.stateDir}/identity/node.json` : `${p.stateDir}/hub.json`;
  const f = path.join(dir, `${name}.service`);
  fs.writeFileSync(f, `[Unit]\nDescription=${name} (placeholder)\nConditionPathExists=${cond}\n\n[Service]\nUser=${p.user}\nExecStart=/usr/bin/${name} run\nRestart=on-failure\n\n[Install]\nWantedBy=multi-user.target\n`);
  return f;
}

function inputs(dir: string, name: DebPackageName): { binary: string; unit: string; real: boolean } {
  const dist = path.join(REPO, 'dist', name);
  const realBinary = fs.existsSync(dist) && run(dist, ['--version']).status === 0;
  const unitFile = path.join(REPO, 'systemd', `${name}.service`);
  return {
    binary: realBinary ? dist : standIn(dir, name),
    unit: fs.existsSync(unitFile) ? unitFile : placeholderUnit(dir, name),
    real: realBinary,
  };
}

// Paths that the packages could leave behind; compared before install and after purge.
const SNAPSHOT_ROOTS = ['/etc', '/usr/bin', '/usr/share/doc', '/usr/share/man/man8', '/usr/share/lintian', '/lib/systemd', '/var/lib'];
const SNAPSHOT_SKIP = ['/var/lib/dpkg', '/var/lib/apt', '/var/lib/postgresql', '/etc/netns', '/var/lib/docker'];

function snapshot(): Set<string> {
  const out = new Set<string>();
  const walk = (dir: string): void => {
    if (SNAPSHOT_SKIP.includes(dir)) return;
    let entries: fs.Dirent[];
    try {
      entries = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      const p = path.join(dir, e.name);
      out.add(p);
      if (e.isDirectory()) walk(p);
    }
  };
  for (const r of SNAPSHOT_ROOTS) walk(r);
  for (const db of ['passwd', 'group', 'shadow', 'gshadow']) {
    for (const line of run('getent', [db]).out.split('\n')) if (line) out.add(`${db}:${line.split(':')[0]}`);
  }
  return out;
}

function purgeIfInstalled(): void {
  for (const p of PKGS) if (run('dpkg-query', ['-W', p]).status === 0) run('dpkg', ['-P', p]);
}

function mode(p: string): { mode: number; user: string } {
  const st = fs.statSync(p);
  return { mode: st.mode & 0o7777, user: run('id', ['-nu', String(st.uid)]).out.trim() };
}

describe.skipIf(skipReason !== '')('Debian packages (dpkg-deb, lintian, dpkg -i/-r/-P)', () => {
  let dir: string;
  const debs = new Map<DebPackageName, BuiltDeb>();
  let before: Set<string>;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-deb-'));
    purgeIfInstalled();
    for (const name of PKGS) {
      const i = inputs(dir, name);
      process.stderr.write(`deb.test.ts: ${name} from ${i.real ? i.binary : 'a stand-in script'}, unit ${i.unit}\n`);
      debs.set(name, buildDeb({ package: name, binary: i.binary, unit: i.unit, version: VERSION, outDir: path.join(dir, 'out') }));
    }
    before = snapshot();
  }, 600_000);

  afterAll(() => {
    purgeIfInstalled();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('has the expected contents and control data', () => {
    for (const name of PKGS) {
      const deb = debs.get(name)!;
      expect(path.basename(deb.path)).toBe(`${name}_${VERSION}-1_amd64.deb`);
      const contents = ok('dpkg-deb', ['-c', deb.path]);
      for (const f of [`./usr/bin/${name}`, `./lib/systemd/system/${name}.service`, `.${PROFILES[name].configPath}`,
        `./usr/share/doc/${name}/copyright`, `./usr/share/doc/${name}/changelog.Debian.gz`, `./usr/share/man/man8/${name}.8.gz`]) {
        expect(contents).toContain(f);
      }
      expect(contents).toMatch(new RegExp(`-rwxr-xr-x root/root .* \\./usr/bin/${name}\\n`));
      expect(ok('dpkg-deb', ['-f', deb.path, 'Depends'])).toMatch(/^adduser/);
      expect(ok('dpkg-deb', ['-I', deb.path, 'conffiles']).trim()).toBe(PROFILES[name].configPath);
    }
    expect(ok('dpkg-deb', ['-f', debs.get('sepal-agent')!.path, 'Recommends']).trim()).toBe('openvpn');
  });

  it('lintian reports no error and no warning', () => {
    // (--show-overrides would make the overridden tags count for --fail-on: the overrides are
    // listed by the build instead.)
    const r = run('lintian', ['--fail-on', 'error,warning', '--display-info', ...PKGS.map((n) => debs.get(n)!.path)]);
    process.stderr.write(`lintian overrides:\n${PKGS.flatMap((n) => debs.get(n)!.overrides.map((o) => `  ${n}: ${o.tag} (${o.reason})`)).join('\n')}\n`);
    process.stderr.write(`lintian (exit ${r.status}):\n${r.out}`);
    expect(r.out).not.toMatch(/^[EW]: /m);
    expect(r.status).toBe(0);
  }, 300_000);

  it('installs, runs, verifies the units, upgrades keeping config and credentials, removes, purges and leaves nothing', () => {
    const agent = PROFILES['sepal-agent'];
    ok('dpkg', ['-i', ...PKGS.map((n) => debs.get(n)!.path)]);

    for (const name of PKGS) {
      const p = PROFILES[name];
      expect(ok(`/usr/bin/${name}`, ['--version']).trim()).toBe(VERSION);
      expect(ok('getent', ['passwd', p.user])).toContain(`:${p.stateDir}:/usr/sbin/nologin`);
      expect(mode(p.stateDir)).toEqual({ mode: 0o700, user: p.user });
      expect(fs.existsSync(p.configPath)).toBe(true);
      // Enabled (the [Install] section's symlinks), inactive until enrolled / initialised.
      expect(fs.readlinkSync(`/etc/systemd/system/multi-user.target.wants/${name}.service`)).toBe(`/lib/systemd/system/${name}.service`);
      const verify = run('systemd-analyze', ['verify', `/lib/systemd/system/${name}.service`]);
      expect(verify.out).toBe('');
      expect(verify.status).toBe(0);
      // The man page is the --help text (bold drawn by overstriking: dropped).
      const page = run('man', ['-l', '-Tutf8', `/usr/share/man/man8/${name}.8.gz`]).out.replace(/.\x08/g, '');
      expect(page).toContain('Usage:');
      expect(page).toContain(`${name} ${VERSION}`);
    }
    expect(fs.readFileSync(agent.configPath, 'utf8')).toBe('{}\n');

    // The systemd calls the maintainer scripts make when systemd runs, through a shim.
    const shim = path.join(dir, 'shim');
    const log = path.join(dir, 'shim.log');
    const fakeRun = path.join(dir, 'run-systemd-system');
    fs.mkdirSync(fakeRun, { recursive: true });
    fs.mkdirSync(shim, { recursive: true });
    for (const c of ['deb-systemd-invoke', 'systemctl', 'deb-systemd-helper']) {
      fs.writeFileSync(path.join(shim, c), `#!/bin/sh\necho "${c} $*" >> ${log}\n`, { mode: 0o755 });
    }
    const scripts = path.join(dir, 'scripts');
    ok('dpkg-deb', ['-e', debs.get('sepal-agent')!.path, scripts]);
    const env = { ...process.env, PATH: `${shim}:${process.env['PATH'] ?? ''}` };
    const runScript = (script: string, ...args: string[]): string => {
      fs.writeFileSync(log, '');
      const text = fs.readFileSync(path.join(scripts, script), 'utf8').replaceAll('/run/systemd/system', fakeRun);
      fs.writeFileSync(path.join(dir, `${script}.sh`), text);
      ok('sh', [path.join(dir, `${script}.sh`), ...args], env);
      return fs.readFileSync(log, 'utf8');
    };
    expect(runScript('postinst', 'configure', '')).toContain('deb-systemd-invoke start sepal-agent.service');
    expect(runScript('postinst', 'configure', `${VERSION}-1`)).toContain('deb-systemd-invoke restart sepal-agent.service');
    expect(runScript('prerm', 'remove')).toContain('deb-systemd-invoke stop sepal-agent.service');
    expect(runScript('prerm', 'upgrade', `${VERSION}-2`)).not.toContain('stop');

    // Upgrade: an admin's config and the enrolled identity survive.
    fs.writeFileSync(agent.configPath, '{ "logLevel": "debug" }\n');
    const idDir = path.join(agent.stateDir, 'identity');
    fs.mkdirSync(idDir, { mode: 0o700 });
    fs.writeFileSync(path.join(idDir, 'tls.key'), 'FAKE KEY\n', { mode: 0o600 });
    ok('chown', ['-R', `${agent.user}:${agent.user}`, idDir]);
    const i = inputs(dir, 'sepal-agent');
    const next = buildDeb({ package: 'sepal-agent', binary: i.binary, unit: i.unit, version: `${VERSION}-2`, outDir: path.join(dir, 'next'), compression: 'gzip' });
    ok('dpkg', ['-i', next.path]);
    expect(ok('dpkg-query', ['-W', '-f', '${Version}', 'sepal-agent'])).toBe(`${VERSION}-2`);
    expect(fs.readFileSync(agent.configPath, 'utf8')).toBe('{ "logLevel": "debug" }\n');
    expect(fs.readFileSync(path.join(idDir, 'tls.key'), 'utf8')).toBe('FAKE KEY\n');
    expect(mode(path.join(idDir, 'tls.key'))).toEqual({ mode: 0o600, user: agent.user });
    expect(mode(agent.stateDir)).toEqual({ mode: 0o700, user: agent.user });

    // Remove: binary and unit gone, config and state kept.
    ok('dpkg', ['-r', ...PKGS]);
    for (const name of PKGS) {
      const p = PROFILES[name];
      expect(fs.existsSync(`/usr/bin/${name}`)).toBe(false);
      expect(fs.existsSync(`/lib/systemd/system/${name}.service`)).toBe(false);
      expect(fs.existsSync(p.configPath)).toBe(true);
      expect(fs.existsSync(p.stateDir)).toBe(true);
      expect(ok('dpkg-query', ['-W', '-f', '${db:Status-Abbrev}', name]).trim()).toBe('rc');
    }
    expect(fs.readFileSync(path.join(idDir, 'tls.key'), 'utf8')).toBe('FAKE KEY\n');

    // Purge: state, config, user and group, systemd helper state: all gone.
    ok('dpkg', ['-P', ...PKGS]);
    for (const name of PKGS) {
      const p = PROFILES[name];
      expect(fs.existsSync(p.stateDir)).toBe(false);
      expect(fs.existsSync(p.configPath)).toBe(false);
      expect(run('getent', ['passwd', p.user]).status).not.toBe(0);
      expect(run('getent', ['group', p.user]).status).not.toBe(0);
      expect(run('dpkg-query', ['-W', name]).status).not.toBe(0);
    }
    const after = snapshot();
    const added = [...after].filter((p) => !before.has(p));
    const removed = [...before].filter((p) => !after.has(p));
    // Other test files may run at the same time: anything of ours is named sepal.
    expect(added.filter((p) => /sepal/i.test(p))).toEqual([]);
    expect(removed.filter((p) => /sepal/i.test(p))).toEqual([]);
    expect(added.filter((p) => /^\/(etc\/systemd|lib\/systemd|var\/lib\/systemd|usr\/share\/(doc|man|lintian)|usr\/bin|etc\/default)/.test(p))).toEqual([]);
  }, 600_000);
});

// Kept so a skipped run still shows why in the report.
it.runIf(skipReason !== '')('Debian packages: skipped', () => {
  expect(skipReason).not.toBe('');
});

// Exercised without root: the version rule.
describe('debianVersion', () => {
  it('adds a Debian revision to a bare upstream version', async () => {
    const { debianVersion } = await import('../../installers/deb/build.ts');
    expect(debianVersion('0.1.0')).toBe('0.1.0-1');
    expect(debianVersion('v0.2.0')).toBe('0.2.0-1');
    expect(debianVersion('0.1.0-3')).toBe('0.1.0-3');
    expect(() => debianVersion('not a version')).toThrow();
  });
});
