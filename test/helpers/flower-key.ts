// A Flower-style (OpenSSH ecdsa-sha2-nistp384) public key line for hub-side tests.
import crypto from 'node:crypto';

function sshString(b: Buffer | string): Buffer {
  const v = typeof b === 'string' ? Buffer.from(b) : b;
  const len = Buffer.alloc(4);
  len.writeUInt32BE(v.length);
  return Buffer.concat([len, v]);
}

export function flowerPublicKeyLine(): string {
  const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = publicKey.export({ format: 'jwk' });
  const point = Buffer.concat([Buffer.from([4]), Buffer.from(jwk.x ?? '', 'base64url'), Buffer.from(jwk.y ?? '', 'base64url')]);
  const blob = Buffer.concat([sshString('ecdsa-sha2-nistp384'), sshString('nistp384'), sshString(point)]);
  return `ecdsa-sha2-nistp384 ${blob.toString('base64')} test`;
}
