// The hub's online CA material, loaded from the data dir: the issuing CA (key + certificate)
// and the root(s) agents trust. The root key is never read here: it can live offline.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { HubPaths } from '../datadir.ts';
import { LeafIssuer, type IssuerMaterial } from '../ca/certificate.ts';
import { pemToDerList } from '../ca/bootstrap.ts';
import { SepalError, ErrorCodes } from '../errors.ts';

export interface Authority {
  readonly issuer: IssuerMaterial;
  readonly leafIssuer: LeafIssuer;
  /** Intermediates from a leaf up to the root (exclusive), DER. */
  readonly chainDer: readonly Buffer[];
  /** Trusted roots, DER (old and new together during a root rotation). */
  readonly rootsDer: readonly Buffer[];
  /** PEM bundle served at /ca.pem and used as the TLS trust store: roots then issuing CA. */
  readonly bundlePem: string;
  readonly rootFingerprint: string;
  readonly serverKeyPem: string;
  /** The server certificate followed by the issuing CA. */
  readonly serverChainPem: string;
}

function readPrivate(file: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); expected 0600`);
  }
  return fs.readFileSync(file, 'utf8');
}

export function loadAuthority(paths: HubPaths): Authority {
  let issuingPem: string, rootPem: string, serverPem: string, issuingKeyPem: string, serverKeyPem: string;
  try {
    issuingPem = fs.readFileSync(paths.issuingCert, 'utf8');
    rootPem = fs.readFileSync(paths.rootCert, 'utf8');
    serverPem = fs.readFileSync(paths.serverCert, 'utf8');
    issuingKeyPem = readPrivate(paths.issuingKey);
    serverKeyPem = readPrivate(paths.serverKey);
  } catch (e) {
    if (e instanceof SepalError) throw e;
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `data dir ${paths.dataDir} is incomplete: ${(e as NodeJS.ErrnoException).code ?? String(e)} (run sepal-hub init)`, { cause: e });
  }
  const issuingDer = pemToDerList(issuingPem)[0];
  if (issuingDer === undefined) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${paths.issuingCert}: no certificate`);
  const rootsDer = pemToDerList(rootPem);
  const issuer: IssuerMaterial = {
    cert: new crypto.X509Certificate(issuingDer),
    certDer: issuingDer,
    key: crypto.createPrivateKey(issuingKeyPem),
  };
  const root0 = rootsDer[0];
  if (root0 === undefined) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${paths.rootCert}: no certificate`);
  if (!issuer.cert.verify(new crypto.X509Certificate(root0).publicKey)) {
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID, 'the issuing CA is not signed by the root CA');
  }
  const rootFingerprint = crypto.createHash('sha256').update(root0).digest('hex');
  return Object.freeze({
    issuer,
    leafIssuer: new LeafIssuer(issuer),
    chainDer: Object.freeze([issuingDer]),
    rootsDer: Object.freeze(rootsDer),
    bundlePem: rootPem.trimEnd() + '\n' + issuingPem.trimEnd() + '\n',
    rootFingerprint,
    serverKeyPem,
    serverChainPem: serverPem.trimEnd() + '\n' + issuingPem.trimEnd() + '\n',
  });
}
