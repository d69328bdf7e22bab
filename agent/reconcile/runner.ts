// Runs plans, one at a time. apply() with a newer manifest aborts the apply in progress (its
// executors get the AbortSignal), waits until it has actually stopped, then plans again from the
// state the node is in by then: two applies never overlap, and an apply that was overtaken before
// it started is not run at all. Executors must honour the signal; the runner never starts another
// step once it is aborted, and waits for the current one to return.
import type { ManifestBody } from '../../proto/manifest.ts';
import { AgentError, ErrorCodes } from '../errors.ts';
import { plan } from './plan.ts';
import { STEP_KINDS, type NodeRuntimeState, type Step, type StepKind, type StepOf } from './steps.ts';

export type Executor<K extends StepKind> = (step: StepOf<K>, signal: AbortSignal) => Promise<void>;
export type Executors = { readonly [K in StepKind]: Executor<K> };

/** What to converge to: a verified manifest's version and body, or null to stop everything
 *  (no manifest, or the node is revoked). */
export type DesiredState = { readonly version: number; readonly body: ManifestBody } | null;

export type ApplyResult =
  | { readonly status: 'applied'; readonly version: number | null; readonly steps: readonly Step[] }
  | { readonly status: 'cancelled'; readonly version: number | null; readonly planned: readonly Step[]; readonly completed: readonly Step[] }
  | { readonly status: 'failed'; readonly version: number | null; readonly step: Step | null; readonly error: unknown; readonly planned: readonly Step[]; readonly completed: readonly Step[] };

export interface StepEvent {
  readonly version: number | null;
  readonly step: Step;
  readonly phase: 'start' | 'done' | 'failed';
  readonly error?: unknown;
}

export interface ApplyRunnerDeps {
  readonly executors: Executors;
  /** The node's runtime state now (asked once per apply, just before planning). */
  readonly observe: () => NodeRuntimeState | Promise<NodeRuntimeState>;
  /** Told about every step, e.g. for logs and metrics; must not throw. */
  readonly onStep?: (e: StepEvent) => void;
}

export class ApplyRunner {
  readonly #executors: Executors;
  readonly #observe: ApplyRunnerDeps['observe'];
  readonly #onStep: (e: StepEvent) => void;
  #generation = 0;
  #controller: AbortController | null = null;
  /** Settles when the last apply queued so far has finished. */
  #tail: Promise<void> = Promise.resolve();
  #closed = false;
  #active = 0;

  constructor(deps: ApplyRunnerDeps) {
    for (const k of STEP_KINDS) {
      if (typeof deps.executors[k] !== 'function') throw new TypeError(`ApplyRunner: executor ${k} must be a function`);
    }
    this.#executors = deps.executors;
    this.#observe = deps.observe;
    this.#onStep = deps.onStep ?? (() => undefined);
  }

  /** True while an apply is running. */
  get busy(): boolean {
    return this.#active > 0;
  }

  /** Converges to `desired`, cancelling whatever apply is in progress. */
  apply(desired: DesiredState): Promise<ApplyResult> {
    if (this.#closed) return Promise.resolve({ status: 'cancelled', version: desired?.version ?? null, planned: [], completed: [] });
    const generation = ++this.#generation;
    this.#controller?.abort(new AgentError(ErrorCodes.CANCELLED, 'superseded by a newer manifest'));
    const result = this.#tail.then(() => this.#run(generation, desired));
    this.#tail = result.then(() => undefined, () => undefined);
    return result;
  }

  /** Resolves once no apply is running or queued. */
  async idle(): Promise<void> {
    let tail: Promise<void>;
    do {
      tail = this.#tail;
      await tail;
    } while (tail !== this.#tail);
  }

  /** Cancels the apply in progress, refuses new ones (they resolve cancelled), and waits. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#controller?.abort(new AgentError(ErrorCodes.SHUTTING_DOWN, 'the agent is stopping'));
    await this.idle();
  }

  async #run(generation: number, desired: DesiredState): Promise<ApplyResult> {
    const version = desired?.version ?? null;
    // Overtaken while waiting for the previous apply: the newer one will plan from scratch.
    if (generation !== this.#generation || this.#closed) return { status: 'cancelled', version, planned: [], completed: [] };
    const controller = new AbortController();
    this.#controller = controller;
    const { signal } = controller;
    this.#active++;
    const completed: Step[] = [];
    let planned: Step[] = [];
    try {
      try {
        planned = plan(await this.#observe(), desired?.body ?? null);
      } catch (error) {
        return { status: 'failed', version, step: null, error, planned, completed };
      }
      for (const step of planned) {
        if (signal.aborted) return { status: 'cancelled', version, planned, completed };
        this.#onStep({ version, step, phase: 'start' });
        try {
          await (this.#executors[step.kind] as (s: Step, sig: AbortSignal) => Promise<void>)(step, signal);
        } catch (error) {
          if (signal.aborted) return { status: 'cancelled', version, planned, completed };
          this.#onStep({ version, step, phase: 'failed', error });
          return { status: 'failed', version, step, error, planned, completed };
        }
        completed.push(step);
        this.#onStep({ version, step, phase: 'done' });
      }
      return { status: 'applied', version, steps: completed };
    } finally {
      this.#active--;
      if (this.#controller === controller) this.#controller = null;
    }
  }
}
