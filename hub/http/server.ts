// The hub's HTTPS side: discovery, JWKS, CA bundle, CRL, health, metrics and the admin API.
// Built by a factory; only the entry point calls listen(). Tests go through inject().
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import helmet from '@fastify/helmet';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import { isSepalError } from '../errors.ts';
import type { HubContext } from '../service/context.ts';
import type { CrlPublisher } from '../service/crl.ts';
import type { ManifestService } from '../service/manifests.ts';
import { FLOWER_STATES } from '../store/store.ts';
import { registerAdminRoutes, type AdminAuthenticator } from './admin.ts';

export interface HttpDeps {
  readonly ctx: HubContext;
  readonly crl: CrlPublisher;
  readonly manifests: ManifestService;
  /** Verifies admin bearer tokens; absent until an IdP is configured (then admin calls get 401). */
  readonly adminAuth?: AdminAuthenticator;
  /** Ready once stores are open and listeners are up. */
  readonly readiness: () => { ready: boolean; checks: Record<string, boolean> };
  readonly https?: { key: string; cert: string };
  readonly revoke: (nodeId: string, actor: string) => Promise<string[]>;
  /** The gRPC address agents dial, when it differs from the config (a port 0 bound at start). */
  readonly grpcPublicAddress?: string;
}

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  UNAUTHENTICATED: 401, PERMISSION_DENIED: 403, NOT_FOUND: 404, INVALID_ARGUMENT: 400, MANIFEST_INVALID: 400,
  RATE_LIMITED: 429, ALREADY_EXISTS: 409, MESSAGE_TOO_LARGE: 413,
  TOKEN_INVALID: 401, TOKEN_EXPIRED: 401, TOKEN_ISSUER_MISMATCH: 401, TOKEN_AUDIENCE_MISMATCH: 401, TOKEN_NOT_ACCESS_TOKEN: 401,
  ROLE_MISSING: 403, ORG_CLAIM_MISSING: 403, ORG_MISMATCH: 403, IDP_UNAVAILABLE: 503,
};

export function sendError(reply: FastifyReply, code: ErrorCode, message: string, detail?: unknown): FastifyReply {
  return reply.code(HTTP_STATUS[code] ?? 500).send({ error: { code, message, ...(detail === undefined ? {} : { detail }) } });
}

export async function buildHttpServer(deps: HttpDeps): Promise<FastifyInstance> {
  const { ctx } = deps;
  const app = Fastify({
    logger: false,
    bodyLimit: ctx.config.limits.maxMessageBytes,
    // Fastify's default Ajv strips properties that `additionalProperties: false` forbids; refuse
    // them instead, so a mistyped field (`nodeID`) is an error, never silently dropped.
    ajv: { customOptions: { removeAdditional: false } },
    ...(deps.https === undefined ? {} : { https: { key: deps.https.key, cert: deps.https.cert, minVersion: 'TLSv1.3' as const } }),
  });
  await app.register(helmet, { contentSecurityPolicy: { directives: { defaultSrc: ["'none'"], frameAncestors: ["'none'"] } } });

  app.setErrorHandler((err: unknown, req: FastifyRequest, reply: FastifyReply) => {
    if (isSepalError(err) && err.expose) return sendError(reply, err.code, err.message, err.detail);
    const e = err as { statusCode?: number; code?: string; validation?: unknown };
    if (e.statusCode === 413) return sendError(reply, ErrorCodes.MESSAGE_TOO_LARGE, 'request body too large');
    if (e.validation !== undefined || (e.statusCode !== undefined && e.statusCode >= 400 && e.statusCode < 500)) {
      return sendError(reply, ErrorCodes.INVALID_ARGUMENT, 'invalid request');
    }
    ctx.log.error({ err, event: 'http.failed', url: req.url }, 'request failed');
    return sendError(reply, ErrorCodes.INTERNAL, 'internal error');
  });
  app.setNotFoundHandler((_req, reply) => sendError(reply, ErrorCodes.NOT_FOUND, 'no such resource'));

  const base = ctx.config.https.publicUrl.replace(/\/$/, '');

  app.get('/.well-known/sepal-configuration', () => Promise.resolve({
    issuer: base,
    federation_id: ctx.config.federationId,
    grpc_address: deps.grpcPublicAddress ?? ctx.config.grpc.publicAddress,
    jwks_uri: `${base}/.well-known/jwks.json`,
    crl_uri: `${base}/crl.pem`,
    crl_der_uri: `${base}/crl.der`,
    ca_bundle_uri: `${base}/ca.pem`,
    manifest_typ: 'sepal-manifest+jwt',
    idp: ctx.config.idp === null ? null : {
      issuer: ctx.config.idp.issuer,
      client_id: ctx.config.idp.clientId,
      audience: ctx.config.idp.audience,
      scopes: ctx.config.idp.scopes,
    },
  }));

  app.get('/.well-known/jwks.json', async (_req, reply) => {
    reply.header('cache-control', 'public, max-age=60');
    return deps.manifests.jwks();
  });

  app.get('/ca.pem', async (_req, reply) => reply.type('application/x-pem-file').send(ctx.authority.bundlePem));

  app.get('/crl.pem', async (_req, reply) => reply.type('application/x-pem-file').send((await deps.crl.current()).pem));
  app.get('/crl.der', async (_req, reply) => reply.type('application/pkix-crl').send((await deps.crl.current()).der));

  app.get('/healthz', () => Promise.resolve({ status: 'ok' }));
  app.get('/readyz', async (_req, reply) => {
    const r = deps.readiness();
    return reply.code(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not-ready', checks: r.checks });
  });
  app.get('/metrics', async (_req, reply) => {
    const nodes = await ctx.store.listNodes();
    ctx.metrics.nodes.set({ state: 'active' }, nodes.filter((n) => n.state === 'active').length);
    ctx.metrics.nodes.set({ state: 'revoked' }, nodes.filter((n) => n.state === 'revoked').length);
    for (const state of FLOWER_STATES) ctx.metrics.flowerRegistrations.set({ state }, nodes.filter((n) => n.flower?.state === state).length);
    return reply.type(ctx.metrics.registry.contentType).send(await ctx.metrics.registry.metrics());
  });

  registerAdminRoutes(app, deps);
  return app;
}
