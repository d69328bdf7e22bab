// Child process for agent-rotation-crash.test.ts (not a test file itself): the real rotator with
// the real Renew client, rotating the identity in <stateDir> back to back against a running hub
// until it is killed. It marks each phase on stdout with a synchronous write as the phase begins,
// so the parent knows what a SIGKILL interrupted:
//   L  modules loaded; waiting for a line on stdin before touching the state dir (the parent
//      starts the next child while the current one runs, so start-up time is not wasted)
//   R  ready: identity recovered and loaded       B  a rotation begins: key, CSR, Renew call
//   T  writing the complete new identity dir      S  the swap: identity/ is being renamed away
//   W  the new identity/ is in place; the old one is being removed
//   D  the rotation is complete                   F  it failed (the code follows on stderr)
// The most delicate moment of the swap (identity/ renamed away, the new one not yet in place)
// lasts only a rename and an fsync; it is held open SWAP_PAUSE_MS longer so that random kills
// land there too. Nothing else about the store is changed.
//   node agent-rotation-crash-child.ts <stateDir>
import { writeSync } from 'node:fs';
import { loadAgentApi } from '../../proto/load.ts';
import { lockState, realFs, statePaths, type StoreFs } from '../../agent/enroll/store.ts';
import { silentLogger } from '../../agent/log.ts';
import { systemClock } from '../../agent/runtime/clock.ts';
import { createHubRenew } from '../../agent/credentials/hub-renew.ts';
import { CertificateRotator } from '../../agent/credentials/rotator.ts';

const SWAP_PAUSE_MS = 3;

const [stateDir] = process.argv.slice(2);
if (stateDir === undefined) throw new TypeError('usage: agent-rotation-crash-child.ts <stateDir>');
const paths = statePaths(stateDir);
const mark = (m: string): void => {
  writeSync(1, `${m}\n`);
};
const pause = new Int32Array(new SharedArrayBuffer(4));

const markedFs: StoreFs = {
  ...realFs,
  mkdirPrivate: (dir) => {
    mark('T');
    realFs.mkdirPrivate(dir);
  },
  rename: (from, to) => {
    if (from === paths.identity) mark('S');
    realFs.rename(from, to);
    if (from === paths.identity) Atomics.wait(pause, 0, 0, SWAP_PAUSE_MS);
    if (to === paths.identity) mark('W');
  },
};

loadAgentApi(); // parse the proto now rather than inside the first rotation
const rotator = new CertificateRotator({
  clock: systemClock,
  paths,
  renew: createHubRenew({ deadlineMs: 10_000 }),
  onRotated: () => undefined,
  onState: (s) => {
    if (s === 'renewing') mark('B');
  },
  onRenewal: (r) => {
    if (r === 'success') {
      mark('D');
      return;
    }
    mark('F');
    writeSync(2, `${rotator.status().lastErrorCode ?? '?'}\n`);
  },
  log: silentLogger(),
  fs: markedFs,
  // Back to back: the loop below asks for the next rotation as soon as one ends.
  minRenewIntervalMs: 0,
});
mark('L');
await new Promise((resolve) => process.stdin.once('data', resolve));
// If the parent dies, its end of stdin closes: do not keep rotating as an orphan.
process.stdin.once('end', () => process.exit(2));
lockState(paths); // a lock left by the previous (killed) child is taken over
rotator.start();
mark('R');
for (;;) {
  await rotator.renewNow();
  if (rotator.state === 'revoked') process.exit(3);
  // After a failure, not a tight loop.
  if (rotator.state !== 'scheduled') await new Promise((resolve) => setTimeout(resolve, 50));
}
