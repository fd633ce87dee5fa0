// Handshakes under attack (whitepaper section 5.3): the per-address token buckets, the
// handshake queue, and the engine under a flood of initiations with a valid MAC1, two or three
// engines on the in-memory network with a fake clock.
import assert from 'node:assert/strict';
import { randomBytes, randomFillSync } from 'node:crypto';
import { test } from 'node:test';
import { ENDPOINT_SIZE, makeEndpoint } from '../../src/net/endpoint.js';
import {
  MESSAGE_COOKIE_REPLY_TYPE,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_INITIATION_TYPE,
  MESSAGE_RESPONSE_TYPE,
} from '../../src/protocol/constants.js';
import { cookieKeyFor, mac1KeyFor } from '../../src/protocol/cookie.js';
import { generatePrivateKey, mac, publicKeyOf, xaeadOpen } from '../../src/protocol/crypto.js';
import { HandshakeRing } from '../../src/protocol/handshakequeue.js';
import {
  COOKIE_REPLY_OFFSET_COOKIE,
  COOKIE_REPLY_OFFSET_NONCE,
  COOKIE_REPLY_OFFSET_RECEIVER,
  INITIATION_OFFSET_EPHEMERAL,
  INITIATION_OFFSET_MAC1,
  INITIATION_OFFSET_MAC2,
  INITIATION_OFFSET_SENDER,
} from '../../src/protocol/messages.js';
import { RateLimiter } from '../../src/protocol/ratelimiter.js';
import {
  COOKIE_REPLY_BURST,
  HANDSHAKE_DH_COST,
  HANDSHAKE_QUEUE_SIZE,
  HANDSHAKE_WORK_PER_CALL,
  RATELIMIT_BURST,
} from '../../src/protocol/tuning.js';
import { datagramSlab, ipv4Packet, Net, type Node, prefix, v4 } from '../helpers/protocol-harness.js';

// --- Token buckets ------------------------------------------------------------------------

const BUCKET_CASES: {
  name: string;
  perSecond: number;
  burst: number;
  /** [time ms, expected allow()] for one address, in order. */
  events: [number, boolean][];
}[] = [
  {
    name: 'a burst, then nothing until a token refills',
    perSecond: 20,
    burst: 5,
    events: [
      [0, true],
      [0, true],
      [0, true],
      [0, true],
      [0, true],
      [0, false],
      [49, false],
      [50, true],
      [50, false],
    ],
  },
  {
    name: 'a steady rate at the limit passes',
    perSecond: 10,
    burst: 1,
    events: [
      [0, true],
      [100, true],
      [200, true],
      [250, false],
      [300, true],
    ],
  },
  {
    name: 'idle time refills to the burst, never beyond',
    perSecond: 10,
    burst: 2,
    events: [
      [0, true],
      [0, true],
      [0, false],
      [10_000, true],
      [10_000, true],
      [10_000, false],
    ],
  },
  {
    name: 'a clock going backwards grants nothing',
    perSecond: 10,
    burst: 1,
    events: [
      [1000, true],
      [500, false],
      [1000, false],
      [1099, false],
      [1100, true],
    ],
  },
];

for (const c of BUCKET_CASES) {
  test(`rate limiter: ${c.name}`, () => {
    const rl = new RateLimiter({ perSecond: c.perSecond, burst: c.burst });
    c.events.forEach(([t, expected], i) => {
      assert.equal(rl.allow('a', t), expected, `event ${i} at ${t} ms`);
    });
  });
}

test('rate limiter: addresses are independent, the table is bounded and collected', () => {
  const rl = new RateLimiter({ perSecond: 1, burst: 1, maxEntries: 3, gcTime: 1000 });
  assert.equal(rl.allow('a', 0), true);
  assert.equal(rl.allow('a', 0), false);
  assert.equal(rl.allow('b', 0), true, 'a spent bucket does not touch another address');
  assert.equal(rl.allow('c', 0), true);
  assert.equal(rl.allow('d', 0), false, 'a full table refuses new addresses');
  assert.equal(rl.size, 3);
  rl.collect(500);
  assert.equal(rl.size, 3, 'entries younger than the GC time stay');
  rl.collect(1001);
  assert.equal(rl.size, 0);
  assert.equal(rl.allow('d', 1001), true);
});

// --- The queue ----------------------------------------------------------------------------

