// Rotating the issuing CA and the root without downtime (`sepal-hub ca ...`), in phases:
//
//   prepare-issuing | prepare-root   a new issuing CA (under the same root, or under a new root that
//                                    the old root cross-signs) is written to ca/next/. It is
//                                    trusted and published at once — in /ca.pem, in the roots and
//                                    cross certificates every Enroll/Renew answer carries, with its
//                                    own CRL — but signs nothing yet.
//   activate                         the prepared CA signs every new leaf; the previous one is
//                                    retired (still trusted, still signing its CRL); the hub's
//                                    server certificate is re-issued under the new CA.
//   prune                            retired issuing CAs whose last leaf has expired are removed
//                                    (their keys deleted), then roots no issuing CA hangs under any
//                                    more, with their cross certificates.
//
// Nodes renew onto the new CA by themselves. A new root reaches a node only through a cross
// certificate the old root signed (in the bundle of every Enroll/Renew answer after prepare-root);
// the hub's new server certificate hangs under the new root without any cross certificate in its
// chain, so activate waits until every active node has renewed since the new root was published
// (CA_NODES_NOT_RENEWED otherwise). Each step is one directory swap (ca-files.ts) followed by its
// audit entry; `serve` reloads on that entry.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import {
  addYears, buildCrossCert, buildIssuingCert, buildRootCert, caKeyFromPem, caName, newCaKey, type CaKey, type CaSigner,
} from '../ca/bootstrap.ts';
import { randomSerial } from '../ca/certificate.ts';
import { issueServerCert } from '../ca/server-cert.ts';
import { caInfo } from '../ca/x509.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { createFileExclusiveSync, withLockFile } from '../fsutil.ts';
import { caInventory, type Authority, type CaEntry } from './authority.ts';
import {
  CA_FILES, certFile, certsFile, issuingCas, keyFile, readCaSet, recoverSwaps, replaceDir, signedBy, snapshotDir, type CaCert, type DirFile,
  type IssuingCa,
  type SwapHook,
} from './ca-files.ts';
import type { HubContext } from './context.ts';
import type { CrlPublisher } from './crl.ts';

/** What a rotation step needs of an open hub. */
export interface RotationHub {
  readonly ctx: HubContext;
  readonly crl: CrlPublisher;
  reloadAuthority(): Authority;
}

const BACKDATE_MS = 60_000;
const ISSUING_YEARS = 3;
const ROOT_YEARS = 10;
const SERVER_YEARS = 1;

function caDir(ctx: HubContext): string {
  return path.dirname(ctx.paths.issuingCert);
}

function tlsDir(ctx: HubContext): string {
  return path.dirname(ctx.paths.serverCert);
}

/** "G20261128T195012Z": when a CA was made, as the OU that keeps its name apart from older ones. */
function generation(now: number): string {
  return `G${new Date(now).toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z')}`;
}

function validity(now: number, years: number, cap: Date): { notBefore: Date; notAfter: Date } {
  const start = new Date(Math.floor(now / 1000) * 1000);
  const want = addYears(start, years);
  return { notBefore: new Date(start.getTime() - BACKDATE_MS), notAfter: want.getTime() > cap.getTime() ? cap : want };
}

function signer(cert: CaCert, key: CaKey): CaSigner {
  return { key: key.priv, name: caInfo(cert.der).subjectName, keyId: Buffer.from(cert.keyId, 'hex') };
}

