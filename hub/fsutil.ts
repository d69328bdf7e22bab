// Atomic file writes for credentials and state: temp file in the same directory, fsync, rename,
// fsync the directory. A crash at any point leaves either the old file or the new one.
import fs from 'node:fs';
import path from 'node:path';
import crypto from 'node:crypto';

/** A complete, fsynced temp file next to `file` (same directory, so it can be renamed or linked). */
function writeTempSync(file: string, data: string | Buffer, mode: number): string {
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeSync(fd, typeof data === 'string' ? Buffer.from(data) : data);
    fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  return tmp;
}

export function writeFileAtomicSync(file: string, data: string | Buffer, mode = 0o600): void {
  const tmp = writeTempSync(file, data, mode);
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(path.dirname(file));
}

/**
 * Creates `file` whole, only if it does not exist yet: a complete temp file is hard-linked into
 * place, which fails when another process created it meanwhile. Returns false (nothing written)
 * when the file already existed.
 */
export function createFileExclusiveSync(file: string, data: string | Buffer, mode = 0o600): boolean {
  const tmp = writeTempSync(file, data, mode);
  try {
    fs.linkSync(tmp, file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw e;
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  fsyncDir(path.dirname(file));
  return true;
}

export function fsyncDir(dir: string): void {
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

const LOCK_STALE_MS = 30_000;
const LOCK_WAIT_MS = 10_000;

/**
 * Runs `fn` holding `lockFile` (created exclusively, removed after). Waits up to 10 s for another
 * holder; a lock file older than 30 s is taken to be left by a crashed holder and removed, so
 * `fn` must finish well within that.
 */
export async function withLockFile<T>(lockFile: string, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      fs.closeSync(fs.openSync(lockFile, 'wx', 0o600));
      break;
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'EEXIST') throw e;
      const age = Date.now() - (fs.statSync(lockFile, { throwIfNoEntry: false })?.mtimeMs ?? Date.now());
      if (age > LOCK_STALE_MS) fs.rmSync(lockFile, { force: true });
      else if (Date.now() > deadline) throw new Error(`lock ${lockFile} held for too long`);
      else await new Promise((r) => setTimeout(r, 5));
    }
  }
  try {
    return await fn();
  } finally {
    fs.rmSync(lockFile, { force: true });
  }
}
