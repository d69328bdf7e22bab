// OAuth 2.0 Device Authorization Grant (RFC 8628) against the federation's IdP, as a public client,
// asking for an access token for the hub (RFC 8707 `resource`). openid-client polls at the IdP's
// interval and slows down on `slow_down`; this module maps every way it can end to a coded error.
import * as client from 'openid-client';
import { isIP } from 'node:net';
import { AgentError, ErrorCodes } from '../errors.ts';
import type { Discovery } from './discovery.ts';

export type IdpSettings = NonNullable<Discovery['idp']>;

/** What the user must be shown to approve this host. */
export interface DevicePrompt {
  readonly verificationUri: string;
  readonly userCode: string;
  readonly verificationUriComplete: string | undefined;
  /** Seconds the code stays valid, counted from `issuedAt`. */
  readonly expiresIn: number;
  readonly issuedAt: number;
}

export interface DeviceFlowDeps {
  /** Aborted on Ctrl-C: polling stops at once with CANCELLED. */
  readonly signal: AbortSignal;
  readonly onPrompt: (p: DevicePrompt) => void;
  readonly now?: () => number;
  /** Replaces global fetch for every IdP request (tests). */
  readonly fetch?: client.CustomFetch;
}

const REQUEST_TIMEOUT_S = 15;

/** 127.0.0.0/8, ::1 and `localhost`: the only hosts an http:// issuer may name. */
export function isLoopbackHost(hostname: string): boolean {
  const h = hostname.replace(/^\[(.*)\]$/, '$1').toLowerCase();
  if (h === 'localhost') return true;
  if (isIP(h) === 4) return h.startsWith('127.');
  return isIP(h) === 6 && (h === '::1' || h === '0:0:0:0:0:0:0:1');
}

function idpIssuer(idp: IdpSettings): { url: URL; insecure: boolean } {
  const url = new URL(idp.issuer);
  if (url.protocol === 'https:') return { url, insecure: false };
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return { url, insecure: true };
  throw new AgentError(ErrorCodes.DISCOVERY_INVALID, `the IdP issuer ${idp.issuer} must be https:// (plain http is accepted on loopback only)`);
}

function oauthError(e: unknown): { error: string; description: string } | null {
  if (e instanceof client.ResponseBodyError) return { error: e.error, description: e.error_description ?? '' };
  return null;
}

function unavailable(issuer: string, e: unknown): AgentError {
  const oe = oauthError(e);
  const why = oe !== null
    ? `${oe.error}${oe.description === '' ? '' : ` (${oe.description})`}`
    : e instanceof Error ? `${e.message}${e.cause instanceof Error ? `: ${e.cause.message}` : ''}` : String(e);
  return new AgentError(ErrorCodes.IDP_UNAVAILABLE, `the identity provider ${issuer} failed: ${why}`, { cause: e });
}

function cancelled(): AgentError {
  return new AgentError(ErrorCodes.CANCELLED, 'cancelled while waiting for the login; nothing was written');
}

/** Runs the device flow to the end and returns the access token for the hub. */
export async function deviceFlowLogin(idp: IdpSettings, deps: DeviceFlowDeps): Promise<string> {
  const now = deps.now ?? Date.now;
  const { url, insecure } = idpIssuer(idp);
  const scope = idp.scopes.join(' ');
  // PKCE on the device grant (RFC 8628 allows it; the Keycloak realm requires it): the code can
  // only be redeemed by the process that asked for it.
  const codeVerifier = client.randomPKCECodeVerifier();
  const params: Record<string, string> = {
    resource: idp.audience,
    code_challenge: await client.calculatePKCECodeChallenge(codeVerifier),
    code_challenge_method: 'S256',
    ...(scope === '' ? {} : { scope }),
  };

  let config: client.Configuration;
  let auth: client.DeviceAuthorizationResponse;
  try {
    config = await client.discovery(url, idp.client_id, undefined, client.None(), {
      execute: insecure ? [client.allowInsecureRequests] : [],
      timeout: REQUEST_TIMEOUT_S,
      ...(deps.fetch === undefined ? {} : { [client.customFetch]: deps.fetch }),
    });
    if (deps.signal.aborted) throw cancelled();
    auth = await client.initiateDeviceAuthorization(config, params);
  } catch (e) {
    if (deps.signal.aborted) throw cancelled();
    if (e instanceof AgentError) throw e;
    throw unavailable(idp.issuer, e);
  }
  if (deps.signal.aborted) throw cancelled();

  deps.onPrompt(Object.freeze({
    verificationUri: auth.verification_uri,
    userCode: auth.user_code,
    verificationUriComplete: auth.verification_uri_complete,
    expiresIn: auth.expires_in,
    issuedAt: now(),
  }));

  // openid-client stops at expires_in only when no signal is given; with ours it needs its own.
  const expiry = new AbortController();
  // Bounded: setTimeout fires at once for delays past 2^31 ms, and no device code lives a day.
  const timer = setTimeout(() => expiry.abort(), Math.min(auth.expires_in, 86_400) * 1000);
  try {
    const tokens = await client.pollDeviceAuthorizationGrant(config, auth, { resource: idp.audience, code_verifier: codeVerifier }, {
      signal: AbortSignal.any([deps.signal, expiry.signal]),
    });
    return tokens.access_token;
  } catch (e) {
    if (deps.signal.aborted) throw cancelled();
    const oe = oauthError(e);
    if (oe?.error === 'access_denied') throw new AgentError(ErrorCodes.DEVICE_ACCESS_DENIED, 'the login was denied at the identity provider', { cause: e });
    if (oe?.error === 'expired_token' || expiry.signal.aborted) {
      throw new AgentError(ErrorCodes.DEVICE_CODE_EXPIRED, 'the device code expired before the login was approved; run enroll again', { cause: e });
    }
    throw unavailable(idp.issuer, e);
  } finally {
    clearTimeout(timer);
  }
}
