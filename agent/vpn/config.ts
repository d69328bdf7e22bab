// The OpenVPN 2.6 client configuration the agent writes from a manifest's `vpn` section, and where
// its files live. Invariants: every value reaches OpenVPN inside this file (never a shell, never
// argv beyond `--config FILE`); each directive is one line and every value is checked to be one
// token (or quoted) even though the manifest schema has already validated it; the routes are the
// manifest's (`route-nopull`: the server decides nothing about this host's routing table); no
// scripts can run (`script-security 1`).
//
// Server identity: `ca` is the federation's own CA (the identity's roots plus the issuing CA),
// `remote-cert-tls server` requires the serverAuth key usage (node certificates never have it), and
// `verify-x509-name <first remote's host> name` requires the server certificate's CN to be that
// name: `sepal-hub vpn server-config` makes the CN the first host name clients dial. Without the
// pin, any other serverAuth certificate of the federation's CA (the hub's own) would pass. OpenVPN
// 2.6 matches the CN only (not SANs), so every remote must present the certificate with that CN,
// i.e. the remotes are addresses of the one server; a mismatch shows as VPN_SERVER_UNTRUSTED.
import net from 'node:net';
import path from 'node:path';
import type { VpnConfig } from '../reconcile/steps.ts';

/** The files of the VPN child. `dir` (0700) is under the state dir; the socket under runtimeDir. */
export interface VpnPaths {
  readonly dir: string;
  readonly config: string;
  /** The federation's CA certificates the server certificate must chain to. */
  readonly ca: string;
  /** The node certificate and its intermediates (OpenVPN sends the extra certificates along). */
  readonly cert: string;
  readonly key: string;
  readonly tlsCrypt: string;
  /** The tlsCryptKeyRef the tls-crypt file was fetched for (not secret). */
  readonly tlsCryptRef: string;
  readonly managementSocket: string;
}

/** The longest path a unix socket may have on Linux (sun_path is 108 bytes, NUL included). */
export const MAX_SOCKET_PATH_BYTES = 107;

export function vpnPaths(stateDir: string, runtimeDir: string): VpnPaths {
  const dir = path.join(stateDir, 'vpn');
  return Object.freeze({
    dir,
    config: path.join(dir, 'client.conf'),
    ca: path.join(dir, 'ca.pem'),
    cert: path.join(dir, 'client.crt'),
    key: path.join(dir, 'client.key'),
    tlsCrypt: path.join(dir, 'tls-crypt.key'),
    tlsCryptRef: path.join(dir, 'tls-crypt.ref'),
    managementSocket: path.join(runtimeDir, 'openvpn.sock'),
  });
}

export interface RenderOptions {
  readonly vpn: VpnConfig;
  readonly paths: VpnPaths;
  /** OpenVPN's log verbosity; 3 shows TLS and AUTH failures without any key material. */
  readonly verb?: number;
}

// One token without quoting: what a host name, an address or a number can be.
const BARE = /^[A-Za-z0-9._:\-[\]/]+$/;

function bare(v: string, what: string): string {
  if (!BARE.test(v)) throw new TypeError(`vpn config: ${what} ${JSON.stringify(v)} is not a single token`);
  return v;
}

/** A path as an OpenVPN quoted string: backslash and double quote escaped, no line breaks. */
function quoted(p: string): string {
  if (/[\u0000-\u001f\u007f]/.test(p)) throw new TypeError(`vpn config: path ${JSON.stringify(p)} contains a control character`);
  return `"${p.replace(/[\\"]/g, (c) => `\\${c}`)}"`;
}

function ipv4Mask(prefix: number): string {
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  return [24, 16, 8, 0].map((s) => (bits >>> s) & 0xff).join('.');
}

function ipv4Network(ip: string, prefix: number): string {
  const n = ip.split('.').reduce((acc, o) => ((acc << 8) | Number(o)) >>> 0, 0);
  const bits = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
  const net4 = (n & bits) >>> 0;
  return [24, 16, 8, 0].map((s) => (net4 >>> s) & 0xff).join('.');
}

/** `route` (IPv4: network and netmask, host bits cleared) or `route-ipv6` for one CIDR. */
export function routeDirective(cidr: string): string {
  const slash = cidr.lastIndexOf('/');
  const ip = cidr.slice(0, slash);
  const prefix = Number(cidr.slice(slash + 1));
  if (slash < 0 || !Number.isInteger(prefix)) throw new TypeError(`vpn config: route ${JSON.stringify(cidr)} is not a CIDR`);
  if (net.isIPv4(ip) && prefix >= 0 && prefix <= 32) return `route ${ipv4Network(ip, prefix)} ${ipv4Mask(prefix)}`;
  if (net.isIPv6(ip) && prefix >= 0 && prefix <= 128) return `route-ipv6 ${bare(ip, 'route')}/${prefix}`;
  throw new TypeError(`vpn config: route ${JSON.stringify(cidr)} is not a CIDR`);
}

/** The client configuration, one directive per line. */
export function renderClientConfig(o: RenderOptions): string {
  const { vpn, paths } = o;
  const verb = o.verb ?? 3;
  if (!Number.isInteger(verb) || verb < 0 || verb > 11) throw new TypeError(`vpn config: verb must be an integer 0..11, got ${verb}`);
  if (vpn.remotes.length < 1) throw new TypeError('vpn config: at least one remote is required');
  const lines = [
    '# Written by sepal-agent from the signed manifest; rewritten on every change. Do not edit.',
    'client',
    'dev tun',
    'nobind',
    // Remotes are tried in the manifest's order (no remote-random): the first is the primary.
    ...vpn.remotes.map((r) => {
      if (!Number.isInteger(r.port) || r.port < 1 || r.port > 65535) throw new TypeError(`vpn config: port ${r.port} out of range`);
      if (r.proto !== 'udp' && r.proto !== 'tcp') throw new TypeError(`vpn config: proto ${String(r.proto)}`);
      return `remote ${bare(r.host, 'remote host')} ${r.port} ${r.proto === 'tcp' ? 'tcp-client' : 'udp'}`;
    }),
    'resolv-retry infinite',
    // 1 s, doubling, at most 30 s between attempts to the remotes.
    'connect-retry 1 30',
    `ca ${quoted(paths.ca)}`,
    `cert ${quoted(paths.cert)}`,
    `key ${quoted(paths.key)}`,
    `tls-crypt ${quoted(paths.tlsCrypt)}`,
    'remote-cert-tls server',
    `verify-x509-name ${bare(vpn.remotes[0]?.host ?? '', 'server name')} name`,
    'tls-version-min 1.2 or-highest',
    'data-ciphers AES-256-GCM:CHACHA20-POLY1305',
    'auth-nocache',
    // NOT persist-key: on SIGUSR1 OpenVPN re-reads cert and key, which is how a rotated
    // certificate is taken into use without restarting the process.
    'persist-tun',
    // The manifest decides the routes; pushed routes (and redirect-gateway, DNS options) are ignored.
    'route-nopull',
    ...vpn.routes.map(routeDirective),
    `management ${quoted(paths.managementSocket)} unix`,
    'script-security 1',
    'suppress-timestamps',
    `verb ${verb}`,
  ];
  return lines.join('\n') + '\n';
}
