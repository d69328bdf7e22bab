// The hub's online CA material, loaded from the data dir (ca-files.ts): the issuing CA that signs
// new leaves, the issuing CAs still trusted (prepared and retired ones, during a rotation), the
// roots agents trust and the cross certificates between them. The root key is never read here:
// it can live offline.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { HubPaths } from '../datadir.ts';
import { LeafIssuer, type IssuerMaterial } from '../ca/certificate.ts';
import { caInfo } from '../ca/x509.ts';
import { derToPem, pemToDerList } from '../ca/pem.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { currentDir, issuingCas, readCaSet, readPrivateKeyFile, signedBy, type CaCert, type CaSet } from './ca-files.ts';

export interface Authority {
  readonly caSet: CaSet;
  readonly issuer: IssuerMaterial;
  /** subjectKeyIdentifier of the active issuing CA, hex (recorded with every certificate). */
  readonly issuerKeyId: string;
  readonly leafIssuer: LeafIssuer;
  /** Intermediates from a new leaf up to its root (exclusive), DER. */
  readonly chainDer: readonly Buffer[];
  /** Trusted roots, DER, the active root first (old and new together during a root rotation). */
  readonly rootsDer: readonly Buffer[];
  /** What a node is told to trust (Credentials.ca_bundle_der): the roots, then cross certificates. */
  readonly caBundleDer: readonly Buffer[];
  /** PEM bundle served at /ca.pem and used as the TLS trust store: the roots (active first), then
   *  every issuing CA still trusted (active, prepared, retired). No cross certificates: in a trust
   *  store they would offer paths (new issuing → cross → old root) that break the old root's
   *  path length; nodes get them in caBundleDer only, to take a new root into their trust. */
  readonly bundlePem: string;
  /** SHA-256 of the active root: what `sepal-agent enroll --ca-sha256` pins. */
  readonly rootFingerprint: string;
  /** Issuing CAs whose CRL the hub signs: active, prepared, retired. */
  readonly crlIssuers: readonly IssuerMaterial[];
  readonly serverKeyPem: string;
  readonly serverCert: crypto.X509Certificate;
  /** The server certificate followed by its issuing CA. */
  readonly serverChainPem: string;
  /** The active issuing CA as PEM: what a server certificate it issued is sent with. */
  readonly issuerPem: string;
}

function invalid(message: string): never {
  throw new SepalError(ErrorCodes.DATA_DIR_INVALID, message);
}

const pem = (ders: readonly Buffer[]): string => ders.map((d) => derToPem(d, 'CERTIFICATE')).join('');

/** Checks how the CA set hangs together; DATA_DIR_INVALID naming the first thing that does not. */
export function checkCaSet(set: CaSet): { rootOf: (ca: CaCert) => CaCert } {
  for (const r of set.roots) {
    if (!signedBy(r.cert, r.cert)) invalid(`ca/root.crt: ${r.cert.subject.replaceAll('\n', ', ')} is not a self-signed root`);
  }
  const rootOf = (ca: CaCert): CaCert => {
    const root = set.roots.find((r) => r.keyId === ca.authorityKeyId && signedBy(ca.cert, r.cert));
    if (root === undefined) invalid(`issuing CA ${ca.keyId} is not signed by any root in ca/root.crt`);
    return root;
  };
  for (const ca of issuingCas(set)) rootOf(ca);
  for (const x of set.cross) {
    if (!set.roots.some((r) => r.keyId === x.keyId && r.cert.publicKey.equals(x.cert.publicKey))) invalid(`ca/cross.crt: ${x.keyId} does not carry the key of a root in ca/root.crt`);
    if (!set.roots.some((r) => r.keyId !== x.keyId && signedBy(x.cert, r.cert))) invalid(`ca/cross.crt: ${x.keyId} is not signed by another root in ca/root.crt`);
  }
  return { rootOf };
}

