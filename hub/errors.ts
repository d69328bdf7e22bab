// Coded errors for bad input from outside (CSRs, certificates, requests, config files).
// `expose` decides whether a client may see the message; everything else is a generic error.
// Programming mistakes by a caller inside the process are plain TypeErrors, not SepalErrors.
import { type ErrorCode, ErrorCodes } from '../proto/errors.ts';

export class SepalError extends Error {
  readonly code: ErrorCode;
  readonly expose: boolean;
  readonly detail: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, opts: { expose?: boolean; detail?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'SepalError';
    this.code = code;
    this.expose = opts.expose ?? code !== ErrorCodes.INTERNAL;
    this.detail = opts.detail === undefined ? undefined : Object.freeze({ ...opts.detail });
  }
}

export function isSepalError(e: unknown, code?: ErrorCode): e is SepalError {
  return e instanceof SepalError && (code === undefined || e.code === code);
}

export { ErrorCodes };
export type { ErrorCode };
