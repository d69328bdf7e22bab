// HOST:PORT addresses for the agent's loopback listener, and what counts as loopback. Shared by the
// config (which refuses a literal non-loopback address early) and listenMetrics (which resolves
// names and checks what it actually bound).
import net from 'node:net';

export interface HostPort {
  /** Without brackets: `::1`, `127.0.0.1`, `localhost`. */
  readonly host: string;
  readonly port: number;
}

const HOST_PORT_RE = /^(?:\[([0-9A-Fa-f:.]+)\]|([A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?)):(\d{1,5})$/;

/** `HOST:PORT` (IPv6 in brackets) or null. Port 0 means "any free port" (tests). */
export function parseHostPort(s: string): HostPort | null {
  const m = HOST_PORT_RE.exec(s);
  if (m === null) return null;
  const host = m[1] ?? m[2];
  const port = Number(m[3]);
  if (host === undefined || port > 65535) return null;
  if (m[1] !== undefined && !net.isIPv6(host)) return null;
  // An unbracketed IPv6 literal cannot match (its colons); something all digits and dots must be IPv4.
  if (/^[0-9.]+$/.test(host) && !net.isIPv4(host)) return null;
  return { host, port };
}

export function formatHostPort(host: string, port: number): string {
  return net.isIPv6(host) ? `[${host}]:${port}` : `${host}:${port}`;
}

const LOOPBACK = new net.BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** 127.0.0.0/8, ::1 and IPv4-mapped 127/8 (BlockList handles the mapping). Names are not
 *  addresses: false for `localhost`. */
export function isLoopbackIp(ip: string): boolean {
  const family = net.isIP(ip);
  if (family === 0) return false;
  return LOOPBACK.check(ip, family === 4 ? 'ipv4' : 'ipv6');
}
