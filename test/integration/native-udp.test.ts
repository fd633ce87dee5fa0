// The native batched UDP socket on loopback (IPv4 and IPv6 through one dual-stack socket),
// run through the same scenarios as the fake network so that the fake is held to the real
// kernel's behaviour: sources, counts, order of one flow, counted refusals, truncation.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { FakeNetwork } from '../../src/native/fake.js';
import { NativeUdpSocket, PacketBatch, type PacketSocket } from '../../src/native/index.js';
import {
  decodeEndpoint,
  ENDPOINT_OFFSET_SOURCE,
  ENDPOINT_SIZE,
  encodeEndpoint,
  endpointSource,
} from '../../src/net/endpoint.js';
import { countOpenFds } from '../helpers/native-netns.js';

interface Exchange {
  sent: number;
  /** source endpoint -> markers in arrival order */
  bySource: Map<string, number[]>;
  perCall: number[];
  badPayloads: number;
}

/**
 * Sends `perDest` datagrams (marker, then filler up to a size that varies per packet) to
 * each destination with sendBatch calls of `batch` packets, and receives them on
 * `receiver` through its readiness callback with recvBatch calls of up to `batch`.
 */
async function exchange(
  sender: PacketSocket,
  receiver: PacketSocket,
  dests: string[],
  perDest: number,
  batch: number,
): Promise<Exchange> {
  const total = dests.length * perDest;
  const rx = new PacketBatch(batch, 2048, 16);
  const result: Exchange = { sent: 0, bySource: new Map(), perCall: [], badPayloads: 0 };
  let received = 0;
  const done = new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`received ${received} of ${total}`)), 10_000);
    receiver.start((err) => {
      if (err) return reject(err);
      for (;;) {
        const n = receiver.recvBatch(rx.slab, rx.slotSize, rx.headroom, batch, rx.lengths, rx.endpoints);
        if (n === 0) break;
        result.perCall.push(n);
        for (let i = 0; i < n; i++) {
          const p = rx.packet(i);
          const marker = p.readUInt32BE(0);
          if (p.length !== 8 + (marker % 1400) || p.readUInt32BE(4) !== ~marker >>> 0) result.badPayloads++;
          const src = decodeEndpoint(rx.endpoints, i * ENDPOINT_SIZE);
          const list = result.bySource.get(src) ?? [];
          if (list.length === 0) result.bySource.set(src, list);
          list.push(marker);
        }
        received += n;
      }
      if (received >= total) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  const tx = new PacketBatch(batch, 2048, 0);
  for (let d = 0; d < dests.length; d++) {
    for (let first = 0; first < perDest; first += batch) {
      const n = Math.min(batch, perDest - first);
      for (let i = 0; i < n; i++) {
        const marker = d * perDest + first + i;
        tx.slab.writeUInt32BE(marker, tx.offsets[i]);
        tx.slab.writeUInt32BE(~marker >>> 0, tx.offsets[i] + 4);
        tx.lengths[i] = 8 + (marker % 1400);
        encodeEndpoint(dests[d], tx.endpoints, i * ENDPOINT_SIZE);
      }
      result.sent += sender.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, n);
    }
  }
  await done;
  receiver.stop();
  return result;
}

function checkExchange(r: Exchange, sources: string[], perDest: number, what: string): void {
  assert.equal(r.sent, sources.length * perDest, `${what}: all sent`);
  assert.equal(r.badPayloads, 0, `${what}: payloads intact`);
  assert.deepEqual([...r.bySource.keys()].sort(), [...sources].sort(), `${what}: sources`);
  sources.forEach((src, d) => {
    const expected = Array.from({ length: perDest }, (_, i) => d * perDest + i);
    assert.deepEqual(r.bySource.get(src), expected, `${what}: every datagram from ${src}, in order`);
  });
  assert.ok(Math.max(...r.perCall) > 1, `${what}: more than one datagram per recvBatch`);
}

