// The node's identity on disk, under <state>/identity/, replaced only as a whole.
//
// Layout: identity/{tls.key, tls.crt, chain.pem, ca.pem, flower.key, flower.pub, node.json},
// manifest/current.jws. node.json is written last: an identity dir without it is incomplete.
//
// Replacing an identity: (1) write every file (each atomically) into a fresh staging dir
// <state>/.identity-<hex>, node.json last; (2) rename identity/ -> .identity-old-<hex>;
// (3) rename the staging dir -> identity/; (4) remove .identity-old-<hex>. Renames within one
// directory are atomic, and the state dir is fsynced after each, so a crash leaves one of:
//   before (2): identity/ = old (complete), maybe a staging dir (complete or not);
//   between (2) and (3): no identity/, the old one retired, the new one complete in staging;
//   after (3): identity/ = new, maybe the retired old one.
// Recovery rule (recoverState, run before anything reads the identity): if identity/node.json
// exists, that identity is current and every .identity-* dir is removed. If identity/ is missing,
// the newest complete staging dir (it holds node.json: the hub has already registered that node)
// is renamed to identity/; failing that, the newest complete retired dir is put back; the rest is
// removed. No step ever mixes files of two identities.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import { AgentError, ErrorCodes } from '../errors.ts';
import { ensurePrivateDir, fsyncDir, writeFileAtomicSync } from '../fsutil.ts';

export const DEFAULT_STATE_DIR_POSIX = '/var/lib/sepal-agent';

export function defaultStateDir(platform: NodeJS.Platform = process.platform, env: NodeJS.ProcessEnv = process.env): string {
  if (platform === 'win32') return path.win32.join(env['ProgramData'] ?? 'C:\\ProgramData', 'Sepal', 'Agent');
  return DEFAULT_STATE_DIR_POSIX;
}

export interface StatePaths {
  readonly root: string;
  readonly identity: string;
  readonly nodeJson: string;
  readonly manifestDir: string;
  readonly manifest: string;
  readonly lock: string;
}

export const IDENTITY_FILES = {
  tlsKey: 'tls.key',
  tlsCert: 'tls.crt',
  chain: 'chain.pem',
  ca: 'ca.pem',
  flowerKey: 'flower.key',
  flowerPub: 'flower.pub',
  node: 'node.json',
} as const;

export function statePaths(root: string): StatePaths {
  const r = path.resolve(root);
  return Object.freeze({
    root: r,
    identity: path.join(r, 'identity'),
    nodeJson: path.join(r, 'identity', IDENTITY_FILES.node),
    manifestDir: path.join(r, 'manifest'),
    manifest: path.join(r, 'manifest', 'current.jws'),
    lock: path.join(r, '.lock'),
  });
}

export const NodeRecordSchema = z.strictObject({
  nodeId: z.string().min(1).max(128),
  org: z.string().min(1).max(64),
  name: z.string().min(1).max(256),
  hubUrl: z.string().min(1).max(2048),
  /** The hub's discovery `issuer`: what its manifests carry in `iss`. */
  issuer: z.string().min(1).max(2048).optional(),
  grpcAddress: z.string().min(1).max(300),
  caSha256: z.string().regex(/^[0-9a-f]{64}$/),
  federationId: z.string().min(1).max(256),
  enrolledAt: z.iso.datetime(),
});

export type NodeRecord = z.infer<typeof NodeRecordSchema>;

export interface IdentityFiles {
  readonly tlsKeyPem: string;
  readonly tlsCertPem: string;
  /** Intermediates, leaf issuer first; '' when the leaf is signed by a root. */
  readonly chainPem: string;
  readonly caPem: string;
  readonly flowerKey: string;
  readonly flowerPub: string;
  readonly node: NodeRecord;
}

/** The filesystem operations the swap is made of: injected by tests to fail at a chosen step. */
export interface StoreFs {
  writeFile(file: string, data: string, mode: number): void;
  mkdirPrivate(dir: string): void;
  rename(from: string, to: string): void;
  removeTree(p: string): void;
  fsyncDir(dir: string): void;
}

