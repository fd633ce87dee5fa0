// `tenguard bench latency`: round trips (ping, after a warm-up) at two intervals, 5 ms (a busy
// device) and 200 ms (a quiet one), over
//   one leg:      two namespaces, one tunnel between two `tenguard device`s;
//   wireguard-go: the same testbed with wireguard-go at both ends (--wireguard-go BIN);
//   full path:    workload -> vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload (the lab
//                 of `bench path`);
// in one run, so that only the ratios mean anything on a shared machine: one leg against
// wireguard-go (median and 99th percentile) and the full path against the one leg (median).
import { mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { TgError } from '../util/errors.js';
import { requireRoot, run as runCommand, runIn } from '../util/exec.js';
import { openLabPath, waitForPath } from './path.js';
import {
  configureDevice,
  createTestbed,
  destroyTestbed,
  type Implementation,
  startDevice,
  stopDevice,
} from './testbed.js';

const TESTBED_PREFIX = 'tgblat';
const TUNNEL_MTU = 1420;
const WARMUP_PINGS = 50;

export interface RttStats {
  count: number;
  lost: number;
  median: number;
  p99: number;
  max: number;
}

export interface LatencyCase {
  'wireguard-go': RttStats;
  'one-leg': RttStats;
  'full-path': RttStats;
  ratios: {
    /** tenguard one leg / wireguard-go, medians (target <= 1.0). */
    oneLegMedian: number;
    /** tenguard one leg / wireguard-go, 99th percentiles (target <= 1.5). */
    oneLegP99: number;
    /** full path / tenguard one leg, medians (target <= 3). */
    fullPathMedian: number;
  };
}

export interface LatencyBenchResult {
  /** Round-trip times in ms, by ping interval in ms. */
  intervals: Record<string, LatencyCase>;
  wireguard_go: string;
}

export interface LatencyOptions {
  /** Pings per interval and case. */
  counts: { fast: number; slow: number };
  /** The wireguard-go binary; default the one on PATH. */
  wireguardGo?: string;
  log?: (s: string) => void;
}

const INTERVALS_MS = [5, 200] as const;

/** Median, 99th percentile and maximum of round trips (ms) from `ping` output. */
export function rttStats(out: string, sent: number): RttStats {
  const rtts: number[] = [];
  for (const m of out.matchAll(/time=([\d.]+) ms/g)) rtts.push(Number(m[1]));
  rtts.sort((x, y) => x - y);
  const at = (q: number): number =>
    rtts.length === 0 ? Number.NaN : rtts[Math.min(rtts.length - 1, Math.floor(q * rtts.length))];
  const r3 = (x: number): number => Math.round(x * 1000) / 1000;
  return {
    count: rtts.length,
    lost: sent - rtts.length,
    median: r3(at(0.5)),
    p99: r3(at(0.99)),
    max: r3(rtts.length === 0 ? Number.NaN : rtts[rtts.length - 1]),
  };
}

async function pingStats(ns: string, target: string, intervalMs: number, count: number): Promise<RttStats> {
  // Warm-up: handshakes done, caches, JIT and the kernel's neighbour entries settled.
  await runIn(ns, 'ping', ['-n', '-q', '-c', String(WARMUP_PINGS), '-i', '0.01', '-W', '1', target], {
    timeoutMs: 30_000,
  });
  const r = await runIn(
    ns,
    'ping',
    ['-n', '-c', String(count), '-i', String(intervalMs / 1000), '-W', '1', target],
    { timeoutMs: ((count * intervalMs) / 1000) * 1000 + 30_000 },
  );
  return rttStats(r.stdout, count);
}

async function wireguardGoVersion(bin: string): Promise<string> {
  const r = await runCommand(bin, ['--version'], { timeoutMs: 5000 });
  const m = /wireguard-go v?([\w.-]+)/.exec(r.stdout);
  return m ? m[1] : 'unknown';
}

export async function benchLatency(opts: LatencyOptions): Promise<LatencyBenchResult> {
  requireRoot('bench latency');
  const log = opts.log ?? (() => undefined);
  // The testbed starts `wireguard-go` by name: put the chosen binary first on PATH.
  let binDir: string | null = null;
  const env: NodeJS.ProcessEnv = {};
  if (opts.wireguardGo !== undefined) {
    binDir = mkdtempSync(join(tmpdir(), 'tgblat-'));
    symlinkSync(resolve(opts.wireguardGo), join(binDir, 'wireguard-go'));
    env.PATH = `${binDir}:${process.env.PATH ?? ''}`;
  }
  const count = (ms: number): number => (ms < 50 ? opts.counts.fast : opts.counts.slow);
  const results: Record<string, Partial<Record<'wireguard-go' | 'one-leg' | 'full-path', RttStats>>> = {};
  for (const ms of INTERVALS_MS) results[ms] = {};
  try {
    const version = await wireguardGoVersion(opts.wireguardGo ?? 'wireguard-go');
    const tb = await createTestbed(TESTBED_PREFIX, { mtu: 1500 });
    try {
      for (const [impl, key] of [
        ['wireguard-go', 'wireguard-go'],
        ['tenguard', 'one-leg'],
      ] as [Implementation, 'wireguard-go' | 'one-leg'][]) {
        await startDevice(tb.a, impl, env);
        await startDevice(tb.b, impl, env);
        try {
          await configureDevice(tb.a, tb.b, { mtu: TUNNEL_MTU });
          await configureDevice(tb.b, tb.a, { mtu: TUNNEL_MTU });
          await waitForPath(tb.a.ns, tb.b.tunV4);
          for (const ms of INTERVALS_MS) {
            log(`${impl} one hop, every ${ms} ms, ${count(ms)} pings ...`);
            results[ms][key] = await pingStats(tb.a.ns, tb.b.tunV4, ms, count(ms));
          }
        } finally {
          await stopDevice(tb.a);
          await stopDevice(tb.b);
        }
      }
    } finally {
      await destroyTestbed(tb);
    }
    const path = await openLabPath(log);
    try {
      for (const ms of INTERVALS_MS) {
        log(`full path ${path.a.name} -> ${path.cross.name}, every ${ms} ms, ${count(ms)} pings ...`);
        results[ms]['full-path'] = await pingStats(path.a.ns, path.cross.address, ms, count(ms));
      }
    } finally {
      await path.stop();
    }
    const ratio = (x: number, y: number): number => Math.round((x / y) * 100) / 100;
    const intervals: Record<string, LatencyCase> = {};
    for (const ms of INTERVALS_MS) {
      const r = results[ms] as Record<'wireguard-go' | 'one-leg' | 'full-path', RttStats>;
      intervals[`${ms}ms`] = {
        'wireguard-go': r['wireguard-go'],
        'one-leg': r['one-leg'],
        'full-path': r['full-path'],
        ratios: {
          oneLegMedian: ratio(r['one-leg'].median, r['wireguard-go'].median),
          oneLegP99: ratio(r['one-leg'].p99, r['wireguard-go'].p99),
          fullPathMedian: ratio(r['full-path'].median, r['one-leg'].median),
        },
      };
    }
    return { intervals, wireguard_go: version };
  } finally {
    if (binDir !== null) rmSync(binDir, { recursive: true, force: true });
  }
}

const USAGE = `usage: tenguard bench latency [--json] [--wireguard-go BIN] [--count N] [--slow-count N]

Round trips (ping after a warm-up) every 5 ms and every 200 ms over one tenguard leg, over one
wireguard-go hop (BIN, default the wireguard-go on PATH) and over the full path (workload ->
vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload), in one run: median, 99th percentile
and maximum in ms, and the ratios. --count: pings every 5 ms (default 1000); --slow-count:
pings every 200 ms (default 150).
`;

export async function run(args: string[]): Promise<number> {
  let values: {
    json?: boolean;
    'wireguard-go'?: string;
    count?: string;
    'slow-count'?: string;
    help?: boolean;
  };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        'wireguard-go': { type: 'string' },
        count: { type: 'string' },
        'slow-count': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', `${(err as Error).message}\n${USAGE}`);
  }
  if (values.help) {
    process.stdout.write(USAGE);
    return 0;
  }
  const fast = Number(values.count ?? 1000);
  const slow = Number(values['slow-count'] ?? 150);
  if (!Number.isInteger(fast) || fast < 10 || fast > 20_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--count must be an integer from 10 to 20000');
  if (!Number.isInteger(slow) || slow < 10 || slow > 1000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--slow-count must be an integer from 10 to 1000');
  const result = await benchLatency({
    counts: { fast, slow },
    wireguardGo: values['wireguard-go'],
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  const row = (name: string, r: RttStats): string =>
    `  ${name.padEnd(14)} median ${r.median.toFixed(3)}  p99 ${r.p99.toFixed(3)}  max ${r.max.toFixed(3)} ms` +
    `  (${r.count} replies, ${r.lost} lost)\n`;
  let text = `round trips, ping after warm-up, tunnel MTU ${TUNNEL_MTU}, wireguard-go ${result.wireguard_go}, one run:\n`;
  for (const [interval, c] of Object.entries(result.intervals)) {
    text +=
      `every ${interval}:\n` +
      row('wireguard-go', c['wireguard-go']) +
      row('tenguard leg', c['one-leg']) +
      row('full path', c['full-path']) +
      `  ratios: leg/wireguard-go median ${c.ratios.oneLegMedian}, p99 ${c.ratios.oneLegP99};` +
      ` full path/leg median ${c.ratios.fullPathMedian}\n`;
  }
  process.stdout.write(text);
  return 0;
}
