// A supervised child's stdout/stderr as structured log lines: bytes are split into lines (UTF-8,
// "\n" or "\r\n"), each line is capped, and a per-child token bucket keeps a chatty or broken child
// from flooding the agent's log. Nothing is lost silently: a line that is cut says so
// (`truncated: true`), and lines the bucket refuses are counted and reported in one summary line
// once the bucket has a token again (or when the child's output ends).
import { StringDecoder } from 'node:string_decoder';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';

export type OutputStream = 'stdout' | 'stderr';

export interface OutputLimits {
  /** Lines that may be logged at once after a quiet spell. */
  readonly burst: number;
  /** Lines per second in the long run. */
  readonly perSecond: number;
  /** Longer lines are cut to this many characters and marked `truncated: true`. */
  readonly maxLineLength: number;
}

export const DEFAULT_OUTPUT_LIMITS: OutputLimits = Object.freeze({ burst: 200, perSecond: 20, maxLineLength: 4096 });

export function validateOutputLimits(l: OutputLimits, where: string): void {
  if (!Number.isInteger(l.burst) || l.burst < 1) throw new TypeError(`${where}.burst must be a positive integer`);
  if (!Number.isFinite(l.perSecond) || !(l.perSecond > 0)) throw new TypeError(`${where}.perSecond must be a positive number`);
  if (!Number.isInteger(l.maxLineLength) || l.maxLineLength < 1) throw new TypeError(`${where}.maxLineLength must be a positive integer`);
}

// Refills are fractional: without some slack, 0.99 + 0.01 tokens may fall short of 1.
const EPSILON = 1e-9;

/** A token bucket on the injected clock: `burst` tokens, refilled at `perSecond`. */
export class TokenBucket {
  readonly #clock: Clock;
  readonly #burst: number;
  readonly #perMs: number;
  #tokens: number;
  #at: number;

  constructor(clock: Clock, burst: number, perSecond: number) {
    this.#clock = clock;
    this.#burst = burst;
    this.#perMs = perSecond / 1000;
    this.#tokens = burst;
    this.#at = clock.now();
  }

  #refill(): void {
    const now = this.#clock.now();
    // A clock stepped backwards refills nothing rather than draining the bucket.
    const elapsed = Math.max(0, now - this.#at);
    this.#tokens = Math.min(this.#burst, this.#tokens + elapsed * this.#perMs);
    this.#at = now;
  }

  take(): boolean {
    this.#refill();
    if (this.#tokens < 1 - EPSILON) return false;
    this.#tokens = Math.max(0, this.#tokens - 1);
    return true;
  }

  /** Milliseconds until one token is available (0 if one is). */
  msUntilToken(): number {
    this.#refill();
    return this.#tokens >= 1 - EPSILON ? 0 : Math.ceil((1 - EPSILON - this.#tokens) / this.#perMs);
  }
}

/**
 * Splits a byte stream into lines of at most `maxLength` characters. A line longer than that is
 * emitted once, cut and flagged, and the rest of it (up to its newline) is skipped, so memory stays
 * bounded whatever the child writes.
 */
export class LineSplitter {
  readonly #decoder = new StringDecoder('utf8');
  readonly #max: number;
  readonly #emit: (line: string, truncated: boolean) => void;
  #pending = '';
  /** The start of the current line was already emitted (cut); drop the rest up to "\n". */
  #skipping = false;

  constructor(maxLength: number, emit: (line: string, truncated: boolean) => void) {
    this.#max = maxLength;
    this.#emit = emit;
  }

  push(chunk: Buffer | string): void {
    this.#feed(typeof chunk === 'string' ? chunk : this.#decoder.write(chunk));
  }

  /** The stream ended: a last line without "\n" is still a line. */
  end(): void {
    this.#feed(this.#decoder.end());
    if (!this.#skipping && this.#pending !== '') this.#line(this.#pending);
    this.#pending = '';
    this.#skipping = false;
  }

  #feed(text: string): void {
    let rest = text;
    for (;;) {
      const nl = rest.indexOf('\n');
      if (nl < 0) break;
      const line = this.#pending + rest.slice(0, nl);
      rest = rest.slice(nl + 1);
      this.#pending = '';
      if (this.#skipping) this.#skipping = false;
      else this.#line(line.endsWith('\r') ? line.slice(0, -1) : line);
    }
    if (this.#skipping) return;
    this.#pending += rest;
    if (this.#pending.length > this.#max) {
      this.#emit(this.#pending.slice(0, this.#max), true);
      this.#pending = '';
      this.#skipping = true;
    }
  }

  #line(line: string): void {
    if (line.length > this.#max) this.#emit(line.slice(0, this.#max), true);
    else this.#emit(line, false);
  }
}

/** Logs one child's lines (stdout at info, stderr at warn) through a bucket shared by both
 *  streams and every run of the child. */
export class OutputLogger {
  readonly #child: string;
  readonly #log: Logger;
  readonly #clock: Clock;
  readonly #limits: OutputLimits;
  readonly #bucket: TokenBucket;
  #dropped = 0;
  #droppedTotal = 0;
  #flushTimer: Timer | null = null;

  constructor(child: string, log: Logger, clock: Clock, limits: OutputLimits) {
    this.#child = child;
    this.#log = log;
    this.#clock = clock;
    this.#limits = limits;
    this.#bucket = new TokenBucket(clock, limits.burst, limits.perSecond);
  }

  /** Lines refused by the bucket since this logger was made. */
  get droppedTotal(): number {
    return this.#droppedTotal;
  }

  /** A splitter for one stream of one run; `onLine` sees every line, logged or not. */
  splitter(stream: OutputStream, onLine?: (line: string) => void): LineSplitter {
    return new LineSplitter(this.#limits.maxLineLength, (line, truncated) => {
      onLine?.(line);
      this.line(stream, line, truncated);
    });
  }

  line(stream: OutputStream, line: string, truncated: boolean): void {
    if (!this.#bucket.take()) {
      this.#dropped += 1;
      this.#droppedTotal += 1;
      this.#flushTimer ??= this.#clock.setTimeout(() => {
        this.#flushTimer = null;
        this.flush();
      }, this.#bucket.msUntilToken());
      return;
    }
    this.flush();
    const fields = truncated
      ? { event: 'child.output', child: this.#child, stream, line, truncated: true }
      : { event: 'child.output', child: this.#child, stream, line };
    if (stream === 'stdout') this.#log.info(fields, `${this.#child} ${stream}`);
    else this.#log.warn(fields, `${this.#child} ${stream}`);
  }

  /** Reports lines dropped since the last report, if any. */
  flush(): void {
    this.#flushTimer?.cancel();
    this.#flushTimer = null;
    if (this.#dropped === 0) return;
    const dropped = this.#dropped;
    this.#dropped = 0;
    this.#log.warn({ event: 'child.output_dropped', child: this.#child, dropped, droppedTotal: this.#droppedTotal },
      `${this.#child}: ${dropped} output lines dropped by the rate limit`);
  }
}
