import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import { chacha20poly1305 } from '@noble/ciphers/chacha.js';
import { blake2s } from '@noble/hashes/blake2.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { KeyedBlake2s } from '../../src/protocol/blake2s.js';
import {
  MESSAGE_COOKIE_REPLY_SIZE,
  MESSAGE_INITIATION_SIZE,
  MESSAGE_RESPONSE_SIZE,
  WG_IDENTIFIER,
} from '../../src/protocol/constants.js';
import {
  aeadOpenZeroNonce,
  aeadSealZeroNonce,
  clampPrivateKey,
  constantTimeEqual,
  dh,
  generatePrivateKey,
  hash,
  hmac,
  kdf1,
  kdf2,
  kdf3,
  keyFingerprint,
  keyFromBase64,
  keyFromHex,
  keyToBase64,
  keyToHex,
  mac,
  publicKeyOf,
  tai64n,
  tai64nAfter,
  xaeadOpen,
  xaeadSeal,
} from '../../src/protocol/crypto.js';
import * as msg from '../../src/protocol/messages.js';
import { INITIAL_CHAIN_KEY, INITIAL_HASH } from '../../src/protocol/noise.js';

const hex = (s: string): Buffer => Buffer.from(s, 'hex');

// wireguard-go device/kdf_test.go
const KDF_VECTORS = [
  {
    key: '746573742d6b6579',
    input: '746573742d696e707574',
    t0: '6f0e5ad38daba1bea8a0d213688736f19763239305e0f58aba697f9ffc41c633',
    t1: 'df1194df20802a4fe594cde27e92991c8cae66c366e8106aaa937a55fa371e8a',
    t2: 'fac6e2745a325f5dc5d11a5b165aad08b0ada28e7b4e666b7c077934a4d76c24',
  },
  {
    key: '776972656775617264',
    input: '776972656775617264',
    t0: '491d43bbfdaa8750aaf535e334ecbfe5129967cd64635101c566d4caefda96e8',
    t1: '1e71a379baefd8a79aa4662212fcafe19a23e2b609a3db7d6bcba8f560e3d25f',
    t2: '31e1ae48bddfbe5de38f295e5452b1909a1b4e38e183926af3780b0c1e1f0160',
  },
  {
    key: '',
    input: '',
    t0: '8387b46bf43eccfcf349552a095d8315c4055beb90208fb1be23b894bc2ed5d0',
    t1: '58a0e5f6faefccf4807bff1f05fa8a9217945762040bcec2f4b4a62bdfe0e86e',
    t2: '0ce6ea98ec548f8e281e93e32db65621c45eb18dc6f0a7ad94178610a2f7338e',
  },
];

test('KDF1/KDF2/KDF3 match wireguard-go known answers', () => {
  for (const v of KDF_VECTORS) {
    const [t0, t1, t2] = kdf3(hex(v.key), hex(v.input));
    assert.equal(t0.toString('hex'), v.t0);
    assert.equal(t1.toString('hex'), v.t1);
    assert.equal(t2.toString('hex'), v.t2);
    const [u0, u1] = kdf2(hex(v.key), hex(v.input));
    assert.equal(u0.toString('hex'), v.t0);
    assert.equal(u1.toString('hex'), v.t1);
    assert.equal(kdf1(hex(v.key), hex(v.input)).toString('hex'), v.t0);
  }
});

test('BLAKE2s-256 (RFC 7693 "abc") and keyed BLAKE2s (reference KAT)', () => {
  assert.equal(
    hash(Buffer.from('abc')).toString('hex'),
    '508c5e8c327c14e2e1a72ba34eeb452f37458b209ed63a294d999b4c86675982',
  );
  // hash(a, b) is HASH(a || b)
  assert.deepEqual(hash(Buffer.from('ab'), Buffer.from('c')), hash(Buffer.from('abc')));
  // blake2s-kat.txt: key 00..1f, empty input, 32-byte digest.
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  assert.equal(
    Buffer.from(blake2s(new Uint8Array(0), { key })).toString('hex'),
    '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49',
  );
  // MAC is keyed BLAKE2s with a 16-byte digest: a different parameter block, not a truncation.
  const m = mac(key, Buffer.from('x'));
  assert.equal(m.length, 16);
  assert.notDeepEqual(Buffer.from(m), Buffer.from(blake2s(Buffer.from('x'), { key })).subarray(0, 16));
  assert.deepEqual(Buffer.from(m), Buffer.from(blake2s(Buffer.from('x'), { key, dkLen: 16 })));
});

