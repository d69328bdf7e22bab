// Hub-side credentials to their wire shape (proto Credentials).
import type { Credentials } from '../../proto/api.ts';
import type { IssuedCredentials } from '../service/context.ts';

export function toWireCredentials(c: IssuedCredentials): Credentials {
  return { certificateDer: c.certDer, chainDer: [...c.chainDer], caBundleDer: [...c.caBundleDer], notAfterUnixMs: String(c.notAfter) };
}
