// The hub's VPN pieces without a network: the static key format, the tls-crypt key store (names,
// traversal, create-once, permissions), the server configuration renderer and its option checks,
// the CRL refresh units, and the `vpn` section of hub.json. Real openvpn runs in
// test/integration/hub-vpn-server.test.ts.
import { afterEach, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCodes } from '../../proto/errors.ts';
import { defaultHubConfig, parseHubConfig } from '../../hub/config.ts';
import { createCaMaterial } from '../../hub/ca/bootstrap.ts';
import { randomSerial } from '../../hub/ca/certificate.ts';
import { issueServerCert, newServerKey } from '../../hub/ca/server-cert.ts';
import { isSepalError } from '../../hub/errors.ts';
import { formatStaticKey, parseStaticKey, STATIC_KEY_BYTES } from '../../hub/vpn/static-key.ts';
import { ensureTlsCryptKey, readTlsCryptKey, tlsCryptKeyFile } from '../../hub/vpn/tls-crypt-keys.ts';
import { checkVpnServerOptions, renderCrlRefreshUnits, renderServerConf, type VpnServerOptions } from '../../hub/vpn/server-config.ts';

const dirs: string[] = [];
function tmp(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-vpn-unit-'));
  dirs.push(d);
  return d;
}
afterEach(() => {
  for (const d of dirs.splice(0)) fs.rmSync(d, { recursive: true, force: true });
});

function codeOf(f: () => unknown): string | undefined {
  try {
    f();
  } catch (e) {
    return isSepalError(e) ? e.code : `not coded: ${String(e)}`;
  }
  return undefined;
}

describe('OpenVPN static key files', () => {
  it('formats 256 bytes as openvpn --genkey does: header, 16 lines of 32 hex digits, footer', () => {
    const key = Buffer.from(Array.from({ length: 256 }, (_, i) => i));
    const text = formatStaticKey(key);
    const lines = text.trimEnd().split('\n');
    expect(lines.slice(0, 4)).toEqual(['#', '# 2048 bit OpenVPN static key', '#', '-----BEGIN OpenVPN Static key V1-----']);
    expect(lines.at(-1)).toBe('-----END OpenVPN Static key V1-----');
    expect(lines.slice(4, -1)).toHaveLength(16);
    for (const l of lines.slice(4, -1)) expect(l).toMatch(/^[0-9a-f]{32}$/);
    expect(lines[4]).toBe('000102030405060708090a0b0c0d0e0f');
    expect(parseStaticKey(text).equals(key)).toBe(true);
  });

  it('makes fresh random keys', () => {
    expect(parseStaticKey(formatStaticKey())).toHaveLength(STATIC_KEY_BYTES);
    expect(formatStaticKey()).not.toBe(formatStaticKey());
  });

  it('reads CRLF files and upper-case hex; refuses short, long, non-hex or decorated files (coded)', () => {
    const good = formatStaticKey(crypto.randomBytes(256));
    expect(parseStaticKey(good.replaceAll('\n', '\r\n').toUpperCase().replace('-----BEGIN OPENVPN STATIC KEY V1-----', '-----BEGIN OpenVPN Static key V1-----').replace('-----END OPENVPN STATIC KEY V1-----', '-----END OpenVPN Static key V1-----'))).toHaveLength(256);
    const lines = good.split('\n');
    for (const bad of [
      '',
      lines.filter((_, i) => i !== 5).join('\n'),
      good.replace(/^[0-9a-f]{32}$/m, (l) => `${l}00`),
      good.replace(/^[0-9a-f]{32}$/m, (l) => `${l.slice(0, 31)}g`),
      `${good}extra\n`,
      good.replace('-----END OpenVPN Static key V1-----\n', ''),
    ]) {
      expect(codeOf(() => parseStaticKey(bad))).toBe(ErrorCodes.INVALID_ARGUMENT);
    }
    expect(() => formatStaticKey(Buffer.alloc(255))).toThrow(TypeError);
  });
});