test('handshake ring: first in, first out, bounded, wraps around', () => {
  const ring = new HandshakeRing(3);
  const eps = Buffer.alloc(ENDPOINT_SIZE);
  const msg = (n: number) => Buffer.alloc(92, n);
  for (let round = 0; round < 3; round++) {
    assert.equal(ring.push(msg(1), 0, 92, eps, 0, false), true);
    assert.equal(ring.push(msg(2), 0, 92, eps, 0, true), true);
    assert.equal(ring.push(msg(3), 0, 92, eps, 0, false), true);
    assert.equal(ring.push(msg(4), 0, 92, eps, 0, false), false, 'a full ring refuses');
    assert.equal(ring.length, 3);
    for (const [n, charged] of [
      [1, false],
      [2, true],
      [3, false],
    ] as const) {
      const slot = ring.shift();
      assert.equal(ring.buf[ring.offsetOf(slot)], n);
      assert.equal(ring.lengthOf(slot), 92);
      assert.equal(ring.wasCharged(slot), charged);
    }
    assert.equal(ring.shift(), -1);
    assert.equal(ring.push(msg(9), 0, 92, eps, 0, false), true);
    ring.shift();
  }
  assert.equal(
    ring.push(Buffer.alloc(200), 0, 200, eps, 0, false),
    false,
    'longer than any handshake message',
  );
});

// --- The engine under a flood --------------------------------------------------------------

interface Trio {
  net: Net;
  /** The responder under attack. */
  b: Node;
  /** An honest initiator (10.0.0.1 -> 10.0.0.2). */
  a: Node;
  aId: number;
  bPublic: Buffer;
}

function trio(): Trio {
  const net = new Net();
  const a = net.node(51820);
  const b = net.node(51821);
  const aKey = generatePrivateKey();
  const bKey = generatePrivateKey();
  const aId = a.engine.addIdentity(aKey);
  const bId = b.engine.addIdentity(bKey);
  a.engine.addPeer(aId, {
    publicKey: publicKeyOf(bKey),
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
  });
  b.engine.addPeer(bId, { publicKey: publicKeyOf(aKey), allowedIps: [prefix('10.0.0.1/32')] });
  return { net, a, b, aId, bPublic: publicKeyOf(bKey) };
}

/** An initiation with random fields and sender index, a valid MAC1 for `responder`, MAC2 zero. */
function floodInitiation(responder: Buffer): Buffer {
  const m = Buffer.alloc(MESSAGE_INITIATION_SIZE);
  randomFillSync(m, INITIATION_OFFSET_EPHEMERAL, INITIATION_OFFSET_MAC1 - INITIATION_OFFSET_EPHEMERAL);
  m.writeUInt32LE(MESSAGE_INITIATION_TYPE, 0);
  m.writeUInt32LE(randomBytes(4).readUInt32LE(0), INITIATION_OFFSET_SENDER);
  m.set(mac(mac1KeyFor(responder), m.subarray(0, INITIATION_OFFSET_MAC1)), INITIATION_OFFSET_MAC1);
  return m;
}

function addressN(n: number): Buffer {
  return makeEndpoint(v4(`10.${(n >> 16) & 255}.${(n >> 8) & 255}.${n & 255}`), 40000);
}

function typesOf(out: { buf: Buffer; offsets: Uint32Array; count: number }): number[] {
  const types: number[] = [];
  for (let i = 0; i < out.count; i++) types.push(out.buf.readUInt32LE(out.offsets[i]));
  return types;
}