function readRootKey(file: string, root: CaCert): CaKey {
  let key: CaKey;
  try {
    key = caKeyFromPem(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new SepalError(ErrorCodes.CA_ROOT_KEY_MISMATCH, `cannot read the root key ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`, { cause: e });
  }
  if (key.keyId.toString('hex') !== root.keyId || !crypto.createPublicKey(key.priv).equals(root.cert.publicKey)) {
    throw new SepalError(ErrorCodes.CA_ROOT_KEY_MISMATCH, `${file} is not the key of the active root ${root.keyId}`, { detail: { rootKeyId: root.keyId } });
  }
  return key;
}

function rotationError(code: typeof ErrorCodes.CA_ROTATION_IN_PROGRESS | typeof ErrorCodes.CA_NOTHING_PREPARED, message: string): never {
  throw new SepalError(code, message);
}

/** Runs one step under the data dir's CA lock, so two `ca` commands never interleave. */
function locked<T>(ctx: HubContext, fn: () => Promise<T>): Promise<T> {
  return withLockFile(path.join(ctx.paths.dataDir, 'ca.lock'), async () => {
    // Only here, with the lock held, is an interrupted swap finished or discarded.
    recoverSwaps(ctx.paths);
    return fn();
  });
}

async function finish(hub: RotationHub, audit: { event: 'ca.prepared' | 'ca.activated' | 'ca.pruned' | 'ca.server_renewed'; actor: string; detail: Record<string, unknown> }): Promise<void> {
  hub.reloadAuthority();
  // The CRL names every trusted issuing CA: regenerate before telling anyone.
  await hub.crl.refresh();
  await hub.ctx.store.appendAudit({ event: audit.event, actor: audit.actor, detail: audit.detail }, hub.ctx.clock());
  hub.ctx.log.info({ event: audit.event, ...audit.detail }, `CA: ${audit.event}`);
}

export interface PrepareResult {
  readonly kind: 'issuing' | 'root';
  readonly issuingKeyId: string;
  readonly issuingNotAfter: string;
  /** The new root (kind root): its key id, SHA-256 and where its private key was written. */
  readonly root?: { readonly keyId: string; readonly sha256: string; readonly keyFile: string };
}

export interface PrepareOptions {
  readonly actor: string;
  /** The active root's private key (PKCS#8 PEM file). */
  readonly rootKeyFile: string;
  readonly hook?: SwapHook;
}

function activeRootOf(cas: ReturnType<typeof readCaSet>): CaCert {
  const root = cas.roots.find((r) => r.keyId === cas.active.authorityKeyId);
  if (root === undefined) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, 'the active issuing CA hangs under no root of ca/root.crt');
  return root;
}

function nextFiles(files: Map<string, DirFile>, der: Buffer, key: CaKey): void {
  files.set(CA_FILES.nextCert, certFile(der));
  files.set(CA_FILES.nextKey, keyFile(key.pem));
}

/** A new issuing CA under the active root, in ca/next/. */
export function prepareIssuing(hub: RotationHub, o: PrepareOptions): Promise<PrepareResult> {
  const { ctx } = hub;
  return locked(ctx, async () => {
    const cas = readCaSet(ctx.paths);
    if (cas.next !== null) rotationError(ErrorCodes.CA_ROTATION_IN_PROGRESS, `an issuing CA (${cas.next.keyId}) is already prepared: run sepal-hub ca activate first`);
    const root = activeRootOf(cas);
    const rootKey = readRootKey(o.rootKeyFile, root);
    const now = ctx.clock();
    const key = newCaKey();
    const v = validity(now, ISSUING_YEARS, root.cert.validToDate);
    const der = buildIssuingCert(signer(root, rootKey), key, caName('issuing', ctx.config.federationId, generation(now)), v);
    const files = snapshotDir(caDir(ctx));
    nextFiles(files, der, key);
    replaceDir(caDir(ctx), files, o.hook);
    const keyId = key.keyId.toString('hex');
    await finish(hub, { event: 'ca.prepared', actor: o.actor, detail: { kind: 'issuing', keyId, notAfter: v.notAfter.toISOString() } });
    return { kind: 'issuing', issuingKeyId: keyId, issuingNotAfter: v.notAfter.toISOString() };
  });
}

