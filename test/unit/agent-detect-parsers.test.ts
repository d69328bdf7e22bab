// GPU tool parsers on outputs recorded from the real tools (test/fixtures/detect/README.md names the
// source and the exact command of each file), plus garbage: anything the parsers cannot read is a
// coded AgentError, never a crash and never a made-up value.
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { AgentError } from '../../agent/errors.ts';
import {
  DetectFailure, NVIDIA_QUERY_FIELDS, NVIDIA_SMI_ARGS, ROCM_SMI_ARGS, parseNvidiaGpus, parseNvidiaSmiCsv, parseRocmGpus, type GpuInfo,
} from '../../agent/detect/index.ts';
import { ErrorCodes } from '../../proto/errors.ts';

const DIR = path.join(import.meta.dirname, '..', 'fixtures', 'detect');
const fixture = (name: string): string => fs.readFileSync(path.join(DIR, name), 'utf8');
const MIB = 1024 * 1024;
const MASKED_UUID = 'GPU-00000000-0000-0000-0000-000000000000';

function outputInvalid(fn: () => unknown): AgentError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(AgentError);
    const err = e as AgentError;
    expect(err.code).toBe(ErrorCodes.INTERNAL);
    expect(err.detail?.['reason']).toBe(DetectFailure.OUTPUT_INVALID);
    return err;
  }
  throw new Error('expected OUTPUT_INVALID');
}

function nv(over: Partial<GpuInfo>): GpuInfo {
  return {
    vendor: 'NVIDIA', index: null, uuid: null, model: '', driver: null, memoryTotalBytes: null, memoryUsedBytes: null,
    utilizationPct: null, temperatureC: null, powerW: null, ...over,
  };
}

describe('the commands', () => {
  it('nvidia-smi: the documented query fields, CSV without header or units', () => {
    expect(NVIDIA_SMI_ARGS).toEqual([
      '--query-gpu=index,uuid,name,driver_version,memory.total,memory.used,utilization.gpu,temperature.gpu,power.draw',
      '--format=csv,noheader,nounits',
    ]);
    expect(Object.isFrozen(NVIDIA_SMI_ARGS)).toBe(true);
  });

  it('rocm-smi: product name, VRAM, use, temperature, driver version, as JSON', () => {
    expect(ROCM_SMI_ARGS).toEqual(['--showproductname', '--showmeminfo', 'vram', '--showuse', '--showtemp', '--showdriverversion', '--json']);
  });
});

