import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeEndpoint,
  ENDPOINT_HAS_SOURCE,
  ENDPOINT_OFFSET_FLAGS,
  ENDPOINT_OFFSET_SOURCE,
  ENDPOINT_SIZE,
  endpointSource,
  makeEndpoint,
} from '../../src/net/endpoint.js';
import { REKEY_AFTER_TIME, REKEY_TIMEOUT } from '../../src/protocol/constants.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { QUEUE_STAGED_MAX_AGE } from '../../src/protocol/tuning.js';
import {
  ipv4Packet,
  ipv6Packet,
  Net,
  type Net as NetT,
  type Node,
  prefix,
  v4,
} from '../helpers/protocol-harness.js';

interface Pair {
  net: NetT;
  a: Node;
  b: Node;
  aId: number;
  bId: number;
  /** A's peer entry for B, B's peer entry for A. */
  aPeer: number;
  bPeer: number;
}

/** A (10.0.0.1, fd00::1) and B (10.0.0.2, fd00::2); A knows B's endpoint, B learns A's. */
function pair(
  options: { pskA?: Buffer; pskB?: Buffer; bIdentitiesBefore?: number; bIdentitiesAfter?: number } = {},
): Pair {
  const net = new Net();
  const a = net.node(51820);
  const b = net.node(51821);
  const aKey = generatePrivateKey();
  const bKey = generatePrivateKey();
  const aId = a.engine.addIdentity(aKey);
  for (let i = 0; i < (options.bIdentitiesBefore ?? 0); i++) b.engine.addIdentity(generatePrivateKey());
  const bId = b.engine.addIdentity(bKey);
  for (let i = 0; i < (options.bIdentitiesAfter ?? 0); i++) b.engine.addIdentity(generatePrivateKey());
  const aPeer = a.engine.addPeer(aId, {
    publicKey: publicKeyOf(bKey),
    presharedKey: options.pskA ?? null,
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32'), prefix('fd00::2/128')],
  });
  const bPeer = b.engine.addPeer(bId, {
    publicKey: publicKeyOf(aKey),
    presharedKey: options.pskB ?? null,
    allowedIps: [prefix('10.0.0.1/32'), prefix('fd00::1/128')],
  });
  return { net, a, b, aId, bId, aPeer, bPeer };
}

function handshakeAndData(p: Pair): void {
  const { net, a, b, aId, bId, aPeer, bPeer } = p;
  const first = ipv4Packet('10.0.0.1', '10.0.0.2', 100, 0x11);
  a.send(aId, [first]);
  // The packet is staged and an initiation goes out.
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1);
  assert.equal(net.queue.length, 1);
  // Deliver the initiation only: B answers and holds the new keypair in "next".
  net.deliver(b, net.queue.splice(0));
  assert.equal(b.engine.counters.handshakeResponsesSent, 1);
  let sb = b.engine.sessionInfo(bPeer);
  assert.equal(sb.hasNext, true);
  assert.equal(sb.hasCurrent, false);
  // B cannot send to A yet: no confirmed keypair, so its packet is staged.
  // Deliver the response: A derives its keypair as current and sends the staged packet.
  net.deliver(a, net.queue.splice(0));
  const sa = a.engine.sessionInfo(aPeer);
  assert.equal(sa.hasCurrent, true);
  assert.equal(sa.currentIsInitiator, true);
  assert.equal(a.engine.counters.handshakesCompleted, 1);
  assert.equal(net.queue.length, 1, 'the staged packet replaces the keepalive');
  // B receives the first data: "next" is confirmed and becomes current.
  net.deliver(b, net.queue.splice(0));
  sb = b.engine.sessionInfo(bPeer);
  assert.equal(sb.hasNext, false);
  assert.equal(sb.hasCurrent, true);
  assert.equal(sb.currentIsInitiator, false);
  assert.equal(b.received.length, 1);
  assert.deepEqual(b.received[0].packet, first);
  assert.equal(b.received[0].peerId, bPeer);
  // B learned A's endpoint from the initiation.
  assert.equal(decodeEndpoint(b.engine.peerInfo(bPeer).endpoint ?? Buffer.alloc(20)), '127.0.0.1:51820');
  // Both directions, IPv4 and IPv6, several packets in one batch.
  const fromB = [ipv4Packet('10.0.0.2', '10.0.0.1', 1200, 0x22), ipv6Packet('fd00::2', 'fd00::1', 7, 0x23)];
  b.send(bId, fromB);
  net.flush();
  assert.deepEqual(
    a.received.map((d) => d.packet),
    fromB,
  );
  const fromA = [ipv6Packet('fd00::1', 'fd00::2', 1, 0x31), ipv4Packet('10.0.0.1', '10.0.0.2', 0, 0x32)];
  a.send(aId, fromA);
  net.flush();
  assert.deepEqual(
    b.received.slice(1).map((d) => d.packet),
    fromA,
  );
  for (const n of [a, b]) {
    const d = n.engine.counters.dropped;
    for (const [k, v] of Object.entries(d)) assert.equal(v, 0, `dropped.${k}`);
  }
}

