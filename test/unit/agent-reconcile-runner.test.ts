// The apply runner with recording executors: a plan runs to the end, a newer manifest cancels the
// apply in progress through the executors' AbortSignal and then runs from the state left behind,
// applies never overlap, a failing step stops the apply, and close() drains.
import { describe, expect, it } from 'vitest';
import type { ManifestBody } from '../../proto/manifest.ts';
import { ErrorCodes } from '../../proto/errors.ts';
import { ApplyRunner, type ApplyResult, type StepEvent } from '../../agent/reconcile/runner.ts';
import { recordingExecutors, type RecordingOptions } from '../../agent/reconcile/recording.ts';
import { configHashes } from '../../agent/reconcile/plan.ts';
import type { Step } from '../../agent/reconcile/steps.ts';

const v1: ManifestBody = {
  superlink: { address: '10.8.0.1:9092' },
  supernode: { nodeConfig: { lr: 0.1 } },
  vpn: { remotes: [{ host: 'vpn.example.org', port: 1194, proto: 'udp' }], tlsCryptKeyRef: 'k', routes: [], superlinkAddress: '10.8.0.1:9092' },
  datasets: [{ name: 'mnist', path: '/srv/mnist', sha256: 'a'.repeat(64) }],
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
};
const v2: ManifestBody = { ...v1, supernode: { nodeConfig: { lr: 0.01 } } };

/** Resolves when the signal aborts, rejecting with its reason: an executor that honours it. */
function untilAborted(signal: AbortSignal): Promise<void> {
  return new Promise((_resolve, reject) => {
    if (signal.aborted) reject(signal.reason as Error);
    else signal.addEventListener('abort', () => reject(signal.reason as Error), { once: true });
  });
}

/** A promise and its resolver. */
function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve: () => void = () => undefined;
  const promise = new Promise<void>((r) => { resolve = r; });
  return { promise, resolve };
}

function setup(opts: RecordingOptions = {}): { rec: ReturnType<typeof recordingExecutors>; runner: ApplyRunner; events: StepEvent[] } {
  const rec = recordingExecutors(opts);
  const events: StepEvent[] = [];
  const runner = new ApplyRunner({ executors: rec.executors, observe: () => rec.state(), onStep: (e) => events.push(e) });
  return { rec, runner, events };
}

const kinds = (steps: readonly Step[]): string[] => steps.map((s) => s.kind);

