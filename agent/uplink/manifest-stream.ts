// Keeps a WatchManifest stream open to the hub. Each envelope goes to the handler (verify, then
// apply); when the stream ends it is reopened after a capped, fully jittered backoff, so that
// agents reconnecting after a hub outage spread out. A revocation ends the loop for good.
import type * as grpc from '@grpc/grpc-js';
import type { ManifestEnvelope } from '../../proto/api.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import type { Logger } from '../log.ts';
import { backoffDelay, type BackoffOptions } from '../credentials/schedule.ts';
import { isRevocation, rpcError, type HubConnection } from './connection.ts';

/** A stream that lived this long counts as healthy: the next failure starts backoff afresh. */
const HEALTHY_AFTER_MS = 30_000;

export interface ManifestStreamDeps {
  readonly connection: HubConnection;
  readonly clock: Clock;
  readonly log: Logger;
  readonly backoff: BackoffOptions;
  /** The highest version applied: the hub sends only newer ones. */
  readonly knownVersion: () => number;
  readonly onManifest: (env: ManifestEnvelope) => void;
  readonly onConnected: (connected: boolean) => void;
  readonly onRevoked: () => void;
  readonly onContact: () => void;
}

export class ManifestStream {
  readonly #d: ManifestStreamDeps;
  #call: grpc.ClientReadableStream<ManifestEnvelope> | null = null;
  #timer: Timer | null = null;
  #attempt = 0;
  #openedAt = 0;
  #stopped = false;

  constructor(deps: ManifestStreamDeps) {
    this.#d = deps;
  }

  start(): void {
    this.#open();
  }

  /** Reopens at once on the connection's current channel (after a credential swap). */
  restart(): void {
    if (this.#stopped) return;
    this.#timer?.cancel();
    const old = this.#call;
    this.#call = null;
    old?.cancel();
    this.#open();
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#call?.cancel();
    this.#call = null;
  }

  #open(): void {
    if (this.#stopped) return;
    const d = this.#d;
    let call: grpc.ClientReadableStream<ManifestEnvelope>;
    try {
      const c = d.connection.client;
      const fn = c['WatchManifest'] as (req: unknown) => grpc.ClientReadableStream<ManifestEnvelope>;
      call = fn.call(c, { knownVersion: String(d.knownVersion()) });
    } catch (e) {
      d.log.warn({ err: e, event: 'hub.stream_open_failed' }, 'could not open the manifest stream');
      this.#retry();
      return;
    }
    this.#call = call;
    this.#openedAt = d.clock.now();
    call.on('metadata', () => {
      d.onConnected(true);
      d.onContact();
    });
    call.on('data', (env: ManifestEnvelope) => {
      d.onConnected(true);
      d.onContact();
      d.onManifest(env);
    });
    call.on('error', (e: grpc.ServiceError) => {
      if (this.#call !== call) return; // a stream we cancelled on purpose
      this.#call = null;
      d.onConnected(false);
      const err = rpcError(e, d.connection.address);
      if (isRevocation(err.code)) {
        this.#stopped = true;
        d.onRevoked();
        return;
      }
      d.log.warn({ event: 'hub.stream_ended', code: err.code }, 'manifest stream ended; reconnecting');
      this.#retry();
    });
    call.on('end', () => {
      if (this.#call !== call) return;
      this.#call = null;
      d.onConnected(false);
      this.#retry();
    });
  }

  #retry(): void {
    if (this.#stopped) return;
    const d = this.#d;
    if (d.clock.now() - this.#openedAt >= HEALTHY_AFTER_MS) this.#attempt = 0;
    const delay = backoffDelay(this.#attempt++, d.backoff, d.clock.random());
    this.#timer = d.clock.setTimeout(() => {
      this.#timer = null;
      this.#open();
    }, delay);
  }
}
