// Builds the sepal-agent and sepal-hub Debian packages with dpkg-deb (no debhelper, no source
// package: the input is the single executable, the systemd unit and a default config). The
// maintainer scripts are the snippets debhelper generates for a systemd unit (deb-systemd-helper /
// deb-systemd-invoke, which do nothing harmful when systemd is not PID 1), plus the system user
// and the 0700 state dir. docs/install.md (## Debian packages) describes the result.
//
//   node installers/deb/build.ts --package sepal-agent --binary dist/sepal-agent \
//     --unit systemd/sepal-agent.service [--config FILE] [--version 0.1.0-1] [--arch amd64] [--out dist]
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import zlib from 'node:zlib';

export type DebPackageName = 'sepal-agent' | 'sepal-hub';

/** What differs between the two packages. */
export interface DebProfile {
  readonly name: DebPackageName;
  readonly section: string;
  readonly summary: string;
  readonly description: string;
  readonly recommends: readonly string[];
  readonly suggests: readonly string[];
  /** The system user (and group) postinst creates; its home is the state dir. */
  readonly user: string;
  /** Created 0700 and owned by the user in postinst, removed on purge. */
  readonly stateDir: string;
  /** Where the default config is installed (a conffile). */
  readonly configPath: string;
  /** The config's content when the caller gives no file. */
  readonly defaultConfig: string;
  /** A paragraph for the man page's FILES/NOTES: what happens after installation. */
  readonly afterInstall: string;
}

export const PROFILES: Readonly<Record<DebPackageName, DebProfile>> = Object.freeze({
  'sepal-agent': {
    name: 'sepal-agent',
    section: 'net',
    summary: 'Sepal agent: enrolls a host into a Flower federation',
    description: [
      'The node side of a Sepal federation: it enrolls this host with a Sepal hub',
      '(pinned root CA fingerprint, enrollment token or device login), keeps its',
      'certificate renewed, follows signed manifests and runs the OpenVPN client',
      'and the Flower SuperNode under supervision.',
      '.',
      'The service is enabled on installation but stays inactive until the host',
      'is enrolled (sepal-agent enroll). Flower itself (flower-supernode) is',
      'installed by the administrator, e.g. with pip.',
    ].join('\n'),
    recommends: ['openvpn'],
    suggests: [],
    user: 'sepal-agent',
    stateDir: '/var/lib/sepal-agent',
    configPath: '/etc/sepal/agent.json',
    // Every option has a default in the binary (docs/agent.md); an empty object keeps upgrades
    // picking up new defaults instead of freezing today's in a conffile.
    defaultConfig: '{}\n',
    afterInstall: 'The service sepal-agent.service is enabled on installation and starts once the host is enrolled: run sepal-agent enroll --hub URL --ca-sha256 HEX [--token TOKEN] as root, then systemctl start sepal-agent.',
  },
  'sepal-hub': {
    name: 'sepal-hub',
    section: 'net',
    summary: 'Sepal hub: certificate authority and manifest signer for Flower',
    description: [
      'The control plane of a Sepal federation: the certificate authority that',
      'enrolls and renews node identities, the manifest signer and the agent API,',
      'next to a Flower SuperLink.',
      '.',
      'The service is enabled on installation but stays inactive until the data',
      'dir is initialised (sepal-hub init --data-dir /var/lib/sepal-hub ...).',
    ].join('\n'),
    recommends: [],
    suggests: ['openvpn'],
    user: 'sepal-hub',
    stateDir: '/var/lib/sepal-hub',
    configPath: '/etc/default/sepal-hub',
    defaultConfig: [
      '# Options for sepal-hub.service (read by the unit as an EnvironmentFile).',
      '# The hub configuration itself is hub.json in the data dir, written by',
      '# sepal-hub init; see /usr/share/doc/sepal-hub and docs/hub.md.',
      '#SEPAL_HUB_OPTS="--log-level info"',
      '',
    ].join('\n'),
    afterInstall: 'The service sepal-hub.service is enabled on installation and starts once the data dir is initialised: run sepal-hub init --data-dir /var/lib/sepal-hub --hostname NAME as the sepal-hub user (runuser -u sepal-hub -- sepal-hub init ...), then systemctl start sepal-hub.',
  },
});

