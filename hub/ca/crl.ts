// v2 CRLs (RFC 5280 section 5) signed by the issuing CA, with cRLNumber and authorityKeyIdentifier.
import { Tag, explicit, integer, sequence, time, tlv } from './der.ts';
import type { IssuerMaterial } from './certificate.ts';
import { ECDSA_SHA256_ALG, OID, authorityKeyIdExt, caInfo, checkIssuerMaterial, checkSerial, extension, signEcdsaSha256 } from './x509.ts';
import { derToPem } from './pem.ts';

export interface CrlOptions {
  /** serialHex as in IssuedCert (hex of the INTEGER content, any case). */
  readonly revoked: ReadonlyArray<{ readonly serialHex: string; readonly revokedAt: Date }>;
  readonly thisUpdate: Date;
  readonly nextUpdate: Date;
  /** Monotonically increasing, 0 .. 2^159-1 (at most 20 octets). */
  readonly crlNumber: bigint;
}

const VERSION_V2 = integer(1);

function checkDate(what: string, d: Date): void {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new TypeError(`${what} must be a valid Date`);
}

/** A DER CertificateList signed (ecdsa-with-SHA256) by `issuer`. Revoked entries appear in the given order. */
export function buildCrl(issuer: IssuerMaterial, opts: CrlOptions): Buffer {
  checkIssuerMaterial(issuer);
  checkDate('thisUpdate', opts.thisUpdate);
  checkDate('nextUpdate', opts.nextUpdate);
  if (!(opts.nextUpdate.getTime() > opts.thisUpdate.getTime())) throw new TypeError('nextUpdate must be after thisUpdate');
  if (typeof opts.crlNumber !== 'bigint' || opts.crlNumber < 0n || opts.crlNumber >= 1n << 159n) {
    throw new TypeError('crlNumber must be a bigint in 0 .. 2^159-1');
  }
  const info = caInfo(issuer.certDer);

  const seen = new Set<string>();
  const entries: Buffer[] = [];
  for (const r of opts.revoked) {
    if (typeof r.serialHex !== 'string' || !/^(?:[0-9a-fA-F]{2})+$/.test(r.serialHex)) throw new TypeError(`bad serialHex: ${String(r.serialHex)}`);
    const serialHex = r.serialHex.toLowerCase();
    if (seen.has(serialHex)) throw new TypeError(`serial listed twice: ${serialHex}`);
    seen.add(serialHex);
    const serial = Buffer.from(serialHex, 'hex');
    checkSerial(serial);
    checkDate('revokedAt', r.revokedAt);
    entries.push(sequence(tlv(Tag.INTEGER, serial), time(r.revokedAt)));
  }

  const parts = [VERSION_V2, ECDSA_SHA256_ALG, info.subjectName, time(opts.thisUpdate), time(opts.nextUpdate)];
  // An empty revokedCertificates list must be absent, not an empty SEQUENCE.
  if (entries.length > 0) parts.push(sequence(...entries));
  parts.push(explicit(0, sequence(authorityKeyIdExt(info.keyId), extension(OID.cRLNumber, false, integer(opts.crlNumber)))));
  return signEcdsaSha256(sequence(...parts), issuer.key);
}

export function crlToPem(der: Buffer): string {
  return derToPem(der, 'X509 CRL');
}
