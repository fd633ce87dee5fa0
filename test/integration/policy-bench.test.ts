// `tenguard bench conntrack --json` (issue 7): prints exactly {"flows": {...}, "nftables":
// {...}} with the three sizes and three keys each, measures nftables in tg-prefixed
// namespaces it removes afterwards, and our throughput at 100,000 tracked flows stays within
// 10% of the throughput at 10 flows. Short runs on a shared machine are noisy, so that last
// check is made on the median over three runs of ns_per_packet (10 flows / 100,000 flows:
// the throughput ratio).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { run } from '../../src/util/exec.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));
const SIZES = ['10', '10000', '100000'];
const KEYS = ['mbps', 'new_flows_per_s', 'ns_per_packet'];

interface Point {
  mbps: number;
  ns_per_packet: number;
  new_flows_per_s: number;
}

function bench(): {
  out: { flows: Record<string, Point>; nftables: Record<string, Point> };
  namespaces: string[];
} {
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
  return { out: JSON.parse(lines[0]), namespaces };
}

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

test('bench conntrack --json: exact shape, nftables side cleaned up, 100k flows within 10% of 10', {
  timeout: 900_000,
}, async () => {
  const ratios: number[] = [];
  for (let k = 0; k < 3; k++) {
    const { out, namespaces } = bench();
    assert.deepEqual(Object.keys(out).sort(), ['flows', 'nftables']);
    for (const side of ['flows', 'nftables'] as const) {
      assert.deepEqual(Object.keys(out[side]), SIZES, `${side}: sizes`);
      for (const n of SIZES) {
        const p = out[side][n];
        assert.deepEqual(Object.keys(p).sort(), KEYS, `${side}.${n}: keys`);
        if (side === 'flows')
          for (const key of KEYS)
            assert.ok(
              Number.isFinite(p[key as keyof Point]) && p[key as keyof Point] > 0,
              `${side}.${n}.${key}`,
            );
        else
          for (const key of KEYS) assert.equal(typeof p[key as keyof Point], 'number', `${side}.${n}.${key}`);
      }
    }
    assert.equal(namespaces.length, 3, 'one nftables namespace per size');
    const left = (await run('ip', ['netns', 'list'])).stdout;
    for (const ns of namespaces) assert.ok(!left.includes(ns), `namespace ${ns} left behind`);
    ratios.push(out.flows['10'].ns_per_packet / out.flows['100000'].ns_per_packet);
  }
  const m = median(ratios);
  assert.ok(
    m >= 0.9,
    `throughput at 100,000 flows is ${m.toFixed(3)} of that at 10 (runs: ${ratios.join(', ')})`,
  );
});
