// `tenguard bench latency`: round trips (ping, after a warm-up) at two intervals, 5 ms (a busy
// device) and 200 ms (a quiet one), over
//   one leg:      two namespaces, one tunnel between two `tenguard device`s;
//   wireguard-go: the same testbed with wireguard-go at both ends (--wireguard-go BIN);
//   reference:    optionally, the same with another tenguard build (--reference BIN), for A/B
//                 comparisons of a change within one run;
//   full path:    workload -> vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload (the lab
//                 of `bench path`);
// in one run, so that only the ratios mean anything on a shared machine: one leg against
// wireguard-go (median and 99th percentile) and the full path against the one leg (median).
//
// Fairness on a shared, noisy host: the one-hop testbeds (one per implementation, each its
// own pair of namespaces) run side by side, and each interval's pings are taken in ROUNDS
// blocks that alternate between them (the order rotates every round), so that load from
// outside the bench falls on all of them alike instead of on whichever ran during it. Each
// block starts with LEAD_PINGS pings at its interval that are not counted: the devices of
// the other blocks were idle meanwhile, and the first ping after seconds of idleness is not
// what a device pinged at that interval sees. A tenguard device's pings start once its own
// warm-up (device/runtime.ts, a second or two after start) is done, as a live tunnel's packets
// come after it; the JSON says how long it took (method.deviceWarmupMs). Nothing is pinned to
// a CPU: every implementation runs where the scheduler puts it, as it would in production.
//
// With --phases, a capture in each one-hop testbed's pinging namespace splits every counted
// round trip into the local device's outbound half, the remote side (link and peer device)
// and the local device's inbound half (rtt-phases.ts), medians per implementation in µs.
import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { TgError } from '../util/errors.js';
import { requireRoot, run as runCommand, runIn } from '../util/exec.js';
import { openLabPath, waitForPath } from './path.js';
import { PhaseCapture, type PhaseMedians, phaseMedians, roundTripPhases } from './rtt-phases.js';
import {
  configureDevice,
  createTestbed,
  destroyTestbed,
  type Implementation,
  startDevice,
  type Testbed,
  waitForWarmup,
} from './testbed.js';

const TESTBED_PREFIX = 'tgblat';
const TUNNEL_MTU = 1420;
const WARMUP_PINGS = 50;
/** Blocks per interval and implementation (alternating); see the top of the file. */
export const ROUNDS = 5;
/** Pings at the block's interval before each block, not counted. */
export const LEAD_PINGS = 2;

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
  /** Absent when the run skipped the full path. */
  'full-path'?: RttStats;
  /** With --reference: the other tenguard build's one leg. */
  reference?: RttStats;
  /** With --phases: where the one-hop round trips went, medians in µs (rtt-phases.ts). */
  phases?: Partial<Record<OneHop, PhaseMedians>>;
  ratios: {
    /** tenguard one leg / wireguard-go, medians (target <= 1.0). */
    oneLegMedian: number;
    /** tenguard one leg / wireguard-go, 99th percentiles (target <= 1.5). */
    oneLegP99: number;
    /** full path / tenguard one leg, medians (target <= 3). */
    fullPathMedian?: number;
    /** With --reference: its one leg / wireguard-go, medians and 99th percentiles. */
    referenceMedian?: number;
    referenceP99?: number;
  };
}

export interface LatencyBenchResult {
  /** Round-trip times in ms, by ping interval in ms. */
  intervals: Record<string, LatencyCase>;
  wireguard_go: string;
  /** How the one-hop pings were taken (see the top of latency.ts). */
  method: {
    rounds: number;
    leadPings: number;
    warmupPings: number;
    counts: { fast: number; slow: number };
    /**
     * How long each tenguard device's own warm-up took (ms, by case, both ends); the pings
     * start once it is done (device/runtime.ts). Absent for a build that does not report it.
     */
    deviceWarmupMs: Partial<Record<OneHop, number[]>>;
  };
}

export interface LatencyOptions {
  /** Pings per interval and case. */
  counts: { fast: number; slow: number };
  /** The wireguard-go binary; default the one on PATH. */
  wireguardGo?: string;
  /** Another tenguard build's bin/tenguard.js, measured beside this one. */
  reference?: string;
  /** Skip the full path (it builds the whole lab). */
  skipFullPath?: boolean;
  /** Capture the one-hop pings and split each round trip into phases (rtt-phases.ts). */
  phases?: boolean;
  log?: (s: string) => void;
}

