// GetVpnSecret against a real hub (TLS 1.3 mTLS on loopback): a node gets the tls-crypt key its
// manifest names, and nothing else; refusals are coded and audited, the key never is. Also the
// CRL copy for the OpenVPN server (vpn.crlFile) and `serve --vpn-crl-file`.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import type { VpnSecretResponse } from '../../proto/api.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { ensureTlsCryptKey } from '../../hub/vpn/tls-crypt-keys.ts';
import { parseStaticKey } from '../../hub/vpn/static-key.ts';
import {
  type TestHub, type TestNode, cli, client, enrollTestNode, expectRpcError, httpsGet, nodeClient, spawnServe, startTestHub, tempDir, unaryCall,
} from '../helpers/hub.ts';

let hub: TestHub;
let crlDir: string;

function manifest(ref: string | null) {
  return {
    superlink: { address: '10.8.0.1:9092' },
    supernode: { nodeConfig: {} },
    ...(ref === null ? {} : { vpn: { remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }], tlsCryptKeyRef: ref, routes: ['10.8.0.0/24'], superlinkAddress: '10.8.0.1:9092' } }),
    privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
  };
}

beforeAll(async () => {
  crlDir = tempDir('sepal-vpn-crl-');
  hub = await startTestHub({ configure: (c) => ({ ...c, vpn: { crlFile: path.join(crlDir, 'crl.pem') } }) });
  ensureTlsCryptKey(hub.paths.vpnKeysDir, 'default');
  ensureTlsCryptKey(hub.paths.vpnKeysDir, 'org-b:vpn/2');
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(crlDir, { recursive: true, force: true });
});

async function nodeWith(ref: string | null, org = 'org-a'): Promise<TestNode> {
  const node = await enrollTestNode(hub, org);
  await hub.running.hub.manifests.publish({ nodeId: node.nodeId }, manifest(ref), 'test');
  return node;
}

async function getSecret(node: TestNode | null, ref: unknown): Promise<VpnSecretResponse> {
  const c = node === null ? client(hub) : nodeClient(hub, node);
  try {
    return await unaryCall<VpnSecretResponse>(c, 'GetVpnSecret', { ref });
  } finally {
    c.close();
  }
}

/** The copy and GET /crl.pem agree once regenerations settle (the revoking call and the server's
 *  change feed may both regenerate, each with a new thisUpdate): read, fetch, read until stable. */
async function settledCopy(file: string): Promise<{ copy: string; served: string }> {
  for (let i = 0; ; i++) {
    const a = fs.readFileSync(file, 'utf8');
    const served = (await httpsGet(hub, '/crl.pem')).body.toString('utf8');
    const b = fs.readFileSync(file, 'utf8');
    if ((a === b && a === served) || i === 50) return { copy: b, served };
    await new Promise((r) => setTimeout(r, 20));
  }
}

function crlSerials(pem: string): string {
  return execFileSync('openssl', ['crl', '-noout', '-text'], { input: pem, encoding: 'utf8' }).toLowerCase();
}

async function audit() {
  return hub.running.hub.ctx.store.readAudit(0, 100_000);
}