describe('nvidia-smi CSV: recorded outputs', () => {
  it('RTX 2080 SUPER, --format=csv (header, units), 202 fields, driver 595.71.05', () => {
    expect(parseNvidiaGpus(fixture('nvidia-smi-csv-rtx2080super-595.71.05.csv'), { header: true })).toEqual([nv({
      index: 0, uuid: MASKED_UUID, model: 'NVIDIA GeForce RTX 2080 SUPER', driver: '595.71.05',
      memoryTotalBytes: 8192 * MIB, memoryUsedBytes: 214 * MIB, utilizationPct: 0, temperatureC: 40, powerW: 39.32,
    })]);
  });

  it('L40S under load, driver 595.80', () => {
    expect(parseNvidiaGpus(fixture('nvidia-smi-csv-l40s-load-595.80.csv'), { header: true })).toEqual([nv({
      index: 0, uuid: MASKED_UUID, model: 'NVIDIA L40S', driver: '595.80',
      memoryTotalBytes: 46068 * MIB, memoryUsedBytes: 1235 * MIB, utilizationPct: 9, temperatureC: 54, powerW: 110.23,
    })]);
  });

  it('H100 with MIG enabled: utilization.gpu is [N/A] -> null, the rest is read', () => {
    const rows = parseNvidiaSmiCsv(fixture('nvidia-smi-csv-h100-mig-590.48.01.csv'), { header: true });
    expect(rows).toHaveLength(1);
    expect(rows[0]?.['mig.mode.current']).toBe('Enabled');
    expect(rows[0]?.['utilization.gpu']).toBeNull();
    expect(rows[0]?.['temperature.memory']).toBe('48');
    expect(rows[0]?.['fabric.health.summary']).toBeNull(); // a bare "N/A"
    expect(rows[0]?.['platform.chassis_serial_number']).toBeNull(); // an empty cell
    expect(parseNvidiaGpus(fixture('nvidia-smi-csv-h100-mig-590.48.01.csv'), { header: true })).toEqual([nv({
      index: 0, uuid: MASKED_UUID, model: 'NVIDIA H100 80GB HBM3', driver: '590.48.01',
      memoryTotalBytes: 81559 * MIB, memoryUsedBytes: 59 * MIB, utilizationPct: null, temperatureC: 42, powerW: 71.15,
    })]);
  });

  it('five GPUs with a header (name, pci.bus, index, uuid)', () => {
    const gpus = parseNvidiaGpus(fixture('nvidia-smi-csv-5gpus-nuxhash10.csv'), { header: true });
    expect(gpus.map((g) => [g.index, g.model, g.uuid])).toEqual([
      [0, 'GeForce GTX 1060 6GB', 'GPU-f3da2e71-6e43-729a-e3ae-f731ed96d50c'],
      [1, 'GeForce GTX 1080 Ti', 'GPU-15ea7bf9-1a0e-2d7f-9c62-c28e5ca1aaf1'],
      [2, 'GeForce GTX 1060 6GB', 'GPU-3dc4f2b0-6e1b-c088-c342-4367c334795a'],
      [3, 'GeForce GTX 1060 6GB', 'GPU-03ddeff3-19c4-6676-d02d-6942bd80630d'],
      [4, 'GeForce GTX 1060 6GB', 'GPU-ff3318a7-f0dd-dc57-1fb8-cc95ba35c56e'],
    ]);
    expect(gpus.every((g) => g.memoryTotalBytes === null && g.driver === null)).toBe(true);
  });

  it('noheader,nounits, one GPU, gpu_uuid alias, bare N/A and [N/A] (RTX 2080, driver 440.64)', () => {
    const fields = ('power.limit,power.min_limit,power.max_limit,memory.total,vbios_version,driver_version,compute_mode,name,gpu_uuid,' +
      'power.draw,temperature.gpu,temperature.memory,clocks.gr,clocks.sm,clocks.mem,clocks.video,clocks.max.gr,clocks.max.sm,' +
      'clocks.max.mem,utilization.gpu,utilization.memory,memory.used,fan.speed,gom.current,pcie.link.width.current,' +
      'pcie.link.gen.current,pstate').split(',');
    const text = fixture('nvidia-smi-noheader-nounits-1gpu-rtx2080-gpu-utils83.txt');
    const [row] = parseNvidiaSmiCsv(text, { fields });
    expect(row?.['temperature.memory']).toBeNull();
    expect(row?.['gom.current']).toBeNull();
    expect(row?.['pstate']).toBe('P2');
    expect(parseNvidiaGpus(text, { fields })).toEqual([nv({
      uuid: 'GPU-089608fe-cba5-4711-bf68-085fd0711d8c', model: 'GeForce RTX 2080', driver: '440.64',
      memoryTotalBytes: 7982 * MIB, memoryUsedBytes: 325 * MIB, utilizationPct: 89, temperatureC: 56, powerW: 185.95,
    })]);
  });

  it('noheader,nounits with spaces after commas: [N/A] (new drivers) and [Not Supported] (old) are both null', () => {
    const fields = ['memory.total', 'memory.free', 'memory.used', 'temperature.gpu', 'fan.speed', 'utilization.gpu', 'utilization.memory'];
    for (const f of ['nvidia-smi-noheader-nounits-1gpu-na-i3pystatus776.txt', 'nvidia-smi-noheader-nounits-1gpu-not-supported-i3pystatus776.txt']) {
      expect(parseNvidiaSmiCsv(fixture(f), { fields })).toEqual([{
        'memory.total': '2004', 'memory.free': '2004', 'memory.used': '0', 'temperature.gpu': '44', 'fan.speed': null,
        'utilization.gpu': '0', 'utilization.memory': '0',
      }]);
      expect(parseNvidiaGpus(fixture(f), { fields })).toEqual([nv({ memoryTotalBytes: 2004 * MIB, memoryUsedBytes: 0, temperatureC: 44, utilizationPct: 0 })]);
    }
  });

  it('noheader,nounits, three GPUs, one field per line', () => {
    expect(parseNvidiaGpus(fixture('nvidia-smi-noheader-nounits-3gpus-power-gpu-utils83.txt'), { fields: ['power.draw'] }).map((g) => g.powerW))
      .toEqual([133.91, 189.84, 104.34]);
  });

  it("the agent's own query (constructed from two recorded rows, see README): 2 GPUs, MIG one without utilisation", () => {
    expect(parseNvidiaGpus(fixture('constructed-nvidia-smi-sepal-query-2gpus.txt'))).toEqual([
      nv({ index: 0, uuid: MASKED_UUID, model: 'NVIDIA H100 80GB HBM3', driver: '590.48.01', memoryTotalBytes: 81559 * MIB, memoryUsedBytes: 0, utilizationPct: 0, temperatureC: 41, powerW: 69.85 }),
      nv({ index: 1, uuid: MASKED_UUID, model: 'NVIDIA H100 80GB HBM3', driver: '590.48.01', memoryTotalBytes: 81559 * MIB, memoryUsedBytes: 59 * MIB, utilizationPct: null, temperatureC: 42, powerW: 71.15 }),
    ]);
  });
});

