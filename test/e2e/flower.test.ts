// Issue 5 end to end, with real Flower 1.23.0 (flwr from PyPI, in the venv npm test builds):
// two organisations enroll through the OAuth device flow against a real OpenID provider; the hub
// registers their Flower keys with a real flower-superlink (TLS, SuperNode authentication, file
// database); each agent runs its flower-supernode from the signed manifest. Then: both nodes are
// online, a 5-round federated-averaging run completes with the result federated averaging must
// give, certificates (60 s lifetime) rotate during the run, and revoking one node unregisters it
// from the SuperLink and stops its SuperNode while the other keeps working.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Federation, type AgentProc } from './federation.ts';
import { waitUntil } from '../helpers/wait.ts';
import { python3Available, referenceResult, parseLinregResult } from '../helpers/flower.ts';

const ORGS = [{ org: 'hospital-a', user: 'alice' }, { org: 'hospital-b', user: 'bob' }] as const;
const RUN = { 'num-server-rounds': 5, 'local-steps': 5, 'learning-rate': 0.05, 'min-nodes': 2 } as const;

const skip = !python3Available();
if (skip) console.warn('python3 is not installed: skipping the Flower end-to-end test (.ci/run installs it)');

let fed: Federation;
const agents: AgentProc[] = [];
const flowerIds = new Map<string, string>(); // sepal node id -> Flower node id

beforeAll(async () => {
  if (skip) return;
  fed = new Federation({ orgs: ORGS, leafLifetimeSeconds: 60 });
  await fed.start();
  for (const o of ORGS) {
    const nodeId = await fed.enroll(o);
    agents.push(await fed.startAgent(o, nodeId));
  }
}, 240_000);

afterAll(async () => {
  if (skip) return;
  if (process.env['SEPAL_DEBUG'] !== undefined) for (const a of agents) console.log(`---- agent ${a.org}\n${a.logs()}`);
  await fed?.close();
}, 120_000);

describe.skipIf(skip)('a Sepal federation running real Flower', () => {
  it('registers both nodes with the SuperLink (exact uint64 ids) and both SuperNodes come online', async () => {
    const nodes = await waitUntil('both nodes registered on the hub', 60_000, async () => {
      const list = await fed.hubNodes();
      return list.length === 2 && list.every((n) => n.flower?.state === 'registered') ? list : undefined;
    });
    for (const n of nodes) {
      expect(n.flower?.nodeId).toMatch(/^(0|[1-9][0-9]{0,19})$/);
      flowerIds.set(n.id, n.flower?.nodeId ?? '');
    }
    const online = await waitUntil('both SuperNodes online', 120_000, async () => {
      const list = await fed.flowerNodes();
      const mine = list.filter((f) => [...flowerIds.values()].includes(f.nodeId));
      return mine.length === 2 && mine.every((f) => f.status === 'online') ? mine : undefined;
    });
    // The ids Flower lists are exactly the ids the hub recorded, digit for digit.
    expect(online.map((f) => f.nodeId).sort()).toEqual([...flowerIds.values()].sort());
    for (const a of agents) {
      const st = fed.status(a);
      expect(st?.children['supernode']?.state).toBe('running');
      expect(st?.manifest.lastResult).toBe('applied');
    }
  }, 200_000);

  it('runs 5 rounds of federated averaging to the reference result while certificates rotate', async () => {
    const before = await Promise.all(agents.map((a) => fed.renewals(a)));
    const serials = agents.map((a) => fed.status(a)?.cert.serial);
    const run = await fed.run(RUN);
    expect(run.status, run.output.slice(-3000)).toBe('finished:completed');
    const got = parseLinregResult(run.result);
    expect(got.numRounds).toBe(5);
    expect(got.losses).toHaveLength(5);
    // Federated averaging computed without Flower, on the same two partitions.
    const want = await referenceResult({ numPartitions: 2, runConfig: RUN });
    got.weights.forEach((w, i) => expect(w).toBeCloseTo(want.weights[i] ?? NaN, 9));
    expect(got.bias).toBeCloseTo(want.bias, 9);
    got.losses.forEach((l, i) => expect(l).toBeCloseTo(want.losses[i] ?? NaN, 9));
    // The model learned: the loss fell from round to round.
    for (let i = 1; i < got.losses.length; i++) expect(got.losses[i]).toBeLessThan(got.losses[i - 1] ?? 0);
    // Each agent renewed its 60 s certificate while the run went on, and the run did not notice.
    const after = await Promise.all(agents.map((a) => fed.renewals(a)));
    after.forEach((n, i) => expect(n).toBeGreaterThan(before[i] ?? 0));
    agents.forEach((a, i) => expect(fed.status(a)?.cert.serial).not.toBe(serials[i]));
    // The SuperNodes were never restarted for it: a rotation is not a SuperNode input.
    for (const a of agents) expect(fed.status(a)?.children['supernode']?.restarts ?? 0).toBe(0);
  }, 400_000);

  it('revoking one node unregisters it from the SuperLink and stops its SuperNode; the other keeps working', async () => {
    const [a, b] = agents;
    if (a === undefined || b === undefined) throw new Error('two agents expected');
    const bFlower = flowerIds.get(b.nodeId) ?? '';
    const bPid = fed.status(b)?.children['supernode']?.pid ?? 0;
    expect(bPid).toBeGreaterThan(0);
    await fed.revoke(b.nodeId);

    // The agent hears it, stops its SuperNode (process gone), and says so.
    await waitUntil('agent b revoked with its SuperNode stopped', 60_000, () => {
      const st = fed.status(b);
      return st?.state === 'revoked' && st.children['supernode']?.state === 'stopped' ? true : undefined;
    });
    expect(() => process.kill(bPid, 0)).toThrow();
    // The hub unregistered the key: Flower lists the node as unregistered.
    await waitUntil('hub recorded the unregistration', 60_000, async () => {
      const n = (await fed.hubNodes()).find((x) => x.id === b.nodeId);
      return n?.flower?.state === 'unregistered' ? true : undefined;
    });
    const listed = await fed.flowerNodes();
    expect(listed.find((f) => f.nodeId === bFlower)?.status).toBe('unregistered');
    expect(listed.find((f) => f.nodeId === flowerIds.get(a.nodeId))?.status).toBe('online');

    // The other organisation still trains: a run that needs one node completes.
    const run = await fed.run({ ...RUN, 'num-server-rounds': 1, 'min-nodes': 1 });
    expect(run.status, run.output.slice(-3000)).toBe('finished:completed');
    expect(fed.status(a)?.state).toBe('running');
    expect(fed.status(a)?.children['supernode']?.state).toBe('running');
  }, 300_000);
});
