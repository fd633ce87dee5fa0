import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  KEEPALIVE_TIMEOUT,
  MAX_TIMER_HANDSHAKES,
  REJECT_AFTER_TIME,
  REKEY_AFTER_TIME,
  REKEY_ATTEMPT_TIME,
  REKEY_TIMEOUT,
} from '../../src/protocol/constants.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import type { EngineOptions } from '../../src/protocol/engine.js';
import {
  defaultJitter,
  NOT_PENDING,
  PeerTimers,
  TIMER_GIVE_UP_HANDSHAKE,
  TIMER_RETRANSMIT_HANDSHAKE,
  TIMER_SEND_KEEPALIVE,
  TimerWheel,
} from '../../src/protocol/timers.js';
import { ipv4Packet, Net, type Node, prefix } from '../helpers/protocol-harness.js';

interface Pair {
  net: Net;
  a: Node;
  b: Node;
  aPeer: number;
  bPeer: number;
}

function pair(options: { keepaliveA?: number; engine?: Partial<EngineOptions> } = {}): Pair {
  const net = new Net();
  const a = net.node(1, options.engine);
  const b = net.node(2, options.engine);
  const ka = generatePrivateKey();
  const kb = generatePrivateKey();
  a.engine.addIdentity(ka);
  b.engine.addIdentity(kb);
  const aPeer = a.engine.addPeer(1, {
    publicKey: publicKeyOf(kb),
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
    persistentKeepalive: options.keepaliveA ?? 0,
  });
  const bPeer = b.engine.addPeer(1, { publicKey: publicKeyOf(ka), allowedIps: [prefix('10.0.0.1/32')] });
  return { net, a, b, aPeer, bPeer };
}

const fromA = (n = 10) => ipv4Packet('10.0.0.1', '10.0.0.2', n);
const fromB = (n = 10) => ipv4Packet('10.0.0.2', '10.0.0.1', n);

function established(): Pair {
  const p = pair();
  p.a.send(1, [fromA()]);
  p.net.flush();
  assert.equal(p.b.received.length, 1);
  return p;
}

// --- pure parts --------------------------------------------------------------------------

test('retransmission jitter is uniform in [0, 333] ms', () => {
  const t = new PeerTimers(null, null);
  let min = Number.POSITIVE_INFINITY;
  let max = 0;
  for (let i = 0; i < 5000; i++) {
    t.handshakeInitiated(0);
    min = Math.min(min, t.retransmitHandshake);
    max = Math.max(max, t.retransmitHandshake);
    const j = defaultJitter();
    assert.ok(Number.isInteger(j) && j >= 0 && j <= 333);
  }
  assert.ok(min >= REKEY_TIMEOUT && min < REKEY_TIMEOUT + 20, `min ${min}`);
  assert.ok(max <= REKEY_TIMEOUT + 333 && max > REKEY_TIMEOUT + 300, `max ${max}`);
});

test('give-up rule: after MAX_TIMER_HANDSHAKES retries the retransmit timer gives up', () => {
  const t = new PeerTimers(null, null, () => 0);
  let now = 0;
  let retries = 0;
  t.handshakeInitiated(now);
  for (;;) {
    now = t.retransmitHandshake;
    const actions = t.expire(now);
    if (actions & TIMER_GIVE_UP_HANDSHAKE) break;
    assert.equal(actions, TIMER_RETRANSMIT_HANDSHAKE);
    retries++;
    t.handshakeInitiated(now);
  }
  assert.equal(retries, MAX_TIMER_HANDSHAKES + 1);
  assert.equal(t.zeroKeyMaterial, now + 3 * REJECT_AFTER_TIME);
  assert.equal(t.retransmitHandshake, NOT_PENDING);
});

test('keepalive re-arm: data received while the keepalive timer runs asks for another one', () => {
  const t = new PeerTimers(null, null);
  t.dataReceived(0);
  assert.equal(t.sendKeepalive, KEEPALIVE_TIMEOUT);
  t.dataReceived(5);
  assert.equal(t.sendKeepalive, KEEPALIVE_TIMEOUT, 'not pushed back');
  assert.equal(t.expire(KEEPALIVE_TIMEOUT), TIMER_SEND_KEEPALIVE);
  t.anyAuthenticatedPacketSent(); // the keepalive itself
  t.afterExpiredKeepalive(KEEPALIVE_TIMEOUT);
  assert.equal(t.sendKeepalive, 2 * KEEPALIVE_TIMEOUT);
});

