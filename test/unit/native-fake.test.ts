// The in-memory fakes behave like the native devices: slot layout, batch limits,
// counted drops, level-triggered readiness, failure and close semantics, endpoints.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setImmediate as turn } from 'node:timers/promises';
import { FakeNetwork, FakeTun, type FakeUdpSocket } from '../../src/native/fake.js';
import { PacketBatch } from '../../src/native/index.js';
import { decodeEndpoint, ENDPOINT_SIZE, encodeEndpoint } from '../../src/net/endpoint.js';

/** A minimal IPv4 packet of `len` bytes whose payload starts with `marker`. */
function ipv4(len: number, marker: number): Buffer {
  const p = Buffer.alloc(len);
  p[0] = 0x45;
  p.writeUInt16BE(len, 2);
  p.writeUInt32BE(marker, 20);
  return p;
}

function fillSend(b: PacketBatch, packets: Buffer[], dest: string): void {
  for (let i = 0; i < packets.length; i++) {
    packets[i].copy(b.slab, b.offsets[i]);
    b.lengths[i] = packets[i].length;
    encodeEndpoint(dest, b.endpoints, i * ENDPOINT_SIZE);
  }
}

test('FakeTun reads in batches with the slot layout and respects max', () => {
  const tun = new FakeTun();
  for (let i = 0; i < 300; i++) tun.inject(ipv4(40 + i, i));
  const b = new PacketBatch(128, 512, 16);
  const n1 = tun.readBatch(b.slab, 512, 16, 128, b.lengths);
  assert.equal(n1, 128);
  for (let i = 0; i < n1; i++) {
    assert.equal(b.lengths[i], 40 + i);
    assert.equal(b.slab.readUInt32BE(i * 512 + 16 + 20), i, 'packet i starts at i*slotSize + headroom');
    assert.equal(b.slab[i * 512], 0, 'headroom untouched');
  }
  assert.equal(tun.readBatch(b.slab, 512, 16, 100, b.lengths), 100);
  assert.equal(b.slab.readUInt32BE(16 + 20), 128, 'FIFO order across calls');
  assert.equal(tun.readBatch(b.slab, 512, 16, 128, b.lengths), 72);
  assert.equal(tun.readBatch(b.slab, 512, 16, 128, b.lengths), 0, 'empty: 0, not an error');
});

test('FakeTun drops and counts packets larger than a slot, keeping the batch dense', () => {
  const tun = new FakeTun();
  tun.inject(ipv4(100, 1));
  tun.inject(ipv4(497, 2)); // 512 - 16 = 496 bytes of room
  tun.inject(ipv4(496, 3));
  const b = new PacketBatch(4, 512, 16);
  assert.equal(tun.readBatch(b.slab, 512, 16, 4, b.lengths), 2);
  assert.deepEqual([...b.lengths.subarray(0, 2)], [100, 496]);
  assert.equal(b.slab.readUInt32BE(512 + 16 + 20), 3);
  assert.equal(tun.stats().rxTruncated, 1);
  assert.equal(tun.stats().lastError, 'EMSGSIZE');
});

test('FakeTun queue is bounded like txqueuelen', () => {
  const tun = new FakeTun({ queueLimit: 3 });
  const results = [1, 2, 3, 4].map((i) => tun.inject(ipv4(40, i)));
  assert.deepEqual(results, [true, true, true, false]);
  assert.equal(tun.injectDropped, 1);
});

test('FakeTun writeBatch collects IP packets and rejects others as the kernel does (EINVAL)', () => {
  const tun = new FakeTun();
  const b = new PacketBatch(4, 256, 0);
  const packets = [ipv4(60, 1), Buffer.from([0x00, 1, 2, 3]), ipv4(80, 3)];
  packets[2][0] = 0x60; // IPv6 version nibble
  for (let i = 0; i < 3; i++) {
    packets[i].copy(b.slab, b.offsets[i]);
    b.lengths[i] = packets[i].length;
  }
  b.lengths[3] = 0;
  assert.equal(tun.writeBatch(b.slab, b.offsets, b.lengths, 4), 2);
  assert.deepEqual(tun.takeWritten(), [packets[0], packets[2]]);
  assert.deepEqual(tun.takeWritten(), []);
  assert.equal(tun.stats().txRejected, 2);
  assert.equal(tun.stats().lastError, 'EINVAL');
});

test('FakeTun readiness is level-triggered: called each turn until drained, not when empty', async () => {
  const tun = new FakeTun();
  const b = new PacketBatch(2, 256, 16);
  let calls = 0;
  let read = 0;
  tun.start((err) => {
    assert.equal(err, null);
    calls++;
    read += tun.readBatch(b.slab, 256, 16, 2, b.lengths); // drains at most 2 per callback
  });
  await turn();
  assert.equal(calls, 0, 'nothing queued: no callback');
  for (let i = 0; i < 5; i++) tun.inject(ipv4(40, i));
  for (let i = 0; i < 6; i++) await turn();
  assert.equal(read, 5);
  assert.equal(calls, 3, '2 + 2 + 1');
  tun.stop();
  tun.inject(ipv4(40, 9));
  await turn();
  await turn();
  assert.equal(calls, 3, 'stopped: no callback');
  tun.stop();
  tun.close();
});

