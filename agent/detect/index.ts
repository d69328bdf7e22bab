// CPU/GPU detection: the host facts the agent reports to the hub (HostFacts in proto/sepal.proto)
// and the per-GPU readings its metrics export.
//
//   detectHost()  CPU model/cores, memory, OS, arch, hostname, GPUs (nvidia-smi, rocm-smi,
//                 systeminformation as a fallback). Never rejects because of a GPU tool: problems
//                 come back as `warnings`.
//   gpuSamples()  utilisation %, memory used/total bytes, temperature and power per GPU from
//                 nvidia-smi and rocm-smi only (the fallback has no live readings and is not loaded).
import type { Gpu, HostFacts } from '../../proto/api.ts';
import { isAgentError, type AgentError } from '../errors.ts';
import { AGENT_VERSION } from '../version.ts';
import { hostBasics, type HostSource } from './basics.ts';
import { detectGpus, toolContext, type DetectWarning, type GpuDetectOptions, type GpuSource } from './host.ts';
import { queryNvidia } from './nvidia.ts';
import { queryRocm } from './rocm.ts';
import { detectError, DetectFailure } from './run.ts';
import type { GpuInfo, GpuSample } from './types.ts';

export interface DetectOptions extends GpuDetectOptions {
  /** Where CPU, memory and OS come from (default node:os). */
  readonly host?: HostSource;
  /** The Flower version to report, when the caller knows it (default ''). */
  readonly flowerVersion?: string;
}

/** HostFacts (all proto fields, uint64 as decimal strings) plus what detection learned on the way. */
export interface HostFactsDetected extends HostFacts {
  /** Everything known about each GPU, in the order of `gpus`. */
  readonly gpuDetails: GpuInfo[];
  /** The GPU sources that answered. */
  readonly gpuSources: GpuSource[];
  /** GPU tools that are installed but failed, timed out or printed something unparseable. */
  readonly warnings: DetectWarning[];
}

export function gpuToProto(g: GpuInfo): Gpu {
  return {
    vendor: g.vendor,
    model: g.model,
    memoryBytes: g.memoryTotalBytes === null ? '0' : BigInt(g.memoryTotalBytes).toString(),
    driver: g.driver ?? '',
  };
}

export async function detectHost(opts: DetectOptions = {}): Promise<HostFactsDetected> {
  const basics = hostBasics(opts.host);
  const gpu = await detectGpus(opts);
  return {
    ...basics,
    gpus: gpu.gpus.map(gpuToProto),
    agentVersion: AGENT_VERSION,
    flowerVersion: opts.flowerVersion ?? '',
    gpuDetails: gpu.gpus,
    gpuSources: gpu.sources,
    warnings: gpu.warnings,
  };
}

/** Only the proto fields (for a request body or a JSON report). */
export function toHostFacts(d: HostFacts): HostFacts {
  return {
    hostname: d.hostname, os: d.os, arch: d.arch, cpuModel: d.cpuModel, cpuCores: d.cpuCores,
    memoryBytes: d.memoryBytes, gpus: d.gpus.map((g) => ({ vendor: g.vendor, model: g.model, memoryBytes: g.memoryBytes, driver: g.driver })),
    agentVersion: d.agentVersion, flowerVersion: d.flowerVersion,
  };
}

export interface SampleOptions extends GpuDetectOptions {
  /** Told about each installed tool that failed this time (it then contributes no samples). */
  readonly onError?: (err: AgentError, source: GpuSource) => void;
}

function toSample(g: GpuInfo): GpuSample {
  return {
    vendor: g.vendor, index: g.index, uuid: g.uuid, model: g.model,
    memoryTotalBytes: g.memoryTotalBytes, memoryUsedBytes: g.memoryUsedBytes,
    utilizationPct: g.utilizationPct, temperatureC: g.temperatureC, powerW: g.powerW,
  };
}

/** Live per-GPU readings for metrics. Never rejects because of a GPU tool; see `onError`. */
export async function gpuSamples(opts: SampleOptions = {}): Promise<GpuSample[]> {
  const ctx = toolContext(opts);
  const out: GpuSample[] = [];
  const results = await Promise.allSettled([queryNvidia(ctx), queryRocm(ctx)]);
  results.forEach((r, i) => {
    const source: GpuSource = i === 0 ? 'nvidia-smi' : 'rocm-smi';
    if (r.status === 'fulfilled') out.push(...(r.value ?? []).map(toSample));
    else opts.onError?.(asAgentError(source, r.reason), source);
  });
  return out;
}

function asAgentError(source: GpuSource, e: unknown): AgentError {
  if (isAgentError(e)) return e;
  return detectError(source, DetectFailure.TOOL_FAILED, e instanceof Error ? e.message : String(e), {}, e);
}

export { hostBasics, type HostBasics, type HostSource } from './basics.ts';
export { detectGpus, gpuFromController, type DetectWarning, type GpuDetection, type GpuDetectOptions, type GpuSource, type GraphicsController } from './host.ts';
export { NVIDIA_QUERY_FIELDS, NVIDIA_SMI_ARGS, parseNvidiaGpus, parseNvidiaSmiCsv, type NvidiaCsvOptions, type NvidiaRow } from './nvidia.ts';
export { ROCM_SMI_ARGS, parseRocmGpus } from './rocm.ts';
export { defaultRunner, defaultWhich, DetectFailure, TOOL_TIMEOUT_MS, type DetectFailureReason, type GpuTool, type RunResult, type Runner, type Which } from './run.ts';
export type { GpuInfo, GpuSample, GpuVendor } from './types.ts';
