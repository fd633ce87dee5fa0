// Probes that show a lab's links carry traffic (ping between nodes, a bounded iperf3 TCP
// run; targets are lab addresses inside lab namespaces only), and a check that the root
// namespace holds nothing in the lab's address ranges.
import type { ChildProcess } from 'node:child_process';
import { parseCidr, parseIp } from '../net/ip.js';
import { TgError } from '../util/errors.js';
import { runOk, spawnIn } from '../util/exec.js';
import { LAB_RANGES } from './plan.js';
import { nodeNs, runInNode, runInNs } from './run.js';
import type { LabState } from './state.js';

export interface PingResult {
  from: string;
  target: string;
  family: 4 | 6;
  sent: number;
  received: number;
  /** Average round-trip time in milliseconds, null when nothing came back. */
  rttAvgMs: number | null;
  ok: boolean;
  /** Ping's own summary or error when it did not succeed. */
  detail: string;
}

/** Pings `target` from `node`: `count` echoes 0.2 s apart; ok when all came back. */
export async function ping(
  lab: LabState,
  node: string,
  target: string,
  opts: { count?: number; signal?: AbortSignal } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  if (!Number.isInteger(count) || count < 1 || count > 100) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `ping count ${count} must be an integer from 1 to 100`);
  }
  const family: 4 | 6 = target.includes(':') ? 6 : 4;
  const deadline = Math.ceil(count * 0.2) + 2;
  const r = await runInNode(
    lab,
    node,
    'ping',
    [`-${family}`, '-n', '-q', '-c', String(count), '-i', '0.2', '-W', '1', '-w', String(deadline), target],
    { timeoutMs: (deadline + 5) * 1000, signal: opts.signal },
  );
  const counts = /(\d+) packets transmitted, (\d+) received/.exec(r.stdout);
  const rtt = /= [\d.]+\/([\d.]+)\/[\d.]+\/[\d.]+ ms/.exec(r.stdout);
  const sent = counts ? Number(counts[1]) : 0;
  const received = counts ? Number(counts[2]) : 0;
  const ok = r.code === 0 && sent === count && received === count;
  return {
    from: node,
    target,
    family,
    sent,
    received,
    rttAvgMs: rtt ? Number(rtt[1]) : null,
    ok,
    detail: ok ? '' : (r.stderr.trim() || r.stdout.trim().split('\n').slice(-2).join('; ')).slice(0, 300),
  };
}

export interface IperfResult {
  client: string;
  server: string;
  target: string;
  seconds: number;
  /** Receiver-side throughput in Mbit/s. */
  mbps: number;
  retransmits: number;
  /** Bytes the receiver got. */
  bytes: number;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function stop(proc: ChildProcess): Promise<void> {
  if (proc.exitCode !== null || proc.signalCode !== null) return;
  const exited = new Promise<void>((r) => proc.once('exit', () => r()));
  proc.kill('SIGKILL');
  await exited;
}

/**
 * One iperf3 TCP run of `seconds` (1..30) from `client` to an iperf3 server started on
 * `server`, bound to `target` (an address of `server`). The server is ended afterwards.
 */
export async function iperfTcp(
  lab: LabState,
  client: string,
  server: string,
  target: string,
  seconds: number,
  opts: { port?: number; signal?: AbortSignal } = {},
): Promise<IperfResult> {
  const r = await iperfTcpNs(nodeNs(lab, client), nodeNs(lab, server), target, seconds, opts);
  return { ...r, client, server };
}

/** iperfTcp between two namespaces named directly (workload namespaces the orchestrator made). */
export async function iperfTcpNs(
  client: string,
  server: string,
  target: string,
  seconds: number,
  opts: { port?: number; signal?: AbortSignal } = {},
): Promise<IperfResult> {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 30) {
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `iperf3 seconds ${seconds} must be an integer from 1 to 30`);
  }
  const port = String(opts.port ?? 5201);
  const srv = spawnIn(server, 'iperf3', ['-s', '-1', '-B', target, '-p', port], { stdio: 'ignore' });
  try {
    for (let attempt = 0; ; attempt++) {
      if (srv.exitCode !== null) {
        throw new TgError('TG_ERR_COMMAND_FAILED', `iperf3 server on ${server} exited ${srv.exitCode}`);
      }
      const r = await runInNs(
        client,
        'iperf3',
        ['-c', target, '-p', port, '-t', String(seconds), '-J', '--connect-timeout', '1000'],
        { timeoutMs: (seconds + 15) * 1000, signal: opts.signal },
      );
      let j: {
        error?: string;
        end?: {
          sum_received?: { bits_per_second: number; bytes: number };
          sum_sent?: { retransmits?: number };
        };
      };
      try {
        j = JSON.parse(r.stdout);
      } catch {
        j = { error: r.stderr.trim() || `exit ${r.code}` };
      }
      if (j.error === undefined && j.end?.sum_received) {
        return {
          client,
          server,
          target,
          seconds,
          mbps: j.end.sum_received.bits_per_second / 1e6,
          retransmits: j.end.sum_sent?.retransmits ?? 0,
          bytes: j.end.sum_received.bytes,
        };
      }
      if (opts.signal?.aborted) throw new TgError('TG_ERR_INTERRUPTED', 'iperf3 run interrupted');
      // The server may not be listening yet: retry a refused connection for up to 2 s; a connect
      // that timed out (1 s, on a loaded machine) is tried again twice.
      const refused = /refused/i.test(j.error ?? '') && attempt < 20;
      const timedOut = /timed out/i.test(j.error ?? '') && attempt < 2;
      if (!refused && !timedOut) {
        throw new TgError('TG_ERR_COMMAND_FAILED', `iperf3 ${client} -> ${target}: ${j.error}`);
      }
      await sleep(100);
    }
  } finally {
    await stop(srv);
  }
}

/** True when address `addr` lies in `cidr` (IPv4 or IPv6; a family mismatch is false). */
export function inRange(addr: string, cidr: string): boolean {
  const a = parseIp(addr);
  const c = parseCidr(cidr);
  if (a === null || c === null || a.length !== c.address.length) return false;
  for (let bit = 0; bit < c.bits; bit++) {
    const mask = 0x80 >> (bit & 7);
    if ((a[bit >> 3] & mask) !== (c.address[bit >> 3] & mask)) return false;
  }
  return true;
}

/**
 * Addresses and routes of the root namespace that fall in the lab's ranges; the lab
 * guarantees there are none ([]).
 */
export async function rootFootprint(): Promise<string[]> {
  const addrs = JSON.parse(await runOk('ip', ['-j', 'addr', 'show'])) as {
    ifname: string;
    addr_info?: { local: string; prefixlen: number }[];
  }[];
  const out: string[] = [];
  for (const l of addrs) {
    for (const a of l.addr_info ?? []) {
      if (LAB_RANGES.some((r) => inRange(a.local, r)))
        out.push(`address ${a.local}/${a.prefixlen} on ${l.ifname}`);
    }
  }
  for (const family of ['-4', '-6']) {
    const routes = JSON.parse(await runOk('ip', ['-j', family, 'route', 'show', 'table', 'all'])) as {
      dst: string;
      dev?: string;
    }[];
    for (const r of routes) {
      const dst = r.dst.split('/')[0];
      if (LAB_RANGES.some((range) => inRange(dst, range))) out.push(`route ${r.dst} dev ${r.dev ?? '?'}`);
    }
  }
  return out;
}
