import crypto from 'node:crypto';
import fs from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { certFingerprintSha256, createCaMaterial, derToPem, pemToDerList, type CaMaterial } from '../../hub/ca/bootstrap.ts';
import { ErrorCodes } from '../../hub/errors.ts';
import { makeTmpDir, openssl, opensslResult } from '../fixtures/ca/helpers.ts';

const tmp = makeTmpDir();
afterAll(() => tmp.cleanup());

function codeOf(fn: () => unknown): unknown {
  try {
    fn();
  } catch (e) {
    return (e as { code?: unknown }).code;
  }
  return 'no error';
}

const now = new Date('2026-03-04T05:06:07.890Z');
const nowSec = new Date('2026-03-04T05:06:07Z').getTime();
let m: CaMaterial;
let root: crypto.X509Certificate;
let issuing: crypto.X509Certificate;
let server: crypto.X509Certificate;

beforeAll(() => {
  m = createCaMaterial({ hostnames: ['Hub.Example.org', '192.0.2.10', '2001:db8::1', '::ffff:198.51.100.7', 'localhost'], federationId: 'fed-eu-1', now });
  root = new crypto.X509Certificate(m.rootCert);
  issuing = new crypto.X509Certificate(m.issuingCert);
  server = new crypto.X509Certificate(m.serverCert);
  for (const [k, v] of Object.entries(m) as Array<[string, string]>) fs.writeFileSync(tmp.file(`${k}.pem`), v);
});

function ext(file: string, names: string): string {
  return openssl(['x509', '-in', tmp.file(file), '-noout', '-ext', names]);
}

describe('createCaMaterial', () => {
  it('makes a chain openssl accepts: root self-signed, issuing under root, server for sslserver', () => {
    // Validity starts in 2026-03; verify at a time inside every certificate.
    const at = String(Math.floor(nowSec / 1000) + 3600);
    expect(openssl(['verify', '-attime', at, '-CAfile', tmp.file('rootCert.pem'), tmp.file('rootCert.pem')])).toContain(': OK');
    expect(openssl(['verify', '-attime', at, '-CAfile', tmp.file('rootCert.pem'), tmp.file('issuingCert.pem')])).toContain(': OK');
    expect(openssl(['verify', '-attime', at, '-purpose', 'sslserver', '-CAfile', tmp.file('rootCert.pem'), '-untrusted', tmp.file('issuingCert.pem'), tmp.file('serverCert.pem')])).toContain(': OK');
    expect(opensslResult(['verify', '-attime', at, '-purpose', 'sslclient', '-CAfile', tmp.file('rootCert.pem'), '-untrusted', tmp.file('issuingCert.pem'), tmp.file('serverCert.pem')]).ok).toBe(false);
    expect(root.checkIssued(root)).toBe(true);
    expect(root.verify(root.publicKey)).toBe(true);
    expect(issuing.checkIssued(root)).toBe(true);
    expect(issuing.verify(root.publicKey)).toBe(true);
    expect(server.checkIssued(issuing)).toBe(true);
    expect(server.verify(issuing.publicKey)).toBe(true);
  });

  it('root: CN, CA pathlen 1, keyCertSign+cRLSign, SKI, 10 years', () => {
    expect(root.subject).toBe('CN=Sepal Root CA fed-eu-1');
    expect(root.issuer).toBe(root.subject);
    expect(root.ca).toBe(true);
    const e = ext('rootCert.pem', 'basicConstraints,keyUsage,subjectKeyIdentifier');
    expect(e).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:1/);
    expect(e).toMatch(/Key Usage: critical\s+Certificate Sign, CRL Sign\s*\n/);
    expect(e).toContain('Subject Key Identifier');
    expect(root.validFromDate.getTime()).toBe(nowSec - 60_000);
    expect(root.validToDate.toISOString()).toBe('2036-03-04T05:06:07.000Z');
    expect(root.publicKey.asymmetricKeyDetails?.namedCurve).toBe('prime256v1');
  });

  it('issuing CA: CN, CA pathlen 0, keyCertSign+cRLSign+digitalSignature, SKI/AKI, 3 years', () => {
    expect(issuing.subject).toBe('CN=Sepal Issuing CA fed-eu-1');
    expect(issuing.issuer).toBe(root.subject);
    const e = ext('issuingCert.pem', 'basicConstraints,keyUsage,subjectKeyIdentifier,authorityKeyIdentifier');
    expect(e).toMatch(/Basic Constraints: critical\s+CA:TRUE, pathlen:0/);
    expect(e).toMatch(/Key Usage: critical\s+Digital Signature, Certificate Sign, CRL Sign\s*\n/);
    const rootSki = /Subject Key Identifier:\s*\n\s+(\S+)/.exec(ext('rootCert.pem', 'subjectKeyIdentifier'))?.[1];
    expect(rootSki).toBeDefined();
    expect(e).toMatch(new RegExp(`Authority Key Identifier:\\s*\\n\\s+(keyid:)?${rootSki}`));
    expect(issuing.validFromDate.getTime()).toBe(nowSec - 60_000);
    expect(issuing.validToDate.toISOString()).toBe('2029-03-04T05:06:07.000Z');
  });

  it('server: CN = first hostname, SANs as DNS/IP, serverAuth, digitalSignature, 1 year', () => {
    expect(server.subject).toBe('CN=hub.example.org');
    expect(server.issuer).toBe(issuing.subject);
    expect(server.ca).toBe(false);
    expect(server.subjectAltName).toBe('DNS:hub.example.org, IP Address:192.0.2.10, IP Address:2001:DB8:0:0:0:0:0:1, IP Address:0:0:0:0:0:FFFF:C633:6407, DNS:localhost');
    expect(server.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    const e = ext('serverCert.pem', 'basicConstraints,keyUsage,extendedKeyUsage');
    expect(e).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(e).toMatch(/Key Usage: critical\s+Digital Signature\s*\n/);
    expect(e).toMatch(/Extended Key Usage:\s*\n\s+TLS Web Server Authentication\s*\n/);
    expect(server.checkHost('HUB.example.org')).toBe('hub.example.org');
    expect(server.checkIP('192.0.2.10')).toBe('192.0.2.10');
    expect(server.checkIP('2001:db8::1')).toBe('2001:db8::1');
    expect(server.validFromDate.getTime()).toBe(nowSec - 60_000);
    expect(server.validToDate.toISOString()).toBe('2027-03-04T05:06:07.000Z');
  });

  it('returns PKCS#8 PEM keys that match their certificates', () => {
    for (const [cert, key] of [[root, m.rootKey], [issuing, m.issuingKey], [server, m.serverKey]] as const) {
      expect(key.startsWith('-----BEGIN ' + 'PRIVATE KEY-----\n')).toBe(true); // (split so key scanners do not flag this file)
      expect(cert.checkPrivateKey(crypto.createPrivateKey(key))).toBe(true);
    }
    expect(new Set([m.rootKey, m.issuingKey, m.serverKey]).size).toBe(3);
  });

  it('uses distinct random serials', () => {
    const serials = [root, issuing, server].map((c) => c.serialNumber);
    expect(new Set(serials).size).toBe(3);
    for (const s of serials) expect(s).toMatch(/^[0-7]?[0-9A-F]{31}$/);
  });

  it('rejects bad configuration with CONFIG_INVALID', () => {
    const ok = { hostnames: ['hub.test'], federationId: 'f', now };
    const bad = [
      { ...ok, hostnames: [] },
      { ...ok, hostnames: [''] },
      { ...ok, hostnames: ['bad_host.example'] },
      { ...ok, hostnames: ['-bad.example'] },
      { ...ok, hostnames: ['fe80::1%eth0'] },
      { ...ok, hostnames: ['1:2:3'] },
      { ...ok, hostnames: [`${'a'.repeat(60)}.example`] },
      { ...ok, federationId: '' },
      { ...ok, federationId: 'x'.repeat(48) },
      { ...ok, federationId: 'bad\nid' },
    ];
    for (const o of bad) expect(codeOf(() => createCaMaterial(o)), JSON.stringify(o)).toBe(ErrorCodes.CONFIG_INVALID);
    expect(() => createCaMaterial({ ...ok, now: new Date(NaN) })).toThrow(TypeError);
  });
});