describe('nvidia-smi CSV: shapes and garbage', () => {
  const row = '0, GPU-aaaa, NVIDIA A100-SXM4-40GB, 535.129.03, 40960, 1024, 12, 41, 88.50';

  it('trailing newline, CRLF, blank lines, no spaces after commas: same answer', () => {
    const want = parseNvidiaGpus(row);
    expect(want).toHaveLength(1);
    expect(parseNvidiaGpus(`${row}\n`)).toEqual(want);
    expect(parseNvidiaGpus(`\r\n${row}\r\n\r\n`)).toEqual(want);
    expect(parseNvidiaGpus(row.replaceAll(', ', ','))).toEqual(want);
  });

  it('no output: no GPUs', () => {
    expect(parseNvidiaGpus('')).toEqual([]);
    expect(parseNvidiaGpus('\n')).toEqual([]);
  });

  it('every bracketed value is "not available"', () => {
    const g = parseNvidiaGpus('0, GPU-a, X, 1.0, [Unknown Error], [Insufficient Permissions], [GPU requires reset], [Not Supported], [N/A]');
    expect(g[0]).toMatchObject({ memoryTotalBytes: null, memoryUsedBytes: null, utilizationPct: null, temperatureC: null, powerW: null });
  });

  it('the default field list is the query the agent sends', () => {
    expect(Object.keys(parseNvidiaSmiCsv(row)[0] ?? {})).toEqual([...NVIDIA_QUERY_FIELDS]);
  });

  it('garbage is OUTPUT_INVALID with the line number', () => {
    expect(outputInvalid(() => parseNvidiaGpus('hello world')).detail?.['line']).toBe(1);
    expect(outputInvalid(() => parseNvidiaGpus(`${row}\n0, GPU-b, X`)).detail?.['line']).toBe(2);
    expect(outputInvalid(() => parseNvidiaGpus(`${row}, extra`)).message).toMatch(/10 values for 9 fields/);
    expect(outputInvalid(() => parseNvidiaGpus(row.replace('40960', 'lots'))).detail?.['field']).toBe('memory.total');
    outputInvalid(() => parseNvidiaGpus(row.replace(/^0/, '-1')));
    outputInvalid(() => parseNvidiaGpus('NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver.'));
    outputInvalid(() => parseNvidiaGpus('\u0000\u0001\u0002,,,,,,,,'.repeat(3)));
  });
});