test('handshake between two engines, data both ways, responder confirms next on first data', () => {
  const p = pair();
  handshakeAndData(p);
  const ia = p.a.engine.peerInfo(p.aPeer);
  const ib = p.b.engine.peerInfo(p.bPeer);
  assert.ok(ia.txBytes > 0 && ia.rxBytes > 0 && ib.txBytes > 0 && ib.rxBytes > 0);
  assert.equal(ia.lastHandshakeWallMs, p.net.clock.wall);
  assert.equal(ib.lastHandshakeWallMs, p.net.clock.wall);
  assert.equal(ia.protocolVersion, 1);
  assert.equal(ia.hasPresharedKey, false);
  // rx of one side equals tx of the other (every datagram delivered once).
  assert.equal(ia.txBytes, ib.rxBytes);
  assert.equal(ib.txBytes, ia.rxBytes);
});

test('handshake with a preshared key', () => {
  const psk = generatePrivateKey();
  const p = pair({ pskA: psk, pskB: Buffer.from(psk) });
  handshakeAndData(p);
  assert.equal(p.a.engine.peerInfo(p.aPeer).hasPresharedKey, true);
  assert.deepEqual(p.a.engine.presharedKeyOf(p.aPeer), psk);
});

test('a wrong preshared key fails the handshake', () => {
  const p = pair({ pskA: generatePrivateKey(), pskB: generatePrivateKey() });
  p.a.send(p.aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 10)]);
  p.net.flush();
  // The initiation does not involve the PSK: B answers; A cannot open the response.
  assert.equal(p.b.engine.counters.handshakeResponsesSent, 1);
  assert.equal(p.a.engine.counters.dropped.badHandshake, 1);
  assert.equal(p.a.engine.sessionInfo(p.aPeer).hasCurrent, false);
  assert.equal(p.b.engine.sessionInfo(p.bPeer).hasCurrent, false);
  assert.equal(p.b.received.length, 0);
});

test('an initiation for the second of several identities is matched by MAC1', () => {
  const p = pair({ bIdentitiesBefore: 1, bIdentitiesAfter: 2 });
  assert.equal(p.b.engine.listIdentities().length, 4);
  assert.equal(p.b.engine.listIdentities()[1].id, p.bId);
  handshakeAndData(p);
  assert.equal(p.b.engine.counters.dropped.badMac1, 0);
  assert.equal(p.b.engine.peerInfo(p.bPeer).identityId, p.bId);
});

test('two identities on one engine hold separate sessions with the same remote', () => {
  const net = new Net();
  const a = net.node(1000);
  const nic = net.node(2000);
  const aKey = generatePrivateKey();
  const k1 = generatePrivateKey();
  const k2 = generatePrivateKey();
  const aId = a.engine.addIdentity(aKey);
  const n1 = nic.engine.addIdentity(k1);
  const n2 = nic.engine.addIdentity(k2);
  a.engine.addPeer(aId, {
    publicKey: publicKeyOf(k1),
    endpoint: nic.endpoint,
    allowedIps: [prefix('10.1.0.0/16')],
  });
  a.engine.addPeer(aId, {
    publicKey: publicKeyOf(k2),
    endpoint: nic.endpoint,
    allowedIps: [prefix('10.2.0.0/16')],
  });
  const p1 = nic.engine.addPeer(n1, { publicKey: publicKeyOf(aKey), allowedIps: [prefix('10.9.0.1/32')] });
  const p2 = nic.engine.addPeer(n2, { publicKey: publicKeyOf(aKey), allowedIps: [prefix('10.9.0.1/32')] });
  a.send(aId, [ipv4Packet('10.9.0.1', '10.1.0.5', 10, 1), ipv4Packet('10.9.0.1', '10.2.0.5', 10, 2)]);
  net.flush();
  assert.deepEqual(
    nic.received.map((d) => [d.peerId, d.packet[20]]),
    [
      [p1, 1],
      [p2, 2],
    ],
  );
});

