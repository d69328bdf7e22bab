// sepal-hub vpn server-config: the OpenVPN server's configuration directory (see hub/vpn/).
import fs from 'node:fs';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import { writeServerDir } from '../vpn/server-dir.ts';
import { parse, parseDuration, required, UsageError } from './args.ts';
import { COMMON, out, pathsFrom, withHub } from './common.ts';

const MIN_CERT_LIFETIME = 3600;
const MAX_CERT_LIFETIME = 825 * 86400;

export async function cmdVpn(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== 'server-config') throw new UsageError('vpn: expected server-config');
  const { values: v } = parse(rest, {
    ...COMMON,
    out: { type: 'string' },
    name: { type: 'string', multiple: true },
    port: { type: 'string' },
    proto: { type: 'string' },
    network: { type: 'string' },
    'push-route': { type: 'string', multiple: true },
    'key-ref': { type: 'string' },
    csr: { type: 'string' },
    'install-dir': { type: 'string' },
    'cert-lifetime': { type: 'string' },
  });
  const outDir = required(v.out, '--out');
  const names = (v.name ?? []).flatMap((n) => n.split(',')).map((n) => n.trim()).filter((n) => n.length > 0);
  if (names.length === 0) throw new UsageError('--name is required: the DNS name or IP address agents dial (repeat it or separate names by commas)');
  const port = Number(v.port ?? '1194');
  const proto = v.proto ?? 'udp';
  if (proto !== 'udp' && proto !== 'tcp') throw new UsageError('--proto must be udp or tcp');
  const installDir = v['install-dir'] ?? '/etc/openvpn/server/sepal';
  if (!installDir.startsWith('/')) throw new UsageError('--install-dir must be an absolute path');
  const lifetime = parseDuration(v['cert-lifetime'] ?? '365d', '--cert-lifetime');
  if (lifetime < MIN_CERT_LIFETIME || lifetime > MAX_CERT_LIFETIME) throw new UsageError('--cert-lifetime must be between 1h and 825d');
  let csr: Buffer | undefined;
  if (v.csr !== undefined) {
    try {
      csr = fs.readFileSync(v.csr);
    } catch (e) {
      throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `${v.csr}: cannot read: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  return withHub(pathsFrom(v), async (hub) => {
    const r = await writeServerDir(hub.ctx, hub.crl, {
      outDir, names, port, proto, network: v.network ?? '10.8.0.0/24', pushRoutes: v['push-route'] ?? [], keyRef: v['key-ref'] ?? 'default',
      installDir, certLifetimeSeconds: lifetime, csr, actor: 'cli',
    });
    if (v.json === true) {
      out(JSON.stringify(r));
      return 0;
    }
    out(`Wrote ${r.files.join(', ')} to ${r.outDir}.
Server certificate ${r.serial} for ${names.join(', ')}, valid until ${r.notAfter}.
tls-crypt key "${r.keyRef}": ${r.keyCreated ? 'created now; the hub keeps it and hands it to enrolled agents' : 'the one the hub already had'}.`);
    if (!r.wroteServerKey) out(`Signed the CSR: put the private key that made it at ${r.outDir}/server.key (mode 0600).`);
    out(`server.key and tls-crypt.key are secrets: copy the directory to the VPN host only over a secure channel.
Publish manifests whose vpn.tlsCryptKeyRef is "${r.keyRef}" (docs/vpn.md).`);
    return 0;
  });
}