export interface BuildDebOptions {
  readonly package: DebPackageName;
  /** The executable installed as /usr/bin/<package> (the single executable, or a stand-in). */
  readonly binary: string;
  /** Upstream version, or upstream-revision; a bare upstream version gets "-1". */
  readonly version: string;
  /** Debian architecture (amd64 for the linux-x64 single executable). */
  readonly arch?: string;
  /** The systemd unit installed as /lib/systemd/system/<package>.service. */
  readonly unit: string;
  /** The default config file (a conffile); PROFILES[package].defaultConfig when absent. */
  readonly config?: string;
  /** Directory the .deb is written to (created). */
  readonly outDir: string;
  readonly maintainer?: string;
  /** dpkg-deb compressor: xz (default, smallest) or gzip (faster, for tests). */
  readonly compression?: 'xz' | 'gzip' | 'zstd' | 'none';
  /** Release notes for the changelog entry. */
  readonly changes?: readonly string[];
  /** Changelog date (RFC 2822); defaults to SOURCE_DATE_EPOCH or now. */
  readonly date?: Date;
}

export interface BuiltDeb {
  readonly path: string;
  readonly package: DebPackageName;
  readonly version: string;
  readonly arch: string;
  /** Every path the package installs (dirs end with /), for checks. */
  readonly files: readonly string[];
  /** Lintian overrides shipped (tag and reason). */
  readonly overrides: readonly { tag: string; reason: string }[];
}

const DEFAULT_MAINTAINER = 'Sepal maintainers <maintainers@sepal.example>';

/** Debian version from an upstream version: "0.1.0" -> "0.1.0-1"; "0.1.0-2" kept. */
export function debianVersion(version: string): string {
  const v = version.replace(/^v/, '');
  if (!/^[0-9][A-Za-z0-9.+~]*(-[A-Za-z0-9.+~]+)?$/.test(v)) throw new Error(`not a Debian version: ${JSON.stringify(version)}`);
  return v.includes('-') ? v : `${v}-1`;
}

