// The node's Flower SuperNode public key, as `flwr` wants it: one OpenSSH line
// `ecdsa-sha2-nistp384 BASE64 [comment]` whose blob names the same curve and holds a P-384 point.
// The SuperLink's Control API takes the same key as PEM SubjectPublicKeyInfo (what
// `flwr supernode register` converts it to); flowerKeySpkiPem produces those exact bytes.
import crypto from 'node:crypto';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';

function readString(buf: Buffer, at: number): [Buffer, number] {
  if (at + 4 > buf.length) throw new RangeError('short');
  const n = buf.readUInt32BE(at);
  if (at + 4 + n > buf.length) throw new RangeError('short');
  return [buf.subarray(at + 4, at + 4 + n), at + 4 + n];
}

/** Parses the line into its normalised form and the public key, or throws FLOWER_KEY_INVALID. */
function parseFlowerPublicKey(line: string): { normalised: string; key: crypto.KeyObject } {
  const bad = (why: string): never => { throw new SepalError(ErrorCodes.FLOWER_KEY_INVALID, `Flower public key: ${why}`); };
  if (typeof line !== 'string' || line.length === 0 || line.length > 1024) bad('missing or too long');
  const [type, b64] = line.trim().split(/\s+/);
  if (type !== 'ecdsa-sha2-nistp384' || b64 === undefined || !/^[A-Za-z0-9+/]+={0,2}$/.test(b64)) bad('expected "ecdsa-sha2-nistp384 BASE64"');
  const blob = Buffer.from(b64 as string, 'base64');
  try {
    const [t, a] = readString(blob, 0);
    const [curve, b] = readString(blob, a);
    const [point, c] = readString(blob, b);
    if (t.toString() !== 'ecdsa-sha2-nistp384' || curve.toString() !== 'nistp384' || c !== blob.length) bad('blob does not describe a nistp384 key');
    if (point.length !== 97 || point[0] !== 0x04) bad('not an uncompressed P-384 point');
    // Let OpenSSL check that the point is on the curve.
    const key = crypto.createPublicKey({ key: { kty: 'EC', crv: 'P-384', x: point.subarray(1, 49).toString('base64url'), y: point.subarray(49).toString('base64url') }, format: 'jwk' });
    // Canonical base64 of the blob: one key has one spelling (the store compares them as text).
    return { normalised: `${type} ${blob.toString('base64')}`, key };
  } catch (e) {
    if (e instanceof SepalError) throw e;
    return bad('not a valid P-384 public key');
  }
}

/** Returns the normalised line (type and base64, no comment) or throws FLOWER_KEY_INVALID. */
export function checkFlowerPublicKey(line: string): string {
  return parseFlowerPublicKey(line).normalised;
}

/** The key as PEM SubjectPublicKeyInfo, byte for byte what Flower's own CLI sends to RegisterNode. */
export function flowerKeySpkiPem(line: string): Buffer {
  return Buffer.from(parseFlowerPublicKey(line).key.export({ type: 'spki', format: 'pem' }));
}

/** DER SubjectPublicKeyInfo of a PEM (or DER) public key, null when it is not one. For comparing
 *  keys independently of their PEM formatting. */
export function spkiDer(pemOrDer: Buffer): Buffer | null {
  try {
    const isPem = pemOrDer.subarray(0, 11).toString('latin1') === '-----BEGIN ';
    const key = crypto.createPublicKey(isPem ? { key: pemOrDer, format: 'pem' } : { key: pemOrDer, format: 'der', type: 'spki' });
    return key.export({ type: 'spki', format: 'der' });
  } catch {
    return null;
  }
}
