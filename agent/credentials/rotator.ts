// The certificate rotator: one state machine that keeps the node's client certificate fresh.
// It renews at renewAt() (about two thirds of the lifetime, jittered), retries failures with
// capped full-jitter backoff, reports 'expired' once the certificate is past notAfter (and keeps
// trying), and stops for good on a revocation. At most one rotation runs at a time; every timer
// is the injected clock's, so tests drive it with a FakeClock and no sleeps.
//
// Invariants: the identity on disk changes only through rotateOnce (complete new dir + renames);
// `identity` is always the pair on disk; onRotated runs after the new pair is durable.
import type { ErrorCode } from '../../proto/errors.ts';
import { AgentError, ErrorCodes, isAgentError } from '../errors.ts';
import type { KeyPair } from '../enroll/keys.ts';
import { recoverState, type StatePaths, type StoreFs } from '../enroll/store.ts';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import { loadIdentity, type CurrentIdentity } from './identity.ts';
import { isSwapFailure, rotateOnce, type RenewFn } from './rotate.ts';
import { DEFAULT_BACKOFF, backoffDelay, renewAt, type BackoffOptions } from './schedule.ts';

export type RotationState = 'idle' | 'scheduled' | 'renewing' | 'backoff' | 'expired' | 'revoked' | 'stopped';

/** How one renewal attempt ended, for metrics:
 *  'success' — a new pair is on disk;
 *  'refused' — a definite no: the hub refused with its own code (revoked, unknown, expired
 *              certificate, bad CSR...), or the agent refused the certificate the hub returned;
 *  'failure' — no usable answer: hub unreachable, timeout, hub busy/internal, local I/O error. */
export type RenewalResult = 'success' | 'failure' | 'refused';

/** The hub's codes that mean this node is out of the federation: renewal stops for good. */
export const REVOKED_CODES: ReadonlySet<ErrorCode> = new Set([ErrorCodes.NODE_REVOKED, ErrorCodes.CLIENT_CERT_REVOKED]);

/** Codes that say nothing about the request itself: the call may well succeed later. */
const TRANSIENT_CODES: ReadonlySet<ErrorCode> = new Set([
  ErrorCodes.HUB_UNREACHABLE, ErrorCodes.TIMEOUT, ErrorCodes.CANCELLED, ErrorCodes.SHUTTING_DOWN,
  ErrorCodes.RATE_LIMITED, ErrorCodes.INTERNAL, ErrorCodes.STATE_INVALID,
]);

/** After a success the next renewal is never sooner than this (a hub or clock that hands out
 *  certificates already due for renewal must not turn the rotator into a tight loop). */
export const DEFAULT_MIN_RENEW_INTERVAL_MS = 30_000;

// Node timers cannot be longer than this; longer waits are re-armed.
const MAX_TIMER_MS = 2 ** 31 - 1;

export interface RotatorDeps {
  readonly clock: Clock;
  readonly paths: StatePaths;
  readonly renew: RenewFn;
  /** The new pair is on disk: swap the hub connection (and whatever else presents it). */
  readonly onRotated: (identity: CurrentIdentity) => void;
  readonly onState: (state: RotationState) => void;
  readonly onRenewal?: (result: RenewalResult) => void;
  readonly log: Logger;
  readonly backoff?: BackoffOptions;
  readonly minRenewIntervalMs?: number;
  /** Injected by tests to fail the identity swap at a chosen step. */
  readonly fs?: StoreFs;
  readonly generateKey?: () => KeyPair;
}

export interface RotationStatus {
  readonly state: RotationState;
  readonly nodeId: string | null;
  readonly serial: string | null;
  /** Unix ms; null before start(). */
  readonly notAfter: number | null;
  /** When the next attempt is due (Unix ms), null when none is planned. */
  readonly nextAttemptAt: number | null;
  /** Failed attempts since the last success. */
  readonly consecutiveFailures: number;
  readonly lastErrorCode: ErrorCode | null;
}

