// Manifest signing keys (ES256 / P-256) and the JWKS agents verify with. A private key lives only
// in `<keysDir>/<kid>.key.pem` (PKCS#8, 0600); its public JWK sits beside it and in the store.
// kid = RFC 7638 thumbprint, so a kid names exactly one key and loading re-checks that it does.
import crypto, { type KeyObject } from 'node:crypto';
import fs, { type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { calculateJwkThumbprint, type JWK } from 'jose';
import { SepalError, ErrorCodes } from '../errors.ts';
import { writeFileAtomicSync } from '../fsutil.ts';
import type { SigningKeyRecord } from '../store/store.ts';

const ALG = 'ES256';
const CURVE_NODE = 'prime256v1';
const CURVE_JWK = 'P-256';
/** A base64url SHA-256 thumbprint; also keeps a kid from naming a path outside keysDir. */
const KID_RE = /^[A-Za-z0-9_-]{43}$/;

export interface PublicSigningKey {
  readonly kid: string;
  readonly publicJwk: JWK;
}

export interface PrivateSigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

function keyPath(keysDir: string, kid: string): string {
  return path.join(keysDir, `${kid}.key.pem`);
}

function jwkPath(keysDir: string, kid: string): string {
  return path.join(keysDir, `${kid}.jwk.json`);
}

/** The public members of an EC P-256 JWK, nothing else (never `d`). */
function ecPublicMembers(jwk: object): { kty: 'EC'; crv: 'P-256'; x: string; y: string } | null {
  const { kty, crv, x, y } = jwk as Readonly<Record<string, unknown>>;
  if (kty !== 'EC' || crv !== CURVE_JWK || typeof x !== 'string' || typeof y !== 'string') return null;
  if (!/^[A-Za-z0-9_-]{43}$/.test(x) || !/^[A-Za-z0-9_-]{43}$/.test(y)) return null;
  return { kty, crv, x, y };
}

function publicJwkOf(key: KeyObject): { kty: 'EC'; crv: 'P-256'; x: string; y: string } {
  const pub = ecPublicMembers(crypto.createPublicKey(key).export({ format: 'jwk' }));
  if (pub === null) throw new TypeError('not an EC P-256 key');
  return pub;
}

/** Makes a new key pair and writes both files atomically. The caller records it in the store. */
export async function generateSigningKey(keysDir: string): Promise<PublicSigningKey> {
  const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: CURVE_NODE });
  const members = publicJwkOf(privateKey);
  const kid = await calculateJwkThumbprint(members, 'sha256');
  const publicJwk: JWK = { ...members, kid, alg: ALG, use: 'sig' };
  await fs.mkdir(keysDir, { recursive: true, mode: 0o700 });
  const pem = privateKey.export({ format: 'pem', type: 'pkcs8' });
  writeFileAtomicSync(keyPath(keysDir, kid), pem, 0o600);
  writeFileAtomicSync(jwkPath(keysDir, kid), JSON.stringify(publicJwk, null, 2) + '\n', 0o644);
  return { kid, publicJwk };
}

/** Reads `<kid>.key.pem`. Refuses (CONFIG_INVALID) a file that is not a regular file, is open to
 *  group/others or executable, is not a P-256 key, or whose thumbprint is not `kid`. */
export async function loadSigningKey(keysDir: string, kid: string): Promise<PrivateSigningKey> {
  if (!KID_RE.test(kid)) throw new SepalError(ErrorCodes.CONFIG_INVALID, `malformed manifest signing key id "${kid}"`);
  const file = keyPath(keysDir, kid);
  let pem: string;
  // Mode is checked on the open descriptor (no race with a swap of the path), and a symlink is
  // not followed: the key must be the file in keysDir itself.
  let handle: FileHandle;
  try {
    handle = await fs.open(file, fs.constants.O_RDONLY | (fs.constants.O_NOFOLLOW ?? 0));
  } catch (e) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `cannot open manifest signing key ${file}`, { cause: e });
  }
  try {
    const st = await handle.stat();
    if (!st.isFile()) throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key ${file} is not a regular file`);
    // Windows has no POSIX modes; there the data dir's ACL protects the key.
    if (process.platform !== 'win32' && (st.mode & 0o777 & ~0o600) !== 0) {
      throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key ${file} has mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}; it must be 0600 or stricter`);
    }
    pem = await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
  let privateKey: KeyObject;
  try {
    privateKey = crypto.createPrivateKey({ key: pem, format: 'pem' });
  } catch (e) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key ${file} is not a readable unencrypted private key`, { cause: e });
  }
  if (privateKey.asymmetricKeyType !== 'ec' || privateKey.asymmetricKeyDetails?.namedCurve !== CURVE_NODE) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key ${file} is not an EC P-256 key`);
  }
  const actual = await calculateJwkThumbprint(publicJwkOf(privateKey), 'sha256');
  if (actual !== kid) throw new SepalError(ErrorCodes.CONFIG_INVALID, `manifest signing key ${file} does not match its key id (thumbprint ${actual})`);
  return { kid, privateKey };
}

/** Which keys the JWKS lists at `now`: the active key (retiredAt null) and every retired key
 *  that signed a manifest still unexpired at `now`. A retired key that signed nothing, or whose
 *  last manifest has expired, is dropped. Pure; `lastExpiryForKid` is asked about retired keys
 *  only. Active key first, then retired keys newest first. */
export function publishedKeys(keys: readonly SigningKeyRecord[], lastExpiryForKid: (kid: string) => number | null, now: number): JWK[] {
  const kept = keys.filter((k) => {
    if (k.retiredAt === null) return true;
    const expiry = lastExpiryForKid(k.kid);
    return expiry !== null && expiry > now;
  });
  kept.sort((a, b) => Number(b.retiredAt === null) - Number(a.retiredAt === null) || b.createdAt - a.createdAt);
  return kept.map((k) => {
    let stored: unknown;
    try {
      stored = JSON.parse(k.publicJwk);
    } catch (e) {
      throw new SepalError(ErrorCodes.INTERNAL, `stored public key ${k.kid} is not JSON`, { cause: e });
    }
    const members = stored !== null && typeof stored === 'object' ? ecPublicMembers(stored) : null;
    if (members === null) throw new SepalError(ErrorCodes.INTERNAL, `stored public key ${k.kid} is not an EC P-256 public JWK`);
    return { ...members, kid: k.kid, alg: ALG, use: 'sig' };
  });
}

/** The JWKS document (`/.well-known/jwks.json`). */
export function jwks(keys: readonly JWK[]): { keys: JWK[] } {
  return { keys: [...keys] };
}
