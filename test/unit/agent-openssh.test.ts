// The agent's OpenSSH encoder against the real ssh-keygen: the private key file it writes must load
// (`ssh-keygen -y` prints the same public line), sign (`ssh-keygen -Y sign`, verified against our
// public line) and the public line must fingerprint the same (`ssh-keygen -l`).
import { afterAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { opensshFingerprint, opensshPrivateKey, opensshPublicKey } from '../../agent/enroll/openssh.ts';
import { checkFlowerPublicKey } from '../../hub/enroll/flower-key.ts';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-ssh-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

let seq = 0;
function writeKey(priv: crypto.KeyObject, comment: string): { keyFile: string; pubFile: string; pub: string } {
  const keyFile = path.join(dir, `k${++seq}`);
  fs.writeFileSync(keyFile, opensshPrivateKey(priv, comment), { mode: 0o600 });
  const pub = opensshPublicKey(priv, comment);
  const pubFile = `${keyFile}.pub`;
  fs.writeFileSync(pubFile, pub + '\n');
  return { keyFile, pubFile, pub };
}

function sshKeygen(args: string[], input?: string): string {
  return execFileSync('ssh-keygen', args, { encoding: 'utf8', input, stdio: ['pipe', 'pipe', 'pipe'] });
}

/** The private scalar of a key as ssh-keygen would store it: leading zero and high-bit cases. */
function dFirstByte(k: crypto.KeyObject): number {
  return Buffer.from(k.export({ format: 'jwk' }).d ?? '', 'base64url')[0] ?? 0;
}

describe('OpenSSH encoding (ecdsa-sha2-nistp384)', () => {
  it('ssh-keygen -y reads our private key file and prints exactly our public key line', () => {
    // Enough keys to hit both mpint shapes: d with the top bit set (00 prefix) and clear.
    const shapes = new Set<boolean>();
    for (let i = 0; i < 12 || shapes.size < 2; i++) {
      const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
      shapes.add(dFirstByte(privateKey) >= 0x80);
      const { keyFile, pub } = writeKey(privateKey, `sepal-agent@host-${i}`);
      expect(sshKeygen(['-y', '-f', keyFile]).trim()).toBe(pub);
    }
  });

  it('ssh-keygen -l fingerprints our public key file as we do', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const { pubFile } = writeKey(privateKey, 'sepal-agent@fp');
    const out = sshKeygen(['-l', '-E', 'sha256', '-f', pubFile]).trim();
    expect(out).toBe(`384 ${opensshFingerprint(privateKey)} sepal-agent@fp (ECDSA)`);
  });

  it('a signature made by ssh-keygen with our private key file verifies against our public line', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const { keyFile, pub } = writeKey(privateKey, 'sepal-agent@sign');
    const msg = path.join(dir, 'msg');
    fs.writeFileSync(msg, 'sepal');
    sshKeygen(['-Y', 'sign', '-f', keyFile, '-n', 'file', msg]);
    const allowed = path.join(dir, 'allowed_signers');
    fs.writeFileSync(allowed, `node@sepal ${pub}\n`);
    const out = execFileSync('ssh-keygen', ['-Y', 'verify', '-f', allowed, '-I', 'node@sepal', '-n', 'file', '-s', `${msg}.sig`], { input: 'sepal', encoding: 'utf8' });
    expect(out).toContain('Good "file" signature for node@sepal');
  });

  it('the file has the PROTOCOL.key framing: magic, cipher none, one key, padded to 8 bytes', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const text = opensshPrivateKey(privateKey, 'c', 0x01020304);
    const lines = text.trimEnd().split('\n');
    expect(lines[0]).toBe(`-----BEGIN ${['OPENSSH', 'PRIVATE', 'KEY'].join(' ')}-----`);
    expect(lines.at(-1)).toBe(`-----END ${['OPENSSH', 'PRIVATE', 'KEY'].join(' ')}-----`);
    expect(lines.slice(1, -1).every((l) => l.length <= 70)).toBe(true);
    const body = Buffer.from(lines.slice(1, -1).join(''), 'base64');
    expect(body.subarray(0, 15).toString('latin1')).toBe('openssh-key-v1\0');
    let at = 15;
    const str = (): Buffer => {
      const n = body.readUInt32BE(at);
      const v = body.subarray(at + 4, at + 4 + n);
      at += 4 + n;
      return v;
    };
    expect(str().toString()).toBe('none');
    expect(str().toString()).toBe('none');
    expect(str().length).toBe(0);
    expect(body.readUInt32BE(at)).toBe(1);
    at += 4;
    str(); // public blob
    const priv = str();
    expect(at).toBe(body.length);
    expect(priv.length % 8).toBe(0);
    expect(priv.readUInt32BE(0)).toBe(0x01020304);
    expect(priv.readUInt32BE(4)).toBe(0x01020304);
  });

  it('the hub accepts the public line as a Flower key', () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' });
    const line = opensshPublicKey(publicKey, 'sepal-agent@x');
    expect(checkFlowerPublicKey(line)).toBe(line.split(' ').slice(0, 2).join(' '));
  });

  it('P-256 keys encode as ecdsa-sha2-nistp256 and load in ssh-keygen too', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const { keyFile, pub } = writeKey(privateKey, '');
    expect(pub.startsWith('ecdsa-sha2-nistp256 ')).toBe(true);
    expect(sshKeygen(['-y', '-f', keyFile]).trim()).toBe(pub);
  });

  it('refuses non-EC keys and multi-line comments', () => {
    const { privateKey } = crypto.generateKeyPairSync('ed25519');
    expect(() => opensshPrivateKey(privateKey, 'c')).toThrow(TypeError);
    const ec = crypto.generateKeyPairSync('ec', { namedCurve: 'P-384' }).privateKey;
    expect(() => opensshPublicKey(ec, 'a\nb')).toThrow(TypeError);
  });
});
