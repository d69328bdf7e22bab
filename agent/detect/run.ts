// Running the vendor tools: an injectable runner (argv array, never a shell, bounded time and
// output) and a PATH lookup that only trusts absolute directories. A tool that is not installed is
// "not present", never an error; a tool that is present but fails or prints garbage is a coded
// AgentError that detection reports as a warning and metrics count.
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, stat } from 'node:fs/promises';
import path from 'node:path';
import { AgentError, ErrorCodes } from '../errors.ts';

export type GpuTool = 'nvidia-smi' | 'rocm-smi';

/** What a finished child process left behind. A non-zero exit is a result, not a rejection. */
export interface RunResult {
  readonly stdout: string;
  readonly stderr: string;
  /** null when the process died of a signal. */
  readonly exitCode: number | null;
  readonly timedOut?: boolean;
}

/**
 * Runs `file` with `args` (no shell) and resolves with its output whatever the exit code.
 * Rejects only when the process could not be started (the error's `code` is `ENOENT` for a missing
 * tool, `EACCES`, ...) or its output exceeded the buffer.
 */
export type Runner = (file: string, args: readonly string[], opts: { readonly timeoutMs: number }) => Promise<RunResult>;

/** Resolves a tool name to the absolute path to run, or null when the tool is not installed. */
export type Which = (tool: GpuTool) => Promise<string | null>;

export const TOOL_TIMEOUT_MS = 5_000;
const MAX_OUTPUT_BYTES = 1 << 20;

export const defaultRunner: Runner = (file, args, { timeoutMs }) =>
  new Promise((resolve, reject) => {
    execFile(file, [...args], {
      timeout: timeoutMs, killSignal: 'SIGKILL', maxBuffer: MAX_OUTPUT_BYTES, windowsHide: true, encoding: 'utf8', shell: false,
    }, (err, stdout, stderr) => {
      if (err === null) {
        resolve({ stdout, stderr, exitCode: 0 });
        return;
      }
      // A string code means the process never ran properly (ENOENT, EACCES) or overflowed its buffer.
      if (typeof err.code === 'string') {
        reject(err instanceof Error ? err : new Error(err.message));
        return;
      }
      const timedOut = err.killed === true && err.signal === 'SIGKILL';
      resolve({ stdout, stderr, exitCode: typeof err.code === 'number' ? err.code : null, timedOut });
    });
  });

// Places the vendors install to that are commonly missing from a service's PATH.
function extraDirs(tool: GpuTool): string[] {
  if (process.platform === 'win32') {
    return tool === 'nvidia-smi' ? ['C:\\Windows\\System32', 'C:\\Program Files\\NVIDIA Corporation\\NVSMI'] : [];
  }
  if (tool === 'rocm-smi') {
    const rocm = process.env['ROCM_PATH'];
    return [...(rocm !== undefined && path.isAbsolute(rocm) ? [path.join(rocm, 'bin')] : []), '/opt/rocm/bin'];
  }
  return [];
}

/** PATH lookup (absolute entries only, so a relative PATH entry cannot plant a tool) plus vendor dirs. */
export const defaultWhich: Which = async (tool) => {
  const dirs = [...(process.env['PATH'] ?? '').split(path.delimiter), ...extraDirs(tool)].filter((d) => d !== '' && path.isAbsolute(d));
  const name = process.platform === 'win32' ? `${tool}.exe` : tool;
  for (const dir of new Set(dirs)) {
    const candidate = path.join(dir, name);
    try {
      await access(candidate, constants.X_OK);
      if ((await stat(candidate)).isFile()) return candidate;
    } catch {
      // not here
    }
  }
  return null;
};

/** Why a present tool gave no usable answer (`detail.reason` of the AgentError). */
export const DetectFailure = {
  TOOL_FAILED: 'TOOL_FAILED',
  TOOL_TIMEOUT: 'TOOL_TIMEOUT',
  OUTPUT_INVALID: 'OUTPUT_INVALID',
} as const;
export type DetectFailureReason = (typeof DetectFailure)[keyof typeof DetectFailure];

export function detectError(tool: GpuTool | 'systeminformation', reason: DetectFailureReason, message: string, detail: Record<string, unknown> = {}, cause?: unknown): AgentError {
  // The catalogue in proto/errors.ts has no detection code yet: INTERNAL (TIMEOUT for a hung tool),
  // with the reason and the tool in the detail.
  const code = reason === DetectFailure.TOOL_TIMEOUT ? ErrorCodes.TIMEOUT : ErrorCodes.INTERNAL;
  return new AgentError(code, `${tool}: ${message}`, { detail: { reason, tool, ...detail }, ...(cause === undefined ? {} : { cause }) });
}

function isNotFound(e: unknown): boolean {
  return e instanceof Error && (e as NodeJS.ErrnoException).code === 'ENOENT';
}

function firstLine(s: string): string {
  return (s.split(/\r?\n/).find((l) => l.trim() !== '') ?? '').trim().slice(0, 200);
}

export interface ToolContext {
  readonly run: Runner;
  readonly which: Which;
}

/**
 * Runs a tool if it is installed. Resolves null when it is not (no error), the result when it ran
 * (any exit code), and rejects with a coded AgentError when it hung or could not be started.
 */
export async function runTool(ctx: ToolContext, tool: GpuTool, args: readonly string[]): Promise<RunResult | null> {
  const file = await ctx.which(tool);
  if (file === null) return null;
  let res: RunResult;
  try {
    res = await ctx.run(file, args, { timeoutMs: TOOL_TIMEOUT_MS });
  } catch (e) {
    if (isNotFound(e)) return null;
    throw detectError(tool, DetectFailure.TOOL_FAILED, `could not run: ${(e as Error).message}`, { code: (e as NodeJS.ErrnoException).code }, e);
  }
  if (res.timedOut === true) throw detectError(tool, DetectFailure.TOOL_TIMEOUT, `no answer within ${TOOL_TIMEOUT_MS} ms`);
  return res;
}

export function toolFailed(tool: GpuTool, res: RunResult): AgentError {
  const said = firstLine(res.stderr) || firstLine(res.stdout);
  return detectError(tool, DetectFailure.TOOL_FAILED, `exited with ${res.exitCode ?? 'a signal'}${said === '' ? '' : `: ${said}`}`, { exitCode: res.exitCode });
}