describe('GetVpnSecret', () => {
  it('hands a node the key its manifest names, exactly as the hub stores it, and audits it without the key', async () => {
    const node = await nodeWith('default');
    const res = await getSecret(node, 'default');
    const stored = fs.readFileSync(path.join(hub.paths.vpnKeysDir, 'default.key'), 'utf8');
    expect(res.tlsCryptKey.toString('utf8')).toBe(stored);
    const keyHex = parseStaticKey(stored).toString('hex');
    const entries = (await audit()).filter((e) => e.event === 'vpn.secret_fetched' && e.nodeId === node.nodeId);
    expect(entries).toHaveLength(1);
    expect(entries[0]?.org).toBe('org-a');
    expect(JSON.parse(entries[0]?.detail ?? '{}')).toEqual({ ref: 'default' });
    const everything = JSON.stringify(await audit());
    for (let i = 0; i < keyHex.length; i += 32) expect(everything).not.toContain(keyHex.slice(i, i + 32));
  });

  it('serves a reference with : / @ (one file, percent-encoded name)', async () => {
    const node = await nodeWith('org-b:vpn/2', 'org-b');
    const res = await getSecret(node, 'org-b:vpn/2');
    expect(res.tlsCryptKey.toString('utf8')).toBe(fs.readFileSync(path.join(hub.paths.vpnKeysDir, 'org-b%3Avpn%2F2.key'), 'utf8'));
  });

  it('refuses a revoked node (coded, audited)', async () => {
    const node = await nodeWith('default');
    await hub.running.hub.revoke(node.nodeId, 'test');
    expect(await expectRpcError(getSecret(node, 'default'))).toEqual({ status: grpc.status.PERMISSION_DENIED, code: ErrorCodes.CLIENT_CERT_REVOKED });
    const denied = (await audit()).filter((e) => e.event === 'security.denied' && e.nodeId === node.nodeId && e.reason === ErrorCodes.CLIENT_CERT_REVOKED);
    expect(denied.length).toBe(1);
  });

  it('refuses a caller without a client certificate', async () => {
    expect(await expectRpcError(getSecret(null, 'default'))).toEqual({ status: grpc.status.UNAUTHENTICATED, code: ErrorCodes.CLIENT_CERT_MISSING });
  });

  it('refuses references that could leave the key store, or are not references at all', async () => {
    const node = await nodeWith('default');
    for (const ref of ['../x', 'a/../../hub', '/etc/passwd', '', '.hidden', 'a b', 'x'.repeat(300)]) {
      expect(await expectRpcError(getSecret(node, ref)), ref).toEqual({ status: grpc.status.INVALID_ARGUMENT, code: ErrorCodes.INVALID_ARGUMENT });
    }
    const denied = (await audit()).filter((e) => e.event === 'security.denied' && e.nodeId === node.nodeId && e.reason === ErrorCodes.INVALID_ARGUMENT);
    expect(denied.length).toBe(7);
  });

  it('answers NOT_FOUND for a reference the hub has no key for', async () => {
    const node = await nodeWith('nope');
    expect(await expectRpcError(getSecret(node, 'nope'))).toEqual({ status: grpc.status.NOT_FOUND, code: ErrorCodes.NOT_FOUND });
  });

  it('refuses a key the node\'s own manifest does not name (another organisation\'s key), and a node without a VPN manifest', async () => {
    const a = await nodeWith('default');
    expect(await expectRpcError(getSecret(a, 'org-b:vpn/2'))).toEqual({ status: grpc.status.PERMISSION_DENIED, code: ErrorCodes.PERMISSION_DENIED });
    const b = await nodeWith(null);
    expect(await expectRpcError(getSecret(b, 'default'))).toEqual({ status: grpc.status.PERMISSION_DENIED, code: ErrorCodes.PERMISSION_DENIED });
  });

  it('rate-limits each node (10 a minute), not the others', async () => {
    const node = await nodeWith('default');
    for (let i = 0; i < 10; i++) await getSecret(node, 'default');
    expect(await expectRpcError(getSecret(node, 'default'))).toEqual({ status: grpc.status.RESOURCE_EXHAUSTED, code: ErrorCodes.RATE_LIMITED });
    const other = await nodeWith('default');
    await expect(getSecret(other, 'default')).resolves.toBeDefined();
  });
});

describe('vpn.crlFile: the CRL copy for the OpenVPN server', () => {
  it('is written at start and rewritten on every revocation, identical to GET /crl.pem, mode 0644', async () => {
    const file = path.join(crlDir, 'crl.pem');
    expect((fs.statSync(file).mode & 0o777).toString(8)).toBe('644');
    const node = await enrollTestNode(hub, 'org-a');
    await hub.running.hub.revoke(node.nodeId, 'test');
    expect(crlSerials(fs.readFileSync(file, 'utf8'))).toContain(node.serial);
    const { copy, served } = await settledCopy(file);
    expect(copy).toBe(served);
  });

  it('follows a revocation made by the CLI in another process', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const before = fs.readFileSync(path.join(crlDir, 'crl.pem'), 'utf8');
    const r = await cli(['node', 'revoke', node.nodeId, '--data-dir', hub.paths.dataDir]);
    expect(r.code).toBe(0);
    const after = fs.readFileSync(path.join(crlDir, 'crl.pem'), 'utf8');
    expect(after).not.toBe(before);
    expect(crlSerials(after)).toContain(node.serial);
    const { copy, served } = await settledCopy(path.join(crlDir, 'crl.pem'));
    expect(copy).toBe(served);
  });

  it('serve --vpn-crl-file writes the copy; a directory that does not exist stops start-up with CONFIG_INVALID', async () => {
    const dir = tempDir();
    try {
      const data = path.join(dir, 'hub');
      expect((await cli(['init', '--data-dir', data, '--hostname', 'localhost', '--grpc-listen', '127.0.0.1:0', '--https-listen', '127.0.0.1:0'])).code).toBe(0);
      const bad = spawnServe(['--data-dir', data, '--vpn-crl-file', path.join(dir, 'missing', 'crl.pem')]);
      const exit = await bad.exited;
      expect(exit.code).toBe(1);
      expect(exit.stderr).toContain('error CONFIG_INVALID: vpn.crlFile');
      const good = spawnServe(['--data-dir', data, '--vpn-crl-file', path.join(dir, 'crl.pem')]);
      try {
        await good.ready;
        expect(fs.readFileSync(path.join(dir, 'crl.pem'), 'utf8')).toBe(fs.readFileSync(path.join(data, 'crl', 'crl.pem'), 'utf8'));
      } finally {
        good.child.kill('SIGTERM');
        await good.exited;
      }
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