export interface PrepareRootOptions extends PrepareOptions {
  /** Where the new root's private key goes; default ca/root.next.key (moved to ca/root.key on
   *  activate). Created exclusively: an existing file is never overwritten. */
  readonly newRootKeyFile?: string;
}

/** A new root, a cross certificate for it signed by the active root, and a new issuing CA under
 *  the new root in ca/next/. */
export function prepareRoot(hub: RotationHub, o: PrepareRootOptions): Promise<PrepareResult> {
  const { ctx } = hub;
  return locked(ctx, async () => {
    const cas = readCaSet(ctx.paths);
    if (cas.next !== null) rotationError(ErrorCodes.CA_ROTATION_IN_PROGRESS, `an issuing CA (${cas.next.keyId}) is already prepared: run sepal-hub ca activate first`);
    if (cas.roots.length > 1) rotationError(ErrorCodes.CA_ROTATION_IN_PROGRESS, 'a previous root is still trusted: run sepal-hub ca prune once its certificates have expired');
    const oldRoot = activeRootOf(cas);
    const oldKey = readRootKey(o.rootKeyFile, oldRoot);
    const now = ctx.clock();
    const gen = generation(now);

    const rootKey = newCaKey();
    const rootValidity = validity(now, ROOT_YEARS, new Date(8.64e15));
    const rootDer = buildRootCert(rootKey, caName('root', ctx.config.federationId, gen), rootValidity);
    const cross = buildCrossCert(signer(oldRoot, oldKey), rootDer, validity(now, ROOT_YEARS, oldRoot.cert.validToDate));
    const newRoot: CaSigner = { key: rootKey.priv, name: caInfo(rootDer).subjectName, keyId: rootKey.keyId };
    const key = newCaKey();
    const v = validity(now, ISSUING_YEARS, rootValidity.notAfter);
    const der = buildIssuingCert(newRoot, key, caName('issuing', ctx.config.federationId, gen), v);

    const files = snapshotDir(caDir(ctx));
    const keyFileName = o.newRootKeyFile === undefined ? path.join(caDir(ctx), CA_FILES.nextRootKey) : path.resolve(o.newRootKeyFile);
    const inCaDir = path.dirname(keyFileName) === caDir(ctx);
    if (inCaDir) {
      const rel = path.basename(keyFileName);
      if (files.has(rel)) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${keyFileName} exists: not overwriting a key`);
      files.set(rel, keyFile(rootKey.pem));
    } else if (!createFileExclusiveSync(keyFileName, rootKey.pem, 0o600)) {
      throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${keyFileName} exists: not overwriting a key`);
    }
    files.set(CA_FILES.roots, certsFile([...cas.roots.map((r) => r.der), rootDer]));
    files.set(CA_FILES.cross, certsFile([...cas.cross.map((x) => x.der), cross]));
    nextFiles(files, der, key);
    replaceDir(caDir(ctx), files, o.hook);

    const sha256 = crypto.hash('sha256', rootDer, 'hex');
    const keyId = key.keyId.toString('hex');
    const rootKeyId = rootKey.keyId.toString('hex');
    await finish(hub, { event: 'ca.prepared', actor: o.actor, detail: { kind: 'root', keyId, rootKeyId, rootSha256: sha256, notAfter: v.notAfter.toISOString() } });
    return { kind: 'root', issuingKeyId: keyId, issuingNotAfter: v.notAfter.toISOString(), root: { keyId: rootKeyId, sha256, keyFile: keyFileName } };
  });
}

/** The names of a server certificate, its CN first (the order `init --hostname` gave them). */
export function serverNames(cert: crypto.X509Certificate): string[] {
  const cn = /^CN=(.*)$/m.exec(cert.subject)?.[1];
  const sans = (cert.subjectAltName ?? '').split(', ').filter((s) => s !== '').map((s) => s.replace(/^(DNS|IP Address):/, ''));
  const names = cn === undefined ? sans : [cn, ...sans.filter((n) => n.toLowerCase() !== cn.toLowerCase())];
  if (names.length === 0) throw new SepalError(ErrorCodes.DATA_DIR_INVALID, 'the hub server certificate names no host');
  return names;
}

