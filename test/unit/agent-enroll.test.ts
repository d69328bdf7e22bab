// The enrollment flow with its network edges replaced: a stub hub that really signs our CSR with a
// throwaway CA (so every check on the answer runs), a stub device login, and a real state dir.
// ALREADY_ENROLLED without --force, a new node with it, cancellation, and refusals that write nothing.
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ErrorCodes } from '../../proto/errors.ts';
import { AgentError, UsageError } from '../../agent/errors.ts';
import { silentLogger } from '../../agent/log.ts';
import { parseHubUrl, type HttpsGet } from '../../agent/enroll/bootstrap.ts';
import type { DevicePrompt } from '../../agent/enroll/device-flow.ts';
import { enroll, type EnrollDeps, type EnrollOptions } from '../../agent/enroll/enroll.ts';
import { collectFacts } from '../../agent/enroll/facts.ts';
import type { EnrollCall, EnrollResult, EnrollRpc } from '../../agent/enroll/hub-client.ts';
import { readNodeRecord, statePaths } from '../../agent/enroll/store.ts';
import { parseEnrollArgs } from '../../agent/cli/enroll.ts';
import { toString as qrToString } from 'qrcode';
import { plainPromptLines, formatRemaining, renderQr } from '../../agent/cli/prompt.ts';
import { createCaMaterial, type CaMaterial } from '../../hub/ca/bootstrap.ts';
import { LeafIssuer, randomSerial } from '../../hub/ca/certificate.ts';
import { parseAndVerifyCsr } from '../../hub/ca/csr.ts';
import { checkFlowerPublicKey } from '../../hub/enroll/flower-key.ts';
import { derToPem } from '../../agent/enroll/der.ts';
import { HOUR, createTestCa } from './agent-credentials.fixtures.ts';

let fed: CaMaterial;
let issuer: LeafIssuer;
let pin: string;
const der = (pem: string): Buffer => new crypto.X509Certificate(pem).raw;

beforeAll(() => {
  fed = createCaMaterial({ hostnames: ['localhost'], federationId: 'fed-a', now: new Date() });
  issuer = new LeafIssuer({ cert: new crypto.X509Certificate(fed.issuingCert), certDer: der(fed.issuingCert), key: crypto.createPrivateKey(fed.issuingKey) });
  pin = crypto.createHash('sha256').update(der(fed.rootCert)).digest('hex');
});

let tmp: string;
let stateDir: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-agent-enroll-'));
  stateDir = path.join(tmp, 'state');
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

function discovery(idp: unknown = null): string {
  return JSON.stringify({
    issuer: 'https://localhost:8444', federation_id: 'fed-a', grpc_address: 'localhost:8443',
    jwks_uri: 'https://localhost:8444/.well-known/jwks.json', crl_uri: 'https://localhost:8444/crl.pem',
    ca_bundle_uri: 'https://localhost:8444/ca.pem', idp,
  });
}

interface Harness {
  deps: EnrollDeps;
  gets: string[];
  calls: EnrollCall[];
  replaced: string[];
  prompts: DevicePrompt[];
  abort: AbortController;
}

