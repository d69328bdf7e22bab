// The cloud side of the VPN against the real OpenVPN 2.6: `sepal-hub vpn server-config` (the real
// CLI) writes the server directory, openvpn runs it in a network namespace of the test's own, and
// a real openvpn client in a second namespace connects with a node certificate and the tls-crypt
// key it fetched over GetVpnSecret, as an agent would. Checked: the tunnel carries traffic and the
// pushed route arrives; a revocation reaches the server through vpn.crlFile and refuses the node
// at its next connection; certificates that are not node certificates and a wrong tls-crypt key
// are refused. Skips (saying why) without root, /dev/net/tun, iproute2 or openvpn.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ChildProcess } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { VpnSecretResponse } from '../../proto/api.ts';
import { randomSerial } from '../../hub/ca/certificate.ts';
import { derToPem } from '../../hub/ca/pem.ts';
import { formatStaticKey, parseStaticKey } from '../../hub/vpn/static-key.ts';
import { newKey } from '../helpers/csr.ts';
import { cli, enrollTestNode, nodeClient, startTestHub, tempDir, unaryCall, type TestHub, type TestNode } from '../helpers/hub.ts';
import { createNetPair, netnsUnavailable, type NetPair } from '../helpers/netns.ts';

const why = netnsUnavailable();
if (why !== null) console.warn(`hub-vpn-server: skipped: ${why}`);

const TUNNEL = '10.199.0.0/24';
const SERVER_TUN_IP = '10.199.0.1';
const PUSHED = '192.168.77.0/24';

interface Ovpn {
  readonly child: ChildProcess;
  output(): string;
  /** Where the output ends now: waitFor(…, mark()) looks only at what comes after. */
  mark(): number;
  /** Resolves with the first output line (after `from`) matching re; rejects on timeout or exit. */
  waitFor(re: RegExp, from?: number, timeoutMs?: number): Promise<string>;
  stop(): Promise<void>;
}

function runOpenvpn(pair: NetPair, ns: string, argv: string[], cwd: string): Ovpn {
  const child = pair.spawnIn(ns, ['openvpn', ...argv], { cwd });
  let out = '';
  let exited = false;
  const listeners = new Set<() => void>();
  const onData = (b: Buffer) => {
    out += b.toString('utf8');
    for (const l of [...listeners]) l();
  };
  child.stdout?.on('data', onData);
  child.stderr?.on('data', onData);
  const done = new Promise<void>((resolve) => child.once('exit', () => {
    exited = true;
    for (const l of [...listeners]) l();
    resolve();
  }));
  return {
    child,
    output: () => out,
    mark: () => out.length,
    waitFor: (re, from = 0, timeoutMs = 15_000) => new Promise((resolve, reject) => {
      const check = () => {
        const m = out.slice(from).split('\n').find((line) => re.test(line));
        if (m !== undefined) finish(() => resolve(m));
        else if (exited) finish(() => reject(new Error(`openvpn exited before ${String(re)}:\n${out}`)));
      };
      const timer = setTimeout(() => finish(() => reject(new Error(`timed out waiting for ${String(re)}:\n${out}`))), timeoutMs);
      const finish = (f: () => void) => {
        clearTimeout(timer);
        listeners.delete(check);
        f();
      };
      listeners.add(check);
      check();
    }),
    stop: async () => {
      if (!exited && child.pid !== undefined) {
        try {
          process.kill(-child.pid, 'SIGTERM'); // its own process group (spawned detached)
        } catch {
          // already gone
        }
        const t = setTimeout(() => { try { process.kill(-(child.pid as number), 'SIGKILL'); } catch { /* gone */ } }, 5000);
        await done;
        clearTimeout(t);
      }
    },
  };
}

