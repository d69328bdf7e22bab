// X.509 building blocks shared by the leaf issuer, the CRL builder and the CA bootstrap:
// extensions, names, key identifiers, the TBS-and-sign step, and a look into a CA certificate
// for the two things an issuer needs (its subject Name DER and its key identifier).
import crypto from 'node:crypto';
import {
  DerReader, Tag, bitString, boolean, explicit, implicit, integer, namedBits, octetString, oid, sequence, set, tlv,
  utf8String, time,
} from './der.ts';
import { ErrorCodes, isSepalError } from '../errors.ts';

export const OID = {
  commonName: '2.5.4.3',
  organizationName: '2.5.4.10',
  organizationalUnitName: '2.5.4.11',
  subjectKeyIdentifier: '2.5.29.14',
  keyUsage: '2.5.29.15',
  subjectAltName: '2.5.29.17',
  basicConstraints: '2.5.29.19',
  cRLNumber: '2.5.29.20',
  authorityKeyIdentifier: '2.5.29.35',
  extKeyUsage: '2.5.29.37',
  serverAuth: '1.3.6.1.5.5.7.3.1',
  clientAuth: '1.3.6.1.5.5.7.3.2',
  ecdsaWithSha256: '1.2.840.10045.4.3.2',
} as const;

/** KeyUsage bit numbers (RFC 5280 4.2.1.3). */
export const KeyUsageBit = { digitalSignature: 0, keyCertSign: 5, cRLSign: 6 } as const;

/** AlgorithmIdentifier for ecdsa-with-SHA256 (parameters absent, RFC 5758). */
export const ECDSA_SHA256_ALG: Buffer = sequence(oid(OID.ecdsaWithSha256));

/** `[0] EXPLICIT INTEGER 2`: the version field of a v3 certificate. */
export const VERSION_V3: Buffer = explicit(0, integer(2));

export function extension(id: string, critical: boolean, valueDer: Buffer): Buffer {
  return critical ? sequence(oid(id), boolean(true), octetString(valueDer)) : sequence(oid(id), octetString(valueDer));
}

export function basicConstraintsExt(ca: boolean, pathLen?: number): Buffer {
  const parts: Buffer[] = [];
  if (ca) parts.push(boolean(true));
  if (ca && pathLen !== undefined) parts.push(integer(pathLen));
  return extension(OID.basicConstraints, true, sequence(...parts));
}

export function keyUsageExt(bits: readonly number[]): Buffer {
  return extension(OID.keyUsage, true, namedBits(bits));
}

export function extKeyUsageExt(purposes: readonly string[]): Buffer {
  return extension(OID.extKeyUsage, false, sequence(...purposes.map((p) => oid(p))));
}

export function subjectKeyIdExt(keyId: Buffer): Buffer {
  return extension(OID.subjectKeyIdentifier, false, octetString(keyId));
}

/** AuthorityKeyIdentifier with only `[0] keyIdentifier`. */
export function authorityKeyIdExt(keyId: Buffer): Buffer {
  return extension(OID.authorityKeyIdentifier, false, sequence(implicit(0, octetString(keyId))));
}

/** SubjectAltName from complete GeneralName encodings (see `uriName`, `dnsName`, `ipName`). */
export function subjectAltNameExt(generalNames: readonly Buffer[]): Buffer {
  return extension(OID.subjectAltName, false, sequence(...generalNames));
}

export function uriName(uri: string): Buffer {
  return implicit(6, tlv(Tag.IA5_STRING, Buffer.from(uri, 'latin1')));
}

export function dnsName(name: string): Buffer {
  return implicit(2, tlv(Tag.IA5_STRING, Buffer.from(name, 'latin1')));
}

/** iPAddress GeneralName: 4 or 16 octets. */
export function ipName(bytes: Buffer): Buffer {
  if (bytes.length !== 4 && bytes.length !== 16) throw new TypeError('iPAddress must be 4 or 16 bytes');
  return implicit(7, octetString(bytes));
}

/** A Name with one single-valued RDN per entry, in the given order (most significant first), values as UTF8String. */
export function nameDer(rdns: ReadonlyArray<readonly [type: string, value: string]>): Buffer {
  return sequence(...rdns.map(([type, value]) => set(sequence(oid(type), utf8String(value)))));
}

/** Validity ::= SEQUENCE { notBefore Time, notAfter Time }. */
export function validityDer(notBefore: Date, notAfter: Date): Buffer {
  return sequence(time(notBefore), time(notAfter));
}

/** Reads a SubjectPublicKeyInfo; TypeError when it is not well-formed DER. Returns the subjectPublicKey bits. */
export function spkiKeyBits(spkiDer: Buffer): Buffer {
  try {
    const top = new DerReader(spkiDer, ErrorCodes.INTERNAL);
    const spki = top.sequence();
    top.end();
    const alg = spki.sequence();
    alg.oid();
    const bits = spki.bitString();
    spki.end();
    if (bits.unusedBits !== 0) throw new TypeError('SubjectPublicKeyInfo key bits are not whole bytes');
    return bits.bytes;
  } catch (e) {
    if (isSepalError(e)) throw new TypeError(`not a SubjectPublicKeyInfo: ${e.message}`);
    throw e;
  }
}

/** RFC 5280 4.2.1.2 method 1: SHA-1 over the subjectPublicKey BIT STRING value. */
export function keyIdFromSpki(spkiDer: Buffer): Buffer {
  return crypto.hash('sha1', spkiKeyBits(spkiDer), 'buffer');
}

