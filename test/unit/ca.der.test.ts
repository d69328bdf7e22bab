import { describe, expect, it } from 'vitest';
import {
  DerReader, Tag, bitString, boolean, decodeOne, explicit, generalizedTime, ia5String, implicit, integer, namedBits,
  octetString, oid, printableString, sequence, set, time, tlv, utcTime, utf8String,
} from '../../hub/ca/der.ts';
import { ErrorCodes } from '../../hub/errors.ts';

const hex = (b: Buffer): string => b.toString('hex');
const h = (s: string): Buffer => Buffer.from(s.replace(/\s+/g, ''), 'hex');

function codeOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return (e as { code?: unknown }).code;
  }
  return 'no error';
}

describe('DER writer', () => {
  it('encodes lengths in short and long form', () => {
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(0)))).toBe('0400');
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(127)).subarray(0, 2))).toBe('047f');
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(128)).subarray(0, 3))).toBe('048180');
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(255)).subarray(0, 3))).toBe('0481ff');
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(256)).subarray(0, 4))).toBe('04820100');
    expect(hex(tlv(Tag.OCTET_STRING, Buffer.alloc(70000)).subarray(0, 5))).toBe('0483011170');
  });

  it('encodes INTEGERs minimally', () => {
    const cases: Array<[Buffer | bigint | number, string]> = [
      [0, '020100'], [127, '02017f'], [128, '02020080'], [256, '02020100'], [-1, '0201ff'], [-128, '020180'],
      [-129, '0202ff7f'], [2n ** 64n, '0209010000000000000000'], [-(2n ** 63n), '02088000000000000000'],
      [h('000001'), '020101'], [h('80'), '02020080'], [h('00'), '020100'], [Buffer.alloc(0), '020100'],
      [h('7fff'), '02027fff'],
    ];
    for (const [v, want] of cases) expect(hex(integer(v)), String(v)).toBe(want);
    expect(() => integer(1.5)).toThrow(TypeError);
    expect(() => integer(Number.MAX_SAFE_INTEGER + 1)).toThrow(TypeError);
  });

  it('encodes OIDs (and caches them)', () => {
    expect(hex(oid('1.2.840.113549'))).toBe('06062a864886f70d');
    expect(hex(oid('2.5.29.19'))).toBe('0603551d13');
    expect(hex(oid('1.2.840.10045.3.1.7'))).toBe('06082a8648ce3d030107');
    expect(hex(oid('2.999.3'))).toBe('0603883703');
    expect(oid('2.5.4.3')).toBe(oid('2.5.4.3'));
    for (const bad of ['1', '3.1', '1.40', '1.02.3', '', '1..2', 'a.b']) expect(() => oid(bad), bad).toThrow(TypeError);
  });

  it('encodes strings, booleans, bit strings and octet strings', () => {
    expect(hex(utf8String('é'))).toBe('0c02c3a9');
    expect(hex(printableString('Ab 1'))).toBe('130441622031');
    expect(() => printableString('a@b')).toThrow(TypeError);
    expect(hex(ia5String('a@b'))).toBe('1603614062');
    expect(() => ia5String('é')).toThrow(TypeError);
    expect(() => utf8String('\ud800')).toThrow(TypeError);
    expect(hex(boolean(true))).toBe('0101ff');
    expect(hex(boolean(false))).toBe('010100');
    expect(hex(bitString(h('0102')))).toBe('0303000102');
    expect(hex(bitString(h('80'), 7))).toBe('03020780');
    expect(() => bitString(h('81'), 7)).toThrow(TypeError);
    expect(() => bitString(Buffer.alloc(0), 1)).toThrow(TypeError);
    expect(hex(octetString(h('abcd')))).toBe('0402abcd');
    // KeyUsage: digitalSignature -> 03 02 07 80; keyCertSign+cRLSign -> 03 02 01 06
    expect(hex(namedBits([0]))).toBe('03020780');
    expect(hex(namedBits([5, 6]))).toBe('03020106');
    expect(hex(namedBits([0, 5, 6]))).toBe('03020186');
    expect(hex(namedBits([8]))).toBe('0303070080');
  });

  it('chooses UTCTime before 2050 and GeneralizedTime from 2050, and drops milliseconds', () => {
    expect(time(new Date('2049-12-31T23:59:59.999Z')).toString('latin1').slice(2)).toBe('491231235959Z');
    expect(time(new Date('2049-12-31T23:59:59Z'))[0]).toBe(Tag.UTC_TIME);
    expect(time(new Date('2050-01-01T00:00:00Z')).toString('latin1').slice(2)).toBe('20500101000000Z');
    expect(time(new Date('2050-01-01T00:00:00Z'))[0]).toBe(Tag.GENERALIZED_TIME);
    expect(time(new Date('1950-01-01T00:00:00Z')).toString('latin1').slice(2)).toBe('500101000000Z');
    expect(time(new Date('1949-12-31T23:59:59Z'))[0]).toBe(Tag.GENERALIZED_TIME);
    expect(() => utcTime(new Date('2050-01-01T00:00:00Z'))).toThrow(TypeError);
    expect(hex(generalizedTime(new Date('2024-02-29T01:02:03Z')))).toBe(hex(Buffer.concat([h('180f'), Buffer.from('20240229010203Z')])));
    expect(() => time(new Date(NaN))).toThrow(TypeError);
  });

  it('builds SEQUENCE, sorted SET OF, EXPLICIT and IMPLICIT tags', () => {
    expect(hex(sequence(integer(1), boolean(true)))).toBe('30060201010101ff');
    expect(hex(set(integer(2), integer(1)))).toBe('3106020101020102');
    expect(hex(explicit(0, integer(2)))).toBe('a003020102');
    expect(hex(implicit(6, ia5String('a:b')))).toBe('8603613a62');
    expect(hex(implicit(0, sequence(integer(1))))).toBe('a003020101');
    expect(() => explicit(31)).toThrow(TypeError);
    expect(() => tlv(0x1f)).toThrow(TypeError);
  });
});

