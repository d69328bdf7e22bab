// Admin API authentication: an OIDC access token with the admin role, scoped to the org claim.
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import type { AdminAuthenticator } from '../http/admin.ts';
import type { AccessTokenVerifier } from './access-token.ts';

export function oidcAdminAuthenticator(verifier: AccessTokenVerifier): AdminAuthenticator {
  return async (authorization) => {
    const m = /^Bearer ([A-Za-z0-9._~+/-]+=*)$/.exec(authorization ?? '');
    if (m === null) throw new SepalError(ErrorCodes.UNAUTHENTICATED, 'an Authorization: Bearer access token is required');
    const t = await verifier.verify(m[1] as string, 'admin');
    return { subject: t.subject, org: t.org };
  };
}