describe('tls-crypt key store', () => {
  it('maps each valid reference to one file name inside the directory, and nothing else', () => {
    const dir = '/data/vpn/tls-crypt';
    expect(tlsCryptKeyFile(dir, 'default')).toBe('/data/vpn/tls-crypt/default.key');
    expect(tlsCryptKeyFile(dir, 'org-b:vpn/2@x')).toBe('/data/vpn/tls-crypt/org-b%3Avpn%2F2%40x.key');
    for (const bad of ['../x', 'a/../b', '..', '/abs', '.hidden', '', 'a b', 'a\0b', 'x'.repeat(257), '%2F']) {
      expect(tlsCryptKeyFile(dir, bad), bad).toBeNull();
    }
    // Valid as a manifest reference, but too long for a file name once encoded.
    expect(tlsCryptKeyFile(dir, 'a' + '/'.repeat(100))).toBeNull();
    expect(tlsCryptKeyFile(dir, 'a'.repeat(190))).toBe(`${dir}/${'a'.repeat(190)}.key`);
  });

  it('creates a key once (0600 in a 0700 directory) and returns the same key afterwards', () => {
    const dir = path.join(tmp(), 'vpn', 'tls-crypt');
    const a = ensureTlsCryptKey(dir, 'default');
    expect(a.created).toBe(true);
    expect((fs.statSync(dir).mode & 0o777).toString(8)).toBe('700');
    expect((fs.statSync(path.join(dir, 'default.key')).mode & 0o777).toString(8)).toBe('600');
    const b = ensureTlsCryptKey(dir, 'default');
    expect(b).toEqual({ text: a.text, created: false });
    expect(readTlsCryptKey(dir, 'default')).toBe(a.text);
    expect(readTlsCryptKey(dir, 'other')).toBeNull();
    expect(fs.readdirSync(dir)).toEqual(['default.key']); // no temp files left behind
  });

  it('refuses a key file others can read, a corrupt one, and a bad reference (coded; not shown to clients)', () => {
    const dir = tmp();
    ensureTlsCryptKey(dir, 'k');
    fs.chmodSync(path.join(dir, 'k.key'), 0o644);
    expect(codeOf(() => readTlsCryptKey(dir, 'k'))).toBe(ErrorCodes.DATA_DIR_INVALID);
    fs.chmodSync(path.join(dir, 'k.key'), 0o600);
    fs.writeFileSync(path.join(dir, 'k.key'), 'garbage');
    expect(codeOf(() => readTlsCryptKey(dir, 'k'))).toBe(ErrorCodes.DATA_DIR_INVALID);
    expect(codeOf(() => readTlsCryptKey(dir, '../k'))).toBe(ErrorCodes.INVALID_ARGUMENT);
    expect(codeOf(() => ensureTlsCryptKey(dir, 'a/../k'))).toBe(ErrorCodes.INVALID_ARGUMENT);
  });
});

const BASE: VpnServerOptions = {
  names: ['vpn.example.org'], port: 1194, proto: 'udp', network: '10.8.0.0/24', pushRoutes: [], keyRef: 'default', federationId: 'fed',
};

describe('server.conf', () => {
  it('holds the security-relevant directives', () => {
    const conf = renderServerConf({ ...BASE, pushRoutes: ['192.168.10.0/24', 'fd00:1::/64'] });
    const lines = new Set(conf.split('\n'));
    for (const l of [
      'port 1194', 'proto udp', 'dev tun', 'topology subnet', 'server 10.8.0.0 255.255.255.0', 'ca ca.pem', 'cert server.crt', 'key server.key',
      'remote-cert-tls client', 'verify-x509-name n- name-prefix', 'crl-verify crl.pem', 'tls-crypt tls-crypt.key', 'tls-version-min 1.3', 'dh none',
      'data-ciphers AES-256-GCM:CHACHA20-POLY1305', 'user nobody', 'group nogroup', 'persist-key', 'persist-tun', 'keepalive 10 60',
      'explicit-exit-notify 1', 'push "route 192.168.10.0 255.255.255.0"', 'push "route-ipv6 fd00:1::/64"',
    ]) expect(lines.has(l), l).toBe(true);
    expect(conf).not.toMatch(/^client-to-client/m);
    expect(conf).not.toMatch(/^(cipher|auth|tls-auth|comp-lzo|compress) /m);
  });

  it('tcp has no explicit-exit-notify (udp only); other networks get their mask', () => {
    const conf = renderServerConf({ ...BASE, proto: 'tcp', port: 443, network: '172.20.0.0/16' });
    expect(conf).toContain('proto tcp\n');
    expect(conf).toContain('port 443\n');
    expect(conf).toContain('server 172.20.0.0 255.255.0.0\n');
    expect(conf).not.toContain('explicit-exit-notify');
  });

  it('names every bad option by its flag', () => {
    expect(checkVpnServerOptions(BASE)).toEqual([]);
    const problems = checkVpnServerOptions({
      names: ['x'.repeat(70), 'bad name'], port: 0, proto: 'sctp' as 'udp', network: '10.8.0.1/24', pushRoutes: ['10.0.0.0/33'], keyRef: '../x', federationId: 'f',
    });
    expect(problems.map((p) => p.split(':')[0])).toEqual(['--name', '--name', '--name', '--port', '--proto', '--network', '--push-route', '--key-ref']);
    expect(problems.find((p) => p.startsWith('--network'))).toContain('did you mean 10.8.0.0/24');
    expect(checkVpnServerOptions({ ...BASE, network: '10.0.0.0/8' })[0]).toMatch(/^--network/);
    expect(checkVpnServerOptions({ ...BASE, network: 'fd00::/64' })[0]).toMatch(/^--network/);
    expect(() => renderServerConf({ ...BASE, port: 70000 })).toThrow(TypeError);
  });
});

