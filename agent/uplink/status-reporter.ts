// ReportStatus to the hub: periodically (with jitter, so a fleet does not report in lockstep)
// and soon after anything changes (debounced). A failed report is retried at the next tick.
import type { StatusReport } from '../../proto/api.ts';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import { isRevocation, type HubConnection } from './connection.ts';
import { isAgentError } from '../errors.ts';

const DEBOUNCE_MS = 1000;

export interface StatusReporterDeps {
  readonly connection: HubConnection;
  readonly clock: Clock;
  readonly log: Logger;
  readonly intervalMs: number;
  readonly deadlineMs: number;
  readonly report: () => StatusReport;
  readonly onContact: () => void;
  readonly onRevoked: () => void;
}

export class StatusReporter {
  readonly #d: StatusReporterDeps;
  #timer: Timer | null = null;
  #debounce: Timer | null = null;
  #inFlight: Promise<void> | null = null;
  #stopped = false;

  constructor(deps: StatusReporterDeps) {
    this.#d = deps;
  }

  start(): void {
    this.#schedule(this.#d.clock.random() * Math.min(this.#d.intervalMs, 5000));
  }

  /** Something the hub should know changed: report within about a second. */
  changed(): void {
    if (this.#stopped || this.#debounce !== null) return;
    this.#debounce = this.#d.clock.setTimeout(() => {
      this.#debounce = null;
      void this.sendNow();
    }, DEBOUNCE_MS);
  }

  stop(): void {
    this.#stopped = true;
    this.#timer?.cancel();
    this.#debounce?.cancel();
  }

  /** Sends one report now (single-flight); resolves when it is done, whatever the outcome. */
  sendNow(): Promise<void> {
    this.#inFlight ??= this.#send().finally(() => { this.#inFlight = null; });
    return this.#inFlight;
  }

  async #send(): Promise<void> {
    const d = this.#d;
    try {
      await d.connection.unary('ReportStatus', d.report(), d.deadlineMs);
      d.onContact();
    } catch (e) {
      if (isAgentError(e) && isRevocation(e.code)) {
        this.stop();
        d.onRevoked();
        return;
      }
      d.log.warn({ event: 'hub.status_failed', code: isAgentError(e) ? e.code : 'INTERNAL' }, 'status report failed');
    }
  }

  #schedule(ms: number): void {
    if (this.#stopped) return;
    this.#timer = this.#d.clock.setTimeout(() => {
      void this.sendNow().finally(() => {
        const jitter = (this.#d.clock.random() - 0.5) * 0.2 * this.#d.intervalMs;
        this.#schedule(this.#d.intervalMs + jitter);
      });
    }, ms);
  }
}
