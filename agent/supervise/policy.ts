// When a supervised child starts again after it ended. Pure: times, random values and the exit
// history come in as arguments, so the rules are tested with data and no processes.
//
// - Each unrequested exit (or failed spawn) waits a capped exponential backoff with full jitter
//   (schedule.ts backoffDelay); the attempt counter resets once a run has lasted minUptimeMs.
// - More than crashLoop.maxExits unrequested exits within crashLoop.windowMs (wall clock) is a
//   crash loop. The supervisor keeps retrying, at the cap delay (jittered in [cap/2, cap]), and
//   reports it; a run of minUptimeMs ends it. An unattended node has nobody to press "retry", and
//   the cause (a peer down, a bad manifest) is often fixed from elsewhere.
// - A holdoff is a floor under the next start that the caller derives from the exit (Flower's
//   SuperLink refuses a SuperNode's key for about a minute after an unclean exit). The wait is
//   its own state ('holdoff') unless a crash loop is on (then 'crash-loop', whichever wait is
//   longer: that is the state operators alert on); it adds no exit of its own, and since nothing
//   is started during it, no refused start can pile up exits in the window. The unclean exit
//   that asked for it is counted like any other, once. Because a holdoff spaces the starts out,
//   a window shorter than (maxExits + 1) × holdoff cannot see a child that fails at every start;
//   the default window (10 min for more than 5 exits) still does with a one-minute holdoff.
import { backoffDelay, type BackoffOptions } from '../credentials/schedule.ts';

/** Why the last run ended:
 *  'exit'         — exited with code 0 on its own;
 *  'error'        — exited with a non-zero code on its own;
 *  'signal'       — killed by a signal nobody here sent (OOM killer, an operator);
 *  'stopped'      — stop()/restart() asked it to go (SIGTERM) and it went within the grace;
 *  'killed'       — stop()/restart() had to SIGKILL it after the grace;
 *  'spawn-failed' — it never ran (ENOENT, EACCES...). */
export type ExitReason = 'exit' | 'error' | 'signal' | 'stopped' | 'killed' | 'spawn-failed';

export interface ExitInfo {
  readonly code: number | null;
  readonly signal: NodeJS.Signals | null;
  /** Unix ms (the supervisor's clock). */
  readonly at: number;
  readonly reason: ExitReason;
  /** How long the run lasted, ms (0 for a failed spawn). */
  readonly uptimeMs: number;
}

export interface CrashLoopOptions {
  /** A crash loop is more than this many unrequested exits within windowMs. */
  readonly maxExits: number;
  readonly windowMs: number;
}

export const DEFAULT_CRASH_LOOP: CrashLoopOptions = Object.freeze({ maxExits: 5, windowMs: 10 * 60_000 });
export const DEFAULT_RESTART_BACKOFF: BackoffOptions = Object.freeze({ baseMs: 1_000, capMs: 60_000 });
export const DEFAULT_MIN_UPTIME_MS = 30_000;

/** Did the child end without being asked to, or crash? ('exit' with code 0 is neither.) */
export function isUnrequested(reason: ExitReason): boolean {
  return reason !== 'stopped' && reason !== 'killed';
}

/** A process that ran and did not end cleanly: non-zero exit, an outside signal, or our SIGKILL
 *  after the grace. A failed spawn never ran, and a SIGTERM we sent that was obeyed is clean. */
export function isUnclean(reason: ExitReason): boolean {
  return reason === 'error' || reason === 'signal' || reason === 'killed';
}

export function classifyExit(code: number | null, signal: NodeJS.Signals | null, requested: boolean, forced: boolean): ExitReason {
  if (requested) return forced ? 'killed' : 'stopped';
  if (signal !== null) return 'signal';
  return code === 0 ? 'exit' : 'error';
}

/** The holdoff function behind the `uncleanExitHoldoffMs` option. */
export function uncleanExitHoldoff(ms: number): (exit: ExitInfo) => number {
  return (exit) => (isUnclean(exit.reason) ? ms : 0);
}

/** The exits (Unix ms) still inside the window at `now`, oldest first, with `at` added. */
export function recordExit(history: readonly number[], at: number, now: number, opts: CrashLoopOptions): number[] {
  return [...history, at].filter((t) => now - t <= opts.windowMs);
}

export function isCrashLoop(history: readonly number[], opts: CrashLoopOptions): boolean {
  return history.length > opts.maxExits;
}

/** Delay before the next start after an unrequested exit: full-jitter backoff for `attempt`, or
 *  in a crash loop the cap with half of it jittered (so looping nodes do not retry in step). */
export function restartDelay(attempt: number, crashLoop: boolean, backoff: BackoffOptions, random: number): number {
  if (!crashLoop) return backoffDelay(attempt, backoff, random);
  return backoff.capMs - backoffDelay(0, { baseMs: backoff.capMs / 2, capMs: backoff.capMs / 2 }, random);
}

export type WaitReason = 'backoff' | 'holdoff' | 'crash-loop';

/** When to start again (the later of the backoff delay and the holdoff) and what the wait is
 *  called: a crash loop is always called so, whichever of the two is longer — it is the state an
 *  operator alerts on; otherwise the longer wait names it. */
export function nextStart(now: number, delayMs: number, holdoffUntil: number, crashLoop: boolean): { at: number; reason: WaitReason } {
  const afterDelay = now + delayMs;
  const at = Math.max(afterDelay, holdoffUntil);
  if (crashLoop) return { at, reason: 'crash-loop' };
  return { at, reason: holdoffUntil > afterDelay ? 'holdoff' : 'backoff' };
}
