// NativeTunDevice.pair(): the addon's TUN handle on the two ends of an in-process packet
// channel (AF_UNIX SOCK_SEQPACKET), read and written like a TUN device without vnetHdr; and
// the handle refuses to adopt anything else.
import assert from 'node:assert/strict';
import { closeSync, openSync } from 'node:fs';
import { test } from 'node:test';
import { loadNative, NativeTunDevice, PacketBatch } from '../../src/native/index.js';

function packet(i: number, len: number): Buffer {
  const p = Buffer.alloc(len, i & 0xff);
  p[0] = 0x45;
  return p;
}

test('what one end writes in a batch, the other reads packet by packet, through readiness', async () => {
  const [a, b] = NativeTunDevice.pair();
  try {
    assert.equal(a.name, '');
    assert.ok(a.fd >= 0 && b.fd >= 0 && a.fd !== b.fd);
    const out = new PacketBatch(8, 2048, 16);
    const lens = [60, 1420, 1, 2000];
    for (const [i, len] of lens.entries()) {
      packet(i, len).copy(out.slab, out.offsets[i]);
      out.lengths[i] = len;
    }
    const readable = new Promise<void>((resolve, reject) =>
      b.start((err) => (err ? reject(err) : resolve())),
    );
    assert.equal(a.writeBatch(out.slab, out.offsets, out.lengths, lens.length), lens.length);
    await readable;
    b.stop();
    const inb = new PacketBatch(8, 2048, 16);
    assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), lens.length);
    for (const [i, len] of lens.entries()) {
      assert.equal(inb.lengths[i], len);
      assert.ok(inb.slab.subarray(inb.offsets[i], inb.offsets[i] + len).equals(packet(i, len)));
    }
    // Drained: the next read finds nothing, and the other direction works as well.
    assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), 0);
    assert.equal(b.writeBatch(out.slab, out.offsets, out.lengths, 1), 1);
    assert.equal(a.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), 1);
  } finally {
    a.close();
    b.close();
  }
});

test('a packet longer than a slot is a counted drop, as on a TUN device', () => {
  const [a, b] = NativeTunDevice.pair();
  try {
    const out = new PacketBatch(2, 4096, 0);
    out.lengths[0] = 3000;
    out.lengths[1] = 100;
    assert.equal(a.writeBatch(out.slab, out.offsets, out.lengths, 2), 2);
    const inb = new PacketBatch(4, 2048, 16);
    assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, inb.capacity, inb.lengths), 1);
    assert.equal(inb.lengths[0], 100);
    assert.equal(b.stats().rxTruncated, 1);
  } finally {
    a.close();
    b.close();
  }
});

test('closing one end: the other reads nothing, and I/O on the closed end is EBADF', () => {
  const [a, b] = NativeTunDevice.pair();
  a.close();
  a.close(); // idempotent
  assert.equal(a.fd, -1);
  const inb = new PacketBatch(2, 2048, 16);
  assert.throws(() => a.readBatch(inb.slab, inb.slotSize, inb.headroom, 2, inb.lengths), { code: 'EBADF' });
  assert.equal(b.readBatch(inb.slab, inb.slotSize, inb.headroom, 2, inb.lengths), 0);
  b.close();
});

test('the handle adopts only a SOCK_SEQPACKET unix socket, without queues or a vnet header', () => {
  const { TunHandle, seqpacketPair } = loadNative();
  const fd = openSync('/dev/null', 'r');
  try {
    assert.throws(() => new TunHandle(fd, false, false), { code: 'ENOTSOCK' });
  } finally {
    closeSync(fd);
  }
  assert.throws(() => new TunHandle(-1, false, false), TypeError);
  const [x, y] = seqpacketPair();
  try {
    assert.throws(() => new TunHandle(x, true, false), RangeError);
    assert.throws(() => new TunHandle(x, false, true), RangeError);
  } finally {
    closeSync(x);
    closeSync(y);
  }
});
