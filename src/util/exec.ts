// Running external tools (ip, iperf3, wg, ...) without a shell: arguments are passed as an
// array, so nothing a user types is ever interpreted by a shell.
import { type ChildProcess, execFile, type SpawnOptions, spawn } from 'node:child_process';
import { TgError } from './errors.js';

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs a command to completion. Never throws for a non-zero exit: the caller decides. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cmd,
      args as string[],
      { timeout: opts.timeoutMs ?? 60_000, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8' },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : 1) : 0;
        resolve({
          stdout,
          stderr: stderr || (err && typeof err.code !== 'number' ? String(err.message) : ''),
          code,
        });
      },
    );
    if (opts.input !== undefined) child.stdin?.end(opts.input);
  });
}

/** Runs a command and throws TG_ERR_COMMAND_FAILED (with its stderr) when it fails. */
export async function runOk(
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<string> {
  const r = await run(cmd, args, opts);
  if (r.code !== 0) {
    throw new TgError(
      'TG_ERR_COMMAND_FAILED',
      `${cmd} ${args.join(' ')} exited ${r.code}: ${r.stderr.trim()}`,
    );
  }
  return r.stdout;
}

/** Runs a command inside a network namespace (ip netns exec). */
export function runIn(
  netns: string,
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<RunResult> {
  return run('ip', ['netns', 'exec', netns, cmd, ...args], opts);
}

export async function runInOk(
  netns: string,
  cmd: string,
  args: readonly string[],
  opts: { timeoutMs?: number; input?: string } = {},
): Promise<string> {
  return runOk('ip', ['netns', 'exec', netns, cmd, ...args], opts);
}

/** Starts a long-running command inside a namespace; the caller owns the child and must end it. */
export function spawnIn(
  netns: string,
  cmd: string,
  args: readonly string[],
  opts: SpawnOptions = {},
): ChildProcess {
  return spawn('ip', ['netns', 'exec', netns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function requireRoot(what: string): void {
  if (!isRoot()) throw new TgError('TG_ERR_NOT_ROOT', `${what} needs root (network namespaces, TUN devices)`);
}
