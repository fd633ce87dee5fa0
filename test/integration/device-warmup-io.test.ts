// The warm-up's device phase (device/warmup-io.ts) in a network namespace: with loopback up
// it completes; where loopback is down (a fresh namespace) no round trip can complete, and the
// phase ends by itself after STALL_MS, closing everything it opened. A device process reports
// the warm-up in its tenguard-stats.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import {
  createTestbed,
  destroyTestbed,
  deviceCounters,
  startDevice,
  waitForWarmup,
} from '../../src/bench/testbed.js';
import { STALL_MS } from '../../src/device/warmup-io.js';
import { run, runOk } from '../../src/util/exec.js';

const alone = fileURLToPath(new URL('../helpers/warmup-io-alone.js', import.meta.url));
const ns = `tgwio-${process.pid}`;

interface Result {
  roundTrips: number;
  ended: string;
  ms: number;
  fdsBefore: number;
  fdsAfter: number;
}

async function phaseIn(): Promise<Result> {
  const out = await runOk('ip', ['netns', 'exec', ns, process.execPath, alone, '50'], { timeoutMs: 60_000 });
  const line = out.split('\n').find((l) => l.startsWith('{'));
  assert.ok(line, `no result: ${out}`);
  return JSON.parse(line) as Result;
}

test('device phase: stalls and ends by itself without loopback, completes with it, and leaves no fd open', async (t) => {
  await runOk('ip', ['netns', 'add', ns]);
  try {
    const down = await phaseIn();
    t.diagnostic(`lo down: ${JSON.stringify(down)}`);
    assert.equal(down.ended, 'stalled');
    assert.equal(down.roundTrips, 0);
    assert.ok(down.ms >= STALL_MS && down.ms < STALL_MS + 5_000, `ended after ${down.ms} ms`);
    assert.equal(down.fdsAfter, down.fdsBefore);

    await runOk('ip', ['netns', 'exec', ns, 'ip', 'link', 'set', 'lo', 'up']);
    const up = await phaseIn();
    t.diagnostic(`lo up: ${JSON.stringify(up)}`);
    assert.equal(up.ended, 'done');
    assert.equal(up.roundTrips, 50);
    assert.equal(up.fdsAfter, up.fdsBefore);
  } finally {
    await run('ip', ['netns', 'del', ns]);
  }
});

test('a tenguard device reports its warm-up in tenguard-stats: not done at first, then done with its duration', async (t) => {
  const tb = await createTestbed(`tgwiu${process.pid % 1000}`, { index: 9 });
  try {
    await startDevice(tb.a, 'tenguard');
    const early = await deviceCounters(tb.a);
    assert.ok(early['warmup.done'] === 0 || early['warmup.done'] === 1, JSON.stringify(early));
    const ms = await waitForWarmup(tb.a, 30_000);
    t.diagnostic(`warm-up of a device process: ${ms} ms (first stats: warmup.done=${early['warmup.done']})`);
    assert.ok(ms !== null && ms > 0 && ms < 30_000, `warm-up ms: ${ms}`);
    const c = await deviceCounters(tb.a);
    assert.equal(c['warmup.done'], 1);
    assert.equal(c['warmup.ms'], ms);
  } finally {
    await destroyTestbed(tb);
  }
});
