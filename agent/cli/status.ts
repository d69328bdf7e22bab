// sepal-agent status: what this host's agent is doing, from its state dir (no daemon needed).
import { loadAgentConfig } from '../config.ts';
import { readStatusFile } from '../daemon/daemon.ts';
import { readNodeRecord, statePaths } from '../enroll/store.ts';
import { AgentError, ErrorCodes } from '../errors.ts';
import { runOptions } from './run.ts';

function inWords(ms: number): string {
  if (ms <= 0) return 'expired';
  const h = Math.floor(ms / 3_600_000);
  const m = Math.floor((ms % 3_600_000) / 60_000);
  return h > 0 ? `${h}h ${m}m` : `${m}m`;
}

export function cmdStatus(argv: string[], out: { write(s: string): unknown }, now: number = Date.now()): number {
  const o = runOptions(argv);
  const config = loadAgentConfig(o.config, { stateDir: o.stateDir });
  const paths = statePaths(config.stateDir);
  const node = readNodeRecord(paths.nodeJson);
  if (node === null) throw new AgentError(ErrorCodes.STATE_INVALID, `${paths.root} holds no enrolled identity (run sepal-agent enroll)`);
  const st = readStatusFile(paths.root);
  if (o.json === true) {
    out.write(`${JSON.stringify({ node, status: st })}\n`);
    return 0;
  }
  const rows: Array<[string, string]> = [
    ['node', `${node.nodeId} (${node.name})`],
    ['organisation', node.org],
    ['hub', node.grpcAddress],
  ];
  if (st === null) {
    rows.push(['agent', 'has not run yet (start it: systemctl start sepal-agent, or sepal-agent run)']);
  } else {
    const notAfter = Date.parse(st.cert.notAfter);
    let alive = false;
    try {
      process.kill(st.pid, 0);
      alive = true;
    } catch (e) {
      // EPERM: the process exists but belongs to another user (a root agent, status run by a user).
      alive = (e as NodeJS.ErrnoException).code === 'EPERM';
    }
    const daemonState = alive || st.state === 'stopped' ? st.state : `not running (last state ${st.state})`;
    rows.push(
      ['agent', `${daemonState} (pid ${st.pid}, updated ${st.updatedAt})`],
      ['certificate', `expires in ${inWords(notAfter - now)} (${st.cert.notAfter}), renewal ${st.cert.rotation}`],
      ['manifest', st.manifest.version === 0 ? 'none yet' : `version ${st.manifest.version} (${st.manifest.lastResult ?? 'not applied'})`],
      ...Object.entries(st.children).map(([k, v]): [string, string] => [k, v.state]),
      ['last hub contact', st.hub.lastContact ?? 'never'],
      ['metrics', st.metrics ?? 'off'],
    );
    if (st.rejectedManifests.length > 0) rows.push(['rejected manifests', st.rejectedManifests.join(', ')]);
  }
  const w = Math.max(...rows.map(([k]) => k.length));
  for (const [k, v] of rows) out.write(`${k.padEnd(w)}  ${v}\n`);
  return 0;
}