test('native dual-stack sockets exchange IPv4 and IPv6 batches larger than one sendmmsg chunk', async () => {
  const a = NativeUdpSocket.open();
  const b = NativeUdpSocket.open();
  try {
    assert.equal(a.family, 6);
    const r = await exchange(a, b, [`127.0.0.1:${b.localPort}`, `[::1]:${b.localPort}`], 1000, 600);
    // IPv4-mapped sources come out as family 4.
    checkExchange(r, [`127.0.0.1:${a.localPort}`, `[::1]:${a.localPort}`], 1000, 'native');
    assert.ok(Math.max(...r.perCall) > 256, 'recvBatch crosses the recvmmsg chunk size');
    assert.deepEqual(b.stats(), {
      rxTruncated: 0,
      rxErrors: 0,
      rxStale: 0,
      txDropped: 0,
      txRejected: 0,
      lastError: null,
    });
  } finally {
    a.close();
    b.close();
  }
});

test('the fake network gives the same result for the same exchange', async () => {
  const net = new FakeNetwork();
  const a = net.createSocket();
  const b = net.createSocket();
  try {
    const r = await exchange(a, b, [`127.0.0.1:${b.localPort}`, `[::1]:${b.localPort}`], 1000, 600);
    checkExchange(r, [`127.0.0.1:${a.localPort}`, `[::1]:${a.localPort}`], 1000, 'fake');
  } finally {
    a.close();
    b.close();
  }
});

test('IPv4-only and v6Only sockets count unreachable families as refusals, natively and in the fake', () => {
  const net = new FakeNetwork();
  const pairs: [string, PacketSocket, PacketSocket][] = [
    ['native', NativeUdpSocket.open({ address: '127.0.0.1' }), NativeUdpSocket.open({ v6Only: true })],
    ['fake', net.createSocket({ address: '127.0.0.1' }), net.createSocket({ v6Only: true })],
  ];
  const b = new PacketBatch(2, 256, 0);
  b.lengths.fill(10);
  for (const [what, v4, v6only] of pairs) {
    try {
      // Nothing is sent: every destination is refused before it leaves the socket.
      encodeEndpoint(`[::1]:${v6only.localPort}`, b.endpoints, 0);
      encodeEndpoint(`[::1]:${v6only.localPort}`, b.endpoints, ENDPOINT_SIZE);
      assert.equal(v4.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 2), 0, what);
      assert.deepEqual(v4.stats(), {
        rxTruncated: 0,
        rxErrors: 0,
        rxStale: 0,
        txDropped: 0,
        txRejected: 2,
        lastError: 'EAFNOSUPPORT',
      });
      encodeEndpoint(`127.0.0.1:${v4.localPort}`, b.endpoints, 0);
      assert.equal(v6only.sendBatch(b.slab, b.offsets, b.lengths, b.endpoints, 1), 0, what);
      assert.equal(v6only.stats().txRejected, 1, what);
      assert.equal(v6only.stats().lastError, 'ENETUNREACH', what);
    } finally {
      v4.close();
      v6only.close();
    }
  }
});

test('datagrams longer than a slot are dropped and counted; the batch stays dense', () => {
  const net = new FakeNetwork();
  const pairs: [string, PacketSocket, PacketSocket][] = [
    [
      'native',
      NativeUdpSocket.open({ address: '127.0.0.1' }),
      NativeUdpSocket.open({ address: '127.0.0.1' }),
    ],
    ['fake', net.createSocket({ address: '127.0.0.1' }), net.createSocket({ address: '127.0.0.1' })],
  ];
  for (const [what, a, b] of pairs) {
    try {
      const tx = new PacketBatch(4, 4096, 0);
      [100, 3000, 200, 2032].forEach((len, i) => {
        tx.lengths[i] = len;
        tx.slab.writeUInt32BE(i, tx.offsets[i]);
        encodeEndpoint(`127.0.0.1:${b.localPort}`, tx.endpoints, i * ENDPOINT_SIZE);
      });
      assert.equal(a.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, 4), 4, what);
      const rx = new PacketBatch(4, 2048, 16); // room: 2032 bytes
      const n = b.recvBatch(rx.slab, rx.slotSize, rx.headroom, 4, rx.lengths, rx.endpoints);
      assert.equal(n, 3, what);
      assert.deepEqual([...rx.lengths.subarray(0, 3)], [100, 200, 2032], what);
      assert.deepEqual(
        [0, 1, 2].map((i) => rx.slab.readUInt32BE(rx.offsets[i])),
        [0, 2, 3],
        `${what}: later datagrams moved down`,
      );
      assert.equal(decodeEndpoint(rx.endpoints, 2 * ENDPOINT_SIZE), `127.0.0.1:${a.localPort}`, what);
      assert.equal(b.stats().rxTruncated, 1, what);
      assert.equal(b.recvBatch(rx.slab, rx.slotSize, rx.headroom, 4, rx.lengths, rx.endpoints), 0, what);
    } finally {
      a.close();
      b.close();
    }
  }
});

