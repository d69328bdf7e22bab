// The hub's tls-crypt keys, one file per reference under <data-dir>/vpn/tls-crypt (0700), each
// `<name>.key` mode 0600. A key is created once and never replaced: every agent and the OpenVPN
// server must hold the same bytes. The reference is a manifest's `vpn.tlsCryptKeyRef`; it maps to
// exactly one file name (`:`, `/` and `@` percent-encoded), so no reference can name a path
// outside the directory, whatever it contains.
import fs from 'node:fs';
import path from 'node:path';
import { isTlsCryptKeyRef } from '../../proto/manifest.ts';
import { SepalError, ErrorCodes } from '../errors.ts';
import { createFileExclusiveSync } from '../fsutil.ts';
import { formatStaticKey, parseStaticKey } from './static-key.ts';

/** Longest file name the store uses (well below NAME_MAX = 255 of common file systems). */
const MAX_FILE_NAME = 200;

/** The file holding `ref`'s key; null when `ref` is not a valid reference or too long to store. */
export function tlsCryptKeyFile(dir: string, ref: string): string | null {
  if (typeof ref !== 'string' || !isTlsCryptKeyRef(ref)) return null;
  const name = ref.replace(/[:/@]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`) + '.key';
  if (name.length > MAX_FILE_NAME) return null;
  return path.join(dir, name);
}

function fileFor(dir: string, ref: string): string {
  const file = tlsCryptKeyFile(dir, ref);
  if (file === null) {
    throw new SepalError(ErrorCodes.INVALID_ARGUMENT, `${JSON.stringify(ref)} is not a usable key reference (letters, digits and _.:/@-, starting with a letter or digit, no ".." segment, at most about 190 characters once : / @ are encoded)`);
  }
  return file;
}

/** Reads and checks a stored key file: private (no group/other bits) and well-formed. */
function readStored(file: string): string {
  const st = fs.statSync(file);
  if ((st.mode & 0o077) !== 0) {
    throw new SepalError(ErrorCodes.DATA_DIR_INVALID, `${file} is readable by group or others (mode ${(st.mode & 0o777).toString(8)}); expected 0600`, { expose: false });
  }
  return formatStaticKey(parseStaticKey(fs.readFileSync(file, 'utf8'), ErrorCodes.DATA_DIR_INVALID));
}

/** The key for `ref`, created (2048 random bits) when the hub has none yet. */
export function ensureTlsCryptKey(dir: string, ref: string): { readonly text: string; readonly created: boolean } {
  const file = fileFor(dir, ref);
  fs.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (fs.existsSync(file)) return { text: readStored(file), created: false };
  const text = formatStaticKey();
  // Exclusive and atomic: if another process created the key meanwhile, that key wins.
  if (!createFileExclusiveSync(file, text, 0o600)) return { text: readStored(file), created: false };
  return { text, created: true };
}

/** The stored key for `ref` as key file text; null when the hub has no key of that name. */
export function readTlsCryptKey(dir: string, ref: string): string | null {
  const file = fileFor(dir, ref);
  try {
    return readStored(file);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw e;
  }
}
