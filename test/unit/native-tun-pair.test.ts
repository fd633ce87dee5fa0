// TUN handles joined back to back (NativeTunDevice.pair): what one writes the other reads, a
// packet at a time, with and without the virtio_net_hdr; the adopting constructor refuses
// anything but a socket and owns the fd it was given.
import assert from 'node:assert/strict';
import { openSync, readdirSync } from 'node:fs';
import { test } from 'node:test';
import { PacketBatch } from '../../src/native/batch.js';
import { loadNative } from '../../src/native/binding.js';
import { NativeTunDevice } from '../../src/native/tun.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const fds = (): number => readdirSync('/proc/self/fd').length;

for (const vnetHdr of [false, true]) {
  test(`a pair carries packets both ways, one per read (vnetHdr ${vnetHdr})`, () => {
    const before = fds();
    const [a, b] = NativeTunDevice.pair('tgpair', { vnetHdr });
    try {
      assert.equal(a.name, 'tgpair');
      const batch = new PacketBatch(8, 65_536, 0);
      for (const [from, to] of [
        [a, b],
        [b, a],
      ]) {
        const sizes = [60, 1400, 9000];
        for (const [i, size] of sizes.entries()) {
          const p = ipv4Packet('100.64.0.1', '100.64.0.2', size - 20, i + 1);
          p.copy(batch.slab, i * batch.slotSize);
          batch.offsets[i] = i * batch.slotSize;
          batch.lengths[i] = p.length;
        }
        from.writeBatch(batch.slab, batch.offsets, batch.lengths, sizes.length);
        const got = new PacketBatch(8, 65_536, 16);
        assert.equal(to.readBatch(got.slab, got.slotSize, got.headroom, got.capacity, got.lengths), 3);
        for (const [i, size] of sizes.entries()) {
          assert.equal(got.lengths[i], size);
          const at = i * got.slotSize + got.headroom;
          assert.equal(got.slab[at + 20], i + 1, `packet ${i} has the wrong payload`);
        }
        assert.equal(to.readBatch(got.slab, got.slotSize, got.headroom, got.capacity, got.lengths), 0);
      }
    } finally {
      a.close();
      b.close();
    }
    assert.equal(fds(), before, 'closing the pair left an fd open');
  });
}

test('the adopting constructor refuses what is not a socket and closes it', () => {
  const { TunHandle } = loadNative();
  const before = fds();
  const fd = openSync('/dev/null', 'r');
  assert.throws(() => new TunHandle('x', false, false, fd), /ENOTSOCK/);
  assert.equal(fds(), before, 'the refused fd was not closed');
  assert.throws(() => new TunHandle('x', false, false, -1), TypeError);
  assert.throws(() => new TunHandle('x', false, false, 1.5 as number), /fd/);
});