/** The tls/ directory with a new server key and certificate from `issuer`. */
function serverTlsFiles(ctx: HubContext, issuer: IssuingCa, names: readonly string[], now: number): { files: Map<string, DirFile>; serial: string; notAfter: Date } {
  const files = snapshotDir(tlsDir(ctx));
  const key = newCaKey();
  const serial = randomSerial();
  const start = Math.floor(now / 1000) * 1000;
  const issued = issueServerCert(issuer.material, {
    spkiDer: key.spki,
    names,
    notBefore: new Date(start - BACKDATE_MS),
    notAfter: addYears(new Date(start), SERVER_YEARS),
    serial,
  });
  files.set(path.basename(ctx.paths.serverCert), certFile(issued.der));
  files.set(path.basename(ctx.paths.serverKey), keyFile(key.pem));
  return { files, serial: serial.toString('hex'), notAfter: issued.notAfter };
}

/**
 * Nodes that would lose the hub if a root rotation were activated now: active, with a certificate
 * still valid, issued before the new root was published (`since`), so the node has not been told
 * about the new root yet (it learns it from the bundle of its next Enroll/Renew answer).
 */
export async function nodesNotRenewedSince(ctx: HubContext, since: number, now: number): Promise<string[]> {
  const pending: string[] = [];
  for (const n of await ctx.store.listNodes()) {
    if (n.state !== 'active' || n.certSerial === null || (n.certNotAfter ?? 0) <= now) continue;
    const cert = await ctx.store.getCert(n.certSerial);
    if (cert === null || cert.issuedAt < since) pending.push(n.id);
  }
  return pending;
}

/** When a prepared root was published, at the latest: its notBefore is backdated by a minute and
 *  whole seconds; one more second errs on the side of "not told yet". */
function publishedAt(root: CaCert): number {
  return root.cert.validFromDate.getTime() + BACKDATE_MS + 1000;
}

export interface ActivateResult {
  readonly issuingKeyId: string;
  readonly retiredKeyId: string;
  readonly rootChanged: boolean;
  readonly rootSha256: string;
  readonly serverSerial: string;
}

