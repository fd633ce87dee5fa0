// `tenguard bench <sub>`: one module per benchmark, loaded on demand, each exporting
// `run(args)` like the top-level commands.
import type { CommandRunner } from './main.js';

interface BenchEntry {
  summary: string;
  load: () => Promise<{ run: CommandRunner }>;
}

const BENCHES: Record<string, BenchEntry> = {
  io: {
    summary: 'native I/O: TUN, UDP and AEAD, one packet per call vs batched',
    load: () => import('../bench/io.js'),
  },
  tunnel: {
    summary: 'iperf3 TCP: plaintext veth, wireguard-go, tenguard, in one run',
    load: () => import('../bench/tunnel.js'),
  },
  conntrack: {
    summary: 'policy + conntrack per packet and new flows/s at 10, 10k, 100k flows, vs nftables',
    load: () => import('../bench/conntrack.js'),
  },
  http: {
    summary: 'management API request latency over a Unix socket: own HTTP stack vs fastify',
    load: () => import('../bench/http.js'),
  },
  latency: {
    summary: 'ping round trips every 5 and 200 ms: one tenguard leg, one wireguard-go hop, the full path',
    load: () => import('../bench/latency.js'),
  },
  spinup: {
    summary: 'spin-up to first packet through the orchestrator on SQLite and on etcd, in one run',
    load: () => import('../bench/spinup-store.js'),
  },
  path: {
    summary: 'iperf3 TCP workload to workload (same host, cross host) vs one wireguard-go hop',
    load: () => import('../bench/path.js'),
  },
};

function usage(): string {
  const lines = ['usage: tenguard bench <benchmark> [options]', '', 'benchmarks:'];
  for (const [name, entry] of Object.entries(BENCHES)) lines.push(`  ${name.padEnd(10)} ${entry.summary}`);
  lines.push('', "Run 'tenguard bench <benchmark> --help' for its options.");
  return lines.join('\n');
}

export async function run(args: string[]): Promise<number> {
  const [name, ...rest] = args;
  if (name === undefined || name === '-h' || name === '--help' || name === 'help') {
    process.stdout.write(`${usage()}\n`);
    return name === undefined ? 2 : 0;
  }
  const entry = Object.hasOwn(BENCHES, name) ? BENCHES[name] : undefined;
  if (entry === undefined) {
    process.stderr.write(`tenguard bench: unknown benchmark '${name}'\n\n${usage()}\n`);
    return 2;
  }
  return (await entry.load()).run(rest);
}
