// nvidia-smi --query-gpu=... --format=csv,noheader,nounits
//
// Field names as listed by `nvidia-smi --help-query-gpu`: index, uuid (alias gpu_uuid), name (alias
// gpu_name), driver_version, memory.total / memory.used (MiB), utilization.gpu (%),
// temperature.gpu (degrees C), power.draw (W). The CSV is not quoted; cells are separated by ", ".
// A value the GPU cannot report is printed in brackets ([N/A], [Not Supported], [Unknown Error],
// [Insufficient Permissions], ...) and a few fields print a bare N/A: all of those become null.
// The parser also reads the `--format=csv` form (a header line, units on the values) so that real
// captures of other queries can be checked against it.
import type { GpuInfo } from './types.ts';
import { detectError, DetectFailure, runTool, toolFailed, type ToolContext } from './run.ts';

export const NVIDIA_QUERY_FIELDS = [
  'index', 'uuid', 'name', 'driver_version', 'memory.total', 'memory.used', 'utilization.gpu', 'temperature.gpu', 'power.draw',
] as const;

export const NVIDIA_SMI_ARGS: readonly string[] = Object.freeze([
  `--query-gpu=${NVIDIA_QUERY_FIELDS.join(',')}`,
  '--format=csv,noheader,nounits',
]);

const ALIASES: Readonly<Record<string, string>> = {
  gpu_uuid: 'uuid', gpu_name: 'name', gpu_bus_id: 'pci.bus_id', gpu_serial: 'serial',
};

const NUMERIC = new Set(['index', 'memory.total', 'memory.used', 'utilization.gpu', 'temperature.gpu', 'power.draw']);
const UNITS = ['MiB', '%', 'W', 'C', 'MHz'];
const MIB = 1024 * 1024;

export type NvidiaRow = Readonly<Record<string, string | null>>;

export interface NvidiaCsvOptions {
  /** The queried fields, in order (default: the agent's own query). Ignored when `header` is set. */
  readonly fields?: readonly string[];
  /** The first line names the fields (`--format=csv` without `noheader`). */
  readonly header?: boolean;
}

function invalid(message: string, detail: Record<string, unknown> = {}): Error {
  return detectError('nvidia-smi', DetectFailure.OUTPUT_INVALID, message, detail);
}

function canonical(field: string): { name: string; unit: string | null } {
  const m = /^(.*?)\s*\[([^\]]*)\]$/.exec(field.trim());
  const raw = (m?.[1] ?? field).trim();
  return { name: ALIASES[raw] ?? raw, unit: m?.[2] ?? null };
}

function isMissing(v: string): boolean {
  return v === '' || v === 'N/A' || (v.startsWith('[') && v.endsWith(']'));
}

/** Rows of nvidia-smi CSV as field -> raw string (null when the tool could not report it). */
export function parseNvidiaSmiCsv(text: string, opts: NvidiaCsvOptions = {}): NvidiaRow[] {
  if (typeof text !== 'string') throw invalid('output is not text');
  const lines = text.split(/\r?\n/).map((l, i) => ({ l: l.trim(), n: i + 1 })).filter((x) => x.l !== '');
  let columns: Array<{ name: string; unit: string | null }>;
  if (opts.header === true) {
    const head = lines.shift();
    if (head === undefined) return [];
    columns = head.l.split(',').map(canonical);
  } else {
    columns = (opts.fields ?? NVIDIA_QUERY_FIELDS).map(canonical);
  }
  if (columns.some((c) => c.name === '')) throw invalid('empty field name in the header');
  return lines.map(({ l, n }) => {
    const cells = l.split(',').map((c) => c.trim());
    if (cells.length !== columns.length) {
      throw invalid(`line ${n}: ${cells.length} values for ${columns.length} fields`, { line: n, text: l.slice(0, 200) });
    }
    const row: Record<string, string | null> = {};
    columns.forEach((col, i) => {
      let v = cells[i] ?? '';
      const unit = col.unit ?? UNITS.find((u) => v.endsWith(` ${u}`)) ?? null;
      if (unit !== null && v.endsWith(` ${unit}`)) v = v.slice(0, -unit.length - 1).trim();
      if (isMissing(v)) {
        row[col.name] = null;
        return;
      }
      if (NUMERIC.has(col.name) && !/^-?\d+(\.\d+)?$/.test(v)) {
        throw invalid(`line ${n}: ${col.name} is not a number: ${JSON.stringify(v.slice(0, 40))}`, { line: n, field: col.name });
      }
      row[col.name] = v;
    });
    return Object.freeze(row);
  });
}

function num(row: NvidiaRow, field: string): number | null {
  const v = row[field];
  return v === undefined || v === null ? null : Number(v);
}

export function nvidiaGpuFromRow(row: NvidiaRow): GpuInfo {
  const total = num(row, 'memory.total');
  const used = num(row, 'memory.used');
  const index = num(row, 'index');
  if (index !== null && (!Number.isSafeInteger(index) || index < 0)) throw invalid(`index is not a GPU index: ${index}`);
  return {
    vendor: 'NVIDIA',
    index,
    uuid: row['uuid'] ?? null,
    model: row['name'] ?? '',
    driver: row['driver_version'] ?? null,
    memoryTotalBytes: total === null ? null : Math.round(total * MIB),
    memoryUsedBytes: used === null ? null : Math.round(used * MIB),
    utilizationPct: num(row, 'utilization.gpu'),
    temperatureC: num(row, 'temperature.gpu'),
    powerW: num(row, 'power.draw'),
  };
}

/** GPUs from nvidia-smi CSV; throws a coded AgentError (OUTPUT_INVALID) on anything else. */
export function parseNvidiaGpus(text: string, opts: NvidiaCsvOptions = {}): GpuInfo[] {
  return parseNvidiaSmiCsv(text, opts).map(nvidiaGpuFromRow);
}

// nvidia-smi's answer when the driver is loaded but no GPU is attached (exit code 6).
const NO_DEVICES = /no devices were found/i;

/** Runs the agent's query. null: nvidia-smi is not installed. Rejects with a coded AgentError. */
export async function queryNvidia(ctx: ToolContext): Promise<GpuInfo[] | null> {
  const res = await runTool(ctx, 'nvidia-smi', NVIDIA_SMI_ARGS);
  if (res === null) return null;
  if (NO_DEVICES.test(res.stdout) || NO_DEVICES.test(res.stderr)) return [];
  if (res.exitCode !== 0) throw toolFailed('nvidia-smi', res);
  return parseNvidiaGpus(res.stdout);
}