test('cookie reply round trip under load: the initiator retries with MAC2 at once', () => {
  const p = pair();
  const { net, a, b, aId } = p;
  b.engine.setUnderLoad(true, net.clock.now);
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 10)]);
  net.flush();
  // B answered the first initiation with a cookie reply; A consumed it and sent the initiation
  // again with MAC2 without waiting for REKEY_TIMEOUT; B admitted that one ahead of the queue.
  assert.equal(b.engine.counters.dropped.cookieRequired, 1);
  assert.equal(b.engine.counters.cookieRepliesSent, 1);
  assert.equal(a.engine.counters.cookieRepliesConsumed, 1);
  assert.equal(a.engine.counters.cookieRetries, 1);
  assert.equal(a.engine.counters.handshakeInitiationsSent, 2);
  assert.equal(b.engine.counters.handshakesPrioritised, 1);
  assert.equal(b.engine.counters.handshakeResponsesSent, 1);
  assert.equal(b.received.length, 1, 'the staged packet arrived without any clock advance');
  assert.equal(b.engine.isUnderLoad(net.clock.now), true);
});

test('an engine seeing a flood of handshake messages puts itself under load', () => {
  const p = pair();
  const { net, b } = p;
  const init = Buffer.alloc(148);
  init.writeUInt32LE(1, 0);
  const from = makeEndpoint(v4('127.0.0.9'), 9);
  net.deliver(
    b,
    Array.from({ length: 300 }, () => ({ data: init, from })),
  );
  // The queue reached UNDER_LOAD_QUEUE_DEPTH: under load, the source's cookie-reply allowance
  // (COOKIE_REPLY_BURST) was spent on garbage and the rest dropped on arrival.
  const d = b.engine.counters.dropped;
  assert.equal(d.badMac1, 128 + 10);
  assert.equal(d.cookieRateLimited, 300 - 138);
  assert.equal(b.engine.isUnderLoad(net.clock.now), true);
  assert.equal(b.engine.counters.underLoadEntered, 1);
});

test('roaming: an authenticated packet from a new source moves the endpoint', () => {
  const p = pair();
  handshakeAndData(p);
  const { net, a, b, aId, bId, bPeer } = p;
  a.source = makeEndpoint(v4('127.0.0.5'), 40000);
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 50)]);
  net.flush();
  assert.equal(decodeEndpoint(b.engine.peerInfo(bPeer).endpoint ?? Buffer.alloc(20)), '127.0.0.5:40000');
  assert.equal(b.engine.counters.roamed, 1);
  // B's next packet goes to the new address.
  const before = net.log.length;
  b.send(bId, [ipv4Packet('10.0.0.2', '10.0.0.1', 50)]);
  assert.equal(decodeEndpoint(net.log[before].to), '127.0.0.5:40000');
  // A forged (unauthenticated) packet from elsewhere does not move it.
  const forged = Buffer.from(net.log[before].data);
  forged[forged.length - 1] ^= 1;
  net.deliver(b, [{ data: forged, from: makeEndpoint(v4('127.0.0.66'), 666) }]);
  assert.equal(decodeEndpoint(b.engine.peerInfo(bPeer).endpoint ?? Buffer.alloc(20)), '127.0.0.5:40000');
});

