// Keeps ONE long-running child process up (flower-supernode, later openvpn): argv arrays and never
// a shell; the child leads a process group of its own and every signal goes to the group, so what
// it started (Flower's ClientApp processes) goes with it; output becomes rate-limited log lines;
// exits are restarted per policy.ts (backoff, crash loop, holdoff) on the injected clock.
//
// Invariants: at most one child per supervisor; `#run` is that child until its 'exit' (or failed
// spawn) has been handled; a wait timer exists only in the states backoff/holdoff/crash-loop; no
// error of the child (spawn ENOENT/EACCES, signals to a gone group) escapes as an exception or an
// unhandled 'error' event — it ends up in status().
import { spawn as nodeSpawn, type ChildProcess, type SpawnOptions } from 'node:child_process';
import { ErrorCodes, type ErrorCode } from '../errors.ts';
import type { Logger } from '../log.ts';
import type { Clock, Timer } from '../runtime/clock.ts';
import { backoffDelay, type BackoffOptions } from '../credentials/schedule.ts';
import { DEFAULT_OUTPUT_LIMITS, OutputLogger, validateOutputLimits, type OutputLimits, type OutputStream } from './output.ts';
import {
  DEFAULT_CRASH_LOOP, DEFAULT_MIN_UPTIME_MS, DEFAULT_RESTART_BACKOFF, classifyExit, isCrashLoop, isUnclean, isUnrequested, nextStart,
  recordExit, restartDelay, uncleanExitHoldoff, type CrashLoopOptions, type ExitInfo, type ExitReason, type WaitReason,
} from './policy.ts';

export type { CrashLoopOptions, ExitInfo, ExitReason, OutputLimits, WaitReason };

export type ChildState = 'stopped' | 'starting' | 'running' | 'backoff' | 'holdoff' | 'crash-loop' | 'stopping';

/** What to run. `env`, when given, is the child's whole environment (nothing of the agent's is
 *  added); without it the child inherits the agent's. */
export interface ChildSpec {
  readonly argv: readonly string[];
  readonly env?: Readonly<Record<string, string>>;
  readonly cwd?: string;
}

/** node:child_process spawn, or a stand-in with the same contract. */
export type SpawnFn = (command: string, args: readonly string[], options: SpawnOptions) => ChildProcess;

export interface SupervisorOptions {
  /** A short label for logs and metrics, e.g. 'supernode'. */
  readonly name: string;
  readonly spec: ChildSpec;
  readonly clock: Clock;
  readonly log: Logger;
  /** Restart backoff (full jitter); default 1 s doubling to 60 s. */
  readonly backoff?: BackoffOptions;
  /** A run this long resets the backoff and ends a crash loop; default 30 s. */
  readonly minUptimeMs?: number;
  /** Default: more than 5 unrequested exits within 10 minutes. */
  readonly crashLoop?: CrashLoopOptions;
  /** SIGTERM, then SIGKILL after this long; default 10 s. */
  readonly stopGraceMs?: number;
  /** The least time between this exit and the next start (0: none). Exclusive with
   *  uncleanExitHoldoffMs. */
  readonly restartHoldoffMs?: (exit: ExitInfo) => number;
  /** Shorthand: this holdoff after an unclean exit (non-zero code, outside signal, our SIGKILL). */
  readonly uncleanExitHoldoffMs?: number;
  /** A stdout/stderr line matching this marks the child 'running'; without it the child is
   *  'running' as soon as it has spawned. */
  readonly readyLine?: RegExp;
  /** With readyLine: 'running' anyway after this long without the line; default 10 s. */
  readonly readyTimeoutMs?: number;
  readonly output?: Partial<OutputLimits>;
  readonly spawn?: SpawnFn;
}

export interface SupervisorError {
  /** CHILD_SPAWN_FAILED (the last start failed) or CHILD_CRASH_LOOP. */
  readonly code: ErrorCode;
  readonly message: string;
  /** The system error of a failed spawn (ENOENT, EACCES...), else null. */
  readonly errno: string | null;
}