function isElf(file: string): boolean {
  const fd = fs.openSync(file, 'r');
  try {
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 0);
    return b.equals(Buffer.from([0x7f, 0x45, 0x4c, 0x46]));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Lintian overrides, each with the reason lintian shows next to it. The ELF ones only for an ELF
 * binary (a stand-in script needs none, and an unused override is itself reported).
 */
export function lintianOverrides(name: string, elf: boolean): { tag: string; reason: string }[] {
  return [
    {
      tag: `initial-upload-closes-no-bugs [usr/share/doc/${name}/changelog.Debian.gz:1]`,
      reason: 'built by the project for its own releases, not uploaded to the Debian archive: there is no ITP bug to close',
    },
    ...(elf ? [
      {
        tag: `unstripped-binary-or-object [usr/bin/${name}]`,
        reason: 'a Node.js single executable: the application is a blob injected into the node binary (postject); strip removes it and the program no longer starts',
      },
      {
        tag: `embedded-library zlib [usr/bin/${name}]`,
        reason: 'a Node.js single executable is the official Node.js binary, which links its own zlib statically (deps/zlib); it cannot be relinked against the system library without rebuilding Node.js',
      },
      {
        tag: `embedded-library mbedtls [usr/bin/${name}]`,
        reason: 'matched on error strings inside the official Node.js binary (statically linked third-party code); not separable from the runtime a single executable is built from',
      },
      {
        tag: `hardening-no-pie [usr/bin/${name}]`,
        reason: 'the official Node.js linux-x64 binary the single executable is made from is linked non-PIE upstream; it cannot be changed without rebuilding Node.js',
      },
    ] : []),
  ];
}

function manPage(p: DebProfile, version: string, help: string, date: Date): string {
  const esc = (s: string): string => s.replace(/\\/g, '\\e').replace(/^([.'])/gm, '\\&$1').replace(/-/g, '\\-');
  const d = date.toISOString().slice(0, 10);
  return [
    `.TH ${p.name.toUpperCase()} 8 "${d}" "${p.name} ${version}" "System Administration"`,
    '.SH NAME',
    `${p.name} \\- ${esc(p.summary.replace(/^Sepal (agent|hub): /, ''))}`,
    '.SH SYNOPSIS',
    `.B ${p.name}`,
    '.I COMMAND',
    '[\\fIOPTIONS\\fR]',
    '.SH DESCRIPTION',
    'The output of',
    `.B ${p.name} \\-\\-help`,
    'follows.',
    '.PP',
    '.nf',
    esc(help.trimEnd()),
    '.fi',
    '.SH FILES',
    '.TP',
    `.I ${p.configPath}`,
    'Default configuration (a conffile: kept on upgrade, removed on purge).',
    '.TP',
    `.I ${p.stateDir}`,
    `State directory (0700, owned by ${p.user}): kept on upgrade and removal, deleted on purge.`,
    '.SH NOTES',
    esc(p.afterInstall),
    '.SH SEE ALSO',
    '.BR systemctl (1),',
    '.BR journalctl (1)',
    '',
  ].join('\n');
}

function copyright(p: DebProfile, year: number): string {
  return `Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sepal
Comment: ${p.name} is a Node.js single executable: the Node.js runtime with the
 application and its npm dependencies bundled into it.

Files: *
Copyright: ${year} The Sepal authors
License: Apache-2.0

Files: usr/bin/${p.name}
Copyright: ${year} The Sepal authors
 Node.js contributors and the authors of the libraries Node.js bundles
 (V8, libuv, OpenSSL, ICU, zlib, llhttp and others)
 The authors of the bundled npm packages (fastify, @grpc/grpc-js, jose,
 openid-client, pino, prom-client, qrcode, systeminformation, zod and their
 dependencies)
License: Apache-2.0 and MIT and others
 The application is Apache-2.0. Node.js is MIT licensed; the licenses of
 the libraries it bundles are listed in its LICENSE file
 (https://github.com/nodejs/node/blob/main/LICENSE). The bundled npm
 packages are MIT, ISC, BSD-2-Clause, BSD-3-Clause or Apache-2.0 licensed.

License: Apache-2.0
 On Debian systems the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
`;
}

function changelog(p: DebProfile, version: string, changes: readonly string[], maintainer: string, date: Date): string {
  const items = changes.map((c) => `  * ${c}`).join('\n');
  return `${p.name} (${version}) unstable; urgency=medium\n\n${items}\n\n -- ${maintainer}  ${rfc2822(date)}\n`;
}

function rfc2822(d: Date): string {
  const days = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'];
  const months = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];
  const two = (n: number): string => String(n).padStart(2, '0');
  return `${days[d.getUTCDay()]}, ${two(d.getUTCDate())} ${months[d.getUTCMonth()]} ${d.getUTCFullYear()} ${two(d.getUTCHours())}:${two(d.getUTCMinutes())}:${two(d.getUTCSeconds())} +0000`;
}

// The systemd parts are what debhelper 13 (dh_installsystemd, restart after upgrade) generates.
function postinst(p: DebProfile): string {
  const unit = `${p.name}.service`;
  return `#!/bin/sh
set -e

if [ "$1" = "configure" ]; then
	# The system user the service runs as; its home is the state dir (not created by adduser).
	if ! getent passwd ${p.user} >/dev/null; then
		adduser --system --group --quiet --home ${p.stateDir} --no-create-home \\
			--shell /usr/sbin/nologin --gecos "Sepal ${p.name.slice(6)}" ${p.user}
	fi
	# State: keys and certificates. 0700 on every configure (an admin's chmod is undone);
	# its content is never touched here, so upgrades keep the credentials.
	if [ ! -d ${p.stateDir} ]; then
		mkdir -m 0700 ${p.stateDir}
	fi
	chown ${p.user}:${p.user} ${p.stateDir}
	chmod 0700 ${p.stateDir}
fi

# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	# This will only remove masks created by d-s-h on package removal.
	deb-systemd-helper unmask '${unit}' >/dev/null || true

	# was-enabled defaults to true, so new installations run enable.
	if deb-systemd-helper --quiet was-enabled '${unit}'; then
		# Enables the unit on first installation, creates new
		# symlinks on upgrades if the unit file has changed.
		deb-systemd-helper enable '${unit}' >/dev/null || true
	else
		# Update the statefile to add new symlinks (if any), which need to be
		# cleaned up on purge. Also remove old symlinks.
		deb-systemd-helper update-state '${unit}' >/dev/null || true
	fi
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "configure" ] || [ "$1" = "abort-upgrade" ] || [ "$1" = "abort-deconfigure" ] || [ "$1" = "abort-remove" ] ; then
	if [ -d /run/systemd/system ]; then
		systemctl --system daemon-reload >/dev/null || true
		if [ -n "$2" ]; then
			_dh_action=restart
		else
			_dh_action=start
		fi
		# Not enrolled / not initialised yet: the unit's condition keeps it inactive.
		deb-systemd-invoke $_dh_action '${unit}' >/dev/null || true
	fi
fi
# End automatically added section
`;
}

function prerm(p: DebProfile): string {
  return `#!/bin/sh
set -e

# Automatically added by dh_installsystemd/13.11.4
if [ -d /run/systemd/system ] && [ "$1" = remove ]; then
	deb-systemd-invoke stop '${p.name}.service' >/dev/null || true
fi
# End automatically added section
`;
}

function postrm(p: DebProfile): string {
  const unit = `${p.name}.service`;
  return `#!/bin/sh
set -e

# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = remove ] && [ -d /run/systemd/system ] ; then
	systemctl --system daemon-reload >/dev/null || true
fi
# End automatically added section
# Automatically added by dh_installsystemd/13.11.4
if [ "$1" = "remove" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper mask '${unit}' >/dev/null || true
	fi
fi

if [ "$1" = "purge" ]; then
	if [ -x "/usr/bin/deb-systemd-helper" ]; then
		deb-systemd-helper purge '${unit}' >/dev/null || true
		deb-systemd-helper unmask '${unit}' >/dev/null || true
	fi
fi
# End automatically added section

if [ "$1" = "purge" ]; then
	# Keys, certificates and everything else the service kept: purge means gone.
	rm -rf ${p.stateDir}
	rmdir --ignore-fail-on-non-empty /etc/sepal 2>/dev/null || true
	# The user owned nothing outside the state dir: remove it too, so nothing is left.
	if getent passwd ${p.user} >/dev/null && command -v deluser >/dev/null; then
		deluser --system --quiet ${p.user} >/dev/null 2>&1 || true
	fi
	if getent group ${p.user} >/dev/null && command -v delgroup >/dev/null; then
		delgroup --system --quiet --only-if-empty ${p.user} >/dev/null 2>&1 || true
	fi
fi
`;
}

function write(file: string, content: string | Buffer, mode: number): void {
  fs.mkdirSync(path.dirname(file), { recursive: true, mode: 0o755 });
  fs.writeFileSync(file, content, { mode });
  fs.chmodSync(file, mode);
}

function gzipN(content: string): Buffer {
  // gzip -9n: no name, no timestamp (reproducible; lintian checks both).
  return zlib.gzipSync(Buffer.from(content), { level: 9 });
}

function listTree(root: string): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string): void => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => a.name.localeCompare(b.name))) {
      if (rel === '' && e.name === 'DEBIAN') continue;
      const r = `${rel}/${e.name}`;
      if (e.isDirectory()) {
        out.push(`${r}/`);
        walk(path.join(dir, e.name), r);
      } else out.push(r);
    }
  };
  walk(root, '');
  return out;
}