describe.skipIf(why !== null)('OpenVPN server from `sepal-hub vpn server-config`', () => {
  let hub: TestHub;
  let pair: NetPair;
  let work: string;
  let outDir: string;
  let server: Ovpn;
  const clients: Ovpn[] = [];

  beforeAll(async () => {
    // openvpn drops to nobody and re-reads crl.pem as nobody: the path must be traversable.
    work = tempDir('sepal-vpn-');
    fs.chmodSync(work, 0o755);
    outDir = path.join(work, 'sepal');
    fs.mkdirSync(outDir, { mode: 0o755 });
    pair = createNetPair();
    hub = await startTestHub({ configure: (c) => ({ ...c, vpn: { crlFile: path.join(outDir, 'crl.pem') } }) });
    const r = await cli(['vpn', 'server-config', '--data-dir', hub.paths.dataDir, '--out', outDir, '--name', pair.server.ip,
      '--network', TUNNEL, '--push-route', PUSHED, '--key-ref', 'fed/main', '--install-dir', outDir, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    // As docs/vpn.md deploys it for openvpn-server@sepal: a wrapper in the parent directory.
    fs.writeFileSync(path.join(work, 'sepal.conf'), `cd ${outDir}\nconfig server.conf\n`);
    server = runOpenvpn(pair, pair.server.ns, ['--suppress-timestamps', '--config', 'sepal.conf'], work);
    await server.waitFor(/Initialization Sequence Completed/);
  }, 60_000);

  afterAll(async () => {
    for (const c of clients) await c.stop();
    await server?.stop();
    pair?.cleanup();
    await hub?.stop();
    if (work !== undefined) fs.rmSync(work, { recursive: true, force: true });
  });

  function clientDir(name: string, files: { certPem: string; keyPem: string; tlsCrypt: string }): string {
    const dir = path.join(work, name);
    fs.mkdirSync(dir, { mode: 0o700 });
    fs.writeFileSync(path.join(dir, 'ca.pem'), hub.caPem);
    fs.writeFileSync(path.join(dir, 'node.crt'), files.certPem);
    fs.writeFileSync(path.join(dir, 'node.key'), files.keyPem, { mode: 0o600 });
    fs.writeFileSync(path.join(dir, 'tls-crypt.key'), files.tlsCrypt, { mode: 0o600 });
    // What an agent renders from its manifest (the agent's own renderer lives in agent/vpn/).
    fs.writeFileSync(path.join(dir, 'client.conf'), [
      'client', 'dev tun', 'proto udp', `remote ${pair.server.ip} 1194`, 'nobind',
      'remote-cert-tls server', `verify-x509-name ${pair.server.ip} name`,
      'ca ca.pem', 'cert node.crt', 'key node.key', 'tls-crypt tls-crypt.key',
      'tls-version-min 1.3', 'data-ciphers AES-256-GCM:CHACHA20-POLY1305', 'connect-retry 1 1', 'verb 3', '',
    ].join('\n'));
    return dir;
  }

  function startClient(dir: string): Ovpn {
    const c = runOpenvpn(pair, pair.client.ns, ['--suppress-timestamps', '--cd', dir, '--config', 'client.conf'], dir);
    clients.push(c);
    return c;
  }

  async function fetchKey(node: TestNode): Promise<string> {
    await hub.running.hub.manifests.publish({ nodeId: node.nodeId }, {
      superlink: { address: `${SERVER_TUN_IP}:9092` },
      supernode: { nodeConfig: {} },
      vpn: { remotes: [{ host: pair.server.ip, port: 1194, proto: 'udp' }], tlsCryptKeyRef: 'fed/main', routes: [PUSHED], superlinkAddress: `${SERVER_TUN_IP}:9092` },
      privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
    }, 'test');
    const c = nodeClient(hub, node);
    try {
      const res = await unaryCall<VpnSecretResponse>(c, 'GetVpnSecret', { ref: 'fed/main' });
      return res.tlsCryptKey.toString('utf8');
    } finally {
      c.close();
    }
  }

  it('wrote what openvpn needs, with private files private and the hub\'s key handed out unchanged', async () => {
    for (const [f, mode] of [['server.key', 0o600], ['tls-crypt.key', 0o600], ['server.conf', 0o644], ['crl.pem', 0o644], ['ca.pem', 0o644]] as const) {
      expect((fs.statSync(path.join(outDir, f)).mode & 0o777).toString(8), f).toBe(mode.toString(8));
    }
    const cert = new crypto.X509Certificate(fs.readFileSync(path.join(outDir, 'server.crt')));
    expect(cert.subject).toBe(`CN=${pair.server.ip}`);
    expect(cert.subjectAltName).toBe(`IP Address:${pair.server.ip}`);
    expect(cert.keyUsage).toEqual(['1.3.6.1.5.5.7.3.1']);
    expect(cert.checkPrivateKey(crypto.createPrivateKey(fs.readFileSync(path.join(outDir, 'server.key'))))).toBe(true);
    execFileSync('openssl', ['verify', '-purpose', 'sslserver', '-CAfile', hub.paths.rootCert, '-untrusted', hub.paths.issuingCert, path.join(outDir, 'server.crt')], { stdio: 'pipe' });
    const node = await enrollTestNode(hub, 'org-a');
    expect(await fetchKey(node)).toBe(fs.readFileSync(path.join(outDir, 'tls-crypt.key'), 'utf8'));
  });

  it('a node connects with its certificate and the fetched key: traffic flows and the pushed route arrives', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const dir = clientDir('ok', { certPem: node.chainPem, keyPem: node.key.keyPem, tlsCrypt: await fetchKey(node) });
    const at = server.mark();
    const c = startClient(dir);
    await c.waitFor(/Initialization Sequence Completed/, 0, 20_000);
    await server.waitFor(new RegExp(`${node.nodeId}/.*Data Channel: cipher 'AES-256-GCM'`), at);
    expect(server.output().slice(at)).toMatch(/Control Channel: TLSv1\.3/);
    // A TCP exchange with a listener on the server's tunnel address, from the client's namespace.
    const listener = pair.spawnIn(pair.server.ns, [process.execPath, '-e', `require('node:net').createServer((s) => s.end('pong\\n')).listen(7777, '${SERVER_TUN_IP}', () => console.log('listening'))`]);
    try {
      await new Promise<void>((resolve, reject) => {
        listener.stdout?.on('data', () => resolve());
        listener.once('exit', (code) => reject(new Error(`listener exited ${code}`)));
      });
      const reply = pair.execIn(pair.client.ns, [process.execPath, '-e', `const s = require('node:net').connect(7777, '${SERVER_TUN_IP}'); s.on('data', (d) => { process.stdout.write(d); process.exit(0); }); setTimeout(() => process.exit(3), 5000);`]);
      expect(reply).toBe('pong\n');
    } finally {
      if (listener.pid !== undefined) process.kill(-listener.pid, 'SIGTERM');
    }
    expect(pair.execIn(pair.client.ns, ['ip', 'route', 'show', PUSHED])).toContain(PUSHED);
    await c.stop();
  });

  it('refuses a certificate from the hub\'s CA whose CN is not a node id (verify-x509-name)', async () => {
    const key = newKey();
    const now = Date.now();
    const leaf = hub.running.hub.ctx.authority.leafIssuer.issue({ spkiDer: key.spkiDer, nodeId: 'operator-laptop', org: 'org-a', uri: 'spiffe://x/org/org-a/node/operator-laptop', notBefore: new Date(now - 60_000), notAfter: new Date(now + 3600_000), serial: randomSerial() });
    const node = await enrollTestNode(hub, 'org-a');
    const dir = clientDir('badname', { certPem: derToPem(leaf.der, 'CERTIFICATE') + fs.readFileSync(hub.paths.issuingCert, 'utf8'), keyPem: key.keyPem, tlsCrypt: await fetchKey(node) });
    const at = server.mark();
    const c = startClient(dir);
    await server.waitFor(/VERIFY X509NAME ERROR: .*CN=operator-laptop, must be n-/, at);
    expect(c.output()).not.toMatch(/Initialization Sequence Completed/);
    await c.stop();
  });

  it('refuses the hub\'s own server certificate as a client (remote-cert-tls client)', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const dir = clientDir('servercert', {
      certPem: fs.readFileSync(hub.paths.serverCert, 'utf8') + fs.readFileSync(hub.paths.issuingCert, 'utf8'),
      keyPem: fs.readFileSync(hub.paths.serverKey, 'utf8'),
      tlsCrypt: await fetchKey(node),
    });
    const at = server.mark();
    const c = startClient(dir);
    // OpenSSL's purpose check (OpenVPN asks for an SSL client) refuses it before the EKU check.
    await server.waitFor(/VERIFY ERROR: depth=0, error=unsuitable certificate purpose: CN=localhost/, at);
    expect(c.output()).not.toMatch(/Initialization Sequence Completed/);
    await c.stop();
  });

  it('refuses a node-shaped certificate from another CA', async () => {
    // A CA that is not the federation's, and a client certificate from it that looks like a node's.
    const d = path.join(work, 'foreign-ca');
    fs.mkdirSync(d, { mode: 0o700 });
    const ossl = (args: string[]) => execFileSync('openssl', args, { cwd: d, stdio: 'pipe' });
    ossl(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'ca.key', '-out', 'ca.pem', '-days', '1', '-subj', '/CN=Foreign CA (test material)', '-addext', 'basicConstraints=critical,CA:TRUE', '-addext', 'keyUsage=critical,keyCertSign,cRLSign']);
    ossl(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', 'node.key', '-out', 'node.csr', '-subj', '/O=org-a/CN=n-0123456789abcdef']);
    fs.writeFileSync(path.join(d, 'ext'), 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n');
    ossl(['x509', '-req', '-in', 'node.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-days', '1', '-extfile', 'ext', '-out', 'node.crt']);
    const node = await enrollTestNode(hub, 'org-a');
    const dir = clientDir('foreign', { certPem: fs.readFileSync(path.join(d, 'node.crt'), 'utf8'), keyPem: fs.readFileSync(path.join(d, 'node.key'), 'utf8'), tlsCrypt: await fetchKey(node) });
    const at = server.mark();
    const c = startClient(dir);
    await server.waitFor(/VERIFY ERROR: depth=0, error=unable to get local issuer certificate: O=org-a, CN=n-0123456789abcdef/, at);
    expect(c.output()).not.toMatch(/Initialization Sequence Completed/);
    await c.stop();
  });

  it('drops packets with a wrong tls-crypt key before any TLS', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    await fetchKey(node);
    const dir = clientDir('badkey', { certPem: node.chainPem, keyPem: node.key.keyPem, tlsCrypt: formatStaticKey() });
    const at = server.mark();
    const c = startClient(dir);
    await server.waitFor(/tls-crypt unwrapping failed/i, at);
    expect(c.output()).not.toMatch(/Initialization Sequence Completed/);
    await c.stop();
  });

  it('a revocation reaches the server through vpn.crlFile: the node is refused at its next connection', async () => {
    const node = await enrollTestNode(hub, 'org-a');
    const dir = clientDir('revoked', { certPem: node.chainPem, keyPem: node.key.keyPem, tlsCrypt: await fetchKey(node) });
    const first = startClient(dir);
    await first.waitFor(/Initialization Sequence Completed/, 0, 20_000);
    await first.stop();

    const before = fs.readFileSync(path.join(outDir, 'crl.pem'), 'utf8');
    const t0 = performance.now();
    await hub.running.hub.revoke(node.nodeId, 'test');
    const after = fs.readFileSync(path.join(outDir, 'crl.pem'), 'utf8');
    expect(after).not.toBe(before);
    expect(after).toBe((await hub.running.hub.crl.current()).pem);
    expect(execFileSync('openssl', ['crl', '-in', path.join(outDir, 'crl.pem'), '-noout', '-text'], { encoding: 'utf8' }).toUpperCase()).toContain(node.serial.toUpperCase());

    const at = server.mark();
    const again = startClient(dir);
    await server.waitFor(new RegExp(`VERIFY ERROR: depth=0, error=certificate revoked: O=org-a, CN=${node.nodeId}`), at, 20_000);
    console.info(`hub-vpn-server: revocation to refusal by the OpenVPN server: ${Math.round(performance.now() - t0)} ms`);
    expect(again.output()).not.toMatch(/Initialization Sequence Completed/);
    await again.stop();
  });

  it('the tls-crypt key the hub made in TypeScript is the format openvpn --genkey writes', () => {
    const mine = path.join(work, 'genkey.key');
    execFileSync('openvpn', ['--genkey', 'tls-crypt', mine], { stdio: 'pipe' });
    const theirs = fs.readFileSync(mine, 'utf8');
    expect(formatStaticKey(parseStaticKey(theirs))).toBe(theirs);
  });
});