test('cryptokey routing: inner source outside the peer allowed IPs is dropped and counted', () => {
  const p = pair();
  handshakeAndData(p);
  const { net, a, b, aId } = p;
  const n = b.received.length;
  a.send(aId, [
    ipv4Packet('10.0.0.99', '10.0.0.2', 20),
    ipv6Packet('fd00::99', 'fd00::2', 20),
    ipv4Packet('10.0.0.1', '10.0.0.2', 20),
  ]);
  net.flush();
  assert.equal(b.engine.counters.dropped.badInnerSource, 2);
  assert.equal(b.received.length, n + 1);
  // No route on A for a destination no peer covers.
  a.send(aId, [ipv4Packet('10.0.0.1', '192.0.2.1', 20), ipv6Packet('fd00::1', '2001:db8::1', 20)]);
  assert.equal(a.engine.counters.dropped.noRoute, 2);
});

test('cryptokey routing picks the longest prefix, IPv4 and IPv6', () => {
  const net = new Net();
  const a = net.node(1);
  const aKey = generatePrivateKey();
  const aId = a.engine.addIdentity(aKey);
  const nodes = [net.node(2), net.node(3)];
  const keys = [generatePrivateKey(), generatePrivateKey()];
  const ids = nodes.map((n, i) => n.engine.addIdentity(keys[i]));
  a.engine.addPeer(aId, {
    publicKey: publicKeyOf(keys[0]),
    endpoint: nodes[0].endpoint,
    allowedIps: [prefix('10.0.0.0/8'), prefix('fd00::/16')],
  });
  a.engine.addPeer(aId, {
    publicKey: publicKeyOf(keys[1]),
    endpoint: nodes[1].endpoint,
    allowedIps: [prefix('10.1.0.0/16'), prefix('fd00:1::/32')],
  });
  nodes.forEach((n, i) => {
    n.engine.addPeer(ids[i], {
      publicKey: publicKeyOf(aKey),
      allowedIps: [prefix('0.0.0.0/0'), prefix('::/0')],
    });
  });
  a.send(aId, [
    ipv4Packet('10.9.9.9', '10.1.2.3', 4, 1),
    ipv4Packet('10.9.9.9', '10.2.0.1', 4, 2),
    ipv6Packet('fd00::9', 'fd00:1::5', 4, 3),
    ipv6Packet('fd00::9', 'fd00:2::5', 4, 4),
  ]);
  net.flush();
  assert.deepEqual(
    nodes[0].received.map((d) => d.packet.at(-1)),
    [2, 4],
  );
  assert.deepEqual(
    nodes[1].received.map((d) => d.packet.at(-1)),
    [1, 3],
  );
});

test('isolated peers: overlapping allowed IPs, explicit peer on send, per-peer source check', () => {
  const net = new Net();
  const nic = net.node(1);
  const nicKey = generatePrivateKey();
  const nicId = nic.engine.addIdentity(nicKey, { isolatedPeers: true });
  const ws = [net.node(2), net.node(3)];
  const wKeys = [generatePrivateKey(), generatePrivateKey()];
  const peerIds = ws.map((w, i) => {
    const wId = w.engine.addIdentity(wKeys[i]);
    w.engine.addPeer(wId, {
      publicKey: publicKeyOf(nicKey),
      endpoint: nic.endpoint,
      allowedIps: [prefix('0.0.0.0/0')],
    });
    return nic.engine.addPeer(nicId, {
      publicKey: publicKeyOf(wKeys[i]),
      allowedIps: [prefix('100.64.0.1/32')],
    });
  });
  // Both workloads use the same address; each is accepted on its own session.
  ws.forEach((w, i) => {
    w.send(1, [ipv4Packet('100.64.0.1', '100.64.0.9', 3, 10 + i)]);
  });
  net.flush();
  assert.deepEqual(
    nic.received.map((d) => [d.peerId, d.packet.at(-1)]),
    [
      [peerIds[0], 10],
      [peerIds[1], 11],
    ],
  );
  // Routing by destination is not available; the caller names the peer.
  const slab = ipv4Packet('100.64.0.9', '100.64.0.1', 3, 0x77);
  const buf = Buffer.alloc(16 + slab.length + 32);
  slab.copy(buf, 16);
  const r = nic.engine.outboundToPeers(
    { buf, offsets: Uint32Array.of(16), lengths: Uint32Array.of(slab.length), count: 1 },
    Uint32Array.of(peerIds[1]),
    net.clock.now,
  );
  assert.equal(r.data.count, 1);
  assert.equal(r.data.identityIds[0], nicId);
  net.collect(nic, r.data);
  net.flush();
  assert.equal(ws[1].received.length, 1);
  assert.equal(ws[0].received.length, 0);
});

