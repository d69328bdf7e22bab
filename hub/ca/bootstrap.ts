// Creates a federation's CA material at `sepal-hub init`: a root CA, an issuing CA under it, and
// the hub's TLS server certificate from the issuing CA. All keys are EC P-256; all notBefore
// times are backdated by 60 s to absorb clock skew.
import crypto from 'node:crypto';
import net from 'node:net';
import { SepalError, ErrorCodes } from '../errors.ts';
import { DerReader } from './der.ts';
import { decodePemBlocks, derToPem, pemToDerList } from './pem.ts';
import { randomSerial } from './certificate.ts';
import {
  KeyUsageBit, OID, authorityKeyIdExt, basicConstraintsExt, buildCertificate, caInfo, dnsName, extKeyUsageExt, ipName,
  keyIdFromSpki, keyUsageExt, nameDer, subjectAltNameExt, subjectKeyIdExt,
} from './x509.ts';

export { derToPem, pemToDerList };

export interface CaMaterial {
  readonly rootCert: string;
  /** PKCS#8 PEM. */
  readonly rootKey: string;
  readonly issuingCert: string;
  readonly issuingKey: string;
  readonly serverCert: string;
  readonly serverKey: string;
}

export interface CreateCaOptions {
  /** DNS names and/or IP literals the hub is reached at; the first one is also the server CN. */
  readonly hostnames: readonly string[];
  readonly federationId: string;
  readonly now: Date;
}

const BACKDATE_MS = 60_000;

function configError(message: string, detail: Record<string, unknown>): never {
  throw new SepalError(ErrorCodes.CONFIG_INVALID, message, { detail });
}