test('timer wheel: one entry per peer, fires when due, keeps later turns, reschedules earlier', () => {
  const wheel = new TimerWheel<PeerTimers<string>>(100, 8);
  const a = new PeerTimers('a', wheel);
  const b = new PeerTimers('b', wheel);
  const out: PeerTimers<string>[] = [];
  a.persistentKeepaliveAt(250);
  b.persistentKeepaliveAt(250 + 8 * 100 * 3); // three turns later, same slot
  assert.equal(wheel.size, 2);
  assert.equal(wheel.due(200, out), 0);
  assert.equal(wheel.due(300, out), 1);
  assert.equal(out[0].owner, 'a');
  assert.equal(wheel.due(1000, out), 0);
  assert.equal(wheel.size, 1);
  // Moving b earlier refiles it.
  b.persistentKeepaliveAt(1050);
  assert.equal(wheel.size, 1);
  assert.equal(wheel.due(1100, out), 1);
  assert.equal(out[0].owner, 'b');
  // Scheduling in the past fires on the next tick; a jump over several turns fires once.
  a.persistentKeepaliveAt(10);
  assert.equal(wheel.due(1150, out), 0);
  assert.equal(wheel.due(1200, out), 1);
  a.persistentKeepaliveAt(1300);
  assert.equal(wheel.due(100_000, out), 1);
  assert.equal(wheel.size, 0);
});

// --- engine under a fake clock -----------------------------------------------------------

test('the initiator rekeys after REKEY_AFTER_TIME when sending; the responder does not', () => {
  const p = established();
  const { net, a, b, aPeer } = p;
  const t0 = a.engine.sessionInfo(aPeer).currentCreated;
  net.run(REKEY_AFTER_TIME - 1000, 500);
  a.send(1, [fromA()]);
  b.send(1, [fromB()]);
  net.flush();
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1);
  net.run(1500, 500);
  assert.ok(net.clock.now - t0 > REKEY_AFTER_TIME);
  b.send(1, [fromB()]);
  assert.equal(b.engine.counters.handshakeInitiationsSent, 0, 'the responder does not rekey on time');
  a.send(1, [fromA()]);
  assert.equal(a.engine.counters.handshakeInitiationsSent, 2);
  net.flush();
  const s = a.engine.sessionInfo(aPeer);
  assert.ok(s.currentCreated > t0, 'a new current keypair');
  assert.ok(s.hasPrevious, 'the old one is kept as previous');
  assert.equal(b.received.length, 3);
});

test('keypairs are rejected after REJECT_AFTER_TIME, sending and receiving', () => {
  const p = established();
  const { net, a, b } = p;
  net.up = false;
  net.run(REJECT_AFTER_TIME - 200, 1000);
  // B (responder) sends just before expiry; the datagram arrives just after.
  const before = net.log.length;
  b.send(1, [fromB()]);
  assert.equal(b.engine.counters.handshakeInitiationsSent, 0);
  const late = net.log.slice(before).filter((d) => d.data.readUInt32LE(0) === 4);
  assert.equal(late.length, 1);
  net.clock.advance(300);
  net.deliver(a, late);
  assert.equal(a.engine.counters.dropped.expiredKeypair, 1);
  assert.equal(a.received.length, 0);
  // Sending now needs a new handshake: the packet is staged and an initiation goes out.
  b.send(1, [fromB()]);
  assert.equal(b.engine.counters.handshakeInitiationsSent, 1);
  net.up = true;
  b.send(1, [fromB(11)]);
  net.run(REKEY_TIMEOUT + 500);
  // The retried handshake came REKEY_TIMEOUT after they were staged: both are stale by then
  // (QUEUE_STAGED_MAX_AGE), dropped and counted instead of delivered seconds late.
  assert.equal(b.engine.counters.dropped.stagedStale, 2);
  assert.equal(a.received.length, 0, 'stale staged packets were delivered');
  b.send(1, [fromB(12)]);
  net.flush();
  assert.equal(a.received.length, 1, 'a fresh packet passes on the new session');
});

