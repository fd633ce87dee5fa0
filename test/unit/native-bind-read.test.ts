// Bound reads (bindRead on the addon's TUN and UDP handles): a readiness event reads its first
// batch into the bound buffers before the callback, which gets the count, exactly what
// readBatch/recvBatch would have returned; unbinding, closing and bad arguments; and the
// device pump consuming such a count instead of reading again.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NativeTunDevice, NativeUdpSocket, PacketBatch } from '../../src/native/index.js';
import { endpointPort, makeEndpoint } from '../../src/net/endpoint.js';

function packet(i: number, len: number): Buffer {
  const p = Buffer.alloc(len, (i * 7) & 0xff);
  p[0] = 0x45;
  return p;
}

/** The next readiness callback's arguments. */
function nextEvent(h: { start(cb: (err: Error | null, read?: number) => void): void }) {
  return new Promise<{ err: Error | null; read: number | undefined }>((resolve) =>
    h.start((err, read) => resolve({ err, read })),
  );
}

test('TUN: an event reads its batch into the bound buffers and reports the count; unbound, it reads nothing', async () => {
  const [a, b] = NativeTunDevice.pair();
  try {
    const inb = new PacketBatch(4, 2048, 16);
    b.bindRead(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths);
    const out = new PacketBatch(8, 2048, 0);
    const lens = [60, 1420, 1, 2000, 99, 100];
    for (const [i, len] of lens.entries()) {
      packet(i, len).copy(out.slab, out.offsets[i]);
      out.lengths[i] = len;
    }
    let ev = nextEvent(b);
    assert.equal(a.writeBatch(out.slab, out.offsets, out.lengths, lens.length), lens.length);
    let got = await ev;
    b.stop();
    // One batch of capacity 4 was read before the callback; the other 2 wait for a read.
    assert.deepEqual(got, { err: null, read: 4 });
    for (let i = 0; i < 4; i++) {
      assert.equal(inb.lengths[i], lens[i]);
      assert.ok(inb.slab.subarray(inb.offsets[i], inb.offsets[i] + lens[i]).equals(packet(i, lens[i])));
    }
    ev = nextEvent(b);
    got = await ev;
    b.stop();
    assert.deepEqual(got, { err: null, read: 2 });
    assert.equal(inb.lengths[0], 99);
    assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), 0);
    // Unbound: the callback gets no count and the packet is still there to read.
    b.bindRead();
    ev = nextEvent(b);
    assert.equal(a.writeBatch(out.slab, out.offsets, out.lengths, 1), 1);
    got = await ev;
    b.stop();
    assert.deepEqual(got, { err: null, read: undefined });
    assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), 1);
  } finally {
    a.close();
    b.close();
  }
});

test('TUN: bad bound buffers are refused before anything is bound; closing releases the binding', () => {
  const [a, b] = NativeTunDevice.pair();
  const inb = new PacketBatch(4, 2048, 16);
  assert.throws(() => b.bindRead(inb.slab, inb.slotSize, inb.headroom, 8, inb.lengths), RangeError);
  assert.throws(() => b.bindRead(inb.slab, 16, 16, 1, inb.lengths), RangeError);
  assert.throws(() => b.bindRead('slab' as never, 2048, 16, 1, inb.lengths), TypeError);
  assert.throws(() => b.bindRead(inb.slab, 2048) as never, TypeError);
  b.bindRead(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths);
  b.bindRead(inb.slab, inb.slotSize, inb.headroom, 2, inb.lengths); // rebinding replaces
  b.close();
  b.bindRead(); // unbinding a closed handle is harmless
  a.close();
});

test('UDP: an event receives its datagrams into the bound buffers, with sources and offsets', async () => {
  const rx = NativeUdpSocket.open({ address: '127.0.0.1' });
  const tx = NativeUdpSocket.open({ address: '127.0.0.1' });
  try {
    const inb = new PacketBatch(8, 2048, 0);
    rx.bindRead(inb.slab, inb.slotSize, 0, inb.capacity, inb.lengths, inb.endpoints, inb.offsets);
    const out = new PacketBatch(3, 2048, 0);
    const lens = [32, 1200, 7];
    for (const [i, len] of lens.entries()) {
      packet(i, len).copy(out.slab, out.offsets[i]);
      out.lengths[i] = len;
      makeEndpoint(Buffer.from([127, 0, 0, 1]), rx.localPort).copy(out.endpoints, i * 36);
    }
    const ev = nextEvent(rx);
    assert.equal(tx.sendBatch(out.slab, out.offsets, out.lengths, out.endpoints, 3), 3);
    const got = await ev;
    rx.stop();
    assert.equal(got.err, null);
    assert.ok(got.read !== undefined && got.read >= 1 && got.read <= 3, `read ${got.read}`);
    let n = got.read;
    // Datagrams that arrived after the event's read wait for recvBatch.
    while (n < 3) {
      const more = rx.recvBatch(
        inb.slab,
        inb.slotSize,
        0,
        inb.capacity,
        inb.lengths,
        inb.endpoints,
        inb.offsets,
      );
      assert.ok(more > 0);
      n += more;
    }
    if (got.read === 3)
      for (const [i, len] of lens.entries()) {
        assert.equal(inb.lengths[i], len);
        assert.ok(inb.slab.subarray(inb.offsets[i], inb.offsets[i] + len).equals(packet(i, len)));
        assert.equal(endpointPort(inb.endpoints, i * 36), tx.localPort);
      }
    else assert.equal(endpointPort(inb.endpoints, 0), tx.localPort);
  } finally {
    rx.close();
    tx.close();
  }
});

test('UDP: bad bound buffers are refused', () => {
  const s = NativeUdpSocket.open({ address: '127.0.0.1' });
  try {
    const inb = new PacketBatch(8, 2048, 0);
    assert.throws(() => s.bindRead(inb.slab, inb.slotSize, 0, 8, inb.lengths, Buffer.alloc(36)), RangeError);
    assert.throws(
      () => s.bindRead(inb.slab, inb.slotSize, 0, 8, inb.lengths, inb.endpoints, new Uint32Array(2)),
      RangeError,
    );
    assert.throws(() => s.bindRead(inb.slab, inb.slotSize, 0, 8) as never, TypeError);
  } finally {
    s.close();
  }
});
