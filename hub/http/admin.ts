// The admin API: OIDC bearer tokens with an admin role, scoped to the caller's organisation.
// A caller never learns whether a node of another organisation exists (404, not 403).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { ErrorCodes } from '../../proto/errors.ts';
import { SepalError } from '../errors.ts';
import { nodeView } from '../service/views.ts';
import { recordDenial } from '../service/security-events.ts';
import type { HttpDeps } from './server.ts';

export interface AdminPrincipal {
  readonly subject: string;
  readonly org: string;
}

/** Turns an Authorization header into a principal or throws UNAUTHENTICATED / PERMISSION_DENIED. */
export type AdminAuthenticator = (authorization: string | undefined) => Promise<AdminPrincipal>;

const idParams = { type: 'object', required: ['id'], additionalProperties: false, properties: { id: { type: 'string', pattern: '^n-[0-9a-f]{16}$' } } } as const;

export function registerAdminRoutes(app: FastifyInstance, deps: HttpDeps): void {
  const { ctx } = deps;

  async function principal(req: FastifyRequest): Promise<AdminPrincipal> {
    try {
      if (deps.adminAuth === undefined) throw new SepalError(ErrorCodes.UNAUTHENTICATED, 'admin API needs an identity provider (idp in hub.json)');
      return await deps.adminAuth(req.headers.authorization);
    } catch (e) {
      const code = e instanceof SepalError ? e.code : ErrorCodes.UNAUTHENTICATED;
      await recordDenial(ctx, code, `http:${req.ip}`, { route: req.routeOptions.url ?? req.url });
      throw e instanceof SepalError ? e : new SepalError(ErrorCodes.UNAUTHENTICATED, 'invalid credentials');
    }
  }

  async function ownNode(req: FastifyRequest, p: AdminPrincipal, id: string) {
    const node = await ctx.store.getNode(id);
    if (node === null || node.org !== p.org) {
      if (node !== null) await recordDenial(ctx, ErrorCodes.PERMISSION_DENIED, `admin:${p.subject}`, { nodeId: id, route: req.url }, { org: p.org });
      throw new SepalError(ErrorCodes.NOT_FOUND, `no node ${id}`);
    }
    return node;
  }

  app.get('/api/v1/nodes', async (req) => {
    const p = await principal(req);
    return { nodes: (await ctx.store.listNodes({ org: p.org })).map(nodeView) };
  });

  app.get<{ Params: { id: string } }>('/api/v1/nodes/:id', { schema: { params: idParams } }, async (req) => {
    const p = await principal(req);
    return nodeView(await ownNode(req, p, req.params.id));
  });

  app.post<{ Params: { id: string } }>('/api/v1/nodes/:id/revoke', { schema: { params: idParams } }, async (req) => {
    const p = await principal(req);
    await ownNode(req, p, req.params.id);
    const serials = await deps.revoke(req.params.id, `admin:${p.subject}`);
    return { revoked: serials.length };
  });

  app.post<{ Body: { nodeId?: string; manifest: unknown } }>('/api/v1/manifests', {
    schema: {
      body: {
        type: 'object', required: ['manifest'], additionalProperties: false,
        properties: { nodeId: { type: 'string', pattern: '^n-[0-9a-f]{16}$' }, manifest: { type: 'object' } },
      },
    },
  }, async (req) => {
    const p = await principal(req);
    const { nodeId, manifest } = req.body;
    if (nodeId !== undefined) await ownNode(req, p, nodeId);
    const records = await deps.manifests.publish(nodeId === undefined ? { org: p.org } : { nodeId }, manifest, `admin:${p.subject}`);
    return { published: records.map((r) => ({ nodeId: r.nodeId, version: r.version })) };
  });
}
