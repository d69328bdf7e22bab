// Where the hub keeps its files. One data dir holds everything; each path can be overridden
// (config file, database) so several hubs run side by side unprivileged.
import path from 'node:path';

export interface HubPaths {
  readonly dataDir: string;
  readonly config: string;
  readonly db: string;
  readonly rootCert: string;
  /** The root key: only `init` (and, later, CA rotation) needs it; it can be taken offline. */
  readonly rootKey: string;
  readonly issuingCert: string;
  readonly issuingKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly manifestKeysDir: string;
  /** The CRL as a file too, for the OpenVPN server's crl-verify. */
  readonly crlPem: string;
  /** OpenVPN tls-crypt keys by reference (`<ref>.key`, 0600), handed to agents by GetVpnSecret. */
  readonly vpnKeysDir: string;
}

export function hubPaths(dataDir: string, overrides: { readonly config?: string | undefined; readonly db?: string | undefined } = {}): HubPaths {
  const d = path.resolve(dataDir);
  return Object.freeze({
    dataDir: d,
    config: path.resolve(overrides.config ?? path.join(d, 'hub.json')),
    db: path.resolve(overrides.db ?? path.join(d, 'hub.db')),
    rootCert: path.join(d, 'ca', 'root.crt'),
    rootKey: path.join(d, 'ca', 'root.key'),
    issuingCert: path.join(d, 'ca', 'issuing.crt'),
    issuingKey: path.join(d, 'ca', 'issuing.key'),
    serverCert: path.join(d, 'tls', 'server.crt'),
    serverKey: path.join(d, 'tls', 'server.key'),
    manifestKeysDir: path.join(d, 'keys', 'manifest'),
    crlPem: path.join(d, 'crl', 'crl.pem'),
    vpnKeysDir: path.join(d, 'vpn', 'tls-crypt'),
  });
}
