// Host detection around the parsers: which tools run and how (argv, timeout), a missing tool is
// "no GPUs" and not an error, a broken one is a warning, the systeminformation fallback, the real
// detectHost() on this machine, gpuSamples() for metrics, and collectFacts() delegating here.
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import {
  defaultRunner, defaultWhich, detectHost, gpuFromController, gpuSamples, NVIDIA_SMI_ARGS, ROCM_SMI_ARGS, toHostFacts,
  TOOL_TIMEOUT_MS, type GpuTool, type RunResult, type Runner, type Which,
} from '../../agent/detect/index.ts';
import { collectFacts, detectFacts } from '../../agent/enroll/facts.ts';
import { AgentError } from '../../agent/errors.ts';
import { AGENT_VERSION } from '../../agent/version.ts';
import { ErrorCodes } from '../../proto/errors.ts';

const FIXTURES = path.join(import.meta.dirname, '..', 'fixtures', 'detect');
const fixture = (name: string): string => fs.readFileSync(path.join(FIXTURES, name), 'utf8');
const ROOT = path.join(import.meta.dirname, '..', '..');

function enoent(file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`spawn ${file} ENOENT`), { code: 'ENOENT', errno: -2, syscall: `spawn ${file}`, path: file });
}

type Script = Partial<Record<GpuTool, RunResult | Error>>;

/** A runner that plays back one answer per tool and records what it was asked to run. */
function scripted(script: Script): { run: Runner; calls: Array<{ file: string; args: readonly string[]; timeoutMs: number }> } {
  const calls: Array<{ file: string; args: readonly string[]; timeoutMs: number }> = [];
  const run: Runner = (file, args, { timeoutMs }) => {
    calls.push({ file, args, timeoutMs });
    const tool = (Object.keys(script) as GpuTool[]).find((t) => path.basename(file) === t);
    const answer = tool === undefined ? enoent(file) : script[tool];
    return answer instanceof Error || answer === undefined ? Promise.reject(answer ?? enoent(file)) : Promise.resolve(answer);
  };
  return { run, calls };
}

const ok = (stdout: string): RunResult => ({ stdout, stderr: '', exitCode: 0 });
const whichAll: Which = (tool) => Promise.resolve(`/usr/bin/${tool}`);
const noGraphics = () => Promise.reject(new Error('the fallback must not run'));

