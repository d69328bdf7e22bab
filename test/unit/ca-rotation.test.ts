// CA rotation (hub/service/ca-rotation.ts, ca-files.ts, authority.ts) on real init'ed data dirs:
// issuing-CA and root rotation through prepare → activate → prune, what is trusted and published
// at each phase (bundle, CRLs, chains — checked with openssl too), the error codes, tampered CA
// files, a crash at every step of the directory swaps, and the `sepal-hub ca` CLI.
import { afterAll, describe, expect, it } from 'vitest';
import crypto from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { DatabaseSync } from 'node:sqlite';
import { ErrorCodes } from '../../proto/errors.ts';
import { buildCrossCert, createCaMaterial, newCaKey } from '../../hub/ca/bootstrap.ts';
import { derToPem, pemToDerList } from '../../hub/ca/pem.ts';
import { caInfo } from '../../hub/ca/x509.ts';
import { hubPaths, type HubPaths } from '../../hub/datadir.ts';
import { SepalError } from '../../hub/errors.ts';
import { silentLogger } from '../../hub/log.ts';
import { openHub, type OpenHub } from '../../hub/runtime.ts';
import { loadAuthority } from '../../hub/service/authority.ts';
import { recoverSwaps } from '../../hub/service/ca-files.ts';
import { activate, caStatus, prepareIssuing, prepareRoot, prune } from '../../hub/service/ca-rotation.ts';
import { initDataDir } from '../../hub/service/init.ts';
import { enrollNode, renewCertificate } from '../../hub/service/issuance.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { cli } from '../helpers/hub.ts';

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-ca-rotation-'));
const opened: OpenHub[] = [];
afterAll(async () => {
  for (const h of opened) await h.close();
  fs.rmSync(work, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------------------------
// Fixtures

interface Fx {
  readonly dir: string;
  readonly paths: HubPaths;
  readonly hub: OpenHub;
  /** The hub's clock (ms); tests move it forward. */
  readonly clock: { now: number };
  readonly caDir: string;
  readonly tlsDir: string;
}

let seq = 0;

/** A fresh `init`ed data dir (hostnames localhost, 127.0.0.1) opened with a movable clock. */
async function newHub(): Promise<Fx> {
  const dir = path.join(work, `hub-${++seq}`);
  const paths = hubPaths(dir);
  const t0 = Math.floor(Date.now() / 1000) * 1000;
  await initDataDir(paths, { hostnames: ['localhost', '127.0.0.1'], now: t0 });
  const clock = { now: t0 };
  const hub = await openHub(paths, { log: silentLogger(), clock: () => clock.now });
  opened.push(hub);
  await hub.crl.refresh();
  return { dir, paths, hub, clock, caDir: path.dirname(paths.issuingCert), tlsDir: path.dirname(paths.serverCert) };
}

const ACTOR = 'test';
const rootKeyOf = (fx: Fx): { actor: string; rootKeyFile: string } => ({ actor: ACTOR, rootKeyFile: fx.paths.rootKey });

interface Leaf {
  readonly nodeId: string;
  readonly org: string;
  readonly serial: string;
  readonly notAfter: number;
  readonly cert: crypto.X509Certificate;
  readonly chainDer: readonly Buffer[];
}

async function enroll(fx: Fx, org = 'org-a'): Promise<Leaf> {
  const { node, credentials: c } = await enrollNode(fx.hub.ctx, { org, name: `${org}-host`, csr: makeCsr(newKey()), facts: null, flowerPublicKey: null, actor: ACTOR });
  return { nodeId: node.id, org, serial: c.serial, notAfter: c.notAfter, cert: new crypto.X509Certificate(c.certDer), chainDer: c.chainDer };
}

async function renew(fx: Fx, leaf: Leaf): Promise<Leaf> {
  const c = await renewCertificate(fx.hub.ctx, { nodeId: leaf.nodeId, org: leaf.org, serial: leaf.serial, notAfter: leaf.notAfter, address: '127.0.0.1' }, makeCsr(newKey()));
  return { ...leaf, serial: c.serial, notAfter: c.notAfter, cert: new crypto.X509Certificate(c.certDer), chainDer: c.chainDer };
}

/** The issuer_key_id the store recorded for a certificate (read straight from the database). */
function recordedIssuer(paths: HubPaths, serial: string): unknown {
  const db = new DatabaseSync(paths.db, { readOnly: true });
  try {
    return db.prepare('SELECT issuer_key_id AS k FROM certs WHERE serial = ?').get(serial)?.['k'];
  } finally {
    db.close();
  }
}

function signedBy(child: crypto.X509Certificate, parent: crypto.X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

const x509 = (der: Buffer): crypto.X509Certificate => new crypto.X509Certificate(der);
const keyIdOf = (der: Buffer): string => caInfo(der).keyId.toString('hex');
const sha256 = (b: Buffer): string => crypto.hash('sha256', b, 'hex');
const pem = (ders: readonly Buffer[]): string => ders.map((d) => derToPem(d, 'CERTIFICATE')).join('');
const certsIn = (text: string): Buffer[] => pemToDerList(text, 'CERTIFICATE');
const hexOf = (ders: readonly Buffer[]): string[] => ders.map((d) => d.toString('hex'));

/** relative path → "mode sha256" of every file, and "dir" for every directory, under `dir`. */
function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const rel of (fs.readdirSync(dir, { recursive: true }) as string[]).sort()) {
    const p = path.join(dir, rel);
    const st = fs.statSync(p);
    out[rel] = st.isDirectory() ? 'dir' : `${(st.mode & 0o777).toString(8)} ${sha256(fs.readFileSync(p))}`;
  }
  return out;
}

/** Every path under `dir` with its mode and size: what a reader must leave as it found it. */
function listDataDir(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[]).sort().map((p) => {
    const st = fs.statSync(path.join(dir, p));
    return `${p} ${(st.mode & 0o777).toString(8)} ${st.isDirectory() ? 'dir' : st.size}`;
  });
}

function exists(p: string): boolean {
  return fs.statSync(p, { throwIfNoEntry: false }) !== undefined;
}

function modeOf(p: string): number {
  return fs.statSync(p).mode & 0o777;
}

function writeTmp(fx: Fx, name: string, text: string | Buffer, mode = 0o600): string {
  const f = path.join(fx.dir, '..', `${path.basename(fx.dir)}-${name}`);
  fs.writeFileSync(f, text, { mode });
  fs.chmodSync(f, mode);
  return f;
}

function run(cmd: string, args: readonly string[]): { status: number | null; out: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

/** openssl verify at the hub's clock (not the wall clock). */
function opensslVerify(fx: Fx, o: { trusted: readonly Buffer[]; untrusted: readonly Buffer[]; cert: Buffer }): { status: number | null; out: string } {
  const t = writeTmp(fx, `trusted-${crypto.randomUUID()}.pem`, pem(o.trusted), 0o644);
  const c = writeTmp(fx, `cert-${crypto.randomUUID()}.pem`, pem([o.cert]), 0o644);
  const args = ['verify', '-attime', String(Math.floor(fx.clock.now / 1000)), '-CAfile', t];
  if (o.untrusted.length > 0) args.push('-untrusted', writeTmp(fx, `untrusted-${crypto.randomUUID()}.pem`, pem(o.untrusted), 0o644));
  return run('openssl', [...args, c]);
}

/** openssl crl -CAfile: verifies the CRL's signature with the issuer it finds in `issuer`. */
function opensslCrlVerifies(fx: Fx, crlDer: Buffer, issuer: Buffer): boolean {
  const crlFile = writeTmp(fx, `crl-${crypto.randomUUID()}.pem`, derToPem(crlDer, 'X509 CRL'), 0o644);
  const caFile = writeTmp(fx, `issuer-${crypto.randomUUID()}.pem`, pem([issuer]), 0o644);
  const r = run('openssl', ['crl', '-in', crlFile, '-CAfile', caFile, '-noout']);
  return r.status === 0 && /verify OK/.test(r.out);
}

function crlsOnDisk(fx: Fx): Buffer[] {
  return pemToDerList(fs.readFileSync(fx.paths.crlPem, 'utf8'), 'X509 CRL');
}

async function codeOf(p: Promise<unknown> | (() => unknown)): Promise<string> {
  try {
    await (typeof p === 'function' ? p() : p);
  } catch (e) {
    if (e instanceof SepalError) return e.code;
    throw e;
  }
  throw new Error('expected a SepalError, got success');
}

async function auditEvents(fx: Fx, event: string): Promise<number> {
  return (await fx.hub.ctx.store.readAudit(0, 100_000)).filter((e) => e.event === event).length;
}

const HOUR = 3600_000;
const DAY = 24 * HOUR;

// ---------------------------------------------------------------------------------------------

describe('issuing CA rotation', () => {
  it('prepare publishes the new CA and its CRL without signing with it; activate switches leaves, store records and the server certificate', async () => {
    const fx = await newHub();
    const a0 = fx.hub.ctx.authority;
    const rootDer = a0.rootsDer[0]!;
    const oldIssuing = a0.caSet.active;
    const oldServer = a0.serverCert;
    const early = await enroll(fx);

    const prep = await prepareIssuing(fx.hub, rootKeyOf(fx));
    expect(prep.kind).toBe('issuing');
    const a1 = fx.hub.ctx.authority;
    const next = a1.caSet.next;
    expect(next?.keyId).toBe(prep.issuingKeyId);
    if (next === null) throw new Error('unreachable');
    expect(signedBy(next.cert, x509(rootDer))).toBe(true);
    expect(next.keyId).not.toBe(oldIssuing.keyId);
    // Still the old CA signing; the root and the enrollment fingerprint do not move.
    expect(a1.issuerKeyId).toBe(oldIssuing.keyId);
    expect(hexOf(a1.rootsDer)).toEqual(hexOf([rootDer]));
    expect(hexOf(a1.caBundleDer)).toEqual(hexOf([rootDer]));
    expect(a1.rootFingerprint).toBe(a0.rootFingerprint);
    // Published: /ca.pem and the CRL issuers.
    expect(hexOf(certsIn(a1.bundlePem))).toEqual(hexOf([rootDer, oldIssuing.der, next.der]));
    expect(a1.crlIssuers.map((i) => keyIdOf(i.certDer))).toEqual([oldIssuing.keyId, next.keyId]);
    // The CRL file: one CRL per issuing CA, active first, each signed by its own CA.
    const crls = crlsOnDisk(fx);
    expect(crls).toHaveLength(2);
    expect(opensslCrlVerifies(fx, crls[0]!, oldIssuing.der)).toBe(true);
    expect(opensslCrlVerifies(fx, crls[1]!, next.der)).toBe(true);
    expect(opensslCrlVerifies(fx, crls[1]!, oldIssuing.der)).toBe(false);
    expect(await fx.hub.ctx.store.lastCertExpiryForIssuer(next.keyId)).toBeNull();

    // New leaves while prepared: still the old CA.
    const during = await enroll(fx);
    expect(signedBy(during.cert, oldIssuing.cert)).toBe(true);
    expect(signedBy(during.cert, next.cert)).toBe(false);
    expect(hexOf(during.chainDer)).toEqual(hexOf([oldIssuing.der]));
    expect(recordedIssuer(fx.paths, during.serial)).toBe(oldIssuing.keyId);

    fx.clock.now += HOUR;
    const act = await activate(fx.hub, { actor: ACTOR });
    expect(act).toMatchObject({ issuingKeyId: next.keyId, retiredKeyId: oldIssuing.keyId, rootChanged: false, rootSha256: a0.rootFingerprint });
    const a2 = fx.hub.ctx.authority;
    expect(a2.issuerKeyId).toBe(next.keyId);
    expect(a2.caSet.next).toBeNull();
    expect(a2.caSet.retired.map((r) => r.keyId)).toEqual([oldIssuing.keyId]);
    expect(a2.rootFingerprint).toBe(a0.rootFingerprint);
    expect(hexOf(certsIn(a2.bundlePem))).toEqual(hexOf([rootDer, next.der, oldIssuing.der]));
    expect(a2.crlIssuers.map((i) => keyIdOf(i.certDer))).toEqual([next.keyId, oldIssuing.keyId]);
    const crls2 = crlsOnDisk(fx);
    expect(crls2).toHaveLength(2);
    expect(opensslCrlVerifies(fx, crls2[0]!, next.der)).toBe(true);
    expect(opensslCrlVerifies(fx, crls2[1]!, oldIssuing.der)).toBe(true);

    // Leaves from now on: the new CA, recorded as such.
    const after = await enroll(fx);
    expect(signedBy(after.cert, next.cert)).toBe(true);
    expect(signedBy(after.cert, oldIssuing.cert)).toBe(false);
    expect(hexOf(after.chainDer)).toEqual(hexOf([next.der]));
    expect(recordedIssuer(fx.paths, after.serial)).toBe(next.keyId);
    fx.clock.now += 60_000;
    const renewed = await renew(fx, early);
    expect(signedBy(renewed.cert, next.cert)).toBe(true);
    expect(recordedIssuer(fx.paths, renewed.serial)).toBe(next.keyId);
    expect(await fx.hub.ctx.store.lastCertExpiryForIssuer(next.keyId)).toBe(renewed.notAfter);
    expect(await fx.hub.ctx.store.lastCertExpiryForIssuer(oldIssuing.keyId)).toBe(during.notAfter);
    expect(during.notAfter).toBeLessThan(after.notAfter);

    // The server certificate: new key, same names, under the new CA, sent with it.
    const server = a2.serverCert;
    expect(server.fingerprint256).not.toBe(oldServer.fingerprint256);
    expect(server.publicKey.equals(oldServer.publicKey)).toBe(false);
    expect(server.subject).toBe(oldServer.subject);
    expect(server.subjectAltName).toBe(oldServer.subjectAltName);
    expect(signedBy(server, next.cert)).toBe(true);
    expect(BigInt(`0x${act.serverSerial}`)).toBe(BigInt(`0x${server.serialNumber}`));
    expect(certsIn(fs.readFileSync(fx.paths.serverCert, 'utf8'))[0]!.equals(Buffer.from(server.raw))).toBe(true);
    const chain = certsIn(a2.serverChainPem);
    expect(hexOf(chain)).toEqual(hexOf([Buffer.from(server.raw), next.der]));
    const v = opensslVerify(fx, { trusted: [rootDer], untrusted: chain.slice(1), cert: chain[0]! });
    expect(v.status, v.out).toBe(0);
    expect(v.out).toMatch(/: OK/);
    // Control: without the chain openssl cannot build the path.
    expect(opensslVerify(fx, { trusted: [rootDer], untrusted: [], cert: chain[0]! }).status).not.toBe(0);

    expect(await auditEvents(fx, 'ca.prepared')).toBe(1);
    expect(await auditEvents(fx, 'ca.activated')).toBe(1);
  });
});

describe('prune', () => {
  it('does nothing, and writes no audit entry, on a hub that never rotated', async () => {
    const fx = await newHub();
    const head = await fx.hub.ctx.store.auditHead();
    const before = snapshot(fx.caDir);
    expect(await prune(fx.hub, { actor: ACTOR })).toEqual({ removedIssuing: [], removedRoots: [], kept: [] });
    expect(await fx.hub.ctx.store.auditHead()).toBe(head);
    expect(snapshot(fx.caDir)).toEqual(before);
  });

  it('keeps a retired issuing CA while a certificate it issued is valid (revoked or not), removes it and its key after', async () => {
    const fx = await newHub();
    const oldKid = fx.hub.ctx.authority.issuerKeyId;
    const leaf = await enroll(fx);
    const other = await enroll(fx);
    await prepareIssuing(fx.hub, rootKeyOf(fx));
    await activate(fx.hub, { actor: ACTOR });
    const newKid = fx.hub.ctx.authority.issuerKeyId;
    // A revoked certificate still needs its issuer's CRL until it expires.
    fx.clock.now += HOUR;
    await fx.hub.revoke(other.nodeId, ACTOR);
    const retiredCrt = path.join(fx.caDir, 'retired', `${oldKid}.crt`);
    const retiredKey = path.join(fx.caDir, 'retired', `${oldKid}.key`);
    expect(exists(retiredCrt) && exists(retiredKey)).toBe(true);
    expect(modeOf(retiredKey)).toBe(0o600);
    const last = Math.max(leaf.notAfter, other.notAfter);

    const status = await caStatus(fx.hub.ctx);
    const retiredRow = status.rows.find((r) => r.role === 'issuing' && r.state === 'retired');
    expect(retiredRow).toMatchObject({ keyId: oldKid, lastLeafExpiry: new Date(last).toISOString() });
    expect(status.rows.filter((r) => r.role === 'issuing').map((r) => [r.state, r.keyId])).toEqual([['active', newKid], ['retired', oldKid]]);

    // Before the last leaf expires: kept, nothing written.
    for (const t of [fx.clock.now, last - 1000]) {
      fx.clock.now = t;
      const head = await fx.hub.ctx.store.auditHead();
      const before = snapshot(fx.caDir);
      const r = await prune(fx.hub, { actor: ACTOR });
      expect(r).toEqual({ removedIssuing: [], removedRoots: [], kept: [{ keyId: oldKid, until: new Date(last).toISOString() }] });
      expect(await fx.hub.ctx.store.auditHead()).toBe(head);
      expect(snapshot(fx.caDir)).toEqual(before);
    }

    // After: removed, with its key; no longer trusted, published or signing a CRL.
    fx.clock.now = last + 1000;
    const head = await fx.hub.ctx.store.auditHead();
    const r = await prune(fx.hub, { actor: ACTOR });
    expect(r).toEqual({ removedIssuing: [oldKid], removedRoots: [], kept: [] });
    expect(exists(retiredCrt)).toBe(false);
    expect(exists(retiredKey)).toBe(false);
    expect(await fx.hub.ctx.store.auditHead()).toBe(head + 1);
    expect(await auditEvents(fx, 'ca.pruned')).toBe(1);
    const a = fx.hub.ctx.authority;
    expect(a.caSet.retired).toEqual([]);
    expect(a.crlIssuers.map((i) => keyIdOf(i.certDer))).toEqual([newKid]);
    expect(certsIn(a.bundlePem).map(keyIdOf)).toEqual([keyIdOf(a.rootsDer[0]!), newKid]);
    expect(crlsOnDisk(fx)).toHaveLength(1);
    const rows = (await caStatus(fx.hub.ctx)).rows;
    expect(rows.map((x) => `${x.role}:${x.state}`)).toEqual(['root:active', 'issuing:active', 'server:active']);
    expect(loadAuthority(fx.paths).issuerKeyId).toBe(newKid);

    // And again: nothing to do, no audit entry.
    const head2 = await fx.hub.ctx.store.auditHead();
    expect(await prune(fx.hub, { actor: ACTOR })).toEqual({ removedIssuing: [], removedRoots: [], kept: [] });
    expect(await fx.hub.ctx.store.auditHead()).toBe(head2);
  });
});

describe('root rotation', () => {
  it('cross-signs the new root, switches the fingerprint and root key at activate, and prune retires the old root', async () => {
    const fx = await newHub();
    const a0 = fx.hub.ctx.authority;
    const oldRootDer = a0.rootsDer[0]!;
    const oldRoot = x509(oldRootDer);
    const oldRootKid = keyIdOf(oldRootDer);
    const oldIssuing = a0.caSet.active;
    const oldRootKeyPem = fs.readFileSync(fx.paths.rootKey, 'utf8');
    const leaf = await enroll(fx);

    const prep = await prepareRoot(fx.hub, rootKeyOf(fx));
    expect(prep.kind).toBe('root');
    const nextRootKeyFile = path.join(fx.caDir, 'root.next.key');
    expect(prep.root?.keyFile).toBe(nextRootKeyFile);
    expect(modeOf(nextRootKeyFile)).toBe(0o600);
    const nextRootKeyPem = fs.readFileSync(nextRootKeyFile, 'utf8');
    expect(fs.readFileSync(fx.paths.rootKey, 'utf8')).toBe(oldRootKeyPem);

    const a1 = fx.hub.ctx.authority;
    expect(a1.rootsDer).toHaveLength(2);
    expect(a1.rootsDer[0]!.equals(oldRootDer)).toBe(true);
    const newRootDer = a1.rootsDer[1]!;
    const newRoot = x509(newRootDer);
    const newRootKid = keyIdOf(newRootDer);
    expect(sha256(newRootDer)).toBe(prep.root?.sha256);
    expect(newRootKid).toBe(prep.root?.keyId);
    expect(signedBy(newRoot, newRoot)).toBe(true);
    expect(crypto.createPublicKey(nextRootKeyPem).equals(newRoot.publicKey)).toBe(true);
    expect(newRoot.subject).not.toBe(oldRoot.subject);
    // caBundleDer = [old root, new root, cross].
    expect(a1.caBundleDer).toHaveLength(3);
    expect(hexOf(a1.caBundleDer.slice(0, 2))).toEqual(hexOf([oldRootDer, newRootDer]));
    const crossDer = a1.caBundleDer[2]!;
    const cross = x509(crossDer);
    expect(cross.ca).toBe(true);
    expect(signedBy(cross, oldRoot)).toBe(true);
    expect(cross.verify(newRoot.publicKey)).toBe(false);
    expect(cross.publicKey.equals(newRoot.publicKey)).toBe(true);
    expect(cross.subject).toBe(newRoot.subject);
    expect(keyIdOf(crossDer)).toBe(newRootKid);
    expect(hexOf(a1.caSet.cross.map((c) => c.der))).toEqual(hexOf([crossDer]));
    // Prepared issuing CA under the new root; nothing else changes yet.
    const next = a1.caSet.next;
    if (next === null) throw new Error('nothing prepared');
    expect(next.keyId).toBe(prep.issuingKeyId);
    expect(signedBy(next.cert, newRoot)).toBe(true);
    expect(a1.issuerKeyId).toBe(oldIssuing.keyId);
    expect(a1.rootFingerprint).toBe(sha256(oldRootDer));
    // No cross certificate in the trust-store bundle (it would break the old root's path length).
    expect(hexOf(certsIn(a1.bundlePem))).toEqual(hexOf([oldRootDer, newRootDer, oldIssuing.der, next.der]));
    const crls = crlsOnDisk(fx);
    expect(crls).toHaveLength(2);
    expect(opensslCrlVerifies(fx, crls[1]!, next.der)).toBe(true);
    fx.clock.now += 2000;
    expect((await enroll(fx)).cert.checkIssued(oldIssuing.cert)).toBe(true);

    // `leaf` was issued before the new root was published: its node does not trust the new root
    // yet, so activate refuses until it has renewed (or --force).
    expect((await caStatus(fx.hub.ctx)).nodesNotRenewed).toEqual([leaf.nodeId]);
    expect(await codeOf(activate(fx.hub, { actor: ACTOR }))).toBe(ErrorCodes.CA_NODES_NOT_RENEWED);
    expect(fx.hub.ctx.authority.issuerKeyId).toBe(oldIssuing.keyId);
    const renewed = await renew(fx, leaf);
    expect((await caStatus(fx.hub.ctx)).nodesNotRenewed).toEqual([]);

    const act = await activate(fx.hub, { actor: ACTOR });
    expect(act).toMatchObject({ issuingKeyId: next.keyId, retiredKeyId: oldIssuing.keyId, rootChanged: true, rootSha256: prep.root?.sha256 });
    const a2 = fx.hub.ctx.authority;
    expect(a2.rootFingerprint).toBe(sha256(newRootDer));
    expect(hexOf(a2.rootsDer)).toEqual(hexOf([newRootDer, oldRootDer]));
    expect(hexOf(a2.caBundleDer)).toEqual(hexOf([newRootDer, oldRootDer, crossDer]));
    // Root keys: the new one becomes root.key, the old one is kept under retired/.
    expect(exists(nextRootKeyFile)).toBe(false);
    expect(fs.readFileSync(fx.paths.rootKey, 'utf8')).toBe(nextRootKeyPem);
    expect(modeOf(fx.paths.rootKey)).toBe(0o600);
    const retiredRootKey = path.join(fx.caDir, 'retired', `root-${oldRootKid}.key`);
    expect(fs.readFileSync(retiredRootKey, 'utf8')).toBe(oldRootKeyPem);
    expect(modeOf(retiredRootKey)).toBe(0o600);

    // The server chain: server → new issuing, for nodes that trust the new root (all of them, by
    // the check above); the old root alone does not reach it.
    const chain = certsIn(a2.serverChainPem);
    expect(hexOf(chain.slice(1))).toEqual(hexOf([next.der]));
    expect(signedBy(a2.serverCert, next.cert)).toBe(true);
    const viaNew = opensslVerify(fx, { trusted: [newRootDer], untrusted: chain.slice(1), cert: chain[0]! });
    expect(viaNew.status, viaNew.out).toBe(0);
    // Both roots together (the trust store of a node after its renewal) verify it too.
    expect(opensslVerify(fx, { trusted: [oldRootDer, newRootDer], untrusted: chain.slice(1), cert: chain[0]! }).status).toBe(0);
    expect(opensslVerify(fx, { trusted: [oldRootDer], untrusted: chain.slice(1), cert: chain[0]! }).status).not.toBe(0);
    const fresh = await enroll(fx);
    expect(signedBy(fresh.cert, next.cert)).toBe(true);
    expect(recordedIssuer(fx.paths, fresh.serial)).toBe(next.keyId);

    // prune while old leaves are valid: everything stays.
    const kept = await prune(fx.hub, { actor: ACTOR });
    expect(kept.removedIssuing).toEqual([]);
    expect(kept.removedRoots).toEqual([]);
    expect(kept.kept.map((k) => k.keyId)).toEqual([oldIssuing.keyId]);
    expect(fx.hub.ctx.authority.rootsDer).toHaveLength(2);

    // After the old CA's last leaf (enrolled before activate) expired.
    const lastOld = await fx.hub.ctx.store.lastCertExpiryForIssuer(oldIssuing.keyId);
    expect(lastOld).toBeGreaterThanOrEqual(renewed.notAfter);
    fx.clock.now = lastOld! + 1000;
    const pr = await prune(fx.hub, { actor: ACTOR });
    expect(pr).toEqual({ removedIssuing: [oldIssuing.keyId], removedRoots: [oldRootKid], kept: [] });
    expect(exists(path.join(fx.caDir, 'cross.crt'))).toBe(false);
    expect(exists(retiredRootKey)).toBe(false);
    expect(exists(path.join(fx.caDir, 'retired', `${oldIssuing.keyId}.crt`))).toBe(false);
    expect(exists(path.join(fx.caDir, 'retired', `${oldIssuing.keyId}.key`))).toBe(false);
    expect(fs.readFileSync(fx.paths.rootKey, 'utf8')).toBe(nextRootKeyPem);
    expect(hexOf(certsIn(fs.readFileSync(fx.paths.rootCert, 'utf8')))).toEqual(hexOf([newRootDer]));
    for (const a of [fx.hub.ctx.authority, loadAuthority(fx.paths)]) {
      expect(hexOf(a.caBundleDer)).toEqual(hexOf([newRootDer]));
      expect(hexOf(a.rootsDer)).toEqual(hexOf([newRootDer]));
      expect(a.caSet.cross).toEqual([]);
      expect(hexOf(certsIn(a.bundlePem))).toEqual(hexOf([newRootDer, next.der]));
      expect(a.rootFingerprint).toBe(sha256(newRootDer));
    }
    expect((await caStatus(fx.hub.ctx)).rows.map((x) => `${x.role}:${x.state}`)).toEqual(['root:active', 'issuing:active', 'server:active']);
  });
});

describe('refusals and tampered CA files', () => {
  it('activate with nothing prepared: CA_NOTHING_PREPARED, nothing changed', async () => {
    const fx = await newHub();
    const ca = snapshot(fx.caDir);
    const tls = snapshot(fx.tlsDir);
    const head = await fx.hub.ctx.store.auditHead();
    expect(await codeOf(activate(fx.hub, { actor: ACTOR }))).toBe(ErrorCodes.CA_NOTHING_PREPARED);
    expect(snapshot(fx.caDir)).toEqual(ca);
    expect(snapshot(fx.tlsDir)).toEqual(tls);
    expect(await fx.hub.ctx.store.auditHead()).toBe(head);
  });

  it('a second prepare while one is prepared, and prepare-root while two roots are trusted: CA_ROTATION_IN_PROGRESS', async () => {
    const fx = await newHub();
    await prepareIssuing(fx.hub, rootKeyOf(fx));
    const ca = snapshot(fx.caDir);
    expect(await codeOf(prepareIssuing(fx.hub, rootKeyOf(fx)))).toBe(ErrorCodes.CA_ROTATION_IN_PROGRESS);
    expect(await codeOf(prepareRoot(fx.hub, rootKeyOf(fx)))).toBe(ErrorCodes.CA_ROTATION_IN_PROGRESS);
    expect(snapshot(fx.caDir)).toEqual(ca);

    const fy = await newHub();
    await prepareRoot(fy.hub, rootKeyOf(fy));
    await activate(fy.hub, { actor: ACTOR });
    expect(fy.hub.ctx.authority.rootsDer).toHaveLength(2);
    expect(fy.hub.ctx.authority.caSet.next).toBeNull();
    const ca2 = snapshot(fy.caDir);
    expect(await codeOf(prepareRoot(fy.hub, rootKeyOf(fy)))).toBe(ErrorCodes.CA_ROTATION_IN_PROGRESS);
    expect(snapshot(fy.caDir)).toEqual(ca2);
  });

  it('a root key that is not the active root\'s: CA_ROOT_KEY_MISMATCH and ca/ untouched', async () => {
    const fx = await newHub();
    const foreign = createCaMaterial({ hostnames: ['other.example'], federationId: 'other', now: new Date(fx.clock.now) });
    const cases = {
      foreignRoot: writeTmp(fx, 'foreign-root.key', foreign.rootKey),
      ownIssuingKey: writeTmp(fx, 'issuing-as-root.key', fs.readFileSync(fx.paths.issuingKey)),
      notAKey: writeTmp(fx, 'garbage.key', 'not a key\n'),
      missing: path.join(work, 'no-such.key'),
    };
    const ca = snapshot(fx.caDir);
    const head = await fx.hub.ctx.store.auditHead();
    const outside = path.join(work, `new-root-${seq}.key`);
    for (const [name, file] of Object.entries(cases)) {
      expect([name, await codeOf(prepareIssuing(fx.hub, { actor: ACTOR, rootKeyFile: file }))]).toEqual([name, ErrorCodes.CA_ROOT_KEY_MISMATCH]);
      expect([name, await codeOf(prepareRoot(fx.hub, { actor: ACTOR, rootKeyFile: file }))]).toEqual([name, ErrorCodes.CA_ROOT_KEY_MISMATCH]);
      expect([name, await codeOf(prepareRoot(fx.hub, { actor: ACTOR, rootKeyFile: file, newRootKeyFile: outside }))]).toEqual([name, ErrorCodes.CA_ROOT_KEY_MISMATCH]);
      expect(snapshot(fx.caDir)).toEqual(ca);
    }
    expect(exists(outside)).toBe(false);
    expect(await fx.hub.ctx.store.auditHead()).toBe(head);
    // Control: the right key works.
    await prepareIssuing(fx.hub, rootKeyOf(fx));
    expect(snapshot(fx.caDir)).not.toEqual(ca);
  });

  it('a cross certificate not signed by the other root: loadAuthority throws DATA_DIR_INVALID', async () => {
    const fx = await newHub();
    await prepareRoot(fx.hub, rootKeyOf(fx));
    const a = fx.hub.ctx.authority;
    const oldRootDer = a.rootsDer[0]!;
    const newRootDer = a.rootsDer[1]!;
    const crossFile = path.join(fx.caDir, 'cross.crt');
    const original = fs.readFileSync(crossFile);
    const v = { notBefore: new Date(fx.clock.now - 60_000), notAfter: new Date(fx.clock.now + 365 * DAY) };
    const foreignKey = newCaKey();
    const foreignRoot = caInfo(pemToDerList(createCaMaterial({ hostnames: ['other.example'], federationId: 'other', now: new Date(fx.clock.now) }).rootCert)[0]!);
    const forgeries = {
      // Names the old root as its issuer (name and key id), signed by some other key.
      impostor: buildCrossCert({ key: foreignKey.priv, name: caInfo(oldRootDer).subjectName, keyId: caInfo(oldRootDer).keyId }, newRootDer, v),
      // Honestly issued by another federation's root.
      foreign: buildCrossCert({ key: foreignKey.priv, name: foreignRoot.subjectName, keyId: foreignKey.keyId }, newRootDer, v),
    };
    for (const [name, der] of Object.entries(forgeries)) {
      fs.writeFileSync(crossFile, derToPem(der, 'CERTIFICATE'));
      expect([name, await codeOf(() => loadAuthority(fx.paths))]).toEqual([name, ErrorCodes.DATA_DIR_INVALID]);
    }
    fs.writeFileSync(crossFile, original);
    expect(loadAuthority(fx.paths).caBundleDer).toHaveLength(3);
  });

  it('a retired issuing CA whose key file is not its key: loadAuthority throws DATA_DIR_INVALID', async () => {
    const fx = await newHub();
    const oldKid = fx.hub.ctx.authority.issuerKeyId;
    await prepareIssuing(fx.hub, rootKeyOf(fx));
    await activate(fx.hub, { actor: ACTOR });
    const keyFile = path.join(fx.caDir, 'retired', `${oldKid}.key`);
    const original = fs.readFileSync(keyFile);
    fs.writeFileSync(keyFile, newCaKey().pem, { mode: 0o600 });
    expect(await codeOf(() => loadAuthority(fx.paths))).toBe(ErrorCodes.DATA_DIR_INVALID);
    // The active CA's key in place of the retired one's.
    fs.writeFileSync(keyFile, fs.readFileSync(fx.paths.issuingKey));
    expect(await codeOf(() => loadAuthority(fx.paths))).toBe(ErrorCodes.DATA_DIR_INVALID);
    fs.writeFileSync(keyFile, original);
    expect(loadAuthority(fx.paths).caSet.retired.map((r) => r.keyId)).toEqual([oldKid]);
  });
});

describe('a crash during activate', () => {
  const STEPS = ['swap-written', 'old-moved', 'new-in-place'] as const;
  // activate swaps tls/ first, then ca/: the hook sees the three steps twice.
  // Expected outcome per crash point: before the old directory moved, the swap is discarded (old
  // state); after, the complete swap directory is put in place (new state).
  const CASES = (['tls', 'ca'] as const).flatMap((dir, d) => STEPS.map((step, s) => ({
    dir, step, call: d * 3 + s + 1,
    tlsNew: dir === 'ca' || step !== 'swap-written',
    caNew: dir === 'ca' && step !== 'swap-written',
  })));

  it.each(CASES)('in the $dir/ swap at $step leaves exactly the old or the new state', async ({ step, call, tlsNew, caNew }) => {
    const fx = await newHub();
    const oldKid = fx.hub.ctx.authority.issuerKeyId;
    const prep = await prepareIssuing(fx.hub, rootKeyOf(fx));
    const newKid = prep.issuingKeyId;
    const caBefore = snapshot(fx.caDir);
    const tlsBefore = snapshot(fx.tlsDir);
    const oldServer = fx.hub.ctx.authority.serverCert;

    const seen: string[] = [];
    const crash = new Error('simulated crash');
    await expect(activate(fx.hub, {
      actor: ACTOR,
      hook: (st) => {
        seen.push(st);
        if (seen.length === call) throw crash;
      },
    })).rejects.toBe(crash);
    expect(seen[call - 1]).toBe(step);

    // What the next process to open the data dir sees: readers change nothing (a live writer may
    // be between its steps) and read ca/ or, between the renames, the complete ca.swap/.
    const before = listDataDir(fx.paths.dataDir);
    const a = loadAuthority(fx.paths);
    expect(listDataDir(fx.paths.dataDir)).toEqual(before);
    // The next writer, holding the CA lock, finishes or discards the interrupted swap first.
    recoverSwaps(fx.paths);
    for (const leftover of ['ca.swap', 'ca.old', 'tls.swap', 'tls.old']) expect(exists(path.join(fx.paths.dataDir, leftover))).toBe(false);
    expect([oldKid, newKid]).toContain(a.issuerKeyId);
    const ca = snapshot(fx.caDir);
    if (a.issuerKeyId === oldKid) {
      expect(ca).toEqual(caBefore);
      expect(a.caSet.next?.keyId).toBe(newKid);
    } else {
      const expected = { ...caBefore };
      expected['issuing.crt'] = caBefore['next/issuing.crt']!;
      expected['issuing.key'] = caBefore['next/issuing.key']!;
      expected['retired'] = 'dir';
      expected[`retired/${oldKid}.crt`] = caBefore['issuing.crt']!;
      expected[`retired/${oldKid}.key`] = caBefore['issuing.key']!;
      delete expected['next'];
      delete expected['next/issuing.crt'];
      delete expected['next/issuing.key'];
      expect(ca).toEqual(expected);
      expect(a.caSet.next).toBeNull();
      expect(a.caSet.retired.map((r) => r.keyId)).toEqual([oldKid]);
    }
    if (snapshot(fx.tlsDir)['server.crt'] === tlsBefore['server.crt']) {
      expect(snapshot(fx.tlsDir)).toEqual(tlsBefore);
      expect(a.serverCert.fingerprint256).toBe(oldServer.fingerprint256);
    } else {
      expect(signedBy(a.serverCert, a.caSet.next?.cert ?? a.caSet.active.cert)).toBe(true);
    }
    expect({ tlsNew: a.serverCert.fingerprint256 !== oldServer.fingerprint256, caNew: a.issuerKeyId === newKid }).toEqual({ tlsNew, caNew });
    expect(await auditEvents(fx, 'ca.activated')).toBe(0);

    // Finishing the job: from the old state activate runs again; from the new one nothing is prepared.
    fx.hub.reloadAuthority();
    if (caNew) {
      expect(await codeOf(activate(fx.hub, { actor: ACTOR }))).toBe(ErrorCodes.CA_NOTHING_PREPARED);
    } else {
      const r = await activate(fx.hub, { actor: ACTOR });
      expect(r.issuingKeyId).toBe(newKid);
      expect(await auditEvents(fx, 'ca.activated')).toBe(1);
    }
    const done = loadAuthority(fx.paths);
    expect(done.issuerKeyId).toBe(newKid);
    expect(done.caSet.retired.map((r) => r.keyId)).toEqual([oldKid]);
    expect(signedBy(done.serverCert, done.caSet.active.cert)).toBe(true);
  });
});

describe('readers during a rotation', () => {
  it('a process loading the CA between any two steps of activate sees the old or the new state and changes nothing', async () => {
    const fx = await newHub();
    const oldKid = fx.hub.ctx.authority.issuerKeyId;
    const { issuingKeyId: newKid } = await prepareIssuing(fx.hub, rootKeyOf(fx));
    const seen: string[] = [];
    await activate(fx.hub, {
      actor: ACTOR,
      hook: (step) => {
        // Another admin command or `serve` reloading, at this very moment.
        const a = loadAuthority(fx.paths);
        seen.push(`${step}:${a.issuerKeyId === oldKid ? 'old' : a.issuerKeyId === newKid ? 'new' : '?'}`);
      },
    });
    expect(seen).toEqual([
      'swap-written:old', 'old-moved:old', 'new-in-place:old', // tls/: the issuing CA is still the old one
      'swap-written:old', 'old-moved:new', 'new-in-place:new', // ca/: from the moment the old dir is moved, the swap is read
    ]);
    const done = loadAuthority(fx.paths);
    expect(done.issuerKeyId).toBe(newKid);
    for (const leftover of ['ca.swap', 'ca.old', 'tls.swap', 'tls.old']) expect(exists(path.join(fx.paths.dataDir, leftover))).toBe(false);
  });
});

describe('sepal-hub ca (CLI)', () => {
  it('activate with nothing prepared exits 1 with CA_NOTHING_PREPARED; status --json after prepare-root lists every CA', async () => {
    const dir = path.join(work, `cli-${++seq}`);
    const init = await initDataDir(hubPaths(dir), { hostnames: ['localhost'] });

    const act = await cli(['ca', 'activate', '--data-dir', dir]);
    expect(act.code, act.stderr).toBe(1);
    expect(act.stderr).toMatch(new RegExp(`^error ${ErrorCodes.CA_NOTHING_PREPARED}\\b`, 'm'));
    expect(act.stdout).toBe('');
    // A flag of another subcommand is a usage error (exit 2), not silently ignored.
    const wrongFlag = await cli(['ca', 'prune', '--force', '--data-dir', dir]);
    expect(wrongFlag.code).toBe(2);
    expect((await cli(['ca', 'status', '--root-key', 'x', '--data-dir', dir])).code).toBe(2);

    const prep = await cli(['ca', 'prepare-root', '--data-dir', dir, '--json']);
    expect(prep.code, prep.stderr).toBe(0);
    const p = JSON.parse(prep.stdout) as { kind: string; issuingKeyId: string; root: { keyId: string; sha256: string } };
    expect(p.kind).toBe('root');

    const st = await cli(['ca', 'status', '--data-dir', dir, '--json']);
    expect(st.code, st.stderr).toBe(0);
    const s = JSON.parse(st.stdout) as { rootSha256: string; rows: Array<{ role: string; state: string; keyId: string }> };
    expect(s.rootSha256).toBe(init.rootFingerprint);
    expect(s.rows.map((r) => `${r.role}:${r.state}`).sort()).toEqual(
      ['cross:trusted', 'issuing:active', 'issuing:prepared', 'root:active', 'root:trusted', 'server:active'],
    );
    expect(s.rows.find((r) => r.role === 'root' && r.state === 'trusted')?.keyId).toBe(p.root.keyId);
    expect(s.rows.find((r) => r.role === 'cross')?.keyId).toBe(p.root.keyId);
    expect(s.rows.find((r) => r.role === 'issuing' && r.state === 'prepared')?.keyId).toBe(p.issuingKeyId);
  });
});
