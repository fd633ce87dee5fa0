// `tenguard bench conntrack` (issue 7): our throughput at 100,000 tracked flows stays within
// 10% of the throughput at 10 flows; (issue 15) per packet, a service in the path costs at most
// 15% more than the same flows without. Short runs on a shared machine are noisy, so the checks
// are made on the median over three runs of ns_per_packet ratios within each run (10 flows /
// 100,000 flows: the throughput ratio; with a service / without, at 10,000 flows). Each run's
// output shape and cleanup are checked as in the main tier (test/integration/policy-bench.test.ts).
import assert from 'node:assert/strict';
import { before, test } from 'node:test';
import { benchConntrackChecked } from '../helpers/conntrack-bench.js';

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

const runs: Awaited<ReturnType<typeof benchConntrackChecked>>[] = [];

before(
  async () => {
    for (let k = 0; k < 3; k++) runs.push(await benchConntrackChecked());
  },
  { timeout: 900_000 },
);

test('bench conntrack: 100k flows within 10% of 10 (median of three runs)', () => {
  const ratios = runs.map((out) => out.flows['10'].ns_per_packet / out.flows['100000'].ns_per_packet);
  const m = median(ratios);
  assert.ok(
    m >= 0.9,
    `throughput at 100,000 flows is ${m.toFixed(3)} of that at 10 (runs: ${ratios.join(', ')})`,
  );
});

test('bench conntrack: a service in the path within 15% of the row without (median of three runs)', (t) => {
  const ratios = runs.map((out) => out.service.ratio);
  t.diagnostic(`service row / plain row per run: ${ratios.join(', ')}`);
  const m = median(ratios);
  assert.ok(
    m <= 1.15,
    `with a service: ${m.toFixed(3)} x the cost per packet without (runs: ${ratios.join(', ')})`,
  );
});