describe('running the tools', () => {
  it('nvidia-smi and rocm-smi run by path with argv arrays and a 5 s timeout', async () => {
    const { run, calls } = scripted({ 'nvidia-smi': ok(fixture('constructed-nvidia-smi-sepal-query-2gpus.txt')), 'rocm-smi': ok('{}') });
    await detectHost({ run, which: whichAll, graphics: noGraphics });
    expect(calls).toEqual([
      { file: '/usr/bin/nvidia-smi', args: NVIDIA_SMI_ARGS, timeoutMs: 5000 },
      { file: '/usr/bin/rocm-smi', args: ROCM_SMI_ARGS, timeoutMs: 5000 },
    ]);
    expect(TOOL_TIMEOUT_MS).toBe(5000);
  });

  it('NVIDIA and AMD on one host: both are reported, the fallback is not used', async () => {
    const { run } = scripted({
      'nvidia-smi': ok(fixture('constructed-nvidia-smi-sepal-query-2gpus.txt')),
      'rocm-smi': ok(fixture('rocm-smi-json-1gpu-rx6700xt-rocm612-telegraf.json')),
    });
    const d = await detectHost({ run, which: whichAll, graphics: noGraphics });
    expect(d.gpuSources).toEqual(['nvidia-smi', 'rocm-smi']);
    expect(d.warnings).toEqual([]);
    expect(d.gpus).toEqual([
      { vendor: 'NVIDIA', model: 'NVIDIA H100 80GB HBM3', memoryBytes: '85520809984', driver: '590.48.01' },
      { vendor: 'NVIDIA', model: 'NVIDIA H100 80GB HBM3', memoryBytes: '85520809984', driver: '590.48.01' },
      { vendor: 'AMD', model: 'Navi 22 [Radeon RX 6700/6700 XT / 6800M]', memoryBytes: '12868124672', driver: '6.3.6' },
    ]);
    expect(d.gpuDetails.map((g) => g.utilizationPct)).toEqual([0, null, 0]);
  });

  it('a tool the runner cannot find (ENOENT) is not present, not an error', async () => {
    const { run, calls } = scripted({ 'nvidia-smi': ok(fixture('constructed-nvidia-smi-sepal-query-2gpus.txt')) });
    const d = await detectHost({ run, which: whichAll, graphics: noGraphics });
    expect(calls).toHaveLength(2);
    expect(d.gpuSources).toEqual(['nvidia-smi']);
    expect(d.warnings).toEqual([]);
    expect(d.gpus).toHaveLength(2);
  });

  it('a tool `which` does not find is not run at all', async () => {
    const { run, calls } = scripted({});
    const d = await detectHost({ run, which: () => Promise.resolve(null), graphics: () => Promise.resolve({ controllers: [] }) });
    expect(calls).toEqual([]);
    expect(d.gpus).toEqual([]);
    expect(d.warnings).toEqual([]);
  });

  it('"No devices were found" (exit 6) is zero GPUs', async () => {
    const { run } = scripted({ 'nvidia-smi': { stdout: 'No devices were found\n', stderr: '', exitCode: 6 } });
    const d = await detectHost({ run, which: whichAll, graphics: noGraphics });
    expect(d).toMatchObject({ gpus: [], gpuSources: ['nvidia-smi'], warnings: [] });
  });

  it('a present tool that fails, hangs or prints garbage is a warning; detection goes on', async () => {
    const { run } = scripted({
      'nvidia-smi': { stdout: '', stderr: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", exitCode: 9 },
      'rocm-smi': { stdout: '', stderr: '', exitCode: null, timedOut: true },
    });
    const d = await detectHost({ run, which: whichAll, graphics: () => Promise.resolve({ controllers: [] }) });
    expect(d.warnings).toEqual([
      { source: 'nvidia-smi', code: ErrorCodes.INTERNAL, reason: 'TOOL_FAILED', message: "nvidia-smi: exited with 9: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver." },
      { source: 'rocm-smi', code: ErrorCodes.TIMEOUT, reason: 'TOOL_TIMEOUT', message: 'rocm-smi: no answer within 5000 ms' },
    ]);
    // Neither answered, so the fallback did.
    expect(d.gpuSources).toEqual(['systeminformation']);

    const garbage = scripted({ 'nvidia-smi': ok('<html>Bad Gateway</html>\n'), 'rocm-smi': ok('not json') });
    const g = await detectHost({ run: garbage.run, which: whichAll, graphics: () => Promise.resolve({ controllers: [] }) });
    expect(g.warnings.map((w) => [w.source, w.code, w.reason])).toEqual([['nvidia-smi', 'INTERNAL', 'OUTPUT_INVALID'], ['rocm-smi', 'INTERNAL', 'OUTPUT_INVALID']]);
  });

  it('rocm-smi exiting non-zero with a valid document is still read', async () => {
    const { run } = scripted({ 'rocm-smi': { stdout: fixture('rocm-smi-json-1gpu-rx7900xt-marimo9237.json'), stderr: '', exitCode: 2 } });
    const d = await detectHost({ run, which: whichAll, graphics: noGraphics });
    expect(d.gpus).toEqual([{ vendor: 'AMD', model: 'Radeon RX 7900 XT', memoryBytes: '21458059264', driver: '' }]);
  });

  it('spawn failures other than ENOENT (EACCES) are warnings', async () => {
    const eacces = Object.assign(new Error('spawn /usr/bin/nvidia-smi EACCES'), { code: 'EACCES' });
    const { run } = scripted({ 'nvidia-smi': eacces });
    const d = await detectHost({ run, which: whichAll, graphics: () => Promise.resolve({ controllers: [] }) });
    expect(d.warnings).toMatchObject([{ source: 'nvidia-smi', reason: 'TOOL_FAILED' }]);
  });
});

describe('the real runner and PATH lookup', () => {
  it('runs without a shell, resolves non-zero exits, rejects ENOENT, kills on timeout', async () => {
    const node = process.execPath;
    expect(await defaultRunner(node, ['-e', 'process.stdout.write("a;b $(x)")'], { timeoutMs: 5000 })).toEqual({ stdout: 'a;b $(x)', stderr: '', exitCode: 0 });
    expect(await defaultRunner(node, ['-e', 'process.exit(3)'], { timeoutMs: 5000 })).toMatchObject({ exitCode: 3, timedOut: false });
    await expect(defaultRunner('/nonexistent/nvidia-smi', [], { timeoutMs: 5000 })).rejects.toMatchObject({ code: 'ENOENT' });
    expect(await defaultRunner(node, ['-e', 'setTimeout(() => {}, 60000)'], { timeoutMs: 200 })).toMatchObject({ timedOut: true, exitCode: null });
  });

  it('which: finds executables on absolute PATH entries only', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-which-'));
    const saved = process.env['PATH'];
    try {
      fs.writeFileSync(path.join(dir, 'nvidia-smi'), '#!/bin/sh\n', { mode: 0o755 });
      fs.writeFileSync(path.join(dir, 'rocm-smi'), 'not executable', { mode: 0o644 });
      process.env['PATH'] = ['relative/dir', dir].join(path.delimiter);
      expect(await defaultWhich('nvidia-smi')).toBe(path.join(dir, 'nvidia-smi'));
      if (!fs.existsSync('/opt/rocm/bin/rocm-smi')) expect(await defaultWhich('rocm-smi')).toBeNull();
      process.env['PATH'] = '.';
      process.chdir(dir);
      expect(await defaultWhich('nvidia-smi')).toBeNull();
    } finally {
      process.chdir(ROOT);
      process.env['PATH'] = saved;
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('the systeminformation fallback', () => {
  it('both tools ENOENT: systeminformation answers (this machine: no GPU or a virtual one)', async () => {
    const { run, calls } = scripted({});
    const d = await detectHost({ run });
    expect(calls.map((c) => c.file)).toEqual(['nvidia-smi', 'rocm-smi']);
    expect(d.warnings).toEqual([]);
    expect(d.gpuSources).toEqual(['systeminformation']);
    expect(Array.isArray(d.gpus)).toBe(true);
    for (const g of d.gpus) {
      expect(Object.keys(g).sort()).toEqual(['driver', 'memoryBytes', 'model', 'vendor']);
      expect(typeof g.vendor).toBe('string');
      expect(typeof g.model).toBe('string');
      expect(g.memoryBytes).toMatch(/^\d+$/);
      expect(typeof g.driver).toBe('string');
    }
    expect(d.gpuDetails).toHaveLength(d.gpus.length);
  });

  it('controllers become GPUs; BMC VGA and emulated adapters are not GPUs', () => {
    expect(gpuFromController({ vendor: 'NVIDIA Corporation', model: 'GA100 [A100 PCIe 40GB]', vram: 40960, vramDynamic: false, driverVersion: '535.129.03' }, 0)).toEqual({
      vendor: 'NVIDIA', index: 0, uuid: null, model: 'GA100 [A100 PCIe 40GB]', driver: '535.129.03', memoryTotalBytes: 40960 * 1024 * 1024,
      memoryUsedBytes: null, utilizationPct: null, temperatureC: null, powerW: null,
    });
    expect(gpuFromController({ vendor: 'Intel Corporation', model: 'UHD Graphics 630', vram: 1024, vramDynamic: true }, 1))
      .toMatchObject({ vendor: 'Intel', memoryTotalBytes: null, driver: null });
    expect(gpuFromController({ vendor: 'Advanced Micro Devices, Inc. [AMD/ATI]', model: 'Navi 31', vram: null, vramDynamic: false }, 2))
      .toMatchObject({ vendor: 'AMD', memoryTotalBytes: null });
    for (const c of [
      { vendor: 'ASPEED Technology, Inc.', model: 'ASPEED Graphics Family', vram: 8, vramDynamic: false },
      { vendor: 'Matrox Electronics Systems Ltd.', model: 'Integrated Matrox G200eW3 Graphics Controller', vram: 16, vramDynamic: false },
      { vendor: 'Cirrus Logic', model: 'GD 5446', vram: 4, vramDynamic: false },
      { vendor: 'VMware', model: 'SVGA II Adapter', vram: 16, vramDynamic: false },
      { vendor: 'Red Hat, Inc.', model: 'Virtio 1.0 GPU', vram: null, vramDynamic: false },
      { vendor: '', model: 'Device 1111', vram: 16, vramDynamic: false, vendorId: '1234' },
      { vendor: '', model: '', vram: null, vramDynamic: false },
    ]) {
      expect(gpuFromController(c, 0)).toBeNull();
    }
  });

  it('a failing or hanging fallback is a warning', async () => {
    const { run } = scripted({});
    const d = await detectHost({ run, graphics: () => Promise.reject(new Error('lspci: not found')) });
    expect(d.gpus).toEqual([]);
    expect(d.warnings).toMatchObject([{ source: 'systeminformation', reason: 'TOOL_FAILED' }]);
  });

  it('importing the module does not load systeminformation', async () => {
    const script = "import('./agent/detect/index.ts').then(() => { process.stdout.write(String(Object.keys(require.cache).some((k) => k.includes('systeminformation')))); })";
    const { stdout } = await promisify(execFile)(process.execPath, ['-e', script], { cwd: ROOT });
    expect(stdout).toBe('false');
  });
});

describe('detectHost() on this machine', () => {
  it('sane CPU, memory, OS and version facts; proto shape', async () => {
    const d = await detectHost();
    expect(d.hostname).toBe(os.hostname());
    expect(d.os).toBe(`${os.type()} ${os.release()}`);
    expect(d.arch).toBe(os.arch());
    expect(d.cpuCores).toBeGreaterThanOrEqual(1);
    expect(d.cpuCores).toBe(os.cpus().length > 0 ? os.cpus().length : os.availableParallelism());
    expect(typeof d.cpuModel).toBe('string');
    expect(d.cpuModel).toBe(d.cpuModel.trim());
    expect(d.memoryBytes).toMatch(/^[1-9]\d*$/);
    expect(Number(d.memoryBytes)).toBeGreaterThan(64 * 1024 * 1024);
    expect(d.memoryBytes).toBe(String(os.totalmem()));
    expect(d.agentVersion).toBe(AGENT_VERSION);
    expect(d.flowerVersion).toBe('');
    expect(d.gpuSources.length).toBeGreaterThanOrEqual(1);
    const facts = toHostFacts(d);
    expect(Object.keys(facts).sort()).toEqual(['agentVersion', 'arch', 'cpuCores', 'cpuModel', 'flowerVersion', 'gpus', 'hostname', 'memoryBytes', 'os']);
    expect(JSON.stringify(facts).length).toBeLessThan(16 * 1024);
  });

  it('collectFacts() (sync, no GPUs) and detectFacts() agree on the host part', async () => {
    const sync = collectFacts();
    const full = await detectFacts({ run: scripted({}).run, graphics: () => Promise.resolve({ controllers: [] }) });
    expect(full).toEqual({ ...sync, gpus: [] });
    expect(collectFacts({
      hostname: () => 'h', type: () => 'Linux', release: () => '6.1.0', arch: () => 'arm64', cpus: () => [],
      availableParallelism: () => 3, totalmem: () => 2 ** 40,
    })).toEqual({ hostname: 'h', os: 'Linux 6.1.0', arch: 'arm64', cpuModel: '', cpuCores: 3, memoryBytes: '1099511627776', gpus: [], agentVersion: AGENT_VERSION, flowerVersion: '' });
  });
});

describe('gpuSamples() for metrics', () => {
  it('utilisation, memory in bytes, temperature per GPU from both tools', async () => {
    const { run } = scripted({
      'nvidia-smi': ok(fixture('constructed-nvidia-smi-sepal-query-2gpus.txt')),
      'rocm-smi': ok(fixture('rocm-smi-json-4gpus-mi100-rocm602-telegraf.json')),
    });
    const s = await gpuSamples({ run, which: whichAll });
    expect(s).toHaveLength(6);
    expect(s[1]).toEqual({
      vendor: 'NVIDIA', index: 1, uuid: 'GPU-00000000-0000-0000-0000-000000000000', model: 'NVIDIA H100 80GB HBM3',
      memoryTotalBytes: 81559 * 1024 * 1024, memoryUsedBytes: 59 * 1024 * 1024, utilizationPct: null, temperatureC: 42, powerW: 71.15,
    });
    expect(s[2]).toMatchObject({ vendor: 'AMD', index: 0, utilizationPct: 0, memoryUsedBytes: 6750208, memoryTotalBytes: 34342961152, temperatureC: 53 });
  });

  it('no tools: no samples, no error, and the fallback is never used', async () => {
    expect(await gpuSamples({ run: scripted({}).run })).toEqual([]);
  });

  it('a broken tool is reported through onError and the other still samples', async () => {
    const { run } = scripted({ 'nvidia-smi': ok('garbage'), 'rocm-smi': ok(fixture('rocm-smi-json-1gpu-rx6700xt-rocm612-telegraf.json')) });
    const errors: Array<[string, AgentError]> = [];
    const s = await gpuSamples({ run, which: whichAll, onError: (e, source) => errors.push([source, e]) });
    expect(s.map((x) => x.vendor)).toEqual(['AMD']);
    expect(errors).toHaveLength(1);
    expect(errors[0]?.[0]).toBe('nvidia-smi');
    expect(errors[0]?.[1]).toBeInstanceOf(AgentError);
    expect(errors[0]?.[1].detail?.['reason']).toBe('OUTPUT_INVALID');
  });
});
