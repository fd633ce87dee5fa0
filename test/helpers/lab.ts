// Shared pieces of the lab integration tests: running the real CLI, fresh prefixes, and
// checks that a prefix has left nothing behind.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { belongsToLab, listNamespaces, stateFilePath } from '../../src/lab/index.js';
import { runOk } from '../../src/util/exec.js';

export const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/tenguard.js ...args` to completion (bounded by timeoutMs). */
export function cli(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, ...opts.env },
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 60_000);
    child.once('error', reject);
    child.once('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** A fresh test prefix: `tgt` and three random lowercase letters. */
export function testPrefix(): string {
  const letters = [...randomBytes(3)].map((b) => String.fromCharCode(97 + (b % 26))).join('');
  return `tgt${letters}`;
}

export function prefixNamespaces(prefix: string): string[] {
  return listNamespaces().filter((n) => belongsToLab(prefix, n));
}

/** Root-namespace links whose names start with `start` (a prefix or any other text). */
export async function rootLinksStartingWith(start: string): Promise<string[]> {
  const links = JSON.parse(await runOk('ip', ['-j', 'link', 'show'])) as { ifname: string }[];
  return links.map((l) => l.ifname).filter((n) => n.startsWith(start));
}

/** Pids of processes whose command line contains `marker` (an argument only our tests use). */
/**
 * Processes running `sleep <marker>`. Launchers whose arguments also carry the marker
 * (`ip netns exec … sleep <marker>`, `tenguard lab exec … -- sleep <marker>`) are not counted,
 * so the count is stable once the sleeps themselves run.
 */
export function pidsWithMarker(marker: string): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmdline = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (cmdline[0]?.split('/').pop() === 'sleep' && cmdline[1] === marker) out.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return out;
}

/** Nothing of the prefix is left: no namespace, no root link, no state file. */
export async function leftovers(prefix: string): Promise<string[]> {
  return [
    ...prefixNamespaces(prefix).map((n) => `namespace ${n}`),
    ...(await rootLinksStartingWith(prefix)).map((l) => `link ${l}`),
    ...(existsSync(stateFilePath(prefix)) ? [`state file ${stateFilePath(prefix)}`] : []),
  ];
}

/** Removes a test lab through the API-independent CLI; used in `after` hooks. */
export async function cleanup(prefixes: Iterable<string>): Promise<void> {
  for (const p of prefixes) await cli(['lab', 'down', '--prefix', p]);
}