test('FakeTun failure (ip link del) is reported once to readiness, then thrown by I/O', async () => {
  const tun = new FakeTun();
  const errors: (Error & { code?: string })[] = [];
  tun.start((err) => {
    if (err) errors.push(err);
  });
  tun.fail('EBADFD');
  await turn();
  await turn();
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'EBADFD');
  const b = new PacketBatch(1);
  assert.throws(() => tun.readBatch(b.slab, b.slotSize, b.headroom, 1, b.lengths), {
    code: 'EBADFD',
    syscall: 'read',
  });
  assert.throws(() => tun.writeBatch(b.slab, b.offsets, b.lengths, 1), { code: 'EBADFD', syscall: 'write' });
  tun.close();
  assert.throws(() => tun.readBatch(b.slab, b.slotSize, b.headroom, 1, b.lengths), { code: 'EBADF' });
  tun.close();
});

test('FakeUdpSocket pairs exchange batches with correct sources over IPv4 and IPv6', () => {
  const net = new FakeNetwork();
  const a4 = net.createSocket({ address: '198.18.0.1', port: 51820 });
  const b4 = net.createSocket({ address: '198.18.0.2' });
  const a6 = net.createSocket({ address: 'fd00::1', port: 51820 });
  const any = net.createSocket(); // [::]:ephemeral, dual-stack
  assert.equal(a4.localEndpoint(), '198.18.0.1:51820');
  assert.ok(b4.localPort >= 40000 && b4.localPort !== any.localPort, 'ephemeral ports are distinct');
  assert.equal(any.localEndpoint(), `[::]:${any.localPort}`);

  const send = new PacketBatch(200, 256, 16);
  const packets = Array.from({ length: 200 }, (_, i) => ipv4(28 + (i % 100), i));
  fillSend(send, packets, `198.18.0.2:${b4.localPort}`);
  assert.equal(a4.sendBatch(send.slab, send.offsets, send.lengths, send.endpoints, 200), 200);

  const recv = new PacketBatch(128, 256, 16);
  let got = 0;
  for (let n = b4.recvBatch(recv.slab, 256, 16, 128, recv.lengths, recv.endpoints); n > 0; ) {
    for (let i = 0; i < n; i++) {
      assert.deepEqual(recv.packet(i), packets[got + i]);
      assert.equal(decodeEndpoint(recv.endpoints, i * ENDPOINT_SIZE), '198.18.0.1:51820');
    }
    got += n;
    n = b4.recvBatch(recv.slab, 256, 16, 128, recv.lengths, recv.endpoints);
  }
  assert.equal(got, 200);

  fillSend(send, packets.slice(0, 3), `[::1]:${any.localPort}`);
  assert.equal(a6.sendBatch(send.slab, send.offsets, send.lengths, send.endpoints, 3), 3);
  fillSend(send, packets.slice(0, 1), `127.0.0.1:${any.localPort}`);
  assert.equal(a4.sendBatch(send.slab, send.offsets, send.lengths, send.endpoints, 1), 1);
  assert.equal(any.recvBatch(recv.slab, 256, 16, 128, recv.lengths, recv.endpoints), 4);
  assert.equal(decodeEndpoint(recv.endpoints, 0), '[fd00::1]:51820');
  assert.equal(decodeEndpoint(recv.endpoints, 3 * ENDPOINT_SIZE), '198.18.0.1:51820');

  // A wildcard socket's datagrams carry a loopback source of the destination's family.
  fillSend(send, packets.slice(0, 1), '198.18.0.2:' + b4.localPort);
  any.sendBatch(send.slab, send.offsets, send.lengths, send.endpoints, 1);
  assert.equal(b4.recvBatch(recv.slab, 256, 16, 1, recv.lengths, recv.endpoints), 1);
  assert.equal(decodeEndpoint(recv.endpoints, 0), `127.0.0.1:${any.localPort}`);
});

