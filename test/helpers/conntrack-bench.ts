// `tenguard bench conntrack --json` run as a child process and checked for its exact shape:
// {"flows": {...}, "flows_ipv6": {...}, "nftables": {...}} with three sizes and three keys each, and the nftables
// side measured in tg-prefixed namespaces that are gone afterwards. Shared by the main-tier
// check (one short run) and the slow-tier throughput ratio (three runs).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/util/exec.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const SIZES = ['10', '10000', '100000'];
const KEYS = ['mbps', 'new_flows_per_s', 'ns_per_packet'];

export interface ConntrackPoint {
  mbps: number;
  ns_per_packet: number;
  new_flows_per_s: number;
}

export interface ConntrackOut {
  flows: Record<string, ConntrackPoint>;
  flows_ipv6: Record<string, ConntrackPoint>;
  nftables: Record<string, ConntrackPoint>;
}

/** The service row of the details (stderr): a service in the path against the row without. */
export interface ServiceRow {
  flows: number;
  ns_per_packet: number;
  ns_per_packet_without: number;
  ratio: number;
  slow_path_packets: number;
}

/** One run of `bench conntrack --json`, its output's shape and its cleanup asserted (and the service row of its details). */
export async function benchConntrackChecked(): Promise<ConntrackOut & { service: ServiceRow }> {
  const r = spawnSync(
    process.execPath,
    [BIN, 'bench', 'conntrack', '--json', '--rounds', '8', '--seconds', '0.03'],
    {
      encoding: 'utf8',
      timeout: 240_000,
    },
  );
  assert.equal(r.status, 0, `bench failed: ${r.stderr.slice(-2000)}`);
  const lines = r.stdout.trim().split('\n');
  assert.equal(lines.length, 1, 'stdout is not one JSON line');
  const namespaces = [...r.stderr.matchAll(/flows in (tgct[0-9a-f]+)/g)].map((m) => m[1]);
  const out = JSON.parse(lines[0]) as ConntrackOut;
  assert.deepEqual(Object.keys(out).sort(), ['flows', 'flows_ipv6', 'nftables']);
  for (const side of ['flows', 'flows_ipv6', 'nftables'] as const) {
    assert.deepEqual(Object.keys(out[side]), SIZES, `${side}: sizes`);
    for (const n of SIZES) {
      const p = out[side][n];
      assert.deepEqual(Object.keys(p).sort(), KEYS, `${side}.${n}: keys`);
      if (side !== 'nftables')
        for (const key of KEYS)
          assert.ok(
            Number.isFinite(p[key as keyof ConntrackPoint]) && p[key as keyof ConntrackPoint] > 0,
            `${side}.${n}.${key}`,
          );
      else
        for (const key of KEYS)
          assert.equal(typeof p[key as keyof ConntrackPoint], 'number', `${side}.${n}.${key}`);
    }
  }
  assert.equal(namespaces.length, 3, 'one nftables namespace per size');
  const left = (await run('ip', ['netns', 'list'])).stdout;
  for (const ns of namespaces) assert.ok(!left.includes(ns), `namespace ${ns} left behind`);
  const details = r.stderr.match(/details (\{.*\})\n/);
  assert.ok(details !== null, 'no details on stderr');
  const service = (JSON.parse(details[1]) as { service: ServiceRow }).service;
  assert.ok(service.ratio > 0 && Number.isFinite(service.ns_per_packet), 'service row');
  return { ...out, service };
}