function harness(opts: { idp?: unknown; org?: string; firstNode?: number; deviceLogin?: EnrollDeps['deviceLogin'] } = {}): Harness {
  const gets: string[] = [];
  const calls: EnrollCall[] = [];
  const replaced: string[] = [];
  const prompts: DevicePrompt[] = [];
  const abort = new AbortController();
  const get: HttpsGet = (req) => {
    gets.push(req.url.pathname);
    const body = req.url.pathname === '/ca.pem' ? fed.rootCert + fed.issuingCert : discovery(opts.idp ?? null);
    return Promise.resolve({ status: 200, body: Buffer.from(body) });
  };
  let seq = (opts.firstNode ?? 1) - 1;
  const enrollRpc: EnrollRpc = (_address, rootPem, call) => {
    expect(rootPem).toBe(fed.rootCert);
    calls.push(call);
    const csr = parseAndVerifyCsr(call.csrDer);
    checkFlowerPublicKey(call.flowerPublicKey);
    const nodeId = `n-${String(++seq).padStart(16, '0')}`;
    const now = Date.now();
    const cert = issuer.issue({
      spkiDer: csr.spkiDer, nodeId, org: opts.org ?? 'org-a', uri: `spiffe://fed-a/org/org-a/node/${nodeId}`,
      notBefore: new Date(now - 60_000), notAfter: new Date(now + 86_400_000), serial: randomSerial(),
    });
    const res: EnrollResult = {
      nodeId, org: opts.org ?? 'org-a', certificateDer: cert.der, chainDer: [der(fed.issuingCert)], caBundleDer: [der(fed.rootCert)],
      notAfterUnixMs: now + 86_400_000, manifest: { jws: 'aGVhZA.Ym9keQ.c2ln', version: '3' },
    };
    return Promise.resolve(res);
  };
  const deps: EnrollDeps = {
    get, enrollRpc,
    deviceLogin: opts.deviceLogin ?? (() => Promise.reject(new Error('no device login in this test'))),
    facts: () => collectFacts(),
    ui: { replacing: (id) => replaced.push(id), devicePrompt: (p) => prompts.push(p), deviceDone: () => undefined },
    log: silentLogger(),
    signal: abort.signal,
  };
  return { deps, gets, calls, replaced, prompts, abort };
}

function options(over: Partial<EnrollOptions> = {}): EnrollOptions {
  return { hubUrl: parseHubUrl('https://localhost:8444'), caSha256: pin, enrollmentToken: 'sepal_et_x', name: 'host-1', org: '', stateDir, force: false, ...over };
}

async function failure(p: Promise<unknown>): Promise<AgentError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof AgentError) return e;
    throw e;
  }
  throw new Error('expected a failure');
}

function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  const walk = (d: string): void => {
    for (const e of fs.readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      if (e.isDirectory()) walk(p);
      else out[path.relative(dir, p)] = fs.readFileSync(p, 'utf8');
    }
  };
  if (fs.existsSync(dir)) walk(dir);
  return out;
}