test('FakeUdpSocket counts what a real socket would refuse, and the network what it loses', () => {
  const net = new FakeNetwork();
  const v4 = net.createSocket({ address: '198.18.0.1' });
  const v6only = net.createSocket({ v6Only: true });
  const small = net.createSocket({ address: '198.18.0.3', queueLimit: 2 });
  const b = new PacketBatch(4, 256, 0);
  fillSend(b, [ipv4(24, 1)], '[fd00::9]:1');
  assert.equal(v4.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 1), 0);
  assert.deepEqual(v4.stats(), {
    rxTruncated: 0,
    rxErrors: 0,
    rxStale: 0,
    txDropped: 0,
    txRejected: 1,
    lastError: 'EAFNOSUPPORT',
  });
  fillSend(b, [ipv4(24, 1)], '198.18.0.3:' + small.localPort);
  assert.equal(v6only.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 1), 0);
  assert.equal(v6only.stats().lastError, 'ENETUNREACH');

  fillSend(b, [ipv4(24, 1), ipv4(24, 2), ipv4(24, 3), ipv4(24, 4)], '198.18.0.3:' + small.localPort);
  assert.equal(
    v4.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 4),
    4,
    'UDP send succeeds; the receiver drops',
  );
  assert.equal(net.counters.overflow, 2);
  fillSend(b, [ipv4(24, 1)], '198.18.0.99:9');
  assert.equal(v4.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 1), 1);
  assert.equal(net.counters.undeliverable, 1);

  const r = new PacketBatch(4, 32, 16); // 16 bytes of room: a 24-byte datagram is truncated
  assert.equal(small.recvBatch(r.slab, 32, 16, 4, r.lengths, r.endpoints), 0);
  assert.equal(small.stats().rxTruncated, 2);
});

test('FakeUdpSocket refuses a port in use and frees it on close', () => {
  const net = new FakeNetwork();
  const a = net.createSocket({ port: 51820 });
  assert.throws(() => net.createSocket({ address: '::', port: 51820 }), /address already in use/);
  assert.throws(() => net.createSocket({ address: '0.0.0.0', port: 51820 }), /address already in use/);
  a.close();
  a.close();
  const b = net.createSocket({ port: 51820 });
  assert.equal(b.localPort, 51820);
  const batch = new PacketBatch(1);
  assert.throws(() => a.recvBatch(batch.slab, batch.slotSize, 0, 1, batch.lengths, batch.endpoints), {
    code: 'EBADF',
  });
});

test('impairments are seeded: the same seed drops, duplicates and reorders the same datagrams', () => {
  const run = (seed: number) => {
    const net = new FakeNetwork({ seed, drop: 0.1, duplicate: 0.05, reorder: 0.1 });
    const a = net.createSocket({ address: '198.18.0.1' });
    const b = net.createSocket({ address: '198.18.0.2' });
    const send = new PacketBatch(100, 64, 0);
    fillSend(
      send,
      Array.from({ length: 100 }, (_, i) => ipv4(24, i)),
      `198.18.0.2:${b.localPort}`,
    );
    a.sendBatch(send.slab, send.offsets, send.lengths, send.endpoints, 100);
    const recv = new PacketBatch(256, 64, 0);
    const n = b.recvBatch(recv.slab, 64, 0, 256, recv.lengths, recv.endpoints);
    const markers = Array.from({ length: n }, (_, i) => recv.slab.readUInt32BE(i * 64 + 20));
    return { markers, counters: { ...net.counters } };
  };
  const x = run(42);
  const y = run(42);
  const z = run(43);
  assert.deepEqual(x, y);
  assert.notDeepEqual(x.markers, z.markers);
  const c = x.counters;
  assert.equal(c.sent, 100);
  assert.ok(c.dropped > 0 && c.duplicated > 0 && c.reordered > 0, JSON.stringify(c));
  assert.equal(c.delivered, 100 - c.dropped + c.duplicated);
  assert.equal(x.markers.length, c.delivered);
  const inversions = x.markers.filter((m, i) => i > 0 && m < x.markers[i - 1]).length;
  assert.ok(inversions > 0, 'some datagrams arrive out of order');
});

test('two peers talk through readiness callbacks alone (ping-pong over the fake network)', async () => {
  const net = new FakeNetwork();
  const a = net.createSocket({ address: '198.18.0.1' });
  const b = net.createSocket({ address: '198.18.0.2' });
  const batch = (s: FakeUdpSocket) => ({ s, buf: new PacketBatch(16, 128, 16) });
  const pa = batch(a);
  const pb = batch(b);
  let rounds = 0;
  const done = new Promise<void>((resolve) => {
    const echo = (p: { s: FakeUdpSocket; buf: PacketBatch }, onPacket: (marker: number) => boolean) => () => {
      const { s, buf } = p;
      for (let n = s.recvBatch(buf.slab, 128, 16, 16, buf.lengths, buf.endpoints); n > 0; n = 0) {
        for (let i = 0; i < n; i++) {
          const marker = buf.slab.readUInt32BE(buf.offsets[i] + 20);
          if (!onPacket(marker)) return resolve();
          buf.slab.writeUInt32BE(marker + 1, buf.offsets[i] + 20);
        }
        s.sendBatch(buf.slab, buf.offsets, buf.lengths, buf.endpoints, n); // back to each source
      }
    };
    a.start(echo(pa, (m) => ++rounds < 50 && m === 2 * rounds - 1));
    b.start(echo(pb, () => true));
  });
  fillSend(pa.buf, [ipv4(24, 0)], `198.18.0.2:${b.localPort}`);
  a.sendBatch(pa.buf.slab, pa.buf.offsets, pa.buf.lengths, pa.buf.endpoints, 1);
  await done;
  assert.equal(rounds, 50);
  a.close();
  b.close();
});
