// NIC-to-NIC sealed transfer: only the named receiver opens it, only for the named purpose, only
// from the named sender; any change to the envelope is detected; the carrier sees ciphertext.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { NicIdentity, sealKeyStatement } from '../../src/nic/identity.js';
import { KeyStore } from '../../src/nic/keystore.js';
import { openFromNic, type SealedEnvelope, sealForNic } from '../../src/nic/sealed.js';

function nic() {
  const keys = new KeyStore();
  const id = keys.createIdentityKey();
  const seal = keys.createSealKey();
  const identity = new NicIdentity(id.secret, id.publicKey as Buffer);
  const sealKey = seal.publicKey as Buffer;
  return {
    identity,
    sealPrivateKey: seal.secret,
    recipient: {
      identityKey: identity.publicKey,
      sealKey,
      sealKeySignature: identity.sign(sealKeyStatement(sealKey)),
    },
  };
}

const A = nic();
const B = nic();
const C = nic();
const secret = randomBytes(32);
const purpose = 'workload-psk:h1-t1-w1';

function openAsB(env: unknown, opts: Partial<{ sender: Buffer; purpose: string }> = {}): Buffer {
  return openFromNic(env, {
    identityKey: B.identity.publicKey,
    sealPrivateKey: B.sealPrivateKey,
    expectedSender: opts.sender ?? A.identity.publicKey,
    expectedPurpose: opts.purpose ?? purpose,
  });
}

test('sealed from A to B: B opens it; the envelope holds no plaintext', () => {
  const env = sealForNic(A.identity, B.recipient, purpose, secret);
  assert.deepEqual(openAsB(env), secret);
  const text = JSON.stringify(env);
  for (const enc of ['base64', 'hex', 'base64url'] as const)
    assert.equal(text.includes(secret.toString(enc)), false);
  // Two seals of the same secret differ (fresh ephemeral key each time).
  const again = sealForNic(A.identity, B.recipient, purpose, secret);
  assert.notEqual(again.ciphertext, env.ciphertext);
  assert.notEqual(again.ephemeral, env.ephemeral);
});

test('another NIC cannot open it, even with its own keys swapped in', () => {
  const env = sealForNic(A.identity, B.recipient, purpose, secret);
  assert.throws(
    () =>
      openFromNic(env, {
        identityKey: C.identity.publicKey,
        sealPrivateKey: C.sealPrivateKey,
        expectedSender: A.identity.publicKey,
        expectedPurpose: purpose,
      }),
    { code: 'TG_ERR_INVALID_ARGUMENT' },
  );
  // Claiming to be B with C's seal key: the envelope names B's seal key.
  assert.throws(
    () =>
      openFromNic(env, {
        identityKey: B.identity.publicKey,
        sealPrivateKey: C.sealPrivateKey,
        expectedSender: A.identity.publicKey,
        expectedPurpose: purpose,
      }),
    { code: 'TG_ERR_INVALID_ARGUMENT' },
  );
});

test('wrong purpose, wrong sender, and every tampered field are refused', () => {
  const env = sealForNic(A.identity, B.recipient, purpose, secret);
  assert.throws(() => openAsB(env, { purpose: 'other' }), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.throws(() => openAsB(env, { sender: C.identity.publicKey }), { code: 'TG_ERR_BAD_SIGNATURE' });
  const flip = (b64: string): string => {
    const b = Buffer.from(b64, 'base64');
    b[b.length >> 1] ^= 1;
    return b.toString('base64');
  };
  const tampered: [string, SealedEnvelope][] = [
    ['ciphertext', { ...env, ciphertext: flip(env.ciphertext) }],
    ['ephemeral', { ...env, ephemeral: flip(env.ephemeral) }],
    ['signature', { ...env, signature: flip(env.signature) }],
  ];
  for (const [what, t] of tampered) assert.throws(() => openAsB(t), { code: 'TG_ERR_BAD_SIGNATURE' }, what);
  // Re-purposed by the carrier: the purpose is in the associated data and under the signature.
  assert.throws(() => openAsB({ ...env, purpose: 'other' }, { purpose: 'other' }), {
    code: 'TG_ERR_BAD_SIGNATURE',
  });
  // Re-signed by C after tampering: C is not the expected sender.
  const forged = sealForNic(C.identity, B.recipient, purpose, randomBytes(32));
  assert.throws(() => openAsB({ ...forged, sender: env.sender }), { code: 'TG_ERR_BAD_SIGNATURE' });
  assert.throws(() => openAsB({ ...env, extra: 1 }), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.throws(() => openAsB('not an envelope'), { code: 'TG_ERR_INVALID_ARGUMENT' });
});

test("sealing needs the receiver's seal key signed by the receiver's identity", () => {
  assert.throws(
    () => sealForNic(A.identity, { ...B.recipient, sealKey: C.recipient.sealKey }, purpose, secret),
    { code: 'TG_ERR_BAD_SIGNATURE' },
  );
  assert.throws(
    () => sealForNic(A.identity, { ...B.recipient, sealKeySignature: Buffer.alloc(64) }, purpose, secret),
    {
      code: 'TG_ERR_BAD_SIGNATURE',
    },
  );
  assert.throws(() => sealForNic(A.identity, B.recipient, '', secret), { code: 'TG_ERR_INVALID_ARGUMENT' });
  assert.throws(() => sealForNic(A.identity, B.recipient, purpose, Buffer.alloc(5000)), {
    code: 'TG_ERR_INVALID_ARGUMENT',
  });
});
