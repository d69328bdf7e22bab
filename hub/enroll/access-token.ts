// Verifies OIDC access tokens from the federation's IdP with jose: algorithm allow-list, issuer,
// audience, expiry/nbf/iat with a small clock tolerance, and a signature from the IdP's JWKS
// (cached; refetched on an unknown kid at most once per cooldown). Only access tokens are
// accepted: RFC 9068 `typ: at+jwt` or Keycloak's `typ: "Bearer"` claim. ID tokens are refused.
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors as joseErrors, jwtVerify, type JWTPayload } from 'jose';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import type { HubConfig } from '../config.ts';
import { SepalError } from '../errors.ts';

export type IdpConfig = NonNullable<HubConfig['idp']>;

export interface VerifiedAccessToken {
  readonly issuer: string;
  readonly subject: string;
  readonly org: string;
  readonly roles: readonly string[];
  readonly jti: string;
  /** Unix ms. */
  readonly expiresAt: number;
}

const ORG_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;

function fail(code: ErrorCode, message: string, cause?: unknown): never {
  throw new SepalError(code, message, cause === undefined ? {} : { cause });
}

function claimAt(payload: JWTPayload, path: string): unknown {
  let v: unknown = payload;
  for (const part of path.split('.')) {
    if (v === null || typeof v !== 'object' || !Object.hasOwn(v, part)) return undefined;
    v = (v as Record<string, unknown>)[part];
  }
  return v;
}

function isAccessToken(header: { typ?: string }, payload: JWTPayload): boolean {
  const typ = (header.typ ?? '').toLowerCase();
  if (typ === 'at+jwt' || typ === 'application/at+jwt') return true;
  // Keycloak: header typ "JWT", payload typ "Bearer" for access tokens and "ID" for ID tokens.
  return payload['typ'] === 'Bearer';
}

export class AccessTokenVerifier {
  readonly #idp: IdpConfig;
  readonly #fetch: typeof fetch;
  readonly #clock: () => number;
  #jwks: ReturnType<typeof createRemoteJWKSet> | null = null;

  constructor(idp: IdpConfig, opts: { fetch?: typeof fetch; clock?: () => number } = {}) {
    this.#idp = idp;
    this.#fetch = opts.fetch ?? fetch;
    this.#clock = opts.clock ?? Date.now;
  }

  async #keySet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (this.#jwks !== null) return this.#jwks;
    let uri = this.#idp.jwksUri;
    if (uri === undefined) {
      const url = `${this.#idp.issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
      let doc: { jwks_uri?: unknown; issuer?: unknown };
      try {
        const res = await this.#fetch(url, { signal: AbortSignal.timeout(5000) });
        if (!res.ok) fail(ErrorCodes.IDP_UNAVAILABLE, `IdP discovery ${url} answered ${res.status}`);
        doc = await res.json() as { jwks_uri?: unknown; issuer?: unknown };
      } catch (e) {
        if (e instanceof SepalError) throw e;
        fail(ErrorCodes.IDP_UNAVAILABLE, `IdP discovery ${url} failed`, e);
      }
      if (doc.issuer !== this.#idp.issuer) fail(ErrorCodes.IDP_UNAVAILABLE, `IdP discovery names issuer ${String(doc.issuer)}, expected ${this.#idp.issuer}`);
      if (typeof doc.jwks_uri !== 'string') fail(ErrorCodes.IDP_UNAVAILABLE, 'IdP discovery has no jwks_uri');
      uri = doc.jwks_uri;
    }
    this.#jwks = createRemoteJWKSet(new URL(uri), { cooldownDuration: 30_000, cacheMaxAge: 600_000, timeoutDuration: 5000 });
    return this.#jwks;
  }

