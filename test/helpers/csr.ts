// Test-side PKCS#10 builder (the agent's own CSR code arrives with enrollment): a key pair made
// here, a CSR signed with it, and knobs to make bad ones.
import crypto from 'node:crypto';
import { contextTag, sequence, set, integer, oid, bitString, tlv, boolean, octetString } from '../../hub/ca/der.ts';
import { nameDer } from '../../hub/ca/x509.ts';

export interface TestKey {
  readonly privateKey: crypto.KeyObject;
  readonly publicKey: crypto.KeyObject;
  readonly spkiDer: Buffer;
  readonly keyPem: string;
}

export function newKey(curve: 'P-256' | 'P-384' = 'P-256'): TestKey {
  const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: curve });
  return { privateKey, publicKey, spkiDer: publicKey.export({ type: 'spki', format: 'der' }), keyPem: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString() };
}

const EXT_REQUEST = '1.2.840.113549.1.9.14';
const BASIC_CONSTRAINTS = '2.5.29.19';

export function makeCsr(key: TestKey, opts: { cn?: string; askForCa?: boolean; corruptSignature?: boolean; hash?: 'sha256' | 'sha384' } = {}): Buffer {
  const attrs = opts.askForCa === true
    ? [sequence(oid(EXT_REQUEST), set(sequence(sequence(oid(BASIC_CONSTRAINTS), boolean(true), octetString(sequence(boolean(true)))))))]
    : [];
  const info = sequence(integer(0), nameDer([['2.5.4.3', opts.cn ?? 'whatever-the-csr-says']]), key.spkiDer, tlv(contextTag(0, true), ...attrs));
  const hash = opts.hash ?? 'sha256';
  const sig = crypto.sign(hash, info, key.privateKey);
  if (opts.corruptSignature === true) sig[sig.length - 3] = (sig[sig.length - 3] ?? 0) ^ 0x55;
  const alg = sequence(oid(hash === 'sha256' ? '1.2.840.10045.4.3.2' : '1.2.840.10045.4.3.3'));
  return sequence(info, alg, bitString(sig));
}
