// Small helpers for the CLI: flag parsing with node:util, durations, and coded exits.
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { SepalError, ErrorCodes } from '../errors.ts';

export class UsageError extends Error {
  override name = 'UsageError';
}

type Opts = NonNullable<ParseArgsConfig['options']>;

export function parse<T extends Opts>(argv: string[], options: T, allowPositionals = false) {
  try {
    return parseArgs({ args: argv, options, allowPositionals, strict: true });
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function required(v: string | undefined, flag: string): string {
  if (v === undefined || v === '') throw new UsageError(`${flag} is required`);
  return v;
}

const UNITS: Record<string, number> = { s: 1, m: 60, h: 3600, d: 86400 };

/** "90s", "15m", "24h", "7d" -> seconds. */
export function parseDuration(s: string, flag: string): number {
  const m = /^(\d+)([smhd])$/.exec(s);
  if (m === null) throw new UsageError(`${flag}: expected a duration like 30m, 24h or 7d, got ${JSON.stringify(s)}`);
  return Number(m[1]) * (UNITS[m[2] as string] ?? 1);
}

export function checkHostPort(s: string, flag: string): string {
  if (!/^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/.test(s) || Number(s.slice(s.lastIndexOf(':') + 1)) > 65535) {
    throw new UsageError(`${flag}: expected HOST:PORT, got ${JSON.stringify(s)}`);
  }
  return s;
}

export function fail(e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`usage error: ${e.message}\n(see --help)\n`);
    return 2;
  }
  if (e instanceof SepalError) {
    process.stderr.write(`error ${e.code}: ${e.message}\n`);
    return 1;
  }
  process.stderr.write(`error ${ErrorCodes.INTERNAL}: ${e instanceof Error ? e.stack ?? e.message : String(e)}\n`);
  return 1;
}
