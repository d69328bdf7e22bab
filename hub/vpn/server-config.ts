// The OpenVPN 2.6 server configuration for the cloud side, as text: a pure function of validated
// options. Clients are Sepal agents presenting node certificates (CN n-…, EKU clientAuth) from the
// hub's issuing CA; anything else is refused before a tunnel exists. File names are relative:
// openvpn runs with the output directory as its working directory (--cd, or `cd` in a wrapper).
import { isIPv4 } from 'node:net';
import { isCidr, isHost, isTlsCryptKeyRef } from '../../proto/manifest.ts';

export interface VpnServerOptions {
  /** DNS names / IPs clients dial; the first is the certificate's CN, checked by clients. */
  readonly names: readonly string[];
  readonly port: number;
  readonly proto: 'udp' | 'tcp';
  /** The tunnel network (IPv4 CIDR, /16 .. /29): the server takes .1, clients the rest. */
  readonly network: string;
  /** Networks behind the VPN pushed to clients (IPv4 or IPv6 CIDR). */
  readonly pushRoutes: readonly string[];
  readonly keyRef: string;
  readonly federationId: string;
}

/** Problems with the options, as "--flag: message" lines (empty when they are fine). */
export function checkVpnServerOptions(o: VpnServerOptions): string[] {
  const out: string[] = [];
  if (o.names.length === 0) out.push('--name: at least one name is required');
  for (const n of o.names) if (!isHost(n)) out.push(`--name: ${JSON.stringify(n)} is not a host name or IP address`);
  if ((o.names[0]?.length ?? 0) > 64) out.push('--name: the first name becomes the certificate CN and must be at most 64 characters');
  if (!Number.isInteger(o.port) || o.port < 1 || o.port > 65535) out.push('--port: must be 1..65535');
  if (o.proto !== 'udp' && o.proto !== 'tcp') out.push('--proto: must be udp or tcp');
  const net = ipv4Cidr(o.network);
  if (net === null || net.prefix < 16 || net.prefix > 29) out.push('--network: must be an IPv4 network from /16 to /29 (e.g. 10.8.0.0/24)');
  else if (net.host !== 0) out.push(`--network: ${o.network} has host bits set (did you mean ${toDotted(net.base)}/${net.prefix}?)`);
  for (const r of o.pushRoutes) if (!isCidr(r)) out.push(`--push-route: ${JSON.stringify(r)} is not an IPv4 or IPv6 CIDR`);
  if (!isTlsCryptKeyRef(o.keyRef)) out.push('--key-ref: letters, digits and _.:/@-, starting with a letter or digit, no ".." segment');
  return out;
}

interface Ipv4Net {
  readonly base: number;
  readonly prefix: number;
  /** The host bits of the given address (0 for a proper network address). */
  readonly host: number;
}

