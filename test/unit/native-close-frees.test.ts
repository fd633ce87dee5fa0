// Regression: the shared-mode vSwitch daemon's RSS grew about 31 KB with every workload
// created and deleted. Each device's UDP socket (and TUN) kept its batch buffers (256 message
// headers, iovecs and addresses, about 34 KB; 64 KB of TUN read state) until V8 happened to
// collect the closed handle's small wrapper, and V8 does not see that memory, so nothing
// prompted the collection. close() now frees them. Checked here with the wrappers still
// referenced, so only close() can have released anything.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NativeUdpSocket } from '../../src/native/index.js';
import { makeEndpoint } from '../../src/net/endpoint.js';

const ROUNDS = 1500;
const PACKETS = 128;

function rssMb(): number {
  return process.memoryUsage().rss / 1e6;
}

test('a closed UDP socket keeps no batch buffers while its wrapper is still referenced', () => {
  const sink = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
  const to = makeEndpoint(Uint8Array.from([127, 0, 0, 1]), sink.localPort);
  const slab = Buffer.alloc(PACKETS * 64, 0x5a);
  const offsets = Uint32Array.from({ length: PACKETS }, (_, i) => i * 64);
  const lengths = new Uint32Array(PACKETS).fill(8);
  const endpoints = Buffer.concat(Array.from({ length: PACKETS }, () => to));
  const kept: NativeUdpSocket[] = [];
  const once = (): void => {
    const s = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
    // Sending touches the message headers, so their pages are resident.
    s.sendBatch(slab, offsets, lengths, endpoints, PACKETS);
    s.close();
    kept.push(s);
  };
  for (let i = 0; i < 100; i++) once(); // warm-up: allocator arenas, code
  const before = rssMb();
  for (let i = 0; i < ROUNDS; i++) once();
  const grown = rssMb() - before;
  sink.close();
  // Kept buffers would add at least ROUNDS x 17 KB (the headers and addresses a 128-packet
  // send writes): 25 MB. Freed ones are reused by the next socket.
  assert.ok(grown < 8, `RSS grew ${grown.toFixed(1)} MB over ${ROUNDS} closed sockets`);
  assert.equal(kept.length, ROUNDS + 100);
  assert.throws(() => kept[0].sendBatch(slab, offsets, lengths, endpoints, 1), /EBADF/);
});