const INTERVALS_MS = [5, 200] as const;

/** The reply times (ms) in `ping` output, leaving out the replies to the first `lead` pings. */
export function replyTimes(out: string, lead = 0): number[] {
  const rtts: number[] = [];
  for (const m of out.matchAll(/icmp_seq=(\d+) .*?time=([\d.]+) ms/g))
    if (Number(m[1]) > lead) rtts.push(Number(m[2]));
  return rtts;
}

/** Median, 99th percentile and maximum of round trips (ms), `sent` pings in all. */
export function statsOf(times: readonly number[], sent: number): RttStats {
  const rtts = [...times].sort((x, y) => x - y);
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

/** Median, 99th percentile and maximum of round trips (ms) from `ping` output. */
export function rttStats(out: string, sent: number): RttStats {
  return statsOf(replyTimes(out), sent);
}

/** Warm-up: handshakes done, caches, JIT and the kernel's neighbour entries settled. */
async function warmUp(ns: string, target: string): Promise<void> {
  await runIn(ns, 'ping', ['-n', '-q', '-c', String(WARMUP_PINGS), '-i', '0.01', '-W', '1', target], {
    timeoutMs: 30_000,
  });
}

/** One block: LEAD_PINGS uncounted pings, then `count` counted ones, at `intervalMs`. */
async function pingBlock(ns: string, target: string, intervalMs: number, count: number): Promise<number[]> {
  const total = LEAD_PINGS + count;
  const r = await runIn(
    ns,
    'ping',
    ['-n', '-c', String(total), '-i', String(intervalMs / 1000), '-W', '1', target],
    { timeoutMs: ((total * intervalMs) / 1000) * 1000 + 30_000 },
  );
  return replyTimes(r.stdout, LEAD_PINGS);
}

/** Sizes of ROUNDS blocks adding up to `count`. */
export function blockSizes(count: number, rounds = ROUNDS): number[] {
  const sizes: number[] = [];
  for (let i = 0; i < rounds; i++)
    sizes.push(Math.floor((count * (i + 1)) / rounds) - Math.floor((count * i) / rounds));
  return sizes.filter((n) => n > 0);
}

/** Pings every target in alternating blocks (the order rotated every round). */
async function pingAlternating(
  targets: readonly { ns: string; address: string }[],
  intervalMs: number,
  count: number,
): Promise<RttStats[]> {
  const times: number[][] = targets.map(() => []);
  const sizes = blockSizes(count);
  for (let round = 0; round < sizes.length; round++)
    for (let k = 0; k < targets.length; k++) {
      const i = (round + k) % targets.length;
      times[i].push(...(await pingBlock(targets[i].ns, targets[i].address, intervalMs, sizes[round])));
    }
  return times.map((t) => statsOf(t, count));
}

async function wireguardGoVersion(bin: string): Promise<string> {
  const r = await runCommand(bin, ['--version'], { timeoutMs: 5000 });
  const m = /wireguard-go v?([\w.-]+)/.exec(r.stdout);
  return m ? m[1] : 'unknown';
}

type OneHop = 'wireguard-go' | 'one-leg' | 'reference';

export async function benchLatency(opts: LatencyOptions): Promise<LatencyBenchResult> {
  requireRoot('bench latency');
  const log = opts.log ?? (() => undefined);
  const count = (ms: number): number => (ms < 50 ? opts.counts.fast : opts.counts.slow);
  const results: Record<string, Partial<Record<OneHop | 'full-path', RttStats>>> = {};
  const phases: Record<string, Partial<Record<OneHop, PhaseMedians>>> = {};
  for (const ms of INTERVALS_MS) results[ms] = {};
  const version = await wireguardGoVersion(opts.wireguardGo ?? 'wireguard-go');
  const hops: { key: OneHop; impl: Implementation; tenguardBin?: string }[] = [
    { key: 'wireguard-go', impl: 'wireguard-go' },
    { key: 'one-leg', impl: 'tenguard' },
  ];
  if (opts.reference !== undefined)
    hops.push({ key: 'reference', impl: 'tenguard', tenguardBin: resolve(opts.reference) });
  const beds: Testbed[] = [];
  const deviceWarmupMs: Partial<Record<OneHop, number[]>> = {};
  try {
    for (const [i, hop] of hops.entries()) {
      const tb = await createTestbed(`${TESTBED_PREFIX}${i}`, { mtu: 1500, index: i });
      beds.push(tb);
      const dev = { wireguardGo: opts.wireguardGo, tenguardBin: hop.tenguardBin };
      await startDevice(tb.a, hop.impl, {}, dev);
      await startDevice(tb.b, hop.impl, {}, dev);
      await configureDevice(tb.a, tb.b, { mtu: TUNNEL_MTU });
      await configureDevice(tb.b, tb.a, { mtu: TUNNEL_MTU });
      await waitForPath(tb.a.ns, tb.b.tunV4);
      if (hop.impl === 'tenguard') {
        const ms = [await waitForWarmup(tb.a), await waitForWarmup(tb.b)];
        if (ms[0] !== null && ms[1] !== null) deviceWarmupMs[hop.key] = ms as number[];
      }
    }
    for (const ms of INTERVALS_MS) {
      for (const tb of beds) await warmUp(tb.a.ns, tb.b.tunV4);
      log(`one hop (${hops.map((h) => h.key).join(', ')}), every ${ms} ms, ${count(ms)} pings each ...`);
      const captures: PhaseCapture[] = [];
      try {
        if (opts.phases)
          for (const tb of beds)
            captures.push(await PhaseCapture.start(tb.a.ns, `/tmp/${tb.a.ns}-${process.pid}-${ms}ms.pcap`));
        const stats = await pingAlternating(
          beds.map((tb) => ({ ns: tb.a.ns, address: tb.b.tunV4 })),
          ms,
          count(ms),
        );
        for (const [i, hop] of hops.entries()) results[ms][hop.key] = stats[i];
        if (opts.phases) {
          // Each stop waits out tcpdump's buffer timeout: all at once rather than in turn.
          const events = await Promise.all(captures.map((c) => c.stop()));
          phases[ms] = {};
          for (const [i, hop] of hops.entries())
            phases[ms][hop.key] = phaseMedians(roundTripPhases(events[i], LEAD_PINGS));
        }
      } finally {
        for (const c of captures) await c.abort();
      }
    }
  } finally {
    for (const tb of beds) await destroyTestbed(tb);
  }
  if (!opts.skipFullPath) {
    const path = await openLabPath(log);
    try {
      for (const ms of INTERVALS_MS) {
        await warmUp(path.a.ns, path.cross.address);
        log(`full path ${path.a.name} -> ${path.cross.name}, every ${ms} ms, ${count(ms)} pings ...`);
        [results[ms]['full-path']] = await pingAlternating(
          [{ ns: path.a.ns, address: path.cross.address }],
          ms,
          count(ms),
        );
      }
    } finally {
      await path.stop();
    }
  }
  const ratio = (x: number, y: number): number => Math.round((x / y) * 100) / 100;
  const intervals: Record<string, LatencyCase> = {};
  for (const ms of INTERVALS_MS) {
    const r = results[ms] as Record<OneHop, RttStats> & { 'full-path'?: RttStats };
    const c: LatencyCase = {
      'wireguard-go': r['wireguard-go'],
      'one-leg': r['one-leg'],
      ratios: {
        oneLegMedian: ratio(r['one-leg'].median, r['wireguard-go'].median),
        oneLegP99: ratio(r['one-leg'].p99, r['wireguard-go'].p99),
      },
    };
    const full = r['full-path'];
    if (full !== undefined) {
      c['full-path'] = full;
      c.ratios.fullPathMedian = ratio(full.median, r['one-leg'].median);
    }
    if (phases[ms] !== undefined) c.phases = phases[ms];
    if (r.reference !== undefined) {
      c.reference = r.reference;
      c.ratios.referenceMedian = ratio(r.reference.median, r['wireguard-go'].median);
      c.ratios.referenceP99 = ratio(r.reference.p99, r['wireguard-go'].p99);
    }
    intervals[`${ms}ms`] = c;
  }
  return {
    intervals,
    wireguard_go: version,
    method: {
      rounds: ROUNDS,
      leadPings: LEAD_PINGS,
      warmupPings: WARMUP_PINGS,
      counts: opts.counts,
      deviceWarmupMs,
    },
  };
}

const USAGE = `usage: tenguard bench latency [--json] [--wireguard-go BIN] [--count N] [--slow-count N]
                             [--reference TENGUARD_JS] [--skip-full-path] [--phases]

Round trips (ping after a warm-up) every 5 ms and every 200 ms over one tenguard leg, over one
wireguard-go hop (BIN, default the wireguard-go on PATH) and over the full path (workload ->
vSwitch -> NIC -> fabric -> NIC -> vSwitch -> workload), in one run: median, 99th percentile
and maximum in ms, and the ratios. The one-hop cases run side by side and are pinged in
${ROUNDS} alternating blocks per interval. --count: pings every 5 ms (default 1000);
--slow-count: pings every 200 ms (default 300); --reference: another tenguard build's
bin/tenguard.js, measured as a third one-hop case (A/B of a change); --skip-full-path: one
hop only (the full path builds the whole lab); --phases: capture the one-hop pings (tcpdump)
and split each round trip into the local device's outbound half (request on the tunnel
interface to datagram on the link), the remote side (link and peer device) and the local
device's inbound half, medians in µs per implementation.
`;

export async function run(args: string[]): Promise<number> {
  let values: {
    json?: boolean;
    'wireguard-go'?: string;
    count?: string;
    'slow-count'?: string;
    reference?: string;
    'skip-full-path'?: boolean;
    phases?: boolean;
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
        reference: { type: 'string' },
        'skip-full-path': { type: 'boolean' },
        phases: { type: 'boolean' },
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
  const slow = Number(values['slow-count'] ?? 300);
  if (!Number.isInteger(fast) || fast < 10 || fast > 20_000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--count must be an integer from 10 to 20000');
  if (!Number.isInteger(slow) || slow < 10 || slow > 1000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--slow-count must be an integer from 10 to 1000');
  const wireguardGo = values['wireguard-go'];
  const reference = values.reference;
  if (reference !== undefined && !existsSync(reference))
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `--reference: no such file '${reference}'`);
  const result = await benchLatency({
    counts: { fast, slow },
    wireguardGo: wireguardGo?.includes('/') ? resolve(wireguardGo) : wireguardGo,
    reference,
    skipFullPath: values['skip-full-path'] === true,
    phases: values.phases === true,
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return 0;
  }
  const row = (name: string, r: RttStats | undefined): string =>
    r === undefined
      ? ''
      : `  ${name.padEnd(14)} median ${r.median.toFixed(3)}  p99 ${r.p99.toFixed(3)}  max ${r.max.toFixed(3)} ms` +
        `  (${r.count} replies, ${r.lost} lost)\n`;
  let text =
    `round trips, ping after warm-up, tunnel MTU ${TUNNEL_MTU}, wireguard-go ${result.wireguard_go}, one run, ` +
    `${ROUNDS} alternating blocks:\n`;
  for (const [interval, c] of Object.entries(result.intervals)) {
    const r = c.ratios;
    text +=
      `every ${interval}:\n` +
      row('wireguard-go', c['wireguard-go']) +
      row('tenguard leg', c['one-leg']) +
      row('reference', c.reference) +
      row('full path', c['full-path']) +
      `  ratios: leg/wireguard-go median ${r.oneLegMedian}, p99 ${r.oneLegP99}` +
      (r.referenceMedian !== undefined
        ? `; reference/wireguard-go median ${r.referenceMedian}, p99 ${r.referenceP99}`
        : '') +
      (r.fullPathMedian !== undefined ? `; full path/leg median ${r.fullPathMedian}` : '') +
      '\n';
    for (const [name, p] of Object.entries(c.phases ?? {}))
      text +=
        `  phases ${name.padEnd(13)} outbound ${p.outbound} µs, remote ${p.remote} µs, inbound ${p.inbound} µs` +
        ` (medians of ${p.matched} round trips)\n`;
  }
  process.stdout.write(text);
  return 0;
}
