// The demo's pure pieces: the migration gap and loss read from a `ping -D` stream, the
// report's figures and verdict, and its tables.
import assert from 'node:assert/strict';
import { Writable } from 'node:stream';
import { test } from 'node:test';
import { DemoReporter, median, table } from '../../src/demo/report.js';
import { streamResult } from '../../src/demo/traffic.js';

function reply(t: number, seq: number): string {
  return `[${t.toFixed(6)}] 64 bytes from 100.64.1.2: icmp_seq=${seq} ttl=64 time=0.512 ms`;
}

function stream(replies: [number, number][], sent: number): string {
  return [
    'PING 100.64.1.2 (100.64.1.2) 56(84) bytes of data.',
    ...replies.map(([t, s]) => reply(t, s)),
    '',
    '--- 100.64.1.2 ping statistics ---',
    `${sent} packets transmitted, ${replies.length} received, 0% packet loss, time 1000ms`,
  ].join('\n');
}

test('streamResult: a steady stream has no loss and no gap', () => {
  const r = streamResult(
    stream(
      Array.from({ length: 10 }, (_, i): [number, number] => [1700000000 + i * 0.02, i + 1]),
      10,
    ),
    20,
  );
  assert.equal(r.sent, 10);
  assert.equal(r.received, 10);
  assert.equal(r.lost, 0);
  assert.equal(r.gapMs, 0);
  assert.equal(r.longestSilenceMs, 20);
});

test('streamResult: missing sequence numbers are the loss, the longest silence less the interval is the gap', () => {
  const replies: [number, number][] = [];
  for (let s = 1; s <= 20; s++) if (s < 8 || s > 12) replies.push([1700000000 + s * 0.02, s]);
  const r = streamResult(stream(replies, 21), 20);
  assert.equal(r.lost, 5, 'seq 8..12');
  assert.equal(r.received, 15);
  assert.equal(r.sent, 21);
  assert.equal(r.longestSilenceMs, 120, 'reply 7 to reply 13');
  assert.equal(r.gapMs, 100);
});

test('streamResult: an unanswered tail is not counted as loss; duplicates count once', () => {
  const out = stream(
    [
      [1700000000.0, 1],
      [1700000000.02, 2],
      [1700000000.021, 2],
      [1700000000.04, 3],
    ],
    5,
  );
  const r = streamResult(out, 20);
  assert.equal(r.received, 3);
  assert.equal(r.lost, 0);
  assert.equal(r.sent, 5);
});

test('streamResult: no replies at all', () => {
  const r = streamResult('5 packets transmitted, 0 received, 100% packet loss', 20);
  assert.deepEqual(
    { sent: r.sent, received: r.received, lost: r.lost, gapMs: r.gapMs },
    { sent: 5, received: 0, lost: 0, gapMs: 0 },
  );
});

test('median and table', () => {
  assert.equal(median([3, 1, 2]), 2);
  assert.equal(median([4, 1, 3, 2]), 2.5);
  assert.deepEqual(
    table([
      ['a', 'bb', 'c'],
      ['ddd', 'e', 'f'],
    ]),
    ['a    bb  c', 'ddd  e   f'],
  );
});

function sink(): { stream: Writable; text: () => string } {
  let buf = '';
  return {
    stream: new Writable({
      write(chunk, _enc, cb) {
        buf += String(chunk);
        cb();
      },
    }),
    text: () => buf,
  };
}

test('DemoReporter: --json keeps stdout to one JSON object; one failed check fails the run', () => {
  const out = sink();
  const err = sink();
  const r = new DemoReporter(true, 3, out.stream, err.stream);
  r.step('one');
  r.check('a', true, 'fine');
  r.figure('x_ms', 12);
  assert.equal(r.passed(), true);
  r.check('b', false, 'broken');
  assert.equal(r.passed(), false);
  r.finish();
  const parsed = JSON.parse(out.text()) as { checks: unknown[]; figures: Record<string, number> };
  assert.equal(parsed.checks.length, 2);
  assert.equal(parsed.figures.x_ms, 12);
  assert.match(err.text(), /\[1\/3\] one/);
  assert.match(err.text(), /FAIL {2}b: broken/);
  assert.match(err.text(), /result: 1\/2 checks passed/);
});

test('DemoReporter: no checks is no pass; plain mode writes progress to stdout', () => {
  const out = sink();
  const err = sink();
  const r = new DemoReporter(false, 2, out.stream, err.stream);
  assert.equal(r.passed(), false);
  r.step('teardown', 2);
  r.finish();
  assert.match(out.text(), /\[2\/2\] teardown/);
  assert.equal(err.text(), '');
});
