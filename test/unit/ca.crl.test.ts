import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildCrl, crlToPem } from '../../hub/ca/crl.ts';
import { LeafIssuer, randomSerial, type IssuedCert } from '../../hub/ca/certificate.ts';
import { derToPem, pemToDerList } from '../../hub/ca/bootstrap.ts';
import { buildCsr, ecKey, makeTestCa, makeTmpDir, openssl, opensslResult, type TestCa } from '../fixtures/ca/helpers.ts';
import { parseAndVerifyCsr } from '../../hub/ca/csr.ts';
import { DerReader } from '../../hub/ca/der.ts';

const tmp = makeTmpDir();
afterAll(() => tmp.cleanup());

const HOUR = 3_600_000;
let ca: TestCa;
let leaves: IssuedCert[];

beforeAll(() => {
  ca = makeTestCa();
  const issuer = new LeafIssuer(ca.issuer);
  leaves = [0, 1, 2].map((i) => issuer.issue({
    spkiDer: parseAndVerifyCsr(buildCsr({ key: ecKey('P-256') })).spkiDer,
    nodeId: `node-${i}`, org: 'acme', uri: `spiffe://test-fed/node/node-${i}`,
    notBefore: new Date(ca.now.getTime() - 60_000), notAfter: new Date(ca.now.getTime() + 24 * HOUR), serial: randomSerial(),
  }));
  fs.writeFileSync(tmp.file('root.pem'), ca.material.rootCert);
  fs.writeFileSync(tmp.file('issuing.pem'), ca.material.issuingCert);
  fs.writeFileSync(tmp.file('chain.pem'), ca.material.issuingCert + ca.material.rootCert);
  leaves.forEach((l, i) => fs.writeFileSync(tmp.file(`leaf${i}.pem`), derToPem(l.der, 'CERTIFICATE')));
});

function crl(revoked: IssuedCert[], crlNumber = 7n): Buffer {
  return buildCrl(ca.issuer, {
    revoked: revoked.map((l, i) => ({ serialHex: l.serialHex, revokedAt: new Date(ca.now.getTime() - i * 1000) })),
    thisUpdate: new Date(ca.now.getTime() - 60_000),
    nextUpdate: new Date(ca.now.getTime() + HOUR),
    crlNumber,
  });
}

describe('buildCrl', () => {
  it('produces a v2 CRL that openssl verifies and that lists the revoked serials', () => {
    const der = crl([leaves[0]!, leaves[1]!], 123456789012345678901234567890n);
    fs.writeFileSync(tmp.file('crl.der'), der);
    expect(openssl(['crl', '-inform', 'DER', '-in', tmp.file('crl.der'), '-CAfile', tmp.file('chain.pem'), '-noout', '-verify'])).toBe('');
    const text = openssl(['crl', '-inform', 'DER', '-in', tmp.file('crl.der'), '-noout', '-text']);
    expect(text).toContain('Version 2 (0x1)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toContain('Issuer: CN = Sepal Issuing CA test-fed');
    expect(text).toMatch(/X509v3 CRL Number:\s*\n\s+123456789012345678901234567890\n/);
    expect(text).toContain('X509v3 Authority Key Identifier');
    const listed = [...text.matchAll(/Serial Number: ([0-9A-F]+)/g)].map((m) => m[1]!.toLowerCase());
    expect(listed).toEqual([leaves[0]!.serialHex, leaves[1]!.serialHex]);
  });

  it('is honoured by openssl verify -crl_check: revoked leaf rejected, other accepted', () => {
    fs.writeFileSync(tmp.file('crl.pem'), crlToPem(crl([leaves[0]!, leaves[1]!])));
    const args = (leaf: string): string[] => ['verify', '-crl_check', '-CRLfile', tmp.file('crl.pem'), '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), tmp.file(leaf)];
    const revoked = opensslResult(args('leaf0.pem'));
    expect(revoked.ok).toBe(false);
    expect(revoked.out).toContain('certificate revoked');
    expect(opensslResult(args('leaf1.pem')).ok).toBe(false);
    expect(opensslResult(args('leaf2.pem'))).toEqual({ ok: true, out: `${tmp.file('leaf2.pem')}: OK\n` });
  });

  it('builds an empty CRL without a revokedCertificates field', () => {
    const der = crl([]);
    fs.writeFileSync(tmp.file('empty.der'), der);
    expect(openssl(['crl', '-inform', 'DER', '-in', tmp.file('empty.der'), '-CAfile', tmp.file('chain.pem'), '-noout', '-verify'])).toBe('');
    expect(openssl(['crl', '-inform', 'DER', '-in', tmp.file('empty.der'), '-noout', '-text'])).toContain('No Revoked Certificates.');
    fs.writeFileSync(tmp.file('empty.pem'), crlToPem(der));
    const ok = opensslResult(['verify', '-crl_check', '-CRLfile', tmp.file('empty.pem'), '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), tmp.file('leaf0.pem')]);
    expect(ok.ok).toBe(true);
  });

  it('verifies with node crypto and round-trips through PEM', () => {
    const der = crl([leaves[2]!]);
    const pem = crlToPem(der);
    expect(pem).toMatch(/^-----BEGIN X509 CRL-----\n/);
    expect(pemToDerList(pem)).toEqual([der]);
    // CertificateList ::= SEQUENCE { tbsCertList, signatureAlgorithm, signatureValue BIT STRING }
    const top = new DerReader(der);
    const list = top.sequence();
    top.end();
    const tbs = list.next(0x30).raw;
    expect(list.sequence().oid()).toBe('1.2.840.10045.4.3.2');
    const sig = list.bitString().bytes;
    list.end();
    expect(crypto.verify('sha256', tbs, ca.issuing.publicKey, sig)).toBe(true);
    expect(crypto.verify('sha256', tbs, ca.root.publicKey, sig)).toBe(false);
  });

  it('rejects programming mistakes with TypeError', () => {
    const base = { revoked: [], thisUpdate: ca.now, nextUpdate: new Date(ca.now.getTime() + HOUR), crlNumber: 1n };
    expect(() => buildCrl(ca.issuer, { ...base, nextUpdate: ca.now })).toThrow(TypeError);
    expect(() => buildCrl({ ...ca.issuer, key: crypto.createPrivateKey(ca.material.rootKey) }, base)).toThrow(TypeError);
    expect(() => buildCrl(ca.issuer, { ...base, crlNumber: -1n })).toThrow(TypeError);
    expect(() => buildCrl(ca.issuer, { ...base, crlNumber: 1n << 160n })).toThrow(TypeError);
    expect(() => buildCrl(ca.issuer, { ...base, revoked: [{ serialHex: 'xyz', revokedAt: ca.now }] })).toThrow(TypeError);
    expect(() => buildCrl(ca.issuer, { ...base, revoked: [{ serialHex: '80', revokedAt: ca.now }] })).toThrow(TypeError);
    expect(() => buildCrl(ca.issuer, { ...base, revoked: [{ serialHex: '01', revokedAt: ca.now }, { serialHex: '01', revokedAt: ca.now }] })).toThrow(TypeError);
  });
});

