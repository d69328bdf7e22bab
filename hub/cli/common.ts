// Flags every admin command shares, and opening the hub they point at.
import { hubPaths, type HubPaths } from '../datadir.ts';
import { openHub, type OpenHub } from '../runtime.ts';
import { createLogger } from '../log.ts';
import { required } from './args.ts';

export const COMMON = {
  'data-dir': { type: 'string' },
  config: { type: 'string' },
  db: { type: 'string' },
  json: { type: 'boolean' },
  'log-level': { type: 'string' },
} as const;

export function pathsFrom(v: { 'data-dir'?: string | undefined; config?: string | undefined; db?: string | undefined }): HubPaths {
  return hubPaths(required(v['data-dir'], '--data-dir'), { config: v.config, db: v.db });
}

export async function withHub<T>(paths: HubPaths, fn: (hub: OpenHub) => Promise<T>): Promise<T> {
  // Admin commands log to stderr only at warn and above, so their stdout stays clean for --json.
  const hub = await openHub(paths, { log: createLogger({ level: 'warn', destination: process.stderr }) });
  try {
    return await fn(hub);
  } finally {
    await hub.close();
  }
}

export function out(s: string): void {
  process.stdout.write(s.endsWith('\n') ? s : s + '\n');
}

export function table(rows: string[][]): string {
  const widths: number[] = [];
  for (const r of rows) r.forEach((c, i) => { widths[i] = Math.max(widths[i] ?? 0, c.length); });
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i] ?? 0)).join('  ').trimEnd()).join('\n');
}
