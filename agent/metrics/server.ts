// The agent's loopback HTTP listener: /metrics (Prometheus text), /healthz (the loops are making
// progress), /readyz (enrolled, certificate valid, manifest applied, children up). Built by a
// factory and tested through inject(); only listenMetrics() opens a socket, and it refuses a
// non-loopback address unless the config allows it (the endpoints have no authentication).
import dns from 'node:dns/promises';
import net from 'node:net';
import Fastify, { type FastifyInstance, type FastifyReply } from 'fastify';
import { AgentError, ErrorCodes } from '../errors.ts';
import { formatHostPort, isLoopbackIp, parseHostPort } from './address.ts';
import type { HealthReport } from './heartbeats.ts';
import type { AgentMetrics } from './registry.ts';

export interface Readiness {
  readonly ready: boolean;
  /** Named checks: enrolled, certValid, manifestApplied, childrenUp (whatever the daemon reports). */
  readonly checks: Record<string, boolean>;
}

export interface MetricsServerDeps {
  readonly metrics: AgentMetrics;
  readonly health: () => HealthReport;
  readonly readiness: () => Readiness;
}

export interface ListenOptions {
  /** metrics.allowNonLoopback from the config. */
  readonly allowNonLoopback?: boolean;
}

const HEALTH_SCHEMA = {
  type: 'object',
  required: ['status', 'loops'],
  properties: {
    status: { type: 'string' },
    loops: {
      type: 'object',
      additionalProperties: {
        type: 'object',
        required: ['lastProgressMs', 'ok'],
        properties: { lastProgressMs: { type: 'number' }, ok: { type: 'boolean' } },
      },
    },
  },
} as const;

const READY_SCHEMA = {
  type: 'object',
  required: ['status', 'checks'],
  properties: { status: { type: 'string' }, checks: { type: 'object', additionalProperties: { type: 'boolean' } } },
} as const;

function sendError(reply: FastifyReply, status: number, code: string, message: string): FastifyReply {
  return reply.code(status).send({ error: { code, message } });
}

export async function buildMetricsServer(deps: MetricsServerDeps): Promise<FastifyInstance> {
  const app = Fastify({
    logger: false,
    bodyLimit: 1024,
    requestTimeout: 10_000,
    // A scraper's keep-alive connection must not hold up shutdown.
    forceCloseConnections: true,
  });

  app.addHook('onRequest', async (_req, reply) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('cache-control', 'no-store');
  });

  app.setNotFoundHandler((_req, reply) => sendError(reply, 404, ErrorCodes.NOT_FOUND, 'no such resource'));
  app.setErrorHandler((err: { statusCode?: number }, _req, reply) => {
    // Nothing internal leaks: a client mistake is a 4xx without detail, the rest a generic 500.
    const status = err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500 ? err.statusCode : 500;
    return sendError(reply, status, status === 500 ? ErrorCodes.INTERNAL : ErrorCodes.INVALID_ARGUMENT, status === 500 ? 'internal error' : 'invalid request');
  });

  app.get('/metrics', async (_req, reply) => {
    deps.metrics.setReady(deps.readiness().ready);
    const { contentType, body } = await deps.metrics.scrape();
    return reply.type(contentType).send(body);
  });

  app.get('/healthz', { schema: { response: { 200: HEALTH_SCHEMA, 503: HEALTH_SCHEMA } } }, async (_req, reply) => {
    const h = deps.health();
    return reply.code(h.ok ? 200 : 503).send({ status: h.ok ? 'ok' : 'stalled', loops: h.loops });
  });

  app.get('/readyz', { schema: { response: { 200: READY_SCHEMA, 503: READY_SCHEMA } } }, async (_req, reply) => {
    const r = deps.readiness();
    deps.metrics.setReady(r.ready);
    return reply.code(r.ready ? 200 : 503).send({ status: r.ready ? 'ready' : 'not-ready', checks: r.checks });
  });

  return app;
}

/**
 * Listens on `HOST:PORT` (port 0: any free port) and returns the address bound, as HOST:PORT.
 * A host that is not loopback, names that resolve to anything but loopback, and (checked again
 * after binding) a socket that ended up elsewhere are CONFIG_INVALID unless allowNonLoopback.
 */
export async function listenMetrics(app: FastifyInstance, addr: string, opts: ListenOptions = {}): Promise<string> {
  const hp = parseHostPort(addr);
  if (hp === null) throw new AgentError(ErrorCodes.CONFIG_INVALID, `metrics.listen: ${JSON.stringify(addr)} is not HOST:PORT`, { detail: { path: 'metrics.listen' } });
  const allow = opts.allowNonLoopback ?? false;
  const refuse = (what: string): AgentError => new AgentError(ErrorCodes.CONFIG_INVALID,
    `metrics.listen: ${what} is not a loopback address; the metrics and health endpoints have no authentication (set metrics.allowNonLoopback to listen there anyway)`,
    { detail: { path: 'metrics.listen', address: addr } });

  if (!allow) {
    let resolved: string[];
    try {
      resolved = net.isIP(hp.host) !== 0 ? [hp.host] : (await dns.lookup(hp.host, { all: true, verbatim: true })).map((a) => a.address);
    } catch (e) {
      throw new AgentError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${addr}: ${(e as NodeJS.ErrnoException).code ?? 'lookup failed'}`, { cause: e, detail: { address: addr } });
    }
    const outside = resolved.find((a) => !isLoopbackIp(a));
    if (resolved.length === 0) throw refuse(hp.host);
    if (outside !== undefined) throw refuse(outside === hp.host ? hp.host : `${hp.host} (${outside})`);
  }

  try {
    await app.listen({ host: hp.host, port: hp.port, listenTextResolver: () => '' });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EADDRINUSE' || code === 'EACCES' || code === 'EADDRNOTAVAIL') {
      throw new AgentError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${addr}: ${code}`, { cause: e, detail: { address: addr } });
    }
    throw e;
  }

  // Strings are pipe/socket paths, which a HOST:PORT never produces.
  const bound = app.addresses().filter((a) => typeof a !== 'string');
  if (!allow && bound.some((a) => !isLoopbackIp(a.address))) {
    await app.close();
    throw refuse(bound.map((a) => a.address).join(', '));
  }
  const first = bound[0];
  if (first === undefined) throw new AgentError(ErrorCodes.LISTEN_FAILED, `cannot listen on ${addr}: no address bound`);
  return formatHostPort(first.address, first.port);
}
