// Child process for test/unit/store.sqlite.test.ts (not a test file itself). Writes to a store
// file in a loop — enroll, two renewals, a denial, a manifest per iteration — and reports each
// finished iteration on stdout with a synchronous write, so the parent knows what was committed.
//   node store.crash-child.ts <db> loop <iterations> <prefix>   run N iterations and exit 0
//   node store.crash-child.ts <db> loop 0 <prefix>              run until killed
//   node store.crash-child.ts <db> in-tx <iterations> <prefix>  run N iterations, then SIGKILL
//        itself inside a publishManifests transaction after the first node's rows were written
import { writeSync } from 'node:fs';
import { SqliteStore } from '../../hub/store/sqlite.ts';
import { enrolledAudit, newCert, newNode, renewedAudit, serialFor, T0 } from './store.fixtures.ts';

const [dbPath, mode, itersArg, prefix = 'p'] = process.argv.slice(2);
if (dbPath === undefined || (mode !== 'loop' && mode !== 'in-tx')) {
  throw new TypeError('usage: store.crash-child.ts <db> loop|in-tx <iterations> [prefix]');
}
const iterations = Number(itersArg ?? '0');
const store = SqliteStore.open(dbPath);
const org = 'org-crash';

for (let i = 0; iterations === 0 || i < iterations; i++) {
  const id = `${prefix}-${i}`;
  const now = T0 + i;
  const s0 = serialFor(`${id}/enroll`);
  await store.enrollNode(newNode(id, org), newCert(s0, id, org, 'enroll'), enrolledAudit(id, org, s0), now);
  for (const r of [1, 2]) {
    const s = serialFor(`${id}/renew/${r}`);
    await store.recordRenewal(newCert(s, id, org, 'renew'), renewedAudit(id, org, s), now);
  }
  await store.appendAudit({ event: 'security.denied', actor: 'peer:test', reason: 'RATE_LIMITED', detail: { i } }, now);
  await store.publishManifests([id], (nodeId, o, version) => ({ kid: 'k1', jws: `jws:${nodeId}:${o}:${version}`, expiresAt: now + 1000 }),
    (nodeId, o, version) => ({ event: 'manifest.published', actor: 'cli', nodeId, org: o, detail: { version } }), now);
  writeSync(1, `${i}\n`);
}

if (mode === 'in-tx') {
  const first = `${prefix}-0`;
  const last = `${prefix}-${iterations - 1}`;
  await store.publishManifests([first, last], (nodeId, o, version) => {
    if (nodeId === last) process.kill(process.pid, 'SIGKILL'); // dies holding the write transaction
    return { kid: 'k1', jws: `jws:${nodeId}:${o}:${version}`, expiresAt: T0 };
  }, (nodeId, o, version) => ({ event: 'manifest.published', actor: 'cli', nodeId, org: o, detail: { version } }), T0);
  writeSync(1, 'not reached\n');
}
await store.close();