/** 16 bytes of an IPv6 literal (no zone id); undefined when it is not one. */
function ipv6Bytes(s: string): Buffer | undefined {
  if (net.isIPv6(s) === false || s.includes('%')) return undefined;
  let text = s;
  const tail: number[] = [];
  const v4 = /^(.*:)(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  if (v4 !== null) {
    tail.push(...v4[2]!.split('.').map(Number));
    text = v4[1]!.endsWith('::') ? v4[1]! : v4[1]!.slice(0, -1);
  }
  const [head = '', rest] = text.split('::') as [string, string | undefined];
  const groups = (p: string): number[] => (p === '' ? [] : p.split(':').map((g) => parseInt(g, 16)));
  const left = groups(head);
  const right = groups(rest ?? '');
  const total = 8 - tail.length / 2;
  const words = rest === undefined ? left : [...left, ...new Array<number>(total - left.length - right.length).fill(0), ...right];
  if (words.length !== total) return undefined;
  const out = Buffer.alloc(16);
  words.forEach((w, i) => out.writeUInt16BE(w, 2 * i));
  tail.forEach((b, i) => (out[12 + i] = b));
  return out;
}

const LABEL_RE = /^(?!-)[a-z0-9-]{1,63}(?<!-)$/;

/** A SAN GeneralName for a DNS name or an IP literal; CONFIG_INVALID when it is neither. */
export function hostGeneralName(host: string): Buffer {
  if (net.isIPv4(host)) return ipName(Buffer.from(host.split('.').map(Number)));
  if (host.includes(':')) {
    const bytes = ipv6Bytes(host);
    if (bytes === undefined) configError('not a valid IPv6 address (zone ids are not allowed)', { hostname: host });
    return ipName(bytes);
  }
  const name = host.toLowerCase();
  if (name.length > 253 || !name.split('.').every((l) => LABEL_RE.test(l))) configError('not a valid DNS name or IP address', { hostname: host });
  return dnsName(name);
}

export interface CaKey {
  readonly priv: crypto.KeyObject;
  readonly spki: Buffer;
  readonly keyId: Buffer;
  /** PKCS#8 PEM. */
  readonly pem: string;
}

/** A fresh EC P-256 key for a CA or a server certificate. */
export function newCaKey(): CaKey {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const spki = publicKey.export({ type: 'spki', format: 'der' });
  return { priv: privateKey, spki, keyId: keyIdFromSpki(spki), pem: privateKey.export({ type: 'pkcs8', format: 'pem' }) };
}

/** A CA key read back from its PKCS#8 PEM file. */
export function caKeyFromPem(pem: string): CaKey {
  const priv = crypto.createPrivateKey(pem);
  const spki = crypto.createPublicKey(priv).export({ type: 'spki', format: 'der' });
  return { priv, spki, keyId: keyIdFromSpki(spki), pem };
}

/** Subject names of the federation's CAs. `generation` (absent for what `init` makes) goes into an
 *  OU so that CAs made by a rotation never share a name with the ones they replace. */
export function caName(kind: 'root' | 'issuing', federationId: string, generation?: string): Buffer {
  const cn = `Sepal ${kind === 'root' ? 'Root' : 'Issuing'} CA ${federationId}`;
  return nameDer(generation === undefined ? [[OID.commonName, cn]] : [[OID.commonName, cn], [OID.organizationalUnitName, generation]]);
}

/** A signer of CA certificates: the root's key, its subject Name and key id. */
export interface CaSigner {
  readonly key: crypto.KeyObject;
  readonly name: Buffer;
  readonly keyId: Buffer;
}

export interface CaValidity {
  readonly notBefore: Date;
  readonly notAfter: Date;
}

/** A self-signed root: may sign one level of CAs below it (pathLen 1). */
export function buildRootCert(key: CaKey, name: Buffer, v: CaValidity): Buffer {
  return buildCertificate({
    serial: randomSerial(),
    issuerName: name,
    subjectName: name,
    notBefore: v.notBefore,
    notAfter: v.notAfter,
    spkiDer: key.spki,
    extensions: [
      basicConstraintsExt(true, 1),
      keyUsageExt([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
      subjectKeyIdExt(key.keyId),
      authorityKeyIdExt(key.keyId),
    ],
  }, key.priv);
}

/** An issuing CA under `root`: signs leaves only (pathLen 0). */
export function buildIssuingCert(root: CaSigner, key: { readonly spki: Buffer; readonly keyId: Buffer }, name: Buffer, v: CaValidity): Buffer {
  return buildCertificate({
    serial: randomSerial(),
    issuerName: root.name,
    subjectName: name,
    notBefore: v.notBefore,
    notAfter: v.notAfter,
    spkiDer: key.spki,
    extensions: [
      basicConstraintsExt(true, 0),
      keyUsageExt([KeyUsageBit.digitalSignature, KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
      subjectKeyIdExt(key.keyId),
      authorityKeyIdExt(root.keyId),
    ],
  }, root.key);
}

/** A cross certificate: the new root's name and key, signed by the old root, so that agents that
 *  trust the old root take the new one into their trust. It is never part of a TLS chain: a path
 *  issuing CA → cross → old root is longer than the old root's pathLen 1 allows. */
export function buildCrossCert(oldRoot: CaSigner, newRootCertDer: Buffer, v: CaValidity): Buffer {
  const info = caInfo(newRootCertDer);
  const spki = Buffer.from(new crypto.X509Certificate(newRootCertDer).publicKey.export({ type: 'spki', format: 'der' }));
  return buildCertificate({
    serial: randomSerial(),
    issuerName: oldRoot.name,
    subjectName: info.subjectName,
    notBefore: v.notBefore,
    notAfter: v.notAfter,
    spkiDer: spki,
    extensions: [
      basicConstraintsExt(true, 1),
      keyUsageExt([KeyUsageBit.keyCertSign, KeyUsageBit.cRLSign]),
      subjectKeyIdExt(info.keyId),
      authorityKeyIdExt(oldRoot.keyId),
    ],
  }, oldRoot.key);
}

export function addYears(d: Date, years: number): Date {
  const out = new Date(d.getTime());
  out.setUTCFullYear(out.getUTCFullYear() + years);
  return out;
}

/** Root CA, issuing CA and hub server certificate with their keys, as PEM. */
export function createCaMaterial(opts: CreateCaOptions): CaMaterial {
  const { hostnames, federationId, now } = opts;
  if (!(now instanceof Date) || Number.isNaN(now.getTime())) throw new TypeError('now must be a valid Date');
  if (typeof federationId !== 'string' || !/^[\x21-\x7e](?:[\x20-\x7e]*[\x21-\x7e])?$/.test(federationId) || federationId.length > 47) {
    configError('federationId must be 1..47 printable ASCII characters', { federationId });
  }
  if (hostnames.length === 0) configError('at least one hostname is required', {});
  for (const h of hostnames) {
    if (typeof h !== 'string' || h.length === 0) configError('hostnames must be non-empty strings', {});
  }
  const first = hostnames[0]!;
  if (first.length > 64) configError('the first hostname becomes the CN and must be at most 64 characters', { hostname: first });
  const sans: Buffer[] = [];
  const seen = new Set<string>();
  for (const h of hostnames) {
    const gn = hostGeneralName(h);
    const k = gn.toString('hex');
    if (!seen.has(k)) sans.push(gn);
    seen.add(k);
  }

  const start = new Date(Math.floor(now.getTime() / 1000) * 1000);
  const notBefore = new Date(start.getTime() - BACKDATE_MS);

  const root = newCaKey();
  const rootName = caName('root', federationId);
  const rootDer = buildRootCert(root, rootName, { notBefore, notAfter: addYears(start, 10) });

  const issuing = newCaKey();
  const issuingName = caName('issuing', federationId);
  const issuingDer = buildIssuingCert({ key: root.priv, name: rootName, keyId: root.keyId }, issuing, issuingName, { notBefore, notAfter: addYears(start, 3) });

  const server = newCaKey();
  const serverDer = buildCertificate({
    serial: randomSerial(),
    issuerName: issuingName,
    subjectName: nameDer([[OID.commonName, first.toLowerCase()]]),
    notBefore,
    notAfter: addYears(start, 1),
    spkiDer: server.spki,
    extensions: [
      basicConstraintsExt(false),
      keyUsageExt([KeyUsageBit.digitalSignature]),
      extKeyUsageExt([OID.serverAuth]),
      subjectKeyIdExt(server.keyId),
      authorityKeyIdExt(issuing.keyId),
      subjectAltNameExt(sans),
    ],
  }, issuing.priv);

  return {
    rootCert: derToPem(rootDer, 'CERTIFICATE'),
    rootKey: root.pem,
    issuingCert: derToPem(issuingDer, 'CERTIFICATE'),
    issuingKey: issuing.pem,
    serverCert: derToPem(serverDer, 'CERTIFICATE'),
    serverKey: server.pem,
  };
}

/** SHA-256 (lowercase hex) over the DER of the first certificate in PEM text or DER bytes. */
export function certFingerprintSha256(pemOrDer: string | Buffer): string {
  let der: Buffer;
  if (typeof pemOrDer === 'string' || (Buffer.isBuffer(pemOrDer) && pemOrDer[0] !== 0x30)) {
    const text = typeof pemOrDer === 'string' ? pemOrDer : pemOrDer.toString('latin1');
    const cert = decodePemBlocks(text).find((b) => b.label === 'CERTIFICATE');
    if (cert === undefined) throw new SepalError(ErrorCodes.INVALID_ARGUMENT, 'no CERTIFICATE PEM block');
    der = cert.der;
  } else if (Buffer.isBuffer(pemOrDer)) {
    der = pemOrDer;
  } else {
    throw new TypeError('certFingerprintSha256 needs PEM text or DER bytes');
  }
  const first = new DerReader(der).next(0x30).raw;
  return crypto.hash('sha256', first, 'hex');
}