export const realFs: StoreFs = {
  writeFile: writeFileAtomicSync,
  mkdirPrivate: (dir) => fs.mkdirSync(dir, { mode: 0o700 }),
  rename: (from, to) => fs.renameSync(from, to),
  removeTree: (p) => fs.rmSync(p, { recursive: true, force: true }),
  fsyncDir,
};

const STAGING_RE = /^\.identity-[0-9a-f]{12}$/;
const RETIRED_RE = /^\.identity-old-[0-9a-f]{12}$/;

function randomSuffix(): string {
  return crypto.randomBytes(6).toString('hex');
}

function exists(p: string): boolean {
  return fs.existsSync(p);
}

/** node.json of an identity dir, or null when there is none; STATE_INVALID when it is unreadable. */
export function readNodeRecord(file: string): NodeRecord | null {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new AgentError(ErrorCodes.STATE_INVALID, `cannot read ${file}: ${(e as Error).message}`, { cause: e });
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new AgentError(ErrorCodes.STATE_INVALID, `${file} is not JSON`);
  }
  const r = NodeRecordSchema.safeParse(json);
  if (!r.success) throw new AgentError(ErrorCodes.STATE_INVALID, `${file} is invalid: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  return r.data;
}

function enrolledAtOf(dir: string): number {
  try {
    return Date.parse(readNodeRecord(path.join(dir, IDENTITY_FILES.node))?.enrolledAt ?? '') || 0;
  } catch {
    return 0;
  }
}

export interface Recovery {
  /** What recovery did, for the log: 'none', 'promoted-staging' or 'restored-retired'. */
  readonly action: 'none' | 'promoted-staging' | 'restored-retired';
  readonly removed: readonly string[];
}

/** Applies the recovery rule above. Safe to run at any time the state lock is held. */
export function recoverState(paths: StatePaths, sfs: StoreFs = realFs): Recovery {
  if (!exists(paths.root)) return { action: 'none', removed: [] };
  const names = fs.readdirSync(paths.root);
  const staging = names.filter((n) => STAGING_RE.test(n)).map((n) => path.join(paths.root, n));
  const retired = names.filter((n) => RETIRED_RE.test(n)).map((n) => path.join(paths.root, n));
  const complete = (d: string): boolean => exists(path.join(d, IDENTITY_FILES.node));
  const newestFirst = (ds: string[]): string[] => ds.filter(complete).sort((a, b) => enrolledAtOf(b) - enrolledAtOf(a));

  let action: Recovery['action'] = 'none';
  let kept: string | undefined;
  if (!exists(paths.identity)) {
    kept = newestFirst(staging)[0];
    if (kept !== undefined) {
      action = 'promoted-staging';
    } else {
      kept = newestFirst(retired)[0];
      if (kept !== undefined) action = 'restored-retired';
    }
    if (kept !== undefined) {
      sfs.rename(kept, paths.identity);
      sfs.fsyncDir(paths.root);
    }
  }
  const removed = [...staging, ...retired].filter((d) => d !== kept);
  for (const d of removed) sfs.removeTree(d);
  if (removed.length > 0) sfs.fsyncDir(paths.root);
  return { action, removed };
}

/**
 * `sudo sepal-agent enroll` runs as root, but the service runs as the state dir's owner (the
 * package makes /var/lib/sepal-agent the sepal-agent user's): the files written go to that owner,
 * or the service could not read its own key. Only root can chown, and only then is it needed.
 */
export function giveToStateDirOwner(root: string, dir: string): void {
  if (process.platform === 'win32' || process.getuid?.() !== 0) return;
  const owner = fs.statSync(root);
  if (owner.uid === 0) return;
  fs.chownSync(dir, owner.uid, owner.gid);
  for (const name of fs.readdirSync(dir)) fs.chownSync(path.join(dir, name), owner.uid, owner.gid);
}

/** Writes a complete identity and swaps it in (see the top of this file). */
export function installIdentity(paths: StatePaths, files: IdentityFiles, sfs: StoreFs = realFs): void {
  ensurePrivateDir(paths.root);
  const staging = path.join(paths.root, `.identity-${randomSuffix()}`);
  sfs.mkdirPrivate(staging);
  try {
    const put = (name: string, data: string, mode: number): void => sfs.writeFile(path.join(staging, name), data, mode);
    put(IDENTITY_FILES.tlsKey, files.tlsKeyPem, 0o600);
    put(IDENTITY_FILES.tlsCert, files.tlsCertPem, 0o644);
    put(IDENTITY_FILES.chain, files.chainPem, 0o644);
    put(IDENTITY_FILES.ca, files.caPem, 0o644);
    put(IDENTITY_FILES.flowerKey, files.flowerKey, 0o600);
    put(IDENTITY_FILES.flowerPub, files.flowerPub.endsWith('\n') ? files.flowerPub : files.flowerPub + '\n', 0o644);
    // Last: its presence marks the staging dir complete.
    put(IDENTITY_FILES.node, JSON.stringify(files.node, null, 2) + '\n', 0o644);
    giveToStateDirOwner(paths.root, staging);
    sfs.fsyncDir(paths.root);
  } catch (e) {
    // Incomplete: nothing refers to it, and recovery would remove it anyway.
    try {
      sfs.removeTree(staging);
    } catch {
      // left for recoverState
    }
    throw e;
  }
  let retired: string | null = null;
  if (exists(paths.identity)) {
    retired = path.join(paths.root, `.identity-old-${randomSuffix()}`);
    sfs.rename(paths.identity, retired);
    sfs.fsyncDir(paths.root);
  }
  sfs.rename(staging, paths.identity);
  sfs.fsyncDir(paths.root);
  if (retired !== null) {
    sfs.removeTree(retired);
    sfs.fsyncDir(paths.root);
  }
}

/** The node's first manifest; without one, a manifest left by a previous identity is removed
 *  (it is addressed to the old node id and would only ever be rejected). */
export function storeManifest(paths: StatePaths, jws: string | null, sfs: StoreFs = realFs): void {
  if (jws === null) {
    if (exists(paths.manifest)) {
      fs.rmSync(paths.manifest, { force: true });
      sfs.fsyncDir(paths.manifestDir);
    }
    return;
  }
  ensurePrivateDir(paths.manifestDir);
  sfs.writeFile(paths.manifest, jws.endsWith('\n') ? jws : jws + '\n', 0o644);
  giveToStateDirOwner(paths.root, paths.manifestDir);
}

/** One agent process at a time changes the state dir. Returns the release function. A lock left by
 *  a process that no longer runs is taken over. */
export function lockState(paths: StatePaths, pid: number = process.pid): () => void {
  ensurePrivateDir(paths.root);
  for (let attempt = 0; attempt < 2; attempt++) {
    let fd: number;
    try {
      fd = fs.openSync(paths.lock, 'wx', 0o600);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw new AgentError(ErrorCodes.STATE_INVALID, `cannot lock ${paths.root}: ${(e as Error).message}`, { cause: e });
      const holder = Number.parseInt(fs.readFileSync(paths.lock, 'utf8'), 10);
      if (Number.isSafeInteger(holder) && holder > 0 && holder !== pid && processAlive(holder)) {
        throw new AgentError(ErrorCodes.STATE_INVALID, `another sepal-agent (pid ${holder}) is using ${paths.root}`);
      }
      fs.rmSync(paths.lock, { force: true });
      continue;
    }
    fs.writeFileSync(fd, `${pid}\n`);
    fs.closeSync(fd);
    return () => fs.rmSync(paths.lock, { force: true });
  }
  throw new AgentError(ErrorCodes.STATE_INVALID, `cannot lock ${paths.root}`);
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}
