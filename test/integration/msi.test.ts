// sepal-agent.msi, built on Linux with wixl: the tables checked with msiinfo and the files with
// msiextract. It cannot be installed here (no Windows): docs/install.md lists what is verified.
// Uses dist/sepal-agent.exe when it exists, a stand-in file otherwise.
import { spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildMsi, fetchWinSW, msiVersion, SERVICE_NAME, UPGRADE_CODE, winswConfig, WINSW_SHA256, type BuiltMsi } from '../../installers/msi/build.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const VERSION = (JSON.parse(fs.readFileSync(path.join(REPO, 'package.json'), 'utf8')) as { version: string }).version;
const missing = ['wixl', 'msiinfo', 'msiextract', 'npm'].filter((c) => spawnSync('sh', ['-c', `command -v ${c}`]).status !== 0);
const skipReason = missing.length > 0 ? `missing ${missing.join(', ')} (apt-get install wixl msitools)` : '';
if (skipReason) process.stderr.write(`msi.test.ts skipped: ${skipReason}\n`);

function ok(cmd: string, args: string[], cwd?: string): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', cwd, stdio: ['ignore', 'pipe', 'pipe'], timeout: 300_000 });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited ${r.status}:\n${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Rows of an exported table as objects keyed by column name. */
function table(msi: string, name: string): Record<string, string>[] {
  const lines = ok('msiinfo', ['export', msi, name]).replace(/\r/g, '').split('\n').filter((l) => l !== '');
  const cols = (lines[0] ?? '').split('\t');
  return lines.slice(3).map((l) => Object.fromEntries(l.split('\t').map((v, i) => [cols[i] ?? String(i), v])));
}

const sha256 = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');

