// The one seal construction (src/nic/seal.ts) under both wire formats: known answers fixed
// before the two formats shared it (an envelope and a box made then still open), and the
// labels keep the uses apart (a box sealed for one use never opens as the other).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ed25519 } from '@noble/curves/ed25519.js';
import { NicIdentity } from '../../src/nic/identity.js';
import { openPsk, sealPsk } from '../../src/nic/psk-box.js';
import { open, SEAL_LABELS, seal, sealAssociatedData } from '../../src/nic/seal.js';
import { openFromNic } from '../../src/nic/sealed.js';
import { publicKeyOf } from '../../src/protocol/crypto.js';

const fixed = (b: number) => Buffer.alloc(32, b);

test('known answer: a NIC-to-NIC envelope of the original format opens', () => {
  const a = new NicIdentity(fixed(0x11), Buffer.from(ed25519.getPublicKey(fixed(0x11))));
  const b = new NicIdentity(fixed(0x22), Buffer.from(ed25519.getPublicKey(fixed(0x22))));
  const envelope = {
    version: 1,
    sender: '0EqyMnQrtKs6E2i9RhXk5tAiSrcaAWuvhSCjMsl3hzc=',
    receiver: 'oJql9HpnWYAv+VX43C0qFKXJnSO+l/hkEn/5ODRVpPA=',
    purpose: 'workload-psk:kat',
    ephemeral: 'jjWaqJ0jq8g4S/RPeCACZ+kXJzf0pJduki5LBu/d4EI=',
    sealKey: 'ew1H2TQn+DERYHgcfHM/2J+IlwrvSQ2KoO4ZpMuKGxQ=',
    ciphertext: 'g0mQ4KvZwoxaXJcauScxMN37OLCZyiJVQg3pZSLO38+a6eZTFNqMK9/FqJXx9Blt',
    signature: '7UU+suQIHSZzSuE7rQxBE/xxzzuEmDdinKggk+Zyb/twEWG7NNoWtzV5EZg3KdxqcZ0+rZY58pGy7fR9d8ZnCw==',
  };
  assert.equal(envelope.sender, a.publicKey.toString('base64'));
  assert.equal(envelope.receiver, b.publicKey.toString('base64'));
  const plaintext = openFromNic(envelope, {
    identityKey: b.publicKey,
    sealPrivateKey: fixed(0x33),
    expectedSender: a.publicKey,
    expectedPurpose: 'workload-psk:kat',
  });
  assert.deepEqual(plaintext, fixed(0x44));
});

test('known answer: a PSK box of the original format opens', () => {
  const out = Buffer.alloc(32);
  openPsk(
    {
      version: 1,
      ephemeral: 'st5fuMxQhDE1NokPhr4wfMPRItL11L3K02q833ZJ71w=',
      box: 'iE5PyrpJOafQGftjRf7kMl8ZKse56dm89q7sTBzBCVErT0zY/GjnNC79rsljwlOV',
    },
    { workload: 'kat-w', instancePrivateKey: fixed(0x55), nicPublicKey: publicKeyOf(fixed(0x66)) },
    out,
  );
  assert.deepEqual(out, fixed(0x77));
});

test('the label separates the uses: the same key and bindings under the other label do not open', () => {
  const r = fixed(0x55);
  const R = publicKeyOf(r);
  const context = Buffer.from('same bytes');
  const trailer = publicKeyOf(fixed(0x66));
  const boxed = seal(R, { use: 'pskBox', context, trailer }, fixed(0x77));
  const asPsk = open(r, { use: 'pskBox', context, trailer }, boxed.ephemeral, boxed.ciphertext);
  assert.ok(Buffer.isBuffer(asPsk));
  assert.deepEqual(asPsk, fixed(0x77));
  assert.equal(
    open(r, { use: 'nicTransfer', context, trailer }, boxed.ephemeral, boxed.ciphertext),
    'not-authentic',
  );
  assert.notDeepEqual(SEAL_LABELS.pskBox, SEAL_LABELS.nicTransfer);
  assert.deepEqual(
    boxed.ad,
    Buffer.concat([SEAL_LABELS.pskBox, context, boxed.ephemeral, R, trailer]),
    'ad = LABEL || context || E || R || trailer',
  );
  assert.deepEqual(sealAssociatedData({ use: 'pskBox', context, trailer }, boxed.ephemeral, R), boxed.ad);
});

test('a PSK box made now opens with the same bindings only; a bad ephemeral key is named', () => {
  const inst = fixed(0x21);
  const nic = publicKeyOf(fixed(0x31));
  const psk = fixed(0x41);
  const box = sealPsk(psk, { workload: 'w1', instanceKey: publicKeyOf(inst), nicPublicKey: nic });
  const out = Buffer.alloc(32);
  openPsk(box, { workload: 'w1', instancePrivateKey: inst, nicPublicKey: nic }, out);
  assert.deepEqual(out, psk);
  assert.throws(
    () => openPsk(box, { workload: 'w2', instancePrivateKey: inst, nicPublicKey: nic }, out),
    /does not open/,
  );
  assert.deepEqual(out, Buffer.alloc(32), 'out is left zeroed');
  const lowOrder = { ...box, ephemeral: Buffer.alloc(32).toString('base64') };
  assert.throws(
    () => openPsk(lowOrder, { workload: 'w1', instancePrivateKey: inst, nicPublicKey: nic }, out),
    /unusable ephemeral key/,
  );
  assert.throws(() => seal(Buffer.alloc(32), { use: 'pskBox', context: Buffer.alloc(0) }, psk), /unusable/);
});
