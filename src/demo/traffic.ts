// Traffic probes the demo runs inside workload namespaces (by namespace name, since the
// orchestrator names them): ping with an optional payload pattern, a steady ping stream
// with per-reply timestamps (the migration gap), a TCP transfer checked end to end, and a
// bounded iperf3 run. Every process is started with `ip netns exec` (which execs, so the pid
// is the tool's own) and ended by that pid; an abort ends it at once.
import { type ChildProcess, spawn } from 'node:child_process';
import { TgError } from '../util/errors.js';
import { childJsonResult, childReady, run } from '../util/exec.js';
import { PROBE_PROGRAM } from './probe-program.js';

export interface PingCount {
  sent: number;
  received: number;
  rttAvgMs: number | null;
}

function parseSummary(out: string): PingCount {
  const m = /(\d+) packets transmitted, (\d+) (?:packets )?received/.exec(out);
  const rtt = /= [\d.]+\/([\d.]+)\/[\d.]+\/[\d.]+ ms/.exec(out);
  return {
    sent: m ? Number(m[1]) : 0,
    received: m ? Number(m[2]) : 0,
    rttAvgMs: rtt ? Number(rtt[1]) : null,
  };
}

/** `count` pings (0.2 s apart) from namespace `ns` to `target`; `pattern` fills the payload (hex, up to 16 bytes). */
export async function ping(
  ns: string,
  target: string,
  opts: { count?: number; pattern?: string; waitS?: number; signal?: AbortSignal } = {},
): Promise<PingCount> {
  const count = opts.count ?? 3;
  const waitS = opts.waitS ?? 1;
  const args = ['-n', '-q', '-c', String(count), '-i', '0.2', '-W', String(waitS)];
  if (opts.pattern !== undefined) args.push('-p', opts.pattern);
  const r = await runAbortable(ns, 'ping', [...args, target], (count * 0.2 + waitS + 10) * 1000, opts.signal);
  return parseSummary(r.stdout);
}

