// The host facts that need no child process: CPU, memory, OS, hostname (node:os only, so
// importing this costs nothing).
import os from 'node:os';

export interface HostSource {
  hostname(): string;
  type(): string;
  release(): string;
  arch(): string;
  cpus(): Array<{ model: string }>;
  availableParallelism(): number;
  totalmem(): number;
}

export interface HostBasics {
  hostname: string;
  /** `${os.type()} ${os.release()}`, e.g. "Linux 6.1.0-18-amd64" (kernel name and release). */
  os: string;
  arch: string;
  cpuModel: string;
  cpuCores: number;
  /** uint64 as a decimal string (see proto/api.ts). */
  memoryBytes: string;
}

export function hostBasics(src: HostSource = os): HostBasics {
  const cpus = src.cpus();
  return {
    hostname: src.hostname(),
    os: `${src.type()} ${src.release()}`,
    arch: src.arch(),
    cpuModel: (cpus[0]?.model ?? '').trim(),
    // Logical CPUs; some containers and platforms report no per-CPU entries.
    cpuCores: cpus.length > 0 ? cpus.length : src.availableParallelism(),
    memoryBytes: String(src.totalmem()),
  };
}
