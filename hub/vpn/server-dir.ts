// `sepal-hub vpn server-config`: everything the cloud's OpenVPN server needs, in one directory:
// server.conf, ca.pem (what signs node certificates), a server certificate from the issuing CA
// (with a key made here, or for a CSR made on the VPN host so its key never travels), the
// tls-crypt key the hub keeps and hands to agents, the current CRL, and systemd units that keep
// that CRL fresh from the hub's HTTPS side. Rerunning renews the certificate (with a new server.key
// unless --csr is given) and keeps the tls-crypt key.
import fs from 'node:fs';
import path from 'node:path';
import { randomSerial } from '../ca/certificate.ts';
import { parseAndVerifyCsr } from '../ca/csr.ts';
import { derToPem } from '../ca/pem.ts';
import { issueServerCert, newServerKey } from '../ca/server-cert.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import type { HubContext } from '../service/context.ts';
import type { CrlPublisher } from '../service/crl.ts';
import { checkVpnServerOptions, renderCrlRefreshUnits, renderServerConf, type VpnServerOptions } from './server-config.ts';
import { ensureTlsCryptKey } from './tls-crypt-keys.ts';

const BACKDATE_MS = 60_000;

export interface ServerDirOptions extends Omit<VpnServerOptions, 'federationId'> {
  readonly outDir: string;
  /** Where the directory will live on the VPN host (for the CRL refresh unit). */
  readonly installDir: string;
  readonly certLifetimeSeconds: number;
  /** A PKCS#10 request (PEM or DER) made on the VPN host; no server.key is written then. */
  readonly csr?: Buffer | undefined;
  readonly actor: string;
}

export interface ServerDirResult {
  readonly outDir: string;
  readonly files: readonly string[];
  readonly serial: string;
  readonly notAfter: string;
  readonly keyRef: string;
  readonly keyCreated: boolean;
  /** False when a CSR was signed: the key that made it goes to <outDir>/server.key. */
  readonly wroteServerKey: boolean;
}

export async function writeServerDir(ctx: HubContext, crl: CrlPublisher, o: ServerDirOptions): Promise<ServerDirResult> {
  const conf: VpnServerOptions = {
    names: o.names, port: o.port, proto: o.proto, network: o.network, pushRoutes: o.pushRoutes, keyRef: o.keyRef,
    federationId: ctx.config.federationId,
  };
  const problems = checkVpnServerOptions(conf);
  if (problems.length > 0) throw new SepalError(ErrorCodes.INVALID_ARGUMENT, problems.join('; '), { detail: { problems } });
  const crlUrl = `${ctx.config.https.publicUrl.replace(/\/$/, '')}/crl.pem`;
  let units: { service: string; timer: string };
  try {
    units = renderCrlRefreshUnits({ dir: o.installDir, crlUrl });
  } catch (e) {
    throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `--install-dir / https.publicUrl: ${(e as Error).message}`);
  }

  const key = o.csr === undefined ? newServerKey() : null;
  const spkiDer = key?.spkiDer ?? parseAndVerifyCsr(o.csr as Buffer).spkiDer;
  const now = ctx.clock();
  const serial = randomSerial();
  const cert = issueServerCert(ctx.authority.issuer, {
    spkiDer,
    names: o.names,
    notBefore: new Date(Math.floor((now - BACKDATE_MS) / 1000) * 1000),
    notAfter: new Date(Math.floor((now + o.certLifetimeSeconds * 1000) / 1000) * 1000),
    serial,
  });
  const tlsCrypt = ensureTlsCryptKey(ctx.paths.vpnKeysDir, o.keyRef);
  const crlPem = (await crl.current()).pem;

  // Readable by the unprivileged user openvpn drops to (it re-reads crl.pem as that user).
  fs.mkdirSync(o.outDir, { recursive: true, mode: 0o755 });
  const files: Array<[string, string, number]> = [
    ['server.conf', renderServerConf(conf), 0o644],
    ['ca.pem', ctx.authority.bundlePem, 0o644],
    ['server.crt', derToPem(cert.der, 'CERTIFICATE') + ctx.authority.issuerPem, 0o644],
    ...(key === null ? [] : [['server.key', key.keyPem, 0o600] as [string, string, number]]),
    ['tls-crypt.key', tlsCrypt.text, 0o600],
    ['crl.pem', crlPem, 0o644],
    ['sepal-crl-refresh.service', units.service, 0o644],
    ['sepal-crl-refresh.timer', units.timer, 0o644],
  ];
  for (const [name, text, mode] of files) writeFileAtomicSync(path.join(o.outDir, name), text, mode);

  const serialHex = serial.toString('hex');
  await ctx.store.appendAudit({
    event: 'vpn.server_config_written',
    actor: o.actor,
    detail: { serial: serialHex, names: [...o.names], notAfter: cert.notAfter.toISOString(), keyRef: o.keyRef, keyCreated: tlsCrypt.created, csr: key === null },
  }, now);
  ctx.log.info({ event: 'vpn.server_config_written', serial: serialHex, keyRef: o.keyRef, keyCreated: tlsCrypt.created }, 'VPN server configuration written');
  return {
    outDir: path.resolve(o.outDir),
    files: files.map(([name]) => name),
    serial: serialHex,
    notAfter: cert.notAfter.toISOString(),
    keyRef: o.keyRef,
    keyCreated: tlsCrypt.created,
    wroteServerKey: key !== null,
  };
}