/** The prepared issuing CA becomes the active one; the hub's server certificate follows it. */
export function activate(hub: RotationHub, o: { readonly actor: string; readonly force?: boolean; readonly hook?: SwapHook }): Promise<ActivateResult> {
  const { ctx } = hub;
  return locked(ctx, async () => {
    const cas = readCaSet(ctx.paths);
    const next = cas.next ?? rotationError(ErrorCodes.CA_NOTHING_PREPARED, 'no issuing CA is prepared: run sepal-hub ca prepare-issuing or prepare-root first');
    const oldRoot = activeRootOf(cas);
    const newRoot = cas.roots.find((r) => r.keyId === next.authorityKeyId) ?? oldRoot;
    const rootChanged = newRoot !== oldRoot;
    const now = ctx.clock();
    if (rootChanged && o.force !== true) {
      // The hub's server certificate moves under the new root: a node that does not trust it yet
      // could not renew any more.
      const pending = await nodesNotRenewedSince(ctx, publishedAt(newRoot), now);
      if (pending.length > 0) {
        throw new SepalError(ErrorCodes.CA_NODES_NOT_RENEWED, `${pending.length} active node(s) have not renewed since the new root was prepared and would not trust the hub after activation: ${pending.slice(0, 10).join(', ')}${pending.length > 10 ? ', …' : ''} (wait for their renewal, revoke them, or --force)`, { detail: { count: pending.length, nodes: pending.slice(0, 100) } });
      }
    }

    // The server certificate first: under the prepared CA it is valid in the old directory too,
    // so a crash between the two swaps leaves a consistent hub.
    const tls = serverTlsFiles(ctx, next, serverNames(hub.ctx.authority.serverCert), now);
    replaceDir(tlsDir(ctx), tls.files, o.hook);

    const files = snapshotDir(caDir(ctx));
    files.set(`${CA_FILES.retiredDir}/${cas.active.keyId}.crt`, certFile(cas.active.der));
    files.set(`${CA_FILES.retiredDir}/${cas.active.keyId}.key`, keyFile(cas.active.keyPem));
    files.set(CA_FILES.activeCert, certFile(next.der));
    files.set(CA_FILES.activeKey, keyFile(next.keyPem));
    files.delete(CA_FILES.nextCert);
    files.delete(CA_FILES.nextKey);
    if (rootChanged) {
      files.set(CA_FILES.roots, certsFile([newRoot.der, ...cas.roots.filter((r) => r !== newRoot).map((r) => r.der)]));
      // ca/root.key is the active root's key or nothing: the old one is kept with its root until
      // prune removes both; the new one moves in when prepare-root left it here.
      const oldRootKey = files.get(CA_FILES.rootKey);
      if (oldRootKey !== undefined) files.set(`${CA_FILES.retiredDir}/root-${oldRoot.keyId}.key`, oldRootKey);
      files.delete(CA_FILES.rootKey);
      const nextRootKey = files.get(CA_FILES.nextRootKey);
      if (nextRootKey !== undefined) files.set(CA_FILES.rootKey, nextRootKey);
      files.delete(CA_FILES.nextRootKey);
    }
    replaceDir(caDir(ctx), files, o.hook);

    const rootSha256 = crypto.hash('sha256', newRoot.der, 'hex');
    await finish(hub, { event: 'ca.activated', actor: o.actor, detail: { keyId: next.keyId, retired: cas.active.keyId, rootChanged, rootSha256, serverSerial: tls.serial } });
    return { issuingKeyId: next.keyId, retiredKeyId: cas.active.keyId, rootChanged, rootSha256, serverSerial: tls.serial };
  });
}

export interface PruneResult {
  readonly removedIssuing: readonly string[];
  readonly removedRoots: readonly string[];
  /** Retired issuing CAs kept, and until when their last certificate is valid. */
  readonly kept: ReadonlyArray<{ readonly keyId: string; readonly until: string }>;
}

/** Removes retired issuing CAs whose certificates have all expired, then unused roots. */
export function prune(hub: RotationHub, o: { readonly actor: string; readonly hook?: SwapHook }): Promise<PruneResult> {
  const { ctx } = hub;
  return locked(ctx, async () => {
    const cas = readCaSet(ctx.paths);
    const now = ctx.clock();
    const removedIssuing: string[] = [];
    const kept: Array<{ keyId: string; until: string }> = [];
    const server = hub.ctx.authority.serverCert;
    for (const r of cas.retired) {
      const last = await ctx.store.lastCertExpiryForIssuer(r.keyId);
      // The hub's own server certificate keeps its issuer (renew-server moves it to the active CA).
      if (signedBy(server, r.cert)) kept.push({ keyId: r.keyId, until: server.validToDate.toISOString() });
      else if (last === null || last < now) removedIssuing.push(r.keyId);
      else kept.push({ keyId: r.keyId, until: new Date(last).toISOString() });
    }
    const remaining = issuingCas(cas).filter((c) => !removedIssuing.includes(c.keyId));
    const usedRoots = new Set(remaining.map((c) => c.authorityKeyId));
    const removedRoots = cas.roots.filter((r) => !usedRoots.has(r.keyId)).map((r) => r.keyId);
    if (removedIssuing.length === 0 && removedRoots.length === 0) return { removedIssuing, removedRoots, kept };

    const files = snapshotDir(caDir(ctx));
    for (const k of removedIssuing) {
      files.delete(`${CA_FILES.retiredDir}/${k}.crt`);
      files.delete(`${CA_FILES.retiredDir}/${k}.key`);
    }
    if (removedRoots.length > 0) {
      files.set(CA_FILES.roots, certsFile(cas.roots.filter((r) => !removedRoots.includes(r.keyId)).map((r) => r.der)));
      // A cross certificate is only useful while both of its roots are trusted.
      const cross = cas.cross.filter((x) => !removedRoots.includes(x.keyId) && !removedRoots.includes(x.authorityKeyId));
      if (cross.length > 0) files.set(CA_FILES.cross, certsFile(cross.map((x) => x.der)));
      else files.delete(CA_FILES.cross);
      for (const k of removedRoots) files.delete(`${CA_FILES.retiredDir}/root-${k}.key`);
    }
    replaceDir(caDir(ctx), files, o.hook);
    await finish(hub, { event: 'ca.pruned', actor: o.actor, detail: { issuing: removedIssuing, roots: removedRoots } });
    return { removedIssuing, removedRoots, kept };
  });
}

