// Certificate rotation against a real hub over mTLS: a state dir enrolled by the real
// `sepal-agent enroll`, the real Renew client, and the rotator on the system clock. A rotation
// leaves a new pair on disk that openssl verifies, the hub records it ('cert.renewed'), the new
// pair works for the next call; a node revoked with `sepal-hub node revoke` goes 'revoked'.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fs from 'node:fs';
import path from 'node:path';
import { ErrorCodes } from '../../proto/errors.ts';
import { lockState, statePaths, type StatePaths } from '../../agent/enroll/store.ts';
import { silentLogger } from '../../agent/log.ts';
import { systemClock } from '../../agent/runtime/clock.ts';
import { createHubRenew } from '../../agent/credentials/hub-renew.ts';
import type { CurrentIdentity } from '../../agent/credentials/identity.ts';
import { CertificateRotator, type RenewalResult, type RotationState } from '../../agent/credentials/rotator.ts';
import { cli, freePorts, startTestHub, tempDir, type TestHub } from '../helpers/hub.ts';
import { auditFor, enrollWithCli, opensslPublicKeys, opensslVerify, serialOnDisk } from './agent-rotation.helpers.ts';

let hub: TestHub;
let work: string;
beforeAll(async () => {
  hub = await startTestHub({ fixedPorts: true });
  work = tempDir('sepal-rotation-it-');
});
afterAll(async () => {
  await hub.stop();
  fs.rmSync(work, { recursive: true, force: true });
});

interface Running {
  readonly rotator: CertificateRotator;
  readonly paths: StatePaths;
  readonly states: RotationState[];
  readonly results: RenewalResult[];
  readonly rotated: CurrentIdentity[];
  close(): Promise<void>;
}

let seq = 0;
async function enrolledRotator(opts: { address?: string } = {}): Promise<Running & { nodeId: string }> {
  const dir = path.join(work, `state-${++seq}`);
  const nodeId = await enrollWithCli(hub, dir);
  const paths = statePaths(dir);
  const unlock = lockState(paths);
  const states: RotationState[] = [];
  const results: RenewalResult[] = [];
  const rotated: CurrentIdentity[] = [];
  const rotator = new CertificateRotator({
    clock: systemClock,
    paths,
    renew: createHubRenew(opts.address === undefined ? {} : { address: opts.address, deadlineMs: 5_000 }),
    onRotated: (i) => rotated.push(i),
    onState: (s) => states.push(s),
    onRenewal: (r) => results.push(r),
    log: silentLogger(),
  });
  rotator.start();
  return {
    nodeId, rotator, paths, states, results, rotated,
    close: async () => {
      rotator.stop();
      await rotator.whenIdle();
      unlock();
    },
  };
}

describe('certificate rotation against a real hub', () => {
  it('rotates over mTLS: a new pair on disk that openssl verifies, recorded by the hub; the new pair renews again', async () => {
    const r = await enrolledRotator();
    try {
      const first = serialOnDisk(r.paths.identity);
      expect(r.rotator.state).toBe('scheduled');
      await r.rotator.renewNow();
      expect(r.results).toEqual(['success']);
      expect(r.rotator.state).toBe('scheduled');
      const second = serialOnDisk(r.paths.identity);
      expect(second).not.toBe(first);
      expect(await opensslVerify(r.paths.identity)).toBe(`${path.join(r.paths.identity, 'tls.crt')}: OK`);
      const pub = await opensslPublicKeys(r.paths.identity);
      expect(pub.key).toBe(pub.cert);
      expect(r.rotated.map((i) => i.serial)).toEqual([second]);
      expect(fs.readdirSync(r.paths.root).filter((n) => n.startsWith('.identity-'))).toEqual([]);

      const audit = await auditFor(hub, r.nodeId);
      const renewed = audit.filter((e) => e.event === 'cert.renewed');
      expect(renewed).toHaveLength(1);
      expect(renewed[0]).toMatchObject({ actor: `node:${r.nodeId}`, detail: { serial: second, previous: first } });
      expect((await hub.running.hub.ctx.store.getNode(r.nodeId))?.certSerial).toBe(second);

      // The next renewal authenticates with the pair that was just swapped in.
      await r.rotator.renewNow();
      expect(r.results).toEqual(['success', 'success']);
      const third = serialOnDisk(r.paths.identity);
      const again = (await auditFor(hub, r.nodeId)).filter((e) => e.event === 'cert.renewed');
      expect(again.at(-1)).toMatchObject({ detail: { serial: third, previous: second } });
      expect(await opensslVerify(r.paths.identity)).toMatch(/: OK$/);
    } finally {
      await r.close();
    }
  });

  it('a node revoked with `sepal-hub node revoke` goes revoked: no more attempts, files kept', async () => {
    const r = await enrolledRotator();
    try {
      const before = fs.readFileSync(path.join(r.paths.identity, 'tls.crt'), 'utf8');
      const rev = await cli(['node', 'revoke', r.nodeId, '--data-dir', hub.paths.dataDir]);
      expect(rev.code, rev.stderr).toBe(0);
      await r.rotator.renewNow();
      expect(r.rotator.state).toBe('revoked');
      expect(r.rotator.status()).toMatchObject({ lastErrorCode: ErrorCodes.CLIENT_CERT_REVOKED, nextAttemptAt: null });
      expect(r.results).toEqual(['refused']);
      expect(r.states).toEqual(['scheduled', 'renewing', 'revoked']);
      expect(fs.readFileSync(path.join(r.paths.identity, 'tls.crt'), 'utf8')).toBe(before);
      await r.rotator.renewNow();
      expect(r.results).toEqual(['refused']);
    } finally {
      await r.close();
    }
  });

  it('a hub that is not there is HUB_UNREACHABLE: backoff, files unchanged', async () => {
    const [port] = await freePorts(1);
    const r = await enrolledRotator({ address: `127.0.0.1:${port}` });
    try {
      const before = serialOnDisk(r.paths.identity);
      await r.rotator.renewNow();
      expect(r.rotator.status()).toMatchObject({ state: 'backoff', lastErrorCode: ErrorCodes.HUB_UNREACHABLE, consecutiveFailures: 1 });
      expect(r.results).toEqual(['failure']);
      expect(serialOnDisk(r.paths.identity)).toBe(before);
    } finally {
      await r.close();
    }
  });
});