test('open/start/close cycles leak no fd; a closed socket refuses I/O with EBADF', async () => {
  const before = await countOpenFds();
  for (let i = 0; i < 50; i++) {
    const s = NativeUdpSocket.open({ address: '::1' });
    s.start(() => {});
    if (i % 2 === 0) s.stop();
    s.close();
    s.close();
  }
  assert.equal(await countOpenFds(), before);
  const s = NativeUdpSocket.open({ address: '127.0.0.1' });
  s.close();
  const b = new PacketBatch(1);
  assert.throws(() => s.recvBatch(b.slab, b.slotSize, b.headroom, 1, b.lengths, b.endpoints), {
    code: 'EBADF',
    syscall: 'recvmmsg',
  });
  assert.throws(() => s.start(() => {}), { code: 'EBADF' });
  s.stop();
});

test('socket buffers are raised past net.core.rmem_max when running as root', () => {
  const s = NativeUdpSocket.open({ address: '127.0.0.1', rcvBuf: 8 << 20, sndBuf: 8 << 20 });
  try {
    const { rcvBuf, sndBuf } = s.bufferSizes();
    // The kernel reports twice the requested size.
    assert.equal(rcvBuf, 16 << 20);
    assert.equal(sndBuf, 16 << 20);
  } finally {
    s.close();
  }
});

test('segmented sends (UDP GSO) deliver the same datagrams, in order, as one send per datagram', () => {
  // Runs broken by size (a shorter packet ends a run, a longer one starts a new one), by
  // destination, by the 64-segment and 64 KiB limits, and an empty datagram.
  const plan: [dest: 0 | 1, len: number][] = [
    ...Array.from({ length: 70 }, () => [0, 1400] as [0, number]),
    [0, 700],
    [0, 1400],
    ...Array.from({ length: 10 }, () => [1, 1400] as [1, number]),
    [0, 1500],
    [0, 1500],
    [0, 0],
    [0, 64],
    [0, 64],
    ...Array.from({ length: 80 }, () => [1, 100] as [1, number]),
  ];
  const results: number[][][] = [];
  for (const segmentation of [true, false]) {
    const a = NativeUdpSocket.open({ address: '127.0.0.1', segmentation });
    const dests = [
      NativeUdpSocket.open({ address: '127.0.0.1' }),
      NativeUdpSocket.open({ address: '127.0.0.1' }),
    ];
    try {
      const tx = new PacketBatch(plan.length, 2048, 0);
      plan.forEach(([d, len], i) => {
        tx.lengths[i] = len;
        if (len >= 4) tx.slab.writeUInt32BE(i, tx.offsets[i]);
        tx.slab.fill(i & 0xff, tx.offsets[i] + 4, tx.offsets[i] + len);
        encodeEndpoint(`127.0.0.1:${dests[d].localPort}`, tx.endpoints, i * ENDPOINT_SIZE);
      });
      assert.equal(a.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, plan.length), plan.length);
      assert.equal(a.segmentation, segmentation, 'the kernel took the segmented sends');
      const got: number[][] = [];
      for (const [d, sock] of dests.entries()) {
        const rx = new PacketBatch(256, 2048, 0);
        const n = sock.recvBatch(rx.slab, rx.slotSize, rx.headroom, 256, rx.lengths, rx.endpoints);
        const seen: number[] = [];
        for (let k = 0; k < n; k++) {
          const len = rx.lengths[k];
          const at = rx.offsets[k];
          const i = len >= 4 ? rx.slab.readUInt32BE(at) : -1;
          if (i >= 0) {
            assert.equal(len, plan[i][1], `datagram ${i} keeps its length`);
            assert.ok(
              rx.slab.subarray(at + 4, at + len).every((b) => b === (i & 0xff)),
              `payload of ${i}`,
            );
          }
          seen.push(i >= 0 ? i : -1 - len);
        }
        assert.equal(sock.recvBatch(rx.slab, rx.slotSize, rx.headroom, 256, rx.lengths, rx.endpoints), 0);
        const want = plan.flatMap(([pd, len], i) => (pd === d ? [len >= 4 ? i : -1 - len] : []));
        assert.deepEqual(seen, want, `destination ${d}: every datagram once, in order`);
        got.push(seen);
      }
      results.push(got);
      assert.equal(a.stats().txDropped + a.stats().txRejected, 0);
    } finally {
      a.close();
      for (const s of dests) s.close();
    }
  }
  assert.deepEqual(results[0], results[1]);
});

