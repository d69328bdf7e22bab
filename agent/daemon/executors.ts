// The reconcile executors of this version. Datasets are checked for real (path present, sha256
// when the manifest gives one: a mismatch blocks the SuperNode and is a security event). The
// SuperNode and the VPN are not supervised yet (the supervisor arrives with the Flower and VPN
// work): their steps record the configuration the node should run, and the children show as
// 'not-managed' in status and metrics instead of pretending to run.
import crypto from 'node:crypto';
import fs from 'node:fs';
import type { NodeRuntimeState } from '../reconcile/steps.ts';
import type { Executors } from '../reconcile/runner.ts';
import { AgentError, ErrorCodes } from '../errors.ts';

export type ChildName = 'supernode' | 'vpn';

export interface ChildView {
  readonly state: 'not-configured' | 'not-managed' | 'stopped';
  readonly configHash: string | null;
}

export class RecordedRuntime {
  readonly children: Record<ChildName, ChildView> = {
    supernode: { state: 'not-configured', configHash: null },
    vpn: { state: 'not-configured', configHash: null },
  };
  datasets: Record<string, { path: string; verifiedSha256: string | null }> = {};

  observe(): NodeRuntimeState {
    // Children are not supervised in this version: a configured child counts as "running" for
    // the planner (so an unchanged manifest plans nothing and a revocation plans the stops), while
    // status and metrics say 'not-managed' and never report it up.
    const view = (c: ChildView) => ({ running: c.state === 'not-managed', configHash: c.configHash });
    return { supernode: view(this.children.supernode), vpn: view(this.children.vpn), datasets: { ...this.datasets } };
  }
}

async function sha256File(file: string, signal: AbortSignal): Promise<string> {
  const hash = crypto.createHash('sha256');
  const stream = fs.createReadStream(file, { signal });
  for await (const chunk of stream) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

export function recordingChildExecutors(rt: RecordedRuntime, onSecurityEvent: (code: string, detail: Record<string, unknown>) => void): Executors {
  const configure = (child: ChildName, configHash: string) => {
    rt.children[child] = { state: 'not-managed', configHash };
    return Promise.resolve();
  };
  const stop = (child: ChildName) => {
    rt.children[child] = { state: 'stopped', configHash: null };
    return Promise.resolve();
  };
  return {
    'verify-dataset': async (step, signal) => {
      const st = fs.statSync(step.path, { throwIfNoEntry: false });
      if (st === undefined) {
        delete rt.datasets[step.name];
        throw new AgentError(ErrorCodes.DATASET_MISSING, `dataset ${step.name}: ${step.path} does not exist`);
      }
      if (step.sha256 !== undefined) {
        if (!st.isFile()) throw new AgentError(ErrorCodes.DATASET_MISMATCH, `dataset ${step.name}: a sha256 is given but ${step.path} is not a file`);
        const got = await sha256File(step.path, signal);
        if (got !== step.sha256) {
          delete rt.datasets[step.name];
          onSecurityEvent(ErrorCodes.DATASET_MISMATCH, { dataset: step.name, path: step.path, expected: step.sha256, actual: got });
          throw new AgentError(ErrorCodes.DATASET_MISMATCH, `dataset ${step.name}: sha256 of ${step.path} is ${got}, the manifest says ${step.sha256}`);
        }
      }
      rt.datasets[step.name] = { path: step.path, verifiedSha256: step.sha256 ?? null };
    },
    'write-vpn-config': (step) => configure('vpn', step.configHash),
    'start-vpn': (step) => configure('vpn', step.configHash),
    'restart-vpn': (step) => configure('vpn', step.configHash),
    'stop-vpn': () => stop('vpn'),
    'start-supernode': (step) => configure('supernode', step.configHash),
    'restart-supernode': (step) => configure('supernode', step.configHash),
    'stop-supernode': () => stop('supernode'),
  };
}
