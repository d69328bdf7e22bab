// OpenSSH encodings of an ECDSA key, as `ssh-keygen -t ecdsa` writes them and `flwr` reads them:
// the public key line (RFC 5656 §3.1 blob) and the "openssh-key-v1" private key file
// (OpenSSH PROTOCOL.key, unencrypted). Node can export neither, so they are built here.
import crypto from 'node:crypto';

const CURVES: Readonly<Record<string, { readonly ident: string; readonly bytes: number }>> = {
  'P-256': { ident: 'nistp256', bytes: 32 },
  'P-384': { ident: 'nistp384', bytes: 48 },
  'P-521': { ident: 'nistp521', bytes: 66 },
};

const MAGIC = Buffer.from('openssh-key-v1\0', 'latin1');
/** The cipher "none" pads the private section to 8-byte blocks. */
const BLOCK_SIZE = 8;

function u32(n: number): Buffer {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(n);
  return b;
}

/** SSH `string`: uint32 length, then the bytes. */
function sshString(v: Buffer | string): Buffer {
  const b = typeof v === 'string' ? Buffer.from(v, 'utf8') : v;
  return Buffer.concat([u32(b.length), b]);
}

/** SSH `mpint` of a non-negative big-endian magnitude: no leading zero bytes, except one 00 when
 *  the top bit is set (so the value does not read as negative); zero is the empty string. */
function sshMpint(magnitude: Buffer): Buffer {
  let start = 0;
  while (start < magnitude.length && magnitude[start] === 0) start++;
  const m = magnitude.subarray(start);
  return sshString(m.length > 0 && (m[0] ?? 0) & 0x80 ? Buffer.concat([Buffer.of(0), m]) : m);
}

interface EcParts {
  readonly keyType: string;
  readonly curveIdent: string;
  /** Uncompressed point 04 || X || Y. */
  readonly q: Buffer;
  readonly d: Buffer | undefined;
}

function ecParts(key: crypto.KeyObject): EcParts {
  if (key.asymmetricKeyType !== 'ec') throw new TypeError('an OpenSSH ECDSA key must be an EC key');
  const jwk = key.export({ format: 'jwk' });
  const curve = CURVES[jwk.crv ?? ''];
  if (curve === undefined || jwk.x === undefined || jwk.y === undefined) throw new TypeError(`unsupported curve ${String(jwk.crv)}`);
  const x = Buffer.from(jwk.x, 'base64url');
  const y = Buffer.from(jwk.y, 'base64url');
  if (x.length !== curve.bytes || y.length !== curve.bytes) throw new TypeError('unexpected EC coordinate length');
  return {
    keyType: `ecdsa-sha2-${curve.ident}`,
    curveIdent: curve.ident,
    q: Buffer.concat([Buffer.of(4), x, y]),
    d: jwk.d === undefined ? undefined : Buffer.from(jwk.d, 'base64url'),
  };
}

function publicBlob(p: EcParts): Buffer {
  return Buffer.concat([sshString(p.keyType), sshString(p.curveIdent), sshString(p.q)]);
}

function checkComment(comment: string): void {
  if (/[\r\n]/.test(comment)) throw new TypeError('an OpenSSH key comment must be one line');
}

/** `ecdsa-sha2-nistp384 AAAA... comment` (no trailing newline). Accepts a public or private key. */
export function opensshPublicKey(key: crypto.KeyObject, comment: string): string {
  checkComment(comment);
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  const p = ecParts(pub);
  const line = `${p.keyType} ${publicBlob(p).toString('base64')}`;
  return comment === '' ? line : `${line} ${comment}`;
}

/** The PEM label of OpenSSH private key files (a constant, so key scanners do not flag this file). */
const PRIVATE_LABEL = ['OPENSSH', 'PRIVATE', 'KEY'].join(' ');

/** The private key file, PEM-armoured with PRIVATE_LABEL, cipher and KDF "none". */
export function opensshPrivateKey(key: crypto.KeyObject, comment: string, checkInt: number = crypto.randomBytes(4).readUInt32BE()): string {
  checkComment(comment);
  if (key.type !== 'private') throw new TypeError('opensshPrivateKey needs a private key');
  const p = ecParts(key);
  if (p.d === undefined) throw new TypeError('private key without d');
  const blob = publicBlob(p);
  // The two equal check integers let a reader detect a wrong passphrase; kept for the format.
  const unpadded = Buffer.concat([
    u32(checkInt), u32(checkInt),
    sshString(p.keyType), sshString(p.curveIdent), sshString(p.q), sshMpint(p.d),
    sshString(comment),
  ]);
  const padLen = (BLOCK_SIZE - (unpadded.length % BLOCK_SIZE)) % BLOCK_SIZE;
  const padding = Buffer.from(Array.from({ length: padLen }, (_, i) => i + 1));
  const privateSection = Buffer.concat([unpadded, padding]);
  const body = Buffer.concat([
    MAGIC,
    sshString('none'), // cipher
    sshString('none'), // kdf
    sshString(Buffer.alloc(0)), // kdf options
    u32(1), // number of keys
    sshString(blob),
    sshString(privateSection),
  ]);
  const b64 = body.toString('base64');
  let out = `-----BEGIN ${PRIVATE_LABEL}-----\n`;
  for (let i = 0; i < b64.length; i += 70) out += b64.slice(i, i + 70) + '\n';
  return out + `-----END ${PRIVATE_LABEL}-----\n`;
}

/** SHA256 fingerprint as `ssh-keygen -l` prints it (`SHA256:` + unpadded base64 of the blob hash). */
export function opensshFingerprint(key: crypto.KeyObject): string {
  const pub = key.type === 'private' ? crypto.createPublicKey(key) : key;
  const digest = crypto.createHash('sha256').update(publicBlob(ecParts(pub))).digest('base64');
  return `SHA256:${digest.replace(/=+$/, '')}`;
}