function asAgentError(e: unknown): AgentError {
  if (e instanceof AgentError) return e;
  return new AgentError(ErrorCodes.INTERNAL, e instanceof Error ? e.message : String(e), { cause: e });
}

export class CertificateRotator {
  readonly #d: RotatorDeps;
  readonly #backoff: BackoffOptions;
  readonly #minInterval: number;
  #state: RotationState = 'idle';
  #identity: CurrentIdentity | null = null;
  #failures = 0;
  #lastErrorCode: ErrorCode | null = null;
  #timer: Timer | null = null;
  #nextAt: number | null = null;
  #expiryTimer: Timer | null = null;
  #inFlight: Promise<void> | null = null;
  #abort: AbortController | null = null;

  constructor(deps: RotatorDeps) {
    const backoff = deps.backoff ?? DEFAULT_BACKOFF;
    backoffDelay(0, backoff, 0); // validates the options once, here
    const minInterval = deps.minRenewIntervalMs ?? DEFAULT_MIN_RENEW_INTERVAL_MS;
    if (!Number.isFinite(minInterval) || minInterval < 0) throw new TypeError('minRenewIntervalMs must be a non-negative number');
    this.#d = deps;
    this.#backoff = backoff;
    this.#minInterval = minInterval;
  }

  get state(): RotationState {
    return this.#state;
  }

  /** The pair on disk, or null before start(). */
  get identity(): CurrentIdentity | null {
    return this.#identity;
  }

  status(): RotationStatus {
    const id = this.#identity;
    return {
      state: this.#state,
      nodeId: id?.node.nodeId ?? null,
      serial: id?.serial ?? null,
      notAfter: id?.notAfter ?? null,
      nextAttemptAt: this.#nextAt,
      consecutiveFailures: this.#failures,
      lastErrorCode: this.#lastErrorCode,
    };
  }

  /**
   * Recovers the state dir, loads and checks the identity, and plans the first renewal. The caller
   * holds the state lock (store.ts lockState) for as long as the rotator runs. Throws
   * STATE_INVALID when there is no usable identity.
   */
  start(): CurrentIdentity {
    if (this.#state !== 'idle') throw new TypeError(`start() in state ${this.#state}`);
    const recovery = recoverState(this.#d.paths, this.#d.fs);
    if (recovery.action !== 'none' || recovery.removed.length > 0) {
      this.#d.log.warn({ event: 'state.recovered', ...recovery }, 'recovered the state dir after an interrupted run');
    }
    const id = loadIdentity(this.#d.paths);
    this.#identity = id;
    this.#d.log.info({ event: 'cert.loaded', nodeId: id.node.nodeId, serial: id.serial, notAfter: new Date(id.notAfter).toISOString() }, 'client certificate loaded');
    this.#armExpiry();
    this.#planRenewal(false);
    return id;
  }

  /** Renews now (SIGHUP, tests), unless a renewal is already running, in which case this is that
   *  one. Resolves when the attempt has ended, whatever its outcome; never rejects. Does nothing
   *  once revoked or stopped. */
  renewNow(): Promise<void> {
    if (this.#state === 'idle') throw new TypeError('renewNow() before start()');
    return this.#attempt();
  }

  /** Resolves when no attempt is running (after stop(): when the cancelled one has unwound). */
  whenIdle(): Promise<void> {
    return this.#inFlight ?? Promise.resolve();
  }

  /** Cancels every timer and a running Renew call. The files stay as they are. */
  stop(): void {
    this.#cancelTimer();
    this.#expiryTimer?.cancel();
    this.#expiryTimer = null;
    this.#abort?.abort();
    this.#setState('stopped');
  }

  // ---- internals ----

  #setState(next: RotationState): void {
    const prev = this.#state;
    if (prev === next) return;
    this.#state = next;
    this.#d.log.info({ event: 'rotation.state', from: prev, to: next, nodeId: this.#identity?.node.nodeId }, `certificate rotation: ${prev} -> ${next}`);
    this.#call('onState', () => this.#d.onState(next));
  }

  /** Callbacks belong to the daemon; one that throws must not wedge the state machine. */
  #call(what: string, fn: () => void): void {
    try {
      fn();
    } catch (e) {
      this.#d.log.error({ event: 'rotation.callback_failed', callback: what, err: e }, `${what} threw`);
    }
  }

  #final(): boolean {
    return this.#state === 'stopped' || this.#state === 'revoked';
  }

  #expired(): boolean {
    return this.#identity !== null && this.#d.clock.now() >= this.#identity.notAfter;
  }