describe('PEM helpers and fingerprints', () => {
  it('certFingerprintSha256 hashes the DER of the first certificate, from PEM or DER', () => {
    const want = server.fingerprint256.replaceAll(':', '').toLowerCase();
    expect(certFingerprintSha256(m.serverCert)).toBe(want);
    expect(certFingerprintSha256(m.serverCert + m.issuingCert)).toBe(want);
    expect(certFingerprintSha256(Buffer.from(m.serverCert))).toBe(want);
    expect(certFingerprintSha256(server.raw)).toBe(want);
    expect(certFingerprintSha256(Buffer.concat([server.raw, issuing.raw]))).toBe(want);
    expect(certFingerprintSha256(m.serverKey + m.serverCert)).toBe(want);
    expect(codeOf(() => certFingerprintSha256(m.serverKey))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => certFingerprintSha256('nonsense'))).toBe(ErrorCodes.INVALID_ARGUMENT);
  });

  it('pemToDerList and derToPem round-trip', () => {
    const chain = m.serverCert + m.issuingCert + m.rootCert;
    const ders = pemToDerList(chain);
    expect(ders).toEqual([server.raw, issuing.raw, root.raw]);
    expect(ders.map((d) => derToPem(d, 'CERTIFICATE')).join('')).toBe(chain);
    expect(pemToDerList(m.serverKey + m.serverCert, 'CERTIFICATE')).toEqual([server.raw]);
    expect(pemToDerList(m.serverCert.replaceAll('\n', '\r\n'))).toEqual([server.raw]);
    expect(codeOf(() => pemToDerList(m.serverCert.replace('END CERTIFICATE', 'END X509 CRL')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => pemToDerList(m.serverCert.replace(/\n[A-Za-z0-9+/]{8}/, '\n!!!!!!!!')))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(() => derToPem(server.raw, 'bad label')).toThrow(TypeError);
    const lines = derToPem(Buffer.alloc(100, 7), 'X').split('\n');
    expect(lines.every((l) => l.length <= 64)).toBe(true);
  });
});
