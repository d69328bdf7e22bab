// A minimal DER writer and a strict DER reader: just what X.509 certificates, CRLs and PKCS#10
// CSRs need. No object trees: the writer returns encoded Buffers that callers concatenate, the
// reader walks a Buffer in place and hands out zero-copy subarrays.
//
// Only low tag numbers (0..30) are supported, on both sides; X.509 never needs more.
// The reader rejects indefinite lengths, non-minimal lengths, lengths past the end, trailing
// bytes, non-minimal INTEGERs, BOOLEANs other than 00/FF and malformed OIDs and times. It throws
// SepalError with the code its creator chose (the input came from outside).
import { SepalError, ErrorCodes, type ErrorCode } from '../errors.ts';

export const Tag = {
  BOOLEAN: 0x01,
  INTEGER: 0x02,
  BIT_STRING: 0x03,
  OCTET_STRING: 0x04,
  NULL: 0x05,
  OID: 0x06,
  UTF8_STRING: 0x0c,
  PRINTABLE_STRING: 0x13,
  IA5_STRING: 0x16,
  UTC_TIME: 0x17,
  GENERALIZED_TIME: 0x18,
  SEQUENCE: 0x30,
  SET: 0x31,
} as const;

/** Identifier octet of a context-specific tag: `[n]`, constructed (EXPLICIT or IMPLICIT SET/SEQUENCE) or primitive. */
export function contextTag(n: number, constructed: boolean): number {
  if (!Number.isInteger(n) || n < 0 || n > 30) throw new TypeError(`context tag number out of range: ${n}`);
  return (constructed ? 0xa0 : 0x80) | n;
}

// ---------------------------------------------------------------------------------------------
// Writer

function checkTag(tag: number): void {
  if (!Number.isInteger(tag) || tag < 0 || tag > 0xff || (tag & 0x1f) === 0x1f) {
    throw new TypeError(`unsupported DER tag: ${tag}`);
  }
}

/** Encode one element: identifier octet, definite minimal length, then the contents in order. */
export function tlv(tag: number, ...contents: readonly Buffer[]): Buffer {
  checkTag(tag);
  let len = 0;
  for (const c of contents) len += c.length;
  const lenBytes = len < 0x80 ? 0 : len < 0x100 ? 1 : len < 0x10000 ? 2 : len < 0x1000000 ? 3 : 4;
  if (len > 0xffffffff) throw new TypeError('DER element too large');
  const out = Buffer.allocUnsafe(2 + lenBytes + len);
  out[0] = tag;
  let pos = 1;
  if (lenBytes === 0) {
    out[pos++] = len;
  } else {
    out[pos++] = 0x80 | lenBytes;
    for (let i = lenBytes - 1; i >= 0; i--) out[pos++] = Math.floor(len / 2 ** (8 * i)) & 0xff;
  }
  for (const c of contents) {
    c.copy(out, pos);
    pos += c.length;
  }
  return out;
}

export function sequence(...items: readonly Buffer[]): Buffer {
  return tlv(Tag.SEQUENCE, ...items);
}

/** SET OF: DER wants the encodings in ascending order, so they are sorted (the arguments are not touched). */
export function set(...items: readonly Buffer[]): Buffer {
  if (items.length <= 1) return tlv(Tag.SET, ...items);
  return tlv(Tag.SET, ...[...items].sort((a, b) => Buffer.compare(a, b)));
}

/**
 * INTEGER. A Buffer is an unsigned big-endian magnitude (leading zeros are dropped, a 00 is
 * prepended when the top bit is set); bigint and number may be negative.
 */
