// One structured logger (pino, JSON lines on stdout for journald) with secrets redacted.
import pino, { type Logger } from 'pino';

export type { Logger };

const REDACT = [
  'token', 'accessToken', 'access_token', 'enrollmentToken', 'enrollment_token', 'authorization',
  'privateKey', 'key', 'password', 'secret',
  '*.token', '*.accessToken', '*.access_token', '*.enrollmentToken', '*.enrollment_token',
  '*.authorization', '*.privateKey', '*.key', '*.password', '*.secret',
  'req.headers.authorization', 'headers.authorization',
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

export function createLogger(opts: { level?: string; name?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino({
    name: opts.name ?? 'sepal-hub',
    level: opts.level ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, opts.destination);
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
