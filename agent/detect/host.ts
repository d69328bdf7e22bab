// GPU discovery for the host facts: nvidia-smi, then rocm-smi when present (both run; a host may
// have both), and only when neither answered, systeminformation.graphics() as a fallback. The
// fallback is imported on demand: loading systeminformation costs about 10 MB of RSS, which an
// idle agent on a GPU host (or a host without GPUs that says so) never pays.
import type { Systeminformation } from 'systeminformation';
import { ErrorCodes, isAgentError, type ErrorCode } from '../errors.ts';
import { queryNvidia } from './nvidia.ts';
import { queryRocm } from './rocm.ts';
import { defaultRunner, defaultWhich, detectError, DetectFailure, type GpuTool, type Runner, type ToolContext, type Which } from './run.ts';
import type { GpuInfo } from './types.ts';

export type GpuSource = GpuTool | 'systeminformation';

export interface DetectWarning {
  readonly source: GpuSource;
  readonly code: ErrorCode;
  readonly reason: string;
  readonly message: string;
}

export type GraphicsController = Pick<Systeminformation.GraphicsControllerData, 'vendor' | 'model' | 'vram' | 'vramDynamic'>
  & Partial<Pick<Systeminformation.GraphicsControllerData, 'vendorId' | 'driverVersion' | 'name'>>;

export interface GpuDetectOptions {
  /** Runs a tool; default: execFile with a 5 s timeout. */
  readonly run?: Runner;
  /** Finds a tool; default: PATH (absolute entries) plus vendor dirs. With only `run` injected, the
   * bare tool name is handed to it and the runner decides (ENOENT = not installed). */
  readonly which?: Which;
  /** systeminformation's graphics(); default: imported on first use. */
  readonly graphics?: () => Promise<{ controllers: GraphicsController[] }>;
}

export interface GpuDetection {
  readonly gpus: GpuInfo[];
  /** The sources that answered (an answer may be "no GPUs"). */
  readonly sources: GpuSource[];
  readonly warnings: DetectWarning[];
}

export const FALLBACK_TIMEOUT_MS = 10_000;

export function toolContext(opts: GpuDetectOptions = {}): ToolContext {
  const run = opts.run ?? defaultRunner;
  const which = opts.which ?? (opts.run === undefined ? defaultWhich : (tool: GpuTool) => Promise.resolve(tool));
  return { run, which };
}

export function warningOf(source: GpuSource, e: unknown): DetectWarning {
  if (isAgentError(e)) {
    const reason = typeof e.detail?.['reason'] === 'string' ? e.detail['reason'] : 'UNKNOWN';
    return { source, code: e.code, reason, message: e.message };
  }
  return { source, code: ErrorCodes.INTERNAL, reason: DetectFailure.TOOL_FAILED, message: `${source}: ${e instanceof Error ? e.message : String(e)}` };
}

type Probe = { ok: true; gpus: GpuInfo[] | null } | { ok: false; error: unknown };

async function probe(q: Promise<GpuInfo[] | null>): Promise<Probe> {
  try {
    return { ok: true, gpus: await q };
  } catch (error) {
    return { ok: false, error };
  }
}

// Display adapters that are not compute GPUs: server BMC VGA (ASPEED, Matrox G200) and the
// emulated adapters of hypervisors. PCI vendor ids and names.
const NOT_A_GPU_VENDOR_IDS = new Set(['1a03', '102b', '1013', '15ad', '80ee', '1234', '1af4', '1414', '1ab8', '5853']);
const NOT_A_GPU_NAME = /\b(aspeed|matrox|cirrus|vmware|virtualbox|innotek|qemu|bochs|virtio|hyper-v|microsoft basic|parallels|xen|llvmpipe)\b/i;

function vendorName(v: string): string {
  if (/nvidia/i.test(v)) return 'NVIDIA';
  if (/advanced micro devices|\bamd\b|\bati\b/i.test(v)) return 'AMD';
  if (/intel/i.test(v)) return 'Intel';
  if (/apple/i.test(v)) return 'Apple';
  return v.trim();
}

/** The fallback's view of one controller, or null for a display-only/emulated adapter. */
export function gpuFromController(c: GraphicsController, index: number): GpuInfo | null {
  const vendor = (c.vendor ?? '').trim();
  const model = (c.model ?? c.name ?? '').trim();
  if (vendor === '' && model === '') return null;
  const id = (c.vendorId ?? '').toLowerCase().replace(/^0x/, '');
  if (NOT_A_GPU_VENDOR_IDS.has(id) || NOT_A_GPU_NAME.test(`${vendor} ${model}`)) return null;
  const vram = typeof c.vram === 'number' && Number.isFinite(c.vram) && c.vram > 0 && c.vramDynamic !== true ? c.vram : null;
  return {
    vendor: vendorName(vendor),
    index,
    uuid: null,
    model,
    driver: c.driverVersion !== undefined && c.driverVersion !== '' ? c.driverVersion : null,
    memoryTotalBytes: vram === null ? null : Math.round(vram * 1024 * 1024),
    memoryUsedBytes: null,
    utilizationPct: null,
    temperatureC: null,
    powerW: null,
  };
}

async function siGraphics(): Promise<{ controllers: GraphicsController[] }> {
  const si = await import('systeminformation');
  return si.graphics();
}

async function fallback(opts: GpuDetectOptions): Promise<GpuInfo[]> {
  const graphics = opts.graphics ?? siGraphics;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(detectError('systeminformation', DetectFailure.TOOL_TIMEOUT, `no answer within ${FALLBACK_TIMEOUT_MS} ms`)), FALLBACK_TIMEOUT_MS);
    timer.unref();
  });
  try {
    const data = await Promise.race([graphics(), timeout]);
    const controllers = Array.isArray(data?.controllers) ? data.controllers : [];
    return controllers.map((c, i) => gpuFromController(c, i)).filter((g): g is GpuInfo => g !== null);
  } catch (e) {
    if (isAgentError(e)) throw e;
    throw detectError('systeminformation', DetectFailure.TOOL_FAILED, `graphics() failed: ${e instanceof Error ? e.message : String(e)}`, {}, e);
  } finally {
    clearTimeout(timer);
  }
}

/** Never rejects: a tool that is missing is skipped, one that fails becomes a warning. */
export async function detectGpus(opts: GpuDetectOptions = {}): Promise<GpuDetection> {
  const ctx = toolContext(opts);
  const [nv, amd] = await Promise.all([probe(queryNvidia(ctx)), probe(queryRocm(ctx))]);
  const gpus: GpuInfo[] = [];
  const sources: GpuSource[] = [];
  const warnings: DetectWarning[] = [];
  for (const [source, p] of [['nvidia-smi', nv], ['rocm-smi', amd]] as const) {
    if (!p.ok) warnings.push(warningOf(source, p.error));
    else if (p.gpus !== null) {
      sources.push(source);
      gpus.push(...p.gpus);
    }
  }
  if (sources.length === 0) {
    try {
      gpus.push(...await fallback(opts));
      sources.push('systeminformation');
    } catch (e) {
      warnings.push(warningOf('systeminformation', e));
    }
  }
  return { gpus, sources, warnings };
}
