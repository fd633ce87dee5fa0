// `tenguard bench tunnel`: iperf3 TCP between two namespaces over plaintext veth, over
// wireguard-go to wireguard-go, and over tenguard to tenguard, in one run and at one MTU,
// so that only ratios matter on a shared, noisy machine. Beside throughput: the CPU seconds
// both devices of each implementation spent per GB the receiver got (utime + stime of the
// two device processes over the iperf3 run).
import { parseArgs } from 'node:util';
import { TgError } from '../util/errors.js';
import { requireRoot, runInOk } from '../util/exec.js';
import { CpuMeter, cpuSecondsPerGb, wireguardGoVersion } from './cpu.js';
import {
  configureDevice,
  createTestbed,
  DEFAULT_WIREGUARD_GO,
  destroyTestbed,
  type Implementation,
  iperf,
  type Side,
  startDevice,
  stopDevice,
} from './testbed.js';

export interface TunnelBenchResult {
  mtu: number;
  seconds: number;
  wireguard_go: string;
  wireguard_go_version: string;
  mbps: { plaintext: number; 'wireguard-go': number; tenguard: number };
  ratio: number;
  /** CPU seconds of both tunnel processes per GB received. */
  cpu_s_per_gb: { tenguard: number; wireguard_go: number };
}

/** The pids of both sides' device processes. */
export function devicePids(...sides: Side[]): number[] {
  return sides.map((s) => {
    const pid = s.proc?.pid;
    if (pid === undefined) throw new TgError('TG_ERR_INTERNAL', `no device process on ${s.ns}`);
    return pid;
  });
}

export async function benchTunnel(opts: {
  seconds: number;
  mtu: number;
  prefix?: string;
  /** The wireguard-go binary (default: the one on PATH). */
  wireguardGo?: string;
  log?: (s: string) => void;
}): Promise<TunnelBenchResult> {
  requireRoot('bench tunnel');
  const log = opts.log ?? (() => undefined);
  const wgBin = opts.wireguardGo ?? DEFAULT_WIREGUARD_GO;
  const wgVersion = wireguardGoVersion(wgBin);
  const tb = await createTestbed(opts.prefix ?? 'tgbt', { mtu: opts.mtu + 80 });
  try {
    log(`plaintext veth, ${opts.seconds} s ...`);
    // The wire carries the tunnel's outer packets, so it is 80 bytes larger than the tunnel MTU;
    // for the plaintext figure the wire is set to the tunnel MTU itself.
    await runWireMtu(tb.a.ns, tb.a.veth, opts.mtu);
    await runWireMtu(tb.b.ns, tb.b.veth, opts.mtu);
    const plaintext = (await iperf(tb.a, tb.b, tb.b.wireV4, opts.seconds)).mbps;
    await runWireMtu(tb.a.ns, tb.a.veth, opts.mtu + 80);
    await runWireMtu(tb.b.ns, tb.b.veth, opts.mtu + 80);
    const tunnel = async (impl: Implementation): Promise<{ mbps: number; cpuPerGb: number }> => {
      log(`${impl} to ${impl}, ${opts.seconds} s ...`);
      await startDevice(tb.a, impl, {}, { wireguardGo: wgBin });
      await startDevice(tb.b, impl, {}, { wireguardGo: wgBin });
      try {
        await configureDevice(tb.a, tb.b, { mtu: opts.mtu });
        await configureDevice(tb.b, tb.a, { mtu: opts.mtu });
        const cpu = new CpuMeter(devicePids(tb.a, tb.b));
        cpu.start();
        const r = await iperf(tb.a, tb.b, tb.b.tunV4, opts.seconds);
        return { mbps: r.mbps, cpuPerGb: cpuSecondsPerGb(cpu.stop(), r.bytes) };
      } finally {
        await stopDevice(tb.a);
        await stopDevice(tb.b);
      }
    };
    const wg = await tunnel('wireguard-go');
    const tg = await tunnel('tenguard');
    const round = (x: number): number => Math.round(x * 10) / 10;
    return {
      mtu: opts.mtu,
      seconds: opts.seconds,
      wireguard_go: wgBin,
      wireguard_go_version: wgVersion,
      mbps: { plaintext: round(plaintext), 'wireguard-go': round(wg.mbps), tenguard: round(tg.mbps) },
      ratio: Math.round((tg.mbps / wg.mbps) * 1000) / 1000,
      cpu_s_per_gb: { tenguard: tg.cpuPerGb, wireguard_go: wg.cpuPerGb },
    };
  } finally {
    await destroyTestbed(tb);
  }
}

async function runWireMtu(ns: string, dev: string, mtu: number): Promise<void> {
  await runInOk(ns, 'ip', ['link', 'set', dev, 'mtu', String(mtu)]);
}

export async function run(args: string[]): Promise<number> {
  let values: { json?: boolean; seconds?: string; mtu?: string; 'wireguard-go'?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        seconds: { type: 'string' },
        mtu: { type: 'string' },
        'wireguard-go': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (err) {
    throw new TgError('TG_ERR_USAGE', (err as Error).message);
  }
  if (values.help) {
    process.stdout.write(
      'usage: tenguard bench tunnel [--json] [--seconds S (default 10)] [--mtu M (default 1420)]\n' +
        '                             [--wireguard-go BIN (default: wireguard-go on PATH)]\n\n' +
        'iperf3 TCP over plaintext veth, wireguard-go and tenguard in one run; also the CPU seconds\n' +
        'per GB moved of both devices of each implementation (cpu_s_per_gb).\n',
    );
    return 0;
  }
  const seconds = Number(values.seconds ?? 10);
  const mtu = Number(values.mtu ?? 1420);
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > 120)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--seconds must be an integer from 1 to 120');
  if (!Number.isInteger(mtu) || mtu < 1280 || mtu > 9000)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', '--mtu must be an integer from 1280 to 9000');
  const result = await benchTunnel({
    seconds,
    mtu,
    wireguardGo: values['wireguard-go'],
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const m = result.mbps;
    process.stdout.write(
      `tunnel throughput, iperf3 TCP, MTU ${mtu}, ${seconds} s each, one run ` +
        `(wireguard-go ${result.wireguard_go_version}):\n` +
        `  plaintext veth    ${m.plaintext.toFixed(1).padStart(9)} Mbit/s\n` +
        `  wireguard-go      ${m['wireguard-go'].toFixed(1).padStart(9)} Mbit/s` +
        `  ${result.cpu_s_per_gb.wireguard_go} CPU s/GB\n` +
        `  tenguard          ${m.tenguard.toFixed(1).padStart(9)} Mbit/s` +
        `  ${result.cpu_s_per_gb.tenguard} CPU s/GB\n` +
        `  ratio tenguard / wireguard-go: ${result.ratio}\n`,
    );
  }
  return 0;
}
