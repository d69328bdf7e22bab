import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DEFAULT_CLIENTAPPIO_ADDRESS, detectFlower, dialectFor, nodeConfigToml, supernodeArgv, supernodeRestartHoldoff, type FlowerInstall } from '../../agent/flower/supernode.ts';
import type { ExitInfo } from '../../agent/supervise/policy.ts';
import { isAgentError, ErrorCodes } from '../../agent/errors.ts';
import type { SupernodeConfig } from '../../agent/reconcile/steps.ts';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-sn-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

function script(name: string, body: string): string {
  const p = path.join(dir, name);
  fs.writeFileSync(p, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
  return p;
}

const config = (over: Partial<SupernodeConfig['supernode']> = {}, datasets: SupernodeConfig['datasets'] = []): SupernodeConfig => ({
  superlink: { address: 'superlink.example:9092', caCertPem: 'unused here' },
  supernode: { nodeConfig: {}, ...over },
  datasets,
  privacy: { differentialPrivacy: { enabled: false }, secureAggregation: { enabled: false } },
  resources: null,
});

describe('detectFlower', () => {
  it('reads the version from flower-supernode --version when the release has it', async () => {
    const bin = script('flower-supernode', 'echo "Flower version: 1.23.4"');
    const got = await detectFlower(bin);
    expect(got.version).toBe('1.23.4');
    expect(got.binary).toBe(bin);
  });

  it('falls back to flwr --version beside it (Flower 1.23 has no supernode --version)', async () => {
    const bin = script('flower-supernode', 'echo "flower-supernode: error: unrecognized arguments: --version" >&2; exit 2');
    script('flwr', 'echo "Flower version: 1.23.0"');
    expect((await detectFlower(bin)).version).toBe('1.23.0');
  });

  it('finds the binary on PATH', async () => {
    script('flower-supernode', 'echo "Flower version: 1.23.0"');
    const got = await detectFlower('flower-supernode', { PATH: `/nonexistent${path.delimiter}${dir}` });
    expect(got.binary).toBe(path.join(dir, 'flower-supernode'));
  });

  it('refuses an unsupported version with FLOWER_VERSION_UNSUPPORTED', async () => {
    const bin = script('flower-supernode', 'echo "Flower version: 1.42.0"');
    const err = await detectFlower(bin).catch((e: unknown) => e);
    expect(isAgentError(err, ErrorCodes.FLOWER_VERSION_UNSUPPORTED)).toBe(true);
  });

  it('says FLOWER_VERSION_UNSUPPORTED when nothing tells the version', async () => {
    const bin = script('flower-supernode', 'exit 2');
    const err = await detectFlower(bin).catch((e: unknown) => e);
    expect(isAgentError(err, ErrorCodes.FLOWER_VERSION_UNSUPPORTED)).toBe(true);
  });

  it('says FLOWER_NOT_FOUND for a missing binary, on PATH or absolute', async () => {
    for (const cmd of ['flower-supernode', path.join(dir, 'nope')]) {
      const err = await detectFlower(cmd, { PATH: dir }).catch((e: unknown) => e);
      expect(isAgentError(err, ErrorCodes.FLOWER_NOT_FOUND)).toBe(true);
    }
  });
});

describe('supernodeArgv (Flower 1.23)', () => {
  const install: FlowerInstall = { binary: '/opt/flwr/bin/flower-supernode', version: '1.23.0', dialect: dialectFor('1.23.0') };
  const files = { rootCertificates: '/run/sepal/superlink-ca.pem', authPrivateKey: '/var/lib/sepal/identity/flower.key', nodeConfig: '/run/sepal/node-config.toml' };

  it('passes every value as its own argument, with the ClientAppIo default on loopback', () => {
    const argv = supernodeArgv(install, config(), files);
    expect(argv).toEqual([
      '/opt/flwr/bin/flower-supernode',
      '--superlink', 'superlink.example:9092',
      '--root-certificates', files.rootCertificates,
      '--auth-supernode-private-key', files.authPrivateKey,
      '--node-config', files.nodeConfig,
      '--clientappio-api-address', DEFAULT_CLIENTAPPIO_ADDRESS,
    ]);
    expect(argv).not.toContain('--insecure');
  });

  it('adds the optional flags the manifest sets and omits --root-certificates without a CA', () => {
    const argv = supernodeArgv(install, config({ clientAppIoAddress: '127.0.0.1:9194', maxRetries: 0, maxWaitTimeSeconds: 30, isolation: 'process' }), { ...files, rootCertificates: null });
    expect(argv).not.toContain('--root-certificates');
    expect(argv.slice(argv.indexOf('--clientappio-api-address'))).toEqual([
      '--clientappio-api-address', '127.0.0.1:9194', '--max-retries', '0', '--max-wait-time', '30', '--isolation', 'process',
    ]);
  });

  it('refuses a node config file Flower would not read as TOML', () => {
    expect(() => supernodeArgv(install, config(), { ...files, nodeConfig: '/run/x.conf' })).toThrow(TypeError);
  });
});

describe('nodeConfigToml', () => {
  // Python's own TOML parser (tomllib, the format Flower reads the file with) is the judge.
  const parse = (toml: string): unknown => {
    const f = path.join(dir, 'node-config.toml');
    fs.writeFileSync(f, toml);
    return JSON.parse(execFileSync('python3', ['-c', 'import json,sys,tomllib; print(json.dumps(tomllib.load(open(sys.argv[1],"rb"))))', f], { encoding: 'utf8' }));
  };

  it('round-trips strings with quotes, backslashes, spaces and shell syntax, numbers and booleans', () => {
    const nodeConfig = {
      'partition-id': 0, 'num-partitions': 2, lr: 0.05, tiny: 1.5e-7, big: 1e21, neg: -3, on: true, off: false,
      'dataset-path': '/data/with space/"quoted"/back\\slash', shell: '$(touch /tmp/pwned); rm -rf / `id`', unicode: 'zürich ✓',
      'a.b': 'dotted key stays one key',
    };
    const got = parse(nodeConfigToml({ supernode: { nodeConfig }, datasets: [] }));
    expect(got).toEqual(nodeConfig);
  });

  it('adds each dataset as dataset.<name> unless the node config sets that key', () => {
    const got = parse(nodeConfigToml({
      supernode: { nodeConfig: { 'dataset.b': '/explicit' } },
      datasets: [{ name: 'a', path: '/data/a.npz' }, { name: 'b', path: '/data/b.npz' }],
    }));
    expect(got).toEqual({ 'dataset.a': '/data/a.npz', 'dataset.b': '/explicit' });
  });
});

describe('supernodeRestartHoldoff', () => {
  const holdoff = supernodeRestartHoldoff(65_000);
  const exit = (reason: ExitInfo['reason'], uptimeMs: number): ExitInfo => ({ code: reason === 'error' ? 1 : null, signal: reason === 'signal' ? 'SIGKILL' : null, at: 0, reason, uptimeMs });

  it('waits out the SuperLink\'s window after an activated run ended uncleanly', () => {
    expect(holdoff(exit('signal', 3_600_000))).toBe(65_000);
    expect(holdoff(exit('error', 30_000))).toBe(65_000);
    expect(holdoff(exit('killed', 60_000))).toBe(65_000);
  });

  it('does not hold off after a start refused at once, a clean exit or a stop', () => {
    expect(holdoff(exit('error', 1_200))).toBe(0); // "No SuperNode found with the given public key"
    expect(holdoff(exit('exit', 3_600_000))).toBe(0);
    expect(holdoff(exit('stopped', 3_600_000))).toBe(0);
  });
});
