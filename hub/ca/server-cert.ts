// TLS server certificates for services next to the hub (the OpenVPN server), issued by the
// issuing CA: EKU serverAuth only, so no node can act as a server and no server as a node; the
// names become the SAN (DNS or IP) and the first one the CN, which clients check by name.
import crypto from 'node:crypto';
import { hostGeneralName } from './bootstrap.ts';
import type { IssuerMaterial } from './certificate.ts';
import {
  KeyUsageBit, OID, authorityKeyIdExt, basicConstraintsExt, buildCertificate, caInfo, checkIssuerMaterial, extKeyUsageExt,
  keyIdFromSpki, keyUsageExt, nameDer, subjectAltNameExt, subjectKeyIdExt,
} from './x509.ts';

export interface ServerCertRequest {
  /** SubjectPublicKeyInfo DER (from a verified CSR, or a key made here). */
  readonly spkiDer: Buffer;
  /** DNS names and/or IP literals; the first (lower-cased) is also the CN. */
  readonly names: readonly string[];
  readonly notBefore: Date;
  /** Clamped to the issuing CA's own notAfter. */
  readonly notAfter: Date;
  readonly serial: Buffer;
}

export function issueServerCert(issuer: IssuerMaterial, req: ServerCertRequest): { der: Buffer; notAfter: Date } {
  checkIssuerMaterial(issuer);
  const first = req.names[0];
  if (first === undefined || first.length > 64) throw new TypeError('a server certificate needs 1..64-character names');
  const sans: Buffer[] = [];
  const seen = new Set<string>();
  for (const n of req.names) {
    const gn = hostGeneralName(n);
    if (!seen.has(gn.toString('hex'))) sans.push(gn);
    seen.add(gn.toString('hex'));
  }
  const caNotAfter = new Date(issuer.cert.validTo);
  const notAfter = req.notAfter.getTime() > caNotAfter.getTime() ? caNotAfter : req.notAfter;
  const info = caInfo(issuer.certDer);
  const der = buildCertificate({
    serial: req.serial,
    issuerName: info.subjectName,
    subjectName: nameDer([[OID.commonName, first.toLowerCase()]]),
    notBefore: req.notBefore,
    notAfter,
    spkiDer: req.spkiDer,
    extensions: [
      basicConstraintsExt(false),
      keyUsageExt([KeyUsageBit.digitalSignature]),
      extKeyUsageExt([OID.serverAuth]),
      subjectKeyIdExt(keyIdFromSpki(req.spkiDer)),
      authorityKeyIdExt(info.keyId),
      subjectAltNameExt(sans),
    ],
  }, issuer.key);
  return { der, notAfter };
}

/** A fresh P-256 key for a server certificate: PKCS#8 PEM and its SPKI DER. */
export function newServerKey(): { keyPem: string; spkiDer: Buffer } {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }), spkiDer: publicKey.export({ type: 'spki', format: 'der' }) };
}
