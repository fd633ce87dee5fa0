// `tenguard bench tunnel`: iperf3 TCP between two namespaces over plaintext veth, over
// wireguard-go to wireguard-go, and over tenguard to tenguard, in one run and at one MTU,
// so that only ratios matter on a shared, noisy machine.
import { parseArgs } from 'node:util';
import { TgError } from '../util/errors.js';
import { requireRoot, runInOk } from '../util/exec.js';
import {
  configureDevice,
  createTestbed,
  destroyTestbed,
  type Implementation,
  iperf,
  startDevice,
  stopDevice,
} from './testbed.js';

export interface TunnelBenchResult {
  mtu: number;
  seconds: number;
  mbps: { plaintext: number; 'wireguard-go': number; tenguard: number };
  ratio: number;
}

export async function benchTunnel(opts: {
  seconds: number;
  mtu: number;
  prefix?: string;
  log?: (s: string) => void;
}): Promise<TunnelBenchResult> {
  requireRoot('bench tunnel');
  const log = opts.log ?? (() => undefined);
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
    const tunnel = async (impl: Implementation): Promise<number> => {
      log(`${impl} to ${impl}, ${opts.seconds} s ...`);
      await startDevice(tb.a, impl);
      await startDevice(tb.b, impl);
      try {
        await configureDevice(tb.a, tb.b, { mtu: opts.mtu });
        await configureDevice(tb.b, tb.a, { mtu: opts.mtu });
        return (await iperf(tb.a, tb.b, tb.b.tunV4, opts.seconds)).mbps;
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
      mbps: { plaintext: round(plaintext), 'wireguard-go': round(wg), tenguard: round(tg) },
      ratio: Math.round((tg / wg) * 1000) / 1000,
    };
  } finally {
    await destroyTestbed(tb);
  }
}

async function runWireMtu(ns: string, dev: string, mtu: number): Promise<void> {
  await runInOk(ns, 'ip', ['link', 'set', dev, 'mtu', String(mtu)]);
}

export async function run(args: string[]): Promise<number> {
  let values: { json?: boolean; seconds?: string; mtu?: string; help?: boolean };
  try {
    ({ values } = parseArgs({
      args,
      options: {
        json: { type: 'boolean' },
        seconds: { type: 'string' },
        mtu: { type: 'string' },
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
      'usage: tenguard bench tunnel [--json] [--seconds S (default 10)] [--mtu M (default 1420)]\n',
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
    log: values.json ? undefined : (s) => process.stderr.write(`${s}\n`),
  });
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
  } else {
    const m = result.mbps;
    process.stdout.write(
      `tunnel throughput, iperf3 TCP, MTU ${mtu}, ${seconds} s each, one run:\n` +
        `  plaintext veth    ${m.plaintext.toFixed(1).padStart(9)} Mbit/s\n` +
        `  wireguard-go      ${m['wireguard-go'].toFixed(1).padStart(9)} Mbit/s\n` +
        `  tenguard          ${m.tenguard.toFixed(1).padStart(9)} Mbit/s\n` +
        `  ratio tenguard / wireguard-go: ${result.ratio}\n`,
    );
  }
  return 0;
}
