// The AgentApi handlers. Each one decodes its request at the edge, proves the caller from its
// verified client certificate (never from the request), and answers with a coded error otherwise.
import type * as grpc from '@grpc/grpc-js';
import { decodeJwt } from 'jose';
import type {
  EnrollRequest, ManifestEnvelope, RenewRequest, RenewResponse, StatusAck, StatusReport, VpnSecretRequest, VpnSecretResponse, WatchManifestRequest,
} from '../../proto/api.ts';
import { ErrorCodes, type ErrorCode } from '../../proto/errors.ts';
import { isTlsCryptKeyRef } from '../../proto/manifest.ts';
import { RateLimiter } from '../enroll/rate-limit.ts';
import { readTlsCryptKey } from '../vpn/tls-crypt-keys.ts';
import { SepalError } from '../errors.ts';
import type { HubContext, PeerIdentity } from '../service/context.ts';
import { toWireCredentials } from './credentials.ts';
import { renewCertificate } from '../service/issuance.ts';
import { recordDenial } from '../service/security-events.ts';
import { serviceError, toServiceError } from './errors.ts';
import type { PeerVerdict } from './peer.ts';
import { failStream, type ManifestCall, type ManifestStreams } from './streams.ts';
import { oversizedLength } from './limits.ts';

const MAX_CSR_BYTES = 16 * 1024;
const MAX_STATUS_JSON = 32 * 1024;
/** GetVpnSecret calls per node and minute: an agent fetches at start and on a manifest change. */
const VPN_SECRET_PER_MINUTE = 10;

/** The tls-crypt key reference of the node's latest manifest (the hub signed it: no verification
 *  needed to read it back), or null when that manifest has no VPN section. */
function manifestKeyRef(jws: string): string | null {
  const claims = decodeJwt(jws) as { manifest?: { vpn?: { tlsCryptKeyRef?: unknown } } };
  const ref = claims.manifest?.vpn?.tlsCryptKeyRef;
  return typeof ref === 'string' ? ref : null;
}

export interface HandlerDeps {
  readonly ctx: HubContext;
  readonly streams: ManifestStreams;
  /** The verdict recorded for the connection the call came in on. */
  readonly verdictFor: (peer: string) => PeerVerdict | undefined;
  /** Enrollment arrives with the OIDC issue; until then the RPC answers ENROLLMENT_UNAVAILABLE. */
  readonly enroll?: (req: EnrollRequest, peer: string) => Promise<unknown>;
  readonly isShuttingDown: () => boolean;
}

async function deny(deps: HandlerDeps, code: ErrorCode, peer: string, detail: Record<string, unknown>, who: { nodeId?: string; org?: string } = {}): Promise<never> {
  await recordDenial(deps.ctx, code, `peer:${peer}`, detail, who);
  throw new SepalError(code, code);
}

/** A request larger than the configured limit arrives as a marker (see limits.ts): refuse it
 *  with a coded error and a security event before anything else looks at it. */
async function rejectOversized(deps: HandlerDeps, call: { request: unknown; getPeer(): string }): Promise<void> {
  const size = oversizedLength(call.request);
  if (size !== null) await deny(deps, ErrorCodes.MESSAGE_TOO_LARGE, call.getPeer(), { bytes: size });
}

/** Proves the caller: verified certificate on this connection, unexpired, known, unrevoked. */
export async function authenticate(deps: HandlerDeps, call: { getPeer(): string }): Promise<PeerIdentity> {
  const peer = call.getPeer();
  const v = deps.verdictFor(peer);
  if (v === undefined) return deny(deps, ErrorCodes.CLIENT_CERT_MISSING, peer, {});
  if (!v.ok) return deny(deps, v.code, peer, v.detail);
  const id = v.identity;
  if (deps.ctx.clock() >= id.notAfter) return deny(deps, ErrorCodes.CLIENT_CERT_EXPIRED, peer, { serial: id.serial }, id);
  const acc = await deps.ctx.store.certAcceptance(id.serial);
  if (acc.cert === null || acc.node === null || acc.cert.nodeId !== id.nodeId || acc.node.org !== id.org || acc.cert.fingerprint !== v.fingerprint) {
    return deny(deps, ErrorCodes.CLIENT_CERT_UNKNOWN, peer, { serial: id.serial }, id);
  }
  if (acc.node.state === 'revoked' || acc.cert.revokedAt !== null) return deny(deps, ErrorCodes.CLIENT_CERT_REVOKED, peer, { serial: id.serial }, id);
  return id;
}