describe.skipIf(skipReason !== '')('sepal-agent.msi (wixl, msiinfo)', () => {
  let dir: string;
  let binary: string;
  let msi: BuiltMsi;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-msi-'));
    const dist = path.join(REPO, 'dist', 'sepal-agent.exe');
    if (fs.existsSync(dist)) binary = dist;
    else {
      binary = path.join(dir, 'sepal-agent.exe');
      fs.writeFileSync(binary, 'MZ stand-in for the win-x64 single executable\n');
    }
    process.stderr.write(`msi.test.ts: sepal-agent.exe from ${binary}\n`);
    // WinSW from the npm registry, cached across runs.
    const winsw = fetchWinSW(path.join(REPO, 'node_modules', '.cache', 'sepal-winsw'));
    msi = buildMsi({ binary, version: VERSION, outDir: path.join(dir, 'out'), winsw });
  }, 300_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('has the tables of a service install with custom actions', () => {
    expect(path.basename(msi.path)).toBe('sepal-agent.msi');
    const tables = ok('msiinfo', ['tables', msi.path]).split('\n');
    for (const t of ['File', 'Component', 'Directory', 'ServiceInstall', 'ServiceControl', 'CustomAction', 'InstallExecuteSequence', 'Property', 'CreateFolder', 'Upgrade']) {
      expect(tables).toContain(t);
    }
    const sum = ok('msiinfo', ['suminfo', msi.path]);
    expect(sum).toMatch(/Template: x64;1033/);
  });

  it('installs sepal-agent.exe and the wrapper under Program Files, the state dir under ProgramData', () => {
    const files = table(msi.path, 'File');
    const byName = new Map(files.map((f) => [f['FileName'], f]));
    expect([...byName.keys()].sort()).toEqual(['WinSW-LICENSE.txt', 'sepal-agent-service.exe', 'sepal-agent-service.exe.config', 'sepal-agent-service.xml', 'sepal-agent.exe']);
    expect(byName.get('sepal-agent.exe')?.['FileSize']).toBe(String(fs.statSync(binary).size));
    expect(byName.get('sepal-agent-service.exe')?.['FileSize']).toBe('59392');

    const dirs = new Map(table(msi.path, 'Directory').map((d) => [d['Directory'], d]));
    expect(dirs.get('INSTALLDIR')).toMatchObject({ Directory_Parent: 'ProgramFiles64Folder', DefaultDir: 'Sepal' });
    expect(dirs.get('AGENTDATA')).toMatchObject({ Directory_Parent: 'SepalData', DefaultDir: 'Agent' });
    expect(dirs.get('SepalData')).toMatchObject({ Directory_Parent: 'CommonAppDataFolder', DefaultDir: 'Sepal' });

    const comps = new Map(table(msi.path, 'Component').map((c) => [c['Component'], c]));
    expect(comps.get('AgentExe')).toMatchObject({ Directory_: 'INSTALLDIR', KeyPath: 'SepalAgentExe' });
    expect(comps.get('Service')).toMatchObject({ Directory_: 'INSTALLDIR', KeyPath: 'ServiceWrapperExe' });
    // 256: msidbComponentAttributes64bit.
    for (const c of comps.values()) expect(Number(c['Attributes']) & 256).toBe(256);
    expect(table(msi.path, 'CreateFolder')).toContainEqual({ Directory_: 'AGENTDATA', Component_: 'StateDir' });

    // The payload itself: the agent byte for byte, WinSW as pinned, its config.
    const x = path.join(dir, 'extract');
    fs.mkdirSync(x);
    ok('msiextract', ['-C', x, msi.path]);
    const found = ok('find', [x, '-type', 'f']).trim().split('\n');
    const pick = (n: string): string => found.find((f) => path.basename(f) === n) ?? '';
    expect(sha256(pick('sepal-agent.exe'))).toBe(sha256(binary));
    expect(sha256(pick('sepal-agent-service.exe'))).toBe(WINSW_SHA256);
    expect(fs.readFileSync(pick('sepal-agent-service.xml'), 'utf8')).toBe(winswConfig());
    expect(pick('sepal-agent-service.exe')).toMatch(/Sepal[/\\]sepal-agent-service\.exe$/);
  });

  it('registers the service through the wrapper and starts it without failing an unenrolled install', () => {
    const svc = table(msi.path, 'ServiceInstall');
    expect(svc).toHaveLength(1);
    // 16 own process, 2 auto start, 1 normal error control; the image is the Service component's key file (the wrapper).
    expect(svc[0]).toMatchObject({ Name: SERVICE_NAME, ServiceType: '16', StartType: '2', ErrorControl: '1', StartName: 'LocalSystem', Component_: 'Service' });
    const ctl = new Map(table(msi.path, 'ServiceControl').map((c) => [c['ServiceControl'], c]));
    // 162 = stop on install (2) + stop (32) and delete (128) on uninstall, waiting; 1 = start on install, not waiting.
    expect(ctl.get('SepalAgentServiceStop')).toMatchObject({ Name: SERVICE_NAME, Event: '162', Wait: '1', Component_: 'Service' });
    expect(ctl.get('SepalAgentServiceStart')).toMatchObject({ Name: SERVICE_NAME, Event: '1', Wait: '0', Component_: 'Service' });
    const cfg = winswConfig();
    expect(cfg).toContain(`<id>${SERVICE_NAME}</id>`);
    expect(cfg).toContain('<executable>%BASE%\\sepal-agent.exe</executable>');
    expect(cfg).toContain('<arguments>run</arguments>');
    // Bounded retries: an agent that cannot start (not enrolled) does not loop.
    expect(cfg.match(/<onfailure action="restart"/g)).toHaveLength(2);
    expect(cfg).toContain('<onfailure action="none"/>');
  });

  it('enrolls from HUB, CA_SHA256 and TOKEN before the service starts, with the token hidden from the log', () => {
    const ca = new Map(table(msi.path, 'CustomAction').map((c) => [c['Action'], c]));
    // 3090 = 18 (exe from an installed file) + 0x400 deferred + 0x800 no impersonation (LocalSystem).
    expect(ca.get('Enroll')).toMatchObject({ Type: '3090', Source: 'SepalAgentExe',
      Target: 'enroll --hub "[HUB]" --ca-sha256 "[CA_SHA256]" --token "[TOKEN]" --state-dir "[AGENTDATA]."' });
    // 3122 = 50 (exe named by a property) + deferred + no impersonation: icacls on the state dir.
    expect(ca.get('LockStateDir')).toMatchObject({ Type: '3122', Source: 'ICACLS' });
    expect(ca.get('LockStateDir')?.['Target']).toContain('/inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F');

    const seq = new Map(table(msi.path, 'InstallExecuteSequence').map((s) => [s['Action'], s]));
    const at = (a: string): number => Number(seq.get(a)?.['Sequence']);
    expect(seq.get('Enroll')?.['Condition']).toBe('TOKEN AND NOT Installed AND NOT REMOVE');
    expect(at('Enroll')).toBeGreaterThan(at('InstallFiles'));
    expect(at('Enroll')).toBeGreaterThan(at('InstallServices'));
    expect(at('Enroll')).toBeLessThan(at('StartServices'));
    expect(at('LockStateDir')).toBeGreaterThan(at('CreateFolders'));
    expect(at('LockStateDir')).toBeLessThan(at('InstallFiles'));
    // Deferred actions only run inside the script.
    for (const a of ['Enroll', 'LockStateDir']) {
      expect(at(a)).toBeGreaterThan(at('InstallInitialize'));
      expect(at(a)).toBeLessThan(at('InstallFinalize'));
    }
    // Major upgrades remove the old version first (the state dir keeps the identity).
    expect(at('RemoveExistingProducts')).toBeLessThan(at('InstallInitialize'));

    const props = new Map(table(msi.path, 'Property').map((p) => [p['Property'], p['Value']]));
    expect(props.get('MsiHiddenProperties')).toBe('TOKEN');
    expect(props.get('ProductVersion')).toBe(msiVersion(VERSION));
    expect(props.get('UpgradeCode')).toBe(`{${UPGRADE_CODE}}`);
    expect(props.get('ALLUSERS')).toBe('1');
    expect(table(msi.path, 'Upgrade').some((u) => u['UpgradeCode'] === `{${UPGRADE_CODE}}`)).toBe(true);
  });
});

it.runIf(skipReason !== '')('sepal-agent.msi: skipped', () => {
  expect(skipReason).not.toBe('');
});

describe('msiVersion', () => {
  it('keeps major.minor.build within Windows Installer limits', () => {
    expect(msiVersion('0.1.0')).toBe('0.1.0');
    expect(msiVersion('v1.2.3-rc.1')).toBe('1.2.3');
    expect(() => msiVersion('256.0.0')).toThrow();
  });
});
