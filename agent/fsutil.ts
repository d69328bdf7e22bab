// Atomic file writes for keys, certificates and state: temp file in the same directory, fsync,
// rename, fsync the directory. A crash at any point leaves either the old file or the new one.
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { AgentError, ErrorCodes } from './errors.ts';

export function writeFileAtomicSync(file: string, data: string | Buffer, mode: number): void {
  const dir = path.dirname(file);
  const tmp = path.join(dir, `.${path.basename(file)}.${crypto.randomBytes(6).toString('hex')}.tmp`);
  // 'wx': never follow or reuse something already sitting at the temp name.
  const fd = fs.openSync(tmp, 'wx', mode);
  try {
    fs.writeFileSync(fd, data);
    // The umask may have narrowed `mode` at open; fchmod makes the mode exactly what was asked.
    if (process.platform !== 'win32') fs.fchmodSync(fd, mode);
    fs.fsyncSync(fd);
  } catch (e) {
    fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fs.closeSync(fd);
  try {
    fs.renameSync(tmp, file);
  } catch (e) {
    fs.rmSync(tmp, { force: true });
    throw e;
  }
  fsyncDir(dir);
}

/** Makes a rename or a new entry in `dir` durable. Windows cannot open a directory for fsync (and
 *  NTFS journals the metadata), so there it does nothing. */
export function fsyncDir(dir: string): void {
  if (process.platform === 'win32') return;
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** Creates `dir` (and its parents) if needed and makes it 0700: only the agent's user may list it. */
export function ensurePrivateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  const st = fs.lstatSync(dir);
  if (!st.isDirectory()) throw new AgentError(ErrorCodes.STATE_INVALID, `${dir} exists and is not a directory`);
  if (process.platform !== 'win32' && (st.mode & 0o777) !== 0o700) fs.chmodSync(dir, 0o700);
}
