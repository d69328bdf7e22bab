// OpenVPN's static key file ("OpenVPN Static key V1"): 2048 random bits as 16 lines of 32 hex
// digits between BEGIN/END markers, exactly what `openvpn --genkey tls-crypt` writes. Made here so
// the hub needs no openvpn binary; the integration test loads the result in the real openvpn.
import crypto from 'node:crypto';
import { SepalError, ErrorCodes } from '../errors.ts';

export const STATIC_KEY_BYTES = 256;
const BEGIN = '-----BEGIN OpenVPN Static key V1-----';
const END = '-----END OpenVPN Static key V1-----';
const LINE_BYTES = 16;

/** The key file text for 256 key bytes (fresh random ones when none are given). */
export function formatStaticKey(key: Buffer = crypto.randomBytes(STATIC_KEY_BYTES)): string {
  if (!Buffer.isBuffer(key) || key.length !== STATIC_KEY_BYTES) throw new TypeError(`a static key is ${STATIC_KEY_BYTES} bytes`);
  const lines: string[] = [];
  for (let i = 0; i < key.length; i += LINE_BYTES) lines.push(key.subarray(i, i + LINE_BYTES).toString('hex'));
  return `#\n# 2048 bit OpenVPN static key\n#\n${BEGIN}\n${lines.join('\n')}\n${END}\n`;
}

/** The 256 key bytes of a static key file; SepalError(code) when it is not one. Comment lines
 *  (`#`) and blank lines outside the block are allowed, as openvpn allows them. */
export function parseStaticKey(text: string, code: typeof ErrorCodes[keyof typeof ErrorCodes] = ErrorCodes.INVALID_ARGUMENT): Buffer {
  const lines = text.split(/\r?\n/).map((l) => l.trim());
  const begin = lines.indexOf(BEGIN);
  const end = lines.indexOf(END);
  if (begin < 0 || end < begin) throw new SepalError(code, 'not an OpenVPN static key file (no V1 block)');
  const outside = [...lines.slice(0, begin), ...lines.slice(end + 1)];
  if (outside.some((l) => l !== '' && !l.startsWith('#'))) throw new SepalError(code, 'unexpected text outside the static key block');
  const hex = lines.slice(begin + 1, end).join('');
  if (!/^[0-9a-fA-F]*$/.test(hex) || hex.length !== STATIC_KEY_BYTES * 2) {
    throw new SepalError(code, `static key block must hold ${STATIC_KEY_BYTES} bytes of hex`);
  }
  return Buffer.from(hex, 'hex');
}
