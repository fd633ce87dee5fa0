// Namespace plumbing for the native I/O integration tests: a uniquely named namespace, a
// TUN moved into it with an overlay address, and a child `node` running inside it.
import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import { run, runInOk, runOk, spawnIn } from '../../src/util/exec.js';

/** The compiled native module's URL, for child processes that run inside a namespace. */
export const NATIVE_MODULE_URL = new URL('../../src/native/index.js', import.meta.url).href;
/** The compiled endpoint codec's URL (src/net/endpoint.ts), for the same children. */
export const ENDPOINT_MODULE_URL = new URL('../../src/net/endpoint.js', import.meta.url).href;

/** 'tgnat' + 6 hex digits: 11 characters, so '<ns>t' still fits an interface name. */
export function uniqueName(prefix: string): string {
  return `${prefix}${randomBytes(3).toString('hex')}`;
}

export async function createNamespace(ns: string): Promise<void> {
  await runOk('ip', ['netns', 'add', ns]);
  await runInOk(ns, 'ip', ['link', 'set', 'lo', 'up']);
}

/** Removes the namespace (and every interface still in it); ignores one already gone. */
export async function deleteNamespace(ns: string): Promise<void> {
  await run('ip', ['netns', 'del', ns]);
}

/**
 * Moves the TUN interface `dev` (opened in this namespace) into `ns`, gives it `cidr`, a
 * long transmit queue (so bursts are queued rather than dropped) and brings it up. IPv6
 * is disabled on it so that no router solicitations or MLD reports show up in reads.
 */
export async function moveTunInto(dev: string, ns: string, cidr: string, txqueuelen = 4096): Promise<void> {
  await runOk('ip', ['link', 'set', 'dev', dev, 'netns', ns]);
  await runInOk(ns, 'sysctl', ['-qw', `net.ipv6.conf.${dev}.disable_ipv6=1`]);
  await runInOk(ns, 'ip', ['addr', 'add', cidr, 'dev', dev]);
  await runInOk(ns, 'ip', ['link', 'set', 'dev', dev, 'txqueuelen', String(txqueuelen), 'up']);
}

export async function linkExists(dev: string, ns?: string): Promise<boolean> {
  const args = ns === undefined ? ['link', 'show', 'dev', dev] : ['-n', ns, 'link', 'show', 'dev', dev];
  return (await run('ip', args)).code === 0;
}

export async function countOpenFds(): Promise<number> {
  return (await readdir('/proc/self/fd')).length;
}

export interface NodeChild {
  /** Resolves when the child prints a line 'ready'. */
  ready: Promise<void>;
  /** The JSON object on the child's last stdout line, once it exits with status 0. */
  result: Promise<unknown>;
  /** Ends the child (by its pid) if it is still running. */
  stop(): void;
}

/** Runs an ES-module script with `node` inside `ns`; the script's argv starts at process.argv[1]. */
export function nodeIn(ns: string, script: string, args: string[]): NodeChild {
  const child = spawnIn(ns, process.execPath, ['--input-type=module', '-e', script, ...args]);
  let out = '';
  let err = '';
  let onReady: () => void = () => {};
  const ready = new Promise<void>((resolve) => {
    onReady = resolve;
  });
  child.stdout?.on('data', (d: Buffer) => {
    out += d.toString();
    if (/^ready$/m.test(out)) onReady();
  });
  child.stderr?.on('data', (d: Buffer) => {
    err += d.toString();
  });
  const result = new Promise<unknown>((resolve, reject) => {
    child.on('exit', (code, signal) => {
      const last = out.trim().split('\n').pop() ?? '';
      if (code === 0) resolve(JSON.parse(last));
      else reject(new Error(`child in ${ns} exited ${code ?? signal}: ${err.trim()}`));
    });
  });
  return {
    ready,
    result,
    stop: () => {
      if (child.exitCode === null && child.signalCode === null) child.kill();
    },
  };
}
