// Polling for tests that wait on another process (a server coming up, a state reached): the probe
// runs until it returns something other than undefined, or the time is up. A probe that throws is
// retried; its last error is in the timeout message.
import { setTimeout as sleep } from 'node:timers/promises';

export async function waitUntil<T>(
  what: string,
  timeoutMs: number,
  probe: () => Promise<T | undefined> | T | undefined,
  opts: { intervalMs?: number; failFast?: () => string | undefined } = {},
): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    const failure = opts.failFast?.();
    if (failure !== undefined) throw new Error(`${what}: ${failure}`);
    try {
      const v = await probe();
      if (v !== undefined) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last === null ? '' : `: ${last instanceof Error ? last.message : JSON.stringify(last)}`}`);
    await sleep(opts.intervalMs ?? 200);
  }
}
