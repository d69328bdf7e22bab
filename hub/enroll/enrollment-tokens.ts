// Enrollment tokens for unattended installs: `sepal_et_<id>_<secret>`. The id is public (it names
// the token in `token list` and the audit log); only SHA-256 of the secret is stored, so the
// token is shown once, at creation.
import crypto from 'node:crypto';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';

const PREFIX = 'sepal_et_';
const RE = /^sepal_et_([0-9a-f]{16})_([A-Za-z0-9_-]{43})$/;

export interface MintedToken {
  readonly token: string;
  readonly id: string;
  readonly secretHash: string;
}

export function hashSecret(secret: string): string {
  return crypto.createHash('sha256').update(secret).digest('hex');
}

export function mintEnrollmentToken(): MintedToken {
  const id = crypto.randomBytes(8).toString('hex');
  const secret = crypto.randomBytes(32).toString('base64url');
  return { token: `${PREFIX}${id}_${secret}`, id, secretHash: hashSecret(secret) };
}

export function parseEnrollmentToken(token: string): { id: string; secretHash: string } {
  const m = RE.exec(token);
  if (m === null) throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_INVALID, 'not a Sepal enrollment token');
  return { id: m[1] as string, secretHash: hashSecret(m[2] as string) };
}
