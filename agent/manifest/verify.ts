// Verifies a manifest JWS before anything acts on it. The checks run in a fixed order and the first
// failure throws an AgentError whose code is the rejection reason (MANIFEST_*): shape and size,
// header (alg allow-list, typ, kid), the key named by kid in the hub's JWKS, the signature, the
// claims schema, issuer, audience/subject, org and federation, validity window, then the version
// (anti-rollback). Nothing from the payload is looked at before the signature has verified.
import { compactVerify, importJWK, errors as joseErrors, type JSONWebKeySet, type JWK } from 'jose';
import { MANIFEST_ALGS, MANIFEST_TYP, parseManifestClaims, type ManifestBody, type ManifestClaims } from '../../proto/manifest.ts';
import { AgentError, ErrorCodes, type ErrorCode } from '../errors.ts';
import type { Clock } from '../runtime/clock.ts';

export interface ExpectedManifestIdentity {
  /** The hub's https public URL, exactly as its discovery document gives `issuer`. */
  readonly issuer: string;
  readonly nodeId: string;
  readonly org: string;
  readonly federationId: string;
}

export interface ManifestVerifierDeps {
  readonly expected: ExpectedManifestIdentity;
  /** The hub's JWKS (the daemon fetches it over mTLS). Throwing means "cannot verify now", not a
   *  rejection: the error propagates unchanged (or as HUB_UNREACHABLE when it carries no code). */
  readonly jwks: () => Promise<JSONWebKeySet>;
  readonly clock: Clock;
  /** Allowed clock skew for nbf/exp. Default 60. */
  readonly leewaySeconds?: number;
  /** An unknown kid refetches the JWKS at most once per this many ms. Default 60_000. */
  readonly refetchCooldownMs?: number;
  /** A cached JWKS older than this is fetched again before use (a key the hub stopped publishing
   *  stops verifying); if that fetch fails the cached copy is used. Default 3_600_000. */
  readonly maxJwksAgeMs?: number;
  /** Largest compact JWS accepted, in bytes. Default 262_144. */
  readonly maxBytes?: number;
}

export interface VerifiedManifest {
  readonly version: number;
  readonly claims: ManifestClaims;
  readonly body: ManifestBody;
  readonly kid: string;
  readonly jws: string;
}

/** Every code verify() rejects a manifest with. Anything else it throws means "not now". */
export const MANIFEST_REJECTION_CODES = Object.freeze([
  ErrorCodes.MANIFEST_MALFORMED,
  ErrorCodes.MANIFEST_BAD_ALG,
  ErrorCodes.MANIFEST_BAD_TYP,
  ErrorCodes.MANIFEST_UNKNOWN_KID,
  ErrorCodes.MANIFEST_BAD_SIGNATURE,
  ErrorCodes.MANIFEST_SCHEMA,
  ErrorCodes.MANIFEST_WRONG_ISSUER,
  ErrorCodes.MANIFEST_WRONG_AUDIENCE,
  ErrorCodes.MANIFEST_WRONG_ORG,
  ErrorCodes.MANIFEST_NOT_YET_VALID,
  ErrorCodes.MANIFEST_EXPIRED,
  ErrorCodes.MANIFEST_ROLLBACK,
  ErrorCodes.MANIFEST_ALREADY_APPLIED,
] as const);

export type ManifestRejectionCode = (typeof MANIFEST_REJECTION_CODES)[number];

/** True when `e` is verify() refusing the manifest (as opposed to being unable to check it). */
export function isManifestRejection(e: unknown): e is AgentError & { code: ManifestRejectionCode } {
  return e instanceof AgentError && (MANIFEST_REJECTION_CODES as readonly ErrorCode[]).includes(e.code);
}

const DEFAULT_LEEWAY_S = 60;
const DEFAULT_COOLDOWN_MS = 60_000;
const DEFAULT_MAX_JWKS_AGE_MS = 3_600_000;
const DEFAULT_MAX_BYTES = 256 * 1024;
const MAX_KID = 256;
const MAX_JWKS_KEYS = 64;
/** base64url segments; the signature may be empty so that `alg: none` is reported as such. */
const COMPACT_RE = /^([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]+)\.([A-Za-z0-9_-]*)$/;
/** Header members that would point the verifier at a key or change how the JWS is processed.
 *  Sepal never uses them; a header that carries one is refused rather than ignored. */
