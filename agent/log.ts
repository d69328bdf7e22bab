// The agent's one structured logger: pino, JSON lines, secrets redacted. The CLI logs to stderr so
// that stdout stays for what the user (or a program reading --json) is meant to see.
import pino, { type Logger } from 'pino';

export type { Logger };

const SECRET_KEYS = [
  'token', 'accessToken', 'access_token', 'enrollmentToken', 'enrollment_token', 'device_code', 'deviceCode',
  'refresh_token', 'id_token', 'authorization', 'privateKey', 'keyPem', 'key', 'password', 'secret',
];
const REDACT = [
  ...SECRET_KEYS,
  ...SECRET_KEYS.map((k) => `*.${k}`),
  'req.headers.authorization', 'headers.authorization',
];

export function createLogger(opts: { level?: string; destination?: pino.DestinationStream } = {}): Logger {
  return pino({
    name: 'sepal-agent',
    level: opts.level ?? 'info',
    redact: { paths: REDACT, censor: '[redacted]' },
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
  }, opts.destination ?? pino.destination({ fd: 2, sync: true }));
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