/** Pings once every `everyMs` until a reply comes; the ms from `since` to that reply, or null. */
export async function firstReply(
  ns: string,
  target: string,
  since: number,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<number | null> {
  const end = since + timeoutMs;
  while (performance.now() < end) {
    stopIfAborted(signal);
    const r = await runAbortable(ns, 'ping', ['-n', '-q', '-c', '1', '-W', '0.5', target], 5000, signal);
    if (parseSummary(r.stdout).received === 1) return performance.now() - since;
  }
  return null;
}

export interface StreamResult {
  intervalMs: number;
  sent: number;
  received: number;
  /** Sequence numbers missing between the first and the last reply. */
  lost: number;
  /** Longest time between two consecutive replies, minus the interval (0 when none late). */
  gapMs: number;
  /** Longest time between two consecutive replies. */
  longestSilenceMs: number;
}

/** A steady ping stream (one every `intervalMs`) running until stop() or `maxSeconds`. */
export function pingStream(ns: string, target: string, intervalMs: number, maxSeconds: number) {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'ping',
      '-n',
      '-D',
      '-i',
      String(intervalMs / 1000),
      '-W',
      '1',
      '-w',
      String(maxSeconds),
      target,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  const closed = new Promise<void>((r) => child.once('close', () => r()));
  return {
    pid: child.pid,
    /** Replies so far. */
    replies(): number {
      return (out.match(/icmp_seq=/g) ?? []).length;
    },
    async stop(): Promise<StreamResult> {
      await endChild(child, 'SIGINT', closed);
      return streamResult(out, intervalMs);
    },
  };
}

/** Parses `ping -D` output: replies by sequence number and time. */
export function streamResult(out: string, intervalMs: number): StreamResult {
  const replies = new Map<number, number>();
  for (const m of out.matchAll(/^\[(\d+\.\d+)\] .*icmp_seq=(\d+)/gm)) {
    const seq = Number(m[2]);
    if (!replies.has(seq)) replies.set(seq, Number(m[1]) * 1000);
  }
  const seqs = [...replies.keys()].sort((a, b) => a - b);
  const times = [...replies.values()].sort((a, b) => a - b);
  let longest = 0;
  for (let i = 1; i < times.length; i++) longest = Math.max(longest, times[i] - times[i - 1]);
  const lost = seqs.length === 0 ? 0 : seqs[seqs.length - 1] - seqs[0] + 1 - seqs.length;
  const summary = parseSummary(out);
  return {
    intervalMs,
    sent: summary.sent,
    received: replies.size,
    lost,
    gapMs: Math.max(0, Math.round(longest - intervalMs)),
    longestSilenceMs: Math.round(longest),
  };
}

export interface TransferResult {
  /** Bytes the client sent. */
  sent: number;
  /** Bytes that came back. */
  echoed: number;
  /** Everything came back, byte for byte. */
  intact: boolean;
  /** Bytes the server received. */
  serverReceived: number;
  ms: number;
}

/**
 * A TCP connection from `fromNs` to an echo server in `toNs` at `target`: `payload` (hex)
 * sent `repeat` times and echoed back. Nothing echoed within `timeoutMs`: echoed 0.
 */
export async function tcpTransfer(
  fromNs: string,
  toNs: string,
  target: string,
  payload: string,
  opts: { repeat?: number; port?: number; timeoutMs?: number; signal?: AbortSignal; bind?: string } = {},
): Promise<TransferResult> {
  const port = String(opts.port ?? 40200);
  const ms = opts.timeoutMs ?? 5000;
  // The server listens on `bind` (default: the target), e.g. an endpoint's own address when
  // the target is a service's name or address.
  const server = probe(toNs, ['tcp-echo', opts.bind ?? target, port, String(ms + 1500)], opts.signal);
  const serverResult = childJsonResult(server, ms + 20_000, 'TCP probe');
  await childReady(server, 'TCP echo server');
  const client = await childJsonResult(
    probe(fromNs, ['tcp-send', target, port, payload, String(opts.repeat ?? 1), String(ms)], opts.signal),
    ms + 20_000,
    'TCP probe',
  );
  const s = await serverResult;
  return {
    sent: Number(client.sent ?? 0),
    echoed: Number(client.echoed ?? 0),
    intact: client.intact === true,
    serverReceived: Number(s.received ?? 0),
    ms: Number(client.ms ?? 0),
  };
}

/** Resolves `name` inside `ns` with the system resolver: its IPv4 address, or the resolver's error code. */
export async function resolveName(
  ns: string,
  name: string,
  signal?: AbortSignal,
): Promise<{ address: string | null; error: string | null }> {
  const r = await childJsonResult(probe(ns, ['resolve', name], signal), 20_000, 'resolve probe');
  return {
    address: typeof r.address === 'string' ? r.address : null,
    error: typeof r.error === 'string' ? r.error : null,
  };
}

/** One HTTP GET from namespace `ns` (names resolved by its resolver): the status and body, or the error. */
export async function httpGet(
  ns: string,
  url: string,
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ status: number | null; body: string; error: string | null; ms: number }> {
  const r = await childJsonResult(
    probe(ns, ['http-get', url, String(timeoutMs)], signal),
    timeoutMs + 20_000,
    'http probe',
  );
  return {
    status: typeof r.status === 'number' ? r.status : null,
    body: typeof r.body === 'string' ? r.body : '',
    error: typeof r.error === 'string' ? r.error : null,
    ms: typeof r.ms === 'number' ? r.ms : 0,
  };
}

export interface IperfFigure {
  mbps: number;
  retransmits: number;
  seconds: number;
}

/** One iperf3 TCP run of `seconds` from `fromNs` to a one-off server in `toNs` bound to `target`. */
export async function iperf(
  fromNs: string,
  toNs: string,
  target: string,
  seconds: number,
  signal?: AbortSignal,
): Promise<IperfFigure> {
  const server = spawn('ip', ['netns', 'exec', toNs, 'iperf3', '-s', '-1', '-B', target, '-p', '5201'], {
    stdio: 'ignore',
  });
  const closed = new Promise<void>((r) => server.once('close', () => r()));
  try {
    for (let attempt = 0; ; attempt++) {
      stopIfAborted(signal);
      const r = await runAbortable(
        fromNs,
        'iperf3',
        ['-c', target, '-p', '5201', '-t', String(seconds), '-J', '--connect-timeout', '1000'],
        (seconds + 20) * 1000,
        signal,
      );
      stopIfAborted(signal);
      let j: {
        error?: string;
        end?: { sum_received?: { bits_per_second: number }; sum_sent?: { retransmits?: number } };
      };
      try {
        j = JSON.parse(r.stdout);
      } catch {
        j = { error: r.stderr.trim() || `exit ${r.code}` };
      }
      if (j.error === undefined && j.end?.sum_received)
        return {
          mbps: j.end.sum_received.bits_per_second / 1e6,
          retransmits: j.end.sum_sent?.retransmits ?? 0,
          seconds,
        };
      if (!/refused/i.test(j.error ?? '') || attempt >= 20)
        throw new TgError('TG_ERR_COMMAND_FAILED', `iperf3 ${fromNs} -> ${target}: ${j.error}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    await endChild(server, 'SIGKILL', closed);
  }
}

// ---------------------------------------------------------------------------------------

export function stopIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new TgError('TG_ERR_INTERRUPTED', 'interrupted');
}

/** Runs a command in a namespace to completion; an abort ends it. Never throws for a non-zero exit. */
async function runAbortable(
  ns: string,
  cmd: string,
  args: string[],
  timeoutMs: number,
  signal?: AbortSignal,
): Promise<{ stdout: string; stderr: string; code: number }> {
  if (signal === undefined) return run('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs });
  stopIfAborted(signal);
  const child = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.on('data', (d: Buffer) => {
    stdout += d.toString();
  });
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const closed = new Promise<number>((r) => child.once('close', (c) => r(c ?? -1)));
  const onAbort = (): void => {
    child.kill('SIGTERM');
  };
  signal.addEventListener('abort', onAbort, { once: true });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const code = await closed;
  clearTimeout(timer);
  signal.removeEventListener('abort', onAbort);
  return { stdout, stderr, code };
}

async function endChild(child: ChildProcess, sig: NodeJS.Signals, closed: Promise<void>): Promise<void> {
  if (child.exitCode === null && child.signalCode === null) child.kill(sig);
  const t = setTimeout(() => child.kill('SIGKILL'), 3000);
  await closed;
  clearTimeout(t);
}

function probe(ns: string, args: string[], signal?: AbortSignal): ChildProcess {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, PROBE_PROGRAM, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (signal !== undefined) {
    const onAbort = (): void => {
      child.kill('SIGTERM');
    };
    signal.addEventListener('abort', onAbort, { once: true });
    child.once('close', () => signal.removeEventListener('abort', onAbort));
  }
  return child;
}