function shlibDepends(binary: string, work: string): string[] {
  // dpkg-shlibdeps wants a debian/control; a minimal one in a scratch dir is enough.
  const d = fs.mkdtempSync(path.join(work, 'shlibs-'));
  write(path.join(d, 'debian', 'control'), 'Source: sepal\n\nPackage: sepal\nArchitecture: any\n', 0o644);
  const out = execFileSync('dpkg-shlibdeps', ['-O', '-e', binary], { cwd: d, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  const m = /^shlibs:Depends=(.*)$/m.exec(out);
  return m?.[1] ? m[1].split(',').map((s) => s.trim()).filter(Boolean) : [];
}

/** Builds one package; returns the .deb's path and what it holds. */
export function buildDeb(opts: BuildDebOptions): BuiltDeb {
  const p = PROFILES[opts.package];
  if (!p) throw new Error(`unknown package ${opts.package}`);
  const version = debianVersion(opts.version);
  const arch = opts.arch ?? 'amd64';
  const maintainer = opts.maintainer ?? DEFAULT_MAINTAINER;
  const epoch = process.env['SOURCE_DATE_EPOCH'];
  const date = opts.date ?? (epoch ? new Date(Number(epoch) * 1000) : new Date());
  for (const f of [opts.binary, opts.unit, ...(opts.config ? [opts.config] : [])]) {
    if (!fs.statSync(f).isFile()) throw new Error(`${f} is not a file`);
  }

  const work = fs.mkdtempSync(path.join(os.tmpdir(), `deb-${p.name}-`));
  try {
    const root = path.join(work, 'root');
    const R = (rel: string): string => path.join(root, rel);
    fs.mkdirSync(root, { mode: 0o755 });
    fs.chmodSync(root, 0o755);

    write(R(`usr/bin/${p.name}`), fs.readFileSync(opts.binary), 0o755);
    write(R(`lib/systemd/system/${p.name}.service`), fs.readFileSync(opts.unit), 0o644);
    write(R(p.configPath.slice(1)), opts.config ? fs.readFileSync(opts.config) : p.defaultConfig, 0o644);

    const elf = isElf(opts.binary);
    const help = execFileSync(opts.binary, ['--help'], { encoding: 'utf8', timeout: 60_000 });
    write(R(`usr/share/man/man8/${p.name}.8.gz`), gzipN(manPage(p, version, help, date)), 0o644);
    const doc = `usr/share/doc/${p.name}`;
    write(R(`${doc}/copyright`), copyright(p, date.getUTCFullYear()), 0o644);
    const changes = opts.changes ?? [`Package ${p.name} ${version.replace(/-[^-]*$/, '')}.`];
    write(R(`${doc}/changelog.Debian.gz`), gzipN(changelog(p, version, changes, maintainer, date)), 0o644);
    const overrides = lintianOverrides(p.name, elf);
    if (overrides.length > 0) {
      write(R(`usr/share/lintian/overrides/${p.name}`), overrides.map((o) => `# ${o.reason}\n${p.name}: ${o.tag}\n`).join(''), 0o644);
    }

    const files = listTree(root);
    // Directories 0755 whatever the umask.
    for (const f of files) if (f.endsWith('/')) fs.chmodSync(R(f), 0o755);

    const depends = ['adduser', ...(elf ? shlibDepends(R(`usr/bin/${p.name}`), work) : [])];
    let installedKb = 0;
    for (const f of files) installedKb += f.endsWith('/') ? 1 : Math.ceil(fs.statSync(R(f)).size / 1024);
    const control = [
      `Package: ${p.name}`,
      `Version: ${version}`,
      `Architecture: ${arch}`,
      `Maintainer: ${maintainer}`,
      `Installed-Size: ${installedKb}`,
      `Depends: ${depends.join(', ')}`,
      ...(p.recommends.length > 0 ? [`Recommends: ${p.recommends.join(', ')}`] : []),
      ...(p.suggests.length > 0 ? [`Suggests: ${p.suggests.join(', ')}`] : []),
      `Section: ${p.section}`,
      'Priority: optional',
      `Description: ${p.summary}`,
      ...p.description.split('\n').map((l) => ` ${l}`),
      '',
    ].join('\n');
    const D = (rel: string): string => path.join(root, 'DEBIAN', rel);
    write(D('control'), control, 0o644);
    write(D('conffiles'), `${p.configPath}\n`, 0o644);
    write(D('postinst'), postinst(p), 0o755);
    write(D('prerm'), prerm(p), 0o755);
    write(D('postrm'), postrm(p), 0o755);
    const md5 = files.filter((f) => !f.endsWith('/') && `/${f.slice(1)}` !== p.configPath)
      .map((f) => `${crypto.createHash('md5').update(fs.readFileSync(R(f))).digest('hex')}  ${f.slice(1)}`);
    write(D('md5sums'), `${md5.join('\n')}\n`, 0o644);
    fs.chmodSync(path.join(root, 'DEBIAN'), 0o755);

    fs.mkdirSync(opts.outDir, { recursive: true });
    const out = path.join(path.resolve(opts.outDir), `${p.name}_${version}_${arch}.deb`);
    const comp = opts.compression ?? 'xz';
    execFileSync('dpkg-deb', ['--root-owner-group', `-Z${comp}`, '--build', root, out], { stdio: ['ignore', 'pipe', 'pipe'] });
    return { path: out, package: p.name, version, arch, files, overrides };
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const { values } = parseArgs({
    options: {
      package: { type: 'string' }, binary: { type: 'string' }, unit: { type: 'string' }, config: { type: 'string' },
      version: { type: 'string' }, arch: { type: 'string' }, out: { type: 'string' }, compression: { type: 'string' },
    },
  });
  if (!values.package || !values.binary || !values.unit) {
    process.stderr.write('usage: node installers/deb/build.ts --package sepal-agent|sepal-hub --binary FILE --unit FILE [--config FILE] [--version V] [--arch amd64] [--out DIR]\n');
    process.exit(2);
  }
  const pkg = JSON.parse(fs.readFileSync(path.join(import.meta.dirname, '..', '..', 'package.json'), 'utf8')) as { version: string };
  const r = buildDeb({
    package: values.package as DebPackageName,
    binary: values.binary,
    unit: values.unit,
    version: values.version ?? pkg.version,
    outDir: values.out ?? 'dist',
    ...(values.config ? { config: values.config } : {}),
    ...(values.arch ? { arch: values.arch } : {}),
    ...(values.compression ? { compression: values.compression as 'xz' } : {}),
  });
  process.stdout.write(`${r.path}\n`);
}
