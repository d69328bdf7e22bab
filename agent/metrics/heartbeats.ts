// Liveness as "the loops are still making progress": each long-running loop (renewal, manifest
// stream, status reports, supervisor) beats when it gets something done or wakes up; /healthz fails
// when one has not beaten for too long. A loop that knowingly sleeps longer than the general limit
// (renewal waits hours for its timer) says so when it beats, so sleeping is not mistaken for stuck.
import type { Clock } from '../runtime/clock.ts';

export interface LoopHealth {
  /** Unix ms of the last beat (or of registration, before the first one). */
  readonly lastProgressMs: number;
  readonly ok: boolean;
}

export interface HealthReport {
  readonly ok: boolean;
  readonly loops: Record<string, LoopHealth>;
}

export interface BeatOptions {
  /** The loop's next beat is due within this many ms (it sleeps that long); used instead of the
   *  general limit until its next beat. */
  readonly expectNextWithinMs?: number;
}

interface Entry {
  last: number;
  within: number | undefined;
}

export class Heartbeats {
  readonly #clock: Pick<Clock, 'now'>;
  readonly #loops = new Map<string, Entry>();

  constructor(clock: Pick<Clock, 'now'>) {
    this.#clock = clock;
  }

  /** Counts `loop` as alive now. The first beat registers it. */
  beat(loop: string, opts: BeatOptions = {}): void {
    const within = opts.expectNextWithinMs;
    if (within !== undefined && !(Number.isFinite(within) && within >= 0)) throw new TypeError(`expectNextWithinMs must be >= 0, got ${within}`);
    this.#loops.set(loop, { last: this.#clock.now(), within });
  }

  /** A loop that has ended on purpose (shutdown, feature off) is no longer watched. */
  remove(loop: string): void {
    this.#loops.delete(loop);
  }

  /** Healthy when every loop has beaten within maxAgeMs (or within what it announced, plus
   *  maxAgeMs of slack for the work after waking). No loops registered: healthy. */
  check(now: number, maxAgeMs: number): HealthReport {
    const entries = [...this.#loops].sort(([a], [b]) => a.localeCompare(b)).map(([name, e]): [string, LoopHealth] => {
      const limit = e.within === undefined ? maxAgeMs : e.within + maxAgeMs;
      return [name, { lastProgressMs: e.last, ok: now - e.last <= limit }];
    });
    // fromEntries defines own properties: a loop named __proto__ stays a loop.
    return { ok: entries.every(([, l]) => l.ok), loops: Object.fromEntries(entries) };
  }
}