  /** Verifies the token and, for `purpose`, the role it needs. Throws coded SepalErrors. */
  async verify(token: string, purpose: 'enroll' | 'admin'): Promise<VerifiedAccessToken> {
    const idp = this.#idp;
    if (typeof token !== 'string' || token.length === 0 || token.length > 16_384) fail(ErrorCodes.TOKEN_INVALID, 'malformed access token');
    let header: ReturnType<typeof decodeProtectedHeader>;
    let unverified: JWTPayload;
    try {
      header = decodeProtectedHeader(token);
      unverified = decodeJwt(token);
    } catch (e) {
      fail(ErrorCodes.TOKEN_INVALID, 'malformed access token', e);
    }
    if (typeof header.alg !== 'string' || !(idp.algorithms as readonly string[]).includes(header.alg)) {
      fail(ErrorCodes.TOKEN_INVALID, `access token algorithm ${String(header.alg)} is not accepted`);
    }
    if (!isAccessToken(header, unverified)) fail(ErrorCodes.TOKEN_NOT_ACCESS_TOKEN, 'only access tokens are accepted (this looks like an ID token or another kind)');

    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, await this.#keySet(), {
        issuer: idp.issuer,
        audience: idp.audience,
        algorithms: [...idp.algorithms],
        clockTolerance: idp.clockToleranceSeconds,
        currentDate: new Date(this.#clock()),
        requiredClaims: ['exp', 'iat', 'sub'],
      }));
    } catch (e) {
      if (e instanceof SepalError) throw e;
      if (e instanceof joseErrors.JWTExpired) fail(ErrorCodes.TOKEN_EXPIRED, 'access token expired', e);
      if (e instanceof joseErrors.JWTClaimValidationFailed) {
        if (e.claim === 'iss') fail(ErrorCodes.TOKEN_ISSUER_MISMATCH, 'access token is from another issuer', e);
        if (e.claim === 'aud') fail(ErrorCodes.TOKEN_AUDIENCE_MISMATCH, 'access token is not meant for this hub', e);
        fail(ErrorCodes.TOKEN_INVALID, `access token claim ${e.claim} is invalid`, e);
      }
      // The key set could not be had (timeout, network, an HTTP error from the IdP or a proxy,
      // a body that is not a JWKS): the IdP is unavailable, the token is not known to be bad.
      if (e instanceof joseErrors.JWKSTimeout || e instanceof joseErrors.JWKSInvalid || (e instanceof TypeError && /fetch/i.test(e.message))
        || (e instanceof joseErrors.JOSEError && e.code === 'ERR_JOSE_GENERIC')) {
        fail(ErrorCodes.IDP_UNAVAILABLE, 'could not fetch the IdP signing keys', e);
      }
      fail(ErrorCodes.TOKEN_INVALID, 'access token signature or format is invalid', e);
    }

    // jose bounds iat only with maxTokenAge; a token issued in the future is refused here.
    if (typeof payload.iat === 'number' && payload.iat * 1000 > this.#clock() + idp.clockToleranceSeconds * 1000) {
      fail(ErrorCodes.TOKEN_INVALID, 'access token was issued in the future');
    }
    const roles = claimAt(payload, idp.roleClaim);
    const roleList = Array.isArray(roles) ? roles.filter((r): r is string => typeof r === 'string') : [];
    const need = purpose === 'enroll' ? idp.enrollRole : idp.adminRole;
    if (!roleList.includes(need)) fail(ErrorCodes.ROLE_MISSING, `the token lacks the ${need} role`);
    const org = claimAt(payload, idp.orgClaim);
    if (typeof org !== 'string' || !ORG_RE.test(org)) fail(ErrorCodes.ORG_CLAIM_MISSING, `the token has no usable ${idp.orgClaim} claim`);
    const jti = payload.jti;
    if (purpose === 'enroll' && (typeof jti !== 'string' || jti.length === 0 || jti.length > 256)) fail(ErrorCodes.TOKEN_INVALID, 'access token has no jti');
    return {
      issuer: idp.issuer,
      subject: payload.sub ?? '',
      org,
      roles: roleList,
      jti: jti ?? '',
      expiresAt: (payload.exp ?? 0) * 1000,
    };
  }
}
