// Busy polling of a real `tenguard device` pair (device/busy-poll.ts): the asking side of a
// ping exchange learns to poll for the reply and catches it, the answering side (whose next
// request is 50 ms away) does not poll, polling stays within its share of wall time, and
// TENGUARD_BUSY_POLL_US=0 turns it off, an invalid value stops the device with a clear error.
// Wake placement (native/wake.c) on the same pair: its events are counted, the devices' main
// threads are back at SCHED_OTHER after every one, TENGUARD_WAKE_PLACEMENT=off turns it off.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, describe, it } from 'node:test';
import { waitForPath } from '../../src/bench/path.js';
import {
  configureDevice,
  createTestbed,
  destroyTestbed,
  startDevice,
  stopDevice,
  type Testbed,
} from '../../src/bench/testbed.js';
import { BUSY_POLL_BURST_US, BUSY_POLL_SHARE } from '../../src/device/busy-poll.js';
import { devicePrefix, tenguardStats } from '../helpers/device-harness.js';
import { ping } from '../helpers/ping.js';

const PINGS = 40;
const SCHED_OTHER = 0;

/** The scheduling policy of a device process's main thread (field 41 of its stat). */
function mainThreadPolicy(side: Testbed['a']): number {
  const pid = side.proc?.pid;
  assert.ok(pid !== undefined, `${side.tun}: device process running`);
  const stat = readFileSync(`/proc/${pid}/task/${pid}/stat`, 'utf8');
  return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[41 - 3]);
}
const INTERVAL_S = 0.05;

async function pair(tb: Testbed, env: NodeJS.ProcessEnv): Promise<void> {
  await startDevice(tb.a, 'tenguard', env);
  await startDevice(tb.b, 'tenguard', env);
  await configureDevice(tb.a, tb.b, { mtu: 1420 });
  await configureDevice(tb.b, tb.a, { mtu: 1420 });
  await waitForPath(tb.a.ns, tb.b.tunV4);
}

describe('device busy polling', () => {
  let tb: Testbed | undefined;
  after(async () => {
    if (tb) await destroyTestbed(tb);
  });

  it('the asking side catches replies by polling; the answering side does not poll', async () => {
    tb = await createTestbed(devicePrefix('b', 0), { mtu: 1500 });
    await pair(tb, {});
    const before = [await tenguardStats(tb.a), await tenguardStats(tb.b)];
    const started = performance.now();
    const r = await ping(tb.a.ns, tb.b.tunV4, { count: PINGS, intervalS: INTERVAL_S });
    const elapsedUs = (performance.now() - started) * 1000;
    assert.equal(r.received, PINGS, 'every ping answered');
    const [a, b] = [await tenguardStats(tb.a), await tenguardStats(tb.b)];
    const delta = (now: Map<string, number>, then: Map<string, number>, k: string): number =>
      (now.get(k) ?? Number.NaN) - (then.get(k) ?? 0);
    const caughtA = delta(a, before[0], 'io.busyPollsCaught');
    const pollsB = delta(b, before[1], 'io.busyPolls');
    // The first reply teaches the window; a reply on a loaded CI machine may come late.
    assert.ok(caughtA >= PINGS / 2, `asking side caught ${caughtA} of ${PINGS} replies by polling`);
    assert.ok(pollsB <= 3, `answering side polled ${pollsB} times (its next request is 50 ms away)`);
    // Pings 50 ms apart are quiet events (QUIET_WAKE_MS): wake placement armed for those where
    // nothing else was runnable (not predictable on a shared machine), never more than one per event.
    for (const [side, s, then] of [
      [tb.a, a, before[0]],
      [tb.b, b, before[1]],
    ] as const) {
      const placed = delta(s, then, 'io.wakePlaced');
      assert.ok(placed >= 0 && placed <= PINGS + 2, `${side.tun}: ${placed} events with wake placement`);
      assert.equal(mainThreadPolicy(side), SCHED_OTHER, `${side.tun}: main thread back at SCHED_OTHER`);
    }
    for (const [name, s, then] of [
      ['asking', a, before[0]],
      ['answering', b, before[1]],
    ] as const) {
      const us = delta(s, then, 'io.busyPollMicros');
      assert.ok(
        us <= BUSY_POLL_SHARE * elapsedUs + BUSY_POLL_BURST_US,
        `${name} side polled ${us} us in ${Math.round(elapsedUs)} us`,
      );
    }
    await stopDevice(tb.a);
    await stopDevice(tb.b);
  });

  it('TENGUARD_BUSY_POLL_US=0 turns polling off; an invalid value is refused', async () => {
    assert.ok(tb, 'testbed exists');
    await pair(tb, { TENGUARD_BUSY_POLL_US: '0' });
    const r = await ping(tb.a.ns, tb.b.tunV4, { count: 10, intervalS: INTERVAL_S });
    assert.equal(r.received, 10);
    for (const s of [tb.a, tb.b]) assert.equal((await tenguardStats(s)).get('io.busyPolls'), 0);
    await stopDevice(tb.a);
    await stopDevice(tb.b);
    await pair(tb, { TENGUARD_WAKE_PLACEMENT: 'off' });
    const w = await ping(tb.a.ns, tb.b.tunV4, { count: 5, intervalS: 0.1 });
    assert.equal(w.received, 5);
    for (const s of [tb.a, tb.b]) assert.equal((await tenguardStats(s)).get('io.wakePlaced'), 0);
    await stopDevice(tb.a);
    await stopDevice(tb.b);
    await assert.rejects(startDevice(tb.a, 'tenguard', { TENGUARD_WAKE_PLACEMENT: 'yes' }), (err: Error) => {
      assert.match(err.message, /TENGUARD_WAKE_PLACEMENT=yes is not valid: on or off/);
      return true;
    });
    for (const bad of ['abc', '-1', '1.5', '10001']) {
      await assert.rejects(startDevice(tb.a, 'tenguard', { TENGUARD_BUSY_POLL_US: bad }), (err: Error) => {
        assert.match(
          err.message,
          new RegExp(`TENGUARD_BUSY_POLL_US=${bad.replace('.', '\\.')} is not valid`),
        );
        return true;
      });
    }
  });
});