/** A unary handler with the hub's rules: refused while shutting down, oversized requests
 *  refused first, coded errors only, and an answer within limits.rpcTimeoutMs (a slow store
 *  must not hold a caller forever; work already started may still complete). */
function unary<Req, Res>(deps: HandlerDeps, fn: (call: grpc.ServerUnaryCall<Req, Res>) => Promise<Res>): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    if (deps.isShuttingDown()) {
      callback(serviceError(ErrorCodes.SHUTTING_DOWN, 'hub is shutting down'));
      return;
    }
    let answered = false;
    const timer = setTimeout(() => {
      answered = true;
      deps.ctx.log.warn({ event: 'rpc.timeout', peer: call.getPeer() }, 'rpc took too long');
      callback(serviceError(ErrorCodes.TIMEOUT, 'the hub did not answer in time'));
    }, deps.ctx.config.limits.rpcTimeoutMs);
    rejectOversized(deps, call).then(() => fn(call)).then((res) => {
      clearTimeout(timer);
      if (!answered) callback(null, res);
    }, (e: unknown) => {
      clearTimeout(timer);
      if (!(e instanceof SepalError)) deps.ctx.log.error({ err: e, event: 'rpc.failed', peer: call.getPeer() }, 'rpc failed');
      if (!answered) callback(toServiceError(e));
    });
  };
}

function checkCsr(csr: unknown): Buffer {
  if (!Buffer.isBuffer(csr) || csr.length === 0) throw new SepalError(ErrorCodes.CSR_MALFORMED, 'csr_der is empty');
  if (csr.length > MAX_CSR_BYTES) throw new SepalError(ErrorCodes.MESSAGE_TOO_LARGE, `csr_der exceeds ${MAX_CSR_BYTES} bytes`);
  return csr;
}

