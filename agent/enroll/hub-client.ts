// The Enroll RPC: gRPC over TLS 1.3 to the hub's grpc_address, trusting only the pinned root and
// presenting no client certificate (the node has none yet). The answer is decoded at the edge;
// a failure becomes the hub's own error code (the `sepal-error-code` trailer) or a transport code.
import * as grpc from '@grpc/grpc-js';
import tls from 'node:tls';
import type { EnrollRequest, HostFacts } from '../../proto/api.ts';
import { ERROR_CODE_METADATA_KEY, isErrorCode } from '../../proto/errors.ts';
import { channelOptions, loadAgentApi } from '../../proto/load.ts';
import { AgentError, ErrorCodes } from '../errors.ts';

export const ENROLL_DEADLINE_MS = 30_000;
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const MAX_JWS_CHARS = 1024 * 1024;
const MAX_CHAIN = 8;

export type EnrollCredential = { readonly accessToken: string } | { readonly enrollmentToken: string };

export interface EnrollCall {
  readonly csrDer: Buffer;
  readonly flowerPublicKey: string;
  readonly facts: HostFacts;
  readonly credential: EnrollCredential;
  readonly name: string;
  /** '' lets the credential decide the organisation. */
  readonly org: string;
}

export interface EnrollResult {
  readonly nodeId: string;
  readonly org: string;
  readonly certificateDer: Buffer;
  readonly chainDer: readonly Buffer[];
  readonly caBundleDer: readonly Buffer[];
  readonly notAfterUnixMs: number;
  readonly manifest: { readonly jws: string; readonly version: string } | null;
}

export type EnrollRpc = (address: string, rootPem: string, call: EnrollCall, signal?: AbortSignal) => Promise<EnrollResult>;

function bad(what: string): never {
  throw new AgentError(ErrorCodes.INTERNAL, `the hub's Enroll answer is malformed: ${what}`);
}

const NODE_ID_RE = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
const ORG_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const JWS_RE = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

function derList(v: unknown, what: string, min: number): Buffer[] {
  if (!Array.isArray(v) || v.length < min || v.length > MAX_CHAIN || !v.every((b) => Buffer.isBuffer(b) && b.length > 0)) bad(what);
  return v as Buffer[];
}

/** The EnrollResponse as proto-loader decoded it, checked field by field. */
export function decodeEnrollResponse(raw: unknown): EnrollResult {
  const r = raw as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') bad('not a message');
  const { nodeId, org, credentials, manifest } = r;
  if (typeof nodeId !== 'string' || !NODE_ID_RE.test(nodeId)) bad('node_id');
  if (typeof org !== 'string' || !ORG_RE.test(org)) bad('org');
  const c = credentials as Record<string, unknown> | null | undefined;
  if (c === null || typeof c !== 'object') bad('credentials missing');
  if (!Buffer.isBuffer(c.certificateDer) || c.certificateDer.length === 0) bad('credentials.certificate_der');
  const notAfter = Number(c.notAfterUnixMs);
  if (!Number.isSafeInteger(notAfter) || notAfter <= 0) bad('credentials.not_after_unix_ms');
  let m: EnrollResult['manifest'] = null;
  if (manifest !== null && manifest !== undefined) {
    const e = manifest as Record<string, unknown>;
    if (typeof e.jws !== 'string' || e.jws.length > MAX_JWS_CHARS || !JWS_RE.test(e.jws)) bad('manifest.jws');
    if (typeof e.version !== 'string' || !/^[1-9][0-9]{0,19}$/.test(e.version)) bad('manifest.version');
    m = { jws: e.jws, version: e.version };
  }
  return Object.freeze({
    nodeId, org,
    certificateDer: c.certificateDer,
    chainDer: derList(c.chainDer, 'credentials.chain_der', 0),
    caBundleDer: derList(c.caBundleDer, 'credentials.ca_bundle_der', 1),
    notAfterUnixMs: notAfter,
    manifest: m,
  });
}

/** A failed call as the agent reports it: the hub's code when it sent one, else the transport's. */
export function errorFromGrpc(e: grpc.ServiceError, address: string): AgentError {
  const sent = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  if (isErrorCode(sent)) return new AgentError(sent, `the hub refused enrollment: ${e.details || sent}`, { cause: e });
  switch (e.code) {
    case grpc.status.CANCELLED:
      return new AgentError(ErrorCodes.CANCELLED, 'cancelled while the hub was enrolling this host; nothing was written here, but the hub may have registered the node (check sepal-hub node list)', { cause: e });
    case grpc.status.DEADLINE_EXCEEDED: return new AgentError(ErrorCodes.TIMEOUT, `the hub at ${address} did not answer within ${ENROLL_DEADLINE_MS / 1000} s`, { cause: e });
    case grpc.status.UNAVAILABLE: return new AgentError(ErrorCodes.HUB_UNREACHABLE, `cannot reach the hub's gRPC endpoint at ${address}: ${e.details}`, { cause: e });
    default: return new AgentError(ErrorCodes.INTERNAL, `Enroll failed at ${address}: ${grpc.status[e.code] ?? e.code} ${e.details}`, { cause: e });
  }
}

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

export const callEnroll: EnrollRpc = (address, rootPem, call, signal) => {
  const { client: Ctor } = loadAgentApi();
  // Only the pinned root: a certificate from any public CA, or another hub's CA, does not verify.
  const creds = grpc.credentials.createFromSecureContext(tls.createSecureContext({ ca: rootPem, minVersion: 'TLSv1.3' }));
  const c = new Ctor(address, creds, channelOptions(MAX_MESSAGE_BYTES));
  const req: EnrollRequest = {
    csrDer: call.csrDer,
    flowerPublicKey: call.flowerPublicKey,
    facts: call.facts,
    ...call.credential,
    name: call.name,
    org: call.org,
  };
  return new Promise<EnrollResult>((resolve, reject) => {
    if (signal?.aborted === true) {
      c.close();
      reject(new AgentError(ErrorCodes.CANCELLED, 'cancelled; nothing was written'));
      return;
    }
    const fn = (c as unknown as Record<string, UnaryMethod | undefined>)['Enroll'];
    if (fn === undefined) throw new TypeError('AgentApi has no Enroll method');
    const onAbort = (): void => rpc.cancel();
    const rpc = fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + ENROLL_DEADLINE_MS }, (e, res) => {
      signal?.removeEventListener('abort', onAbort);
      c.close();
      if (e !== null) {
        reject(errorFromGrpc(e, address));
        return;
      }
      try {
        resolve(decodeEnrollResponse(res));
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)));
      }
    });
    signal?.addEventListener('abort', onAbort, { once: true });
  });
};
