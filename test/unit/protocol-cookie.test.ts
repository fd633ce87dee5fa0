import assert from 'node:assert/strict';
import { test } from 'node:test';
import { COOKIE_REFRESH_TIME } from '../../src/protocol/constants.js';
import { CookieChecker, CookieGenerator } from '../../src/protocol/cookie.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';

// Message bodies from wireguard-go's cookie_test.go (any bytes work: MACs cover the prefix).
const MSG_128 = Buffer.from(
  '99bba5fc99aa83bd7b00c59a4cb9cf624023f38ed8d062645db28013dacec691' +
    '61d630f132b3a2f47b43b5a7e2b1f56c746bb0cd1f94867bc8fb92ed549b44f5' +
    'c87db78eff49c4e8397c19e0601951f8e48e02f17f1dcc8eb007fff8af7f6682' +
    '83cc7cfa80db8153adf7d80c10e020fde80b3f9015cd93ad0bd50ccc8856e43f',
  'hex',
);
const MSG_64 = Buffer.from(
  '33e72a849fff576c2dc32de1f55c9756b893c27dd441dd7a4a593b50dd7a7a8c' +
    '9b96af553ceb6d0b130b9798b340c3ccb85733456e8b092b812ed2b9660b9305',
  'hex',
);
const MSG_32 = Buffer.from('9b96af553ceb6d0b130b9798b340c3ccb85733456e8b092b812ed2b9660b9305', 'hex');

const SRC = Uint8Array.of(192, 168, 13, 37, 10, 10);

function setup() {
  const pk = publicKeyOf(generatePrivateKey());
  return { generator: new CookieGenerator(pk), checker: new CookieChecker(pk) };
}

test('MAC1 generation and verification; MAC2 absent without a cookie', () => {
  const { generator, checker } = setup();
  for (const m of [MSG_128, MSG_64, MSG_32]) {
    const msg = Buffer.from(m);
    generator.addMacs(msg, 0, msg.length, 0);
    assert.ok(checker.checkMac1(msg, 0, msg.length));
    assert.ok(!checker.checkMac2(msg, 0, msg.length, SRC, 0));
    assert.ok(
      msg.subarray(msg.length - 16).every((b) => b === 0),
      'mac2 is zero without a cookie',
    );
    msg[5] ^= 0x20;
    assert.ok(!checker.checkMac1(msg, 0, msg.length));
  }
  // MAC1 for another public key does not verify.
  const other = new CookieChecker(publicKeyOf(generatePrivateKey()));
  const msg = Buffer.from(MSG_64);
  generator.addMacs(msg, 0, msg.length, 0);
  assert.ok(!other.checkMac1(msg, 0, msg.length));
});

test('cookie reply exchange, then MAC2 verifies and is bound to the source address', () => {
  const { generator, checker } = setup();
  const now = 10_000;
  const msg = Buffer.from(MSG_128);
  generator.addMacs(msg, 0, msg.length, now);
  const reply = Buffer.alloc(64);
  checker.createReply(msg, 0, msg.length, 1377, SRC, now, reply, 0);
  assert.equal(reply.readUInt32LE(0), 3);
  assert.equal(reply.readUInt32LE(4), 1377);
  assert.ok(generator.consumeReply(reply, 0, now));

  for (const m of [MSG_64, MSG_128]) {
    const msg2 = Buffer.from(m);
    generator.addMacs(msg2, 0, msg2.length, now + 1);
    assert.ok(checker.checkMac1(msg2, 0, msg2.length));
    assert.ok(checker.checkMac2(msg2, 0, msg2.length, SRC, now + 1));
    msg2[5] ^= 0x20;
    assert.ok(!checker.checkMac1(msg2, 0, msg2.length));
    assert.ok(!checker.checkMac2(msg2, 0, msg2.length, SRC, now + 1));
    msg2[5] ^= 0x20;
    assert.ok(!checker.checkMac2(msg2, 0, msg2.length, Uint8Array.of(192, 168, 13, 37, 40, 1), now + 1));
    assert.ok(!checker.checkMac2(msg2, 0, msg2.length, Uint8Array.of(192, 168, 13, 38, 10, 10), now + 1));
  }
});

test('a cookie reply is bound to the MAC1 of the last message sent', () => {
  const { generator, checker } = setup();
  const reply = Buffer.alloc(64);
  assert.ok(!generator.consumeReply(reply, 0, 0), 'nothing sent yet');
  const first = Buffer.from(MSG_64);
  generator.addMacs(first, 0, first.length, 0);
  checker.createReply(first, 0, first.length, 1, SRC, 0, reply, 0);
  const second = Buffer.from(MSG_128);
  generator.addMacs(second, 0, second.length, 0);
  assert.ok(!generator.consumeReply(reply, 0, 0), 'reply for an older message');
  const tampered = Buffer.alloc(64);
  checker.createReply(second, 0, second.length, 1, SRC, 0, tampered, 0);
  tampered[40] ^= 1;
  assert.ok(!generator.consumeReply(tampered, 0, 0));
});

test('cookies and secrets expire after COOKIE_REFRESH_TIME; the secret rotates', () => {
  const { generator, checker } = setup();
  const msg = Buffer.from(MSG_64);
  generator.addMacs(msg, 0, msg.length, 0);
  const reply = Buffer.alloc(64);
  checker.createReply(msg, 0, msg.length, 1, SRC, 0, reply, 0);
  assert.ok(generator.consumeReply(reply, 0, 0));
  generator.addMacs(msg, 0, msg.length, COOKIE_REFRESH_TIME);
  assert.ok(checker.checkMac2(msg, 0, msg.length, SRC, COOKIE_REFRESH_TIME));
  // The checker's secret is too old: MAC2 no longer verifies.
  assert.ok(!checker.checkMac2(msg, 0, msg.length, SRC, COOKIE_REFRESH_TIME + 1));
  // The generator stops sending a stale cookie.
  generator.addMacs(msg, 0, msg.length, COOKIE_REFRESH_TIME + 1);
  assert.ok(msg.subarray(msg.length - 16).every((b) => b === 0));
  // A new reply uses a fresh secret: the old cookie is worthless, the new one works.
  const t = COOKIE_REFRESH_TIME + 2;
  checker.createReply(msg, 0, msg.length, 1, SRC, t, reply, 0);
  assert.ok(generator.consumeReply(reply, 0, t));
  generator.addMacs(msg, 0, msg.length, t);
  assert.ok(checker.checkMac2(msg, 0, msg.length, SRC, t));
});