describe('enroll', () => {
  it('enrolls with a token: one RPC with our CSR, Flower key, facts and token; identity and manifest stored', async () => {
    const h = harness();
    const out = await enroll(options(), h.deps);
    expect(out.nodeId).toBe('n-0000000000000001');
    expect(out.replaced).toBeNull();
    expect(h.gets).toEqual(['/ca.pem', '/.well-known/sepal-configuration']);
    expect(h.calls).toHaveLength(1);
    const call = h.calls[0];
    expect(call?.credential).toEqual({ enrollmentToken: 'sepal_et_x' });
    expect(call?.name).toBe('host-1');
    expect(call?.org).toBe('');
    expect(call?.flowerPublicKey).toMatch(/^ecdsa-sha2-nistp384 [A-Za-z0-9+/=]+ sepal-agent@host-1$/);
    expect(call?.facts.hostname).toBe(os.hostname());
    expect(call?.facts.memoryBytes).toBe(String(os.totalmem()));
    const paths = statePaths(stateDir);
    expect(readNodeRecord(paths.nodeJson)).toMatchObject({
      nodeId: out.nodeId, org: 'org-a', name: 'host-1', hubUrl: 'https://localhost:8444/', grpcAddress: 'localhost:8443', caSha256: pin, federationId: 'fed-a',
    });
    expect(fs.readFileSync(path.join(paths.identity, 'flower.pub'), 'utf8')).toBe(call?.flowerPublicKey + '\n');
    expect(fs.readFileSync(paths.manifest, 'utf8')).toBe('aGVhZA.Ym9keQ.c2ln\n');
    // The stored TLS key is the one the certificate carries.
    const key = crypto.createPrivateKey(fs.readFileSync(path.join(paths.identity, 'tls.key')));
    expect(new crypto.X509Certificate(fs.readFileSync(path.join(paths.identity, 'tls.crt'))).checkPrivateKey(key)).toBe(true);
    expect(fs.existsSync(paths.lock)).toBe(false);
  });

  it('ALREADY_ENROLLED without --force: refused before any network call, nothing changes', async () => {
    await enroll(options(), harness().deps);
    const before = snapshot(stateDir);
    const h = harness();
    const e = await failure(enroll(options(), h.deps));
    expect(e.code).toBe(ErrorCodes.ALREADY_ENROLLED);
    expect(e.message).toContain('n-0000000000000001');
    expect(e.message).toContain('--force');
    expect(h.gets).toEqual([]);
    expect(h.calls).toEqual([]);
    expect(snapshot(stateDir)).toEqual(before);
  });

  it('--force enrolls a new node and says the old one stays registered', async () => {
    await enroll(options(), harness().deps);
    const h = harness({ firstNode: 7 });
    const out = await enroll(options({ force: true }), h.deps);
    expect(out.nodeId).toBe('n-0000000000000007');
    expect(h.replaced).toEqual(['n-0000000000000001']);
    expect(out.replaced).toBe('n-0000000000000001');
    expect(readNodeRecord(statePaths(stateDir).nodeJson)?.nodeId).toBe('n-0000000000000007');
    expect(fs.readdirSync(stateDir).filter((n) => n.startsWith('.identity-'))).toEqual([]);
  });

  it('an unreadable node.json stops a plain enroll (STATE_INVALID) and is replaced with --force', async () => {
    fs.mkdirSync(path.join(stateDir, 'identity'), { recursive: true });
    fs.writeFileSync(path.join(stateDir, 'identity', 'node.json'), '{ broken');
    const e = await failure(enroll(options(), harness().deps));
    expect(e.code).toBe(ErrorCodes.STATE_INVALID);
    expect(e.message).toContain('--force');
    const h = harness();
    const out = await enroll(options({ force: true }), h.deps);
    expect(h.replaced).toHaveLength(1);
    expect(readNodeRecord(statePaths(stateDir).nodeJson)?.nodeId).toBe(out.nodeId);
  });

  it('CA_FINGERPRINT_MISMATCH writes nothing, not even the state dir', async () => {
    const e = await failure(enroll(options({ caSha256: '00'.repeat(32) }), harness().deps));
    expect(e.code).toBe(ErrorCodes.CA_FINGERPRINT_MISMATCH);
    expect(fs.existsSync(stateDir)).toBe(false);
  });

  it('a hub refusal leaves no state dir behind on a first enrollment', async () => {
    const h = harness();
    const e = await failure(enroll(options(), { ...h.deps, enrollRpc: () => Promise.reject(new AgentError(ErrorCodes.ENROLLMENT_TOKEN_INVALID, 'no')) }));
    expect(e.code).toBe(ErrorCodes.ENROLLMENT_TOKEN_INVALID);
    expect(fs.existsSync(stateDir)).toBe(false);
  });

  it('ORG_MISMATCH when the hub enrolled into another organisation than --org; nothing stored', async () => {
    const e = await failure(enroll(options({ org: 'org-b' }), harness({ org: 'org-a' }).deps));
    expect(e.code).toBe(ErrorCodes.ORG_MISMATCH);
    expect(fs.existsSync(statePaths(stateDir).nodeJson)).toBe(false);
  });

  it('without --token and without an IdP at the hub: ENROLLMENT_UNAVAILABLE', async () => {
    const e = await failure(enroll(options({ enrollmentToken: undefined }), harness().deps));
    expect(e.code).toBe(ErrorCodes.ENROLLMENT_UNAVAILABLE);
  });

  it('during a root rotation the pin may be either root; ca.pem holds the pinned root and what it vouches for, never more', async () => {
    const now = Date.now();
    const oldCa = createTestCa(now, 'fed-a');
    const newCa = createTestCa(now, 'fed-a');
    const cross = oldCa.crossSign(newCa, { notBefore: now - HOUR, notAfter: now + 24 * HOUR });
    const pem = (ders: readonly Buffer[]): string => ders.map((d) => derToPem(d, 'CERTIFICATE')).join('');
    /** A hub serving the rotation's /ca.pem and issuing under the new root with bundle [old, new, cross]. */
    const rotatingHub = (): { deps: EnrollDeps; anchors: string[] } => {
      const h = harness();
      const anchors: string[] = [];
      const get: HttpsGet = (req) => (req.url.pathname === '/ca.pem'
        ? Promise.resolve({ status: 200, body: Buffer.from(pem([newCa.rootDer, oldCa.rootDer, cross, newCa.issuingDer])) })
        : h.deps.get(req));
      const enrollRpc: EnrollRpc = (_address, rootPem, call) => {
        anchors.push(rootPem);
        const leaf = newCa.leaf({ spki: parseAndVerifyCsr(call.csrDer).spkiDer, nodeId: 'n-0000000000000001', org: 'org-a', notBefore: now - 60_000, notAfter: now + 24 * HOUR });
        return Promise.resolve({
          nodeId: 'n-0000000000000001', org: 'org-a', certificateDer: leaf, chainDer: [newCa.issuingDer], caBundleDer: [oldCa.rootDer, newCa.rootDer, cross],
          notAfterUnixMs: now + 24 * HOUR, manifest: null,
        });
      };
      return { deps: { ...h.deps, get, enrollRpc }, anchors };
    };
    const caPem = (): string => fs.readFileSync(path.join(statePaths(stateDir).identity, 'ca.pem'), 'utf8');

    // Pinned to the new root: the old one is not reachable from it.
    const pinnedNew = rotatingHub();
    await enroll(options({ caSha256: newCa.fingerprint }), pinnedNew.deps);
    expect(pinnedNew.anchors).toEqual([pem([newCa.rootDer])]);
    expect(caPem()).toBe(pem([newCa.rootDer]));
    expect(readNodeRecord(statePaths(stateDir).nodeJson)?.caSha256).toBe(newCa.fingerprint);

    // Pinned to the old root: it vouches for the new one, which issued the certificate.
    const pinnedOld = rotatingHub();
    await enroll(options({ caSha256: oldCa.fingerprint, force: true }), pinnedOld.deps);
    expect(pinnedOld.anchors).toEqual([pem([oldCa.rootDer])]);
    expect(caPem()).toBe(pem([oldCa.rootDer, newCa.rootDer]));
    expect(readNodeRecord(statePaths(stateDir).nodeJson)?.caSha256).toBe(oldCa.fingerprint);
  });

  it('a CA bundle without the pinned root or a root it vouches for is CLIENT_CERT_UNTRUSTED; nothing stored', async () => {
    const h = harness();
    const foreign = createTestCa(Date.now(), 'fed-b');
    const enrollRpc: EnrollRpc = async (address, rootPem, call, signal) => ({ ...await h.deps.enrollRpc(address, rootPem, call, signal), caBundleDer: [foreign.rootDer] });
    const e = await failure(enroll(options(), { ...h.deps, enrollRpc }));
    expect(e.code).toBe(ErrorCodes.CLIENT_CERT_UNTRUSTED);
    expect(fs.existsSync(stateDir)).toBe(false);
  });

  it('device flow: the access token goes to the hub; Ctrl-C while waiting is CANCELLED and writes nothing', async () => {
    const idp = { issuer: 'https://idp.example.org', client_id: 'sepal-agent', audience: 'sepal-hub', scopes: ['openid', 'enroll'] };
    const ok = harness({ idp, deviceLogin: (got, d) => {
      expect(got).toEqual(idp);
      d.onPrompt({ verificationUri: 'https://idp/device', userCode: 'ABCD-EFGH', verificationUriComplete: undefined, expiresIn: 600, issuedAt: 0 });
      return Promise.resolve('access-token-1');
    } });
    await enroll(options({ enrollmentToken: undefined }), ok.deps);
    expect(ok.calls[0]?.credential).toEqual({ accessToken: 'access-token-1' });
    expect(ok.prompts.map((p) => p.userCode)).toEqual(['ABCD-EFGH']);

    fs.rmSync(stateDir, { recursive: true });
    const h = harness({ idp, deviceLogin: (_idp, d) => new Promise((_resolve, reject) => {
      d.signal.addEventListener('abort', () => reject(new AgentError(ErrorCodes.CANCELLED, 'cancelled')));
    }) });
    const p = enroll(options({ enrollmentToken: undefined }), h.deps);
    setTimeout(() => h.abort.abort(), 20);
    expect((await failure(p)).code).toBe(ErrorCodes.CANCELLED);
    expect(h.calls).toEqual([]);
    expect(fs.existsSync(stateDir)).toBe(false);
  });
});