describe('DER reader', () => {
  it('reads what the writer writes', () => {
    const when = new Date('2031-05-06T07:08:09Z');
    const later = new Date('2101-01-01T00:00:00Z');
    const der = sequence(integer(300), oid('1.2.840.10045.4.3.2'), boolean(true), bitString(h('0a0b')), octetString(h('ff')), time(when), time(later),
      oid('2.25.329800735698586629295641978511506172918'), explicit(3, Buffer.from([5, 0])));
    const top = new DerReader(der);
    const r = top.sequence();
    top.end();
    expect(r.smallInteger()).toBe(300);
    expect(r.oid()).toBe('1.2.840.10045.4.3.2');
    expect(r.boolean()).toBe(true);
    expect(r.bitString()).toEqual({ unusedBits: 0, bytes: h('0a0b') });
    expect(hex(r.octetString())).toBe('ff');
    expect(r.time().toISOString()).toBe(when.toISOString());
    expect(r.time().toISOString()).toBe(later.toISOString());
    expect(r.oid()).toBe('2.25.329800735698586629295641978511506172918');
    const ctx = r.enter(r.next(0xa3));
    ctx.null();
    ctx.end();
    expect(r.hasMore).toBe(false);
    r.end();
  });

  it('gives raw and content subarrays without copying', () => {
    const der = sequence(sequence(integer(5)), integer(6));
    const el = decodeOne(der);
    expect(el.raw).toEqual(der);
    const inner = new DerReader(el.content).next();
    expect(hex(inner.raw)).toBe('3003020105');
    expect(inner.raw.buffer).toBe(der.buffer);
  });

  it('rejects indefinite lengths', () => {
    expect(codeOf(() => decodeOne(h('3080 020101 0000')))).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('rejects non-minimal lengths', () => {
    expect(codeOf(() => decodeOne(h('3081 03 020101')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(Buffer.concat([h('048200 80'), Buffer.alloc(128)])))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(Buffer.concat([h('0481 7f'), Buffer.alloc(0x7f)])))).toBe(ErrorCodes.INVALID_ARGUMENT);
    // 0x81 0x80 is the minimal encoding of 128: accepted.
    expect(decodeOne(Buffer.concat([h('048180'), Buffer.alloc(128)])).content.length).toBe(128);
  });

  it('rejects trailing bytes', () => {
    expect(codeOf(() => decodeOne(h('020101 00')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    const r = new DerReader(h('3003020101 05'));
    r.sequence();
    expect(codeOf(() => r.end())).toBe(ErrorCodes.INVALID_ARGUMENT);
    const inner = new DerReader(h('3006 020101 020102')).sequence();
    inner.integer();
    expect(codeOf(() => inner.end())).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('rejects lengths past the end and truncated headers', () => {
    expect(codeOf(() => decodeOne(h('3005 020101')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(h('30')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(h('3082 01')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(h('3085 0000000001 00')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => decodeOne(Buffer.alloc(0)))).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('rejects high tag numbers, wrong tags and primitive elements entered as constructed', () => {
    expect(codeOf(() => decodeOne(h('1f2100')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('020101')).sequence())).toBe(ErrorCodes.INVALID_ARGUMENT);
    const r = new DerReader(h('0400'));
    expect(codeOf(() => r.enter(r.next()))).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('rejects non-DER primitive values', () => {
    expect(codeOf(() => new DerReader(h('02020001')).integer())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('0202ff80')).integer())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('0200')).integer())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('010101')).boolean())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('03020781')).bitString())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('030108')).bitString())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('0600')).oid())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('0602 8001')).oid())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(h('0602 2a86')).oid())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(Buffer.concat([h('170d'), Buffer.from('491301000000Z')])).time())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(Buffer.concat([h('170f'), Buffer.from('4901010000000.Z')])).time())).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => new DerReader(Buffer.concat([h('180d'), Buffer.from('490101000000Z')])).time())).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('throws with the code its creator chose', () => {
    expect(codeOf(() => decodeOne(h('3080'), ErrorCodes.CSR_MALFORMED))).toBe(ErrorCodes.CSR_MALFORMED);
    const child = new DerReader(h('3003 0400 00'), ErrorCodes.CSR_MALFORMED).sequence();
    child.octetString();
    expect(codeOf(() => child.end())).toBe(ErrorCodes.CSR_MALFORMED);
  });
});
