// PEM (RFC 7468) <-> DER. Strict: the base64 body may hold only base64 characters and whitespace,
// BEGIN and END labels must match, and nothing but whitespace may sit outside the blocks.
import { SepalError, ErrorCodes, type ErrorCode } from '../errors.ts';

export interface PemBlock {
  readonly label: string;
  readonly der: Buffer;
}

const BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\s]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Every PEM block in `text`, in order. Throws SepalError(code) on anything malformed or when there is no block. */
export function decodePemBlocks(text: string, code: ErrorCode = ErrorCodes.INVALID_ARGUMENT): PemBlock[] {
  if (typeof text !== 'string') throw new TypeError('PEM text must be a string');
  const blocks: PemBlock[] = [];
  let last = 0;
  for (const m of text.matchAll(BLOCK_RE)) {
    if (text.slice(last, m.index).trim() !== '') throw new SepalError(code, 'PEM: unexpected text between blocks');
    const [, begin, body, end] = m as unknown as [string, string, string, string];
    if (begin !== end) throw new SepalError(code, 'PEM: BEGIN and END labels differ');
    const b64 = body.replace(/\s+/g, '');
    if (!BASE64_RE.test(b64)) throw new SepalError(code, 'PEM: bad base64');
    const der = Buffer.from(b64, 'base64');
    if (der.length === 0) throw new SepalError(code, 'PEM: empty block');
    blocks.push({ label: begin, der });
    last = m.index + m[0].length;
  }
  if (text.slice(last).trim() !== '') throw new SepalError(code, 'PEM: unexpected text after the last block');
  if (blocks.length === 0) throw new SepalError(code, 'PEM: no block found');
  return blocks;
}

/** DER of every PEM block (of the given label only, when one is given), in order. */
export function pemToDerList(pem: string, label?: string): Buffer[] {
  return decodePemBlocks(pem).filter((b) => label === undefined || b.label === label).map((b) => b.der);
}

/** PEM text with 64-character lines and a final newline. */
export function derToPem(der: Buffer, label: string): string {
  if (!Buffer.isBuffer(der) || der.length === 0) throw new TypeError('derToPem needs a non-empty Buffer');
  if (!/^[A-Z0-9]+(?: [A-Z0-9]+)*$/.test(label)) throw new TypeError(`bad PEM label: ${label}`);
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}
