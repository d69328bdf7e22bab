// The Renew RPC over gRPC mTLS: the node authenticates with its current key and certificate chain
// and trusts only the roots in its own ca.pem (never the system store). One short-lived channel
// per call: rotation happens a few times a day, and a fresh channel always presents the pair
// that is on disk now. The answer is decoded at the edge; a failure becomes the hub's own code
// (the `sepal-error-code` trailer) or a transport code.
import * as grpc from '@grpc/grpc-js';
import tls from 'node:tls';
import type { RenewRequest } from '../../proto/api.ts';
import { ERROR_CODE_METADATA_KEY, isErrorCode } from '../../proto/errors.ts';
import { channelOptions, loadAgentApi } from '../../proto/load.ts';
import { AgentError, ErrorCodes } from '../errors.ts';
import type { CurrentIdentity } from './identity.ts';
import type { RenewFn, RenewResult } from './rotate.ts';

export const RENEW_DEADLINE_MS = 30_000;
const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
const MAX_CERTS = 8;

export interface HubRenewOptions {
  /** host:port; defaults to the grpcAddress recorded in node.json at enrollment. */
  readonly address?: string;
  readonly deadlineMs?: number;
}

function bad(what: string): never {
  throw new AgentError(ErrorCodes.INTERNAL, `the hub's Renew answer is malformed: ${what}`);
}

function derList(v: unknown, what: string, min: number): Buffer[] {
  if (!Array.isArray(v) || v.length < min || v.length > MAX_CERTS || !v.every((b) => Buffer.isBuffer(b) && b.length > 0)) bad(what);
  return v as Buffer[];
}

/** The RenewResponse as proto-loader decoded it, checked field by field. */
export function decodeRenewResponse(raw: unknown): RenewResult {
  const r = raw as Record<string, unknown> | null;
  if (r === null || typeof r !== 'object') bad('not a message');
  const c = r.credentials as Record<string, unknown> | null | undefined;
  if (c === null || typeof c !== 'object') bad('credentials missing');
  if (!Buffer.isBuffer(c.certificateDer) || c.certificateDer.length === 0) bad('credentials.certificate_der');
  const notAfter = Number(c.notAfterUnixMs);
  if (!Number.isSafeInteger(notAfter) || notAfter <= 0) bad('credentials.not_after_unix_ms');
  return Object.freeze({
    certificateDer: c.certificateDer,
    chainDer: derList(c.chainDer, 'credentials.chain_der', 0),
    caBundleDer: derList(c.caBundleDer, 'credentials.ca_bundle_der', 1),
    notAfterUnixMs: notAfter,
  });
}

/** A failed Renew as the agent reports it: the hub's code when it sent one, else the transport's. */
export function renewErrorFromGrpc(e: grpc.ServiceError, address: string, deadlineMs: number): AgentError {
  const sent = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  if (isErrorCode(sent)) return new AgentError(sent, `the hub refused to renew the certificate: ${e.details || sent}`, { cause: e });
  switch (e.code) {
    case grpc.status.CANCELLED: return new AgentError(ErrorCodes.CANCELLED, 'certificate renewal cancelled', { cause: e });
    case grpc.status.DEADLINE_EXCEEDED: return new AgentError(ErrorCodes.TIMEOUT, `the hub at ${address} did not answer Renew within ${deadlineMs / 1000} s`, { cause: e });
    case grpc.status.UNAVAILABLE: return new AgentError(ErrorCodes.HUB_UNREACHABLE, `cannot reach the hub's gRPC endpoint at ${address}: ${e.details}`, { cause: e });
    default: return new AgentError(ErrorCodes.INTERNAL, `Renew failed at ${address}: ${grpc.status[e.code] ?? e.code} ${e.details}`, { cause: e });
  }
}

// One TLS context per identity, reused by every attempt with it: retries against an unreachable
// hub must not build a fresh OpenSSL context (CA store included) each time.
const credentialsCache = new WeakMap<CurrentIdentity, grpc.ChannelCredentials>();

/** mTLS credentials from an identity: its key, its leaf + intermediates, its roots only. */
export function identityCredentials(identity: CurrentIdentity): grpc.ChannelCredentials {
  let creds = credentialsCache.get(identity);
  if (creds === undefined) {
    creds = grpc.credentials.createFromSecureContext(tls.createSecureContext({
      ca: identity.caPem,
      key: identity.keyPem,
      cert: identity.certPem + identity.chainPem,
      minVersion: 'TLSv1.3',
    }));
    credentialsCache.set(identity, creds);
  }
  return creds;
}

type UnaryMethod = (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, res: unknown) => void) => grpc.ClientUnaryCall;

export function createHubRenew(opts: HubRenewOptions = {}): RenewFn {
  const deadlineMs = opts.deadlineMs ?? RENEW_DEADLINE_MS;
  if (!Number.isSafeInteger(deadlineMs) || deadlineMs <= 0) throw new TypeError('deadlineMs must be a positive integer');
  return (csrDer, identity, signal) => {
    const address = opts.address ?? identity.node.grpcAddress;
    if (signal.aborted) return Promise.reject(new AgentError(ErrorCodes.CANCELLED, 'certificate renewal cancelled'));
    const { client: Ctor } = loadAgentApi();
    // A channel of its own, subchannels included: closing it frees everything at once (the shared
    // pool would keep each call's subchannel until its periodic sweep).
    const c = new Ctor(address, identityCredentials(identity), { ...channelOptions(MAX_MESSAGE_BYTES), 'grpc.use_local_subchannel_pool': 1 });
    const fn = (c as unknown as Record<string, UnaryMethod | undefined>)['Renew'];
    if (fn === undefined) {
      c.close();
      throw new TypeError('AgentApi has no Renew method');
    }
    const req: RenewRequest = { csrDer };
    return new Promise<RenewResult>((resolve, reject) => {
      const onAbort = (): void => rpc.cancel();
      const rpc = fn.call(c, req, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, res) => {
        signal.removeEventListener('abort', onAbort);
        c.close();
        if (e !== null) {
          reject(renewErrorFromGrpc(e, address, deadlineMs));
          return;
        }
        try {
          resolve(decodeRenewResponse(res));
        } catch (err) {
          reject(err instanceof Error ? err : new Error(String(err)));
        }
      });
      signal.addEventListener('abort', onAbort, { once: true });
    });
  };
}