describe('rocm-smi JSON: recorded outputs', () => {
  const amd = (over: Partial<GpuInfo>): GpuInfo => ({ ...nv({}), vendor: 'AMD', ...over });

  it('RX 6700 XT, ROCm 6.1.2 (Card Series, edge temperature, system driver version)', () => {
    expect(parseRocmGpus(fixture('rocm-smi-json-1gpu-rx6700xt-rocm612-telegraf.json'))).toEqual([amd({
      index: 0, model: 'Navi 22 [Radeon RX 6700/6700 XT / 6800M]', driver: '6.3.6',
      memoryTotalBytes: 12868124672, memoryUsedBytes: 1572745216, utilizationPct: 0, temperatureC: 45, powerW: 6,
    })]);
  });

  it('RX 6700 XT, ROCm 4.3: "Card series" is only a vendor id, HBM sensors N/A', () => {
    expect(parseRocmGpus(fixture('rocm-smi-json-1gpu-rx6700xt-rocm430-telegraf.json'))).toEqual([amd({
      index: 0, model: 'AMD GPU 0x73df', driver: '6.3.6',
      memoryTotalBytes: 12868124672, memoryUsedBytes: 1622728704, utilizationPct: 0, temperatureC: 45, powerW: 6,
    })]);
  });

  it('four MI100 (ROCm 6.0.2), in card order, with unique ids', () => {
    const gpus = parseRocmGpus(fixture('rocm-smi-json-4gpus-mi100-rocm602-telegraf.json'));
    expect(gpus.map((g) => [g.index, g.uuid, g.temperatureC, g.powerW])).toEqual([
      [0, '0x79ccd55167a2124a', 53, 36], [1, '0x4edfb117a17a07d', 55, 44], [2, '0xd4a9ec48d03d261d', 54, 43], [3, '0x1b9dd972253c3736', 51, 39],
    ]);
    for (const g of gpus) {
      expect(g).toMatchObject({ vendor: 'AMD', model: 'Arcturus GL-XL [Instinct MI100]', driver: '6.3.6', memoryTotalBytes: 34342961152, memoryUsedBytes: 6750208, utilizationPct: 0 });
    }
  });

  it('RX 7900 XT, --showproductname --showuse --showmeminfo vram --json (no temperature asked)', () => {
    expect(parseRocmGpus(fixture('rocm-smi-json-1gpu-rx7900xt-marimo9237.json'))).toEqual([amd({
      index: 0, model: 'Radeon RX 7900 XT', memoryTotalBytes: 21458059264, memoryUsedBytes: 27856896, utilizationPct: 0,
    })]);
  });

  it('two RX 6800 with only --showmemuse: two GPUs, nothing made up', () => {
    expect(parseRocmGpus(fixture('rocm-smi-json-2gpus-memuse-rocm_smi_lib120.json'))).toEqual([
      amd({ index: 0, model: 'AMD GPU' }), amd({ index: 1, model: 'AMD GPU' }),
    ]);
  });

  it('2019 format on one line: lower-case "(c)" and "Sensor mem"', () => {
    expect(parseRocmGpus(fixture('rocm-smi-json-1gpu-old-rainbowminer749.json'))).toEqual([amd({ index: 0, model: 'AMD GPU', temperatureC: 77, powerW: 222 })]);
  });
});

describe('rocm-smi JSON: shapes and garbage', () => {
  it('a warning line before the document is skipped; cards sort numerically', () => {
    const doc = { card10: { 'Card Series': 'B', 'GPU use (%)': '5' }, card2: { 'Card Series': 'A', 'GPU use (%)': '7' }, system: { 'Driver version': '6.8.5' } };
    const gpus = parseRocmGpus(`WARNING: AMD GPU device(s) is/are in a low-power state. Check power control/runtime_status\n\n${JSON.stringify(doc)}\n`);
    expect(gpus.map((g) => [g.index, g.model, g.utilizationPct, g.driver])).toEqual([[2, 'A', 7, '6.8.5'], [10, 'B', 5, '6.8.5']]);
  });

  it('an empty document: no GPUs', () => {
    expect(parseRocmGpus('{}')).toEqual([]);
  });

  it('garbage is OUTPUT_INVALID', () => {
    outputInvalid(() => parseRocmGpus(''));
    outputInvalid(() => parseRocmGpus('ERROR:root:Driver not initialized (amdgpu not found in modules)'));
    outputInvalid(() => parseRocmGpus('[1, 2]'));
    outputInvalid(() => parseRocmGpus('{"card0": "x"}'));
    outputInvalid(() => parseRocmGpus('{"card0": {"GPU use (%)": {"nested": 1}}}'));
    expect(outputInvalid(() => parseRocmGpus('{"card0": {"VRAM Total Memory (B)": "12 GB"}}')).detail?.['field']).toBe('VRAM Total Memory (B)');
    outputInvalid(() => parseRocmGpus('{"card0": {"Temperature (Sensor edge) (C)": "hot"}}'));
    outputInvalid(() => parseRocmGpus('{"card0": {'));
  });
});
