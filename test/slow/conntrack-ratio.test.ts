// `tenguard bench conntrack` (issue 7): our throughput at 100,000 tracked flows stays within
// 10% of the throughput at 10 flows. Short runs on a shared machine are noisy, so the check
// is made on the median over three runs of ns_per_packet (10 flows / 100,000 flows: the
// throughput ratio). Each run's output shape and cleanup are checked as in the main tier
// (test/integration/policy-bench.test.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { benchConntrackChecked } from '../helpers/conntrack-bench.js';

function median(v: number[]): number {
  const s = [...v].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

test('bench conntrack: 100k flows within 10% of 10 (median of three runs)', {
  timeout: 900_000,
}, async () => {
  const ratios: number[] = [];
  for (let k = 0; k < 3; k++) {
    const out = await benchConntrackChecked();
    ratios.push(out.flows['10'].ns_per_packet / out.flows['100000'].ns_per_packet);
  }
  const m = median(ratios);
  assert.ok(
    m >= 0.9,
    `throughput at 100,000 flows is ${m.toFixed(3)} of that at 10 (runs: ${ratios.join(', ')})`,
  );
});
