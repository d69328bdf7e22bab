// A client for the Flower SuperLink's Control API (proto/flower/control.proto): register a
// SuperNode public key, unregister a node, list nodes. TLS with the configured CA (the Control API
// has a server certificate and asks for no client certificate), a deadline on every call, and
// gRPC statuses turned into coded errors that say whether trying again can help:
//
//   UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, INTERNAL, UNKNOWN, CANCELLED
//       -> SUPERLINK_UNAVAILABLE, retryable (unreachable, TLS refused, overloaded, crashed handler)
//   FAILED_PRECONDITION -> SUPERLINK_REJECTED, not retryable: the key is invalid or already in use
//       (Flower says which only in its message text, which we never parse; see the registrar)
//   NOT_FOUND on UnregisterNode -> success: the node is already gone
//   anything else (UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED, ...) -> SUPERLINK_REJECTED,
//       retryable: the hub's access to the SuperLink is wrong, not the key; an operator fixes it
//
// Node ids are uint64 and stay decimal strings from the wire (longs: String) to the store.
import * as grpc from '@grpc/grpc-js';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import tls from 'node:tls';
import { loadControlApi, type ListNodesResponse, type RegisterNodeResponse } from '../../proto/flower/control.ts';
import { ErrorCodes, SepalError, type ErrorCode } from '../errors.ts';
import { pemToDerList } from '../ca/pem.ts';

const UINT64_MAX = 0xffff_ffff_ffff_ffffn;
/** ListNodes answers with every node the SuperLink ever had (about 300 bytes each). */
const MAX_RECEIVE_BYTES = 64 * 1024 * 1024;
/** The TLS server name (SNI) sent when the address is an IP literal, which SNI cannot carry. */
const IP_SNI_PLACEHOLDER = 'superlink-by-ip.invalid';

/** A node as the SuperLink lists it. */
export interface SuperlinkNode {
  /** uint64, decimal. */
  readonly flowerNodeId: string;
  /** 'registered' | 'online' | 'offline' | 'unregistered' (Flower 1.23). */
  readonly status: string;
  /** As registered: PEM SubjectPublicKeyInfo. */
  readonly publicKey: Buffer;
}

/** What the registrar needs from the SuperLink; every call rejects with a SuperlinkError. */
export interface ControlApi {
  /** Registers a PEM SPKI public key; resolves with Flower's node id (uint64, decimal). */
  register(publicKeyPem: Buffer, signal?: AbortSignal): Promise<string>;
  /** 'not-found' when the SuperLink does not have the node (any more): nothing left to do. */
  unregister(flowerNodeId: string, signal?: AbortSignal): Promise<'unregistered' | 'not-found'>;
  listNodes(signal?: AbortSignal): Promise<SuperlinkNode[]>;
  close(): void;
}

export class SuperlinkError extends SepalError {
  /** Whether the same call may succeed later (false: the SuperLink refused this request for good). */
  readonly retryable: boolean;
  /** The gRPC status the SuperLink (or the transport) answered with, null for a bad answer. */
  readonly grpcStatus: grpc.status | null;

  constructor(code: ErrorCode, message: string, opts: { retryable: boolean; grpcStatus: grpc.status | null; cause?: unknown }) {
    super(code, message, opts.cause === undefined ? {} : { cause: opts.cause });
    this.name = 'SuperlinkError';
    this.retryable = opts.retryable;
    this.grpcStatus = opts.grpcStatus;
  }
}

export function isSuperlinkError(e: unknown): e is SuperlinkError {
  return e instanceof SuperlinkError;
}

const RETRYABLE = new Set<grpc.status>([
  grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED, grpc.status.ABORTED,
  grpc.status.INTERNAL, grpc.status.UNKNOWN, grpc.status.CANCELLED,
]);

function fromStatus(method: string, address: string, e: grpc.ServiceError): SuperlinkError {
  const what = `SuperLink ${method} at ${address}: ${grpc.status[e.code] ?? e.code}${e.details ? ` (${e.details})` : ''}`;
  if (RETRYABLE.has(e.code)) return new SuperlinkError(ErrorCodes.SUPERLINK_UNAVAILABLE, what, { retryable: true, grpcStatus: e.code, cause: e });
  return new SuperlinkError(ErrorCodes.SUPERLINK_REJECTED, what, { retryable: e.code !== grpc.status.FAILED_PRECONDITION, grpcStatus: e.code, cause: e });
}

/** A uint64 node id from the wire, or null when it is not one (or is 0, Flower's "no node"). */
export function parseFlowerNodeId(v: unknown): string | null {
  if (typeof v !== 'string' || !/^[1-9][0-9]{0,19}$/.test(v)) return null;
  return BigInt(v) <= UINT64_MAX ? v : null;
}

