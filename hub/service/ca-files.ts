// The CA material in the data dir, as a whole. Layout of `ca/` (everything PEM):
//   root.crt            trusted roots, the active one first (two during a root rotation)
//   cross.crt           cross certificates: a newer root's name and key signed by an older root
//   issuing.crt/.key    the active issuing CA: signs every new leaf certificate
//   next/issuing.*      a prepared issuing CA (`ca prepare-*`): trusted, published, not yet signing
//   retired/<kid>.*     issuing CAs replaced by `ca activate`: trusted and signing their CRL until
//                       the last certificate they issued has expired (`ca prune`)
//   root.key            the root key when it is kept online (it can live offline)
//   root.next.key       a new root's key made by `ca prepare-root`, until `ca activate`
// A change to several of these files is one step for any reader: the complete new directory is
// written next to the old one (`ca.swap`) and renamed into place (old → `ca.old`, swap → `ca`).
// A crash leaves either the old or the new directory. Readers never change anything: they read
// `ca`, or `ca.swap` while `ca` is missing (currentDir); the next writer, holding the CA lock,
// finishes or discards an interrupted swap first (recoverSwaps). `tls/` (the hub's server
// certificate) works the same.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { pemToDerList, derToPem } from '../ca/pem.ts';
import type { IssuerMaterial } from '../ca/certificate.ts';
import { caInfo } from '../ca/x509.ts';
import type { HubPaths } from '../datadir.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { fsyncDir } from '../fsutil.ts';

export interface CaCert {
  readonly der: Buffer;
  readonly cert: crypto.X509Certificate;
  /** subjectKeyIdentifier, lowercase hex. */
  readonly keyId: string;
  /** authorityKeyIdentifier (the signer's keyId), lowercase hex; equal to keyId for a root. */
  readonly authorityKeyId: string;
}

export interface IssuingCa extends CaCert {
  /** PKCS#8 PEM, as on disk. */
  readonly keyPem: string;
  /** Certificate and parsed key, for signing (leaves, CRLs, server certificates). */
  readonly material: IssuerMaterial;
}

export interface CaSet {
  readonly roots: readonly CaCert[];
  readonly cross: readonly CaCert[];
  readonly active: IssuingCa;
  readonly next: IssuingCa | null;
  readonly retired: readonly IssuingCa[];
}

/** The issuing CAs the hub trusts: the active one, the prepared one, the retired ones. */
export function issuingCas(set: CaSet): IssuingCa[] {
  return [set.active, ...(set.next === null ? [] : [set.next]), ...set.retired];
}

/** `child` names `parent` as its issuer and carries its signature. */
export function signedBy(child: crypto.X509Certificate, parent: crypto.X509Certificate): boolean {
  return child.checkIssued(parent) && child.verify(parent.publicKey);
}

export const CA_FILES = {
  roots: 'root.crt',
  cross: 'cross.crt',
  activeCert: 'issuing.crt',
  activeKey: 'issuing.key',
  nextCert: 'next/issuing.crt',
  nextKey: 'next/issuing.key',
  retiredDir: 'retired',
  rootKey: 'root.key',
  nextRootKey: 'root.next.key',
} as const;

function invalid(message: string, cause?: unknown): never {
  throw new SepalError(ErrorCodes.DATA_DIR_INVALID, message, cause === undefined ? {} : { cause });
}

export function caCert(der: Buffer, file: string): CaCert {
  let cert: crypto.X509Certificate;
  let info: ReturnType<typeof caInfo>;
  try {
    cert = new crypto.X509Certificate(der);
    info = caInfo(der);
  } catch (e) {
    return invalid(`${file}: a certificate that does not parse`, e);
  }
  if (!cert.ca) invalid(`${file}: ${cert.subject.replaceAll('\n', ', ')} is not a CA certificate`);
  const keyId = info.keyId.toString('hex');
  return Object.freeze({ der, cert, keyId, authorityKeyId: info.authorityKeyId?.toString('hex') ?? keyId });
}

export function readPrivateKeyFile(file: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    invalid(`${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); expected 0600`);
  }
  return fs.readFileSync(file, 'utf8');
}

function readIssuing(certFile: string, keyFile: string): IssuingCa {
  const der = pemToDerList(fs.readFileSync(certFile, 'utf8'))[0];
  if (der === undefined) invalid(`${certFile}: no certificate`);
  const ca = caCert(der, certFile);
  const keyPem = readPrivateKeyFile(keyFile);
  let key: crypto.KeyObject;
  try {
    key = crypto.createPrivateKey(keyPem);
  } catch (e) {
    return invalid(`${keyFile}: not a private key`, e);
  }
  if (!crypto.createPublicKey(key).equals(ca.cert.publicKey)) invalid(`${keyFile} is not the key of ${certFile}`);
  return Object.freeze({ ...ca, keyPem, material: { cert: ca.cert, certDer: der, key } });
}

function exists(p: string): boolean {
  return fs.statSync(p, { throwIfNoEntry: false }) !== undefined;
}

/**
 * Finishes or discards a directory swap a crash interrupted (see the header). Only a writer
 * holding the data dir's CA lock may call this: a reader that "recovered" while a live writer was
 * between its steps would undo that writer's work.
 */
