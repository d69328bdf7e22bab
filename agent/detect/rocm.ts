// rocm-smi --showproductname --showmeminfo vram --showuse --showtemp --showdriverversion --json
//
// rocm-smi (python_smi_tools/rocm_smi.py in ROCm/rocm_smi_lib) prints one object per GPU under
// "card<N>" and system-wide values under "system"; every value is a string. The keys are the
// labels of the text output and have changed across ROCm releases ("Card series" became
// "Card Series", "(c)" became "(C)", "GPU ID" became "Device ID"), so they are matched without
// regard to case. Keys read here:
//   Card Series / Device Name / Card Model              product name (--showproductname)
//   VRAM Total Memory (B), VRAM Total Used Memory (B)    (--showmeminfo vram)
//   GPU use (%)                                         (--showuse)
//   Temperature (Sensor edge|junction|memory|...) (C)   (--showtemp)
//   Average Graphics Package Power (W) or Current Socket Graphics Package Power (W)  (--showpower, if present)
//   Unique ID, system."Driver version"                  (--showdriverversion)
// "N/A" means the GPU cannot report the value and becomes null.
import type { GpuInfo } from './types.ts';
import { detectError, DetectFailure, runTool, toolFailed, type ToolContext } from './run.ts';

export const ROCM_SMI_ARGS: readonly string[] = Object.freeze([
  '--showproductname', '--showmeminfo', 'vram', '--showuse', '--showtemp', '--showdriverversion', '--json',
]);

function invalid(message: string, detail: Record<string, unknown> = {}): Error {
  return detectError('rocm-smi', DetectFailure.OUTPUT_INVALID, message, detail);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function parseJsonObject(text: string): Record<string, unknown> {
  const attempts = [text.trim()];
  // Some releases print a warning line before the JSON document.
  const start = text.indexOf('{');
  const end = text.lastIndexOf('}');
  if (start > 0 && end > start) attempts.push(text.slice(start, end + 1));
  for (const a of attempts) {
    try {
      const v: unknown = JSON.parse(a);
      if (isObject(v)) return v;
      throw invalid('output is JSON but not an object');
    } catch (e) {
      if (!(e instanceof SyntaxError)) throw e;
    }
  }
  throw invalid('output is not JSON', { text: text.trim().slice(0, 200) });
}

/** Case-insensitive view of one card's string values; "N/A" and "" read as null. */
function fields(card: string, obj: Record<string, unknown>): (key: string) => string | null {
  const m = new Map<string, string>();
  for (const [k, v] of Object.entries(obj)) {
    if (typeof v === 'string' || typeof v === 'number') m.set(k.toLowerCase(), String(v).trim());
    else if (v !== null) throw invalid(`${card}.${k} is not a string`);
  }
  return (key) => {
    const v = m.get(key.toLowerCase());
    return v === undefined || v === '' || v.toUpperCase() === 'N/A' ? null : v;
  };
}

function number(card: string, key: string, v: string | null): number | null {
  if (v === null) return null;
  if (!/^-?\d+(\.\d+)?$/.test(v)) throw invalid(`${card}: ${key} is not a number: ${JSON.stringify(v.slice(0, 40))}`, { card, field: key });
  return Number(v);
}

const HEX_ID = /^0x[0-9a-f]+$/i;

function model(get: (key: string) => string | null): string {
  for (const key of ['Card Series', 'Device Name', 'Card Model']) {
    const v = get(key);
    if (v !== null && !HEX_ID.test(v)) return v;
  }
  const id = get('Device ID') ?? get('GPU ID');
  return id === null ? 'AMD GPU' : `AMD GPU ${id}`;
}

function temperature(card: string, keys: string[], get: (key: string) => string | null): number | null {
  const sensors = ['edge', 'junction', 'memory', 'mem'];
  for (const s of sensors) {
    const t = number(card, `Temperature (Sensor ${s}) (C)`, get(`Temperature (Sensor ${s}) (C)`));
    if (t !== null) return t;
  }
  for (const k of keys) {
    if (!/^temperature \(sensor .*\) \(c\)$/i.test(k)) continue;
    const t = number(card, k, get(k));
    if (t !== null) return t;
  }
  return null;
}

/** GPUs from `rocm-smi ... --json`; throws a coded AgentError (OUTPUT_INVALID) on anything else. */
export function parseRocmGpus(text: string): GpuInfo[] {
  if (typeof text !== 'string') throw invalid('output is not text');
  const root = parseJsonObject(text);
  const system = isObject(root['system']) ? fields('system', root['system']) : () => null;
  const driver = system('Driver version');
  const cards: Array<[number, string, Record<string, unknown>]> = [];
  for (const [key, value] of Object.entries(root)) {
    const m = /^card(\d+)$/.exec(key);
    if (m === null) continue;
    if (!isObject(value)) throw invalid(`${key} is not an object`);
    cards.push([Number(m[1]), key, value]);
  }
  cards.sort((a, b) => a[0] - b[0]);
  return cards.map(([index, card, obj]) => {
    const get = fields(card, obj);
    const num = (key: string) => number(card, key, get(key));
    return {
      vendor: 'AMD',
      index,
      uuid: get('Unique ID'),
      model: model(get),
      driver,
      memoryTotalBytes: num('VRAM Total Memory (B)'),
      memoryUsedBytes: num('VRAM Total Used Memory (B)'),
      utilizationPct: num('GPU use (%)'),
      temperatureC: temperature(card, Object.keys(obj), get),
      powerW: num('Average Graphics Package Power (W)') ?? num('Current Socket Graphics Package Power (W)'),
    };
  });
}

/** Runs the agent's query. null: rocm-smi is not installed. Rejects with a coded AgentError. */
export async function queryRocm(ctx: ToolContext): Promise<GpuInfo[] | null> {
  const res = await runTool(ctx, 'rocm-smi', ROCM_SMI_ARGS);
  if (res === null) return null;
  // rocm-smi exits non-zero when some value is unsupported yet still prints the document: use it.
  if (res.stdout.trim() === '') {
    if (res.exitCode !== 0) throw toolFailed('rocm-smi', res);
    return [];
  }
  try {
    return parseRocmGpus(res.stdout);
  } catch (e) {
    if (res.exitCode !== 0) throw toolFailed('rocm-smi', res);
    throw e;
  }
}