test('peer listing and updates serve the UAPI', () => {
  const p = pair();
  handshakeAndData(p);
  const { a, aPeer, aId } = p;
  const psk = generatePrivateKey();
  a.engine.updatePeer(aPeer, {
    presharedKey: psk,
    replaceAllowedIps: true,
    addAllowedIps: [prefix('10.0.0.0/24'), prefix('fd00::/64')],
    persistentKeepalive: 25,
  });
  const info = a.engine.listPeers(aId)[0];
  assert.equal(info.id, aPeer);
  assert.equal(info.persistentKeepalive, 25);
  assert.equal(info.hasPresharedKey, true);
  assert.deepEqual(info.allowedIps.map((x) => `${Buffer.from(x.address).toString('hex')}/${x.bits}`).sort(), [
    '0a000000/24',
    'fd000000000000000000000000000000/64',
  ]);
  a.engine.updatePeer(aPeer, { removeAllowedIps: [prefix('10.0.0.0/24')], presharedKey: null });
  assert.equal(a.engine.peerInfo(aPeer).allowedIps.length, 1);
  assert.equal(a.engine.peerInfo(aPeer).hasPresharedKey, false);
  assert.equal(a.engine.findPeer(aId, a.engine.peerInfo(aPeer).publicKey), aPeer);
  assert.throws(() => a.engine.addPeer(aId, { publicKey: a.engine.peerInfo(aPeer).publicKey }), {
    code: 'TG_ERR_CONFLICT',
  });
  assert.throws(() => a.engine.updatePeer(aPeer, { persistentKeepalive: 70000 }), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => a.engine.updatePeer(aPeer, { endpoint: Buffer.alloc(3) }), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
  assert.throws(() => a.engine.addIdentity(Buffer.alloc(31)), { code: 'TG_ERR_INVALID_ARGUMENT' });
  // Removal wipes the sessions and releases every receiver index.
  a.engine.removePeer(aPeer);
  assert.equal(a.engine.peerCount, 0);
  assert.equal(a.engine.indexCount, 0);
  assert.throws(() => a.engine.peerInfo(aPeer), { code: 'TG_ERR_NOT_FOUND' });
});

test('changing an identity private key expires sessions; a new handshake follows', () => {
  const p = pair();
  handshakeAndData(p);
  const { net, a, b, aId, bPeer } = p;
  // B must know A's new public key for the new handshake to succeed.
  const newKey = generatePrivateKey();
  a.engine.setPrivateKey(aId, newKey);
  b.engine.removePeer(bPeer);
  b.engine.addPeer(p.bId, { publicKey: publicKeyOf(newKey), allowedIps: [prefix('10.0.0.1/32')] });
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 5, 0x99)]);
  net.flush();
  assert.equal(a.engine.counters.handshakeInitiationsSent, 2);
  assert.equal(b.received.at(-1)?.packet.at(-1), 0x99);
  assert.deepEqual(a.engine.identityInfo(aId).publicKey, publicKeyOf(newKey));
});

test('packets for a peer without an endpoint are dropped and counted', () => {
  const net = new Net();
  const a = net.node(1);
  const aId = a.engine.addIdentity(generatePrivateKey());
  a.engine.addPeer(aId, { publicKey: publicKeyOf(generatePrivateKey()), allowedIps: [prefix('10.0.0.0/8')] });
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 5)]);
  assert.equal(a.engine.counters.dropped.noEndpoint, 1);
  assert.equal(a.engine.counters.handshakeInitiationsSent, 0);
});

test('the staged queue is bounded and keeps the newest packets', () => {
  const p = pair();
  const { net, a, aId, b } = p;
  const packets = Array.from({ length: 200 }, (_, i) => ipv4Packet('10.0.0.1', '10.0.0.2', 4, i));
  a.send(aId, packets);
  assert.equal(a.engine.counters.dropped.stagedOverflow, 72);
  net.flush();
  assert.equal(b.received.length, 128);
  assert.equal(b.received[0].packet.at(-1), 72);
  assert.equal(b.received[127].packet.at(-1), 199);
});