test('a 20 s flood of 3,000 valid-MAC1 initiations a second from one spoofed address does not delay a new session', () => {
  const { net, a, b, aId, bPublic } = trio();
  const spoofed = makeEndpoint(v4('198.18.9.9'), 51820);
  let cookieRepliesToSpoofed = 0;
  const countSpoofed = () => {
    for (const d of net.queue.splice(0)) {
      if (d.to.equals(spoofed)) {
        if (d.data.readUInt32LE(0) === MESSAGE_COOKIE_REPLY_TYPE) cookieRepliesToSpoofed++;
      } else net.queue.push(d);
    }
  };
  let delay = Number.NaN;
  // 10 ms steps, 30 initiations each; A starts its session 5 s in.
  for (let step = 0; step < 2000; step++) {
    net.clock.advance(10);
    net.deliver(
      b,
      Array.from({ length: 30 }, () => ({ data: floodInitiation(bPublic), from: spoofed })),
    );
    countSpoofed();
    if (step === 500) a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20, 0x42)]);
    if (step >= 500 && Number.isNaN(delay)) {
      net.flush();
      countSpoofed();
      if (b.received.length === 1) delay = (step - 500) * 10;
    }
    if (step % 10 === 0) {
      a.tick();
      b.tick();
    }
  }
  const c = b.engine.counters;
  assert.ok(delay <= 20, `first packet after ${delay} ms of flood time`);
  assert.equal(a.engine.counters.cookieRetries, 1, 'the initiator resent with MAC2 at once');
  // 10 cookie replies a second to the spoofed address at most (burst 10), not one per initiation.
  assert.ok(
    cookieRepliesToSpoofed <= COOKIE_REPLY_BURST + 10 * 20,
    `${cookieRepliesToSpoofed} to the spoofed source`,
  );
  assert.ok(c.dropped.cookieRateLimited >= 59_000, `cookieRateLimited ${c.dropped.cookieRateLimited}`);
  assert.equal(c.dropped.handshakeQueueFull, 0, 'one address never fills the queue');
  assert.equal(c.handshakeResponsesSent, 1, 'no Diffie-Hellman work for the flood');
  assert.equal(c.handshakesPrioritised, 1);
  assert.ok(b.engine.isUnderLoad(net.clock.now));
});

test('an initiation with a valid MAC2 is worked before a full queue, in the first slice', () => {
  const { net, a, b, aId, bPublic } = trio();
  b.engine.setUnderLoad(true, net.clock.now);
  // A's first initiation is answered with a cookie reply; hold A's resend with MAC2.
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.deliver(b, net.queue.splice(0));
  net.deliver(a, net.queue.splice(0));
  const resend = net.queue.splice(0);
  assert.equal(resend.length, 1);
  assert.equal(resend[0].data.readUInt32LE(0), MESSAGE_INITIATION_TYPE);
  assert.notEqual(resend[0].data.subarray(INITIATION_OFFSET_MAC2).toString('hex'), '0'.repeat(32));
  // 1,500 flood initiations from 1,500 addresses (each has cookie replies left), then A's.
  const items = Array.from({ length: 1500 }, (_, i) => ({
    data: floodInitiation(bPublic),
    from: addressN(i + 1),
  }));
  items.push(...resend);
  const r = b.engine.inbound(datagramSlab(items), net.clock.now);
  const c = b.engine.counters;
  // Under load, inbound() leaves handshake work to the slices; what meets the full queue is
  // answered with a cookie reply on arrival (no Diffie-Hellman work).
  assert.equal(c.dropped.handshakeQueueFull, 1500 - HANDSHAKE_QUEUE_SIZE);
  assert.equal(c.cookieRepliesOnArrival, 1500 - HANDSHAKE_QUEUE_SIZE);
  assert.deepEqual(new Set(typesOf(r.control)), new Set([MESSAGE_COOKIE_REPLY_TYPE]));
  assert.equal(r.control.count, 1500 - HANDSHAKE_QUEUE_SIZE);
  assert.equal(b.engine.pendingHandshakes, HANDSHAKE_QUEUE_SIZE + 1);
  const first = b.engine.handshakes(net.clock.now);
  assert.equal(typesOf(first)[0], MESSAGE_RESPONSE_TYPE, 'the response comes first');
  assert.equal(c.handshakeResponsesSent, 1);
  // The rest of the slice went to cookie replies; the queue is worked off slice by slice.
  const slice = HANDSHAKE_WORK_PER_CALL - HANDSHAKE_DH_COST;
  assert.equal(first.count, 1 + slice);
  assert.equal(b.engine.pendingHandshakes, HANDSHAKE_QUEUE_SIZE - slice);
  let turns = 0;
  while (b.engine.pendingHandshakes > 0) {
    const out = b.engine.handshakes(net.clock.now);
    assert.ok(out.count <= HANDSHAKE_WORK_PER_CALL);
    turns++;
  }
  assert.equal(turns, Math.ceil((HANDSHAKE_QUEUE_SIZE - slice) / HANDSHAKE_WORK_PER_CALL));
  assert.equal(c.cookieRepliesSent, 1 + 1500, "A's first initiation and every flood one");
});

