// The batched native AEAD against RFC 8439 known answers and two independent
// implementations (node:crypto and @noble/ciphers), plus its handling of forgeries and
// bad arguments.
import assert from 'node:assert/strict';
import { createCipheriv, randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import {
  aeadImplementation,
  CRYPTO_THREADS_ENV,
  cryptoPoolStats,
  cryptoThreadsDefault,
  NativeAead,
  setCryptoThreads,
} from '../../src/native/index.js';

const HEADER = 16;
const TAG = 16;
const SUNSCREEN = Buffer.from(
  "Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.",
);

/** WireGuard transport header: type 4, receiver, counter (all little-endian). */
function writeHeader(buf: Buffer, at: number, receiver: number, counter: bigint): void {
  buf.writeUInt32LE(4, at);
  buf.writeUInt32LE(receiver, at + 4);
  buf.writeBigUInt64LE(counter, at + 8);
}

function nonceOf(counter: bigint): Buffer {
  const n = Buffer.alloc(12);
  n.writeBigUInt64LE(counter, 4);
  return n;
}

/** ciphertext || tag from node:crypto, AAD empty. */
function nodeSeal(key: Buffer, counter: bigint, plain: Buffer): Buffer {
  const c = createCipheriv('chacha20-poly1305', key, nonceOf(counter), { authTagLength: TAG });
  return Buffer.concat([c.update(plain), c.final(), c.getAuthTag()]);
}

/** One packet in its own buffer: header, plaintext, room for the tag. */
function packet(plain: Buffer, counter: bigint): Buffer {
  const buf = Buffer.alloc(HEADER + plain.length + TAG);
  writeHeader(buf, 0, 0x11223344, counter);
  plain.copy(buf, HEADER);
  return buf;
}

test('node:crypto, the cross-check reference, reproduces RFC 8439 section 2.8.2', () => {
  const key = Buffer.from('808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f', 'hex');
  const nonce = Buffer.from('070000004041424344454647', 'hex');
  const c = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: TAG });
  c.setAAD(Buffer.from('50515253c0c1c2c3c4c5c6c7', 'hex'), { plaintextLength: SUNSCREEN.length });
  const out = Buffer.concat([c.update(SUNSCREEN), c.final(), c.getAuthTag()]);
  assert.equal(
    out.toString('hex'),
    'd31a8d34648e60db7b86afbc53ef7ec2a4aded51296e08fea9e2b5a736ee62d63dbea45e8ca9671282fafb69da92728b' +
      '1a71de0a9e060b2905d6a5b67ecd3b3692ddbd7f2d778b8c9803aee328091b58fab324e4fad675945585808b4831d7bc' +
      '3ff4def08e4b7a9de576d26586cec64b61161ae10b594f09e26a7e902ecbd0600691',
  );
});

test('sealBatch ciphertext is RFC 8439 section 2.4.2 when the header counter gives its nonce', () => {
  // Nonce 00000000 || 000000 4a 00000000 is "4 zero bytes || counter LE" for counter 0x4a000000;
  // the AEAD encrypts from block counter 1, exactly as the 2.4.2 example does.
  const key = Buffer.from(Array.from({ length: 32 }, (_, i) => i));
  const counter = 0x4a000000n;
  const buf = packet(SUNSCREEN, counter);
  const aead = new NativeAead();
  aead.sealBatch(buf, Uint32Array.of(0), Uint32Array.of(SUNSCREEN.length), [key], 1);
  assert.equal(
    buf.subarray(HEADER, HEADER + SUNSCREEN.length).toString('hex'),
    '6e2e359a2568f98041ba0728dd0d6981e97e7aec1d4360c20a27afccfd9fae0bf91b65c5524733ab8f593dabcd62b357' +
      '1639d624e65152ab8f530c359f0861d807ca0dbf500d6a6156a38e088a22b65e52bc514d16ccf806818ce91ab7793736' +
      '5af90bbf74a35be6b40b8eedf2785e42874d',
  );
  const sealed = buf.subarray(HEADER);
  assert.deepEqual(sealed, nodeSeal(key, counter, SUNSCREEN));
  assert.deepEqual(
    Buffer.from(chacha20poly1305(key, nonceOf(counter)).encrypt(SUNSCREEN)),
    Buffer.from(sealed),
  );
  assert.equal(buf.readBigUInt64LE(8), counter, 'the header is left as it was');

  const ok = new Uint8Array(1);
  aead.openBatch(buf, Uint32Array.of(0), Uint32Array.of(buf.length), [key], 1, ok);
  assert.equal(ok[0], 1);
  assert.deepEqual(buf.subarray(HEADER, HEADER + SUNSCREEN.length), SUNSCREEN);
  aead.close();
});