test('staged packets are bounded in age: ones older than QUEUE_STAGED_MAX_AGE are dropped and counted, not sent late', () => {
  const p = pair();
  const { net, a, aId, b } = p;
  // The peer does not answer (its NIC stalled): 10 packets wait for a session.
  net.up = false;
  a.send(
    aId,
    Array.from({ length: 10 }, (_, i) => ipv4Packet('10.0.0.1', '10.0.0.2', 4, i)),
  );
  assert.equal(a.engine.counters.dropped.stagedStale, 0);
  net.up = true;
  // The handshake is retried after REKEY_TIMEOUT and succeeds: the packets are 5 s old by then.
  net.run(REKEY_TIMEOUT + 1_000);
  assert.equal(a.engine.sessionInfo(p.aPeer).hasCurrent, true);
  assert.equal(b.received.filter((x) => x.packet.length > 0).length, 0, 'stale packets were delivered');
  assert.equal(a.engine.counters.dropped.stagedStale, 10);
  // A fresh packet passes on the session.
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 4, 0x77)]);
  net.flush();
  assert.equal(b.received.at(-1)?.packet.at(-1), 0x77);
});

test('staged packets: the stale ones are dropped, the fresh ones behind them are sent (fake clock)', () => {
  const p = pair();
  const { net, a, aId, b } = p;
  // Five packets staged at t0, their initiation held in the network...
  a.send(
    aId,
    Array.from({ length: 5 }, (_, i) => ipv4Packet('10.0.0.1', '10.0.0.2', 4, i)),
  );
  assert.equal(net.queue.length, 1);
  net.clock.advance(QUEUE_STAGED_MAX_AGE + 500);
  // ...three more staged 1.5 s later, then the handshake completes at once.
  a.send(
    aId,
    Array.from({ length: 3 }, (_, i) => ipv4Packet('10.0.0.1', '10.0.0.2', 4, 0x50 + i)),
  );
  net.flush();
  assert.equal(a.engine.counters.dropped.stagedStale, 5);
  assert.deepEqual(
    b.received.filter((x) => x.packet.length > 0).map((x) => x.packet.at(-1)),
    [0x50, 0x51, 0x52],
  );
});

test('sticky source: the local address a packet came to travels with the endpoint, is no roam, and is forgotten on a handshake retry', () => {
  const p = pair();
  handshakeAndData(p);
  const { net, a, b, aId, bId, aPeer } = p;
  // B's packets reach A at 127.0.0.8 (A's socket records it as the record's source).
  b.source = withSource(b.source, v4('127.0.0.8'));
  const roamed = a.engine.counters.roamed;
  b.send(bId, [ipv4Packet('10.0.0.2', '10.0.0.1', 50)]);
  net.flush();
  const ep = a.engine.peerInfo(aPeer).endpoint ?? Buffer.alloc(ENDPOINT_SIZE);
  assert.equal(decodeEndpoint(ep), '127.0.0.1:51821');
  assert.equal(endpointSource(ep), '127.0.0.8');
  assert.equal(a.engine.counters.roamed, roamed, 'a new local address alone is not a roam');
  // A's next datagram to B asks for that source.
  const before = net.log.length;
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 50)]);
  assert.equal(endpointSource(net.log[before].to), '127.0.0.8');
  net.flush();
  assert.equal(b.received.at(-1)?.packet.length, 70, 'delivered all the same');
  // B stops answering; A's rekey goes unanswered and its first retry forgets the source.
  net.up = false;
  net.clock.advance(REKEY_AFTER_TIME + 1000);
  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 50)]);
  const sent = net.log.length;
  net.run(REKEY_TIMEOUT + 1000);
  assert.ok(net.log.length > sent, 'the initiation was retried');
  assert.equal(endpointSource(net.log[net.log.length - 1].to), null);
  assert.equal(endpointSource(a.engine.peerInfo(aPeer).endpoint ?? Buffer.alloc(ENDPOINT_SIZE)), null);
});