/** Reads the CA bundle the SuperLink's certificate must chain to (CONFIG_INVALID otherwise). */
export function readSuperlinkCa(caFile: string, dataDir: string): Buffer {
  const file = path.resolve(dataDir, caFile);
  let pem: string;
  try {
    pem = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new SepalError(ErrorCodes.CONFIG_INVALID, `superlink.caFile: cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`, { cause: e, detail: { path: 'superlink.caFile' } });
  }
  let certs: Buffer[] = [];
  try {
    certs = pemToDerList(pem, 'CERTIFICATE');
  } catch {
    // reported below
  }
  if (certs.length === 0) throw new SepalError(ErrorCodes.CONFIG_INVALID, `superlink.caFile: ${file} holds no PEM certificate`, { detail: { path: 'superlink.caFile' } });
  return Buffer.from(pem);
}

export interface ControlClientOptions {
  /** HOST:PORT of the Control API; HOST must be a name (or IP) in the SuperLink's certificate. */
  readonly address: string;
  readonly caPem: Buffer;
  readonly callTimeoutMs: number;
}

function hostOf(address: string): string {
  const host = address.slice(0, address.lastIndexOf(':'));
  return host.startsWith('[') && host.endsWith(']') ? host.slice(1, -1) : host;
}

type Unary<Req, Res> = (req: Req, md: grpc.Metadata, opts: grpc.CallOptions, cb: (e: grpc.ServiceError | null, r?: Res) => void) => grpc.ClientUnaryCall;

export function createControlClient(opts: ControlClientOptions): ControlApi {
  const { client: Ctor } = loadControlApi();
  const channelOptions: grpc.ChannelOptions = {
    'grpc.max_receive_message_length': MAX_RECEIVE_BYTES,
    // One hub, one SuperLink: reconnect briskly after an outage, without storming it.
    'grpc.initial_reconnect_backoff_ms': 1000,
    'grpc.max_reconnect_backoff_ms': 30_000,
  };
  let credentials = grpc.credentials.createSsl(opts.caPem);
  const host = hostOf(opts.address);
  if (net.isIP(host) !== 0) {
    // grpc-js sends the target host as the TLS server name, and Node refuses an IP there (RFC
    // 6066 has no IP names). Send a placeholder name instead and still check the certificate
    // against the IP address (it must be in its subjectAltName).
    channelOptions['grpc.ssl_target_name_override'] = IP_SNI_PLACEHOLDER;
    credentials = grpc.credentials.createSsl(opts.caPem, null, null, { checkServerIdentity: (_name, cert) => tls.checkServerIdentity(host, cert) });
  }
  const client = new Ctor(opts.address, credentials, channelOptions);

  function call<Req, Res>(method: string, req: Req, signal: AbortSignal | undefined): Promise<Res> {
    return new Promise<Res>((resolve, reject) => {
      if (signal?.aborted === true) {
        reject(new SuperlinkError(ErrorCodes.SUPERLINK_UNAVAILABLE, `SuperLink ${method}: cancelled`, { retryable: true, grpcStatus: grpc.status.CANCELLED }));
        return;
      }
      const fn = (client as unknown as Record<string, Unary<Req, Res>>)[method];
      if (fn === undefined) throw new TypeError(`no method ${method}`);
      const onAbort = (): void => { c.cancel(); };
      const c = fn.call(client, req, new grpc.Metadata(), { deadline: Date.now() + opts.callTimeoutMs }, (e, r) => {
        signal?.removeEventListener('abort', onAbort);
        if (e !== null) reject(fromStatus(method, opts.address, e));
        else if (r === undefined) reject(new SuperlinkError(ErrorCodes.SUPERLINK_UNAVAILABLE, `SuperLink ${method}: empty answer`, { retryable: true, grpcStatus: null }));
        else resolve(r);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  return {
    async register(publicKeyPem, signal) {
      const r = await call<{ publicKey: Buffer }, RegisterNodeResponse>('RegisterNode', { publicKey: publicKeyPem }, signal);
      const id = parseFlowerNodeId(r.nodeId);
      // Flower answers 0 when it could not create the node (a random id collision): nothing was
      // stored, and trying again draws a new id.
      if (id === null) {
        throw new SuperlinkError(ErrorCodes.SUPERLINK_UNAVAILABLE, `SuperLink RegisterNode at ${opts.address}: answered node id ${JSON.stringify(r.nodeId)}, not a node`, { retryable: true, grpcStatus: null });
      }
      return id;
    },
    async unregister(flowerNodeId, signal) {
      if (parseFlowerNodeId(flowerNodeId) === null) throw new TypeError(`not a Flower node id: ${flowerNodeId}`);
      try {
        await call('UnregisterNode', { nodeId: flowerNodeId }, signal);
        return 'unregistered';
      } catch (e) {
        if (isSuperlinkError(e) && e.grpcStatus === grpc.status.NOT_FOUND) return 'not-found';
        throw e;
      }
    },
    async listNodes(signal) {
      const r = await call<Record<string, never>, ListNodesResponse>('ListNodes', {}, signal);
      const out: SuperlinkNode[] = [];
      for (const n of r.nodesInfo) {
        const id = parseFlowerNodeId(n.nodeId);
        if (id !== null) out.push({ flowerNodeId: id, status: n.status, publicKey: n.publicKey });
      }
      return out;
    },
    close() {
      client.close();
    },
  };
}
