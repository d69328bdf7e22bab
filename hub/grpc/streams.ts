// Open WatchManifest streams by node. A published manifest is written to every stream of its
// node at once; a revocation ends them with a coded error.
import * as grpc from '@grpc/grpc-js';
import type { ManifestEnvelope } from '../../proto/api.ts';
import { ERROR_CODE_METADATA_KEY, type ErrorCode } from '../../proto/errors.ts';
import type { HubMetrics } from '../metrics.ts';

export type ManifestCall = grpc.ServerWritableStream<unknown, ManifestEnvelope>;

interface Entry {
  readonly call: ManifestCall;
  sentVersion: bigint;
}

export class ManifestStreams {
  readonly #byNode = new Map<string, Set<Entry>>();
  readonly #metrics: HubMetrics;
  #count = 0;

  constructor(metrics: HubMetrics) {
    this.#metrics = metrics;
  }

  get size(): number {
    return this.#count;
  }

  add(nodeId: string, call: ManifestCall, knownVersion: bigint): () => void {
    const entry: Entry = { call, sentVersion: knownVersion };
    let set = this.#byNode.get(nodeId);
    if (set === undefined) this.#byNode.set(nodeId, (set = new Set()));
    set.add(entry);
    this.#count++;
    this.#metrics.openStreams.set(this.#count);
    let removed = false;
    return () => {
      if (removed) return;
      removed = true;
      set.delete(entry);
      if (set.size === 0) this.#byNode.delete(nodeId);
      this.#count--;
      this.#metrics.openStreams.set(this.#count);
    };
  }

  has(nodeId: string): boolean {
    return this.#byNode.has(nodeId);
  }

  /** Sends the envelope to the node's streams that have not seen this version yet. */
  push(nodeId: string, env: ManifestEnvelope): number {
    const set = this.#byNode.get(nodeId);
    if (set === undefined) return 0;
    const v = BigInt(env.version);
    let n = 0;
    for (const e of set) {
      if (v <= e.sentVersion) continue;
      e.sentVersion = v;
      e.call.write(env);
      n++;
    }
    return n;
  }

  /** Ends every stream of the node with the given status and code. */
  close(nodeId: string, status: grpc.status, code: ErrorCode, message: string): void {
    const set = this.#byNode.get(nodeId);
    if (set === undefined) return;
    for (const e of [...set]) endWithError(e.call, status, code, message);
  }

  closeAll(status: grpc.status, code: ErrorCode, message: string): void {
    for (const set of [...this.#byNode.values()]) for (const e of [...set]) endWithError(e.call, status, code, message);
  }
}

export function endWithError(call: ManifestCall, status: grpc.status, code: ErrorCode, message: string): void {
  const md = new grpc.Metadata();
  md.set(ERROR_CODE_METADATA_KEY, code);
  failStream(call, Object.assign(new Error(message), { code: status, details: message, metadata: md }));
}

/** Ends a server stream with an error status. (grpc-js sends the status on 'error'; destroy()
 *  would drop the stream without one and leave the client waiting.) */
export function failStream(call: ManifestCall, err: grpc.ServiceError): void {
  if (call.destroyed || call.writableEnded) return;
  call.emit('error', err);
}