  #cancelTimer(): void {
    this.#timer?.cancel();
    this.#timer = null;
    this.#nextAt = null;
  }

  /** Runs an attempt at `at` (Unix ms), re-arming past the platform's longest timer. */
  #attemptAt(at: number): void {
    this.#cancelTimer();
    this.#nextAt = at;
    const arm = (): void => {
      const wait = at - this.#d.clock.now();
      this.#timer = this.#d.clock.setTimeout(() => {
        this.#timer = null;
        if (this.#d.clock.now() < at) {
          arm();
          return;
        }
        this.#nextAt = null;
        void this.#attempt();
      }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
    };
    arm();
  }

  #armExpiry(): void {
    this.#expiryTimer?.cancel();
    const id = this.#identity;
    if (id === null) return;
    const arm = (): void => {
      const wait = id.notAfter - this.#d.clock.now();
      this.#expiryTimer = this.#d.clock.setTimeout(() => {
        this.#expiryTimer = null;
        if (this.#d.clock.now() < id.notAfter) {
          arm();
          return;
        }
        if (this.#final() || this.#identity !== id) return;
        this.#d.log.error({ event: 'cert.expired', nodeId: id.node.nodeId, serial: id.serial, notAfter: new Date(id.notAfter).toISOString() },
          'the client certificate has EXPIRED: the hub will not talk to this node until a renewal succeeds; still retrying');
        this.#setState('expired');
      }, Math.min(Math.max(0, wait), MAX_TIMER_MS));
    };
    arm();
  }

  /** Plans the next renewal of the current certificate. */
  #planRenewal(afterSuccess: boolean): void {
    const id = this.#identity;
    if (id === null || this.#final()) return;
    const now = this.#d.clock.now();
    if (this.#expired()) {
      this.#setState('expired');
      this.#attemptAt(now + backoffDelay(0, this.#backoff, this.#d.clock.random()));
      return;
    }
    let at = renewAt(id.notBefore, id.notAfter, this.#d.clock.random());
    if (afterSuccess) {
      at = Math.max(at, now + this.#minInterval);
    } else if (at <= now) {
      // Already due at start-up: go soon, but not all agents of a restarted fleet at once.
      at = now + backoffDelay(0, this.#backoff, this.#d.clock.random());
    }
    this.#setState('scheduled');
    this.#attemptAt(at);
    this.#d.log.info({ event: 'cert.renewal_scheduled', nodeId: id.node.nodeId, at: new Date(at).toISOString() }, 'certificate renewal scheduled');
  }

  #attempt(): Promise<void> {
    if (this.#inFlight !== null) return this.#inFlight;
    if (this.#final() || this.#identity === null) return Promise.resolve();
    this.#cancelTimer();
    const p = this.#run(this.#identity).finally(() => {
      this.#inFlight = null;
    });
    this.#inFlight = p;
    return p;
  }

  async #run(current: CurrentIdentity): Promise<void> {
    // Past expiry the state stays 'expired' through the attempt: readiness depends on it.
    if (!this.#expired()) this.#setState('renewing');
    const abort = new AbortController();
    this.#abort = abort;
    try {
      const { identity, rootsChanged } = await rotateOnce(current, {
        paths: this.#d.paths,
        renew: this.#d.renew,
        now: () => this.#d.clock.now(),
        signal: abort.signal,
        ...(this.#d.fs === undefined ? {} : { fs: this.#d.fs }),
        ...(this.#d.generateKey === undefined ? {} : { generateKey: this.#d.generateKey }),
      });
      this.#succeeded(current, identity, rootsChanged);
    } catch (e) {
      if (isSwapFailure(e) && this.#adoptFromDisk(current)) return;
      this.#failed(asAgentError(e));
    } finally {
      this.#abort = null;
    }
  }

  /** After a swap that failed part-way (EIO, ENOSPC: the process lives on), recovery decides
   *  which identity is on disk; if the new one made it, it is adopted as a success. */
  #adoptFromDisk(previous: CurrentIdentity): boolean {
    try {
      const recovery = recoverState(this.#d.paths, this.#d.fs);
      this.#d.log.warn({ event: 'state.recovered', ...recovery }, 'recovered the state dir after a failed identity swap');
      const onDisk = loadIdentity(this.#d.paths);
      if (onDisk.serial === previous.serial) return false;
      this.#succeeded(previous, onDisk, onDisk.caPem !== previous.caPem);
      return true;
    } catch (e) {
      this.#d.log.error({ event: 'state.recovery_failed', err: e }, 'cannot recover the state dir after a failed identity swap');
      return false;
    }
  }

  #succeeded(previous: CurrentIdentity, identity: CurrentIdentity, rootsChanged: boolean): void {
    this.#identity = identity;
    this.#failures = 0;
    this.#lastErrorCode = null;
    this.#d.log.info({
      event: 'cert.renewed', nodeId: identity.node.nodeId, serial: identity.serial, previous: previous.serial,
      notAfter: new Date(identity.notAfter).toISOString(), rootsChanged,
    }, 'client certificate renewed');
    this.#call('onRenewal', () => this.#d.onRenewal?.('success'));
    // Stopped while the swap finished: the files are new, but nobody is listening any more.
    if (this.#final()) return;
    this.#armExpiry();
    this.#call('onRotated', () => this.#d.onRotated(identity));
    this.#planRenewal(true);
  }

  #failed(err: AgentError): void {
    if (this.#state === 'stopped') return;
    const id = this.#identity;
    this.#lastErrorCode = err.code;
    if (REVOKED_CODES.has(err.code)) {
      this.#cancelTimer();
      this.#expiryTimer?.cancel();
      this.#expiryTimer = null;
      this.#d.log.error({ event: 'node.revoked', nodeId: id?.node.nodeId, serial: id?.serial, code: err.code },
        `THE HUB SAYS THIS NODE IS REVOKED (${err.code}): certificate renewal has stopped; the identity files are kept for inspection; ` +
        'this host takes no further part in the federation until it is enrolled again');
      this.#call('onRenewal', () => this.#d.onRenewal?.('refused'));
      this.#setState('revoked');
      return;
    }
    if (err.code === ErrorCodes.CLIENT_CERT_EXPIRED && this.#expired()) {
      // The hub itself says the certificate is past its life: no retry can change that (retrying
      // would only fill the hub's denials). Stop and say what to do.
      this.#cancelTimer();
      this.#d.log.error({ event: 'cert.expired_refused', nodeId: id?.node.nodeId, serial: id?.serial },
        'THE CERTIFICATE HAS EXPIRED and the hub refuses it: renewal has stopped; enroll again (sepal-agent enroll --force)');
      this.#call('onRenewal', () => this.#d.onRenewal?.('refused'));
      this.#setState('expired');
      return;
    }
    const result: RenewalResult = isAgentError(err) && TRANSIENT_CODES.has(err.code) ? 'failure' : 'refused';
    const delay = backoffDelay(this.#failures, this.#backoff, this.#d.clock.random());
    this.#failures++;
    const expired = this.#expired();
    this.#d.log[expired ? 'error' : 'warn']({
      event: 'cert.renew_failed', nodeId: id?.node.nodeId, code: err.code, result, attempt: this.#failures, retryInMs: delay, expired, err: err.message,
    }, `certificate renewal failed (${err.code}); retrying in ${Math.ceil(delay / 1000)} s`);
    this.#call('onRenewal', () => this.#d.onRenewal?.(result));
    this.#setState(expired ? 'expired' : 'backoff');
    this.#attemptAt(this.#d.clock.now() + delay);
  }
}
