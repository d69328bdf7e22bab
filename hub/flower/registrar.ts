// The registrar: keeps the SuperLink's Flower nodes in step with the store. It registers the
// Flower key of each pending node and unregisters the Flower node of each revoked one, driven only
// by store state (FlowerState in hub/store/store.ts), so work queued by another process (a CLI
// revocation) is done here too: `serve` nudges it from the change feed and it also wakes at the
// earliest due retry or every scanIntervalMs.
//
// Invariants: one pass at a time (passes are chained), so a node is never handled twice at once;
// every failure is recorded on the node (retry with capped exponential backoff and full jitter,
// or failed when the SuperLink refuses the key for good), logged with its code and counted.
// Crash safety: the SuperLink's answer and our store write are not atomic. If the answer was lost
// (the hub died, the call timed out after the SuperLink acted), the next RegisterNode for the key
// is refused as "already in use"; the registrar then finds the key with ListNodes and records
// that node id. A node revoked before its id was recorded is looked up the same way.
import { ErrorCodes, isSepalError } from '../errors.ts';
import { flowerKeySpkiPem, spkiDer } from '../enroll/flower-key.ts';
import type { Logger } from '../log.ts';
import type { HubMetrics } from '../metrics.ts';
import type { FlowerWork, Store } from '../store/store.ts';
import { backoffDelay } from './backoff.ts';
import { isSuperlinkError, type ControlApi, type SuperlinkNode } from './control-client.ts';

const ACTOR = 'hub:registrar';
/** Never re-arm the timer sooner than this (full jitter can draw a wait near 0). */
const MIN_WAKE_MS = 100;

export interface RegistrarOptions {
  readonly store: Store;
  readonly control: ControlApi;
  readonly log: Logger;
  readonly metrics: HubMetrics;
  readonly clock: () => number;
  /** [0, 1), for the jitter. */
  readonly random?: () => number;
  readonly retry: { readonly baseMs: number; readonly capMs: number };
  /** Longest time between two looks at the store. */
  readonly scanIntervalMs: number;
  /** Due items taken per pass, and how many are handled at once. */
  readonly batchSize?: number;
  readonly concurrency?: number;
  /** Close the control client once stopped (it was made for this registrar). */
  readonly ownsControl?: boolean;
}

export interface PassSummary {
  /** Due items handled in this pass. */
  readonly handled: number;
  /** The batch was full: more work may be due right away. */
  readonly more: boolean;
}

type RegistrarState = 'idle' | 'running' | 'stopping' | 'stopped';

interface Failure { readonly code: string; readonly message: string }

function failureOf(e: unknown): Failure {
  if (isSepalError(e)) return { code: e.code, message: e.message };
  return { code: ErrorCodes.INTERNAL, message: e instanceof Error ? e.message : String(e) };
}

/** The live (not unregistered) SuperLink nodes holding this key, compared as DER SPKI. */
function nodesWithKey(nodes: readonly SuperlinkNode[], pem: Buffer): { live: SuperlinkNode[]; gone: SuperlinkNode[] } {
  const want = spkiDer(pem);
  const same = want === null ? [] : nodes.filter((n) => spkiDer(n.publicKey)?.equals(want) === true);
  return { live: same.filter((n) => n.status !== 'unregistered'), gone: same.filter((n) => n.status === 'unregistered') };
}

export class FlowerRegistrar {
  readonly #o: RegistrarOptions;
  readonly #random: () => number;
  readonly #abort = new AbortController();
  #state: RegistrarState = 'idle';
  /** The last pass, chained: runOnce never overlaps another pass. */
  #tail: Promise<unknown> = Promise.resolve();
  #loop: Promise<void> | null = null;
  #again = false;
  #timer: NodeJS.Timeout | null = null;
  #stopped: Promise<void> | null = null;
  /** The last pass could not record some results (the store failed). */
  #troubled = false;

  constructor(opts: RegistrarOptions) {
    if (opts.retry.capMs < opts.retry.baseMs) throw new TypeError('retry.capMs must be at least retry.baseMs');
    this.#o = opts;
    this.#random = opts.random ?? Math.random;
  }

  get state(): RegistrarState {
    return this.#state;
  }

  #setState(to: RegistrarState): void {
    if (to === this.#state) return;
    this.#o.log.debug({ event: 'flower.registrar_state', from: this.#state, to }, 'registrar state');
    this.#state = to;
  }