test('sealBatch and openBatch agree with node:crypto and @noble/ciphers over a mixed batch of 256', () => {
  const keys = [randomBytes(32), randomBytes(32), randomBytes(32)];
  const slot = 2048;
  const count = 256;
  const buf = Buffer.alloc(count * slot + 7);
  const offsets = new Uint32Array(count);
  const plainLengths = new Uint32Array(count);
  const batchKeys: Buffer[] = [];
  const plains: Buffer[] = [];
  const counters: bigint[] = [];
  for (let i = 0; i < count; i++) {
    // Odd offsets and every size class: keepalive (0), short, block edges, full MTU.
    offsets[i] = i * slot + (i % 7);
    plainLengths[i] = [0, 1, 15, 16, 63, 64, 65, 1420, 1440, 2000][i % 10];
    const counter = i === count - 1 ? 0xffffffffffffffffn : BigInt(i) * 0x1_0000_0001n;
    const plain = randomBytes(plainLengths[i]);
    writeHeader(buf, offsets[i], i, counter);
    plain.copy(buf, offsets[i] + HEADER);
    batchKeys.push(keys[(i * 7) % 3]); // runs of one key and switches between keys
    plains.push(plain);
    counters.push(counter);
  }
  const aead = new NativeAead();
  aead.sealBatch(buf, offsets, plainLengths, batchKeys, count);
  const lengths = new Uint32Array(count);
  for (let i = 0; i < count; i++) {
    const sealed = buf.subarray(offsets[i] + HEADER, offsets[i] + HEADER + plainLengths[i] + TAG);
    assert.deepEqual(sealed, nodeSeal(batchKeys[i], counters[i], plains[i]), `packet ${i} vs node:crypto`);
    const noble = chacha20poly1305(batchKeys[i], nonceOf(counters[i])).encrypt(plains[i]);
    assert.deepEqual(Buffer.from(noble), Buffer.from(sealed), `packet ${i} vs noble`);
    lengths[i] = HEADER + plainLengths[i] + TAG;
  }
  const ok = new Uint8Array(count);
  aead.openBatch(buf, offsets, lengths, batchKeys, count, ok);
  for (let i = 0; i < count; i++) {
    assert.equal(ok[i], 1, `packet ${i} verifies`);
    assert.deepEqual(buf.subarray(offsets[i] + HEADER, offsets[i] + HEADER + plainLengths[i]), plains[i]);
  }
  aead.close();
});

test('openBatch marks forgeries 0, wipes their plaintext, and still opens the rest of the batch', () => {
  const key = randomBytes(32);
  const other = randomBytes(32);
  const plain = randomBytes(100);
  const slot = 256;
  const cases = ['good', 'flipped ciphertext', 'flipped tag', 'wrong key', 'wrong counter', 'good'] as const;
  const buf = Buffer.alloc(cases.length * slot);
  const offsets = new Uint32Array(cases.length);
  const lengths = new Uint32Array(cases.length);
  const keys: Buffer[] = [];
  for (let i = 0; i < cases.length; i++) {
    offsets[i] = i * slot;
    lengths[i] = HEADER + plain.length + TAG;
    writeHeader(buf, offsets[i], 1, 1000n + BigInt(i));
    nodeSeal(key, 1000n + BigInt(i), plain).copy(buf, offsets[i] + HEADER);
    keys.push(key);
  }
  buf[offsets[1] + HEADER + 50] ^= 0x01;
  buf[offsets[2] + HEADER + plain.length + 3] ^= 0x80;
  keys[3] = other;
  buf.writeBigUInt64LE(999n, offsets[4] + 8);

  const ok = new Uint8Array(cases.length).fill(7);
  const aead = new NativeAead();
  aead.openBatch(buf, offsets, lengths, keys, cases.length, ok);
  assert.deepEqual([...ok], [1, 0, 0, 0, 0, 1]);
  for (let i = 0; i < cases.length; i++) {
    const out = buf.subarray(offsets[i] + HEADER, offsets[i] + HEADER + plain.length);
    if (ok[i] === 1) assert.deepEqual(out, plain, cases[i]);
    else
      assert.ok(
        out.every((b) => b === 0),
        `${cases[i]}: unauthenticated plaintext is wiped`,
      );
  }
  aead.close();
});