test('KeyedBlake2s (precompressed key) equals @noble/hashes and the reference KAT', () => {
  const key = Uint8Array.from({ length: 32 }, (_, i) => i);
  const out = new Uint8Array(32);
  new KeyedBlake2s(key, 32).macInto(new Uint8Array(0), 0, 0, out, 0);
  assert.equal(
    Buffer.from(out).toString('hex'),
    '48a8997da407876b3d79c0d92325ad3b89cbb754d86ab71aee047ad345fd2c49',
  );
  // blake2s-kat.txt, keyed, input 00 01 02 (3 bytes)
  const three = Uint8Array.of(0, 1, 2);
  new KeyedBlake2s(key, 32).macInto(three, 0, 3, out, 0);
  assert.deepEqual(Buffer.from(out), Buffer.from(blake2s(three, { key })));
  let seed = 7;
  const rnd = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let i = 0; i < 2000; i++) {
    const k = Uint8Array.from({ length: 1 + rnd(32) }, () => rnd(256));
    const outLen = 1 + rnd(32);
    const data = Uint8Array.from({ length: rnd(300) }, () => rnd(256));
    const mine = new Uint8Array(outLen + 4);
    const h = new KeyedBlake2s(k, outLen);
    h.macInto(data, 0, data.length, mine, 2);
    const ref = blake2s(data, { key: k, dkLen: outLen });
    assert.deepEqual(
      Buffer.from(mine.subarray(2, 2 + outLen)),
      Buffer.from(ref),
      `key ${k.length} out ${outLen} len ${data.length}`,
    );
    assert.ok(h.verify(data, 0, data.length, ref, 0));
    const wrong = Uint8Array.from(ref);
    wrong[rnd(outLen)] ^= 1;
    assert.ok(!h.verify(data, 0, data.length, wrong, 0));
  }
});

test('HMAC-BLAKE2s equals the RFC 2104 construction over BLAKE2s-256', () => {
  const key = Buffer.from('some key');
  const data = Buffer.from('some data to authenticate');
  const block = Buffer.alloc(64);
  key.copy(block);
  const ipad = Buffer.from(block.map((b) => b ^ 0x36));
  const opad = Buffer.from(block.map((b) => b ^ 0x5c));
  const inner = createHash('blake2s256').update(ipad).update(data).digest();
  const outer = createHash('blake2s256').update(opad).update(inner).digest();
  assert.deepEqual(hmac(key, data), outer);
  assert.deepEqual(hmac(key, data.subarray(0, 5), data.subarray(5)), outer);
});