export function loadAuthority(paths: HubPaths): Authority {
  const set = readCaSet(paths);
  const { rootOf } = checkCaSet(set);
  let serverPem: string, serverKeyPem: string;
  const tlsDir = currentDir(path.dirname(paths.serverCert));
  try {
    serverPem = fs.readFileSync(path.join(tlsDir, path.basename(paths.serverCert)), 'utf8');
    serverKeyPem = readPrivateKeyFile(path.join(tlsDir, path.basename(paths.serverKey)));
  } catch (e) {
    if (e instanceof SepalError) throw e;
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `data dir ${paths.dataDir} is incomplete: ${(e as NodeJS.ErrnoException).code ?? String(e)} (run sepal-hub init)`, { cause: e });
  }
  const serverDer = pemToDerList(serverPem)[0];
  if (serverDer === undefined) invalid(`${paths.serverCert}: no certificate`);
  const serverCert = new crypto.X509Certificate(serverDer);

  const issuing = issuingCas(set);
  const serverIssuer = issuing.find((c) => signedBy(serverCert, c.cert));
  if (serverIssuer === undefined) invalid(`${paths.serverCert} is not signed by a trusted issuing CA`);
  let serverKeyMatches = false;
  try {
    serverKeyMatches = crypto.createPublicKey(crypto.createPrivateKey(serverKeyPem)).equals(serverCert.publicKey);
  } catch {
    // not a key: reported below
  }
  if (!serverKeyMatches) invalid(`${paths.serverKey} is not the key of ${paths.serverCert}`);

  const activeRoot = rootOf(set.active);
  const roots = [activeRoot, ...set.roots.filter((r) => r !== activeRoot)];
  const rootsDer = Object.freeze(roots.map((r) => r.der));
  const issuer = set.active.material;
  return Object.freeze({
    caSet: set,
    issuer,
    issuerKeyId: set.active.keyId,
    leafIssuer: new LeafIssuer(issuer),
    chainDer: Object.freeze([set.active.der]),
    rootsDer,
    caBundleDer: Object.freeze([...rootsDer, ...set.cross.map((x) => x.der)]),
    bundlePem: pem([...rootsDer, ...issuing.map((c) => c.der)]),
    rootFingerprint: crypto.hash('sha256', activeRoot.der, 'hex'),
    crlIssuers: Object.freeze(issuing.map((c) => c.material)),
    serverKeyPem,
    serverCert,
    serverChainPem: derToPem(serverDer, 'CERTIFICATE') + pem([serverIssuer.der]),
    issuerPem: pem([set.active.der]),
  });
}

export interface CaEntry {
  readonly role: 'root' | 'cross' | 'issuing' | 'server';
  readonly state: 'active' | 'prepared' | 'retired' | 'trusted';
  readonly cert: crypto.X509Certificate;
  /** subjectKeyIdentifier, hex. */
  readonly keyId: string;
  /** The signer's key id, hex (its own for a root). */
  readonly signedBy: string;
}

/** Every certificate the hub holds for itself, with its role and state: what `sepal-hub ca status`
 *  lists and sepal_hub_ca_not_after_timestamp_seconds exports. */
export function caInventory(a: Authority): CaEntry[] {
  const cas = a.caSet;
  const entry = (role: CaEntry['role'], state: CaEntry['state'], c: CaCert): CaEntry => ({ role, state, cert: c.cert, keyId: c.keyId, signedBy: c.authorityKeyId });
  const server = caInfo(Buffer.from(a.serverCert.raw));
  return [
    ...cas.roots.map((r) => entry('root', r.keyId === cas.active.authorityKeyId ? 'active' : 'trusted', r)),
    ...cas.cross.map((x) => entry('cross', 'trusted', x)),
    entry('issuing', 'active', cas.active),
    ...(cas.next === null ? [] : [entry('issuing', 'prepared', cas.next)]),
    ...cas.retired.map((r) => entry('issuing', 'retired', r)),
    { role: 'server', state: 'active', cert: a.serverCert, keyId: server.keyId.toString('hex'), signedBy: server.authorityKeyId?.toString('hex') ?? '' },
  ];
}