function ipv4Cidr(s: string): Ipv4Net | null {
  const m = /^([0-9.]+)\/([0-9]{1,2})$/.exec(s);
  if (m === null || !isIPv4(m[1] ?? '')) return null;
  const prefix = Number(m[2]);
  if (prefix > 32) return null;
  const addr = (m[1] ?? '').split('.').reduce((a, b) => a * 256 + Number(b), 0);
  const mask = maskOf(prefix);
  return { base: (addr & mask) >>> 0, prefix, host: (addr & ~mask) >>> 0 };
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

function toDotted(n: number): string {
  return [24, 16, 8, 0].map((s) => (n >>> s) & 255).join('.');
}

/** `route` arguments for a CIDR: "NET MASK" for IPv4; IPv6 stays in CIDR form for route-ipv6. */
function pushLine(cidr: string): string {
  const v4 = ipv4Cidr(cidr);
  if (v4 !== null) return `push "route ${toDotted(v4.base)} ${toDotted(maskOf(v4.prefix))}"`;
  return `push "route-ipv6 ${cidr}"`;
}

export function renderServerConf(o: VpnServerOptions): string {
  const problems = checkVpnServerOptions(o);
  if (problems.length > 0) throw new TypeError(problems.join('; '));
  const net = ipv4Cidr(o.network) as Ipv4Net;
  const lines = [
    `# OpenVPN 2.6 server for the Sepal federation "${o.federationId}", written by \`sepal-hub vpn server-config\`.`,
    '# Clients are Sepal agents with node certificates from the hub (see docs/vpn.md). Run it with this',
    '# directory as working directory: openvpn --cd THIS_DIR --config server.conf',
    '',
    `port ${o.port}`,
    `proto ${o.proto}`,
    'dev tun',
    'topology subnet',
    `server ${toDotted(net.base)} ${toDotted(maskOf(net.prefix))}`,
    '# Tunnel addresses: the server is the first host of the network. Clients do not see each other:',
    '# no client-to-client, and the firewall should drop tun->tun forwarding (docs/vpn.md).',
    ...(o.pushRoutes.length === 0 ? ['# No routes pushed (add --push-route CIDR); Sepal agents take their routes from the manifest.'] : o.pushRoutes.map(pushLine)),
    'keepalive 10 60',
    ...(o.proto === 'udp' ? ['explicit-exit-notify 1'] : []),
    '',
    '# Who may connect: certificates from the hub\'s issuing CA (ca.pem holds the issuing CA and the',
    '# root), client usage only, common name of a Sepal node (n-...), not revoked (crl.pem; OpenVPN',
    '# re-reads it when its size or mtime changes, at every new connection and renegotiation).',
    'ca ca.pem',
    'cert server.crt',
    'key server.key',
    'remote-cert-tls client',
    'verify-x509-name n- name-prefix',
    'crl-verify crl.pem',
    '# A revoked node\'s running session ends at the next renegotiation at the latest.',
    'reneg-sec 900',
    '',
    '# Control channel: TLS 1.3, ECDHE only; tls-crypt encrypts and authenticates it with a key only',
    '# federation members have (agents fetch it from the hub), so strangers get no TLS handshake.',
    'tls-crypt tls-crypt.key',
    'tls-version-min 1.3',
    'tls-ciphersuites TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:TLS_AES_128_GCM_SHA256',
    'tls-groups X25519:prime256v1:secp384r1',
    'tls-cert-profile preferred',
    'dh none',
    '# Data channel: AEAD ciphers only.',
    'data-ciphers AES-256-GCM:CHACHA20-POLY1305',
    '',
    '# After start-up: no root. Keys and the tun device are kept across soft restarts (SIGUSR1),',
    '# which unprivileged openvpn could not reopen; the CRL is still re-read from disk.',
    'user nobody',
    'group nogroup',
    'persist-key',
    'persist-tun',
    'verb 3',
    '# Optional: a management socket for operators (never a TCP port).',
    '# management /run/openvpn-server/sepal.sock unix',
    '',
  ];
  return lines.join('\n');
}

export interface CrlRefreshUnitOptions {
  /** Absolute directory holding server.conf, ca.pem and crl.pem on the VPN server host. */
  readonly dir: string;
  /** The hub's CRL URL (https://HUB:8444/crl.pem). */
  readonly crlUrl: string;
}

/** A systemd service + timer that fetch the hub's CA bundle and CRL (for a VPN server on another
 *  host than the hub): download over TLS trusting only the federation CA, check the CRL's
 *  signature, swap atomically. */
export function renderCrlRefreshUnits(o: CrlRefreshUnitOptions): { service: string; timer: string } {
  if (!o.dir.startsWith('/') || /[\s"'\\$%`]/.test(o.dir)) throw new TypeError('dir must be an absolute path without spaces, quotes, $, % or backslashes');
  if (!/^https:\/\/[A-Za-z0-9.:[\]-]+(\/[A-Za-z0-9._~/-]*)?$/.test(o.crlUrl)) throw new TypeError('crlUrl must be a plain https URL');
  const service = `[Unit]
Description=Refresh the Sepal CRL for the OpenVPN server (from ${o.crlUrl})
Documentation=man:openvpn(8)
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
# Fetch the federation's CA bundle trusting only the current ca.pem (it changes when the hub's
# CAs are rotated), then the CRL trusting that bundle; refuse anything that is not a CRL signed
# by it; replace both files atomically. openvpn re-reads crl.pem at every TLS handshake; a new
# ca.pem takes effect at its next restart (docs/operations.md, CA rotation).
ExecStart=/bin/sh -euc 'curl --fail --silent --show-error --max-time 30 --proto =https --cacert "$0/ca.pem" --output "$0/.ca.pem.new" "$2" && openssl x509 -in "$0/.ca.pem.new" -noout && curl --fail --silent --show-error --max-time 30 --proto =https --cacert "$0/.ca.pem.new" --output "$0/.crl.pem.new" "$1" && openssl crl -in "$0/.crl.pem.new" -CAfile "$0/.ca.pem.new" -noout && chmod 0644 "$0/.ca.pem.new" "$0/.crl.pem.new" && mv -f "$0/.ca.pem.new" "$0/ca.pem" && mv -f "$0/.crl.pem.new" "$0/crl.pem"' ${o.dir} ${o.crlUrl} ${new URL('ca.pem', o.crlUrl).href}
NoNewPrivileges=yes
ProtectSystem=strict
ReadWritePaths=${o.dir}
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectControlGroups=yes
ProtectKernelLogs=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
SystemCallFilter=@system-service
CapabilityBoundingSet=
UMask=0022
`;
  const timer = `[Unit]
Description=Refresh the Sepal CRL for the OpenVPN server every 15 minutes

[Timer]
OnBootSec=1min
OnUnitActiveSec=15min
RandomizedDelaySec=60
Unit=sepal-crl-refresh.service

[Install]
WantedBy=timers.target
`;
  return { service, timer };
}
