// The UDP socket's receive age limit (receiveMaxAge): datagrams that waited in the kernel's
// receive queue longer than the limit are dropped and counted (rxStale), the fresh ones
// behind them are handed over. Loopback only (127.0.0.1), a few datagrams.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { NativeUdpSocket } from '../../src/native/index.js';
import { ENDPOINT_SIZE, encodeEndpoint } from '../../src/net/endpoint.js';

const a = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
const b = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
after(() => {
  a.close();
  b.close();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function send(count: number, marker: number): void {
  const slab = Buffer.alloc(count * 64);
  const offsets = new Uint32Array(count);
  const lengths = new Uint32Array(count);
  const eps = Buffer.alloc(count * ENDPOINT_SIZE);
  for (let i = 0; i < count; i++) {
    offsets[i] = i * 64;
    lengths[i] = 32;
    slab.fill(marker + i, i * 64, i * 64 + 32);
    encodeEndpoint(`127.0.0.1:${b.localPort}`, eps, i * ENDPOINT_SIZE);
  }
  assert.equal(a.sendBatch(slab, offsets, lengths, eps, count), count);
}

function receive(withOffsets: boolean): number[] {
  const max = 16;
  const slab = Buffer.alloc(max * 2048);
  const lengths = new Uint32Array(max);
  const eps = Buffer.alloc(max * ENDPOINT_SIZE);
  const offsets = new Uint32Array(max);
  const n = b.recvBatch(slab, 2048, 0, max, lengths, eps, withOffsets ? offsets : undefined);
  return Array.from({ length: n }, (_, i) => slab[withOffsets ? offsets[i] : i * 2048]);
}

// The kernel turns its receive timestamps on through a deferred work item the first time a
// socket asks for them; until it has run, datagrams are stamped when they are read (age 0).
// Wait until a datagram that waited past the limit is dropped before judging ages.
async function timestampsLive(): Promise<void> {
  assert.equal(b.receiveMaxAge(100), 100);
  for (let i = 0; i < 40; i++) {
    const before = b.stats().rxStale;
    send(1, 0x01);
    await sleep(150);
    const got = receive(false);
    if (got.length === 0 && b.stats().rxStale - before === 1) return;
  }
  assert.fail('receive timestamps never became live');
}

for (const withOffsets of [false, true])
  test(`stale datagrams are dropped and counted, fresh ones behind them handed over (offsets: ${withOffsets})`, async () => {
    await timestampsLive();
    const before = b.stats().rxStale;
    send(3, 0x10);
    await sleep(250);
    send(2, 0x40);
    await sleep(10);
    assert.deepEqual(receive(withOffsets), [0x40, 0x41]);
    assert.equal(b.stats().rxStale - before, 3);
  });

test('without a limit (0) nothing is dropped for its age', async () => {
  assert.equal(b.receiveMaxAge(0), 0);
  const before = b.stats().rxStale;
  send(2, 0x60);
  await sleep(150);
  assert.deepEqual(receive(false), [0x60, 0x61]);
  assert.equal(b.stats().rxStale, before);
});

test('receiveMaxAge refuses a bad argument', () => {
  assert.throws(() => b.receiveMaxAge(-1), RangeError);
  assert.throws(() => b.receiveMaxAge('5' as never), TypeError);
  assert.equal(b.receiveMaxAge(), 0);
});
