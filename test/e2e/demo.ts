// `npm run demo`: a whole federation on loopback, from real parts, with readable progress — the
// hub, an OpenID provider with the device flow, a Flower SuperLink (TLS, SuperNode auth), two
// organisations whose agents enroll through the device flow and run their SuperNodes, one
// federated-averaging run of a small linear model, and a status table at the end. Everything it
// started is stopped when it ends, fails or is interrupted (Ctrl-C). Runs in ~2 minutes.
import { Federation } from './federation.ts';
import { waitUntil } from '../helpers/wait.ts';
import { parseLinregResult } from '../helpers/flower.ts';

const ORGS = [{ org: 'hospital-a', user: 'alice' }, { org: 'hospital-b', user: 'bob' }] as const;
const ROUNDS = 5;
const LIFETIME_S = 60;

const tty = process.stdout.isTTY;
const bold = (s: string) => (tty ? `\x1b[1m${s}\x1b[0m` : s);
const dim = (s: string) => (tty ? `\x1b[2m${s}\x1b[0m` : s);
const t0 = Date.now();
const stamp = () => dim(`[${String(Math.round((Date.now() - t0) / 1000)).padStart(3)} s]`);
const say = (line: string) => process.stdout.write(`${stamp()} ${line}\n`);
const step = (n: number, total: number, line: string) => process.stdout.write(`\n${stamp()} ${bold(`[${n}/${total}] ${line}`)}\n`);

function table(rows: string[][]): string {
  const widths = rows[0]?.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length))) ?? [];
  return rows.map((r, k) => {
    const line = r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd();
    return k === 0 ? bold(line) : line;
  }).join('\n');
}

const fed = new Federation({
  orgs: ORGS,
  leafLifetimeSeconds: LIFETIME_S,
  say,
  onPrompt: (org, facts) => {
    process.stdout.write([
      '',
      `  ┌─ sepal-agent enroll (${org}) ─────────────────────────────────────────`,
      `  │ To enroll this host, open:  ${facts['verification_uri'] ?? ''}`,
      `  │ and enter the code:         ${bold(facts['user_code'] ?? '')}`,
      `  │ (or open ${facts['verification_uri_complete'] ?? ''})`,
      `  │ The code expires in ${facts['expires_in'] ?? '?'} s.`,
      '  └────────────────────────────────────────────────────────────────────',
      `  ${dim(`Demo shortcut: the local OpenID provider approves it now as ${ORGS.find((o) => o.org === org)?.user ?? '?'}, through its own login and consent pages.`)}`,
      '',
    ].join('\n'));
  },
});

// One teardown, whoever asks first (the end of main, a failure, a signal); later callers wait for it.
let closing: Promise<void> | null = null;
function shutdown(code: number): void {
  if (closing === null) {
    process.stdout.write(`\n${stamp()} Stopping everything the demo started...\n`);
    closing = fed.close().then(
      () => { process.stdout.write(`${stamp()} Stopped. Nothing is left running.\n`); },
      (e: unknown) => { process.stderr.write(`teardown failed: ${e instanceof Error ? e.message : String(e)}\n`); },
    );
  }
  void closing.then(() => process.exit(code));
}
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(sig, () => shutdown(130));

async function main(): Promise<void> {
  const TOTAL = 6;
  process.stdout.write(`${bold('Sepal demo')}: a federation on loopback from real parts (Flower 1.23.0, an OpenID provider, the Sepal hub and agents).\n`);
  step(1, TOTAL, 'Cloud side: Flower venv, SuperLink, OpenID provider, hub');
  await fed.start();

  step(2, TOTAL, 'Each organisation enrolls its host: two commands, nothing to do on the SuperLink side');
  const nodes: string[] = [];
  for (const o of ORGS) {
    const nodeId = await fed.enroll(o);
    nodes.push(nodeId);
    await fed.startAgent(o, nodeId);
  }

  step(3, TOTAL, 'The hub registers each node\'s Flower key with the SuperLink; the agents start their SuperNodes');
  const hubNodes = await waitUntil('both nodes registered', 60_000, async () => {
    const list = await fed.hubNodes();
    return list.length === ORGS.length && list.every((n) => n.flower?.state === 'registered') ? list : undefined;
  });
  for (const n of hubNodes) say(`${n.org}: Sepal node ${n.id} = Flower node ${n.flower?.nodeId ?? '?'}`);
  const ids = hubNodes.map((n) => n.flower?.nodeId ?? '');
  await waitUntil('SuperNodes online', 120_000, async () => {
    const list = (await fed.flowerNodes()).filter((f) => ids.includes(f.nodeId));
    return list.length === ids.length && list.every((f) => f.status === 'online') ? true : undefined;
  }, { intervalMs: 1000 });
  say('flwr supernode list: both SuperNodes are online');

  step(4, TOTAL, `flwr run: ${ROUNDS} rounds of federated averaging (certificates live ${LIFETIME_S} s and rotate meanwhile)`);
  const before = await Promise.all(fed.agents.map((a) => fed.renewals(a)));
  const ticker = setInterval(() => {
    void Promise.all(fed.agents.map((a) => fed.renewals(a).catch(() => 0))).then((r) => {
      say(`  ...training; certificate renewals so far: ${fed.agents.map((a, i) => `${a.org} ${(r[i] ?? 0)}`).join(', ')}`);
    });
  }, 10_000);
  const run = await fed.run({ 'num-server-rounds': ROUNDS, 'min-nodes': ORGS.length }).finally(() => clearInterval(ticker));
  if (run.status !== 'finished:completed') throw new Error(`the run ended ${String(run.status)}:\n${run.output.slice(-2000)}`);
  const result = parseLinregResult(run.result);
  const after = await Promise.all(fed.agents.map((a) => fed.renewals(a)));
  say(`run ${run.runId ?? '?'}: ${run.status}`);

  step(5, TOTAL, 'Status');
  const final = await fed.hubNodes();
  const rows = [['organisation', 'sepal node', 'flower node', 'cert expires in', 'renewals (run)', 'supernode', 'hub state']];
  for (const a of fed.agents) {
    const n = final.find((x) => x.id === a.nodeId);
    const st = fed.status(a);
    const exp = st === null ? '?' : `${Math.round((Date.parse(st.cert.notAfter) - Date.now()) / 1000)} s`;
    const i = fed.agents.indexOf(a);
    rows.push([a.org, a.nodeId, n?.flower?.nodeId ?? '?', exp, `${after[i] ?? 0} (${(after[i] ?? 0) - (before[i] ?? 0)})`, st?.children['supernode']?.state ?? '?', n?.state ?? '?']);
  }
  process.stdout.write(`\n${table(rows)}\n\n`);
  const lossRows = [['round', 'global loss (MSE)']];
  result.losses.forEach((l, i) => lossRows.push([String(i + 1), l.toExponential(4)]));
  process.stdout.write(`${table(lossRows)}\n\nmodel: weights [${result.weights.map((w) => w.toFixed(4)).join(', ')}], bias ${result.bias.toFixed(4)}\n`);

  step(6, TOTAL, 'Done');
  say('The federation ran with short-lived certificates, signed manifests and Flower keys registered by the hub.');
}

main().then(() => shutdown(0), (e: unknown) => {
  if (closing !== null) return; // interrupted: the run was cut short on purpose
  process.stderr.write(`\ndemo failed: ${e instanceof Error ? e.message : String(e)}\n`);
  for (const a of fed.agents) process.stderr.write(`---- last lines of the ${a.org} agent's log\n${a.logs().split('\n').slice(-15).join('\n')}\n`);
  shutdown(1);
});
