// Bad arguments are rejected before any memory is touched, with the same error class,
// code and message by the native socket and by its fake. The native socket is bound to
// 127.0.0.1 and never sends: no traffic leaves this test.
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { FakeNetwork } from '../../src/native/fake.js';
import { isDumpable, NativeUdpSocket, type PacketSocket, setDumpable } from '../../src/native/index.js';
import { ENDPOINT_SIZE } from '../../src/net/endpoint.js';
import { TgError } from '../../src/util/errors.js';

const native = NativeUdpSocket.open({ address: '127.0.0.1', port: 0 });
const fake = new FakeNetwork().createSocket({ address: '127.0.0.1' });
after(() => {
  native.close();
  fake.close();
});

type Call = (s: PacketSocket) => unknown;
const slab = Buffer.alloc(4096);
const lengths = new Uint32Array(4);
const eps = Buffer.alloc(4 * ENDPOINT_SIZE);
const goodEps = Buffer.alloc(4 * ENDPOINT_SIZE);
for (let i = 0; i < 4; i++) {
  goodEps[i * ENDPOINT_SIZE] = 4;
  goodEps.writeUInt16BE(9, i * ENDPOINT_SIZE + 2);
  goodEps[i * ENDPOINT_SIZE + 4] = 127;
  goodEps[i * ENDPOINT_SIZE + 7] = 1;
}

const cases: [string, Call][] = [
  ['slab not bytes', (s) => s.recvBatch([] as never, 1024, 16, 4, lengths, eps)],
  ['slotSize not a number', (s) => s.recvBatch(slab, '1024' as never, 16, 4, lengths, eps)],
  ['slotSize negative', (s) => s.recvBatch(slab, -1, 16, 4, lengths, eps)],
  ['slotSize fractional', (s) => s.recvBatch(slab, 1.5, 0, 1, lengths, eps)],
  ['headroom >= slotSize', (s) => s.recvBatch(slab, 1024, 1024, 4, lengths, eps)],
  ['max > lengths', (s) => s.recvBatch(slab, 1024, 16, 5, lengths, eps)],
  ['slots past slab', (s) => s.recvBatch(slab, 2048, 16, 3, lengths, eps)],
  ['lengths wrong type', (s) => s.recvBatch(slab, 1024, 16, 4, new Int32Array(4) as never, eps)],
  ['endpoints too short', (s) => s.recvBatch(slab, 1024, 16, 4, lengths, Buffer.alloc(79))],
  ['endpoints not bytes', (s) => s.recvBatch(slab, 1024, 16, 4, lengths, 'x' as never)],
  ['send past slab', (s) => s.sendBatch(slab, Uint32Array.of(4000), Uint32Array.of(97), goodEps, 1)],
  [
    'send offset near 2^32',
    (s) => s.sendBatch(slab, Uint32Array.of(0xffffffff), Uint32Array.of(2), goodEps, 1),
  ],
  ['send count > offsets', (s) => s.sendBatch(slab, Uint32Array.of(0), Uint32Array.of(1, 1), goodEps, 2)],
  [
    'send endpoints short',
    (s) =>
      s.sendBatch(
        slab,
        Uint32Array.of(0, 0),
        Uint32Array.of(1, 1),
        goodEps.subarray(0, 2 * ENDPOINT_SIZE - 1),
        2,
      ),
  ],
  ['send family 0', (s) => s.sendBatch(slab, Uint32Array.of(0), Uint32Array.of(1), Buffer.alloc(20), 1)],
  ['send count NaN', (s) => s.sendBatch(slab, Uint32Array.of(0), Uint32Array.of(1), goodEps, Number.NaN)],
];

test('native and fake sockets reject the same bad arguments with the same errors', () => {
  for (const [name, call] of cases) {
    const errors = [native, fake].map((s) => {
      try {
        call(s);
      } catch (err) {
        return err as Error & { code?: string };
      }
      return assert.fail(`${name}: no error from ${s === native ? 'native' : 'fake'}`);
    });
    const [n, f] = errors;
    assert.ok(n instanceof TypeError || n instanceof RangeError, `${name}: ${n.constructor.name}`);
    assert.equal(f.constructor, n.constructor, `${name}: class`);
    assert.equal(f.code, n.code, `${name}: code`);
    assert.equal(f.message, n.message, `${name}: message`);
  }
  assert.deepEqual(native.stats().txRejected + native.stats().txDropped, 0, 'nothing reached the kernel');
});

test('a native socket reports its bound endpoint and large buffers', () => {
  assert.match(native.localEndpoint(), /^127\.0\.0\.1:\d+$/);
  assert.ok(native.localPort > 0);
  assert.equal(native.family, 4);
  const { rcvBuf, sndBuf } = native.bufferSizes();
  assert.ok(rcvBuf > 0 && sndBuf > 0);
  const dual = NativeUdpSocket.open();
  try {
    assert.equal(dual.family, 6);
    assert.equal(dual.localEndpoint(), `[::]:${dual.localPort}`);
  } finally {
    dual.close();
  }
  assert.equal(dual.fd, -1);
  assert.throws(() => dual.localEndpoint(), { code: 'EBADF', syscall: 'getsockname' });
});

test('opening a socket on a port in use fails with TG_ERR_NATIVE and the errno as cause', () => {
  assert.throws(
    () => NativeUdpSocket.open({ address: '127.0.0.1', port: native.localPort }),
    (err) =>
      err instanceof TgError &&
      err.code === 'TG_ERR_NATIVE' &&
      (err.cause as { code?: string }).code === 'EADDRINUSE',
  );
  assert.throws(() => NativeUdpSocket.open({ address: 'not-an-ip' }), { code: 'TG_ERR_INVALID_ARGUMENT' });
});

test('setDumpable(false) makes the process non-dumpable and it can be read back', () => {
  const was = isDumpable();
  try {
    setDumpable(false);
    assert.equal(isDumpable(), false);
    setDumpable(true);
    assert.equal(isDumpable(), true);
  } finally {
    setDumpable(was);
  }
  assert.throws(() => setDumpable('no' as never), TypeError);
});
