// Executors that do nothing but record each step and keep a simulated runtime state, so the
// planner and the runner can be exercised end to end without processes (tests; a dry run).
import type { Executors } from './runner.ts';
import { idleState, type NodeRuntimeState, type Step } from './steps.ts';

export interface RecordingOptions {
  readonly initial?: NodeRuntimeState;
  /** Awaited before a step takes effect, e.g. to hold a step until the signal aborts. A throw
   *  fails the step and leaves the state as it was. */
  readonly before?: (step: Step, signal: AbortSignal) => Promise<void>;
}

export interface Recording {
  readonly executors: Executors;
  /** Steps that took effect, in order. */
  readonly calls: Step[];
  /** Steps started, including those that were aborted or failed. */
  readonly started: Step[];
  /** The simulated state (pass as the runner's observe). */
  state(): NodeRuntimeState;
  /** Most steps ever in progress at once. */
  readonly maxConcurrent: number;
}

export function recordingExecutors(opts: RecordingOptions = {}): Recording {
  let state: NodeRuntimeState = structuredClone(opts.initial ?? idleState());
  const calls: Step[] = [];
  const started: Step[] = [];
  let inFlight = 0;
  let maxConcurrent = 0;

  const apply = (step: Step): NodeRuntimeState => {
    switch (step.kind) {
      case 'verify-dataset':
        return { ...state, datasets: { ...state.datasets, [step.name]: { path: step.path, verifiedSha256: step.sha256 ?? null } } };
      case 'write-vpn-config':
        return { ...state, vpn: { ...state.vpn, configHash: step.configHash } };
      case 'start-vpn':
      case 'restart-vpn':
        return { ...state, vpn: { running: true, configHash: step.configHash } };
      case 'stop-vpn':
        return { ...state, vpn: { ...state.vpn, running: false } };
      case 'start-supernode':
      case 'restart-supernode':
        return { ...state, supernode: { running: true, configHash: step.configHash } };
      case 'stop-supernode':
        return { ...state, supernode: { ...state.supernode, running: false } };
    }
  };

  const run = async (step: Step, signal: AbortSignal): Promise<void> => {
    started.push(step);
    inFlight++;
    maxConcurrent = Math.max(maxConcurrent, inFlight);
    try {
      if (opts.before !== undefined) await opts.before(step, signal);
      signal.throwIfAborted();
      state = apply(step);
      calls.push(step);
    } finally {
      inFlight--;
    }
  };

  const executors: Executors = {
    'verify-dataset': run,
    'write-vpn-config': run,
    'start-vpn': run,
    'restart-vpn': run,
    'stop-vpn': run,
    'start-supernode': run,
    'restart-supernode': run,
    'stop-supernode': run,
  };
  return {
    executors,
    calls,
    started,
    state: () => state,
    get maxConcurrent() {
      return maxConcurrent;
    },
  };
}