export function buildHandlers(deps: HandlerDeps): grpc.UntypedServiceImplementation {
  const { ctx, streams } = deps;

  const Renew = unary<RenewRequest, RenewResponse>(deps, async (call) => {
    const id = await authenticate(deps, call);
    try {
      const creds = await renewCertificate(ctx, id, checkCsr(call.request.csrDer));
      return { credentials: toWireCredentials(creds) };
    } catch (e) {
      if (e instanceof SepalError && e.code !== ErrorCodes.INTERNAL) await recordDenial(ctx, e.code, `node:${id.nodeId}`, { rpc: 'Renew' }, id);
      throw e;
    }
  });

  const ReportStatus = unary<StatusReport, StatusAck>(deps, async (call) => {
    const id = await authenticate(deps, call);
    const r = call.request;
    const json = JSON.stringify({
      ready: r.ready === true, supernodeState: String(r.supernodeState).slice(0, 64), vpnState: String(r.vpnState).slice(0, 64),
      manifestVersion: String(r.manifestVersion), facts: r.facts ?? null, rejectedManifests: (r.rejectedManifests ?? []).slice(0, 32),
      detail: r.detailJson.length > 0 ? r.detailJson.slice(0, MAX_STATUS_JSON) : null,
    });
    await ctx.store.recordStatus(id.nodeId, json, ctx.clock());
    return { serverTimeUnixMs: String(ctx.clock()) };
  });

  const WatchManifest: grpc.handleServerStreamingCall<WatchManifestRequest, ManifestEnvelope> = (call) => {
    const c = call as ManifestCall;
    if (deps.isShuttingDown()) {
      failStream(c, serviceError(ErrorCodes.SHUTTING_DOWN, 'hub is shutting down'));
      return;
    }
    rejectOversized(deps, call).then(() => authenticate(deps, call)).then(async (id) => {
      let known: bigint;
      try {
        known = BigInt(call.request.knownVersion || '0');
      } catch {
        throw new SepalError(ErrorCodes.INVALID_ARGUMENT, 'known_version is not an integer');
      }
      const remove = streams.add(id.nodeId, c, known);
      call.on('cancelled', remove);
      call.on('close', remove);
      call.on('error', remove);
      await ctx.store.touchNode(id.nodeId, ctx.clock());
      const latest = await ctx.store.latestManifest(id.nodeId);
      if (latest !== null) streams.push(id.nodeId, { jws: latest.jws, version: String(latest.version) });
    }).catch((e: unknown) => {
      if (!(e instanceof SepalError)) ctx.log.error({ err: e, event: 'rpc.failed' }, 'WatchManifest failed');
      failStream(c, toServiceError(e));
    });
  };

  // The tls-crypt key a node's manifest names. Only for a proven, unrevoked node, only the key its
  // own latest manifest names (organisations may have keys of their own), audited without the key.
  const vpnSecretLimiter = new RateLimiter(VPN_SECRET_PER_MINUTE, 60_000, ctx.clock);
  const GetVpnSecret = unary<VpnSecretRequest, VpnSecretResponse>(deps, async (call) => {
    const id = await authenticate(deps, call);
    const ref: unknown = call.request.ref;
    const refuse = async (code: ErrorCode, message: string, detail: Record<string, unknown>): Promise<never> => {
      await recordDenial(ctx, code, `node:${id.nodeId}`, { rpc: 'GetVpnSecret', ...detail }, id);
      throw new SepalError(code, message);
    };
    if (!vpnSecretLimiter.take(id.nodeId)) return refuse(ErrorCodes.RATE_LIMITED, `at most ${VPN_SECRET_PER_MINUTE} VPN secret requests a minute`, {});
    if (typeof ref !== 'string' || !isTlsCryptKeyRef(ref)) {
      return refuse(ErrorCodes.INVALID_ARGUMENT, 'ref is not a valid tls-crypt key reference', { ref: JSON.stringify(ref).slice(0, 300) });
    }
    let text: string | null;
    try {
      text = readTlsCryptKey(ctx.paths.vpnKeysDir, ref);
    } catch (e) {
      if (e instanceof SepalError && e.code === ErrorCodes.INVALID_ARGUMENT) return refuse(e.code, e.message, { ref });
      throw e;
    }
    if (text === null) return refuse(ErrorCodes.NOT_FOUND, `the hub has no tls-crypt key "${ref}"`, { ref });
    const latest = await ctx.store.latestManifest(id.nodeId);
    if (latest === null || manifestKeyRef(latest.jws) !== ref) {
      return refuse(ErrorCodes.PERMISSION_DENIED, `the node's manifest does not name the tls-crypt key "${ref}"`, { ref });
    }
    await ctx.store.appendAudit({ event: 'vpn.secret_fetched', actor: `node:${id.nodeId}`, nodeId: id.nodeId, org: id.org, detail: { ref } }, ctx.clock());
    ctx.log.info({ event: 'vpn.secret_fetched', nodeId: id.nodeId, ref }, 'tls-crypt key handed to a node');
    return { tlsCryptKey: Buffer.from(text) };
  });

  const Enroll = unary<EnrollRequest, unknown>(deps, async (call) => {
    if (deps.enroll === undefined) throw new SepalError(ErrorCodes.ENROLLMENT_UNAVAILABLE, 'enrollment is not configured on this hub');
    return deps.enroll(call.request, call.getPeer());
  });

  return { Enroll, Renew, WatchManifest, ReportStatus, GetVpnSecret };
}
