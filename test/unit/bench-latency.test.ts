// The latency bench's statistics from ping output: median, 99th percentile, maximum, losses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { rttStats } from '../../src/bench/latency.js';

test('rttStats reads every reply time and takes median, p99 and max over them', () => {
  const lines = [];
  for (let i = 1; i <= 100; i++)
    lines.push(`64 bytes from 100.64.200.2: icmp_seq=${i} ttl=64 time=${(i / 100).toFixed(3)} ms`);
  lines.push(
    '--- 100.64.200.2 ping statistics ---',
    '102 packets transmitted, 100 received, 1.96% packet loss',
  );
  const s = rttStats(lines.join('\n'), 102);
  assert.deepEqual(s, { count: 100, lost: 2, median: 0.51, p99: 1, max: 1 });
});

test('rttStats of a run without replies has no figures, and counts every ping lost', () => {
  const s = rttStats('5 packets transmitted, 0 received, 100% packet loss', 5);
  assert.equal(s.count, 0);
  assert.equal(s.lost, 5);
  assert.ok(Number.isNaN(s.median) && Number.isNaN(s.p99) && Number.isNaN(s.max));
});