test('bad arguments throw TypeError/RangeError and leave the buffer untouched', () => {
  const aead = new NativeAead();
  const key = randomBytes(32);
  const buf = randomBytes(256);
  const before = Buffer.from(buf);
  const one = Uint32Array.of(0);
  const cases: [string, () => void, typeof TypeError | typeof RangeError, RegExp][] = [
    [
      'buf not bytes',
      () => aead.sealBatch('x' as never, one, Uint32Array.of(10), [key], 1),
      TypeError,
      /buf must/,
    ],
    [
      'offsets not Uint32Array',
      () => aead.sealBatch(buf, [0] as never, Uint32Array.of(10), [key], 1),
      TypeError,
      /offsets/,
    ],
    [
      'count beyond arrays',
      () => aead.sealBatch(buf, one, Uint32Array.of(10), [key, key], 2),
      RangeError,
      /count \(2\)/,
    ],
    [
      'count not integer',
      () => aead.sealBatch(buf, one, Uint32Array.of(10), [key], 0.5),
      RangeError,
      /count/,
    ],
    [
      'seal past end',
      () => aead.sealBatch(buf, Uint32Array.of(200), Uint32Array.of(30), [key], 1),
      RangeError,
      /past the buffer/,
    ],
    [
      'plain length wraps',
      () => aead.sealBatch(buf, one, Uint32Array.of(0xffffffff), [key], 1),
      RangeError,
      /too large/,
    ],
    [
      'keys not array',
      () => aead.sealBatch(buf, one, Uint32Array.of(10), key as never, 1),
      TypeError,
      /keys must be an array/,
    ],
    [
      'short key',
      () => aead.sealBatch(buf, one, Uint32Array.of(10), [key.subarray(0, 31)], 1),
      RangeError,
      /keys\[0\] must be 32/,
    ],
    [
      'key not bytes',
      () => aead.sealBatch(buf, one, Uint32Array.of(10), ['k'] as never, 1),
      TypeError,
      /keys\[0\]/,
    ],
    ['too few keys', () => aead.sealBatch(buf, one, Uint32Array.of(10), [], 1), RangeError, /keys.length/],
    [
      'open shorter than header+tag',
      () => aead.openBatch(buf, one, Uint32Array.of(31), [key], 1, new Uint8Array(1)),
      RangeError,
      /at least 32/,
    ],
    [
      'open past end',
      () => aead.openBatch(buf, Uint32Array.of(250), Uint32Array.of(32), [key], 1, new Uint8Array(1)),
      RangeError,
      /past the buffer/,
    ],
    [
      'ok too short',
      () => aead.openBatch(buf, one, Uint32Array.of(32), [key], 1, new Uint8Array(0)),
      RangeError,
      /ok.length/,
    ],
    [
      'ok not bytes',
      () => aead.openBatch(buf, one, Uint32Array.of(32), [key], 1, [0] as never),
      TypeError,
      /ok must/,
    ],
    [
      'missing arguments',
      () => (aead.sealBatch as (...a: unknown[]) => void)(buf),
      TypeError,
      /offsets must be/,
    ],
  ];
  for (const [name, fn, cls, message] of cases) {
    assert.throws(fn, (err: Error & { code?: string }) => {
      assert.ok(err instanceof cls, `${name}: ${err.constructor.name}`);
      assert.match(err.message, message, name);
      assert.match(err.code ?? '', /^ERR_(INVALID_ARG_TYPE|OUT_OF_RANGE)$/, name);
      return true;
    });
  }
  assert.deepEqual(buf, before, 'no byte was written');
  aead.close();
});

test('a closed context refuses work; close is idempotent', () => {
  const aead = new NativeAead();
  aead.close();
  aead.close();
  const buf = Buffer.alloc(64);
  assert.throws(
    () => aead.sealBatch(buf, Uint32Array.of(0), Uint32Array.of(0), [Buffer.alloc(32)], 1),
    (err: Error & { code?: string }) => err.code === 'ERR_TG_CLOSED',
  );
});

