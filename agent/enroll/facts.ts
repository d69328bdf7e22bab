// What the hub learns about this host at enrollment (HostFacts in sepal.proto). The detection
// itself lives in agent/detect/: collectFacts() is its synchronous part (CPU, memory, OS; no GPUs,
// no child process), detectFacts() adds the GPUs from nvidia-smi / rocm-smi / systeminformation.
import os from 'node:os';
import type { HostFacts } from '../../proto/api.ts';
import { hostBasics, type HostSource } from '../detect/basics.ts';
import type { DetectOptions } from '../detect/index.ts';
import { AGENT_VERSION } from '../version.ts';

export type FactsSource = HostSource;

export function collectFacts(src: FactsSource = os): HostFacts {
  return {
    ...hostBasics(src),
    gpus: [],
    agentVersion: AGENT_VERSION,
    flowerVersion: '',
  };
}

/** The full facts, GPUs included (runs the GPU tools; never rejects because of one). */
export async function detectFacts(opts: DetectOptions = {}): Promise<HostFacts> {
  const { detectHost, toHostFacts } = await import('../detect/index.ts');
  return toHostFacts(await detectHost(opts));
}
