// `ping` from inside a network namespace, as the integration tests use it: a bounded run that
// never throws on loss, a wait for the first reply, and a stream in the background until
// stop(). Replies are timestamped (-D) so that a test can measure gaps.
import { spawn } from 'node:child_process';
import { endChild, run } from '../../src/util/exec.js';

export interface PingResult {
  transmitted: number;
  received: number;
  /** Reply times in seconds since the epoch (ping -D), in arrival order. */
  replyTimes: number[];
}

const SUMMARY_RE = /(\d+) packets transmitted, (\d+) (?:packets )?received/;
const REPLY_RE = /^\[(\d+\.\d+)\] \d+ bytes from .*icmp_seq=(\d+)/gm;

/** Parses `ping -D` output: the summary counts and the time of every reply. */
export function parsePing(out: string): PingResult {
  const m = SUMMARY_RE.exec(out);
  const replyTimes = [...out.matchAll(REPLY_RE)].map((r) => Number(r[1]));
  return m
    ? { transmitted: Number(m[1]), received: Number(m[2]), replyTimes }
    : { transmitted: 0, received: 0, replyTimes };
}

/**
 * `count` echoes from namespace `ns` to `target`, `intervalS` apart, the last one waited for
 * `waitS` seconds; `size` sets the payload size and `pattern` (hex, up to 16 bytes) fills it.
 * Bounded in time; never throws on loss.
 */
export async function ping(
  ns: string,
  target: string,
  opts: { count?: number; intervalS?: number; waitS?: number; size?: number; pattern?: string } = {},
): Promise<PingResult> {
  const count = opts.count ?? 3;
  const interval = opts.intervalS ?? 0.2;
  const wait = opts.waitS ?? 2;
  // -c without -w: exactly `count` echoes are sent, the last one waited for `wait` seconds.
  const args = ['-D', '-n', '-c', String(count), '-i', String(interval), '-W', String(wait)];
  if (opts.size !== undefined) args.push('-s', String(opts.size));
  if (opts.pattern !== undefined) args.push('-p', opts.pattern);
  const r = await run('ip', ['netns', 'exec', ns, 'ping', ...args, target], {
    timeoutMs: (count * interval + wait + 10) * 1000,
  });
  return parsePing(r.stdout);
}

/** Pings once a second until a reply comes or `timeoutMs` passes; whether one came. */
export async function pingUntilReply(ns: string, target: string, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if ((await ping(ns, target, { count: 1, waitS: 1 })).received === 1) return true;
  }
  return false;
}

export interface PingStreamResult extends PingResult {
  /** Requests up to the last one answered that got no reply (one still in flight at stop() is not lost). */
  lost: number;
  /** The longest time between two consecutive replies, in milliseconds. */
  maxGapMs: number;
  /** The longest round trip of a reply (a reply held somewhere and delivered late shows here). */
  maxRttMs: number;
}

export interface PingStream {
  /** Reply times so far, in milliseconds since the epoch. */
  replies(): number[];
  /** Ends the stream (SIGINT, so ping prints its summary) and gives its result. */
  stop(): Promise<PingStreamResult>;
}

/**
 * A ping every `intervalS` from `ns` to `target`, running until stop() or `maxSeconds`;
 * `pattern` (hex, up to 16 bytes) fills the payload (a marker to search captures for).
 */
export function pingStream(
  ns: string,
  target: string,
  intervalS: number,
  maxSeconds: number,
  pattern?: string,
): PingStream {
  const child = spawn(
    'ip',
    [
      'netns',
      'exec',
      ns,
      'ping',
      '-D',
      '-n',
      '-i',
      String(intervalS),
      '-W',
      '1',
      '-w',
      String(maxSeconds),
      ...(pattern !== undefined ? ['-p', pattern] : []),
      target,
    ],
    { stdio: ['ignore', 'pipe', 'ignore'] },
  );
  let out = '';
  child.stdout.on('data', (d: Buffer) => {
    out += d.toString();
  });
  return {
    replies(): number[] {
      return parsePing(out).replyTimes.map((t) => t * 1000);
    },
    async stop(): Promise<PingStreamResult> {
      await endChild(child, 'SIGINT');
      const r = parsePing(out);
      let maxGapMs = 0;
      for (let i = 1; i < r.replyTimes.length; i++)
        maxGapMs = Math.max(maxGapMs, (r.replyTimes[i] - r.replyTimes[i - 1]) * 1000);
      const seqs = new Set([...out.matchAll(REPLY_RE)].map((x) => Number(x[2])));
      const last = Math.max(0, ...seqs);
      const rtts = [...out.matchAll(/icmp_seq=\d+ ttl=\d+ time=([0-9.]+) ms/g)].map((x) => Number(x[1]));
      return {
        ...r,
        lost: last - seqs.size,
        maxGapMs: Math.round(maxGapMs),
        maxRttMs: Math.round(Math.max(0, ...rtts)),
      };
    },
  };
}