/** A batch of `count` packets of `size` bytes under rotating keys, sealed by node:crypto for comparison. */
function bigBatch(count: number, size: number) {
  const keys = [randomBytes(32), randomBytes(32)];
  const slot = (HEADER + size + TAG + 63) & ~63;
  const buf = Buffer.alloc(count * slot);
  const offsets = new Uint32Array(count);
  const plainLengths = new Uint32Array(count).fill(size);
  const lengths = new Uint32Array(count).fill(HEADER + size + TAG);
  const batchKeys: Buffer[] = [];
  const plains: Buffer[] = [];
  const expected: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    offsets[i] = i * slot;
    const plain = randomBytes(size);
    writeHeader(buf, offsets[i], i, BigInt(i) + 7n);
    plain.copy(buf, offsets[i] + HEADER);
    batchKeys.push(keys[Math.floor(i / 5) % 2]);
    plains.push(plain);
    expected.push(nodeSeal(batchKeys[i], BigInt(i) + 7n, plain));
  }
  return { buf, offsets, plainLengths, lengths, batchKeys, plains, expected };
}

test('with 2 crypto threads a large batch is split, seals and opens exactly as inline, forgeries still caught', () => {
  const before = cryptoPoolStats();
  setCryptoThreads(2);
  try {
    const aead = new NativeAead();
    const deadline = Date.now() + 5000;
    // Until a worker thread has taken a part at least once (a loaded host may let the calling
    // thread take both parts of a batch; that is allowed, and the results must not differ).
    for (let round = 0; ; round++) {
      const b = bigBatch(64, 1420);
      aead.sealBatch(b.buf, b.offsets, b.plainLengths, b.batchKeys, 64);
      for (let i = 0; i < 64; i++)
        assert.deepEqual(
          b.buf.subarray(b.offsets[i] + HEADER, b.offsets[i] + HEADER + 1420 + TAG),
          b.expected[i],
          `round ${round} packet ${i}`,
        );
      b.buf[b.offsets[50] + HEADER + 3] ^= 1; // a forgery in the second half
      const ok = new Uint8Array(64);
      aead.openBatch(b.buf, b.offsets, b.lengths, b.batchKeys, 64, ok);
      for (let i = 0; i < 64; i++) {
        const out = b.buf.subarray(b.offsets[i] + HEADER, b.offsets[i] + HEADER + 1420);
        if (i === 50) {
          assert.equal(ok[i], 0);
          assert.ok(out.every((x) => x === 0));
        } else {
          assert.equal(ok[i], 1, `round ${round} packet ${i} opens`);
          assert.deepEqual(out, b.plains[i]);
        }
      }
      if (cryptoPoolStats().workerParts > before.workerParts || Date.now() > deadline) break;
    }
    const after = cryptoPoolStats();
    assert.equal(after.threads, 2);
    assert.ok(after.workers >= 1);
    assert.ok(after.parallelBatches > before.parallelBatches, 'large batches were split');
    assert.ok(after.workerParts > before.workerParts, 'a worker thread did part of a batch');
    aead.close();
  } finally {
    setCryptoThreads(before.threads);
  }
});

test('with 2 crypto threads single packets and small batches stay on the calling thread', () => {
  const before = cryptoPoolStats();
  setCryptoThreads(2);
  try {
    const aead = new NativeAead();
    for (const [count, size] of [
      [1, 1420],
      [1, 9000],
      [16, 1420], // 22 KiB: below two 16 KiB parts
    ]) {
      const b = bigBatch(count, size);
      aead.sealBatch(b.buf, b.offsets, b.plainLengths, b.batchKeys, count);
      assert.deepEqual(b.buf.subarray(HEADER, HEADER + size + TAG), b.expected[0]);
    }
    assert.equal(cryptoPoolStats().parallelBatches, before.parallelBatches);
    aead.close();
  } finally {
    setCryptoThreads(before.threads);
  }
});

test('setCryptoThreads refuses counts outside 1..16; the environment default is checked', () => {
  assert.throws(() => setCryptoThreads(0), RangeError);
  assert.throws(() => setCryptoThreads(17), RangeError);
  const saved = process.env[CRYPTO_THREADS_ENV];
  try {
    process.env[CRYPTO_THREADS_ENV] = '3';
    assert.equal(cryptoThreadsDefault(), 3);
    process.env[CRYPTO_THREADS_ENV] = 'lots';
    assert.throws(() => cryptoThreadsDefault(), /TENGUARD_CRYPTO_THREADS must be an integer/);
    delete process.env[CRYPTO_THREADS_ENV];
    const d = cryptoThreadsDefault();
    assert.ok(d >= 1 && d <= 4);
  } finally {
    if (saved === undefined) delete process.env[CRYPTO_THREADS_ENV];
    else process.env[CRYPTO_THREADS_ENV] = saved;
  }
});

