import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { ENDPOINT_SIZE, makeEndpoint } from '../../src/net/endpoint.js';
import type { DropCounters } from '../../src/protocol/counters.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { datagramSlab, ipv4Packet, Net, packetSlab, prefix, v4 } from '../helpers/protocol-harness.js';

function setup() {
  const net = new Net();
  const a = net.node(1);
  const b = net.node(2);
  const ka = generatePrivateKey();
  const kb = generatePrivateKey();
  a.engine.addIdentity(ka);
  b.engine.addIdentity(kb);
  a.engine.addIdentity(generatePrivateKey());
  a.engine.addPeer(1, {
    publicKey: publicKeyOf(kb),
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
  });
  const bPeer = b.engine.addPeer(1, { publicKey: publicKeyOf(ka), allowedIps: [prefix('10.0.0.1/32')] });
  a.send(1, [ipv4Packet('10.0.0.1', '10.0.0.2', 64)]);
  net.flush();
  assert.equal(b.received.length, 1);
  return { net, a, b, bPeer };
}

const attacker = makeEndpoint(v4('127.6.6.6'), 6666);

function sum(d: DropCounters): number {
  return Object.values(d).reduce((n, v) => n + v, 0);
}

/** After the attack the session still carries data both ways. */
function stillWorks(s: ReturnType<typeof setup>): void {
  const { net, a, b } = s;
  const ra = a.received.length;
  const rb = b.received.length;
  a.send(1, [ipv4Packet('10.0.0.1', '10.0.0.2', 33, 0x5a)]);
  b.send(1, [ipv4Packet('10.0.0.2', '10.0.0.1', 44, 0x5b)]);
  net.flush();
  assert.equal(b.received.length, rb + 1);
  assert.equal(a.received.length, ra + 1);
  assert.equal(b.received.at(-1)?.packet.at(-1), 0x5a);
  assert.equal(a.received.at(-1)?.packet.at(-1), 0x5b);
}

test('random datagrams of every size and type are counted drops, nothing thrown', () => {
  const s = setup();
  const { net, b } = s;
  const before = sum(b.engine.counters.dropped);
  const items: { data: Buffer; from: Buffer }[] = [];
  for (let i = 0; i < 6000; i++) {
    const len = i % 3 === 0 ? i % 200 : [148, 92, 64, 32, 48, 1500][i % 6];
    const data = randomBytes(len);
    // Most with a plausible type field, some with random types.
    if (len >= 4 && i % 5 !== 0) data.writeUInt32LE(1 + (i % 4), 0);
    items.push({ data, from: attacker });
  }
  for (let i = 0; i < items.length; i += 500) net.deliver(b, items.slice(i, i + 500));
  const d = b.engine.counters.dropped;
  assert.equal(sum(d) - before, items.length, 'every datagram is a counted drop');
  assert.equal(d.internal, 0);
  assert.ok(d.malformed > 0 && d.unknownType > 0 && d.badMac1 > 0 && d.unknownIndex > 0);
  assert.equal(b.received.length, 1);
  stillWorks(s);
});

test('truncated, oversized and bad-offset batches are counted drops', () => {
  const s = setup();
  const { net, a, b } = s;
  // Truncated copies of a real transport message and of a real initiation.
  const real = net.log.find((d) => d.data.readUInt32LE(0) === 4)!.data;
  const init = net.log.find((d) => d.data.readUInt32LE(0) === 1)!.data;
  const items: { data: Buffer; from: Buffer }[] = [];
  for (let n = 0; n < real.length; n++) items.push({ data: real.subarray(0, n), from: attacker });
  for (let n = 0; n < init.length; n++) items.push({ data: init.subarray(0, n), from: attacker });
  items.push({ data: Buffer.concat([init, Buffer.alloc(1)]), from: attacker });
  const before = sum(b.engine.counters.dropped);
  net.deliver(b, items);
  assert.equal(sum(b.engine.counters.dropped) - before, items.length);
  // A batch whose lengths point past the slab, a count larger than its arrays, a bad endpoint array.
  const batch = datagramSlab([{ data: real, from: attacker }]);
  batch.lengths[0] = batch.buf.length + 100;
  b.engine.inbound(batch, net.clock.now);
  const huge = datagramSlab([{ data: Buffer.alloc(70_000), from: attacker }]);
  b.engine.inbound(huge, net.clock.now);
  assert.equal(b.engine.counters.dropped.oversized, 1);
  b.engine.inbound({ ...datagramSlab([{ data: real, from: attacker }]), count: 5 }, net.clock.now);
  b.engine.inbound(
    { ...datagramSlab([{ data: real, from: attacker }]), endpoints: Buffer.alloc(3) },
    net.clock.now,
  );
  // Outbound: no headroom, no tailroom, zero length, garbage IP version, huge packet.
  const p = ipv4Packet('10.0.0.1', '10.0.0.2', 10);
  const noHead = {
    buf: Buffer.from(p),
    offsets: Uint32Array.of(0),
    lengths: Uint32Array.of(p.length),
    count: 1,
  };
  const noTail = Buffer.alloc(16 + p.length);
  p.copy(noTail, 16);
  const noTailBatch = {
    buf: noTail,
    offsets: Uint32Array.of(16),
    lengths: Uint32Array.of(p.length),
    count: 1,
  };
  const garbage = packetSlab([Buffer.from([0x00, 1, 2, 3]), Buffer.alloc(0), Buffer.from([0x45, 0, 0])]);
  const beforeA = { ...a.engine.counters.dropped };
  a.engine.outbound(1, noHead, net.clock.now);
  a.engine.outbound(1, noTailBatch, net.clock.now);
  a.engine.outbound(1, garbage, net.clock.now);
  a.engine.outbound(1, { ...garbage, count: 10 }, net.clock.now);
  a.engine.outbound(99, garbage, net.clock.now);
  const da = a.engine.counters.dropped;
  assert.equal(da.malformed - beforeA.malformed, 1 + 3 + 3 + 7);
  assert.equal(da.noRoom - beforeA.noRoom, 1);
  assert.equal(da.noRoute - beforeA.noRoute, 3);
  assert.equal(da.internal, 0);
  assert.equal(b.engine.counters.dropped.internal, 0);
  stillWorks(s);
});

