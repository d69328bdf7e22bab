// The manuals cannot silently rot: every fenced block whose info string is `sh runnable` in
// docs/*.md is run. A file's runnable blocks run in order as one bash script (`bash -euo
// pipefail`), so a later block may use what an earlier one set up (a scratch data dir `D`, a `hub`
// function). Each file runs in a fresh temp dir (the cwd, HOME and TMPDIR), with `sepal-hub` and
// `sepal-agent` on the PATH as wrappers around this checkout's CLIs. Only blocks that work on
// loopback without root, systemd, Flower or OpenVPN are marked; the rest stay plain `sh`.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

const REPO = path.resolve(import.meta.dirname, '../..');
const DOCS = path.join(REPO, 'docs');
const TIMEOUT_MS = 60_000;

interface Block {
  line: number; // 1-based line of the opening fence
  code: string;
}

function runnableBlocks(md: string): Block[] {
  const out: Block[] = [];
  const lines = md.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const open = /^(```|~~~)(.*)$/.exec(lines[i] ?? '');
    if (!open) continue;
    const fence = open[1] ?? '```';
    const info = (open[2] ?? '').trim();
    const body: string[] = [];
    let j = i + 1;
    while (j < lines.length && !(lines[j] ?? '').startsWith(fence)) body.push(lines[j++] ?? '');
    if (/^sh\s+runnable$/.test(info)) out.push({ line: i + 1, code: body.join('\n') });
    i = j;
  }
  return out;
}

const files = fs
  .readdirSync(DOCS)
  .filter((f) => f.endsWith('.md'))
  .sort()
  .map((f) => ({ file: f, blocks: runnableBlocks(fs.readFileSync(path.join(DOCS, f), 'utf8')) }))
  .filter((f) => f.blocks.length > 0);

const tmpRoots: string[] = [];
afterAll(() => {
  for (const d of tmpRoots) fs.rmSync(d, { recursive: true, force: true });
});

function sandbox(): { cwd: string; env: NodeJS.ProcessEnv } {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'sepal-docs-'));
  tmpRoots.push(root);
  const bin = path.join(root, 'bin');
  const cwd = path.join(root, 'work');
  const tmp = path.join(root, 'tmp');
  for (const d of [bin, cwd, tmp]) fs.mkdirSync(d);
  for (const [name, main] of [
    ['sepal-hub', 'hub/cli/main.ts'],
    ['sepal-agent', 'agent/cli/main.ts'],
  ] as const) {
    const script = `#!/bin/sh\nexec ${JSON.stringify(process.execPath)} ${JSON.stringify(path.join(REPO, main))} "$@"\n`;
    fs.writeFileSync(path.join(bin, name), script, { mode: 0o755 });
  }
  const env: NodeJS.ProcessEnv = {
    PATH: `${bin}:${path.dirname(process.execPath)}:${process.env.PATH ?? '/usr/bin:/bin'}`,
    HOME: cwd,
    TMPDIR: tmp,
    LANG: 'C.UTF-8',
    LC_ALL: 'C.UTF-8',
  };
  return { cwd, env };
}

/** One script for a file: each block is preceded by a marker so a failure names its block. */
function script(file: string, blocks: Block[]): string {
  const parts = ['__sepal_block="none"', `trap 'echo "docs/${file}: failing block at line $__sepal_block" >&2' ERR`];
  for (const b of blocks) parts.push(`__sepal_block=${b.line}`, b.code);
  return parts.join('\n') + '\n';
}

describe('runnable blocks in docs/*.md', () => {
  it('finds runnable blocks (operations.md covers the operator CLI)', () => {
    const ops = files.find((f) => f.file === 'operations.md');
    expect(ops?.blocks.length ?? 0).toBeGreaterThanOrEqual(5);
  });

  for (const { file, blocks } of files) {
    it(
      `docs/${file}: ${blocks.length} runnable block(s) at line(s) ${blocks.map((b) => b.line).join(', ')} exit 0`,
      () => {
        const { cwd, env } = sandbox();
        const res = spawnSync('bash', ['-Eeuo', 'pipefail', '-c', script(file, blocks)], {
          cwd,
          env,
          encoding: 'utf8',
          timeout: TIMEOUT_MS * blocks.length,
          killSignal: 'SIGKILL',
        });
        const where = /failing block at line (\d+)/.exec(res.stderr ?? '')?.[1];
        const msg = [
          `docs/${file}${where ? `:${where}` : ''}: exit ${String(res.status)}${res.signal ? ` (signal ${res.signal})` : ''}`,
          '--- stdout ---',
          res.stdout ?? '',
          '--- stderr ---',
          res.stderr ?? '',
        ].join('\n');
        expect(res.error, msg).toBeUndefined();
        expect(res.status, msg).toBe(0);
      },
      TIMEOUT_MS * blocks.length + 5_000,
    );
  }
});