  /** Starts the background loop: a pass now, then at each due retry, nudge or scan interval. */
  start(): void {
    if (this.#state !== 'idle') throw new TypeError(`registrar cannot start from ${this.#state}`);
    this.#setState('running');
    this.#o.log.info({ event: 'flower.registrar_started' }, 'SuperLink registrar started');
    this.kick();
  }

  /** Something may have become due (an enrollment, a revocation): run a pass soon. */
  kick(): void {
    if (this.#state !== 'running') return;
    if (this.#timer !== null) {
      clearTimeout(this.#timer);
      this.#timer = null;
    }
    if (this.#loop !== null) {
      this.#again = true;
      return;
    }
    this.#loop = this.#run().finally(() => { this.#loop = null; });
  }

  async #run(): Promise<void> {
    for (;;) {
      this.#again = false;
      let failed = false;
      try {
        if ((await this.runOnce()).more) this.#again = true;
      } catch (err) {
        failed = true;
        this.#o.log.error({ err, event: 'flower.pass_failed' }, 'SuperLink registrar pass failed');
      }
      // The store could not be read or written: wait a whole scan interval, not a retry's.
      failed ||= this.#troubled;
      if (this.#state !== 'running') return;
      if (this.#again) continue;
      let delay = this.#o.scanIntervalMs;
      try {
        const next = failed ? null : await this.#o.store.nextFlowerAttemptAt();
        if (next !== null) delay = Math.min(delay, Math.max(MIN_WAKE_MS, next - this.#o.clock()));
      } catch (err) {
        this.#o.log.error({ err, event: 'flower.pass_failed' }, 'could not read the registrar queue');
      }
      if (this.#state !== 'running') return;
      if (this.#again) continue;
      this.#timer = setTimeout(() => { this.#timer = null; this.kick(); }, delay);
      this.#timer.unref();
      return;
    }
  }

  /** One pass over the work due now. Passes never overlap: a second call waits for the first. */
  runOnce(): Promise<PassSummary> {
    const pass = this.#tail.then(() => this.#pass());
    this.#tail = pass.catch(() => undefined);
    return pass;
  }

  /** Stops taking work, cancels calls in flight (their nodes stay due) and waits for the pass. */
  stop(): Promise<void> {
    this.#stopped ??= (async () => {
      this.#setState('stopping');
      if (this.#timer !== null) clearTimeout(this.#timer);
      this.#timer = null;
      this.#abort.abort();
      await this.#loop;
      await this.#tail;
      if (this.#o.ownsControl === true) this.#o.control.close();
      this.#setState('stopped');
    })();
    return this.#stopped;
  }

  async #pass(): Promise<PassSummary> {
    if (this.#state === 'stopping' || this.#state === 'stopped') return { handled: 0, more: false };
    const batch = this.#o.batchSize ?? 64;
    const work = await this.#o.store.dueFlowerWork(this.#o.clock(), batch);
    let next = 0;
    let handled = 0;
    let unrecorded = 0;
    const worker = async (): Promise<void> => {
      for (let w = work[next++]; w !== undefined && !this.#abort.signal.aborted; w = work[next++]) {
        handled++;
        try {
          if (w.state === 'pending') await this.#register(w);
          else await this.#unregister(w);
        } catch (err) {
          // A store write failed: the node stays due and is tried again on a later pass.
          unrecorded++;
          this.#o.log.error({ err, event: 'flower.work_failed', nodeId: w.nodeId, state: w.state }, 'could not record a SuperLink result');
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(this.#o.concurrency ?? 4, work.length) }, worker));
    // Items whose result could not be recorded are still due: no rushing into another pass.
    this.#troubled = unrecorded > 0;
    return { handled, more: work.length === batch && unrecorded === 0 };
  }

  // ---- registering --------------------------------------------------------------------------

  async #register(w: FlowerWork): Promise<void> {
    let pem: Buffer;
    try {
      pem = flowerKeySpkiPem(w.flowerPublicKey);
    } catch (e) {
      await this.#fail(w, failureOf(e));
      return;
    }
    const signal = this.#abort.signal;
    try {
      const id = await this.#o.control.register(pem, signal);
      await this.#registered(w, id, false);
    } catch (e) {
      if (signal.aborted) return;
      if (isSuperlinkError(e) && !e.retryable) {
        // Refused: an invalid key, or one already in use — possibly by our own earlier call whose
        // answer never got recorded. Only ListNodes can tell (Flower's message text is not an API).
        await this.#afterRefusal(w, pem, failureOf(e));
        return;
      }
      await this.#retry(w, e);
    }
  }

  async #afterRefusal(w: FlowerWork, pem: Buffer, refusal: Failure): Promise<void> {
    const signal = this.#abort.signal;
    let nodes: SuperlinkNode[];
    try {
      nodes = await this.#o.control.listNodes(signal);
    } catch (e) {
      if (!signal.aborted) await this.#retry(w, e);
      return;
    }
    const { live, gone } = nodesWithKey(nodes, pem);
    const found = live[0];
    if (found !== undefined) {
      const holder = await this.#o.store.nodeByFlowerId(found.flowerNodeId);
      if (holder === null) {
        await this.#registered(w, found.flowerNodeId, true);
        return;
      }
      await this.#fail(w, { code: ErrorCodes.SUPERLINK_REJECTED, message: `the SuperLink has this key as Flower node ${found.flowerNodeId}, which is hub node ${holder.id}'s` });
      return;
    }
    if (gone.length > 0) {
      await this.#fail(w, { code: ErrorCodes.SUPERLINK_REJECTED, message: 'the SuperLink had this key and unregistered it; Flower never accepts a key again: enroll the node again (the agent makes a new key)' });
      return;
    }
    await this.#fail(w, refusal);
  }

  async #registered(w: FlowerWork, flowerNodeId: string, recovered: boolean): Promise<void> {
    const { store, log, metrics, clock } = this.#o;
    let reg;
    try {
      reg = await store.recordFlowerRegistered(w.nodeId, flowerNodeId,
        { event: 'flower.registered', actor: ACTOR, detail: recovered ? { flowerNodeId, recovered: true } : { flowerNodeId } }, clock());
    } catch (e) {
      if (!isSepalError(e, ErrorCodes.ALREADY_EXISTS)) throw e;
      await this.#fail(w, { code: ErrorCodes.SUPERLINK_REJECTED, message: `the SuperLink answered Flower node ${flowerNodeId}, which another hub node holds` });
      return;
    }
    metrics.superlinkRegistrations.inc({ result: recovered ? 'recovered' : 'registered' });
    if (recovered) log.warn({ event: 'flower.registration_recovered', nodeId: w.nodeId, flowerNodeId }, 'Flower key was already registered (an earlier answer was lost); recorded its node id');
    else log.info({ event: 'flower.registered', nodeId: w.nodeId, flowerNodeId }, 'Flower key registered with the SuperLink');
    if (reg?.state === 'unregister-pending') {
      log.info({ event: 'flower.revoked_meanwhile', nodeId: w.nodeId, flowerNodeId }, 'node was revoked during its registration; unregistering it');
      this.#again = true;
    }
  }

  async #fail(w: FlowerWork, f: Failure): Promise<void> {
    const reg = await this.#o.store.recordFlowerFailed(w.nodeId, f,
      { event: 'flower.registration_failed', actor: ACTOR, reason: f.code, detail: { message: f.message.slice(0, 200) } }, this.#o.clock());
    if (reg === null) return; // the node left 'pending' meanwhile (revoked): nothing to mark
    this.#o.metrics.superlinkRegistrations.inc({ result: 'failed' });
    this.#o.log.error({ event: 'flower.registration_failed', nodeId: w.nodeId, code: f.code, message: f.message }, 'SuperLink refused the Flower key; the node cannot join Flower with it');
  }

  // ---- unregistering ------------------------------------------------------------------------

  async #unregister(w: FlowerWork): Promise<void> {
    const signal = this.#abort.signal;
    try {
      let id = w.flowerNodeId;
      if (id === null) {
        // Revoked before an id was recorded: a registration of ours may still have got through.
        id = await this.#lookUp(w);
        if (id === null) {
          await this.#unregistered(w, null, 'not_registered');
          return;
        }
      }
      const r = await this.#o.control.unregister(id, signal);
      await this.#unregistered(w, id, r === 'not-found' ? 'already_gone' : 'unregistered');
    } catch (e) {
      // Never given up: a revoked node must leave the federation. Access problems are retried too.
      if (!signal.aborted) await this.#retry(w, e);
    }
  }

  /** The live Flower node holding w's key that no other hub node claims, or null. */
  async #lookUp(w: FlowerWork): Promise<string | null> {
    let pem: Buffer;
    try {
      pem = flowerKeySpkiPem(w.flowerPublicKey);
    } catch {
      return null; // a key the SuperLink could never have accepted
    }
    const { live } = nodesWithKey(await this.#o.control.listNodes(this.#abort.signal), pem);
    for (const n of live) {
      const holder = await this.#o.store.nodeByFlowerId(n.flowerNodeId);
      if (holder === null || holder.id === w.nodeId) return n.flowerNodeId;
    }
    return null;
  }

  async #unregistered(w: FlowerWork, flowerNodeId: string | null, result: 'unregistered' | 'already_gone' | 'not_registered'): Promise<void> {
    const reg = await this.#o.store.recordFlowerUnregistered(w.nodeId, flowerNodeId,
      { event: 'flower.unregistered', actor: ACTOR, detail: { flowerNodeId, result } }, this.#o.clock());
    if (reg === null) return;
    this.#o.metrics.superlinkUnregistrations.inc({ result });
    this.#o.log.info({ event: 'flower.unregistered', nodeId: w.nodeId, flowerNodeId, result }, 'Flower node unregistered from the SuperLink');
  }

  // ---- retries ------------------------------------------------------------------------------

  async #retry(w: FlowerWork, e: unknown): Promise<void> {
    const { store, log, metrics, clock, retry } = this.#o;
    const f = failureOf(e);
    const failures = w.attempts + 1;
    const delay = backoffDelay(failures, retry, this.#random);
    const reg = await store.recordFlowerRetry(w.nodeId, w.state, f, clock() + delay, clock());
    if (reg === null) return;
    const registering = w.state === 'pending';
    (registering ? metrics.superlinkRegistrations : metrics.superlinkUnregistrations).inc({ result: 'retry' });
    // Every failure is on the node; the log gets the 1st, 2nd, 4th, 8th... so an outage of hours
    // does not flood it.
    const line = { event: registering ? 'flower.registration_retry' : 'flower.unregistration_retry', nodeId: w.nodeId, code: f.code, message: f.message, attempts: failures, retryInMs: delay };
    const text = registering ? 'Flower key registration failed; will retry' : 'Flower node unregistration failed; will retry';
    if ((failures & (failures - 1)) === 0) log.warn(line, text);
    else log.debug(line, text);
  }
}