test('an initiation that meets a full queue gets its cookie reply on arrival; the resend is answered in the first slice', () => {
  const { net, a, b, aId, bPublic } = trio();
  // 1,500 flood initiations from 1,500 addresses fill the queue; then A's first initiation.
  const flood = Array.from({ length: 1500 }, (_, i) => ({
    data: floodInitiation(bPublic),
    from: addressN(i + 1),
  }));
  b.engine.inbound(datagramSlab(flood), net.clock.now);
  assert.ok(b.engine.isUnderLoad(net.clock.now), 'a full queue puts the engine under load');
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  const firstTry = net.queue.splice(0);
  assert.equal(firstTry.length, 1);
  const r = b.engine.inbound(datagramSlab(firstTry), net.clock.now);
  assert.deepEqual(
    typesOf(r.control),
    [MESSAGE_COOKIE_REPLY_TYPE],
    "A's initiation is answered at once, not dropped",
  );
  net.collect(b, r.control);
  net.deliver(a, net.queue.splice(0));
  assert.equal(a.engine.counters.cookieRetries, 1, 'A resends with MAC2 at once, not after REKEY_TIMEOUT');
  const resend = net.queue.splice(0);
  assert.equal(resend.length, 1);
  b.engine.inbound(datagramSlab(resend), net.clock.now);
  const first = b.engine.handshakes(net.clock.now);
  assert.equal(typesOf(first)[0], MESSAGE_RESPONSE_TYPE, 'the resend goes ahead of the flood');
  assert.equal(b.engine.counters.dropped.badHandshake + b.engine.counters.dropped.unknownPeer, 0);
});

test('transport packets in a batch full of handshake messages are decrypted in the same call', () => {
  const { net, a, b, aId, bPublic } = trio();
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.flush();
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 30, 1), ipv4Packet('10.0.0.1', '10.0.0.2', 30, 2)]);
  const data = net.queue.splice(0);
  assert.equal(data.length, 2);
  const items = Array.from({ length: 300 }, (_, i) => ({
    data: floodInitiation(bPublic),
    from: addressN(i + 1),
  }));
  items.splice(150, 0, data[0]);
  items.push(data[1]);
  const r = b.engine.inbound(datagramSlab(items), net.clock.now);
  assert.equal(r.tun.count, 2);
  assert.ok(b.engine.pendingHandshakes > 0, 'handshake work is left for later turns');
});

test('MAC2-valid initiations are rate-limited per address; another address still gets through', () => {
  const { net, a, b, aId, bPublic } = trio();
  const attacker = makeEndpoint(v4('10.9.9.9'), 7777);
  b.engine.setUnderLoad(true, net.clock.now);
  // An attacker that does receive at its address gets a cookie and can compute MAC2.
  const first = floodInitiation(bPublic);
  b.engine.inbound(datagramSlab([{ data: first, from: attacker }]), net.clock.now);
  const r = { control: b.engine.handshakes(net.clock.now) };
  assert.deepEqual(typesOf(r.control), [MESSAGE_COOKIE_REPLY_TYPE]);
  const reply = Buffer.from(r.control.buf.subarray(r.control.offsets[0], r.control.offsets[0] + 64));
  assert.equal(
    reply.readUInt32LE(COOKIE_REPLY_OFFSET_RECEIVER),
    first.readUInt32LE(INITIATION_OFFSET_SENDER),
  );
  const cookie = xaeadOpen(
    cookieKeyFor(bPublic),
    reply.subarray(COOKIE_REPLY_OFFSET_NONCE, COOKIE_REPLY_OFFSET_COOKIE),
    reply.subarray(COOKIE_REPLY_OFFSET_COOKIE),
    first.subarray(INITIATION_OFFSET_MAC1, INITIATION_OFFSET_MAC2),
  );
  assert.ok(cookie);
  const items = Array.from({ length: 50 }, () => {
    const m = floodInitiation(bPublic);
    m.set(mac(cookie, m.subarray(0, INITIATION_OFFSET_MAC2)), INITIATION_OFFSET_MAC2);
    return { data: m, from: attacker };
  });
  net.deliver(b, items);
  const c = b.engine.counters;
  assert.equal(c.handshakesPrioritised, 50);
  assert.equal(c.dropped.rateLimited, 50 - RATELIMIT_BURST);
  assert.equal(c.dropped.badHandshake, RATELIMIT_BURST, 'random fields: DH work, then refused');
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.flush();
  assert.equal(b.received.length, 1);
});