export function integer(v: Buffer | bigint | number): Buffer {
  if (typeof v === 'number') {
    if (!Number.isSafeInteger(v)) throw new TypeError(`not a safe integer: ${v}`);
    if (v >= 0 && v < 0x80) return Buffer.from([Tag.INTEGER, 1, v]);
    return integer(BigInt(v));
  }
  if (typeof v === 'bigint') {
    if (v >= 0n) {
      let hex = v.toString(16);
      if (hex.length % 2 === 1) hex = '0' + hex;
      if (parseInt(hex.slice(0, 2), 16) >= 0x80) hex = '00' + hex;
      return tlv(Tag.INTEGER, Buffer.from(hex, 'hex'));
    }
    let bytes = 1;
    while (v < -(1n << BigInt(8 * bytes - 1))) bytes++;
    const hex = ((1n << BigInt(8 * bytes)) + v).toString(16).padStart(2 * bytes, '0');
    return tlv(Tag.INTEGER, Buffer.from(hex, 'hex'));
  }
  let start = 0;
  while (start < v.length - 1 && v[start] === 0) start++;
  if (v.length === 0) return Buffer.from([Tag.INTEGER, 1, 0]);
  const mag = v.subarray(start);
  return (mag[0] ?? 0) >= 0x80 ? tlv(Tag.INTEGER, Buffer.of(0), mag) : tlv(Tag.INTEGER, mag);
}

const oidCache = new Map<string, Buffer>();

/** OBJECT IDENTIFIER from dotted decimal ("2.5.4.3"). Encodings are cached; do not mutate the result. */
export function oid(dotted: string): Buffer {
  const cached = oidCache.get(dotted);
  if (cached !== undefined) return cached;
  if (!/^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$/.test(dotted)) throw new TypeError(`bad OID: ${dotted}`);
  const arcs = dotted.split('.').map((a) => BigInt(a));
  const [first, second] = arcs as [bigint, bigint];
  if (first > 2n || (first < 2n && second >= 40n)) throw new TypeError(`bad OID: ${dotted}`);
  const bytes: number[] = [];
  for (const arc of [first * 40n + second, ...arcs.slice(2)]) {
    const group: number[] = [Number(arc & 0x7fn)];
    for (let rest = arc >> 7n; rest > 0n; rest >>= 7n) group.unshift(Number(rest & 0x7fn) | 0x80);
    bytes.push(...group);
  }
  const enc = tlv(Tag.OID, Buffer.from(bytes));
  oidCache.set(dotted, enc);
  return enc;
}

export function utf8String(s: string): Buffer {
  if (!s.isWellFormed()) throw new TypeError('UTF8String: string has lone surrogates');
  return tlv(Tag.UTF8_STRING, Buffer.from(s, 'utf8'));
}

