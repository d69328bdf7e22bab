// The OpenVPN client configuration the agent renders from a manifest: each directive checked line by
// line (remotes in order, the manifest's routes only, no scripts, no persist-key so SIGUSR1 re-reads
// the rotated certificate), values that are not one token refused, and the rendered file fed to the
// real openvpn 2.6 (the server name pinned to the first remote's host): it must get as far as trying to connect (a closed TCP port on loopback), i.e.
// every option parses and every file loads.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { renderClientConfig, routeDirective, vpnPaths, type VpnPaths } from '../../agent/vpn/config.ts';
import { derToPem } from '../../agent/enroll/der.ts';
import { pkcs8Pem, spkiDer } from '../../agent/enroll/keys.ts';
import { parseManifestBody } from '../../proto/manifest.ts';
import type { VpnConfig } from '../../agent/reconcile/steps.ts';
import { createTestCa, newKey } from './agent-credentials.fixtures.ts';
import { tlsCryptKeyFile } from './agent-vpn.fixtures.ts';

let dir: string;
let paths: VpnPaths;

beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-vpncfg-'));
  paths = vpnPaths(path.join(dir, 'state'), path.join(dir, 'run'));
});

afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function vpnSection(over: Partial<VpnConfig> = {}): VpnConfig {
  const r = parseManifestBody({
    superlink: { address: '10.8.0.1:9092' },
    supernode: { nodeConfig: {} },
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    vpn: {
      remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }, { host: '192.0.2.10', port: 443, proto: 'tcp' }],
      tlsCryptKeyRef: 'fed/tls-crypt',
      routes: ['10.8.0.0/24', '10.9.1.7/16', 'fd00:8::/64'],
      superlinkAddress: '10.8.0.1:9092',
      ...over,
    },
  });
  if (!r.ok || r.value.vpn === undefined) throw new Error(JSON.stringify(r.ok ? 'no vpn' : r.issues));
  return r.value.vpn;
}

const directives = (text: string) => text.split('\n').filter((l) => l !== '' && !l.startsWith('#'));

describe('renderClientConfig', () => {
  it('writes a client with the manifest remotes in order, the federation CA, tls-crypt and the manifest routes only', () => {
    const lines = directives(renderClientConfig({ vpn: vpnSection(), paths }));
    expect(lines).toEqual([
      'client',
      'dev tun',
      'nobind',
      'remote vpn.example.org 1194 udp',
      'remote 192.0.2.10 443 tcp-client',
      'resolv-retry infinite',
      'connect-retry 1 30',
      `ca "${paths.ca}"`,
      `cert "${paths.cert}"`,
      `key "${paths.key}"`,
      `tls-crypt "${paths.tlsCrypt}"`,
      'remote-cert-tls server',
      'verify-x509-name vpn.example.org name',
      'tls-version-min 1.2 or-highest',
      'data-ciphers AES-256-GCM:CHACHA20-POLY1305',
      'auth-nocache',
      'persist-tun',
      'route-nopull',
      'route 10.8.0.0 255.255.255.0',
      'route 10.9.0.0 255.255.0.0',
      'route-ipv6 fd00:8::/64',
      `management "${paths.managementSocket}" unix`,
      'script-security 1',
      'suppress-timestamps',
      'verb 3',
    ]);
    // What must never be there: key persistence (rotation relies on re-reading), scripts, pulled routes.
    const text = lines.join('\n');
    expect(text).not.toMatch(/persist-key|remote-random|\bup\b|\bdown\b|client-connect|redirect-gateway|auth-user-pass/);
  });

  it('puts the state and runtime files where vpnPaths says: <stateDir>/vpn and <runtimeDir>/openvpn.sock', () => {
    expect(paths.dir).toBe(path.join(dir, 'state', 'vpn'));
    expect(paths.managementSocket).toBe(path.join(dir, 'run', 'openvpn.sock'));
    for (const f of [paths.config, paths.ca, paths.cert, paths.key, paths.tlsCrypt, paths.tlsCryptRef]) expect(path.dirname(f)).toBe(paths.dir);
  });

  it('routes: host bits cleared, every prefix length, IPv6 kept as CIDR', () => {
    expect(routeDirective('0.0.0.0/0')).toBe('route 0.0.0.0 0.0.0.0');
    expect(routeDirective('192.168.7.9/32')).toBe('route 192.168.7.9 255.255.255.255');
    expect(routeDirective('172.16.200.1/12')).toBe('route 172.16.0.0 255.240.0.0');
    expect(routeDirective('10.1.2.3/25')).toBe('route 10.1.2.0 255.255.255.128');
    expect(routeDirective('2001:db8::/32')).toBe('route-ipv6 2001:db8::/32');
    expect(() => routeDirective('10.0.0.0/33')).toThrow(TypeError);
    expect(() => routeDirective('10.0.0.0')).toThrow(TypeError);
  });

  it('quotes paths (spaces, quotes, backslashes) and refuses values that are not one token', () => {
    const odd = vpnPaths(path.join(dir, 'state with "quotes" \\ and spaces'), path.join(dir, 'run'));
    const text = renderClientConfig({ vpn: vpnSection(), paths: odd });
    expect(text).toContain(`ca "${odd.ca.replace(/[\\"]/g, (c) => `\\${c}`)}"`);
    // The schema would refuse these already; the renderer refuses them again.
    const bad = { ...vpnSection(), remotes: [{ host: 'vpn.example.org\nup /bin/sh', port: 1194, proto: 'udp' as const }] };
    expect(() => renderClientConfig({ vpn: bad, paths })).toThrow(TypeError);
    const badPath = vpnPaths(path.join(dir, 'a\nscript-security 3'), path.join(dir, 'run'));
    expect(() => renderClientConfig({ vpn: vpnSection(), paths: badPath })).toThrow(TypeError);
  });
});

