// The node's two key pairs, made on this host and held only in memory until the hub has answered:
// P-256 for the TLS client certificate, P-384 for Flower's SuperNode authentication.
import crypto from 'node:crypto';

export interface KeyPair {
  readonly publicKey: crypto.KeyObject;
  readonly privateKey: crypto.KeyObject;
}

export interface NodeKeys {
  /** ECDSA P-256: the key of the hub-issued client certificate. */
  readonly tls: KeyPair;
  /** ECDSA P-384: Flower's node authentication key (registered with the SuperLink by the hub). */
  readonly flower: KeyPair;
}

export function generateNodeKeys(): NodeKeys {
  return {
    tls: crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' }),
    flower: crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }),
  };
}

/** SubjectPublicKeyInfo, DER: how a certificate's key is compared with ours. */
export function spkiDer(key: crypto.KeyObject): Buffer {
  return key.export({ type: 'spki', format: 'der' });
}

/** PKCS#8 PEM, unencrypted: the file is protected by its mode (0600) and the state dir (0700). */
export function pkcs8Pem(key: crypto.KeyObject): string {
  return key.export({ type: 'pkcs8', format: 'pem' }).toString();
}
