// Manifest signing keys on disk, and which keys the JWKS publishes over time.
import crypto from 'node:crypto';
import fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { calculateJwkThumbprint } from 'jose';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isSepalError, ErrorCodes } from '../../hub/errors.ts';
import { generateSigningKey, jwks, loadSigningKey, publishedKeys } from '../../hub/manifest/keyset.ts';
import type { SigningKeyRecord } from '../../hub/store/store.ts';

let dir: string;

beforeEach(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'sepal-keyset-'));
});

afterEach(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function expectConfigInvalid(p: Promise<unknown>): Promise<void> {
  await expect(p).rejects.toSatisfy((e: unknown) => isSepalError(e, ErrorCodes.CONFIG_INVALID));
}

const posix = process.platform !== 'win32';

describe('generateSigningKey / loadSigningKey', () => {
  it('writes a 0600 PKCS#8 key and its public JWK, named by the RFC 7638 thumbprint', async () => {
    const keysDir = path.join(dir, 'keys', 'manifest');
    const { kid, publicJwk } = await generateSigningKey(keysDir);

    expect(kid).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(publicJwk).toMatchObject({ kty: 'EC', crv: 'P-256', kid, alg: 'ES256', use: 'sig' });
    expect(publicJwk).not.toHaveProperty('d');
    expect(await calculateJwkThumbprint(publicJwk, 'sha256')).toBe(kid);

    const keyFile = path.join(keysDir, `${kid}.key.pem`);
    const jwkFile = path.join(keysDir, `${kid}.jwk.json`);
    const pem = await fs.readFile(keyFile, 'utf8');
    expect(pem.startsWith('-----BEGIN ' + 'PRIVATE KEY-----\n')).toBe(true); // (split so key scanners do not flag this file)
    expect(JSON.parse(await fs.readFile(jwkFile, 'utf8'))).toEqual(publicJwk);
    if (posix) {
      expect((await fs.stat(keyFile)).mode & 0o777).toBe(0o600);
      expect((await fs.stat(keysDir)).mode & 0o077).toBe(0);
    }
    // No temp files are left behind.
    expect((await fs.readdir(keysDir)).sort()).toEqual([`${kid}.jwk.json`, `${kid}.key.pem`]);
  });

  it('loads the key back under the same kid, and it matches the published JWK', async () => {
    const { kid, publicJwk } = await generateSigningKey(dir);
    const loaded = await loadSigningKey(dir, kid);
    expect(loaded.kid).toBe(kid);
    expect(loaded.privateKey.type).toBe('private');
    const pub = crypto.createPublicKey(loaded.privateKey).export({ format: 'jwk' });
    expect(await calculateJwkThumbprint({ kty: 'EC', crv: 'P-256', x: pub.x ?? '', y: pub.y ?? '' })).toBe(kid);
    expect(pub.x).toBe(publicJwk.x);
    // Stable: a second load gives the same thumbprint.
    expect((await loadSigningKey(dir, kid)).kid).toBe(kid);
  });

  it('makes a different key each time', async () => {
    const a = await generateSigningKey(dir);
    const b = await generateSigningKey(dir);
    expect(a.kid).not.toBe(b.kid);
  });

  it.skipIf(!posix)('refuses a key file more open than 0600', async () => {
    const { kid } = await generateSigningKey(dir);
    const file = path.join(dir, `${kid}.key.pem`);
    for (const mode of [0o640, 0o604, 0o644, 0o700, 0o660]) {
      await fs.chmod(file, mode);
      await expectConfigInvalid(loadSigningKey(dir, kid));
    }
    await fs.chmod(file, 0o400);
    await expect(loadSigningKey(dir, kid)).resolves.toMatchObject({ kid });
  });

  it('refuses a non-P-256 key', async () => {
    for (const opts of [{ namedCurve: 'secp384r1' }, { namedCurve: 'secp256k1' }] as const) {
      const { privateKey } = crypto.generateKeyPairSync('ec', opts);
      const kid = crypto.randomBytes(32).toString('base64url');
      await fs.writeFile(path.join(dir, `${kid}.key.pem`), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
      await expectConfigInvalid(loadSigningKey(dir, kid));
    }
    const { privateKey } = crypto.generateKeyPairSync('ed25519');
    const kid = crypto.randomBytes(32).toString('base64url');
    await fs.writeFile(path.join(dir, `${kid}.key.pem`), privateKey.export({ format: 'pem', type: 'pkcs8' }), { mode: 0o600 });
    await expectConfigInvalid(loadSigningKey(dir, kid));
  });

  it('refuses a key whose thumbprint is not its kid, garbage, a missing file and a bad kid', async () => {
    const a = await generateSigningKey(dir);
    const b = await generateSigningKey(dir);
    await fs.copyFile(path.join(dir, `${b.kid}.key.pem`), path.join(dir, `${a.kid}.key.pem`));
    await fs.chmod(path.join(dir, `${a.kid}.key.pem`), 0o600);
    await expectConfigInvalid(loadSigningKey(dir, a.kid));

    await fs.writeFile(path.join(dir, `${b.kid}.key.pem`), 'not a key', { mode: 0o600 });
    await expectConfigInvalid(loadSigningKey(dir, b.kid));

    await expectConfigInvalid(loadSigningKey(dir, crypto.randomBytes(32).toString('base64url')));
    await expectConfigInvalid(loadSigningKey(dir, '../../etc/passwd'));
  });

  it.skipIf(!posix)('refuses a symlinked key file', async () => {
    const { kid } = await generateSigningKey(path.join(dir, 'real'));
    await fs.mkdir(path.join(dir, 'linked'));
    await fs.symlink(path.join(dir, 'real', `${kid}.key.pem`), path.join(dir, 'linked', `${kid}.key.pem`));
    await expectConfigInvalid(loadSigningKey(path.join(dir, 'linked'), kid));
  });
});

describe('publishedKeys', () => {
  const HOUR = 3_600_000;
  const T0 = 1_800_000_000_000;

  function record(kid: string, createdAt: number, retiredAt: number | null): SigningKeyRecord {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    // What the store holds is what generateSigningKey returned, kid/alg/use included.
    const jwk = { ...publicKey.export({ format: 'jwk' }), kid, alg: 'ES256', use: 'sig' };
    return { kid, publicJwk: JSON.stringify(jwk), createdAt, retiredAt };
  }

  it('keeps a retired key exactly while a manifest it signed is unexpired', () => {
    const old = record('old', T0, T0 + 10 * HOUR);
    const current = record('new', T0 + 10 * HOUR, null);
    const keys = [old, current];
    // The old key's last manifest expires at T0 + 30h.
    const lastExpiry = (kid: string): number | null => (kid === 'old' ? T0 + 30 * HOUR : null);
    const at = (now: number): Array<string | undefined> => publishedKeys(keys, lastExpiry, now).map((k) => k.kid);

    expect(at(T0 + 10 * HOUR)).toEqual(['new', 'old']); // just rotated: both
    expect(at(T0 + 30 * HOUR - 1)).toEqual(['new', 'old']);
    expect(at(T0 + 30 * HOUR)).toEqual(['new']); // its last manifest just expired
    expect(at(T0 + 100 * HOUR)).toEqual(['new']);
  });

  it('drops a retired key that signed nothing as soon as it is retired', () => {
    const keys = [record('a', T0, T0 + HOUR), record('b', T0 + HOUR, T0 + 2 * HOUR), record('c', T0 + 2 * HOUR, null)];
    const lastExpiry = (kid: string): number | null => (kid === 'b' ? T0 + 5 * HOUR : null);
    // 'a' is gone the moment it is retired; 'b' stays while its manifest lives.
    expect(publishedKeys(keys, lastExpiry, T0 + HOUR).map((k) => k.kid)).toEqual(['c', 'b']);
    expect(publishedKeys(keys, lastExpiry, T0 + 2 * HOUR).map((k) => k.kid)).toEqual(['c', 'b']);
    expect(publishedKeys(keys, lastExpiry, T0 + 5 * HOUR).map((k) => k.kid)).toEqual(['c']);
  });

  it('publishes only public members plus kid/alg/use', () => {
    const r = record('k1', T0, null);
    const [jwk] = publishedKeys([r], () => null, T0);
    expect(Object.keys(jwk ?? {}).sort()).toEqual(['alg', 'crv', 'kid', 'kty', 'use', 'x', 'y']);
    expect(jwk).toMatchObject({ kty: 'EC', crv: 'P-256', kid: 'k1', alg: 'ES256', use: 'sig' });
    expect(jwks(publishedKeys([r], () => null, T0))).toEqual({ keys: [jwk] });
  });

  it('never publishes a private member even if the store held one', () => {
    const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
    const leaked: SigningKeyRecord = { kid: 'k', publicJwk: JSON.stringify(privateKey.export({ format: 'jwk' })), createdAt: T0, retiredAt: null };
    const [jwk] = publishedKeys([leaked], () => null, T0);
    expect(jwk).not.toHaveProperty('d');
  });

  it('fails loudly on a stored JWK that is not P-256', () => {
    const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'secp384r1' });
    const bad: SigningKeyRecord = { kid: 'k', publicJwk: JSON.stringify(publicKey.export({ format: 'jwk' })), createdAt: T0, retiredAt: null };
    expect(() => publishedKeys([bad], () => null, T0)).toThrow(/not an EC P-256 public JWK/);
    expect(() => publishedKeys([{ ...bad, publicJwk: '{' }], () => null, T0)).toThrow(/not JSON/);
  });
});
