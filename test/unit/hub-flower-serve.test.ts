// `serve` with a `superlink` section: the registrar runs, follows enrollments and revocations from
// this process and from CLI commands in others (through the audit change feed), and its state is
// visible in `node list` / `node show` and /metrics. The SuperLink is the TLS stub.
import fs from 'node:fs';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { checkFlowerPublicKey } from '../../hub/enroll/flower-key.ts';
import { ErrorCodes, isSepalError } from '../../hub/errors.ts';
import { serveHub } from '../../hub/runtime.ts';
import { enrollNode } from '../../hub/service/issuance.ts';
import { silentLogger } from '../../hub/log.ts';
import type { HubConfig } from '../../hub/config.ts';
import type { FlowerState } from '../../hub/store/store.ts';
import { makeCsr, newKey } from '../helpers/csr.ts';
import { flowerPublicKeyLine } from '../helpers/flower-key.ts';
import { cli, httpsGet, metricValue, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { StubSuperlink } from './hub-flower.superlink-stub.ts';

const BIG = '18446744073709551557';

let dir: string;
let stub: StubSuperlink;
let hub: TestHub | null = null;

const superlinkConfig = (s: StubSuperlink): NonNullable<HubConfig['superlink']> => ({
  controlAddress: s.address, caFile: s.caFile, callTimeoutMs: 2000, retryBaseMs: 200, retryCapMs: 1000, scanIntervalMs: 1000,
});

beforeEach(async () => {
  dir = tempDir('sepal-flower-serve-');
  stub = await StubSuperlink.start(dir);
});

afterEach(async () => {
  await hub?.stop();
  hub = null;
  await stub.stop();
  fs.rmSync(dir, { recursive: true, force: true });
});

async function enrollWithKey(h: TestHub, org = 'org-a'): Promise<string> {
  const { node } = await enrollNode(h.running.hub.ctx, { org, name: 'host', csr: makeCsr(newKey()), facts: null, flowerPublicKey: checkFlowerPublicKey(flowerPublicKeyLine()), actor: 'test' });
  return node.id;
}

async function stateOf(h: TestHub, id: string): Promise<FlowerState | undefined> {
  return (await h.running.hub.ctx.store.getNode(id))?.flower?.state;
}

async function waitFor(cond: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('serve with a SuperLink', () => {
  it('registers an enrolled node, shows it, and unregisters it after a CLI revocation in another process', async () => {
    hub = await startTestHub({ configure: (c) => ({ ...c, superlink: superlinkConfig(stub) }) });
    const h = hub;
    expect(h.running.registrar?.state).toBe('running');
    stub.nextIds.push(BIG);
    const id = await enrollWithKey(h);
    await waitFor(async () => (await stateOf(h, id)) === 'registered');
    expect((await h.running.hub.ctx.store.getNode(id))?.flower?.flowerNodeId).toBe(BIG);

    const show = await cli(['node', 'show', id, '--data-dir', h.paths.dataDir, '--json']);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toContain(`"nodeId":"${BIG}"`); // a string in JSON: exact
    expect(JSON.parse(show.stdout)).toMatchObject({ id, state: 'active', flower: { nodeId: BIG, state: 'registered', summary: 'registered', lastError: null } });
    const table = await cli(['node', 'list', '--data-dir', h.paths.dataDir]);
    expect(table.stdout.split('\n')[0]).toMatch(/SUPERNODE\s+VPN\s+FLOWER NODE\s+FLOWER REGISTRATION$/);
    expect(table.stdout).toMatch(new RegExp(`${id} .*${BIG}\\s+registered`));

    const revoked = await cli(['node', 'revoke', id, '--data-dir', h.paths.dataDir]);
    expect(revoked.code, revoked.stderr).toBe(0);
    await waitFor(async () => (await stateOf(h, id)) === 'unregistered');
    expect(stub.callsOf('UnregisterNode')).toEqual([{ nodeId: BIG }]);

    const scrape = (await httpsGet(h, '/metrics')).body.toString();
    expect(metricValue(scrape, 'sepal_hub_flower_registrations', { state: 'unregistered' })).toBe(1);
    expect(metricValue(scrape, 'sepal_hub_flower_registrations', { state: 'pending' })).toBe(0);
    expect(metricValue(scrape, 'sepal_hub_superlink_registrations_total', { result: 'registered' })).toBe(1);
    expect(metricValue(scrape, 'sepal_hub_superlink_unregistrations_total', { result: 'unregistered' })).toBe(1);
  });

  it('a refused key is failed in node list; retry-registration from the CLI gets the running hub to try again', async () => {
    hub = await startTestHub({ configure: (c) => ({ ...c, superlink: superlinkConfig(stub) }) });
    const h = hub;
    stub.fault('RegisterNode', { status: 9 /* FAILED_PRECONDITION */, details: 'Public key is not valid' });
    const id = await enrollWithKey(h);
    await waitFor(async () => (await stateOf(h, id)) === 'failed');
    const table = await cli(['node', 'list', '--data-dir', h.paths.dataDir]);
    expect(table.stdout).toMatch(new RegExp(`${id} .*-\\s+failed \\(SUPERLINK_REJECTED\\)`));

    const retry = await cli(['node', 'retry-registration', id, '--data-dir', h.paths.dataDir]);
    expect(retry.code, retry.stderr).toBe(0);
    await waitFor(async () => (await stateOf(h, id)) === 'registered');
    const again = await cli(['node', 'retry-registration', id, '--data-dir', h.paths.dataDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/^error INVALID_ARGUMENT\b/m);
  });

  it('retries while the SuperLink is down and registers once it answers; revocation through the hub is picked up at once', async () => {
    hub = await startTestHub({ configure: (c) => ({ ...c, superlink: superlinkConfig(stub) }) });
    const h = hub;
    stub.fault('RegisterNode', { status: 14 /* UNAVAILABLE */ }, 3);
    const id = await enrollWithKey(h);
    await waitFor(async () => (await stateOf(h, id)) === 'registered');
    expect(stub.callsOf('RegisterNode')).toHaveLength(4);
    await h.running.hub.revoke(id, 'test');
    await waitFor(async () => (await stateOf(h, id)) === 'unregistered');
  });
});

describe('serve without a SuperLink', () => {
  it('runs no registrar; a node with a Flower key shows registration pending', async () => {
    hub = await startTestHub();
    const h = hub;
    expect(h.running.registrar).toBeNull();
    const id = await enrollWithKey(h);
    const table = await cli(['node', 'list', '--data-dir', h.paths.dataDir]);
    expect(table.stdout).toMatch(new RegExp(`${id} .*-\\s+registration pending$`, 'm'));
    expect(JSON.parse((await cli(['node', 'show', id, '--data-dir', h.paths.dataDir, '--json'])).stdout)).toMatchObject({ flower: { nodeId: null, state: 'pending' } });
  });

  it('refuses to start with an unreadable superlink.caFile (CONFIG_INVALID), leaving nothing running', async () => {
    hub = await startTestHub();
    const paths = hub.paths;
    await hub.running.close(100); // stop() later closes nothing twice and removes the dir
    const cfg = JSON.parse(fs.readFileSync(paths.config, 'utf8')) as Record<string, unknown>;
    cfg['superlink'] = { controlAddress: stub.address, caFile: 'no-such-ca.pem' };
    fs.writeFileSync(paths.config, JSON.stringify(cfg));
    const e = await serveHub(paths, { log: silentLogger(), feedIntervalMs: 50 }).then(() => null, (x: unknown) => x);
    expect(isSepalError(e, ErrorCodes.CONFIG_INVALID), String(e)).toBe(true);
    expect(String((e as Error).message)).toContain(path.join(paths.dataDir, 'no-such-ca.pem'));
    // the defaults fill in the optional keys
    fs.copyFileSync(stub.caFile, path.join(paths.dataDir, 'no-such-ca.pem'));
    const running = await serveHub(paths, { log: silentLogger(), feedIntervalMs: 50 });
    expect(running.hub.ctx.config.superlink).toEqual({ controlAddress: stub.address, caFile: 'no-such-ca.pem', callTimeoutMs: 10_000, retryBaseMs: 2000, retryCapMs: 300_000, scanIntervalMs: 30_000 });
    await running.close(100);
  });
});
