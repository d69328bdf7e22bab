// Leaf (node client) certificates, issued by the issuing CA. Everything that does not change from
// one leaf to the next (issuer Name, AKI, algorithm identifier, the fixed extensions) is encoded
// once in the constructor; issue() only encodes serial, validity, subject, SKI and SAN, then signs.
import crypto from 'node:crypto';
import { Tag, explicit, sequence, tlv } from './der.ts';
import {
  ECDSA_SHA256_ALG, KeyUsageBit, OID, VERSION_V3, authorityKeyIdExt, basicConstraintsExt, caInfo, checkSerial,
  checkIssuerMaterial, extKeyUsageExt, keyIdFromSpki, keyUsageExt, nameDer, signEcdsaSha256, subjectAltNameExt,
  subjectKeyIdExt, uriName, validityDer,
} from './x509.ts';

export interface IssuerMaterial {
  readonly cert: crypto.X509Certificate;
  /** DER of `cert` (the same bytes as cert.raw). */
  readonly certDer: Buffer;
  /** The CA's private key: EC P-256. */
  readonly key: crypto.KeyObject;
}

export interface LeafRequest {
  /** SubjectPublicKeyInfo DER, normally VerifiedCsr.spkiDer. */
  readonly spkiDer: Buffer;
  /** Goes into the subject CN. 1..64 characters. */
  readonly nodeId: string;
  /** Goes into the subject O. 1..64 characters. */
  readonly org: string;
  /** The one SAN, a uniformResourceIdentifier (printable ASCII with a scheme). */
  readonly uri: string;
  /** Milliseconds are dropped (X.509 times have whole seconds). */
  readonly notBefore: Date;
  readonly notAfter: Date;
  /** Content of a positive, minimally encoded INTEGER (1..20 bytes), normally from randomSerial(). */
  readonly serial: Buffer;
}

export interface IssuedCert {
  readonly der: Buffer;
  /** Lowercase hex of the serialNumber INTEGER content (= req.serial). */
  readonly serialHex: string;
  /** SHA-256 of `der`, lowercase hex. */
  readonly fingerprint: string;
}

// Serials come from a pool refilled 4 KiB at a time: one CSPRNG call per 256 serials instead of
// one per serial (each call costs several microseconds on the issuance hot path).
const POOL_BYTES = 4096;
let pool = Buffer.alloc(0);
let poolOffset = 0;

/** 16 random bytes, first byte in 0x01..0x7f: a positive INTEGER whose content is exactly these 16 bytes (>= 120 random bits). */
export function randomSerial(): Buffer {
  if (poolOffset + 16 > pool.length) {
    pool = crypto.randomBytes(POOL_BYTES);
    poolOffset = 0;
  }
  const b = Buffer.from(pool.subarray(poolOffset, poolOffset + 16));
  // Never hand the same bytes out twice.
  pool.fill(0, poolOffset, poolOffset + 16);
  poolOffset += 16;
  b[0] = (b[0]! & 0x7f) || 0x01;
  return b;
}

const URI_RE = /^[A-Za-z][A-Za-z0-9+.-]*:[\x21-\x7e]+$/;

function checkRdnValue(what: string, v: string): void {
  if (typeof v !== 'string' || v.length === 0 || v.length > 64 || !v.isWellFormed() || /[\x00-\x1f\x7f]/.test(v)) {
    throw new TypeError(`${what} must be 1..64 printable characters`);
  }
}

function checkDate(what: string, d: Date): void {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new TypeError(`${what} must be a valid Date`);
}

/** Issues node client certificates with the issuing CA. Construct once per CA, reuse for every leaf. */
export class LeafIssuer {
  readonly #key: crypto.KeyObject;
  readonly #issuerName: Buffer;
  readonly #fixedExts: Buffer; // basicConstraints, keyUsage, extKeyUsage, authorityKeyIdentifier

  constructor(issuer: IssuerMaterial) {
    checkIssuerMaterial(issuer);
    const info = caInfo(issuer.certDer);
    this.#key = issuer.key;
    this.#issuerName = info.subjectName;
    this.#fixedExts = Buffer.concat([
      basicConstraintsExt(false),
      keyUsageExt([KeyUsageBit.digitalSignature]),
      extKeyUsageExt([OID.clientAuth]),
      authorityKeyIdExt(info.keyId),
    ]);
  }

  issue(req: LeafRequest): IssuedCert {
    checkSerial(req.serial);
    checkRdnValue('nodeId', req.nodeId);
    checkRdnValue('org', req.org);
    if (typeof req.uri !== 'string' || !URI_RE.test(req.uri)) throw new TypeError('uri must be an absolute URI in printable ASCII');
    checkDate('notBefore', req.notBefore);
    checkDate('notAfter', req.notAfter);
    if (Math.floor(req.notAfter.getTime() / 1000) <= Math.floor(req.notBefore.getTime() / 1000)) {
      throw new TypeError('notAfter must be at least a second after notBefore');
    }
    if (!Buffer.isBuffer(req.spkiDer)) throw new TypeError('spkiDer must be a Buffer');
    const keyId = keyIdFromSpki(req.spkiDer); // also checks spkiDer is well-formed

    const tbs = sequence(
      VERSION_V3,
      tlv(Tag.INTEGER, req.serial),
      ECDSA_SHA256_ALG,
      this.#issuerName,
      validityDer(req.notBefore, req.notAfter),
      nameDer([[OID.organizationName, req.org], [OID.commonName, req.nodeId]]),
      req.spkiDer,
      explicit(3, sequence(this.#fixedExts, subjectKeyIdExt(keyId), subjectAltNameExt([uriName(req.uri)]))),
    );
    const der = signEcdsaSha256(tbs, this.#key);
    return {
      der,
      serialHex: req.serial.toString('hex'),
      fingerprint: crypto.hash('sha256', der, 'hex'),
    };
  }
}