function withSource(ep: Buffer, address: Uint8Array): Buffer {
  const out = Buffer.from(ep);
  out[ENDPOINT_OFFSET_FLAGS] |= ENDPOINT_HAS_SOURCE;
  out.set(address, ENDPOINT_OFFSET_SOURCE);
  return out;
}

test('keepaliveNow opens the session at once: an initiation, then the keepalive confirms it for the responder', () => {
  const p = pair();
  const { net, a, b, aPeer, bPeer } = p;
  net.collect(a, a.engine.keepaliveNow(aPeer, net.clock.now));
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1, 'no packet to send and no timer needed');
  // Again within REKEY_TIMEOUT: no second initiation.
  net.collect(a, a.engine.keepaliveNow(aPeer, net.clock.now));
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1);
  net.flush();
  assert.equal(a.engine.sessionInfo(aPeer).hasCurrent, true);
  assert.equal(b.engine.sessionInfo(bPeer).hasCurrent, true, 'the staged keepalive confirmed it');
  assert.equal(b.received.length, 0, 'a keepalive reaches no TUN');
  // With the session up it is a keepalive only.
  const before = a.engine.counters.keepalivesSent;
  net.collect(a, a.engine.keepaliveNow(aPeer, net.clock.now));
  assert.equal(a.engine.counters.keepalivesSent, before + 1);
  assert.equal(a.engine.counters.handshakeInitiationsSent, 1);
  // A peer without an endpoint: nothing.
  const out = b.engine.keepaliveNow(
    b.engine.addPeer(p.bId, { publicKey: publicKeyOf(generatePrivateKey()) }),
    0,
  );
  assert.equal(out.count, 0);
});

test('outboundToPeers with ends: padding is cut so each message ends in its room; no room for the tag drops it', () => {
  const net = new Net();
  const nic = net.node(1);
  const nicKey = generatePrivateKey();
  const nicId = nic.engine.addIdentity(nicKey, { isolatedPeers: true });
  const w = net.node(2);
  const wKey = generatePrivateKey();
  const wId = w.engine.addIdentity(wKey);
  w.engine.addPeer(wId, {
    publicKey: publicKeyOf(nicKey),
    endpoint: nic.endpoint,
    allowedIps: [prefix('0.0.0.0/0')],
  });
  const peer = nic.engine.addPeer(nicId, {
    publicKey: publicKeyOf(wKey),
    allowedIps: [prefix('100.64.0.1/32')],
  });
  w.send(1, [ipv4Packet('100.64.0.1', '100.64.0.9', 3, 1)]);
  net.flush();
  const packet = ipv4Packet('100.64.0.9', '100.64.0.1', 101, 0x55); // padded to a multiple of 16 unless cut
  const len = packet.length;
  assert.notEqual(len % 16, 0);
  const send = (ends: Uint32Array | null) => {
    const buf = Buffer.alloc(16 + len + 64);
    packet.copy(buf, 16);
    const before = nic.engine.counters.dropped.noRoom;
    const r = nic.engine.outboundToPeers(
      { buf, offsets: Uint32Array.of(16), lengths: Uint32Array.of(len), count: 1 },
      Uint32Array.of(peer),
      net.clock.now,
      ends,
    );
    const size = r.data.count === 1 ? r.data.lengths[0] : 0;
    if (r.data.count === 1) net.collect(nic, r.data);
    net.flush();
    return { size, noRoom: nic.engine.counters.dropped.noRoom - before };
  };
  const padded = Math.ceil(len / 16) * 16;
  assert.deepEqual(send(null), { size: 16 + padded + 16, noRoom: 0 });
  assert.deepEqual(send(Uint32Array.of(16 + len + 16)), { size: 16 + len + 16, noRoom: 0 }, 'no padding');
  assert.deepEqual(send(Uint32Array.of(16 + len + 18)), { size: 16 + len + 18, noRoom: 0 }, 'some padding');
  assert.deepEqual(send(Uint32Array.of(16 + len + 15)), { size: 0, noRoom: 1 }, 'no room for the tag');
  assert.equal(w.received.length, 3, 'every message sent opened at the workload');
  for (const d of w.received) assert.deepEqual(d.packet, packet);
});
