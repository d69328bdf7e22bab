// The agent's PKCS#10 request against the real openssl (`req -verify -inform DER`) and the hub's own
// parser; and the DER writer's length encoding at its boundaries.
import { afterAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { buildCsr } from '../../agent/enroll/csr.ts';
import { derToPem, oid, pemBlocks, set, tlv } from '../../agent/enroll/der.ts';
import { parseAndVerifyCsr } from '../../hub/ca/csr.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-csr-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

function openssl(args: string[]): string {
  // -verify reports on stderr in some OpenSSL versions, on stdout in others.
  return execFileSync('openssl', args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
}

function opensslAll(args: string[]): string {
  return execFileSync('sh', ['-c', 'openssl "$@" 2>&1', 'sh', ...args], { encoding: 'utf8' });
}

describe('buildCsr', () => {
  it('openssl verifies the self-signature of the DER request; subject CN and public key are ours', () => {
    const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = path.join(dir, 'a.csr');
    fs.writeFileSync(file, buildCsr(privateKey, 'host-1.example.org'));
    expect(opensslAll(['req', '-verify', '-inform', 'DER', '-in', file, '-noout'])).toMatch(/verify OK/);
    expect(openssl(['req', '-inform', 'DER', '-in', file, '-noout', '-subject', '-nameopt', 'RFC2253']).trim()).toBe('subject=CN=host-1.example.org');
    const pub = openssl(['req', '-inform', 'DER', '-in', file, '-noout', '-pubkey']);
    expect(crypto.createPublicKey(pub).export({ type: 'spki', format: 'der' })).toEqual(publicKey.export({ type: 'spki', format: 'der' }));
    const text = openssl(['req', '-inform', 'DER', '-in', file, '-noout', '-text']);
    expect(text).toContain('Signature Algorithm: ecdsa-with-SHA256');
    expect(text).toMatch(/Attributes:\s*\n\s*\(none\)/);
    // The attributes field is there, as an empty [0] SET (RFC 2986 makes it mandatory).
    expect(openssl(['asn1parse', '-inform', 'DER', '-in', file])).toMatch(/d=2 +hl=2 l= +0 cons: cont \[ 0 \]/);
  });

  it('a UTF-8 name survives (UTF8String)', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const file = path.join(dir, 'u.csr');
    fs.writeFileSync(file, buildCsr(privateKey, 'Zürich Lab 1'));
    expect(opensslAll(['req', '-verify', '-inform', 'DER', '-in', file, '-noout'])).toMatch(/verify OK/);
    expect(openssl(['req', '-inform', 'DER', '-in', file, '-noout', '-subject', '-nameopt', 'RFC2253,-esc_msb,utf8']).trim()).toBe('subject=CN=Zürich Lab 1');
  });

  it('the hub parses and verifies it (strict DER), P-256 and P-384', () => {
    for (const curve of ['P-256', 'P-384'] as const) {
      const { privateKey, publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: curve });
      const v = parseAndVerifyCsr(buildCsr(privateKey, 'n'));
      expect(v.curve).toBe(curve);
      expect(v.spkiDer).toEqual(publicKey.export({ type: 'spki', format: 'der' }));
    }
  });

  it('refuses an empty or over-long common name and non-EC keys', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(() => buildCsr(privateKey, '')).toThrow(TypeError);
    expect(() => buildCsr(privateKey, 'x'.repeat(65))).toThrow(TypeError);
    expect(() => buildCsr(crypto.generateKeyPairSync('ed25519').privateKey, 'n')).toThrow(TypeError);
  });
});

describe('DER writer', () => {
  it('encodes definite lengths minimally at the boundaries', () => {
    for (const [len, header] of [[0, '0400'], [127, '047f'], [128, '048180'], [255, '0481ff'], [256, '04820100'], [65535, '0482ffff'], [65536, '0483010000']] as const) {
      const enc = tlv(0x04, Buffer.alloc(len));
      expect(enc.subarray(0, header.length / 2).toString('hex')).toBe(header);
      expect(enc.length).toBe(header.length / 2 + len);
    }
  });

  it('encodes OIDs with multi-byte arcs and sorts SET OF', () => {
    expect(oid('1.2.840.10045.4.3.2').toString('hex')).toBe('06082a8648ce3d040302');
    expect(oid('2.5.4.3').toString('hex')).toBe('0603550403');
    expect(set(Buffer.from('0402bbbb', 'hex'), Buffer.from('0401aa', 'hex')).toString('hex')).toBe('31070401aa0402bbbb');
    expect(() => oid('3.1')).toThrow(TypeError);
  });

  it('PEM round trip; junk around blocks and other labels are refused', () => {
    const der = crypto.randomBytes(200);
    const pem = derToPem(der, 'CERTIFICATE');
    expect(pemBlocks(pem + pem, 'CERTIFICATE')).toEqual([der, der]);
    expect(pemBlocks('junk\n' + pem, 'CERTIFICATE')).toBeNull();
    expect(pemBlocks(derToPem(der, 'PRIVATE KEY'), 'CERTIFICATE')).toBeNull();
    expect(pemBlocks('', 'CERTIFICATE')).toBeNull();
  });
});
