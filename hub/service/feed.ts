// Changes made by other processes on the same data dir (admin CLI commands while `serve` runs)
// reach the server through the audit log: it is the one ordered record of every state change.
// The feed polls it (a single indexed range read) and hands the interesting events on.
import type { AuditEntry, Store } from '../store/store.ts';
import type { Logger } from '../log.ts';

const WATCHED = new Set([
  'node.enrolled', 'node.revoked', 'manifest.published', 'keys.rotated', 'flower.registration_retried',
  'ca.prepared', 'ca.activated', 'ca.pruned', 'ca.server_renewed',
]);

export class ChangeFeed {
  readonly #store: Store;
  readonly #log: Logger;
  readonly #onEvent: (e: AuditEntry) => Promise<void> | void;
  #after = 0;
  #timer: NodeJS.Timeout | null = null;
  #running: Promise<void> | null = null;

  constructor(store: Store, log: Logger, onEvent: (e: AuditEntry) => Promise<void> | void) {
    this.#store = store;
    this.#log = log;
    this.#onEvent = onEvent;
  }

  async start(intervalMs: number): Promise<void> {
    this.#after = await this.#store.auditHead();
    this.#timer = setInterval(() => {
      this.#running ??= this.poll().finally(() => { this.#running = null; });
    }, intervalMs);
    this.#timer.unref();
  }

  /** Reads everything new once; safe to call directly (tests, or right after a local write). */
  async poll(): Promise<void> {
    for (;;) {
      let batch: AuditEntry[];
      try {
        batch = await this.#store.readAudit(this.#after, 500);
      } catch (e) {
        this.#log.error({ err: e, event: 'feed.read_failed' }, 'could not read the audit log');
        return;
      }
      for (const e of batch) {
        this.#after = e.seq;
        if (!WATCHED.has(e.event)) continue;
        try {
          await this.#onEvent(e);
        } catch (err) {
          this.#log.error({ err, event: 'feed.handler_failed', seq: e.seq }, 'change handler failed');
        }
      }
      if (batch.length < 500) return;
    }
  }

  async stop(): Promise<void> {
    if (this.#timer !== null) clearInterval(this.#timer);
    this.#timer = null;
    await this.#running;
  }
}
