// Self-test of the Flower harness with real Flower 1.23.0 and no Sepal: a TLS SuperLink with
// SuperNode auth on loopback, two SuperNodes whose keys are registered through the `flwr` CLI,
// a three-round FedAvg run of the test app, and its result against the Flower-free reference.
// Skips only when python3 is missing (the venv is built on first use, which takes a while).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import {
  FLOWER_VERSION, type Superlink, type Supernode, type SupernodeKey, ensureFlowerVenv, flowerBin, flowerEnv, flwrRun,
  isUint64, makeSuperlinkTls, makeSupernodeKey, nodeConfigArgument, parseCliJson, parseLinregResult, python3Available,
  referenceResult, registerSupernode, startSuperlink, startSupernode, supernodeList, waitForSupernodes,
} from '../helpers/flower.ts';

const run = promisify(execFile);
const HAVE_PYTHON = python3Available();
if (!HAVE_PYTHON) console.warn('flower-harness: python3 not found, skipping the real-Flower tests');

const TOLERANCE = 1e-9;

describe.skipIf(!HAVE_PYTHON)('Flower harness (real flwr 1.23.0 on 127.0.0.1)', () => {
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-flower-'));
  let superlink: Superlink | undefined;
  const supernodes: Supernode[] = [];
  const keys: SupernodeKey[] = [];
  const nodeIds: string[] = [];

  function link(): Superlink {
    if (superlink === undefined) throw new Error('SuperLink not started');
    return superlink;
  }

  beforeAll(async () => {
    await ensureFlowerVenv();
    const tls = await makeSuperlinkTls(path.join(work, 'tls'));
    superlink = await startSuperlink({ dir: path.join(work, 'superlink'), tls });
  }, 600_000);

  afterAll(async () => {
    await Promise.all(supernodes.map((s) => s.stop()));
    await superlink?.stop();
    fs.rmSync(work, { recursive: true, force: true });
  }, 60_000);

  it('uses the pinned Flower version', async () => {
    const { stdout } = await run(flowerBin('flwr'), ['--version'], { env: flowerEnv(path.join(work, 'cli-home')) });
    expect(stdout.trim()).toBe(`Flower version: ${FLOWER_VERSION}`);
  });

  it('binds every SuperLink API to 127.0.0.1 with TLS and SuperNode auth on', () => {
    const s = link();
    for (const a of [s.controlAddress, s.fleetAddress, s.serverAppIoAddress]) expect(a).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(s.argv).toContain('--enable-supernode-auth');
    expect(s.argv).toContain('--ssl-certfile');
    expect(s.argv).not.toContain('--insecure');
  });

  it('parses uint64 ids from CLI JSON without losing digits', () => {
    const parsed = parseCliJson('{\n  "success": true,\n  "nodes": [{ "node-id": 18446744073709551615, "status": "online" }]\n}');
    expect(parsed['nodes']).toEqual([{ 'node-id': '18446744073709551615', status: 'online' }]);
    expect(isUint64('18446744073709551615')).toBe(true);
    expect(isUint64('18446744073709551616')).toBe(false);
    expect(nodeConfigArgument({ 'partition-id': 1, path: '/a b/c', ok: true })).toBe("partition-id=1 path='/a b/c' ok=true");
  });

  it('registers two SuperNode keys through the CLI; both come online', async () => {
    const s = link();
    for (const name of ['node-a', 'node-b']) {
      const key = await makeSupernodeKey(path.join(work, 'keys'), name);
      keys.push(key);
      const id = await registerSupernode(s, key.publicKey);
      expect(isUint64(id)).toBe(true);
      nodeIds.push(id);
    }
    expect(new Set(nodeIds).size).toBe(2);
    const registered = await supernodeList(s);
    for (const id of nodeIds) expect(registered).toContainEqual({ nodeId: id, status: 'registered' });

    // One node gets its config as a TOML file, the other inline: both forms reach the ClientApp.
    for (const [i, key] of keys.entries()) {
      supernodes.push(await startSupernode({
        dir: path.join(work, `supernode-${i}`),
        superlink: s,
        privateKey: key.privateKey,
        nodeConfig: { 'partition-id': i, 'num-partitions': 2 },
        nodeConfigVia: i === 0 ? 'file' : 'argument',
      }));
    }
    expect(new Set(supernodes.map((n) => n.clientAppIoAddress)).size).toBe(2);
    const online = await waitForSupernodes(s, nodeIds, 'online', 90_000);
    expect(online.filter((n) => n.status === 'online').map((n) => n.nodeId).sort()).toEqual([...nodeIds].sort());
  }, 180_000);

  it('refuses a SuperNode whose key is not registered', async () => {
    const s = link();
    const stranger = await makeSupernodeKey(path.join(work, 'keys'), 'stranger');
    const node = await startSupernode({
      dir: path.join(work, 'supernode-stranger'), superlink: s, privateKey: stranger.privateKey, nodeConfig: { 'partition-id': 0, 'num-partitions': 2 },
    }).catch((e: unknown) => e);
    // Activation fails with FAILED_PRECONDITION and flower-supernode exits 1 (before or after its
    // ClientAppIo API came up, depending on timing).
    if (node instanceof Error) {
      expect(node.message).toContain('No SuperNode found with the given public key');
    } else {
      const n = node as Supernode;
      supernodes.push(n);
      const exit = await n.exited;
      expect(exit.code).toBe(1);
      expect(n.logs()).toContain('No SuperNode found with the given public key');
    }
  }, 60_000);

  it('runs three rounds of FedAvg; the result equals the reference', async () => {
    const s = link();
    const runConfig = { 'num-server-rounds': 3 };
    const resultPath = path.join(work, 'results', 'run one.json');
    const res = await flwrRun({ superlink: s, resultPath, runConfig, timeoutMs: 240_000 });
    expect(res.timedOut, res.output).toBe(false);
    expect(res.exitCode, res.output).toBe(0);
    expect(res.runId !== null && isUint64(res.runId), res.output).toBe(true);
    expect(res.status, res.output).toBe('finished:completed');
    const got = parseLinregResult(res.result);
    const want = await referenceResult({ numPartitions: 2, runConfig });
    expect(got.numRounds).toBe(3);
    expect(got.losses).toHaveLength(3);
    expect(got.weights).toHaveLength(want.weights.length);
    for (const [i, w] of want.weights.entries()) expect(Math.abs((got.weights[i] ?? NaN) - w)).toBeLessThan(TOLERANCE);
    expect(Math.abs(got.bias - want.bias)).toBeLessThan(TOLERANCE);
    for (const [i, l] of want.losses.entries()) expect(Math.abs((got.losses[i] ?? NaN) - l)).toBeLessThan(TOLERANCE);
    // Learning happened: the global loss falls every round.
    for (let i = 1; i < got.losses.length; i++) expect(got.losses[i]).toBeLessThan(got.losses[i - 1] ?? 0);
    // Both SuperNodes took part and stay online.
    for (const n of supernodes.slice(0, 2)) expect(n.running()).toBe(true);
    const after = await supernodeList(s);
    for (const id of nodeIds) expect(after).toContainEqual({ nodeId: id, status: 'online' });
  }, 300_000);
});