/** A new key and server certificate for the hub from the active issuing CA (same names unless
 *  `names` is given). `serve` switches to it without a restart. */
export function renewServer(hub: RotationHub, o: { readonly actor: string; readonly names?: readonly string[]; readonly hook?: SwapHook }): Promise<{ serial: string; notAfter: string; names: readonly string[] }> {
  const { ctx } = hub;
  return locked(ctx, async () => {
    const cas = readCaSet(ctx.paths);
    const names = o.names ?? serverNames(hub.ctx.authority.serverCert);
    const tls = serverTlsFiles(ctx, cas.active, names, ctx.clock());
    replaceDir(tlsDir(ctx), tls.files, o.hook);
    await finish(hub, { event: 'ca.server_renewed', actor: o.actor, detail: { serial: tls.serial, notAfter: tls.notAfter.toISOString(), names } });
    return { serial: tls.serial, notAfter: tls.notAfter.toISOString(), names };
  });
}

export interface CaStatusRow {
  readonly role: CaEntry['role'];
  readonly state: CaEntry['state'];
  readonly keyId: string;
  readonly subject: string;
  readonly signedBy: string;
  readonly notAfter: string;
  readonly sha256: string;
  /** Retired issuing CAs: when its last certificate expires (prune after that); null: none left. */
  readonly lastLeafExpiry?: string | null;
}

/** Every CA certificate the hub holds, and its server certificate. */
export async function caStatus(ctx: HubContext): Promise<{ rootSha256: string; rows: CaStatusRow[]; nodesNotRenewed: readonly string[] | null }> {
  const a = ctx.authority;
  const cas = a.caSet;
  const rows: CaStatusRow[] = [];
  for (const e of caInventory(a)) {
    const row: CaStatusRow = {
      role: e.role, state: e.state, keyId: e.keyId, subject: e.cert.subject.replaceAll('\n', ', '), signedBy: e.signedBy,
      notAfter: e.cert.validToDate.toISOString(), sha256: crypto.hash('sha256', e.cert.raw, 'hex'),
    };
    if (e.state !== 'retired') rows.push(row);
    else {
      const last = await ctx.store.lastCertExpiryForIssuer(e.keyId);
      rows.push({ ...row, lastLeafExpiry: last === null ? null : new Date(last).toISOString() });
    }
  }
  const activeRootKeyId = cas.active.authorityKeyId;
  // During a prepared root rotation: who has still to renew before `activate` goes ahead.
  const nextRoot = cas.next === null ? undefined : cas.roots.find((r) => r.keyId === cas.next?.authorityKeyId && r.keyId !== activeRootKeyId);
  const nodesNotRenewed = nextRoot === undefined ? null : await nodesNotRenewedSince(ctx, publishedAt(nextRoot), ctx.clock());
  return { rootSha256: a.rootFingerprint, rows, nodesNotRenewed };
}
