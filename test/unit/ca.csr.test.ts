import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseAndVerifyCsr, MAX_CSR_BYTES } from '../../hub/ca/csr.ts';
import { LeafIssuer, randomSerial } from '../../hub/ca/certificate.ts';
import { derToPem, pemToDerList } from '../../hub/ca/bootstrap.ts';
import { bitString, oid, octetString, sequence, set, utf8String } from '../../hub/ca/der.ts';
import { ErrorCodes } from '../../hub/errors.ts';
import { OIDS, basicConstraints, buildCsr, ecKey, extensionRequest, makeTestCa, makeTmpDir, openssl, type TestCa } from '../fixtures/ca/helpers.ts';

function codeOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return (e as { code?: unknown }).code;
  }
  return 'no error';
}

const tmp = makeTmpDir();
afterAll(() => tmp.cleanup());

/** openssl genpkey + req -new; returns the CSR PEM text. */
function opensslCsr(name: string, genpkeyArgs: readonly string[], reqArgs: readonly string[] = []): string {
  const key = tmp.file(`${name}.key`);
  const csr = tmp.file(`${name}.csr`);
  openssl(['genpkey', ...genpkeyArgs, '-out', key]);
  openssl(['req', '-new', '-key', key, '-subj', `/CN=${name}`, ...reqArgs, '-out', csr]);
  return fs.readFileSync(csr, 'utf8');
}

function spkiOf(key: crypto.KeyObject): Buffer {
  return crypto.createPublicKey(key).export({ type: 'spki', format: 'der' });
}