test('X25519 matches RFC 7748 section 6.1', () => {
  const aPriv = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
  const aPub = hex('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
  const bPriv = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
  const bPub = hex('de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f');
  const shared = '4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742';
  assert.deepEqual(publicKeyOf(aPriv), aPub);
  assert.deepEqual(publicKeyOf(bPriv), bPub);
  assert.equal(dh(aPriv, bPub)?.toString('hex'), shared);
  assert.equal(dh(bPriv, aPub)?.toString('hex'), shared);
  // Low-order points give an all-zero result: refused.
  assert.equal(dh(aPriv, Buffer.alloc(32)), null);
  assert.equal(dh(aPriv, Buffer.alloc(31)), null);
});

test('generated keys are clamped and agree', () => {
  const a = generatePrivateKey();
  const b = generatePrivateKey();
  assert.equal(a[0] & 7, 0);
  assert.equal(a[31] & 0xc0, 0x40);
  assert.deepEqual(dh(a, publicKeyOf(b)), dh(b, publicKeyOf(a)));
  const c = Buffer.alloc(32, 0xff);
  clampPrivateKey(c);
  assert.equal(c[0], 0xf8);
  assert.equal(c[31], 0x7f);
});

test('initial chaining key and hash follow the construction and identifier', () => {
  assert.deepEqual(INITIAL_CHAIN_KEY, hash(Buffer.from('Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s')));
  assert.deepEqual(INITIAL_HASH, hash(INITIAL_CHAIN_KEY, Buffer.from(WG_IDENTIFIER)));
  assert.equal(
    INITIAL_CHAIN_KEY.toString('hex'),
    '60e26daef327efc02ec335e2a025d2d016eb4206f87277f52d38d1988b78cd36',
  );
});

test('AEAD with the zero nonce round-trips and authenticates the AAD', () => {
  const key = generatePrivateKey();
  const out = Buffer.alloc(12 + 16);
  aeadSealZeroNonce(key, Buffer.from('hello world!'), Buffer.from('aad'), out, 0);
  assert.deepEqual(aeadOpenZeroNonce(key, out, Buffer.from('aad')), Buffer.from('hello world!'));
  assert.equal(aeadOpenZeroNonce(key, out, Buffer.from('aaD')), null);
  out[3] ^= 1;
  assert.equal(aeadOpenZeroNonce(key, out, Buffer.from('aad')), null);
  assert.equal(aeadOpenZeroNonce(key, Buffer.alloc(5), Buffer.alloc(0)), null);
  // Same as an independent implementation.
  const ref = chacha20poly1305(key, new Uint8Array(12), Buffer.from('aad')).encrypt(Buffer.from('x'));
  const mine = Buffer.alloc(17);
  aeadSealZeroNonce(key, Buffer.from('x'), Buffer.from('aad'), mine, 0);
  assert.deepEqual(mine, Buffer.from(ref));
});

test('XChaCha20-Poly1305 round-trips', () => {
  const key = generatePrivateKey();
  const nonce = Buffer.alloc(24, 7);
  const sealed = xaeadSeal(key, nonce, Buffer.alloc(16, 1), Buffer.from('mac1'));
  assert.equal(sealed.length, 32);
  assert.deepEqual(
    Buffer.from(xaeadOpen(key, nonce, sealed, Buffer.from('mac1')) ?? []),
    Buffer.alloc(16, 1),
  );
  assert.equal(xaeadOpen(key, nonce, sealed, Buffer.from('mac2')), null);
  assert.equal(xaeadOpen(key, nonce.subarray(1), sealed, Buffer.from('mac1')), null);
});

test('JsTransportAead seals and opens a batch in place with nonce = 0^4 || counter LE', () => {
  const aead = new JsTransportAead();
  const keys = [generatePrivateKey(), generatePrivateKey()];
  const buf = Buffer.alloc(200);
  const offsets = Uint32Array.of(0, 96);
  const plain = Uint32Array.of(32, 48);
  const payloads = [Buffer.alloc(32, 0x41), Buffer.alloc(48, 0x42)];
  const counters = [5, 2 ** 40 + 3];
  for (let i = 0; i < 2; i++) {
    msg.writeTransportHeader(buf, offsets[i], 77, msg.counterLow(counters[i]), msg.counterHigh(counters[i]));
    payloads[i].copy(buf, offsets[i] + 16);
  }
  aead.sealBatch(buf, offsets, plain, keys, 2);
  for (let i = 0; i < 2; i++) {
    const nonce = Buffer.alloc(12);
    buf.copy(nonce, 4, offsets[i] + 8, offsets[i] + 16);
    const ref = chacha20poly1305(keys[i], nonce).encrypt(payloads[i]);
    assert.deepEqual(buf.subarray(offsets[i] + 16, offsets[i] + 16 + plain[i] + 16), Buffer.from(ref));
    assert.equal(msg.readTransportCounter(buf, offsets[i]), counters[i]);
  }
  const lengths = Uint32Array.of(16 + 32 + 16, 16 + 48 + 16);
  buf[offsets[1] + 20] ^= 0x80; // tamper with the second
  const ok = new Uint8Array(2);
  aead.openBatch(buf, offsets, lengths, keys, 2, ok);
  assert.deepEqual([...ok], [1, 0]);
  assert.deepEqual(buf.subarray(16, 48), payloads[0]);
  // Too short to hold a tag: not ok, nothing thrown.
  aead.openBatch(buf, Uint32Array.of(0), Uint32Array.of(20), keys, 1, ok);
  assert.equal(ok[0], 0);
});

test('TAI64N labels: format, whitening, order', () => {
  const t = Buffer.alloc(12);
  tai64n(1_700_000_000_123, t);
  assert.equal(t.readUInt32BE(0), 0x40000000);
  assert.equal(t.readUInt32BE(4), 1_700_000_000 + 10);
  // 123 ms = 123000000 ns, whitened down to a multiple of 2^24 ns.
  assert.equal(t.readUInt32BE(8), 123_000_000 - (123_000_000 % 0x1000000));
  const later = Buffer.alloc(12);
  tai64n(1_700_000_000_123 + 20, later);
  assert.ok(tai64nAfter(later, t));
  assert.ok(!tai64nAfter(t, t));
  const same = Buffer.alloc(12);
  tai64n(1_700_000_000_124, same);
  assert.ok(!tai64nAfter(same, t), 'within one whitening step the label does not move');
});

test('key codec: base64 and hex, strict', () => {
  const k = generatePrivateKey();
  assert.deepEqual(keyFromBase64(keyToBase64(k)), k);
  assert.deepEqual(keyFromHex(keyToHex(k)), k);
  assert.throws(() => keyFromBase64('AAAA'), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.throws(() => keyFromBase64(`${keyToBase64(k).slice(0, 42)}B=`), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.throws(() => keyFromHex('zz'.repeat(32)), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.match(keyFingerprint(publicKeyOf(k)), /^.{4}….{4}$/);
  assert.ok(constantTimeEqual(k, Buffer.from(k)));
  assert.ok(!constantTimeEqual(k, k.subarray(1)));
});

test('message offsets add up to the spec sizes', () => {
  assert.equal(msg.INITIATION_OFFSET_MAC2 + 16, MESSAGE_INITIATION_SIZE);
  assert.equal(msg.RESPONSE_OFFSET_MAC2 + 16, MESSAGE_RESPONSE_SIZE);
  assert.equal(msg.COOKIE_REPLY_OFFSET_COOKIE + msg.COOKIE_REPLY_COOKIE_SIZE, MESSAGE_COOKIE_REPLY_SIZE);
  assert.equal(msg.mac1Offset(MESSAGE_INITIATION_SIZE), msg.INITIATION_OFFSET_MAC1);
  assert.equal(msg.mac1Offset(MESSAGE_RESPONSE_SIZE), msg.RESPONSE_OFFSET_MAC1);
  const b = Buffer.alloc(16);
  b.writeUInt32LE(0xffffffff, 8);
  b.writeUInt32LE(0x1fffff, 12);
  assert.equal(msg.readTransportCounter(b, 0), 2 ** 53 - 1);
  b.writeUInt32LE(0x200000, 12);
  assert.equal(msg.readTransportCounter(b, 0), Number.POSITIVE_INFINITY);
});
