// `sepal-agent enroll`: checks the flags once, wires the real network, disk and terminal into the
// enrollment flow, and prints the result for a human or (--json) for a program.
import os from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { AgentError, ErrorCodes, UsageError } from '../errors.ts';
import { createLogger, type Logger } from '../log.ts';
import { httpsGet, normalizeFingerprint, parseHubUrl, type HttpsGet } from '../enroll/bootstrap.ts';
import { MAX_COMMON_NAME } from '../enroll/csr.ts';
import { deviceFlowLogin } from '../enroll/device-flow.ts';
import { enroll, type EnrollDeps, type EnrollOptions, type EnrollOutcome } from '../enroll/enroll.ts';
import { collectFacts } from '../enroll/facts.ts';
import { callEnroll, type EnrollRpc } from '../enroll/hub-client.ts';
import { defaultStateDir } from '../enroll/store.ts';
import { promptView, type Output } from './prompt.ts';

export { ENROLL_USAGE } from './usage.ts';

const FLAGS = {
  hub: { type: 'string' },
  'ca-sha256': { type: 'string' },
  token: { type: 'string' },
  name: { type: 'string' },
  org: { type: 'string' },
  'state-dir': { type: 'string' },
  force: { type: 'boolean' },
  json: { type: 'boolean' },
} as const;

// The hub's rules, checked here too so a typo fails before anyone logs in.
const ORG_RE = /^[a-z0-9][a-z0-9-]{0,62}$/;
const NAME_RE = /^[\p{L}\p{N}][\p{L}\p{N} ._-]{0,63}$/u;

export interface EnrollArgs extends EnrollOptions {
  readonly json: boolean;
}

/** The flags, checked and normalised; UsageError on anything wrong. */
export function parseEnrollArgs(argv: string[], env: { hostname: () => string; stateDir: string } = { hostname: os.hostname, stateDir: defaultStateDir() }): EnrollArgs {
  let values;
  try {
    ({ values } = parseArgs({ args: argv, options: FLAGS, allowPositionals: false, strict: true }));
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.hub === undefined) throw new UsageError('--hub is required');
  if (values['ca-sha256'] === undefined) throw new UsageError('--ca-sha256 is required (the SHA-256 fingerprint of the hub\'s root CA)');
  const pin = normalizeFingerprint(values['ca-sha256']);
  if (pin === null) throw new UsageError('--ca-sha256 must be a SHA-256 fingerprint: 64 hex digits, with or without colons');
  const token = values.token;
  if (token !== undefined && (token.length === 0 || token.length > 4096 || /\s/.test(token))) throw new UsageError('--token must be a non-empty token without spaces');
  const name = values.name ?? env.hostname();
  if (!NAME_RE.test(name)) {
    throw new UsageError(`--name must be 1..${MAX_COMMON_NAME} letters, digits, spaces, dots, dashes or underscores, starting with a letter or digit` +
      (values.name === undefined ? ` (the host name ${JSON.stringify(name)} is not; pass --name)` : ''));
  }
  const org = values.org ?? '';
  if (org !== '' && !ORG_RE.test(org)) throw new UsageError(`--org must match ${ORG_RE.source}`);
  const stateDir = values['state-dir'] ?? env.stateDir;
  if (stateDir === '') throw new UsageError('--state-dir must not be empty');
  return {
    hubUrl: parseHubUrl(values.hub),
    caSha256: pin,
    enrollmentToken: token,
    name,
    org,
    stateDir,
    force: values.force === true,
    json: values.json === true,
  };
}

export interface EnrollIo {
  readonly stdout: Output;
  readonly stderr: Output;
  readonly signal: AbortSignal;
  readonly log?: Logger;
  readonly get?: HttpsGet;
  readonly enrollRpc?: EnrollRpc;
  readonly now?: () => number;
}

export function formatOutcome(o: EnrollOutcome): string {
  return [
    `Enrolled: node ${o.nodeId} in organisation ${o.org}.`,
    `  certificate valid until ${o.certNotAfter.toISOString()} (the agent service renews it before then)`,
    `  identity stored in ${path.join(o.stateDir, 'identity')}`,
    '',
    'Next: start the agent service, which keeps the certificate fresh and runs the Flower SuperNode:',
    '  sudo systemctl enable --now sepal-agent',
    '(or run it in the foreground: sepal-agent run; see docs/agent.md)',
    '',
  ].join('\n');
}

export async function cmdEnroll(argv: string[], io: EnrollIo): Promise<number> {
  const args = parseEnrollArgs(argv);
  const log = io.log ?? createLogger({ level: 'warn' });
  const view = promptView(io.stdout, io.now === undefined ? {} : { now: io.now });
  const deps: EnrollDeps = {
    get: io.get ?? httpsGet,
    enrollRpc: io.enrollRpc ?? callEnroll,
    deviceLogin: (idp, d) => deviceFlowLogin(idp, { signal: d.signal, onPrompt: d.onPrompt, ...(io.now === undefined ? {} : { now: io.now }) }),
    facts: () => collectFacts(),
    ui: {
      replacing: (old) => io.stderr.write(
        `WARNING: enrolling as a NEW node; the old node ${old} stays registered at the hub until revoked ` +
        `(sepal-hub node revoke ${old}). Its identity on this host is replaced once the new one is issued.\n`),
      devicePrompt: (p) => view.show(p),
      deviceDone: () => view.done(),
    },
    log,
    signal: io.signal,
    ...(io.now === undefined ? {} : { now: io.now }),
  };
  let outcome: EnrollOutcome;
  try {
    outcome = await enroll(args, deps);
  } catch (e) {
    // Whatever broke while a signal was unwinding the run is reported as the cancellation it is.
    if (io.signal.aborted && !(e instanceof AgentError)) throw new AgentError(ErrorCodes.CANCELLED, 'cancelled', { cause: e });
    throw e;
  }
  if (args.json) {
    io.stdout.write(JSON.stringify({ nodeId: outcome.nodeId, org: outcome.org, certNotAfter: outcome.certNotAfter.toISOString(), stateDir: outcome.stateDir }) + '\n');
  } else {
    io.stdout.write(formatOutcome(outcome));
  }
  return 0;
}
