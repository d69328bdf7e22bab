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
