// The busy-poll policy (device/busy-poll.ts): windows learnt per trigger from the gap to the
// next event, halved to nothing when there is nothing to catch, the polling budget, the
// setting; and the native wait on real sockets.
import assert from 'node:assert/strict';
import { createSocket } from 'node:dgram';
import { test } from 'node:test';
import {
  BUSY_POLL_BURST_US,
  BUSY_POLL_SHARE,
  BusyPollPolicy,
  busyPollDefault,
  DEFAULT_BUSY_POLL_US,
  DID_DELIVER,
  DID_SEND,
  READY_SOCKET,
  WAKE_BACKOFF_MAX,
  WakeCheckBackoff,
} from '../../src/device/busy-poll.js';
import { loadNative } from '../../src/native/binding.js';
import { NativeUdpSocket } from '../../src/native/udp.js';

test('busy poll: the setting', () => {
  assert.equal(busyPollDefault({}), DEFAULT_BUSY_POLL_US);
  assert.equal(busyPollDefault({ TENGUARD_BUSY_POLL_US: '' }), DEFAULT_BUSY_POLL_US);
  assert.equal(busyPollDefault({ TENGUARD_BUSY_POLL_US: '0' }), 0);
  assert.equal(busyPollDefault({ TENGUARD_BUSY_POLL_US: '250' }), 250);
  for (const bad of ['abc', '-1', '1.5', '10001', '1e3', '0x10'])
    assert.throws(
      () => busyPollDefault({ TENGUARD_BUSY_POLL_US: bad }),
      (err: Error & { code?: string }) => err.code === 'TG_ERR_INVALID_ARGUMENT' && err.message.includes(bad),
      bad,
    );
  for (const bad of [-1, 1.5, 10_001, Number.NaN])
    assert.throws(() => new BusyPollPolicy(bad), /out of 0\.\.10000/);
});

test('busy poll: a window grows to cover a gap within the maximum and is kept while it catches', () => {
  const p = new BusyPollPolicy(1000);
  let t = 1_000_000;
  assert.equal(p.plan(DID_SEND, t), 0, 'nothing learnt yet');
  t += 400;
  p.arrived(t);
  const w = p.window(DID_SEND);
  assert.equal(w, 520, '400 us * 1.25 + 20');
  for (let i = 0; i < 20; i++) {
    t += 200_000;
    p.arrived(t);
    assert.equal(p.plan(DID_SEND, t), w, `event ${i}: the learnt window`);
    t += 350;
    p.polled(350, true);
    p.arrived(t);
  }
  assert.equal(p.window(DID_SEND), w, 'caught gaps keep the window');
  assert.equal(p.window(DID_DELIVER), 0, 'the other trigger learnt nothing');
  // A gap a little beyond the window (within the maximum) grows it; one beyond the maximum halves it.
  p.plan(DID_SEND, t);
  t += 700;
  p.arrived(t);
  assert.equal(p.window(DID_SEND), 895);
  p.plan(DID_SEND, t);
  t += 5000;
  p.arrived(t);
  assert.equal(p.window(DID_SEND), 447);
});

test('busy poll: nothing to catch halves the window down to no polling; the triggers are separate', () => {
  const p = new BusyPollPolicy(1000);
  let t = 0;
  for (const what of [DID_SEND, DID_DELIVER]) {
    p.plan(what, t);
    t += 900;
    p.arrived(t);
  }
  assert.equal(p.window(DID_SEND), 1000, 'capped at the maximum');
  assert.equal(p.window(DID_DELIVER), 1000);
  // Deliveries answered only after 200 ms (a slow client's next request): polling after them stops.
  const windows: number[] = [];
  for (let i = 0; i < 8; i++) {
    p.plan(DID_DELIVER, t);
    t += 200_000;
    p.arrived(t);
    windows.push(p.window(DID_DELIVER));
  }
  assert.deepEqual(windows, [500, 250, 125, 62, 31, 0, 0, 0]);
  assert.equal(p.plan(DID_DELIVER, t), 0, 'no poll after a delivery');
  assert.equal(p.window(DID_SEND), 1000, 'the send window is untouched');
  assert.equal(p.plan(DID_SEND | DID_DELIVER, t), 1000, 'an event that did both polls for the longer window');
});