describe('parseEnrollArgs', () => {
  const env = { hostname: () => 'host-1', stateDir: '/var/lib/sepal-agent' };
  const base = ['--hub', 'https://hub:8444', '--ca-sha256', 'AB:'.repeat(31) + 'AB'];

  it('normalises the pin and fills defaults', () => {
    const a = parseEnrollArgs(base, env);
    expect(a.caSha256).toBe('ab'.repeat(32));
    expect(a.name).toBe('host-1');
    expect(a.org).toBe('');
    expect(a.stateDir).toBe('/var/lib/sepal-agent');
    expect(a.enrollmentToken).toBeUndefined();
    expect(a.force).toBe(false);
    expect(a.json).toBe(false);
  });

  it('usage errors: missing or bad flags, unknown flags, positionals', () => {
    for (const argv of [
      [], ['--hub', 'https://hub'], ['--ca-sha256', 'ab'.repeat(32)], [...base, '--bogus'], [...base, 'extra'],
      ['--hub', 'http://hub', '--ca-sha256', 'ab'.repeat(32)], ['--hub', 'https://hub', '--ca-sha256', 'xyz'],
      [...base, '--org', 'Org A'], [...base, '--name', '-bad'], [...base, '--name', 'x'.repeat(65)], [...base, '--token', ''],
    ]) {
      expect(() => parseEnrollArgs(argv, env), argv.join(' ')).toThrow(UsageError);
    }
    expect(() => parseEnrollArgs(base, { ...env, hostname: () => 'bad host!' })).toThrow(/pass --name/);
  });
});

