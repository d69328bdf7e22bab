// Coded errors for the agent: failures caused by the outside world (the hub, the IdP, the network,
// the state dir) carry a stable code from proto/errors.ts that the CLI prints and tests switch on.
// A caller's programming mistake inside the process stays a plain TypeError.
import { type ErrorCode, ErrorCodes } from '../proto/errors.ts';

export class AgentError extends Error {
  readonly code: ErrorCode;
  readonly detail: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, opts: { detail?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'AgentError';
    this.code = code;
    this.detail = opts.detail === undefined ? undefined : Object.freeze({ ...opts.detail });
  }
}

export function isAgentError(e: unknown, code?: ErrorCode): e is AgentError {
  return e instanceof AgentError && (code === undefined || e.code === code);
}

/** A command line the agent cannot act on (exit code 2). */
export class UsageError extends Error {
  override name = 'UsageError';
}

export { ErrorCodes };
export type { ErrorCode };
