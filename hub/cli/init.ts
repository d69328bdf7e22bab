// sepal-hub init
import { initDataDir } from '../service/init.ts';
import { checkHostPort, parse, parseDuration, required, UsageError } from './args.ts';
import { COMMON, out, pathsFrom } from './common.ts';

/** The public address keeps its host but follows the listen port unless given explicitly. */
function withPort(publicHostPort: string, listen: string | undefined): string {
  if (listen === undefined) return publicHostPort;
  const host = publicHostPort.slice(0, publicHostPort.lastIndexOf(':'));
  return `${host}:${listen.slice(listen.lastIndexOf(':') + 1)}`;
}

export async function cmdInit(argv: string[]): Promise<number> {
  const { values: v } = parse(argv, {
    ...COMMON,
    hostname: { type: 'string' },
    'federation-id': { type: 'string' },
    'grpc-listen': { type: 'string' },
    'https-listen': { type: 'string' },
    'grpc-public-addr': { type: 'string' },
    'public-url': { type: 'string' },
    'leaf-lifetime': { type: 'string' },
  });
  const paths = pathsFrom(v);
  const hostnames = required(v.hostname, '--hostname').split(',').map((s) => s.trim()).filter((s) => s.length > 0);
  if (hostnames.length === 0) throw new UsageError('--hostname needs at least one name');
  const leaf = v['leaf-lifetime'] === undefined ? undefined : parseDuration(v['leaf-lifetime'], '--leaf-lifetime');
  const r = await initDataDir(paths, {
    hostnames,
    federationId: v['federation-id'],
    configure: (c) => ({
      ...c,
      grpc: {
        listen: v['grpc-listen'] === undefined ? c.grpc.listen : checkHostPort(v['grpc-listen'], '--grpc-listen'),
        publicAddress: v['grpc-public-addr'] === undefined
          ? withPort(c.grpc.publicAddress, v['grpc-listen'])
          : checkHostPort(v['grpc-public-addr'], '--grpc-public-addr'),
      },
      https: {
        listen: v['https-listen'] === undefined ? c.https.listen : checkHostPort(v['https-listen'], '--https-listen'),
        publicUrl: v['public-url'] ?? (v['https-listen'] === undefined ? c.https.publicUrl : `https://${withPort(new URL(c.https.publicUrl).host, v['https-listen'])}`),
      },
      certificates: { leafLifetimeSeconds: leaf ?? c.certificates.leafLifetimeSeconds },
    }),
  });
  if (v.json === true) {
    out(JSON.stringify({ dataDir: paths.dataDir, rootFingerprint: r.rootFingerprint, federationId: r.config.federationId, kid: r.kid }));
    return 0;
  }
  out(`Initialised ${paths.dataDir} for federation ${r.config.federationId}.
Root CA SHA-256 fingerprint (agents pin this with --ca-sha256):
  ${r.rootFingerprint}
The root CA key is ${paths.rootKey}; serve does not need it: move it offline.
Start the hub with: sepal-hub serve --data-dir ${paths.dataDir}`);
  return 0;
}