describe('the device prompt', () => {
  it('without a terminal: exactly one parseable line per fact', () => {
    expect(plainPromptLines({ verificationUri: 'https://idp/device', userCode: 'WXYZ-1234', verificationUriComplete: 'https://idp/device?user_code=WXYZ-1234', expiresIn: 600, issuedAt: 0 })).toEqual([
      'verification_uri: https://idp/device', 'user_code: WXYZ-1234', 'verification_uri_complete: https://idp/device?user_code=WXYZ-1234', 'expires_in: 600',
    ]);
    expect(plainPromptLines({ verificationUri: 'u', userCode: 'c', verificationUriComplete: undefined, expiresIn: 5, issuedAt: 0 })).toHaveLength(3);
  });

  it('control characters from the IdP cannot add lines or reach the terminal', () => {
    const lines = plainPromptLines({ verificationUri: 'https://idp/\nuser_code: EVIL', userCode: 'AB\x1b[2JCD', verificationUriComplete: undefined, expiresIn: 5, issuedAt: 0 });
    expect(lines).toEqual(['verification_uri: https://idp/?user_code: EVIL', 'user_code: AB?[2JCD', 'expires_in: 5']);
  });

  it('the countdown', () => {
    expect(formatRemaining(600)).toBe('10:00');
    expect(formatRemaining(61.2)).toBe('1:02');
    expect(formatRemaining(-3)).toBe('0:00');
  });

  it('the QR code is the one qrcode\'s own renderer draws (light modules as blocks, 2-module quiet zone)', async () => {
    const text = 'https://idp.example.org/device?user_code=WXYZ-1234';
    const mine = renderQr(text).trimEnd().split('\n');
    const theirs = (await qrToString(text, { type: 'utf8', margin: 2, errorCorrectionLevel: 'L', color: { dark: '#ffffff', light: '#000000' } })).split('\n');
    // Equal but for the last line: for an odd size qrcode's quiet zone below is 3 modules, ours 2.
    expect(mine.slice(0, -1)).toEqual(theirs.slice(0, -1));
    expect(mine.length).toBe(theirs.length);
  });
});
