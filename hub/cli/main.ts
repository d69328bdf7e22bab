#!/usr/bin/env node
// sepal-hub: the federation's control plane. Every command takes --data-dir and works while
// `serve` runs on the same data dir (the store is shared; the server picks changes up).
import { fail, UsageError } from './args.ts';
import { cmdInit } from './init.ts';
import { cmdServe } from './serve.ts';
import { cmdNode } from './node.ts';
import { cmdManifest } from './manifest.ts';
import { cmdKeys } from './keys.ts';
import { cmdAudit } from './audit.ts';
import { cmdToken } from './token.ts';
import { cmdVpn } from './vpn.ts';
import { cmdCa } from './ca.ts';
import { VERSION } from '../version.ts';

const HELP = `sepal-hub ${VERSION} — certificate authority, manifest signer and agent API for Flower federations

Usage:
  sepal-hub init --data-dir DIR --hostname NAME[,NAME...] [--federation-id ID]
                 [--grpc-listen HOST:PORT] [--https-listen HOST:PORT]
                 [--grpc-public-addr HOST:PORT] [--public-url URL] [--leaf-lifetime 24h] [--json]
  sepal-hub serve --data-dir DIR [--grpc-addr HOST:PORT] [--https-addr HOST:PORT] [--vpn-crl-file PATH]
                  [--log-level LEVEL]
  sepal-hub node list --data-dir DIR [--org ORG] [--json]
  sepal-hub node show ID --data-dir DIR [--json]
  sepal-hub node revoke ID --data-dir DIR
  sepal-hub node retry-registration ID --data-dir DIR [--json]
  sepal-hub manifest publish (--node ID | --org ORG) --file manifest.json --data-dir DIR [--json]
  sepal-hub token create --data-dir DIR --org ORG [--ttl 1h] [--uses 1] [--json]
  sepal-hub token list --data-dir DIR [--org ORG] [--json]
  sepal-hub token revoke ID --data-dir DIR
  sepal-hub keys rotate --data-dir DIR [--json]
  sepal-hub keys list --data-dir DIR [--json]
  sepal-hub audit verify --data-dir DIR [--json]
  sepal-hub ca status --data-dir DIR [--json]
  sepal-hub ca prepare-issuing --data-dir DIR [--root-key FILE] [--json]
  sepal-hub ca prepare-root --data-dir DIR [--root-key FILE] [--new-root-key FILE] [--json]
  sepal-hub ca activate --data-dir DIR [--force] [--json]
  sepal-hub ca prune --data-dir DIR [--json]
  sepal-hub ca renew-server --data-dir DIR [--hostname NAME[,NAME...]] [--json]
  sepal-hub vpn server-config --data-dir DIR --out DIR --name NAME[,NAME...] [--port 1194] [--proto udp|tcp]
                 [--network 10.8.0.0/24] [--push-route CIDR ...] [--key-ref default] [--csr FILE]
                 [--install-dir /etc/openvpn/server/sepal] [--cert-lifetime 365d] [--json]

Every command also takes --config FILE and --db FILE to place those outside the data dir.
Exit codes: 0 success, 1 error (printed as "error CODE: message"), 2 usage error.
`;

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  try {
    switch (cmd) {
      case 'init': return await cmdInit(rest);
      case 'serve': return await cmdServe(rest);
      case 'node': return await cmdNode(rest);
      case 'manifest': return await cmdManifest(rest);
      case 'keys': return await cmdKeys(rest);
      case 'audit': return await cmdAudit(rest);
      case 'token': return await cmdToken(rest);
      case 'vpn': return await cmdVpn(rest);
      case 'ca': return await cmdCa(rest);
      case '--version': case 'version':
        process.stdout.write(`${VERSION}\n`);
        return 0;
      case undefined: case '--help': case '-h': case 'help':
        process.stdout.write(HELP);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    return fail(e);
  }
}

process.exitCode = await main(process.argv.slice(2));
