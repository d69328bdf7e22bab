// What the hub learns about this host at enrollment (HostFacts in sepal.proto). GPUs and the Flower
// version arrive with their detectors; until then they are empty.
import os from 'node:os';
import type { HostFacts } from '../../proto/api.ts';
import { AGENT_VERSION } from '../version.ts';

export interface FactsSource {
  hostname(): string;
  type(): string;
  release(): string;
  arch(): string;
  cpus(): Array<{ model: string }>;
  availableParallelism(): number;
  totalmem(): number;
}

export function collectFacts(src: FactsSource = os): HostFacts {
  const cpus = src.cpus();
  return {
    hostname: src.hostname(),
    os: `${src.type()} ${src.release()}`,
    arch: src.arch(),
    cpuModel: (cpus[0]?.model ?? '').trim(),
    cpuCores: cpus.length > 0 ? cpus.length : src.availableParallelism(),
    // uint64 travels as a decimal string (see proto/api.ts).
    memoryBytes: String(src.totalmem()),
    gpus: [],
    agentVersion: AGENT_VERSION,
    flowerVersion: '',
  };
}