export interface SupervisorStatus {
  readonly name: string;
  readonly state: ChildState;
  readonly pid: number | null;
  /** Automatic restarts (after an exit nobody asked for, or a failed spawn) since construction. */
  readonly restarts: number;
  readonly lastExit: ExitInfo | null;
  /** Unix ms when `state` was entered. */
  readonly since: number;
  readonly crashLoop: boolean;
  /** When the next start is due (Unix ms) while waiting, else null. */
  readonly nextStartAt: number | null;
  /** Why it is waiting (the same word as the state) while waiting, else null. */
  readonly reason: WaitReason | null;
  readonly error: SupervisorError | null;
  /** Output lines dropped by the rate limit since construction (each drop is also logged). */
  readonly droppedLines: number;
}

export type StatusListener = (status: SupervisorStatus) => void;

const NAME_RE = /^[A-Za-z0-9_.-]{1,64}$/;
const DEFAULT_STOP_GRACE_MS = 10_000;
const DEFAULT_READY_TIMEOUT_MS = 10_000;
// The attempt counter stops growing here; backoffDelay is at its cap long before.
const MAX_ATTEMPT = 64;

interface Run {
  readonly child: ChildProcess;
  /** null while a spawn that will fail is being reported (Node gives no pid then). */
  readonly pid: number | null;
  readonly startedAt: number;
  /** stop()/restart() sent SIGTERM. */
  requested: boolean;
  /** ...and SIGKILL after the grace. */
  forced: boolean;
  /** Lasted minUptimeMs. */
  healthy: boolean;
  ended: boolean;
  readonly timers: Timer[];
  readonly done: Promise<void>;
  readonly resolve: () => void;
}

function nonNegative(v: number | undefined, fallback: number, what: string): number {
  const n = v ?? fallback;
  if (!Number.isFinite(n) || n < 0) throw new TypeError(`${what} must be a non-negative finite number`);
  return n;
}

function validateSpec(spec: ChildSpec): ChildSpec {
  const { argv, env, cwd } = spec;
  if (!Array.isArray(argv) || argv.length === 0) throw new TypeError('spec.argv must be a non-empty array');
  argv.forEach((a, i) => {
    if (typeof a !== 'string' || a.includes('\0')) throw new TypeError(`spec.argv[${i}] must be a string without NUL`);
  });
  if (argv[0] === '') throw new TypeError('spec.argv[0] must not be empty');
  if (env !== undefined) {
    for (const [k, v] of Object.entries(env)) {
      if (k === '' || k.includes('=') || k.includes('\0') || typeof v !== 'string' || v.includes('\0')) {
        throw new TypeError(`spec.env.${k}: names must be non-empty without "=" or NUL, values strings without NUL`);
      }
    }
  }
  if (cwd !== undefined && (typeof cwd !== 'string' || cwd === '' || cwd.includes('\0'))) throw new TypeError('spec.cwd must be a non-empty string');
  return Object.freeze({
    argv: Object.freeze(spec.argv.slice()),
    ...(env === undefined ? {} : { env: Object.freeze({ ...env }) }),
    ...(cwd === undefined ? {} : { cwd }),
  });
}

function errnoOf(e: unknown): string | null {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : null;
}

export class ChildSupervisor {
  readonly #name: string;
  readonly #clock: Clock;
  readonly #log: Logger;
  readonly #backoff: BackoffOptions;
  readonly #minUptimeMs: number;
  readonly #crashLoopOpts: CrashLoopOptions;
  readonly #stopGraceMs: number;
  readonly #holdoffFn: (exit: ExitInfo) => number;
  readonly #readyLine: RegExp | null;
  readonly #readyTimeoutMs: number;
  readonly #output: OutputLogger;
  readonly #spawn: SpawnFn;
  readonly #listeners = new Set<StatusListener>();

  #spec: ChildSpec;
  /** What the caller asked for last: start()/restart() or stop(). */
  #want: 'running' | 'stopped' = 'stopped';
  #state: ChildState = 'stopped';
  #since: number;
  #run: Run | null = null;
  #wait: Timer | null = null;
  #nextStartAt: number | null = null;
  #attempt = 0;
  #exits: number[] = [];
  #crashLoop = false;
  #holdoffUntil = 0;
  #restarts = 0;
  #lastExit: ExitInfo | null = null;
  #spawnError: SupervisorError | null = null;
  #lastNotified = '';