export function recoverSwap(dir: string): void {
  const swap = `${dir}.swap`;
  const old = `${dir}.old`;
  try {
    if (!exists(dir)) {
      // Crashed between the two renames: the swap directory is complete (it is only moved once
      // written and synced). Without one, the old directory is all there is.
      if (exists(swap)) fs.renameSync(swap, dir);
      else if (exists(old)) fs.renameSync(old, dir);
      fsyncDir(path.dirname(dir));
    }
    // A swap directory next to a live one was never renamed: the change did not happen.
    if (exists(swap)) fs.rmSync(swap, { recursive: true, force: true });
    if (exists(old)) fs.rmSync(old, { recursive: true, force: true });
  } catch (e) {
    invalid(`cannot finish an interrupted change of ${dir}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, e);
  }
}

export function recoverSwaps(paths: HubPaths): void {
  recoverSwap(path.dirname(paths.issuingCert));
  recoverSwap(path.dirname(paths.serverCert));
}

/**
 * Where a reader finds the current content of `dir` without changing anything: `dir` itself, or,
 * between a writer's two renames (or after a crash there), the complete `dir.swap`.
 */
export function currentDir(dir: string): string {
  if (exists(dir)) return dir;
  if (exists(`${dir}.swap`)) return `${dir}.swap`;
  // The writer may have renamed the swap into place meanwhile.
  return dir;
}

/** Reads ca/ as it is now (see currentDir); changes nothing. DATA_DIR_INVALID when incomplete. */
export function readCaSet(paths: HubPaths): CaSet {
  const dir = currentDir(path.dirname(paths.issuingCert));
  const f = (rel: string): string => path.join(dir, rel);
  try {
    const rootFile = f(CA_FILES.roots);
    const roots = pemToDerList(fs.readFileSync(rootFile, 'utf8')).map((d) => caCert(d, rootFile));
    if (roots.length === 0) invalid(`${rootFile}: no certificate`);
    const cross = exists(f(CA_FILES.cross)) ? pemToDerList(fs.readFileSync(f(CA_FILES.cross), 'utf8')).map((d) => caCert(d, f(CA_FILES.cross))) : [];
    const active = readIssuing(f(CA_FILES.activeCert), f(CA_FILES.activeKey));
    const next = exists(f(CA_FILES.nextCert)) ? readIssuing(f(CA_FILES.nextCert), f(CA_FILES.nextKey)) : null;
    const retiredDir = f(CA_FILES.retiredDir);
    const retired = exists(retiredDir)
      ? fs.readdirSync(retiredDir).filter((n) => /^[0-9a-f]+\.crt$/.test(n)).sort()
        .map((n) => readIssuing(path.join(retiredDir, n), path.join(retiredDir, n.replace(/\.crt$/, '.key'))))
      : [];
    return Object.freeze({ roots: Object.freeze(roots), cross: Object.freeze(cross), active, next, retired: Object.freeze(retired) });
  } catch (e) {
    if (e instanceof SepalError) throw e;
    return invalid(`data dir ${paths.dataDir} is incomplete: ${(e as NodeJS.ErrnoException).code ?? String(e)} (run sepal-hub init)`, e);
  }
}

export interface DirFile {
  readonly data: Buffer;
  readonly mode: number;
}

/** Every regular file under `dir`, by path relative to it. */
export function snapshotDir(dir: string): Map<string, DirFile> {
  const out = new Map<string, DirFile>();
  const walk = (rel: string): void => {
    for (const e of fs.readdirSync(path.join(dir, rel), { withFileTypes: true })) {
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (e.isDirectory()) walk(r);
      else if (e.isFile()) out.set(r, { data: fs.readFileSync(path.join(dir, r)), mode: fs.statSync(path.join(dir, r)).mode & 0o777 });
    }
  };
  walk('');
  return out;
}

/** Test hook: called with the step name before each step of replaceDir (a crash is a throw). */
export type SwapHook = (step: 'swap-written' | 'old-moved' | 'new-in-place') => void;

/** Replaces `dir` by a directory holding exactly `files`, as one step for readers (see the header). */
export function replaceDir(dir: string, files: ReadonlyMap<string, DirFile>, hook?: SwapHook): void {
  const swap = `${dir}.swap`;
  const old = `${dir}.old`;
  const mode = fs.statSync(dir).mode & 0o777;
  fs.rmSync(swap, { recursive: true, force: true });
  fs.mkdirSync(swap, { mode });
  const dirs = new Set<string>([swap]);
  for (const [rel, file] of files) {
    if (rel.startsWith('/') || rel.split('/').some((p) => p === '..' || p === '')) throw new TypeError(`bad relative path ${rel}`);
    const target = path.join(swap, rel);
    const parent = path.dirname(target);
    if (!dirs.has(parent)) {
      fs.mkdirSync(parent, { recursive: true, mode: 0o700 });
      dirs.add(parent);
    }
    const fd = fs.openSync(target, 'wx', file.mode);
    try {
      fs.writeSync(fd, file.data);
      fs.fchmodSync(fd, file.mode);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  }
  for (const d of dirs) fsyncDir(d);
  hook?.('swap-written');
  fs.renameSync(dir, old);
  hook?.('old-moved');
  fs.renameSync(swap, dir);
  fsyncDir(path.dirname(dir));
  hook?.('new-in-place');
  fs.rmSync(old, { recursive: true, force: true });
}

export function certFile(der: Buffer): DirFile {
  return { data: Buffer.from(derToPem(der, 'CERTIFICATE')), mode: 0o644 };
}

export function certsFile(ders: readonly Buffer[]): DirFile {
  return { data: Buffer.from(ders.map((d) => derToPem(d, 'CERTIFICATE')).join('')), mode: 0o644 };
}

export function keyFile(pem: string): DirFile {
  return { data: Buffer.from(pem), mode: 0o600 };
}