describe('parseAndVerifyCsr with openssl-made CSRs', () => {
  it('accepts P-256 as PEM string, PEM Buffer and DER', () => {
    const pem = opensslCsr('p256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']);
    const key = crypto.createPrivateKey(fs.readFileSync(tmp.file('p256.key')));
    for (const input of [pem, Buffer.from(pem), pemToDerList(pem)[0]!, `\n  ${pem}\n\n`]) {
      const v = parseAndVerifyCsr(input);
      expect(v.curve).toBe('P-256');
      expect(v.spkiDer).toEqual(spkiOf(key));
      expect(v.publicKey.type).toBe('public');
      expect(v.publicKey.export({ type: 'spki', format: 'der' })).toEqual(spkiOf(key));
    }
  });

  it('accepts P-384 signed with SHA-256 and with SHA-384', () => {
    const pem = opensslCsr('p384', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-384']);
    expect(parseAndVerifyCsr(pem).curve).toBe('P-384');
    const csr384 = tmp.file('p384-sha384.csr');
    openssl(['req', '-new', '-key', tmp.file('p384.key'), '-subj', '/CN=x', '-sha384', '-out', csr384]);
    expect(openssl(['req', '-in', csr384, '-noout', '-text'])).toContain('ecdsa-with-SHA384');
    expect(parseAndVerifyCsr(fs.readFileSync(csr384)).curve).toBe('P-384');
  });

  it('rejects RSA-2048, P-521, secp256k1 and Ed25519 with CSR_UNSUPPORTED_KEY', () => {
    const cases: Array<[string, string[]]> = [
      ['rsa', ['-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048']],
      ['p521', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-521']],
      ['k256', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:secp256k1']],
      ['ed25519', ['-algorithm', 'ED25519']],
    ];
    for (const [name, args] of cases) {
      expect(codeOf(() => parseAndVerifyCsr(opensslCsr(name, args))), name).toBe(ErrorCodes.CSR_UNSUPPORTED_KEY);
    }
  });

  it('rejects basicConstraints CA:TRUE with CSR_CA_REQUESTED', () => {
    const pem = opensslCsr('ca', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-addext', 'basicConstraints=critical,CA:TRUE']);
    expect(codeOf(() => parseAndVerifyCsr(pem))).toBe(ErrorCodes.CSR_CA_REQUESTED);
    const notCa = opensslCsr('notca', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], ['-addext', 'basicConstraints=critical,CA:FALSE']);
    expect(parseAndVerifyCsr(notCa).curve).toBe('P-256');
  });

  it('rejects a flipped byte in the signature or in the subject with CSR_BAD_SIGNATURE', () => {
    const der = pemToDerList(opensslCsr('flip', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256']))[0]!;
    expect(parseAndVerifyCsr(der).curve).toBe('P-256');
    const sigFlipped = Buffer.from(der);
    sigFlipped[sigFlipped.length - 1]! ^= 0x01; // last byte of s in ECDSA-Sig-Value
    expect(codeOf(() => parseAndVerifyCsr(sigFlipped))).toBe(ErrorCodes.CSR_BAD_SIGNATURE);
    const at = der.indexOf('flip', 0, 'latin1');
    expect(at).toBeGreaterThan(0);
    const subjectFlipped = Buffer.from(der);
    subjectFlipped[at]! ^= 0x01; // 'f' -> 'g'
    expect(codeOf(() => parseAndVerifyCsr(subjectFlipped))).toBe(ErrorCodes.CSR_BAD_SIGNATURE);
  });
});

describe('parseAndVerifyCsr with in-process CSRs', () => {
  it('accepts P-256/SHA-256, P-384/SHA-384 and a missing attributes field', () => {
    const k256 = ecKey('P-256');
    const k384 = ecKey('P-384');
    expect(parseAndVerifyCsr(buildCsr({ key: k256 })).spkiDer).toEqual(spkiOf(k256));
    expect(parseAndVerifyCsr(buildCsr({ key: k384, hash: 'sha384' })).curve).toBe('P-384');
    expect(parseAndVerifyCsr(buildCsr({ key: k256, omitAttributes: true })).curve).toBe('P-256');
    expect(parseAndVerifyCsr(derToPem(buildCsr({ key: k256 }), 'NEW CERTIFICATE REQUEST')).curve).toBe('P-256');
  });

  it('ignores unrelated attributes and extensions, tolerates an explicit cA=FALSE', () => {
    const key = ecKey('P-256');
    const san = sequence(oid(OIDS.subjectAltName), octetString(sequence(Buffer.from('820565766c6c65', 'hex'))));
    const challenge = sequence(oid('1.2.840.113549.1.9.7'), set(utf8String('secret')));
    const csr = buildCsr({ key, attributes: [challenge, extensionRequest(san, basicConstraints(false, true))] });
    expect(parseAndVerifyCsr(csr).curve).toBe('P-256');
  });

  it('flags cA=TRUE in an extensionRequest', () => {
    const csr = buildCsr({ key: ecKey('P-256'), attributes: [extensionRequest(basicConstraints(true))] });
    expect(codeOf(() => parseAndVerifyCsr(csr))).toBe(ErrorCodes.CSR_CA_REQUESTED);
  });

  it('rejects a signature by another key, a wrong version and NULL signature parameters', () => {
    const key = ecKey('P-256');
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key: ecKey('P-256'), spkiDer: spkiOf(key) })))).toBe(ErrorCodes.CSR_BAD_SIGNATURE);
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key, version: 1 })))).toBe(ErrorCodes.CSR_MALFORMED);
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key, sigAlgNullParams: true })))).toBe(ErrorCodes.CSR_MALFORMED);
  });

  it('rejects signature algorithms other than ecdsa-with-SHA256/384 as CSR_UNSUPPORTED_KEY', () => {
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key: ecKey('P-256'), hash: 'sha512' })))).toBe(ErrorCodes.CSR_UNSUPPORTED_KEY);
  });

  it('rejects compressed points (unsupported) and points not on the curve (malformed)', () => {
    const key = ecKey('P-256');
    const spki = spkiOf(key);
    const jwk = key.export({ format: 'jwk' });
    const x = Buffer.from(jwk.x!, 'base64url');
    const yOdd = (Buffer.from(jwk.y!, 'base64url')[31]! & 1) === 1;
    const compressed = sequence(spki.subarray(2, 23), bitString(Buffer.concat([Buffer.of(yOdd ? 0x03 : 0x02), x])));
    expect(crypto.createPublicKey({ key: compressed, format: 'der', type: 'spki' }).export({ format: 'jwk' }).y).toBe(jwk.y);
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key, spkiDer: compressed })))).toBe(ErrorCodes.CSR_UNSUPPORTED_KEY);
    const offCurve = Buffer.from(spki);
    offCurve[offCurve.length - 1]! ^= 0x01;
    expect(codeOf(() => parseAndVerifyCsr(buildCsr({ key, spkiDer: offCurve })))).toBe(ErrorCodes.CSR_MALFORMED);
  });

  it('rejects garbage, empty, truncated, trailing and oversized input with CSR_MALFORMED', () => {
    const der = buildCsr({ key: ecKey('P-256') });
    const pem = derToPem(der, 'CERTIFICATE REQUEST');
    const bad: Array<[string, Buffer | string]> = [
      ['garbage', crypto.randomBytes(300)],
      ['garbage starting with SEQUENCE', Buffer.concat([Buffer.from([0x30]), crypto.randomBytes(300)])],
      ['text', 'hello world'],
      ['empty buffer', Buffer.alloc(0)],
      ['empty string', ''],
      ['truncated', der.subarray(0, der.length - 1)],
      ['truncated more', der.subarray(0, 40)],
      ['trailing byte', Buffer.concat([der, Buffer.of(0)])],
      ['trailing element', Buffer.concat([der, Buffer.from('0500', 'hex')])],
      ['indefinite length', Buffer.concat([Buffer.from('3080', 'hex'), der.subarray(2), Buffer.from('0000', 'hex')])],
      ['wrong PEM label', derToPem(der, 'CERTIFICATE')],
      ['two PEM blocks', pem + pem],
      ['bad base64', pem.replace(/[A-Za-z]{4}\n/, '!!!!\n')],
      ['PEM with trailing junk', `${pem}junk`],
      ['oversized DER', Buffer.concat([Buffer.from('3083004001', 'hex'), Buffer.alloc(MAX_CSR_BYTES - 4)])],
      ['oversized string', pem + ' '.repeat(MAX_CSR_BYTES)],
    ];
    for (const [name, input] of bad) expect(codeOf(() => parseAndVerifyCsr(input)), name).toBe(ErrorCodes.CSR_MALFORMED);
    // A well-formed, validly signed CSR that is just too large.
    const big = buildCsr({ key: ecKey('P-256'), attributes: [sequence(oid('1.2.3.4'), set(utf8String('x'.repeat(MAX_CSR_BYTES))))] });
    expect(codeOf(() => parseAndVerifyCsr(big))).toBe(ErrorCodes.CSR_MALFORMED);
  });

  it('copies spkiDer out of the input', () => {
    const der = Buffer.from(buildCsr({ key: ecKey('P-256') }));
    const v = parseAndVerifyCsr(der);
    const copy = Buffer.from(v.spkiDer);
    der.fill(0);
    expect(v.spkiDer).toEqual(copy);
  });

  it('rejects non-Buffer, non-string input with TypeError', () => {
    expect(() => parseAndVerifyCsr(42 as unknown as string)).toThrow(TypeError);
  });
});