test('a cookie reply makes the initiator resend once; a replayed reply does not', () => {
  const { net, a, b, aId } = trio();
  b.engine.setUnderLoad(true, net.clock.now);
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.deliver(b, net.queue.splice(0));
  const reply = net.queue.splice(0);
  assert.equal(reply[0].data.readUInt32LE(0), MESSAGE_COOKIE_REPLY_TYPE);
  net.deliver(a, reply);
  net.deliver(a, reply);
  const sent = net.queue.splice(0);
  assert.equal(sent.length, 1, 'one resend');
  assert.equal(a.engine.counters.cookieRetries, 1);
  // The replay names the index the resend retired (and would not open with the new MAC1).
  assert.equal(a.engine.counters.dropped.unknownIndex, 1);
  // The responder still under load answers the resend, and the session starts.
  net.deliver(b, sent);
  net.flush();
  assert.equal(b.received.length, 1);
});

test('an initiator under load admits the response to its own initiation without MAC2', () => {
  const { net, a, b, aId } = trio();
  a.engine.setUnderLoad(true, net.clock.now);
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.flush();
  assert.equal(b.received.length, 1);
  assert.equal(a.engine.counters.handshakesPrioritised, 1);
  assert.equal(a.engine.counters.cookieRepliesSent, 0);
  assert.equal(b.engine.counters.cookieRepliesConsumed, 0);
});

test('handshake work per call: cost of a DH message against a cookie reply (diagnostic)', (t) => {
  const { net, b, bPublic } = trio();
  const items = Array.from({ length: 64 }, (_, i) => ({
    data: floodInitiation(bPublic),
    from: addressN(i + 1),
  }));
  let t0 = performance.now();
  net.deliver(b, items);
  const dh = (performance.now() - t0) / items.length;
  assert.equal(b.engine.counters.dropped.badHandshake, 64);
  b.engine.setUnderLoad(true, net.clock.now);
  const more = Array.from({ length: 256 }, (_, i) => ({
    data: floodInitiation(bPublic),
    from: addressN(i + 100),
  }));
  t0 = performance.now();
  net.deliver(b, more);
  const cookie = (performance.now() - t0) / more.length;
  assert.equal(b.engine.counters.cookieRepliesSent, 256);
  t.diagnostic(
    `per message: DH path ${(dh * 1000).toFixed(0)} us, cookie reply ${(cookie * 1000).toFixed(0)} us ` +
      `(ratio ${(dh / cookie).toFixed(1)}, HANDSHAKE_DH_COST ${HANDSHAKE_DH_COST}; noisy shared machine)`,
  );
});

test("a flood at one identity puts the whole engine under load; another identity's new session still starts at once", () => {
  // The NIC: one engine, an on-host identity (isolated peers) and a tenant identity.
  const net = new Net();
  const nicNode = net.node(51820);
  const vswitch = net.node(51821);
  const onHostKey = generatePrivateKey();
  const tenantKey = generatePrivateKey();
  const vsKey = generatePrivateKey();
  const onHost = nicNode.engine.addIdentity(onHostKey, { isolatedPeers: true });
  nicNode.engine.addIdentity(tenantKey);
  nicNode.engine.addPeer(onHost, { publicKey: publicKeyOf(vsKey), allowedIps: [prefix('10.0.0.1/32')] });
  const vsId = vswitch.engine.addIdentity(vsKey);
  vswitch.engine.addPeer(vsId, {
    publicKey: publicKeyOf(onHostKey),
    endpoint: nicNode.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
  });
  const spoofed = makeEndpoint(v4('198.18.0.99'), 51820);
  net.deliver(
    nicNode,
    Array.from({ length: 400 }, () => ({ data: floodInitiation(publicKeyOf(tenantKey)), from: spoofed })),
  );
  net.queue.splice(0);
  assert.ok(nicNode.engine.isUnderLoad(net.clock.now));
  vswitch.send(vsId, [ipv4Packet('10.0.0.1', '10.0.0.2', 20)]);
  net.flush();
  assert.equal(nicNode.received.length, 1);
  assert.equal(vswitch.engine.counters.cookieRetries, 1);
  assert.equal(nicNode.engine.counters.handshakeResponsesSent, 1);
});
