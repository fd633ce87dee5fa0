// Shared pieces of the vSwitch integration tests (test/integration/vswitch-*.test.ts and
// test/slow/scale-*.test.ts): choosing the vSwitch daemon's isolation for a LabAgents run,
// workload namespaces made in bulk,
// resident memory from /proc, bounded parallel pings, and iperf3 between two workloads.

import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { ISOLATION_ENV } from '../../src/cli/vswitchd.js';
import { LabAgents, type LabAgentsOptions } from '../../src/lab/agents.js';
import { mapLimit } from '../../src/lab/parallel.js';
import type { LabState } from '../../src/lab/state.js';
import { endChild, run, runOk } from '../../src/util/exec.js';
import { ping } from './ping.js';

export type Isolation = 'process' | 'shared';

/**
 * Starts the lab's agents with vSwitch daemons in the given isolation. LabAgents starts
 * `tenguard vswitchd` without --isolation, so the daemon takes it from ISOLATION_ENV, which
 * it passes on with the rest of this process's environment.
 */
export async function startAgents(
  lab: LabState,
  isolation: Isolation,
  opts: LabAgentsOptions = {},
): Promise<LabAgents> {
  const before = process.env[ISOLATION_ENV];
  process.env[ISOLATION_ENV] = isolation;
  try {
    return await LabAgents.start(lab, { echoLogs: process.env.TG_NIC_ECHO === '1', ...opts });
  } finally {
    if (before === undefined) delete process.env[ISOLATION_ENV];
    else process.env[ISOLATION_ENV] = before;
  }
}

/** Creates namespaces in one `ip -batch` call (names must be plain: letters, digits, '-'). */
export async function addNamespaces(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  await runOk('ip', ['-batch', '-'], {
    input: `${names.map((n) => `netns add ${n}`).join('\n')}\n`,
    timeoutMs: 300_000,
  });
}

/** Deletes namespaces in one `ip -force -batch` call; missing ones are skipped. */
export async function deleteNamespacesBatch(names: readonly string[]): Promise<void> {
  if (names.length === 0) return;
  await run('ip', ['-force', '-batch', '-'], {
    input: `${names.map((n) => `netns del ${n}`).join('\n')}\n`,
    timeoutMs: 300_000,
  });
}

/** VmRSS of a process in kB, from /proc/<pid>/status (0 when it is gone). */
export function rssKb(pid: number): number {
  try {
    const m = /^VmRSS:\s+(\d+)\s+kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/** The direct children of a process. */
export async function childPids(pid: number): Promise<number[]> {
  const r = await run('pgrep', ['-P', String(pid)]);
  return r.stdout.split(/\s+/).filter(Boolean).map(Number);
}

/** The process name of a pid (to check that a harness pid is the agent, not a wrapper). */
export function processName(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '';
  }
}

export interface PingJob {
  ns: string;
  target: string;
}

/**
 * Pings each job's target from its namespace, at most `limit` at once, each up to `tries`
 * single pings (the first packet of a fresh session waits for a handshake). Returns which
 * jobs got a reply.
 */
export async function pingAll(jobs: readonly PingJob[], limit: number, tries = 3): Promise<boolean[]> {
  return mapLimit(jobs, limit, async (j) => {
    for (let i = 0; i < tries; i++)
      if ((await ping(j.ns, j.target, { count: 1, waitS: 2 })).received === 1) return true;
    return false;
  });
}

export interface IperfResult {
  mbitPerSecond: number;
  /** UDP only: datagrams per second received. */
  packetsPerSecond?: number;
  lostPercent?: number;
}

/**
 * iperf3 from one namespace to a server in another (bounded: `seconds` of traffic, a hard
 * timeout). TCP by default; with udpLength, UDP datagrams of that size at `udpRate`.
 */
export async function iperf(
  serverNs: string,
  serverAddress: string,
  clientNs: string,
  opts: { seconds?: number; port?: number; udpLength?: number; udpRate?: string } = {},
): Promise<IperfResult> {
  const port = String(opts.port ?? 5211);
  const seconds = opts.seconds ?? 3;
  const server = spawn(
    'ip',
    ['netns', 'exec', serverNs, 'iperf3', '-s', '-1', '-B', serverAddress, '-p', port],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  try {
    await new Promise((r) => setTimeout(r, 500));
    const args = [
      'netns',
      'exec',
      clientNs,
      'iperf3',
      '-J',
      '-c',
      serverAddress,
      '-p',
      port,
      '-t',
      String(seconds),
    ];
    if (opts.udpLength !== undefined)
      args.push('-u', '-l', String(opts.udpLength), '-b', opts.udpRate ?? '0');
    const r = await run('ip', args, { timeoutMs: (seconds + 20) * 1000 });
    const j = JSON.parse(r.stdout) as {
      end: {
        sum_received?: { bits_per_second: number };
        sum?: {
          bits_per_second: number;
          packets: number;
          lost_packets: number;
          seconds: number;
          lost_percent: number;
        };
      };
      error?: string;
    };
    if (j.error) throw new Error(`iperf3: ${j.error}`);
    if (opts.udpLength !== undefined) {
      const s = j.end.sum!;
      const got = s.packets - s.lost_packets;
      return {
        mbitPerSecond: (s.bits_per_second * (got / Math.max(1, s.packets))) / 1e6,
        packetsPerSecond: got / s.seconds,
        lostPercent: s.lost_percent,
      };
    }
    return { mbitPerSecond: j.end.sum_received!.bits_per_second / 1e6 };
  } finally {
    await endChild(server, 'SIGTERM');
  }
}

/** Median and 95th percentile of a list of numbers. */
export function percentiles(xs: readonly number[]): { median: number; p95: number; max: number } {
  const s = [...xs].sort((a, b) => a - b);
  const at = (q: number): number => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? Number.NaN;
  return { median: at(0.5), p95: at(0.95), max: s[s.length - 1] ?? Number.NaN };
}
