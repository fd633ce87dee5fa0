// The latency bench's statistics from ping output: median, 99th percentile, maximum, losses.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { blockSizes, replyTimes, rttStats, statsOf } from '../../src/bench/latency.js';

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

test('replyTimes leaves out the replies to the lead pings, whatever order they came in', () => {
  const out = [
    '64 bytes from 100.64.200.2: icmp_seq=2 ttl=64 time=9.00 ms',
    '64 bytes from 100.64.200.2: icmp_seq=1 ttl=64 time=8.00 ms',
    '64 bytes from 100.64.200.2: icmp_seq=3 ttl=64 time=0.30 ms',
    '64 bytes from 100.64.200.2: icmp_seq=5 ttl=64 time=0.50 ms',
  ].join('\n');
  assert.deepEqual(replyTimes(out, 2), [0.3, 0.5]);
  assert.deepEqual(replyTimes(out), [9, 8, 0.3, 0.5]);
});

test('blockSizes splits a count into the rounds, every ping counted once', () => {
  assert.deepEqual(blockSizes(1000), [200, 200, 200, 200, 200]);
  assert.deepEqual(blockSizes(12), [2, 2, 3, 2, 3]);
  assert.deepEqual(blockSizes(3), [1, 1, 1]);
  for (const n of [10, 11, 299, 300, 20_000])
    assert.equal(
      blockSizes(n).reduce((x, y) => x + y, 0),
      n,
    );
});

test('statsOf takes the figures over the replies of every block together', () => {
  const s = statsOf([...[0.2, 0.1], ...[0.4, 0.3]], 5);
  assert.deepEqual(s, { count: 4, lost: 1, median: 0.3, p99: 0.4, max: 0.4 });
});