/** Checks that `serial` is the content of a positive, minimally encoded INTEGER of at most 20 octets. */
export function checkSerial(serial: Buffer): void {
  if (!Buffer.isBuffer(serial) || serial.length === 0 || serial.length > 20) throw new TypeError('serial must be 1..20 bytes');
  if (serial[0]! >= 0x80) throw new TypeError('serial must be positive (top bit clear, or a 00 prefix)');
  if (serial[0] === 0 && (serial.length === 1 || serial[1]! < 0x80)) throw new TypeError('serial must be non-zero and minimally encoded');
}

export function checkSigningKey(key: crypto.KeyObject): void {
  if (!(key instanceof crypto.KeyObject) || key.type !== 'private' || key.asymmetricKeyType !== 'ec' || key.asymmetricKeyDetails?.namedCurve !== 'prime256v1') {
    throw new TypeError('CA signing key must be an EC P-256 private KeyObject');
  }
}

/** Checks a CA's material: cert and certDer agree, it is a CA, the key is its EC P-256 private key. TypeError otherwise. */
export function checkIssuerMaterial(issuer: { readonly cert: crypto.X509Certificate; readonly certDer: Buffer; readonly key: crypto.KeyObject }): void {
  if (!(issuer.cert instanceof crypto.X509Certificate)) throw new TypeError('issuer.cert must be an X509Certificate');
  if (!Buffer.isBuffer(issuer.certDer) || !issuer.cert.raw.equals(issuer.certDer)) throw new TypeError('issuer.certDer must be the DER of issuer.cert');
  if (!issuer.cert.ca) throw new TypeError('issuer.cert is not a CA certificate');
  checkSigningKey(issuer.key);
  if (!issuer.cert.checkPrivateKey(issuer.key)) throw new TypeError('issuer.key does not belong to issuer.cert');
}

/** Signs `tbs` with ecdsa-with-SHA256 and wraps it: Certificate / CertificateList ::= SEQUENCE { tbs, alg, signature }. */
export function signEcdsaSha256(tbs: Buffer, key: crypto.KeyObject): Buffer {
  return sequence(tbs, ECDSA_SHA256_ALG, bitString(crypto.sign('sha256', tbs, key)));
}

export interface CertificateTemplate {
  /** INTEGER content, see checkSerial. */
  readonly serial: Buffer;
  readonly issuerName: Buffer;
  readonly subjectName: Buffer;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly spkiDer: Buffer;
  /** Complete Extension encodings. */
  readonly extensions: readonly Buffer[];
}

/** A v3 certificate signed with ecdsa-with-SHA256 by `key`. */
export function buildCertificate(t: CertificateTemplate, key: crypto.KeyObject): Buffer {
  checkSerial(t.serial);
  if (!(t.notAfter.getTime() > t.notBefore.getTime())) throw new TypeError('notAfter must be after notBefore');
  const tbs = sequence(
    VERSION_V3,
    tlv(Tag.INTEGER, t.serial),
    ECDSA_SHA256_ALG,
    t.issuerName,
    validityDer(t.notBefore, t.notAfter),
    t.subjectName,
    t.spkiDer,
    explicit(3, sequence(...t.extensions)),
  );
  return signEcdsaSha256(tbs, key);
}

export interface CaInfo {
  /** The CA's subject Name, DER, copied byte for byte from its certificate. */
  readonly subjectName: Buffer;
  /** The CA's subjectKeyIdentifier (or, when it has none, the RFC 5280 method 1 key id). */
  readonly keyId: Buffer;
  /** The authorityKeyIdentifier's keyIdentifier (the signer's key id); null when absent. */
  readonly authorityKeyId: Buffer | null;
}

const caInfoCache = new WeakMap<Buffer, CaInfo>();

/** Subject Name and key identifier of a (trusted, hub-made) CA certificate. TypeError when it cannot be read. */
export function caInfo(certDer: Buffer): CaInfo {
  const cached = caInfoCache.get(certDer);
  if (cached !== undefined) return cached;
  let info: CaInfo;
  try {
    const top = new DerReader(certDer, ErrorCodes.INTERNAL);
    const cert = top.sequence();
    top.end();
    const tbs = cert.sequence();
    tbs.optional(0xa0); // version
    tbs.integer(); // serialNumber
    tbs.sequence(); // signature
    tbs.next(Tag.SEQUENCE); // issuer
    tbs.sequence(); // validity
    const subject = tbs.next(Tag.SEQUENCE);
    const spki = tbs.next(Tag.SEQUENCE);
    tbs.optional(0x81); // issuerUniqueID
    tbs.optional(0x82); // subjectUniqueID
    const extsEl = tbs.optional(0xa3);
    tbs.end();
    let keyId: Buffer | undefined;
    let authorityKeyId: Buffer | undefined;
    if (extsEl !== undefined) {
      const wrapper = tbs.enter(extsEl);
      const exts = wrapper.sequence();
      wrapper.end();
      while (exts.hasMore) {
        const ext = exts.sequence();
        const id = ext.oid();
        if (ext.peekTag() === Tag.BOOLEAN) ext.boolean();
        const value = ext.octetString();
        ext.end();
        if (id === OID.subjectKeyIdentifier) {
          const r = new DerReader(value, ErrorCodes.INTERNAL);
          keyId = Buffer.from(r.octetString());
          r.end();
        } else if (id === OID.authorityKeyIdentifier) {
          const r = new DerReader(value, ErrorCodes.INTERNAL);
          const aki = r.sequence();
          r.end();
          const kid = aki.optional(0x80);
          if (kid !== undefined) authorityKeyId = Buffer.from(kid.content);
        }
      }
    }
    info = { subjectName: Buffer.from(subject.raw), keyId: keyId ?? keyIdFromSpki(spki.raw), authorityKeyId: authorityKeyId ?? null };
  } catch (e) {
    if (isSepalError(e)) throw new TypeError(`cannot read CA certificate: ${e.message}`);
    throw e;
  }
  caInfoCache.set(certDer, info);
  return info;
}