test('passive keepalive after KEEPALIVE_TIMEOUT without reply data, and one more for data that came meanwhile', () => {
  const p = established();
  const { net, a, b } = p;
  // The first data packet (from the handshake) is acknowledged by a keepalive.
  net.run(KEEPALIVE_TIMEOUT + 1000);
  assert.equal(b.engine.counters.keepalivesSent, 1);
  assert.ok(a.engine.counters.keepalivesReceived >= 1);
  // One data packet: one keepalive, KEEPALIVE_TIMEOUT later.
  const sentAt = net.clock.now;
  a.send(1, [fromA()]);
  net.flush();
  net.run(KEEPALIVE_TIMEOUT - 200, 100);
  assert.equal(b.engine.counters.keepalivesSent, 1);
  net.run(400, 100);
  assert.equal(b.engine.counters.keepalivesSent, 2);
  assert.ok(net.clock.now - sentAt >= KEEPALIVE_TIMEOUT);
  net.run(3 * KEEPALIVE_TIMEOUT, 500);
  assert.equal(b.engine.counters.keepalivesSent, 2, 'nothing more while idle');
  // Data arriving while the keepalive timer runs asks for another keepalive after the first.
  a.send(1, [fromA()]);
  net.flush();
  net.run(1000);
  a.send(1, [fromA()]);
  net.flush();
  net.run(KEEPALIVE_TIMEOUT, 100);
  assert.equal(b.engine.counters.keepalivesSent, 3);
  net.run(KEEPALIVE_TIMEOUT, 100);
  assert.equal(b.engine.counters.keepalivesSent, 4);
  net.run(3 * KEEPALIVE_TIMEOUT, 500);
  assert.equal(b.engine.counters.keepalivesSent, 4);
});

test('persistent keepalive every interval while idle', () => {
  const p = pair({ keepaliveA: 25 });
  const { net, a } = p;
  // Turning it on makes one due at once: it starts the handshake.
  net.run(1000);
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1);
  assert.ok(a.engine.sessionInfo(p.aPeer).hasCurrent);
  const start = a.engine.counters.keepalivesSent;
  const times: number[] = [];
  let last = start;
  for (let i = 0; i < 1000; i++) {
    net.run(100);
    if (a.engine.counters.keepalivesSent !== last) {
      last = a.engine.counters.keepalivesSent;
      times.push(net.clock.now);
    }
  }
  assert.equal(times.length, 4);
  for (let i = 1; i < times.length; i++) {
    const gap = times[i] - times[i - 1];
    assert.ok(gap >= 25_000 && gap <= 25_200, `gap ${gap}`);
  }
});

test('handshake retries after REKEY_TIMEOUT plus jitter, then gives up', () => {
  const jitters = [0, 333, 100, 250];
  let n = 0;
  const p = pair({ engine: { jitter: () => jitters[n++ % jitters.length] } });
  const { net, a } = p;
  net.up = false;
  const times: number[] = [];
  const count = () => a.engine.counters.handshakeInitiationsSent;
  a.send(1, [fromA()]);
  times.push(net.clock.now);
  let seen = count();
  for (let i = 0; i < 2000; i++) {
    net.run(100);
    if (count() !== seen) {
      seen = count();
      times.push(net.clock.now);
    }
  }
  // 1 initiation + MAX_TIMER_HANDSHAKES + 1 retries, then nothing.
  assert.equal(times.length, MAX_TIMER_HANDSHAKES + 2);
  const gaps = times.slice(1).map((t, i) => t - times[i]);
  for (const gap of gaps) assert.ok(gap >= REKEY_TIMEOUT && gap <= REKEY_TIMEOUT + 333 + 200, `gap ${gap}`);
  assert.ok(
    gaps.some((g) => g >= REKEY_TIMEOUT + 333),
    'jitter applied',
  );
  assert.ok(times.at(-1)! - times[0] >= REKEY_ATTEMPT_TIME);
  assert.equal(a.engine.counters.dropped.stagedFlushed, 1, 'the staged packet is dropped on giving up');
  // A new packet starts over.
  a.send(1, [fromA()]);
  assert.equal(count(), seen + 1);
});

test('keys are zeroed after 3 * REJECT_AFTER_TIME without a new handshake', () => {
  const p = established();
  const { net, a, b, aPeer, bPeer } = p;
  net.run(3 * REJECT_AFTER_TIME - 2000, 500);
  assert.ok(a.engine.sessionInfo(aPeer).hasCurrent);
  assert.ok(a.engine.indexCount > 0);
  net.run(3000, 500);
  for (const [e, id] of [
    [a.engine, aPeer],
    [b.engine, bPeer],
  ] as const) {
    const s = e.sessionInfo(id);
    assert.ok(!s.hasCurrent && !s.hasPrevious && !s.hasNext);
    assert.equal(e.indexCount, 0);
  }
});