test('initiations with a wrong MAC1 are dropped before any expensive work', () => {
  const s = setup();
  const { net, b } = s;
  const init = net.log.find((d) => d.data.readUInt32LE(0) === 1)!.data;
  const items = [];
  for (let i = 0; i < 2000; i++) {
    const m = Buffer.from(init);
    m[8 + (i % 108)] ^= 1 << (i % 8);
    items.push({ data: m, from: attacker });
  }
  const t = performance.now();
  net.deliver(b, items);
  const perMessage = (performance.now() - t) / items.length;
  // Once the engine is under load (the queue reached UNDER_LOAD_QUEUE_DEPTH), the source has
  // spent its cookie-reply allowance and the rest is dropped on arrival, before the MAC1 scan.
  const d = b.engine.counters.dropped;
  assert.equal(d.badMac1 + d.cookieRateLimited, 2000);
  assert.ok(d.badMac1 >= 128, `badMac1 ${d.badMac1}`);
  assert.equal(b.engine.counters.cookieRepliesSent, 0);
  assert.equal(b.engine.counters.handshakeResponsesSent, 1);
  assert.ok(perMessage < 1, `${perMessage} ms per bad-MAC1 initiation`);
  stillWorks(s);
});

test('replayed handshake messages and replayed, tampered transport packets are counted drops', () => {
  const s = setup();
  const { net, a, b } = s;
  // Capture a fresh run of transport messages from A.
  const start = net.log.length;
  const packets = Array.from({ length: 50 }, (_, i) => ipv4Packet('10.0.0.1', '10.0.0.2', 20 + i, i));
  a.send(1, packets);
  net.flush();
  const captured = net.log
    .slice(start)
    .filter((d) => d.data.readUInt32LE(0) === 4 && d.from.equals(a.source));
  assert.equal(captured.length, 50);
  const received = b.received.length;
  // Replays: 40 rounds of the whole capture.
  for (let round = 0; round < 40; round++)
    net.deliver(
      b,
      captured.map((d) => ({ data: d.data, from: attacker })),
    );
  assert.equal(b.engine.counters.dropped.replay, 2000);
  // Tampering: every byte position of counter, ciphertext and tag of every captured message.
  let tampered = 0;
  for (const d of captured) {
    const batch = [];
    for (let pos = 8; pos < d.data.length; pos++) {
      const m = Buffer.from(d.data);
      m[pos] ^= 1 << (pos % 8);
      batch.push({ data: m, from: attacker });
    }
    net.deliver(b, batch);
    tampered += batch.length;
  }
  assert.ok(tampered > 4000);
  const db = b.engine.counters.dropped;
  assert.equal(db.badAuth + db.counterLimit, tampered);
  assert.equal(b.received.length, received, 'nothing replayed or tampered reached the TUN');
  // The endpoint did not move to the attacker.
  const ep = b.engine.peerInfo(s.bPeer).endpoint!;
  assert.ok(ep.equals(a.source));
  // A replayed initiation and response.
  const init = net.log.find((d) => d.data.readUInt32LE(0) === 1)!.data;
  const resp = net.log.find((d) => d.data.readUInt32LE(0) === 2)!.data;
  net.deliver(b, [{ data: init, from: attacker }]);
  net.deliver(a, [{ data: resp, from: attacker }]);
  assert.equal(db.handshakeReplay, 1);
  assert.ok(a.engine.counters.dropped.unknownIndex >= 1);
  assert.equal(db.internal + a.engine.counters.dropped.internal, 0);
  stillWorks(s);
});

test('random transport messages under a live receiver index fail authentication', () => {
  const s = setup();
  const { net, b } = s;
  const real = net.log.find((d) => d.data.readUInt32LE(0) === 4)!.data;
  const index = real.readUInt32LE(4);
  const items = [];
  for (let i = 0; i < 3000; i++) {
    const m = randomBytes(32 + (i % 100));
    m.writeUInt32LE(4, 0);
    m.writeUInt32LE(index, 4);
    m.writeUInt32LE(0, 12);
    items.push({ data: m, from: attacker });
  }
  for (let i = 0; i < items.length; i += 1000) net.deliver(b, items.slice(i, i + 1000));
  assert.equal(b.engine.counters.dropped.badAuth, 3000);
  stillWorks(s);
});

test('batch shape: endpoints are ENDPOINT_SIZE-byte records in order', () => {
  const batch = datagramSlab([
    { data: Buffer.alloc(1), from: makeEndpoint(v4('1.2.3.4'), 5) },
    { data: Buffer.alloc(1), from: makeEndpoint(v4('6.7.8.9'), 10) },
  ]);
  assert.equal(batch.endpoints.length, 2 * ENDPOINT_SIZE);
  assert.deepEqual(
    [...batch.endpoints.subarray(ENDPOINT_SIZE, ENDPOINT_SIZE + 8)],
    [4, 0, 0, 10, 6, 7, 8, 9],
  );
});
