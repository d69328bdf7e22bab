// What the GPU parsers produce. A value the tool could not give ([N/A], [Not Supported], "N/A")
// is null, never a made-up zero, so a reader can tell "0 %" from "not reported".

export type GpuVendor = 'NVIDIA' | 'AMD' | (string & {});

export interface GpuInfo {
  readonly vendor: GpuVendor;
  /** The tool's own index (nvidia-smi `index`, rocm-smi `cardN`). */
  readonly index: number | null;
  readonly uuid: string | null;
  readonly model: string;
  readonly driver: string | null;
  readonly memoryTotalBytes: number | null;
  readonly memoryUsedBytes: number | null;
  readonly utilizationPct: number | null;
  readonly temperatureC: number | null;
  readonly powerW: number | null;
}

/** One GPU's live readings for metrics. */
export type GpuSample = Omit<GpuInfo, 'driver'>;