describe('a leaf issued from a CSR that asks for more', () => {
  let ca: TestCa;
  beforeAll(() => {
    ca = makeTestCa();
  });

  it('contains only the hub-chosen names and usages', () => {
    const pem = opensslCsr('greedy', ['-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256'], [
      '-subj', '/CN=evil-cn/O=evil-org',
      '-addext', 'subjectAltName=DNS:evil.example,URI:spiffe://evil/node,IP:10.6.6.6',
      '-addext', 'extendedKeyUsage=serverAuth,codeSigning',
      '-addext', 'keyUsage=critical,keyCertSign,cRLSign,digitalSignature',
      '-addext', 'nameConstraints=permitted;DNS:evil.example',
    ]);
    const asked = openssl(['req', '-in', tmp.file('greedy.csr'), '-noout', '-text']);
    for (const s of ['evil-cn', 'evil-org', 'DNS:evil.example', 'URI:spiffe://evil/node', 'TLS Web Server Authentication', 'Certificate Sign', 'Name Constraints']) {
      expect(asked).toContain(s);
    }
    const csr = parseAndVerifyCsr(pem);
    const issued = new LeafIssuer(ca.issuer).issue({
      spkiDer: csr.spkiDer, nodeId: 'node-7', org: 'acme', uri: 'spiffe://test-fed/node/node-7',
      notBefore: new Date(ca.now.getTime() - 60_000), notAfter: new Date(ca.now.getTime() + 86_400_000), serial: randomSerial(),
    });
    const certFile = tmp.file('greedy.der');
    fs.writeFileSync(certFile, issued.der);
    const text = openssl(['x509', '-inform', 'DER', '-in', certFile, '-noout', '-text']);
    expect(text).not.toMatch(/evil/i);
    expect(text).not.toContain('Server Authentication');
    expect(text).not.toContain('Code Signing');
    expect(text).not.toContain('Certificate Sign');
    expect(text).not.toContain('Name Constraints');
    expect(text).toContain('URI:spiffe://test-fed/node/node-7');
    expect(text).toContain('TLS Web Client Authentication');
    const cert = new crypto.X509Certificate(issued.der);
    expect(cert.subject.split('\n').sort()).toEqual(['CN=node-7', 'O=acme']);
    expect(cert.subjectAltName).toBe('URI:spiffe://test-fed/node/node-7');
  });
});
