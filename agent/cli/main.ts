#!/usr/bin/env node
// sepal-agent: the node side of a Sepal federation. This entry point owns the process: it parses
// the command, installs the only signal handlers (Ctrl-C / SIGTERM abort the running command) and
// turns every failure into an exit code: 0 ok, 1 "error CODE: message", 2 usage, 130 cancelled.
import { AgentError, ErrorCodes, UsageError } from '../errors.ts';
import { AGENT_VERSION } from '../version.ts';
import { ENROLL_USAGE } from './usage.ts';

const HELP = `sepal-agent ${AGENT_VERSION} — enrolls this host into a Sepal federation and keeps it there

Usage:
  ${ENROLL_USAGE}
  sepal-agent run [--config FILE] [--state-dir DIR] [--metrics-addr HOST:PORT]
  sepal-agent status [--config FILE] [--state-dir DIR] [--json]
  sepal-agent doctor [--config FILE] [--state-dir DIR]
  sepal-agent --help | --version

run:     the daemon: renews the certificate, follows manifests, reports status, serves
         /metrics, /healthz and /readyz on loopback (default 127.0.0.1:9478). SIGHUP reloads.
status:  node, certificate expiry, manifest version, children, last hub contact.
doctor:  preflight checks with a fix hint for each failure (exit 1 when one fails).

enroll:
  --hub URL        the hub's HTTPS base URL, e.g. https://hub.example.org:8444
  --ca-sha256 HEX  SHA-256 fingerprint of the hub's root CA (from the hub operator; colons optional).
                   Nothing from the hub is trusted before it matches.
  --token TOKEN    a single-use enrollment token instead of the interactive device login
  --name NAME      a name for this node (default: the host name)
  --org ORG        the organisation you mean to enroll into; refused if the credential says otherwise
  --state-dir DIR  where the identity is kept (default: /var/lib/sepal-agent;
                   Windows: %ProgramData%\\Sepal\\Agent)
  --force          enroll again as a NEW node although this host is enrolled
  --json           print { nodeId, org, certNotAfter, stateDir } as the last line

Exit codes: 0 success, 1 error (printed as "error CODE: message"), 2 usage error, 130 cancelled.
`;

export const EXIT_CANCELLED = 130;

export function exitCodeFor(e: unknown, stderr: { write(s: string): unknown }): number {
  if (e instanceof UsageError) {
    stderr.write(`usage error: ${e.message}\n(see sepal-agent --help)\n`);
    return 2;
  }
  if (e instanceof AgentError) {
    // One line, whatever the hub or the IdP put in the text.
    stderr.write(`error ${e.code}: ${e.message.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ')}\n`);
    return e.code === ErrorCodes.CANCELLED ? EXIT_CANCELLED : 1;
  }
  stderr.write(`error ${ErrorCodes.INTERNAL}: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  return 1;
}

export async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv;
  const abort = new AbortController();
  const onSignal = (sig: NodeJS.Signals): void => {
    // A second signal means "now": the first one is still unwinding (e.g. an RPC in flight).
    if (abort.signal.aborted) process.exit(EXIT_CANCELLED);
    process.stderr.write(`\n${sig}: cancelling\n`);
    abort.abort();
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    switch (cmd) {
      // Each command loads only its own modules: the daemon never pays for the device flow's
      // OIDC client or the QR encoder (its idle RSS is a target).
      case 'enroll':
        return await (await import('./enroll.ts')).cmdEnroll(rest, { stdout: process.stdout, stderr: process.stderr, signal: abort.signal });
      case 'run':
        return await (await import('./run.ts')).cmdRun(rest, { signal: abort.signal });
      case 'status':
        return (await import('./status.ts')).cmdStatus(rest, process.stdout);
      case 'doctor':
        return await (await import('./doctor.ts')).cmdDoctor(rest, process.stdout);
      case '--version': case 'version':
        process.stdout.write(`${AGENT_VERSION}\n`);
        return 0;
      case undefined: case '--help': case '-h': case 'help':
        process.stdout.write(HELP);
        return cmd === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown command ${JSON.stringify(cmd)}`);
    }
  } catch (e) {
    return exitCodeFor(e, process.stderr);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

process.exitCode = await main(process.argv.slice(2));