export function printableString(s: string): Buffer {
  if (!/^[A-Za-z0-9 '()+,\-./:=?]*$/.test(s)) throw new TypeError('PrintableString: character outside the set');
  return tlv(Tag.PRINTABLE_STRING, Buffer.from(s, 'latin1'));
}

export function ia5String(s: string): Buffer {
  if (!/^[\x00-\x7f]*$/.test(s)) throw new TypeError('IA5String: non-ASCII character');
  return tlv(Tag.IA5_STRING, Buffer.from(s, 'latin1'));
}

/** BIT STRING; DER requires the unused trailing bits to be zero. */
export function bitString(bytes: Buffer, unusedBits = 0): Buffer {
  if (!Number.isInteger(unusedBits) || unusedBits < 0 || unusedBits > 7 || (bytes.length === 0 && unusedBits !== 0)) {
    throw new TypeError(`bad BIT STRING unused-bit count: ${unusedBits}`);
  }
  if (unusedBits > 0 && ((bytes[bytes.length - 1] ?? 0) & ((1 << unusedBits) - 1)) !== 0) {
    throw new TypeError('BIT STRING: unused bits must be zero');
  }
  return tlv(Tag.BIT_STRING, Buffer.of(unusedBits), bytes);
}

/** BIT STRING for a NamedBitList (e.g. KeyUsage): bit 0 is the most significant bit; trailing zero bits are dropped as DER requires. */
export function namedBits(bits: readonly number[]): Buffer {
  if (bits.length === 0) return bitString(Buffer.alloc(0));
  const max = Math.max(...bits);
  if (bits.some((b) => !Number.isInteger(b) || b < 0)) throw new TypeError('bad bit number');
  const bytes = Buffer.alloc((max >> 3) + 1);
  for (const b of bits) bytes[b >> 3]! |= 0x80 >> (b & 7);
  return bitString(bytes, 7 - (max & 7));
}

export function octetString(bytes: Buffer): Buffer {
  return tlv(Tag.OCTET_STRING, bytes);
}

const TRUE = Buffer.from([Tag.BOOLEAN, 1, 0xff]);
const FALSE = Buffer.from([Tag.BOOLEAN, 1, 0x00]);
const NULL = Buffer.from([Tag.NULL, 0]);

export function boolean(v: boolean): Buffer {
  return v ? TRUE : FALSE;
}

export function nullValue(): Buffer {
  return NULL;
}

function pad(n: number, width: number): string {
  return String(n).padStart(width, '0');
}

function timeDigits(d: Date): string {
  return pad(d.getUTCMonth() + 1, 2) + pad(d.getUTCDate(), 2) + pad(d.getUTCHours(), 2) + pad(d.getUTCMinutes(), 2) + pad(d.getUTCSeconds(), 2) + 'Z';
}

function checkDate(d: Date): number {
  if (!(d instanceof Date) || Number.isNaN(d.getTime())) throw new TypeError('invalid Date');
  return d.getUTCFullYear();
}

/** UTCTime YYMMDDHHMMSSZ (years 1950..2049). Milliseconds are dropped. */
export function utcTime(d: Date): Buffer {
  const y = checkDate(d);
  if (y < 1950 || y > 2049) throw new TypeError(`UTCTime cannot hold year ${y}`);
  return tlv(Tag.UTC_TIME, Buffer.from(pad(y % 100, 2) + timeDigits(d), 'latin1'));
}

/** GeneralizedTime YYYYMMDDHHMMSSZ (years 0..9999). Milliseconds are dropped. */
export function generalizedTime(d: Date): Buffer {
  const y = checkDate(d);
  if (y < 0 || y > 9999) throw new TypeError(`GeneralizedTime cannot hold year ${y}`);
  return tlv(Tag.GENERALIZED_TIME, Buffer.from(pad(y, 4) + timeDigits(d), 'latin1'));
}

/** X.509 Time per RFC 5280 4.1.2.5: UTCTime for 1950..2049, GeneralizedTime otherwise. */
export function time(d: Date): Buffer {
  const y = checkDate(d);
  return y >= 1950 && y < 2050 ? utcTime(d) : generalizedTime(d);
}

/** `[n] EXPLICIT`: a constructed context tag wrapping complete encodings. */
export function explicit(n: number, ...contents: readonly Buffer[]): Buffer {
  return tlv(contextTag(n, true), ...contents);
}

/**
 * `[n] IMPLICIT`: re-tag one complete encoding, keeping its constructed bit and contents.
 * E.g. implicit(6, ia5String(uri)) is a GeneralName uniformResourceIdentifier.
 */
export function implicit(n: number, encoded: Buffer): Buffer {
  const first = encoded[0];
  if (first === undefined) throw new TypeError('implicit: empty encoding');
  const out = Buffer.from(encoded);
  out[0] = contextTag(n, (first & 0x20) !== 0);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Reader

export interface DerElement {
  /** The identifier octet. */
  readonly tag: number;
  /** The contents octets (a subarray of the input). */
  readonly content: Buffer;
  /** Identifier, length and contents (a subarray of the input), e.g. the TBS bytes to verify. */
  readonly raw: Buffer;
}

export interface BitStringValue {
  readonly unusedBits: number;
  readonly bytes: Buffer;
}

const OID_CONTENT_RE = /^(?:[\x00-\x7f]|[\x81-\xff][\x80-\xff]*[\x00-\x7f])+$/;

/**
 * Reads consecutive DER elements from a Buffer. Every method that consumes an element checks
 * its tag; `sequence()`/`set()`/`enter()` return a reader over the contents; `end()` checks
 * nothing is left over. Errors are SepalErrors carrying `code`.
 */
const OID_DECODED = new Map<string, string>();

export class DerReader {
  readonly #buf: Buffer;
  readonly #code: ErrorCode;
  #pos = 0;

  constructor(buf: Buffer, code: ErrorCode = ErrorCodes.INVALID_ARGUMENT) {
    if (!Buffer.isBuffer(buf)) throw new TypeError('DerReader needs a Buffer');
    this.#buf = buf;
    this.#code = code;
  }

  /** Throws a SepalError with this reader's code. */
  fail(message: string, detail?: Record<string, unknown>): never {
    throw new SepalError(this.#code, message, detail === undefined ? {} : { detail });
  }

  get hasMore(): boolean {
    return this.#pos < this.#buf.length;
  }

  /** The identifier octet of the next element, or -1 at the end. */
  peekTag(): number {
    return this.#pos < this.#buf.length ? this.#buf[this.#pos]! : -1;
  }

  /** The next element, any tag unless `expectedTag` is given. */
  next(expectedTag?: number): DerElement {
    const buf = this.#buf;
    const start = this.#pos;
    if (start >= buf.length) this.fail('DER: unexpected end of data', { offset: start });
    const tag = buf[start]!;
    if ((tag & 0x1f) === 0x1f) this.fail('DER: high tag numbers are not supported', { offset: start });
    if (expectedTag !== undefined && tag !== expectedTag) {
      this.fail(`DER: expected tag 0x${expectedTag.toString(16)}, got 0x${tag.toString(16)}`, { offset: start });
    }
    let pos = start + 1;
    if (pos >= buf.length) this.fail('DER: missing length', { offset: pos });
    const first = buf[pos++]!;
    let len: number;
    if (first < 0x80) {
      len = first;
    } else {
      const n = first & 0x7f;
      if (n === 0) this.fail('DER: indefinite length', { offset: pos - 1 });
      if (n > 4) this.fail('DER: length too large', { offset: pos - 1 });
      if (pos + n > buf.length) this.fail('DER: truncated length', { offset: pos - 1 });
      if (buf[pos] === 0) this.fail('DER: non-minimal length', { offset: pos - 1 });
      len = 0;
      for (let i = 0; i < n; i++) len = len * 256 + buf[pos++]!;
      if (len < 0x80) this.fail('DER: non-minimal length', { offset: pos - 1 });
    }
    if (len > buf.length - pos) this.fail('DER: length past the end', { offset: start });
    this.#pos = pos + len;
    return { tag, content: buf.subarray(pos, pos + len), raw: buf.subarray(start, pos + len) };
  }

  /** The next element if it has tag `tag`, otherwise nothing (and nothing is consumed). */
  optional(tag: number): DerElement | undefined {
    return this.peekTag() === tag ? this.next(tag) : undefined;
  }

  /** Asserts that every byte was consumed. */
  end(): void {
    if (this.hasMore) this.fail('DER: trailing bytes', { offset: this.#pos });
  }

  /** A reader (same error code) over the contents of an element. */
  enter(el: DerElement): DerReader {
    if ((el.tag & 0x20) === 0) this.fail('DER: expected a constructed element');
    return new DerReader(el.content, this.#code);
  }

  sequence(): DerReader {
    return this.enter(this.next(Tag.SEQUENCE));
  }

  set(): DerReader {
    return this.enter(this.next(Tag.SET));
  }

  /** INTEGER contents (two's complement, checked minimal). */
  integer(): Buffer {
    return this.integerContent(this.next(Tag.INTEGER));
  }

  integerContent(el: DerElement): Buffer {
    const c = el.content;
    if (c.length === 0) this.fail('DER: empty INTEGER');
    if (c.length > 1 && ((c[0] === 0 && c[1]! < 0x80) || (c[0] === 0xff && c[1]! >= 0x80))) {
      this.fail('DER: non-minimal INTEGER');
    }
    return c;
  }

  /** A small non-negative INTEGER as a number. */
  smallInteger(): number {
    const c = this.integer();
    if (c[0]! >= 0x80 || c.length > 6) this.fail('DER: INTEGER out of range');
    return c.readUIntBE(0, c.length);
  }

  boolean(): boolean {
    const c = this.next(Tag.BOOLEAN).content;
    if (c.length !== 1 || (c[0] !== 0 && c[0] !== 0xff)) this.fail('DER: bad BOOLEAN');
    return c[0] === 0xff;
  }

  null(): void {
    if (this.next(Tag.NULL).content.length !== 0) this.fail('DER: bad NULL');
  }

  /** OBJECT IDENTIFIER as dotted decimal. */
  oid(): string {
    return this.oidContent(this.next(Tag.OID));
  }

  oidContent(el: DerElement): string {
    const c = el.content;
    // The same few OIDs recur in every CSR: valid encodings decoded once are remembered (bounded,
    // and only valid ones, so a stream of junk cannot grow it).
    const key = c.length <= 32 ? c.toString('latin1') : null;
    const known = key === null ? undefined : OID_DECODED.get(key);
    if (known !== undefined) return known;
    // Every subidentifier: no 0x80 padding first, last octet without the continuation bit.
    if (c.length === 0 || c.length > 128 || !OID_CONTENT_RE.test(c.toString('latin1'))) this.fail('DER: bad OBJECT IDENTIFIER');
    const arcs: string[] = [];
    let acc = 0;
    let big: bigint | undefined;
    for (const b of c) {
      if (big !== undefined) big = (big << 7n) | BigInt(b & 0x7f);
      else if (acc >= 2 ** 45) big = (BigInt(acc) << 7n) | BigInt(b & 0x7f);
      else acc = acc * 128 + (b & 0x7f);
      if ((b & 0x80) === 0) {
        if (arcs.length === 0) {
          const v = big ?? BigInt(acc);
          const top = v < 40n ? 0n : v < 80n ? 1n : 2n;
          arcs.push(String(top), String(v - top * 40n));
        } else {
          arcs.push(big === undefined ? String(acc) : String(big));
        }
        acc = 0;
        big = undefined;
      }
    }
    const dotted = arcs.join('.');
    if (key !== null && OID_DECODED.size < 256) OID_DECODED.set(key, dotted);
    return dotted;
  }

  bitString(): BitStringValue {
    const c = this.next(Tag.BIT_STRING).content;
    const unused = c[0];
    if (unused === undefined || unused > 7 || (c.length === 1 && unused !== 0)) this.fail('DER: bad BIT STRING');
    if (unused > 0 && (c[c.length - 1]! & ((1 << unused) - 1)) !== 0) this.fail('DER: BIT STRING unused bits not zero');
    return { unusedBits: unused, bytes: c.subarray(1) };
  }

  octetString(): Buffer {
    return this.next(Tag.OCTET_STRING).content;
  }

  /** UTCTime or GeneralizedTime in the RFC 5280 profile (seconds, 'Z'). */
  time(): Date {
    const el = this.next();
    const s = el.content.toString('latin1');
    let m: RegExpExecArray | null;
    let year: number;
    if (el.tag === Tag.UTC_TIME && (m = /^(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s)) !== null) {
      const yy = Number(m[1]);
      year = yy < 50 ? 2000 + yy : 1900 + yy;
    } else if (el.tag === Tag.GENERALIZED_TIME && (m = /^(\d{4})(\d\d)(\d\d)(\d\d)(\d\d)(\d\d)Z$/.exec(s)) !== null) {
      year = Number(m[1]);
    } else {
      return this.fail('DER: bad Time');
    }
    const [mo, d, h, mi, se] = [m[2], m[3], m[4], m[5], m[6]].map(Number) as [number, number, number, number, number];
    const date = new Date(0);
    date.setUTCFullYear(year, mo - 1, d);
    date.setUTCHours(h, mi, se, 0);
    if (date.getUTCFullYear() !== year || date.getUTCMonth() !== mo - 1 || date.getUTCDate() !== d || h > 23 || mi > 59 || se > 59) {
      this.fail('DER: bad Time');
    }
    return date;
  }
}

/** Decode exactly one element that fills `buf` completely (no trailing bytes). */
export function decodeOne(buf: Buffer, code: ErrorCode = ErrorCodes.INVALID_ARGUMENT): DerElement {
  const r = new DerReader(buf, code);
  const el = r.next();
  r.end();
  return el;
}
