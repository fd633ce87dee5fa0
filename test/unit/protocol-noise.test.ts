import assert from 'node:assert/strict';
import { test } from 'node:test';
import { HANDSHAKE_INITIATION_RATE } from '../../src/protocol/constants.js';
import { dh, generatePrivateKey, privateKeyObject, publicKeyOf } from '../../src/protocol/crypto.js';
import {
  consumeInitiation,
  consumeResponse,
  createInitiation,
  createResponse,
  deriveSessionKeys,
  HANDSHAKE_INITIATION_CONSUMED,
  HANDSHAKE_INITIATION_CREATED,
  HANDSHAKE_RESPONSE_CONSUMED,
  HANDSHAKE_RESPONSE_CREATED,
  HANDSHAKE_ZEROED,
  Handshake,
  type LocalStatic,
  type NoisePeer,
} from '../../src/protocol/noise.js';

function local(): LocalStatic & { raw: Buffer } {
  const raw = generatePrivateKey();
  return { raw, privateKey: privateKeyObject(raw), publicKey: publicKeyOf(raw) };
}

function peerOf(
  me: LocalStatic & { raw: Buffer },
  them: LocalStatic,
  psk: Buffer = Buffer.alloc(32),
): NoisePeer {
  return {
    handshake: new Handshake(),
    remoteStatic: them.publicKey,
    presharedKey: psk,
    precomputedStaticStatic: dh(me.raw, them.publicKey),
  };
}

function run(psk1: Buffer = Buffer.alloc(32), psk2: Buffer = Buffer.alloc(32)) {
  const i = local();
  const r = local();
  const iPeer = peerOf(i, r, psk1); // the initiator's view of the responder
  const rPeer = peerOf(r, i, psk2); // the responder's view of the initiator
  const init = Buffer.alloc(148);
  assert.ok(createInitiation(i, iPeer, 1111, 1_700_000_000_000, init, 0));
  assert.equal(iPeer.handshake.state, HANDSHAKE_INITIATION_CREATED);
  assert.equal(init.readUInt32LE(0), 1);
  assert.equal(init.readUInt32LE(4), 1111);
  const consumed = consumeInitiation(r, init, 0, (pk) => (pk.equals(i.publicKey) ? rPeer : undefined), 0);
  assert.ok(consumed.ok);
  assert.equal(rPeer.handshake.state, HANDSHAKE_INITIATION_CONSUMED);
  assert.equal(rPeer.handshake.remoteIndex, 1111);
  // -> e, es, s, ss: both sides hold the same chaining key and hash.
  assert.deepEqual(rPeer.handshake.chainKey, iPeer.handshake.chainKey);
  assert.deepEqual(rPeer.handshake.hash, iPeer.handshake.hash);

  const resp = Buffer.alloc(92);
  assert.ok(createResponse(rPeer, 2222, resp, 0));
  assert.equal(rPeer.handshake.state, HANDSHAKE_RESPONSE_CREATED);
  assert.equal(resp.readUInt32LE(8), 1111);
  const ok = consumeResponse(i, iPeer, resp, 0);
  return { i, r, iPeer, rPeer, init, resp, ok };
}

test('initiation and response: transcripts agree, keys are crosswise equal', () => {
  const { iPeer, rPeer, ok } = run();
  assert.ok(ok);
  assert.equal(iPeer.handshake.state, HANDSHAKE_RESPONSE_CONSUMED);
  assert.equal(iPeer.handshake.remoteIndex, 2222);
  // <- e, ee, se, psk
  assert.deepEqual(rPeer.handshake.chainKey, iPeer.handshake.chainKey);
  assert.deepEqual(rPeer.handshake.hash, iPeer.handshake.hash);
  const ki = deriveSessionKeys(iPeer.handshake);
  const kr = deriveSessionKeys(rPeer.handshake);
  assert.ok(ki && kr);
  assert.ok(ki.isInitiator && !kr.isInitiator);
  assert.deepEqual(ki.sendKey, kr.receiveKey);
  assert.deepEqual(ki.receiveKey, kr.sendKey);
  assert.notDeepEqual(ki.sendKey, ki.receiveKey);
  assert.equal(ki.localIndex, 1111);
  assert.equal(ki.remoteIndex, 2222);
  assert.equal(kr.localIndex, 2222);
  assert.equal(kr.remoteIndex, 1111);
  // The handshake is wiped after derivation.
  assert.equal(iPeer.handshake.state, HANDSHAKE_ZEROED);
  assert.ok(iPeer.handshake.chainKey.every((b) => b === 0));
  assert.ok(iPeer.handshake.localEphemeral.every((b) => b === 0));
  assert.equal(deriveSessionKeys(iPeer.handshake), null);
});

test('matching preshared keys agree, different ones fail at the response', () => {
  const psk = generatePrivateKey();
  assert.ok(run(psk, Buffer.from(psk)).ok);
  const bad = run(psk, generatePrivateKey());
  assert.equal(bad.ok, false);
  assert.equal(bad.iPeer.handshake.state, HANDSHAKE_INITIATION_CREATED, 'state untouched on failure');
});

test('replayed and flooding initiations are refused; unknown keys and tampering too', () => {
  const i = local();
  const r = local();
  const iPeer = peerOf(i, r);
  const rPeer = peerOf(r, i);
  const lookup = (pk: Buffer) => (pk.equals(i.publicKey) ? rPeer : undefined);
  const init = Buffer.alloc(148);
  createInitiation(i, iPeer, 1, 1_700_000_000_000, init, 0);
  assert.ok(consumeInitiation(r, init, 0, lookup, 1000).ok);
  const again = consumeInitiation(r, init, 0, lookup, 5000);
  assert.deepEqual(again, { ok: false, reason: 'replay' });
  // A newer timestamp right after is a flood.
  const second = Buffer.alloc(148);
  createInitiation(i, iPeer, 2, 1_700_000_001_000, second, 0);
  assert.deepEqual(consumeInitiation(r, second, 0, lookup, 1000 + HANDSHAKE_INITIATION_RATE), {
    ok: false,
    reason: 'flood',
  });
  assert.ok(consumeInitiation(r, second, 0, lookup, 1001 + HANDSHAKE_INITIATION_RATE).ok);
  // Unknown initiator.
  const third = Buffer.alloc(148);
  createInitiation(i, iPeer, 3, 1_700_000_002_000, third, 0);
  assert.deepEqual(
    consumeInitiation(r, third, 0, () => undefined, 10_000),
    { ok: false, reason: 'unknownPeer' },
  );
  // Tampered static or timestamp.
  for (const at of [50, 100]) {
    const t = Buffer.from(third);
    t[at] ^= 1;
    assert.deepEqual(consumeInitiation(r, t, 0, lookup, 10_000), { ok: false, reason: 'decrypt' });
  }
  // Addressed to someone else.
  assert.deepEqual(consumeInitiation(local(), third, 0, lookup, 10_000), { ok: false, reason: 'decrypt' });
  // A low-order ephemeral key.
  const zero = Buffer.from(third);
  zero.fill(0, 8, 40);
  assert.deepEqual(consumeInitiation(r, zero, 0, lookup, 10_000), { ok: false, reason: 'decrypt' });
});

test('a response is only consumed by a handshake waiting for it, and only once', () => {
  const { i, iPeer, resp, ok } = run();
  assert.ok(ok);
  assert.equal(consumeResponse(i, iPeer, resp, 0), false);
  const fresh = peerOf(local(), local());
  assert.equal(createResponse(fresh, 1, Buffer.alloc(92), 0), false);
});
