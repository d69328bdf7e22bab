import crypto from 'node:crypto';
import fs from 'node:fs';
import tls from 'node:tls';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LeafIssuer, randomSerial, type LeafRequest } from '../../hub/ca/certificate.ts';
import { parseAndVerifyCsr } from '../../hub/ca/csr.ts';
import { derToPem } from '../../hub/ca/bootstrap.ts';
import { DerReader } from '../../hub/ca/der.ts';
import { buildCsr, ecKey, makeTestCa, makeTmpDir, openssl, opensslResult, type TestCa } from '../fixtures/ca/helpers.ts';

const tmp = makeTmpDir();
afterAll(() => tmp.cleanup());

let ca: TestCa;
let issuer: LeafIssuer;
beforeAll(() => {
  ca = makeTestCa();
  issuer = new LeafIssuer(ca.issuer);
  fs.writeFileSync(tmp.file('root.pem'), ca.material.rootCert);
  fs.writeFileSync(tmp.file('issuing.pem'), ca.material.issuingCert);
});

const DAY = 86_400_000;

function request(over: Partial<LeafRequest> = {}): LeafRequest & { key: crypto.KeyObject } {
  const key = ecKey('P-256');
  const csr = parseAndVerifyCsr(buildCsr({ key }));
  return {
    key,
    spkiDer: csr.spkiDer,
    nodeId: 'node-42',
    org: 'Acme Hospital',
    uri: 'spiffe://test-fed/org/acme/node/node-42',
    notBefore: new Date(ca.now.getTime() - 60_000),
    notAfter: new Date(ca.now.getTime() + 7 * DAY),
    serial: randomSerial(),
    ...over,
  };
}

function writeLeaf(name: string, der: Buffer): string {
  const file = tmp.file(`${name}.pem`);
  fs.writeFileSync(file, derToPem(der, 'CERTIFICATE'));
  return file;
}