test('busy poll: polling never takes more than its share of wall time', () => {
  const p = new BusyPollPolicy(1000);
  let t = 0;
  p.plan(DID_SEND, t);
  t += 900;
  p.arrived(t);
  // A device that sends every 1.2 ms and polls the whole window each time (the budget's worst case).
  let polled = 0;
  const start = t;
  for (let i = 0; i < 10_000; i++) {
    const us = p.plan(DID_SEND, t);
    p.polled(us, false);
    polled += us;
    p.arrived(t + 990);
    t += 1200;
  }
  const elapsed = t - start;
  assert.ok(polled <= BUSY_POLL_SHARE * elapsed + BUSY_POLL_BURST_US, `${polled} us polled in ${elapsed} us`);
  assert.ok(polled >= 0.9 * BUSY_POLL_SHARE * elapsed, `the budget is used: ${polled} us in ${elapsed} us`);
  assert.equal(p.stats.polls, 10_000);
  assert.equal(p.stats.caught, 0);
  assert.equal(p.stats.micros, polled);
  const off = new BusyPollPolicy(0);
  off.plan(DID_SEND, 0);
  off.arrived(100);
  assert.equal(off.plan(DID_SEND, 100), 0, 'a maximum of 0 never polls');
});

test('wake placement check backoff: skips double per refusal in a row up to the maximum, an arming resets', () => {
  const w = new WakeCheckBackoff();
  // The pattern of asks (true) and skips (false) over quiet events while every check refuses.
  const pattern = (events: number, armed: (asked: number) => boolean): boolean[] => {
    const out: boolean[] = [];
    let asked = 0;
    for (let i = 0; i < events; i++) {
      const ask = w.shouldAsk();
      out.push(ask);
      if (ask) w.answered(armed(asked++));
    }
    return out;
  };
  const T = true;
  const F = false;
  assert.deepEqual(
    pattern(12, () => false),
    [T, F, T, F, F, T, F, F, F, F, T, F],
  );
  assert.equal(w.skipped, 8);
  // Refusals in a row never skip more than WAKE_BACKOFF_MAX events.
  const long = pattern(200, () => false);
  let run = 0;
  let longest = 0;
  for (const ask of long) {
    run = ask ? 0 : run + 1;
    longest = Math.max(longest, run);
  }
  assert.equal(longest, WAKE_BACKOFF_MAX);
  // Finish the current skips; an arming then keeps the check at every event.
  while (!w.shouldAsk());
  w.answered(true);
  assert.deepEqual(
    pattern(5, () => true),
    [T, T, T, T, T],
  );
  // A refusal after an arming starts the backoff from 1 again.
  assert.deepEqual(
    pattern(4, () => false),
    [T, F, T, F],
  );
});

test('busy poll: the native wait returns when a socket becomes readable, else after the window', async () => {
  const native = loadNative();
  const sock = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
  const sender = createSocket('udp4');
  try {
    let t = performance.now();
    assert.equal(native.busyWait(-1, sock.fd, 3000), 0);
    const waited = (performance.now() - t) * 1000;
    assert.ok(waited >= 3000 && waited < 200_000, `waited ${waited} us for a 3,000 us window`);
    await new Promise<void>((resolve, reject) =>
      sender.send(Buffer.from('x'), sock.localPort, '127.0.0.1', (err) => (err ? reject(err) : resolve())),
    );
    t = performance.now();
    assert.equal(native.busyWait(-1, sock.fd, 100_000), READY_SOCKET);
    assert.ok((performance.now() - t) * 1000 < 50_000, 'returned at once');
    assert.throws(() => native.busyWait(-1, sock.fd, 100_001), RangeError);
    assert.throws(() => native.busyWait('x' as unknown as number, sock.fd, 10), TypeError);
  } finally {
    sender.close();
    sock.close();
  }
});
