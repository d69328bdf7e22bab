// The Enroll RPC: first contact from an agent that has no certificate yet. The credential is a
// device-flow access token (verified against the IdP) or a single-use enrollment token; the
// organisation always comes from the credential. The credential's use, the node, its first
// certificate and the audit entry are one store transaction: a failure leaves nothing behind.
import type { EnrollRequest, EnrollResponse } from '../../proto/api.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import type { HubContext } from '../service/context.ts';
import { enrollNode } from '../service/issuance.ts';
import { checkOrg } from '../service/names.ts';
import { recordDenial } from '../service/security-events.ts';
import type { EnrollmentClaim, ManifestRecord } from '../store/store.ts';
import { toWireCredentials } from '../grpc/credentials.ts';
import type { AccessTokenVerifier } from './access-token.ts';
import { parseEnrollmentToken } from './enrollment-tokens.ts';
import { checkFlowerPublicKey } from './flower-key.ts';
import { RateLimiter } from './rate-limit.ts';

const MAX_FACTS_JSON = 16 * 1024;
const NAME_RE = /^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,63}$/u;

export interface EnrollDeps {
  readonly ctx: HubContext;
  /** Null when no IdP is configured: access tokens are then refused, enrollment tokens work. */
  readonly verifier: AccessTokenVerifier | null;
  /** Signs the node's first manifest (its organisation's), or null when there is none. */
  readonly firstManifest: (nodeId: string, org: string) => Promise<ManifestRecord | null>;
}

export type EnrollHandler = (req: EnrollRequest, peer: string) => Promise<EnrollResponse>;

function addressOf(peer: string): string {
  const i = peer.lastIndexOf(':');
  return i > 0 ? peer.slice(0, i) : peer;
}

export function createEnrollHandler(deps: EnrollDeps): EnrollHandler {
  const { ctx } = deps;
  const perSubject = new RateLimiter(ctx.config.enrollment.maxPerSubjectPerMinute, 60_000, ctx.clock);
  const perAddress = new RateLimiter(ctx.config.enrollment.maxPerAddressPerMinute, 60_000, ctx.clock);

  return async (req, peer) => {
    let actor = `peer:${peer}`;
    let org: string | null = null;
    try {
      if (!perAddress.take(addressOf(peer))) throw new SepalError(ErrorCodes.RATE_LIMITED, 'too many enrollment attempts from this address');
      let claim: EnrollmentClaim;
      const detail: Record<string, unknown> = {};
      if (typeof req.accessToken === 'string' && req.accessToken.length > 0) {
        if (deps.verifier === null) throw new SepalError(ErrorCodes.ENROLLMENT_UNAVAILABLE, 'this hub has no identity provider configured; use an enrollment token');
        const t = await deps.verifier.verify(req.accessToken, 'enroll');
        actor = `oidc:${t.subject}`;
        org = t.org;
        if (!perSubject.take(`oidc:${t.issuer}:${t.subject}`)) throw new SepalError(ErrorCodes.RATE_LIMITED, 'too many enrollments for this user');
        // Remember the jti for as long as the verifier would still accept the token (exp plus the
        // clock tolerance): forgetting it at exp would let a replay through inside the tolerance.
        claim = { kind: 'oidc', issuer: t.issuer, jti: t.jti, expiresAt: t.expiresAt + (ctx.config.idp?.clockToleranceSeconds ?? 0) * 1000 };
        detail['subject'] = t.subject;
      } else if (typeof req.enrollmentToken === 'string' && req.enrollmentToken.length > 0) {
        const { id, secretHash } = parseEnrollmentToken(req.enrollmentToken);
        actor = `token:${id}`;
        // Keyed by the whole credential: wrong secrets for a (public) token id fill their own
        // buckets and cannot lock the real token out; the per-address limit bounds guessing.
        if (!perSubject.take(`token:${id}:${secretHash}`)) throw new SepalError(ErrorCodes.RATE_LIMITED, 'too many enrollments with this token');
        const rec = await ctx.store.getEnrollmentToken(id);
        if (rec === null) throw new SepalError(ErrorCodes.ENROLLMENT_TOKEN_INVALID, 'unknown enrollment token');
        // A requested org is checked by the store after the secret, so a wrong secret learns
        // nothing about the token's organisation.
        org = req.org !== '' ? req.org : rec.org;
        claim = { kind: 'token', id, secretHash };
        detail['token'] = id;
      } else {
        throw new SepalError(ErrorCodes.UNAUTHENTICATED, 'an access token or an enrollment token is required');
      }
      if (claim.kind === 'oidc' && req.org !== '' && req.org !== org) throw new SepalError(ErrorCodes.ORG_MISMATCH, `you may enroll only into your own organisation (${org})`);
      checkOrg(org);
      const flowerKey = checkFlowerPublicKey(req.flowerPublicKey);
      if (!Buffer.isBuffer(req.csrDer) || req.csrDer.length === 0) throw new SepalError(ErrorCodes.CSR_MALFORMED, 'csr_der is empty');
      const facts = req.facts === null ? null : JSON.stringify(req.facts);
      if (facts !== null && facts.length > MAX_FACTS_JSON) throw new SepalError(ErrorCodes.MESSAGE_TOO_LARGE, 'host facts are too large');
      const name = (req.name !== '' ? req.name : req.facts?.hostname ?? '').trim() || 'node';
      if (!NAME_RE.test(name)) throw new SepalError(ErrorCodes.INVALID_ARGUMENT, 'name must be 1-64 letters, digits, spaces, dots, dashes or underscores');

      const { node, credentials } = await enrollNode(ctx, { org, name, csr: req.csrDer, facts, flowerPublicKey: flowerKey, actor, claim, detail });
      let manifest: ManifestRecord | null = null;
      try {
        manifest = await deps.firstManifest(node.id, node.org);
      } catch (e) {
        // The node is enrolled either way; it gets the manifest over WatchManifest later.
        ctx.log.error({ err: e, event: 'manifest.first_failed', nodeId: node.id }, 'could not sign the first manifest');
      }
      return {
        nodeId: node.id,
        org: node.org,
        credentials: toWireCredentials(credentials),
        manifest: manifest === null ? null : { jws: manifest.jws, version: String(manifest.version) },
      };
    } catch (e) {
      if (e instanceof SepalError && e.code !== ErrorCodes.INTERNAL) {
        await recordDenial(ctx, e.code, actor, { rpc: 'Enroll', address: peer }, { org });
      }
      throw e;
    }
  };
}