  constructor(opts: SupervisorOptions) {
    if (typeof opts.name !== 'string' || !NAME_RE.test(opts.name)) throw new TypeError('name must match [A-Za-z0-9_.-]{1,64}');
    this.#name = opts.name;
    this.#spec = validateSpec(opts.spec);
    this.#clock = opts.clock;
    this.#log = opts.log;
    this.#backoff = Object.freeze({ ...(opts.backoff ?? DEFAULT_RESTART_BACKOFF) });
    backoffDelay(0, this.#backoff, 0); // validates the options once, here
    this.#minUptimeMs = nonNegative(opts.minUptimeMs, DEFAULT_MIN_UPTIME_MS, 'minUptimeMs');
    const cl = opts.crashLoop ?? DEFAULT_CRASH_LOOP;
    if (!Number.isInteger(cl.maxExits) || cl.maxExits < 1) throw new TypeError('crashLoop.maxExits must be a positive integer');
    if (!Number.isFinite(cl.windowMs) || !(cl.windowMs > 0)) throw new TypeError('crashLoop.windowMs must be a positive number');
    this.#crashLoopOpts = Object.freeze({ maxExits: cl.maxExits, windowMs: cl.windowMs });
    this.#stopGraceMs = nonNegative(opts.stopGraceMs, DEFAULT_STOP_GRACE_MS, 'stopGraceMs');
    if (opts.restartHoldoffMs !== undefined && opts.uncleanExitHoldoffMs !== undefined) {
      throw new TypeError('give restartHoldoffMs or uncleanExitHoldoffMs, not both');
    }
    if (opts.restartHoldoffMs !== undefined && typeof opts.restartHoldoffMs !== 'function') throw new TypeError('restartHoldoffMs must be a function');
    this.#holdoffFn = opts.restartHoldoffMs ?? uncleanExitHoldoff(nonNegative(opts.uncleanExitHoldoffMs, 0, 'uncleanExitHoldoffMs'));
    if (opts.readyLine !== undefined && !(opts.readyLine instanceof RegExp)) throw new TypeError('readyLine must be a RegExp');
    this.#readyLine = opts.readyLine ?? null;
    this.#readyTimeoutMs = nonNegative(opts.readyTimeoutMs, DEFAULT_READY_TIMEOUT_MS, 'readyTimeoutMs');
    const limits = Object.freeze({ ...DEFAULT_OUTPUT_LIMITS, ...opts.output });
    validateOutputLimits(limits, 'output');
    this.#output = new OutputLogger(this.#name, this.#log, this.#clock, limits);
    this.#spawn = opts.spawn ?? nodeSpawn;
    this.#since = this.#clock.now();
  }

  get name(): string {
    return this.#name;
  }

  status(): SupervisorStatus {
    const waiting = this.#state === 'backoff' || this.#state === 'holdoff' || this.#state === 'crash-loop';
    return {
      name: this.#name,
      state: this.#state,
      pid: this.#run?.pid ?? null,
      restarts: this.#restarts,
      lastExit: this.#lastExit,
      since: this.#since,
      crashLoop: this.#crashLoop,
      nextStartAt: this.#nextStartAt,
      reason: waiting ? (this.#state as WaitReason) : null,
      error: this.#error(),
      droppedLines: this.#output.droppedTotal,
    };
  }

  /** Calls `listener` with a fresh snapshot whenever state, pid, restarts, the last exit, the
   *  crash-loop flag, the next start or the error change. Returns the unsubscribe function. */
  onChange(listener: StatusListener): () => void {
    this.#listeners.add(listener);
    return () => { this.#listeners.delete(listener); };
  }

  /** Runs the child (now, or once a holdoff from the last exit has passed). Does nothing while it
   *  runs or a restart is pending; during a stop, starts again once the old child is gone. */
  start(): void {
    this.#want = 'running';
    if (this.#state !== 'stopped') return;
    this.#resetFailures();
    this.#launch(false);
  }

  /**
   * SIGTERM to the group, SIGKILL after stopGraceMs; cancels a pending restart. Resolves once the
   * child has exited (at once when there is none); never rejects. Idempotent: calls during a stop
   * share its promise.
   */
  stop(): Promise<void> {
    this.#want = 'stopped';
    this.#cancelWait();
    const run = this.#run;
    if (run === null) {
      this.#setState('stopped');
      return Promise.resolve();
    }
    this.#terminate(run);
    return run.done;
  }

  /**
   * Stops the child as stop() does and starts it again, with `spec` (argv/env/cwd) when given;
   * a pending restart is cancelled and started now instead. The backoff and crash-loop history
   * start afresh (new configuration, new chances); a holdoff from the last exit still applies.
   * Resolves once the old child is gone.
   */
  restart(spec?: ChildSpec): Promise<void> {
    if (spec !== undefined) this.#spec = validateSpec(spec);
    this.#want = 'running';
    this.#resetFailures();
    const run = this.#run;
    if (run === null) {
      this.#cancelWait();
      this.#launch(false);
      return Promise.resolve();
    }
    this.#terminate(run);
    return run.done;
  }

  // ---- internals ----

  #error(): SupervisorError | null {
    if (this.#spawnError !== null) return this.#spawnError;
    if (!this.#crashLoop) return null;
    const last = this.#lastExit;
    const how = last === null ? '' : ` (last: ${last.signal !== null ? `signal ${last.signal}` : `code ${String(last.code)}`})`;
    return {
      code: ErrorCodes.CHILD_CRASH_LOOP,
      message: `${this.#name} exited ${this.#exits.length} times within ${Math.round(this.#crashLoopOpts.windowMs / 1000)} s${how}`,
      errno: null,
    };
  }

  #setState(next: ChildState): void {
    const prev = this.#state;
    if (prev !== next) {
      this.#state = next;
      this.#since = this.#clock.now();
      this.#log.info({ event: 'child.state', child: this.#name, from: prev, to: next, pid: this.#run?.pid ?? null, nextStartAt: this.#nextStartAt },
        `${this.#name}: ${prev} -> ${next}`);
    }
    this.#notify();
  }

  #notify(): void {
    const s = this.status();
    const key = JSON.stringify({ ...s, droppedLines: 0 });
    if (key === this.#lastNotified) return;
    this.#lastNotified = key;
    for (const l of [...this.#listeners]) {
      try {
        l(s);
      } catch (e) {
        this.#log.error({ event: 'child.listener_failed', child: this.#name, err: e }, 'a status listener threw');
      }
    }
  }

  #resetFailures(): void {
    this.#attempt = 0;
    this.#exits = [];
    this.#crashLoop = false;
  }

  #cancelWait(): void {
    this.#wait?.cancel();
    this.#wait = null;
    this.#nextStartAt = null;
  }

  /** Starts now, or waits out the holdoff first. */
  #launch(automatic: boolean): void {
    const now = this.#clock.now();
    if (this.#holdoffUntil > now) this.#waitUntil(this.#holdoffUntil, 'holdoff', automatic);
    else this.#spawnChild(automatic);
  }

  #waitUntil(at: number, reason: WaitReason, automatic: boolean): void {
    this.#cancelWait();
    this.#nextStartAt = at;
    this.#wait = this.#clock.setTimeout(() => {
      this.#wait = null;
      this.#nextStartAt = null;
      if (this.#want === 'running' && this.#run === null) this.#spawnChild(automatic);
    }, at - this.#clock.now());
    this.#setState(reason);
  }

  #spawnChild(automatic: boolean): void {
    const spec = this.#spec;
    const [command, ...args] = spec.argv as [string, ...string[]];
    const startedAt = this.#clock.now();
    if (automatic) {
      this.#restarts += 1;
      this.#log.info({ event: 'child.restarted', child: this.#name, restarts: this.#restarts }, `${this.#name}: restarting`);
    }
    const options: SpawnOptions = {
      shell: false,
      detached: true, // setsid(): the child leads its own process group
      stdio: ['ignore', 'pipe', 'pipe'],
      windowsHide: true,
      ...(spec.env === undefined ? {} : { env: { ...spec.env } }),
      ...(spec.cwd === undefined ? {} : { cwd: spec.cwd }),
    };
    let child: ChildProcess;
    try {
      child = this.#spawn(command, args, options);
    } catch (e) {
      this.#spawnFailed(null, e, startedAt);
      return;
    }
    let resolve!: () => void;
    const done = new Promise<void>((r) => { resolve = r; });
    const run: Run = {
      child, pid: child.pid ?? null, startedAt, requested: false, forced: false, healthy: false, ended: false, timers: [], done, resolve,
    };
    this.#run = run;
    this.#spawnError = null;
    child.on('error', (err) => this.#onError(run, err));
    child.on('exit', (code, signal) => this.#onExit(run, code, signal));
    if (run.pid === null) {
      // Node reports ENOENT/EACCES/bad cwd by an 'error' event on the next tick.
      this.#setState('starting');
      return;
    }
    this.#pipe(run, 'stdout');
    this.#pipe(run, 'stderr');
    child.on('close', () => { this.#output.flush(); });
    if (this.#readyLine === null) {
      child.once('spawn', () => this.#ready(run, 'spawned'));
    } else {
      run.timers.push(this.#clock.setTimeout(() => this.#ready(run, 'timeout'), this.#readyTimeoutMs));
    }
    run.timers.push(this.#clock.setTimeout(() => this.#healthy(run), this.#minUptimeMs));
    this.#log.info({ event: 'child.spawned', child: this.#name, pid: run.pid, argv0: command }, `${this.#name}: started, pid ${run.pid}`);
    this.#setState('starting');
  }

  #pipe(run: Run, stream: OutputStream): void {
    const readable = run.child[stream];
    if (readable === null) return;
    const splitter = this.#output.splitter(stream, this.#readyLine === null ? undefined : (line) => {
      const re = this.#readyLine;
      if (re === null) return;
      re.lastIndex = 0;
      if (re.test(line)) this.#ready(run, 'line');
    });
    readable.on('data', (chunk: Buffer) => splitter.push(chunk));
    readable.on('end', () => splitter.end());
    readable.on('error', (err) => {
      this.#log.warn({ event: 'child.output_error', child: this.#name, stream, err }, `${this.#name}: reading ${stream} failed`);
    });
  }

  #ready(run: Run, how: 'spawned' | 'line' | 'timeout'): void {
    if (run !== this.#run || run.ended || this.#state !== 'starting') return;
    if (how === 'timeout') {
      this.#log.warn({ event: 'child.ready_timeout', child: this.#name }, `${this.#name}: no ready line after ${this.#readyTimeoutMs} ms, counting it as running`);
    }
    this.#setState('running');
  }

  #healthy(run: Run): void {
    if (run !== this.#run || run.ended) return;
    run.healthy = true;
    if (this.#crashLoop) this.#log.info({ event: 'child.crash_loop_ended', child: this.#name }, `${this.#name}: up for ${this.#minUptimeMs} ms, crash loop over`);
    this.#resetFailures();
    this.#notify();
  }

  #onError(run: Run, err: Error): void {
    if (run.pid === null && !run.ended) {
      this.#spawnFailed(run, err, run.startedAt);
      return;
    }
    // After a successful spawn Node emits 'error' only for a failed child.kill(), which is not used.
    this.#log.warn({ event: 'child.error', child: this.#name, err }, `${this.#name}: child process error`);
  }

  #spawnFailed(run: Run | null, err: unknown, startedAt: number): void {
    if (run !== null) {
      run.ended = true;
      for (const t of run.timers) t.cancel();
      if (this.#run === run) this.#run = null;
    }
    const errno = errnoOf(err);
    const command = this.#spec.argv[0] ?? '';
    this.#spawnError = {
      code: ErrorCodes.CHILD_SPAWN_FAILED,
      message: `${this.#name}: cannot start ${command}: ${err instanceof Error ? err.message : String(err)}`,
      errno,
    };
    this.#log.error({ event: 'child.spawn_failed', child: this.#name, argv0: command, errno, code: ErrorCodes.CHILD_SPAWN_FAILED },
      this.#spawnError.message);
    const at = this.#clock.now();
    this.#ended({ code: null, signal: null, at, reason: 'spawn-failed', uptimeMs: Math.max(0, at - startedAt) }, false, run?.requested ?? false);
    run?.resolve();
  }

  #onExit(run: Run, code: number | null, signal: NodeJS.Signals | null): void {
    if (run.ended) return;
    run.ended = true;
    for (const t of run.timers) t.cancel();
    if (this.#run === run) this.#run = null;
    // What the child started may outlive it in its group: take it down before anything restarts.
    if (run.pid !== null) signalGroup(run.pid, 'SIGKILL', false);
    const at = this.#clock.now();
    const reason = classifyExit(code, signal, run.requested, run.forced);
    const exit: ExitInfo = { code, signal, at, reason, uptimeMs: Math.max(0, at - run.startedAt) };
    this.#log[isUnclean(reason) ? 'warn' : 'info']({ event: 'child.exited', child: this.#name, pid: run.pid, code, signal, reason, uptimeMs: exit.uptimeMs },
      `${this.#name}: exited (${signal !== null ? `signal ${signal}` : `code ${String(code)}`}, ${reason})`);
    this.#ended(exit, run.healthy || exit.uptimeMs >= this.#minUptimeMs, run.requested);
    run.resolve();
  }

  /** After every end of a run: record it, then stop, start again now, or wait. `requested`: by
   *  stop()/restart(), which also covers a spawn that failed while restart() was waiting for it. */
  #ended(exit: ExitInfo, healthy: boolean, requested: boolean): void {
    this.#lastExit = Object.freeze(exit);
    const holdoff = this.#holdoffFor(exit);
    if (holdoff > 0) this.#holdoffUntil = Math.max(this.#holdoffUntil, exit.at + holdoff);
    if (this.#want === 'stopped') {
      this.#setState('stopped');
      return;
    }
    if (requested || !isUnrequested(exit.reason)) {
      // restart(): the caller asked for this exit; only a holdoff delays the new start.
      this.#launch(false);
      return;
    }
    if (healthy) this.#resetFailures();
    const now = this.#clock.now();
    this.#exits = recordExit(this.#exits, exit.at, now, this.#crashLoopOpts);
    const loop = isCrashLoop(this.#exits, this.#crashLoopOpts);
    if (loop && !this.#crashLoop) {
      this.#log.error({ event: 'child.crash_loop', child: this.#name, exits: this.#exits.length, windowMs: this.#crashLoopOpts.windowMs, code: ErrorCodes.CHILD_CRASH_LOOP },
        `${this.#name}: crash loop, retrying every ${Math.round(this.#backoff.capMs / 2000)}-${Math.round(this.#backoff.capMs / 1000)} s (or after the holdoff, when longer)`);
    }
    this.#crashLoop = loop;
    const delay = restartDelay(this.#attempt, loop, this.#backoff, this.#clock.random());
    this.#attempt = Math.min(this.#attempt + 1, MAX_ATTEMPT);
    const next = nextStart(now, delay, this.#holdoffUntil, loop);
    this.#waitUntil(next.at, next.reason, true);
  }

  #holdoffFor(exit: ExitInfo): number {
    let ms: number;
    try {
      ms = this.#holdoffFn(exit);
    } catch (e) {
      this.#log.error({ event: 'child.holdoff_failed', child: this.#name, err: e }, 'restartHoldoffMs threw; no holdoff');
      return 0;
    }
    if (typeof ms !== 'number' || !Number.isFinite(ms) || ms < 0) {
      this.#log.error({ event: 'child.holdoff_failed', child: this.#name, value: String(ms) }, 'restartHoldoffMs returned no usable number; no holdoff');
      return 0;
    }
    return ms;
  }

  /** SIGTERM now, SIGKILL after the grace; once per run. */
  #terminate(run: Run): void {
    if (run.requested) return;
    run.requested = true;
    if (run.pid !== null) {
      const pid = run.pid;
      signalGroup(pid, 'SIGTERM', true, this.#log, this.#name);
      run.timers.push(this.#clock.setTimeout(() => {
        if (run.ended) return;
        run.forced = true;
        this.#log.warn({ event: 'child.kill', child: this.#name, pid, graceMs: this.#stopGraceMs }, `${this.#name}: still running ${this.#stopGraceMs} ms after SIGTERM, sending SIGKILL`);
        signalGroup(pid, 'SIGKILL', true, this.#log, this.#name);
      }, this.#stopGraceMs));
    }
    this.#setState('stopping');
  }
}

/**
 * Sends `sig` to the process group led by `pid`. `leaderAlive`: the leader has not been reaped
 * yet, so when the group is gone (the child moved itself to another group) the pid itself is
 * still ours to signal. After the leader's exit only the group is signalled: its pid may already
 * belong to someone else, but a group id is not reused while any member is left.
 */
function signalGroup(pid: number, sig: NodeJS.Signals, leaderAlive: boolean, log?: Logger, name?: string): void {
  try {
    process.kill(-pid, sig);
    return;
  } catch (e) {
    if (errnoOf(e) !== 'ESRCH') {
      log?.error({ event: 'child.signal_failed', child: name, pid, signal: sig, err: e }, `cannot send ${sig} to process group ${pid}`);
      return;
    }
  }
  if (!leaderAlive) return;
  try {
    process.kill(pid, sig);
  } catch (e) {
    if (errnoOf(e) !== 'ESRCH') log?.error({ event: 'child.signal_failed', child: name, pid, signal: sig, err: e }, `cannot send ${sig} to ${pid}`);
  }
}
