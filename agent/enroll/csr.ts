// PKCS#10 certification request (RFC 2986), DER, signed ecdsa-with-SHA256. The hub uses only the
// public key (it decides the subject itself); CN=<name> is there for humans reading the request.
import crypto from 'node:crypto';
import { contextConstructed, bitString, oid, sequence, set, smallInteger, utf8String } from './der.ts';
import { spkiDer } from './keys.ts';

const OID_COMMON_NAME = '2.5.4.3';
const OID_ECDSA_WITH_SHA256 = '1.2.840.10045.4.3.2';
/** X.520 ub-common-name. */
export const MAX_COMMON_NAME = 64;

export function buildCsr(privateKey: crypto.KeyObject, commonName: string): Buffer {
  if (privateKey.type !== 'private' || privateKey.asymmetricKeyType !== 'ec') throw new TypeError('buildCsr needs an EC private key');
  if (commonName.length === 0 || [...commonName].length > MAX_COMMON_NAME) throw new TypeError(`common name must be 1..${MAX_COMMON_NAME} characters`);
  const subject = sequence(set(sequence(oid(OID_COMMON_NAME), utf8String(commonName))));
  const info = sequence(
    smallInteger(0), // version v1
    subject,
    spkiDer(crypto.createPublicKey(privateKey)),
    contextConstructed(0), // attributes: an empty SET, present as RFC 2986 requires
  );
  // node:crypto signs EC keys with a DER Ecdsa-Sig-Value by default, which is what X.509 wants.
  const signature = crypto.sign('sha256', info, { key: privateKey, dsaEncoding: 'der' });
  return sequence(info, sequence(oid(OID_ECDSA_WITH_SHA256)), bitString(signature));
}
