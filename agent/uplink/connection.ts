// The daemon's mTLS connection to the hub. The credentials (key + certificate chain + trusted
// roots) can be swapped after a rotation without restarting anything: new calls go over a new
// channel, the old channel is closed once its calls are done.
import * as grpc from '@grpc/grpc-js';
import { ERROR_CODE_METADATA_KEY, isErrorCode } from '../../proto/errors.ts';
import { channelOptions, loadAgentApi } from '../../proto/load.ts';
import { AgentError, ErrorCodes, type ErrorCode } from '../errors.ts';

export interface TlsIdentity {
  readonly keyPem: string;
  /** Leaf followed by intermediates. */
  readonly certChainPem: string;
  /** Roots the hub's server certificate must chain to. */
  readonly rootsPem: string;
}

const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export type AgentApiClient = grpc.Client & Record<string, (...args: unknown[]) => unknown>;

export class HubConnection {
  readonly #address: string;
  #client: AgentApiClient;
  #closed = false;

  constructor(address: string, identity: TlsIdentity) {
    this.#address = address;
    this.#client = this.#make(identity);
  }

  get address(): string {
    return this.#address;
  }

  #make(identity: TlsIdentity): AgentApiClient {
    const { client: Ctor } = loadAgentApi();
    const creds = grpc.credentials.createSsl(Buffer.from(identity.rootsPem), Buffer.from(identity.keyPem), Buffer.from(identity.certChainPem));
    return new Ctor(this.#address, creds, channelOptions(MAX_MESSAGE_BYTES)) as unknown as AgentApiClient;
  }

  /** The client for new calls. */
  get client(): AgentApiClient {
    if (this.#closed) throw new AgentError(ErrorCodes.SHUTTING_DOWN, 'the hub connection is closed');
    return this.#client;
  }

  /** New credentials (after a rotation): new calls use them; open calls finish on the old channel. */
  swap(identity: TlsIdentity): void {
    const old = this.#client;
    this.#client = this.#make(identity);
    old.close();
  }

  close(): void {
    this.#closed = true;
    this.#client.close();
  }

  /** A unary call with a deadline; a refusal becomes an AgentError with the hub's code. */
  unary<Res>(method: string, request: unknown, deadlineMs: number): Promise<Res> {
    const c = this.client;
    const fn = c[method] as (req: unknown, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r: Res) => void) => void;
    return new Promise((resolve, reject) => {
      fn.call(c, request, new grpc.Metadata(), { deadline: Date.now() + deadlineMs }, (e, r) => (e === null ? resolve(r) : reject(rpcError(e, this.#address))));
    });
  }
}

/** The hub's code from the trailer, or one for the transport failure. */
export function rpcError(e: grpc.ServiceError, address: string): AgentError {
  const raw = e.metadata?.get(ERROR_CODE_METADATA_KEY)[0];
  const code: ErrorCode = typeof raw === 'string' && isErrorCode(raw)
    ? raw
    : e.code === grpc.status.UNAVAILABLE || e.code === grpc.status.DEADLINE_EXCEEDED ? ErrorCodes.HUB_UNREACHABLE : ErrorCodes.INTERNAL;
  return new AgentError(code, `hub ${address}: ${e.details || grpc.status[e.code]}`, { detail: { grpcStatus: e.code }, cause: e });
}

/** Codes that mean this node is out of the federation for good. */
export function isRevocation(code: ErrorCode): boolean {
  return code === ErrorCodes.NODE_REVOKED || code === ErrorCodes.CLIENT_CERT_REVOKED;
}
