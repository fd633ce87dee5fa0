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

/**
 * Waits for a started child (a probe) to end, SIGKILL after `timeoutMs`, and returns the last
 * line of its stdout that is a JSON object; TG_ERR_COMMAND_FAILED naming `what`, with its
 * stderr, when there is none.
 */
export function childJsonResult(
  child: ChildProcess,
  timeoutMs: number,
  what: string,
): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    let out = '';
    let err = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    const t = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.once('close', () => {
      clearTimeout(t);
      const line = out
        .trim()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .pop();
      if (line === undefined)
        reject(new TgError('TG_ERR_COMMAND_FAILED', `${what} gave no result: ${err.trim().slice(0, 300)}`));
      else resolve(JSON.parse(line) as Record<string, unknown>);
    });
  });
}

/** Resolves once a started child (a probe server) prints 'ready' on stdout; rejects if it ends first. */
export function childReady(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    const onData = (d: Buffer): void => {
      out += d.toString();
      if (out.includes('ready')) {
        child.stdout?.off('data', onData);
        resolve();
      }
    };
    child.stdout?.on('data', onData);
    child.once('close', () =>
      reject(new TgError('TG_ERR_COMMAND_FAILED', `${what} ended before it was ready`)),
    );
  });
}

/**
 * Starts tcpdump with `args` inside namespace `ns` and resolves once it listens (its
 * "listening on" line); TG_ERR_COMMAND_FAILED naming `what` when it ends first, cannot be
 * started, or does not listen within 10 s (then it is killed). The caller ends the child
 * (endChild with SIGINT lets tcpdump write out what it holds).
 */
export async function startTcpdumpIn(
  ns: string,
  args: readonly string[],
  what: string,
): Promise<ChildProcess> {
  const child = spawnIn(ns, 'tcpdump', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  await new Promise<void>((resolve, reject) => {
    const fail = (why: string): void => {
      clearTimeout(t);
      reject(new TgError('TG_ERR_COMMAND_FAILED', `tcpdump on ${what}${why}`));
    };
    const t = setTimeout(() => {
      child.kill('SIGKILL');
      fail(' did not start');
    }, 10_000);
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
      if (err.includes('listening on')) {
        clearTimeout(t);
        resolve();
      }
    });
    child.once('close', () => fail(`: ${err.trim() || 'exited'}`));
    child.once('error', (e) => fail(`: ${e.message}`));
  });
  return child;
}

function ended(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/**
 * Ends a child this process started: `signal`, then SIGKILL if it is still running after
 * `graceMs`. Resolves once it has exited and its output streams are closed (all it wrote has
 * been read). Safe on a child that has already ended.
 */
export async function endChild(
  child: ChildProcess,
  signal: NodeJS.Signals = 'SIGTERM',
  graceMs = 3000,
): Promise<void> {
  const streams = [child.stdin, child.stdout, child.stderr].filter((s) => s !== null);
  if (ended(child) && streams.every((s) => s.closed)) return;
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  if (!ended(child)) child.kill(signal);
  const t = setTimeout(() => {
    if (!ended(child)) child.kill('SIGKILL');
  }, graceMs);
  await closed;
  clearTimeout(t);
}

export function isRoot(): boolean {
  return typeof process.getuid === 'function' && process.getuid() === 0;
}

export function requireRoot(what: string): void {
  if (!isRoot()) throw new TgError('TG_ERR_NOT_ROOT', `${what} needs root (network namespaces, TUN devices)`);
}