describe('CRL refresh units', () => {
  it('fetch over https trusting only the federation CA, verify, then rename into place', () => {
    const u = renderCrlRefreshUnits({ dir: '/etc/openvpn/server/sepal', crlUrl: 'https://hub.example.org:8444/crl.pem' });
    expect(u.service).toContain('--cacert "$0/ca.pem" --output "$0/.ca.pem.new" "$2"');
    expect(u.service).toContain('--cacert "$0/.ca.pem.new" --output "$0/.crl.pem.new" "$1"');
    expect(u.service).toContain('openssl crl -in "$0/.crl.pem.new" -CAfile "$0/.ca.pem.new" -noout');
    expect(u.service).toContain('mv -f "$0/.ca.pem.new" "$0/ca.pem" && mv -f "$0/.crl.pem.new" "$0/crl.pem"');
    expect(u.service).toContain("' /etc/openvpn/server/sepal https://hub.example.org:8444/crl.pem https://hub.example.org:8444/ca.pem\n");
    expect(u.service).toContain('ReadWritePaths=/etc/openvpn/server/sepal\n');
    expect(u.timer).toContain('OnUnitActiveSec=15min');
    expect(() => renderCrlRefreshUnits({ dir: 'relative', crlUrl: 'https://h/crl.pem' })).toThrow(TypeError);
    expect(() => renderCrlRefreshUnits({ dir: '/a b', crlUrl: 'https://h/crl.pem' })).toThrow(TypeError);
    expect(() => renderCrlRefreshUnits({ dir: '/a', crlUrl: 'http://h/crl.pem' })).toThrow(TypeError);
    expect(() => renderCrlRefreshUnits({ dir: '/a', crlUrl: "https://h/crl.pem';reboot;'" })).toThrow(TypeError);
  });
});

describe('VPN server certificate', () => {
  const ca = createCaMaterial({ hostnames: ['hub.example.org'], federationId: 'fed', now: new Date() });
  const issuingCert = new crypto.X509Certificate(ca.issuingCert);
  const issuer = { cert: issuingCert, certDer: issuingCert.raw, key: crypto.createPrivateKey(ca.issuingKey) };

  it('is a serverAuth leaf of the issuing CA with the names as SAN, CN the first', () => {
    const k = newServerKey();
    const now = Date.now();
    const { der } = issueServerCert(issuer, { spkiDer: k.spkiDer, names: ['VPN.example.org', '203.0.113.7'], notBefore: new Date(now - 60_000), notAfter: new Date(now + 86400_000), serial: randomSerial() });
    const cert = new crypto.X509Certificate(der);
    expect(cert.subject).toBe('CN=vpn.example.org');
    expect(cert.subjectAltName).toBe('DNS:vpn.example.org, IP Address:203.0.113.7');
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.ca).toBe(false);
    expect(cert.verify(issuingCert.publicKey)).toBe(true);
    expect(cert.checkPrivateKey(crypto.createPrivateKey(k.keyPem))).toBe(true);
  });

  it('never outlives the issuing CA', () => {
    const k = newServerKey();
    const r = issueServerCert(issuer, { spkiDer: k.spkiDer, names: ['vpn.example.org'], notBefore: new Date(), notAfter: new Date(Date.now() + 20 * 365 * 86400_000), serial: randomSerial() });
    expect(r.notAfter.getTime()).toBe(Date.parse(issuingCert.validTo));
  });
});

describe('hub.json vpn section', () => {
  it('defaults to no CRL copy, takes a path, and refuses unknown keys with their path', () => {
    const base = defaultHubConfig('fed', ['hub.example.org']);
    expect(parseHubConfig(base, 't').vpn).toEqual({ crlFile: null });
    const { vpn: _drop, ...withoutVpn } = base;
    expect(parseHubConfig(withoutVpn, 't').vpn).toEqual({ crlFile: null });
    expect(parseHubConfig({ ...base, vpn: { crlFile: '/etc/openvpn/server/sepal/crl.pem' } }, 't').vpn.crlFile).toBe('/etc/openvpn/server/sepal/crl.pem');
    try {
      parseHubConfig({ ...base, vpn: { crlFile: null, crlDir: '/x' } }, 't');
      expect.unreachable();
    } catch (e) {
      expect(isSepalError(e, ErrorCodes.CONFIG_INVALID) && e.detail?.['path']).toBe('vpn.crlDir');
    }
  });
});