const openvpn = spawnSync('openvpn', ['--version'], { encoding: 'utf8' });
const noOpenvpn = openvpn.status === null ? 'openvpn is not installed' : null;

describe('the rendered configuration with the real openvpn', () => {
  it.skipIf(noOpenvpn !== null)('parses, loads every file and gets as far as connecting (loopback, closed port)', () => {
    const now = Date.now();
    const ca = createTestCa(now);
    const key = newKey();
    const leaf = ca.leaf({ spki: spkiDer(key.publicKey), nodeId: 'n-vpn', org: 'org-a', notBefore: now - 60_000, notAfter: now + 3_600_000 });
    fs.mkdirSync(paths.dir, { recursive: true, mode: 0o700 });
    fs.mkdirSync(path.dirname(paths.managementSocket), { recursive: true, mode: 0o700 });
    fs.writeFileSync(paths.ca, derToPem(ca.rootDer, 'CERTIFICATE') + derToPem(ca.issuingDer, 'CERTIFICATE'), { mode: 0o600 });
    fs.writeFileSync(paths.cert, derToPem(leaf, 'CERTIFICATE') + derToPem(ca.issuingDer, 'CERTIFICATE'), { mode: 0o600 });
    fs.writeFileSync(paths.key, pkcs8Pem(key.privateKey), { mode: 0o600 });
    fs.writeFileSync(paths.tlsCrypt, tlsCryptKeyFile(), { mode: 0o600 });
    // A TCP port nobody listens on: the connect is refused at once.
    const vpn = vpnSection({ remotes: [{ host: '127.0.0.1', port: 9, proto: 'tcp' }] });
    fs.writeFileSync(paths.config, renderClientConfig({ vpn, paths }), { mode: 0o600 });
    const r = spawnSync('openvpn', ['--config', paths.config, '--connect-timeout', '1', '--connect-retry-max', '1'], { encoding: 'utf8', timeout: 20_000 });
    const out = `${r.stdout}\n${r.stderr}`;
    expect(out, out).not.toMatch(/Options error|Cannot load|Error:.*certificate|unable to|No such file/i);
    expect(out, out).toMatch(/MANAGEMENT: unix domain socket listening on/);
    expect(out, out).toMatch(/Connection refused|connect-retry-max|Exiting/i);
    expect(r.status).not.toBeNull(); // it exited by itself after the one failed attempt
  });
});