test('on this node the AEAD is composed from OpenSSL primitives; both implementations agree, each opens the other, both catch forgeries', () => {
  assert.equal(aeadImplementation(), 'primitives', 'node exports ChaCha20_ctr32 and Poly1305_*');
  assert.throws(() => aeadImplementation('fast' as 'evp'), TypeError);
  const slot = 65_544;
  const sizes = [0, 1, 15, 16, 17, 63, 64, 65, 127, 1420, 1424, 8920, 65_535 - HEADER - TAG];
  const count = sizes.length;
  const keys = [randomBytes(32), randomBytes(32)];
  const make = (): { buf: Buffer; offsets: Uint32Array; plains: Buffer[]; lengths: Uint32Array } => {
    const buf = Buffer.alloc(count * slot);
    const offsets = new Uint32Array(count);
    const lengths = new Uint32Array(count);
    const plains: Buffer[] = [];
    for (let i = 0; i < count; i++) {
      offsets[i] = i * slot + (i % 5);
      lengths[i] = sizes[i];
      writeHeader(buf, offsets[i], i, 0xfffffffen + BigInt(i) * 0x1_0000_0000n);
      const plain = randomBytes(sizes[i]);
      plain.copy(buf, offsets[i] + HEADER);
      plains.push(plain);
    }
    return { buf, offsets, plains, lengths };
  };
  const batchKeys = sizes.map((_, i) => keys[i % 2]);
  const whole = new Uint32Array(sizes.map((n) => HEADER + n + TAG));
  try {
    const a = make();
    const b = { ...a, buf: Buffer.from(a.buf) };
    aeadImplementation('primitives');
    const prim = new NativeAead();
    prim.sealBatch(a.buf, a.offsets, a.lengths, batchKeys, count);
    aeadImplementation('evp');
    const evp = new NativeAead();
    evp.sealBatch(b.buf, b.offsets, b.lengths, batchKeys, count);
    assert.ok(a.buf.equals(b.buf), 'the same messages from both');
    for (let i = 0; i < count; i++) {
      const counter = a.buf.readBigUInt64LE(a.offsets[i] + 8);
      const sealed = a.buf.subarray(a.offsets[i] + HEADER, a.offsets[i] + HEADER + sizes[i] + TAG);
      assert.deepEqual(
        sealed,
        nodeSeal(batchKeys[i], counter, a.plains[i]),
        `size ${sizes[i]} vs node:crypto`,
      );
    }
    // A forgery in each copy: a flipped ciphertext byte (a) and a flipped tag byte (b).
    a.buf[a.offsets[9] + HEADER + 700] ^= 1;
    b.buf[b.offsets[3] + HEADER + sizes[3] + 15] ^= 0x40;
    const okA = new Uint8Array(count);
    const okB = new Uint8Array(count);
    evp.openBatch(a.buf, a.offsets, whole, batchKeys, count, okA); // primitives' output, opened by EVP
    aeadImplementation('primitives');
    prim.openBatch(b.buf, b.offsets, whole, batchKeys, count, okB); // EVP's output, opened by primitives
    for (let i = 0; i < count; i++) {
      assert.equal(okA[i], i === 9 ? 0 : 1, `evp opens size ${sizes[i]}`);
      assert.equal(okB[i], i === 3 ? 0 : 1, `primitives open size ${sizes[i]}`);
      const outB = b.buf.subarray(b.offsets[i] + HEADER, b.offsets[i] + HEADER + sizes[i]);
      if (okB[i] === 1) assert.deepEqual(outB, b.plains[i]);
      else
        assert.ok(
          outB.every((x) => x === 0),
          'a forgery is wiped',
        );
      if (okA[i] === 1)
        assert.deepEqual(
          a.buf.subarray(a.offsets[i] + HEADER, a.offsets[i] + HEADER + sizes[i]),
          a.plains[i],
        );
    }
    prim.close();
    evp.close();
  } finally {
    aeadImplementation('primitives');
  }
});
