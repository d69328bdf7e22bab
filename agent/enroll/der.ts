// A tiny DER writer (just what a PKCS#10 request needs) and PEM armour (RFC 7468). The writer
// returns encoded Buffers that callers nest; it never parses: certificates are read by node:crypto.
export const Tag = {
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** One element: identifier octet, definite minimal length, contents. Low tag numbers only. */
export function tlv(tag: number, ...contents: readonly Buffer[]): Buffer {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) throw new TypeError(`unsupported DER tag ${tag}`);
  const body = Buffer.concat(contents);
  const len = body.length;
  let header: Buffer;
  if (len < 0x80) {
    header = Buffer.of(tag, len);
  } else {
    const lenBytes: number[] = [];
    for (let n = len; n > 0; n = Math.floor(n / 256)) lenBytes.unshift(n & 0xff);
    if (lenBytes.length > 4) throw new TypeError('DER element too large');
    header = Buffer.of(tag, 0x80 | lenBytes.length, ...lenBytes);
  }
  return Buffer.concat([header, body]);
}

export function sequence(...items: readonly Buffer[]): Buffer {
  return tlv(Tag.SEQUENCE, ...items);
}

/** SET OF: DER orders the encodings ascending. */
export function set(...items: readonly Buffer[]): Buffer {
  return tlv(Tag.SET, ...[...items].sort((a, b) => Buffer.compare(a, b)));
}

/** A small non-negative INTEGER (versions). */
export function smallInteger(n: number): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 0x7f) throw new TypeError(`smallInteger out of range: ${n}`);
  return Buffer.of(Tag.INTEGER, 1, n);
}

/** OBJECT IDENTIFIER from dotted decimal ("2.5.4.3"). */
export function oid(dotted: string): Buffer {
  if (!/^[0-2](\.(0|[1-9][0-9]*))+$/.test(dotted)) throw new TypeError(`bad OID ${dotted}`);
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const [first, second] = arcs as [bigint, bigint];
  if (first < 2n && second >= 40n) throw new TypeError(`bad OID ${dotted}`);
  const bytes: number[] = [];
  for (const arc of [first * 40n + second, ...arcs.slice(2)]) {
    const group = [Number(arc & 0x7fn)];
    for (let rest = arc >> 7n; rest > 0n; rest >>= 7n) group.unshift(Number(rest & 0x7fn) | 0x80);
    bytes.push(...group);
  }
  return tlv(Tag.OID, Buffer.from(bytes));
}

export function utf8String(s: string): Buffer {
  if (!s.isWellFormed()) throw new TypeError('UTF8String: lone surrogate');
  return tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
}

/** BIT STRING of whole bytes (signatures): no unused bits. */
export function bitString(bytes: Buffer): Buffer {
  return tlv(Tag.BIT_STRING, Buffer.of(0), bytes);
}

/** `[n] IMPLICIT` constructed (e.g. the attributes SET of a CSR). */
export function contextConstructed(n: number, ...contents: readonly Buffer[]): Buffer {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new TypeError(`context tag out of range: ${n}`);
  return tlv(0xa0 | n, ...contents);
}

// ---- PEM ----

/** PEM text with 64-character lines and a final newline. */
export function derToPem(der: Buffer, label: string): string {
  const b64 = der.toString('base64');
  let body = '';
  for (let i = 0; i < b64.length; i += 64) body += b64.slice(i, i + 64) + '\n';
  return `-----BEGIN ${label}-----\n${body}-----END ${label}-----\n`;
}

const BLOCK_RE = /-----BEGIN ([A-Z0-9 ]+)-----\r?\n([A-Za-z0-9+/=\s]*?)-----END ([A-Z0-9 ]+)-----/g;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The DER of every `label` block in `text`, in order; null when the text is not clean PEM
 *  (something other than whitespace between blocks, mismatched labels, bad base64, no block). */
export function pemBlocks(text: string, label: string): Buffer[] | null {
  const out: Buffer[] = [];
  let last = 0;
  for (const m of text.matchAll(BLOCK_RE)) {
    if (text.slice(last, m.index).trim() !== '') return null;
    const [, begin, body, end] = m as unknown as [string, string, string, string];
    if (begin !== end || begin !== label) return null;
    const b64 = body.replace(/\s+/g, '');
    if (!BASE64_RE.test(b64) || b64.length === 0) return null;
    out.push(Buffer.from(b64, 'base64'));
    last = m.index + m[0].length;
  }
  if (text.slice(last).trim() !== '' || out.length === 0) return null;
  return out;
}
