// The NIC data plane receives tenant messages of any size a WireGuard message holds: its
// receive slots take whole 64 KiB messages (they took 2,048 bytes, so inner packets over
// about 2,000 bytes were cut and dropped at receive). Each one is decrypted and handed to the
// forwarder, which delivers it or counts its own drop (the forwarder's slab is sized in
// forwarding.ts); none is lost uncounted.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { MAX_PACKET } from '../../src/device/pump.js';
import { allowWithinTenant, FakeNicNet, link, settle } from '../helpers/nic-fakenet.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const fake = new FakeNicNet();
after(() => fake.close());

test('tenant messages up to MAX_PACKET are received whole by the NIC, then delivered or counted', async () => {
  const A = await fake.nic('a', '198.19.1.2', '198.18.0.11');
  const B = await fake.nic('b', '198.19.2.2', '198.18.0.12');
  const w1 = await fake.place(A, '198.19.1.1', 't1', 'w1', '100.64.1.11');
  const w2 = await fake.place(A, '198.19.1.1', 't1', 'w2', '100.64.1.12');
  const r1 = await fake.place(B, '198.19.2.1', 't1', 'r1', '100.64.1.21');
  await settle(200);
  await link(
    A,
    B,
    't1',
    [
      ['w1', '100.64.1.11'],
      ['w2', '100.64.1.12'],
    ],
    [['r1', '100.64.1.21']],
  );
  for (const n of [A, B]) await n.api.setPolicy('t1', allowWithinTenant('t1'));
  // Open both sessions with a small packet first.
  w1.send(ipv4Packet('100.64.1.11', '100.64.1.12', 100));
  w1.send(ipv4Packet('100.64.1.11', '100.64.1.21', 100));
  await settle(150);
  w1.send(ipv4Packet('100.64.1.11', '100.64.1.21', 100));
  await settle(80);
  w2.received.length = 0;
  r1.received.length = 0;
  const engine = A.svc.agent.engine.counters;
  const fwd = A.svc.agent.forwarder.counters;
  for (const size of [1420, 2000, 2100, 4000, 8920, 9000, 30_000, MAX_PACKET - 64]) {
    const same = ipv4Packet('100.64.1.11', '100.64.1.12', size - 20, size & 0xff);
    const cross = ipv4Packet('100.64.1.11', '100.64.1.21', size - 20, size & 0xff);
    for (const [packet, to] of [
      [same, w2],
      [cross, r1],
    ] as const) {
      const rx = engine.rxPackets;
      const dropped = Object.values(fwd.dropped).reduce((x, y) => x + y, 0);
      w1.send(packet);
      await settle(60);
      assert.equal(engine.rxPackets, rx + 1, `a ${size}-byte message was not received by the NIC`);
      const droppedNow = Object.values(fwd.dropped).reduce((x, y) => x + y, 0);
      if (size <= 2000 || droppedNow === dropped) {
        assert.equal(to.received.length, 1, `a ${size}-byte packet was not delivered`);
        assert.deepEqual(to.received.pop(), packet);
      } else {
        assert.equal(droppedNow, dropped + 1);
        assert.equal(to.received.length, 0);
      }
    }
  }
  const io = A.svc.dataPlane.ioCounters();
  assert.equal(io.hostRxTruncated + io.fabricRxTruncated, 0);
});