const FORBIDDEN_HEADER = ['crit', 'b64', 'jwk', 'jku', 'x5u', 'x5c', 'zip', 'enc'] as const;

const utf8 = new TextDecoder('utf-8', { fatal: true });

function reject(code: ManifestRejectionCode, message: string, detail?: Record<string, unknown>): AgentError {
  return new AgentError(code, `manifest rejected: ${message}`, detail === undefined ? {} : { detail });
}

function decodeJsonSegment(segment: string, what: string): unknown {
  try {
    return JSON.parse(utf8.decode(Buffer.from(segment, 'base64url'))) as unknown;
  } catch {
    throw reject(ErrorCodes.MANIFEST_MALFORMED, `${what} is not base64url-encoded UTF-8 JSON`);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

interface Header { readonly alg: string; readonly kid: string }

/** Shape, size and protected header, in that order. */
function checkHeader(jws: unknown, maxBytes: number): Header {
  if (typeof jws !== 'string') throw reject(ErrorCodes.MANIFEST_MALFORMED, 'not a string');
  if (jws.length > maxBytes) throw reject(ErrorCodes.MANIFEST_MALFORMED, `${jws.length} bytes; at most ${maxBytes} accepted`);
  const m = COMPACT_RE.exec(jws);
  if (m === null) throw reject(ErrorCodes.MANIFEST_MALFORMED, 'not a compact JWS (three base64url segments)');
  const header = decodeJsonSegment(m[1] ?? '', 'protected header');
  if (!isPlainObject(header)) throw reject(ErrorCodes.MANIFEST_MALFORMED, 'protected header is not a JSON object');
  const { alg, typ, kid } = header;
  if (typeof alg !== 'string' || !(MANIFEST_ALGS as readonly string[]).includes(alg)) {
    throw reject(ErrorCodes.MANIFEST_BAD_ALG, `alg ${JSON.stringify(alg) ?? 'missing'} is not allowed (only ${MANIFEST_ALGS.join(', ')})`, { alg: typeof alg === 'string' ? alg.slice(0, 32) : null });
  }
  if (typ !== MANIFEST_TYP) {
    throw reject(ErrorCodes.MANIFEST_BAD_TYP, `typ ${JSON.stringify(typ) ?? 'missing'} is not ${MANIFEST_TYP}`, { typ: typeof typ === 'string' ? typ.slice(0, 64) : null });
  }
  if (typeof kid !== 'string' || kid.length === 0 || kid.length > MAX_KID) throw reject(ErrorCodes.MANIFEST_MALFORMED, 'protected header has no usable kid');
  const forbidden = FORBIDDEN_HEADER.filter((k) => Object.hasOwn(header, k));
  if (forbidden.length > 0) throw reject(ErrorCodes.MANIFEST_MALFORMED, `protected header carries ${forbidden.join(', ')}`);
  if (m[3] === '') throw reject(ErrorCodes.MANIFEST_MALFORMED, 'no signature');
  return { alg, kid };
}

/** The public ES256 keys in a JWKS, by kid. Entries that are not public EC P-256 signing keys are
 *  skipped: they can never verify a manifest. */
function indexJwks(doc: unknown): Map<string, JWK[]> {
  const out = new Map<string, JWK[]>();
  const keys = isPlainObject(doc) && Array.isArray(doc['keys']) ? (doc['keys'] as unknown[]).slice(0, MAX_JWKS_KEYS) : [];
  for (const k of keys) {
    if (!isPlainObject(k)) continue;
    const { kid, kty, crv, x, y, alg, use, d } = k;
    if (typeof kid !== 'string' || kty !== 'EC' || crv !== 'P-256' || typeof x !== 'string' || typeof y !== 'string' || d !== undefined) continue;
    if (alg !== undefined && alg !== 'ES256') continue;
    if (use !== undefined && use !== 'sig') continue;
    const list = out.get(kid) ?? [];
    list.push({ kty, crv, x, y, kid });
    out.set(kid, list);
  }
  return out;
}

export class ManifestVerifier {
  readonly #expected: ExpectedManifestIdentity;
  readonly #fetchJwks: () => Promise<JSONWebKeySet>;
  readonly #clock: Clock;
  readonly #leewayS: number;
  readonly #cooldownMs: number;
  readonly #maxAgeMs: number;
  readonly #maxBytes: number;
  #keys: Map<string, JWK[]> | null = null;
  #fetchedAt = 0;
  #inflight: Promise<void> | null = null;
  /** When the last refetch caused by an unknown kid succeeded; null before the first one. */
  #lastRefetchAt: number | null = null;
  #fetches = 0;

  constructor(deps: ManifestVerifierDeps) {
    const e = deps.expected;
    for (const f of ['issuer', 'nodeId', 'org', 'federationId'] as const) {
      if (typeof e[f] !== 'string' || e[f].length === 0) throw new TypeError(`ManifestVerifier: expected.${f} must be a non-empty string`);
    }
    if (typeof deps.jwks !== 'function') throw new TypeError('ManifestVerifier: jwks must be a function');
    const nonNegative = (v: number | undefined, name: string, dflt: number): number => {
      if (v === undefined) return dflt;
      if (!Number.isFinite(v) || v < 0) throw new TypeError(`ManifestVerifier: ${name} must be a finite number >= 0`);
      return v;
    };
    this.#expected = Object.freeze({ issuer: e.issuer, nodeId: e.nodeId, org: e.org, federationId: e.federationId });
    this.#fetchJwks = deps.jwks;
    this.#clock = deps.clock;
    this.#leewayS = nonNegative(deps.leewaySeconds, 'leewaySeconds', DEFAULT_LEEWAY_S);
    this.#cooldownMs = nonNegative(deps.refetchCooldownMs, 'refetchCooldownMs', DEFAULT_COOLDOWN_MS);
    this.#maxAgeMs = nonNegative(deps.maxJwksAgeMs, 'maxJwksAgeMs', DEFAULT_MAX_JWKS_AGE_MS);
    this.#maxBytes = nonNegative(deps.maxBytes, 'maxBytes', DEFAULT_MAX_BYTES);
  }

  /** How many times the JWKS has been fetched (for metrics and tests). */
  get jwksFetches(): number {
    return this.#fetches;
  }

  /** Verifies `jws` for this node; `lastAppliedVersion` is the version now running (0 for none). */
  async verify(jws: string, lastAppliedVersion: number): Promise<VerifiedManifest> {
    if (!Number.isSafeInteger(lastAppliedVersion) || lastAppliedVersion < 0) throw new TypeError('verify: lastAppliedVersion must be an integer >= 0');
    const { kid } = checkHeader(jws, this.#maxBytes);
    const jwk = await this.#keyFor(kid);

    let payload: Uint8Array;
    try {
      const key = await importJWK(jwk, 'ES256');
      ({ payload } = await compactVerify(jws, key, { algorithms: [...MANIFEST_ALGS] }));
    } catch (e) {
      if (e instanceof joseErrors.JWSSignatureVerificationFailed) throw reject(ErrorCodes.MANIFEST_BAD_SIGNATURE, `signature does not verify with key ${kid}`, { kid });
      if (e instanceof joseErrors.JOSEAlgNotAllowed) throw reject(ErrorCodes.MANIFEST_BAD_ALG, 'alg is not allowed', { kid });
      throw reject(ErrorCodes.MANIFEST_MALFORMED, `cannot be verified: ${(e as Error).message}`, { kid });
    }

    let json: unknown;
    try {
      json = JSON.parse(utf8.decode(payload)) as unknown;
    } catch {
      throw reject(ErrorCodes.MANIFEST_MALFORMED, 'payload is not UTF-8 JSON', { kid });
    }
    const parsed = parseManifestClaims(json);
    if (!parsed.ok) {
      const first = parsed.issues[0];
      throw reject(ErrorCodes.MANIFEST_SCHEMA, `claims do not match the schema at ${first?.path || '(root)'}: ${first?.message ?? ''}`, { kid, issues: parsed.issues.slice(0, 10) });
    }
    const claims = parsed.value;
    const ids = { kid, jti: claims.jti, version: claims.version };
    const exp = this.#expected;
    if (claims.iss !== exp.issuer) throw reject(ErrorCodes.MANIFEST_WRONG_ISSUER, `iss ${JSON.stringify(claims.iss)} is not ${JSON.stringify(exp.issuer)}`, { ...ids, iss: claims.iss });
    if (claims.aud !== exp.nodeId || claims.sub !== exp.nodeId) {
      throw reject(ErrorCodes.MANIFEST_WRONG_AUDIENCE, `addressed to ${JSON.stringify(claims.aud)}, this node is ${JSON.stringify(exp.nodeId)}`, { ...ids, aud: claims.aud, sub: claims.sub });
    }
    if (claims.org !== exp.org) throw reject(ErrorCodes.MANIFEST_WRONG_ORG, `org ${JSON.stringify(claims.org)} is not ${JSON.stringify(exp.org)}`, { ...ids, claim: 'org', org: claims.org });
    if (claims.federation_id !== exp.federationId) {
      throw reject(ErrorCodes.MANIFEST_WRONG_ORG, `federation_id ${JSON.stringify(claims.federation_id)} is not ${JSON.stringify(exp.federationId)}`, { ...ids, claim: 'federation_id', federationId: claims.federation_id });
    }
    const now = this.#clock.now() / 1000;
    if (claims.nbf > now + this.#leewayS) throw reject(ErrorCodes.MANIFEST_NOT_YET_VALID, `not valid before ${new Date(claims.nbf * 1000).toISOString()}`, { ...ids, nbf: claims.nbf });
    if (claims.exp <= now - this.#leewayS) throw reject(ErrorCodes.MANIFEST_EXPIRED, `expired at ${new Date(claims.exp * 1000).toISOString()}`, { ...ids, exp: claims.exp });
    if (claims.version < lastAppliedVersion) {
      throw reject(ErrorCodes.MANIFEST_ROLLBACK, `version ${claims.version} is older than the running version ${lastAppliedVersion}`, { ...ids, lastAppliedVersion });
    }
    if (claims.version === lastAppliedVersion) {
      throw reject(ErrorCodes.MANIFEST_ALREADY_APPLIED, `version ${claims.version} is already running`, { ...ids, lastAppliedVersion });
    }
    return Object.freeze({ version: claims.version, claims, body: claims.manifest, kid, jws });
  }

  /** The key named `kid`: from the cached JWKS, fetched on first use (and when stale), refetched
   *  once on an unknown kid unless a refetch succeeded less than the cooldown ago. */
  async #keyFor(kid: string): Promise<JWK> {
    let fetchedNow = false;
    if (this.#inflight !== null) {
      await this.#inflight.catch(() => undefined);
    }
    if (this.#keys === null) {
      await this.#fetch();
      fetchedNow = true;
    } else if (this.#clock.now() - this.#fetchedAt >= this.#maxAgeMs) {
      // Stale: try to refresh, keep the old copy if the hub cannot be reached.
      fetchedNow = await this.#fetch().then(() => true, () => false);
    }
    let found = this.#keys?.get(kid);
    if (found === undefined && !fetchedNow && this.#mayRefetch()) {
      const previous = this.#lastRefetchAt;
      this.#lastRefetchAt = this.#clock.now();
      try {
        await this.#fetch();
      } catch (e) {
        // Not a verdict on the manifest; the next attempt may refetch again.
        this.#lastRefetchAt = previous;
        throw e;
      }
      found = this.#keys?.get(kid);
    }
    if (found === undefined) {
      // When a refetch may next be tried: a caller holding a manifest signed by a key published
      // moments ago can verify it again then.
      const retryAt = this.#lastRefetchAt === null ? this.#clock.now() : this.#lastRefetchAt + this.#cooldownMs;
      throw reject(ErrorCodes.MANIFEST_UNKNOWN_KID, `the hub's JWKS has no ES256 key ${kid}`, { kid, retryAt });
    }
    if (found.length !== 1) throw reject(ErrorCodes.MANIFEST_UNKNOWN_KID, `the hub's JWKS lists key ${kid} ${found.length} times`, { kid });
    return found[0] as JWK;
  }

  #mayRefetch(): boolean {
    return this.#lastRefetchAt === null || this.#clock.now() - this.#lastRefetchAt >= this.#cooldownMs;
  }

  /** One fetch at a time: concurrent callers share it. */
  #fetch(): Promise<void> {
    if (this.#inflight !== null) return this.#inflight;
    const run = (async () => {
      this.#fetches++;
      let doc: JSONWebKeySet;
      try {
        doc = await this.#fetchJwks();
      } catch (e) {
        if (e instanceof AgentError) throw e;
        throw new AgentError(ErrorCodes.HUB_UNREACHABLE, `cannot fetch the hub's JWKS: ${(e as Error).message}`, { cause: e });
      }
      this.#keys = indexJwks(doc);
      this.#fetchedAt = this.#clock.now();
    })();
    this.#inflight = run;
    return run.finally(() => {
      if (this.#inflight === run) this.#inflight = null;
    });
  }
}