describe('LeafIssuer', () => {
  it('issues a leaf that openssl verifies against root + issuing CA, for sslclient', () => {
    const issued = issuer.issue(request());
    const leaf = writeLeaf('leaf', issued.der);
    expect(openssl(['verify', '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), leaf]).trim()).toBe(`${leaf}: OK`);
    expect(openssl(['verify', '-purpose', 'sslclient', '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), leaf]).trim()).toBe(`${leaf}: OK`);
    // clientAuth only: not usable as a TLS server certificate.
    expect(opensslResult(['verify', '-purpose', 'sslserver', '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), leaf]).ok).toBe(false);
    // Without the issuing CA the chain is incomplete.
    expect(opensslResult(['verify', '-CAfile', tmp.file('root.pem'), leaf]).ok).toBe(false);
  });

  it('has exactly the expected extensions', () => {
    const issued = issuer.issue(request());
    const leaf = writeLeaf('leaf-ext', issued.der);
    const ext = openssl(['x509', '-in', leaf, '-noout', '-ext', 'subjectAltName,extendedKeyUsage,basicConstraints,keyUsage']);
    expect(ext).toMatch(/X509v3 Basic Constraints: critical\s+CA:FALSE/);
    expect(ext).toMatch(/X509v3 Key Usage: critical\s+Digital Signature\s*\n/);
    expect(ext).toMatch(/X509v3 Extended Key Usage:\s*\n\s+TLS Web Client Authentication\s*\n/);
    expect(ext).toMatch(/X509v3 Subject Alternative Name:\s*\n\s+URI:spiffe:\/\/test-fed\/org\/acme\/node\/node-42\s*$/);
    const text = openssl(['x509', '-in', leaf, '-noout', '-text']);
    expect(text).toContain('Version: 3 (0x2)');
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toContain('Issuer: CN = Sepal Issuing CA test-fed');
    expect(text).toContain('Subject: O = Acme Hospital, CN = node-42');
    expect(text.match(/X509v3 [A-Za-z ]+:/g)?.sort()).toEqual([
      'X509v3 Authority Key Identifier:', 'X509v3 Basic Constraints:', 'X509v3 Extended Key Usage:', 'X509v3 Key Usage:',
      'X509v3 Subject Alternative Name:', 'X509v3 Subject Key Identifier:', 'X509v3 extensions:',
    ].sort());
    // subject strings are UTF8String
    expect(openssl(['asn1parse', '-in', leaf])).toMatch(/UTF8STRING\s+:Acme Hospital/);
  });

  it('parses with node X509Certificate: issuer link, signature, serial, validity, keys, SKI/AKI', () => {
    const req = request();
    const issued = issuer.issue(req);
    const leaf = new crypto.X509Certificate(issued.der);
    expect(leaf.checkIssued(ca.issuing)).toBe(true);
    expect(leaf.verify(ca.issuing.publicKey)).toBe(true);
    expect(leaf.verify(ca.root.publicKey)).toBe(false);
    expect(leaf.ca).toBe(false);
    expect(leaf.checkPrivateKey(req.key)).toBe(true);
    expect(leaf.serialNumber.toLowerCase()).toBe(issued.serialHex);
    expect(issued.serialHex).toBe(req.serial.toString('hex'));
    expect(issued.serialHex).toMatch(/^[0-7][0-9a-f]{31}$/);
    expect(issued.fingerprint).toBe(leaf.fingerprint256.replaceAll(':', '').toLowerCase());
    expect(issued.fingerprint).toBe(crypto.createHash('sha256').update(issued.der).digest('hex'));
    expect(leaf.validFromDate.getTime()).toBe(ca.now.getTime() - 60_000);
    expect(leaf.validToDate.getTime() - leaf.validFromDate.getTime()).toBe(7 * DAY + 60_000);
    expect(leaf.issuer).toBe(ca.issuing.subject);
    expect(leaf.keyUsage).toEqual(['1.3.6.1.5.5.7.3.2']);
    expect(leaf.subjectAltName).toBe('URI:spiffe://test-fed/org/acme/node/node-42');
    expect(leaf.raw).toEqual(issued.der);
    // SKI = SHA-1 of the key bits; AKI = the issuing CA's SKI.
    const point = crypto.createPublicKey(req.key).export({ format: 'der', type: 'spki' }).subarray(-65);
    const ski = crypto.createHash('sha1').update(point).digest('hex').toUpperCase().replace(/(..)(?!$)/g, '$1:');
    const text = openssl(['x509', '-in', writeLeaf('leaf-ski', issued.der), '-noout', '-ext', 'subjectKeyIdentifier,authorityKeyIdentifier']);
    const caText = openssl(['x509', '-in', tmp.file('issuing.pem'), '-noout', '-ext', 'subjectKeyIdentifier']);
    const caSki = /Identifier:\s*\n\s+([0-9A-F:]+)/.exec(caText)?.[1];
    expect(caSki).toMatch(/^[0-9A-F:]{59}$/);
    expect(text).toMatch(new RegExp(`Subject Key Identifier:\\s*\\n\\s+${ski}\\s`));
    expect(text).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${caSki}\\s`));
  });

  it('copies the issuer Name byte for byte from the CA certificate', () => {
    const tbsFields = (der: Buffer): Buffer[] => {
      const tbs = new DerReader(der).sequence().sequence();
      const out: Buffer[] = [];
      while (tbs.hasMore) out.push(tbs.next().raw);
      return out;
    };
    const issued = issuer.issue(request());
    const leafFields = tbsFields(issued.der); // version, serial, signature, issuer, validity, subject, spki, extensions
    const caFields = tbsFields(ca.issuer.certDer);
    expect(leafFields).toHaveLength(8);
    expect(leafFields[3]).toEqual(caFields[5]);
    expect(leafFields[2]).toEqual(caFields[2]);
  });

  it('issues P-384 keys, long validity with GeneralizedTime, and different serials', () => {
    const key = ecKey('P-384');
    const csr = parseAndVerifyCsr(buildCsr({ key, hash: 'sha384' }));
    const issued = issuer.issue(request({ spkiDer: csr.spkiDer, notAfter: new Date('2051-06-01T00:00:00Z') }));
    const leaf = new crypto.X509Certificate(issued.der);
    expect(leaf.publicKey.asymmetricKeyDetails?.namedCurve).toBe('secp384r1');
    expect(leaf.validToDate.toISOString()).toBe('2051-06-01T00:00:00.000Z');
    expect(leaf.verify(ca.issuing.publicKey)).toBe(true);
    const file = writeLeaf('leaf-384', issued.der);
    expect(openssl(['asn1parse', '-in', file])).toContain('GENERALIZEDTIME');
    expect(openssl(['verify', '-CAfile', tmp.file('root.pem'), '-untrusted', tmp.file('issuing.pem'), file]).trim()).toBe(`${file}: OK`);
    const a = issuer.issue(request());
    const b = issuer.issue(request());
    expect(a.serialHex).not.toBe(b.serialHex);
  });

  it('drops milliseconds from the validity times', () => {
    const issued = issuer.issue(request({ notBefore: new Date(ca.now.getTime() - 59_500), notAfter: new Date(ca.now.getTime() + DAY + 999) }));
    const leaf = new crypto.X509Certificate(issued.der);
    expect(leaf.validFromDate.getTime()).toBe(ca.now.getTime() - 60_000);
    expect(leaf.validToDate.getTime()).toBe(ca.now.getTime() + DAY);
  });

  it('rejects programming mistakes with TypeError', () => {
    const bad: Array<Partial<LeafRequest>> = [
      { serial: Buffer.alloc(0) },
      { serial: Buffer.from('80', 'hex') },
      { serial: Buffer.from('0001', 'hex') },
      { serial: Buffer.from('00', 'hex') },
      { serial: Buffer.alloc(21, 1) },
      { nodeId: '' },
      { nodeId: 'x'.repeat(65) },
      { org: 'a\nb' },
      { uri: 'no scheme' },
      { uri: 'spiffe://x/ü' },
      { notAfter: new Date(ca.now.getTime() - 60_000) },
      { notBefore: new Date(NaN) },
      { spkiDer: Buffer.from('3000', 'hex') },
    ];
    for (const over of bad) expect(() => issuer.issue(request(over)), JSON.stringify(over)).toThrow(TypeError);
    // A 00 prefix is fine when the top bit of the next byte is set.
    expect(issuer.issue(request({ serial: Buffer.from('0080', 'hex') })).serialHex).toBe('0080');
  });

  it('rejects an issuer that is not a CA or whose key does not match', () => {
    const leafCert = new crypto.X509Certificate(ca.material.serverCert);
    expect(() => new LeafIssuer({ cert: leafCert, certDer: leafCert.raw, key: crypto.createPrivateKey(ca.material.serverKey) })).toThrow(TypeError);
    expect(() => new LeafIssuer({ ...ca.issuer, key: crypto.createPrivateKey(ca.material.rootKey) })).toThrow(TypeError);
    expect(() => new LeafIssuer({ ...ca.issuer, certDer: ca.root.raw })).toThrow(TypeError);
    expect(() => new LeafIssuer({ ...ca.issuer, key: ecKey('P-384') })).toThrow(TypeError);
  });

  it('works for mutual TLS against the hub server certificate', async () => {
    const req = request();
    const issued = issuer.issue(req);
    const server = tls.createServer({
      key: ca.material.serverKey,
      cert: ca.material.serverCert + ca.material.issuingCert,
      ca: ca.material.rootCert,
      requestCert: true,
      rejectUnauthorized: true,
    }, (socket) => {
      const peer = socket.getPeerX509Certificate();
      socket.end(peer?.subjectAltName ?? 'none');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      const got = await new Promise<string>((resolve, reject) => {
        const s = tls.connect({
          host: '127.0.0.1', port, servername: 'hub.test', ca: ca.material.rootCert,
          key: req.key.export({ type: 'pkcs8', format: 'pem' }), cert: derToPem(issued.der, 'CERTIFICATE') + ca.material.issuingCert,
        });
        let data = '';
        s.on('data', (d: Buffer) => (data += d.toString()));
        s.on('end', () => resolve(data));
        s.on('error', reject);
      });
      expect(got).toBe('URI:spiffe://test-fed/org/acme/node/node-42');
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  });
});

describe('randomSerial', () => {
  it('is 16 bytes, positive, with a non-zero first byte, and random', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 2000; i++) {
      const s = randomSerial();
      expect(s.length).toBe(16);
      expect(s[0]).toBeGreaterThan(0);
      expect(s[0]).toBeLessThan(0x80);
      seen.add(s.toString('hex'));
    }
    expect(seen.size).toBe(2000);
  });
});