test('receive offload (UDP GRO): runs arrive as one message each and are reported datagram by datagram, in order', () => {
  // Runs of one size to one socket (loopback hands a GSO run on whole to a GRO socket),
  // broken by a shorter packet, a longer one and an empty datagram.
  const plan: number[] = [
    ...Array.from({ length: 64 }, () => 1400),
    ...Array.from({ length: 20 }, () => 1400),
    700,
    1500,
    1500,
    0,
    ...Array.from({ length: 64 }, () => 100),
  ];
  const a = NativeUdpSocket.open({ address: '127.0.0.1', segmentation: true });
  const b = NativeUdpSocket.open({ address: '127.0.0.1' });
  try {
    assert.equal(b.receiveOffload(), false, 'off until asked for');
    assert.equal(b.receiveOffload(true), true, 'the kernel takes UDP_GRO');
    const tx = new PacketBatch(plan.length, 2048, 0);
    plan.forEach((len, i) => {
      tx.lengths[i] = len;
      if (len >= 4) tx.slab.writeUInt32BE(i, tx.offsets[i]);
      tx.slab.fill(i & 0xff, tx.offsets[i] + 4, tx.offsets[i] + len);
      encodeEndpoint(`127.0.0.1:${b.localPort}`, tx.endpoints, i * ENDPOINT_SIZE);
    });
    assert.equal(a.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, plan.length), plan.length);
    const rx = new PacketBatch(128, 65_536 + 4096, 0);
    assert.throws(
      () => b.recvBatch(rx.slab, rx.slotSize, 0, 128, rx.lengths, rx.endpoints),
      /needs the offsets argument/,
    );
    const seen: number[] = [];
    const slots = new Set<number>();
    for (let call = 0; call < 20; call++) {
      const n = b.recvBatch(rx.slab, rx.slotSize, 0, 128, rx.lengths, rx.endpoints, rx.offsets);
      if (n === 0) break;
      for (let k = 0; k < n; k++) {
        const len = rx.lengths[k];
        const at = rx.offsets[k];
        slots.add(call * 1000 + Math.floor(at / rx.slotSize));
        assert.equal(decodeEndpoint(rx.endpoints, k * ENDPOINT_SIZE), `127.0.0.1:${a.localPort}`);
        const i = len >= 4 ? rx.slab.readUInt32BE(at) : -1;
        if (i >= 0) {
          assert.equal(len, plan[i], `datagram ${i} keeps its length`);
          assert.ok(
            rx.slab.subarray(at + 4, at + len).every((x) => x === (i & 0xff)),
            `payload of ${i}`,
          );
        }
        seen.push(i >= 0 ? i : -1 - len);
      }
    }
    assert.deepEqual(
      seen,
      plan.map((len, i) => (len >= 4 ? i : -1 - len)),
      'every datagram once, in order',
    );
    assert.ok(slots.size < plan.length / 4, `${plan.length} datagrams in ${slots.size} messages`);
    assert.equal(b.stats().rxTruncated, 0);

    // A batch with fewer entries than a run: the run's rest is a counted drop.
    tx.lengths.fill(1000, 0, 64);
    for (let i = 0; i < 64; i++) tx.slab.writeUInt32BE(i, tx.offsets[i]);
    assert.equal(a.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, 64), 64);
    const n = b.recvBatch(rx.slab, rx.slotSize, 0, 8, rx.lengths, rx.endpoints, rx.offsets);
    assert.equal(n, 8);
    for (let k = 0; k < 8; k++) assert.equal(rx.slab.readUInt32BE(rx.offsets[k]), k);
    assert.equal(b.stats().rxTruncated, 56);
  } finally {
    a.close();
    b.close();
  }
});