describe('ApplyRunner', () => {
  it('applies a plan step by step; applying the same body again does nothing', async () => {
    const { rec, runner, events } = setup();
    const r = await runner.apply({ version: 1, body: v1 });
    expect(r.status).toBe('applied');
    expect(kinds(rec.calls)).toEqual(['write-vpn-config', 'start-vpn', 'verify-dataset', 'start-supernode']);
    expect(rec.state().supernode).toEqual({ running: true, configHash: configHashes(v1).supernode });
    expect(events.filter((e) => e.phase === 'done')).toHaveLength(4);
    expect(await runner.apply({ version: 2, body: v1 })).toEqual({ status: 'applied', version: 2, steps: [] });
    expect(rec.calls).toHaveLength(4);
  });

  it('a newer manifest cancels the apply in progress (via the signal), then runs its plan from where it stopped', async () => {
    const reached = deferred();
    const { rec, runner } = setup({
      before: async (step, signal) => {
        // v1's dataset verification is slow: it waits until it is cancelled.
        if (step.kind === 'verify-dataset') {
          reached.resolve();
          await untilAborted(signal);
        }
      },
    });
    const first = runner.apply({ version: 1, body: v1 });
    await reached.promise;
    expect(runner.busy).toBe(true);
    // v2 has no datasets to verify, so its apply does not block.
    const v2NoData: ManifestBody = { ...v2, datasets: [] };
    const second = runner.apply({ version: 2, body: v2NoData });
    const r1 = await first;
    expect(r1.status).toBe('cancelled');
    expect(r1.status === 'cancelled' && kinds(r1.completed)).toEqual(['write-vpn-config', 'start-vpn']);
    expect(r1.status === 'cancelled' && kinds(r1.planned)).toEqual(['write-vpn-config', 'start-vpn', 'verify-dataset', 'start-supernode']);
    const r2 = await second;
    expect(r2.status).toBe('applied');
    // The VPN was already up with the same config: v2 only starts the SuperNode, with v2's config.
    expect(r2.status === 'applied' && r2.steps).toEqual([{ kind: 'start-supernode', configHash: configHashes(v2NoData).supernode, config: expect.objectContaining({ supernode: v2NoData.supernode }) as unknown }]);
    expect(kinds(rec.started)).toEqual(['write-vpn-config', 'start-vpn', 'verify-dataset', 'start-supernode']);
    expect(rec.state().supernode.configHash).toBe(configHashes(v2NoData).supernode);
    expect(rec.maxConcurrent).toBe(1);
  });

  it('single-flight: a burst of manifests never runs two applies at once, and only the newest one runs after the first is cancelled', async () => {
    let inApply = 0;
    let maxInApply = 0;
    const { rec, runner } = setup({
      before: async (_step, signal) => {
        inApply++;
        maxInApply = Math.max(maxInApply, inApply);
        try {
          // Every step takes a few turns of the event loop unless cancelled.
          await Promise.race([new Promise((r) => setTimeout(r, 5)), untilAborted(signal)]);
        } finally {
          inApply--;
        }
      },
    });
    const bodies = [1, 2, 3, 4, 5].map((v) => ({ version: v, body: { ...v1, supernode: { nodeConfig: { lr: v } } } }));
    const first = runner.apply(bodies[0] ?? null);
    while (rec.started.length === 0) await new Promise((r) => setImmediate(r));
    const results: ApplyResult[] = await Promise.all([first, ...bodies.slice(1).map((d) => runner.apply(d))]);
    expect(maxInApply).toBe(1);
    expect(rec.maxConcurrent).toBe(1);
    expect(results.map((r) => r.status)).toEqual(['cancelled', 'cancelled', 'cancelled', 'cancelled', 'applied']);
    expect(results[0]).toMatchObject({ status: 'cancelled', completed: [] });
    expect(results[0]?.status === 'cancelled' && results[0].planned.length).toBe(4);
    // 2..4 were overtaken before they started: they planned nothing and ran nothing.
    for (const r of results.slice(1, 4)) expect(r).toMatchObject({ status: 'cancelled', planned: [], completed: [] });
    expect(rec.state().supernode.configHash).toBe(configHashes(bodies[4]?.body ?? v1).supernode);
    expect(runner.busy).toBe(false);
  });

  it('waits for an executor that ignores the signal before the next apply starts any step', async () => {
    const slow = deferred();
    const reached = deferred();
    const order: string[] = [];
    const { runner } = setup({
      before: async (step) => {
        order.push(`start ${step.kind}`);
        if (step.kind === 'start-vpn' && order.length < 3) {
          reached.resolve();
          await slow.promise; // deaf to the signal
          order.push('slow step returned');
        }
      },
    });
    const first = runner.apply({ version: 1, body: v1 });
    await reached.promise;
    const { vpn: _vpn, ...noVpn } = v1;
    const second = runner.apply({ version: 2, body: noVpn });
    for (let i = 0; i < 20; i++) await new Promise((r) => setImmediate(r));
    expect(order).toEqual(['start write-vpn-config', 'start start-vpn']);
    slow.resolve();
    // The step returned, but its apply was cancelled meanwhile: it does not go on to the datasets.
    expect((await first).status).toBe('cancelled');
    expect((await second).status).toBe('applied');
    expect(order.slice(0, 3)).toEqual(['start write-vpn-config', 'start start-vpn', 'slow step returned']);
  });

  it('a failing step stops the apply and says which step failed; the next apply resumes from there', async () => {
    let failVerify = true;
    const { rec, runner } = setup({
      before: (step) => (step.kind === 'verify-dataset' && failVerify ? Promise.reject(new Error('sha256 mismatch')) : Promise.resolve()),
    });
    const r = await runner.apply({ version: 1, body: v1 });
    expect(r.status).toBe('failed');
    if (r.status !== 'failed') return;
    expect(r.step?.kind).toBe('verify-dataset');
    expect((r.error as Error).message).toBe('sha256 mismatch');
    expect(kinds(r.completed)).toEqual(['write-vpn-config', 'start-vpn']);
    // The SuperNode never started on an unverified dataset.
    expect(rec.state().supernode.running).toBe(false);
    failVerify = false;
    const again = await runner.apply({ version: 1, body: v1 });
    expect(again.status === 'applied' && kinds(again.steps)).toEqual(['verify-dataset', 'start-supernode']);
  });

  it('null stops the SuperNode, then the VPN', async () => {
    const { rec, runner } = setup();
    await runner.apply({ version: 1, body: v1 });
    const r = await runner.apply(null);
    expect(r.status === 'applied' && kinds(r.steps)).toEqual(['stop-supernode', 'stop-vpn']);
    expect(rec.state().supernode.running).toBe(false);
    expect(rec.state().vpn.running).toBe(false);
  });

  it('close() cancels the apply in progress, waits for it, and refuses later applies', async () => {
    const reached = deferred();
    let reason: unknown;
    const { runner } = setup({
      before: async (step, signal) => {
        if (step.kind === 'start-vpn') {
          reached.resolve();
          try {
            await untilAborted(signal);
          } catch (e) {
            reason = e;
            throw e;
          }
        }
      },
    });
    const p = runner.apply({ version: 1, body: v1 });
    await reached.promise;
    await runner.close();
    expect((await p).status).toBe('cancelled');
    expect(reason).toMatchObject({ code: ErrorCodes.SHUTTING_DOWN });
    expect(runner.busy).toBe(false);
    expect(await runner.apply({ version: 2, body: v1 })).toMatchObject({ status: 'cancelled', completed: [] });
  });

  it('an observe() failure fails the apply without running a step', async () => {
    const rec = recordingExecutors();
    const runner = new ApplyRunner({ executors: rec.executors, observe: () => { throw new Error('supervisor down'); } });
    expect(await runner.apply({ version: 1, body: v1 })).toMatchObject({ status: 'failed', step: null });
    expect(rec.started).toEqual([]);
  });

  it('refuses an executor map with a kind missing (a caller mistake)', () => {
    const { executors } = recordingExecutors();
    const { 'stop-vpn': _gone, ...partial } = executors;
    expect(() => new ApplyRunner({ executors: partial as typeof executors, observe: () => recordingExecutors().state() })).toThrow(TypeError);
  });
});