test('sticky source: a datagram records the local address it came to; replies leave from it, or from the kernel’s choice once it is not local', () => {
  const a = NativeUdpSocket.open({}); // dual-stack [::]:0
  const b = NativeUdpSocket.open({ address: '127.0.0.1' });
  const b6 = NativeUdpSocket.open({ address: '::1' });
  try {
    const tx = new PacketBatch(1, 256, 0);
    const rx = new PacketBatch(4, 256, 0);
    const sendOne = (from: PacketSocket, endpoint: Buffer): number => {
      tx.lengths[0] = 8;
      endpoint.copy(tx.endpoints, 0, 0, ENDPOINT_SIZE);
      return from.sendBatch(tx.slab, tx.offsets, tx.lengths, tx.endpoints, 1);
    };
    const recvOne = (on: PacketSocket): Buffer => {
      assert.equal(on.recvBatch(rx.slab, rx.slotSize, 0, 4, rx.lengths, rx.endpoints), 1);
      return Buffer.from(rx.endpoints.subarray(0, ENDPOINT_SIZE));
    };

    // b writes to a at 127.0.0.7 (any 127/8 address is local): a's record says so.
    assert.equal(sendOne(b, encodeEndpoint(`127.0.0.7:${a.localPort}`)), 1);
    const fromB = recvOne(a);
    assert.equal(decodeEndpoint(fromB), `127.0.0.1:${b.localPort}`);
    assert.equal(endpointSource(fromB), '127.0.0.7');
    // a answers with that record: the reply leaves from 127.0.0.7, not the kernel's 127.0.0.1.
    assert.equal(sendOne(a, fromB), 1);
    const atB = recvOne(b);
    assert.equal(decodeEndpoint(atB), `127.0.0.7:${a.localPort}`);
    assert.equal(endpointSource(atB), '127.0.0.1', 'an IPv4 socket records its local address too');

    // A source that is not (or no longer) local: sent all the same, from the kernel's choice.
    const stale = Buffer.from(fromB);
    stale.set([198, 18, 255, 254], ENDPOINT_OFFSET_SOURCE);
    const rejected = a.stats().txRejected;
    assert.equal(sendOne(a, stale), 1);
    assert.equal(decodeEndpoint(recvOne(b)), `127.0.0.1:${a.localPort}`);
    assert.equal(a.stats().txRejected, rejected, 'the fallback is not a drop');

    // IPv6 on the same dual-stack socket.
    assert.equal(sendOne(b6, encodeEndpoint(`[::1]:${a.localPort}`)), 1);
    const fromB6 = recvOne(a);
    assert.equal(endpointSource(fromB6), '::1');
    assert.equal(sendOne(a, fromB6), 1);
    assert.equal(decodeEndpoint(recvOne(b6)), `[::1]:${a.localPort}`);
    // A record without a source (as the UAPI sets one) leaves from the kernel's choice.
    assert.equal(endpointSource(encodeEndpoint(`127.0.0.1:${b.localPort}`)), null);
  } finally {
    a.close();
    b.close();
    b6.close();
  }
});
