// The NIC key store: keys of each kind, metadata-only inventory, and wiping on every removal.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { KeyStore, pskFingerprint } from '../../src/nic/keystore.js';
import { publicKeyOf } from '../../src/protocol/crypto.js';

const allZero = (b: Buffer): boolean => b.every((x) => x === 0);

function store(): KeyStore {
  let t = Date.parse('2030-01-01T00:00:00Z');
  return new KeyStore({ clock: () => (t += 1000) });
}

test('creates one key per kind and role, with consistent public keys', () => {
  const ks = store();
  const id = ks.createIdentityKey();
  const seal = ks.createSealKey();
  const onHost = ks.createOnHostKey();
  const t1 = ks.createTenantKey('t1');
  const psk = ks.createWorkloadPsk('t1', 'w1');
  assert.equal(id.publicKey?.length, 32);
  assert.deepEqual(seal.publicKey, publicKeyOf(seal.secret));
  assert.deepEqual(onHost.publicKey, publicKeyOf(onHost.secret));
  assert.deepEqual(t1.publicKey, publicKeyOf(t1.secret));
  assert.equal(psk.publicKey, null);
  const secrets = [id, seal, onHost, t1, psk].map((k) => k.secret.toString('hex'));
  assert.equal(new Set(secrets).size, 5, 'two keys are the same');
  assert.throws(() => ks.createOnHostKey(), { code: 'TG_ERR_CONFLICT' });
  assert.throws(() => ks.createTenantKey('t1'), { code: 'TG_ERR_CONFLICT' });
  assert.throws(() => ks.createWorkloadPsk('t1', 'w1'), { code: 'TG_ERR_CONFLICT' });
  assert.equal(ks.get('tenant-off-host', { tenant: 't1' })?.id, t1.id);
  assert.equal(ks.get('workload-psk', { workload: 'w1' })?.id, psk.id);
  assert.equal(ks.get('tenant-off-host', { tenant: 't2' }), undefined);
});

test('the inventory is metadata only: no key material in any encoding', () => {
  const ks = store();
  const keys = [
    ks.createIdentityKey(),
    ks.createOnHostKey(),
    ks.createTenantKey('t1'),
    ks.createWorkloadPsk('t1', 'w1'),
  ];
  const inv = ks.inventory();
  assert.equal(inv.length, 4);
  for (const m of inv) {
    assert.deepEqual(Object.keys(m).sort(), [
      'created',
      'fingerprint',
      'id',
      'kind',
      'lastRotated',
      'tenant',
      'workload',
    ]);
  }
  const text = JSON.stringify(inv);
  for (const k of keys) {
    for (const enc of ['base64', 'hex', 'base64url'] as const) {
      assert.equal(text.includes(k.secret.toString(enc)), false, `a secret appears in ${enc}`);
      assert.equal(
        text.includes(k.secret.toString(enc).slice(0, 12)),
        false,
        `part of a secret appears in ${enc}`,
      );
    }
  }
  const psk = inv.find((m) => m.kind === 'workload-psk');
  assert.equal(psk?.tenant, 't1');
  assert.equal(psk?.workload, 'w1');
  assert.match(psk?.fingerprint ?? '', /^psk:[0-9a-f]{8}$/);
  assert.equal(psk?.fingerprint, pskFingerprint(keys[3].secret));
});

test('removing a key wipes its bytes at once', () => {
  const ks = store();
  const t1 = ks.createTenantKey('t1');
  const psk = ks.createWorkloadPsk('t1', 'w1');
  const held = [t1.secret, psk.secret];
  assert.ok(held.every((b) => !allZero(b)));
  assert.equal(ks.remove(psk.id), true);
  assert.ok(allZero(psk.secret), 'the PSK was not wiped');
  assert.equal(ks.remove(psk.id), false);
  assert.equal(
    ks.inventory().some((m) => m.id === psk.id),
    false,
  );
  assert.equal(ks.remove(t1.id), true);
  assert.ok(allZero(t1.secret), 'the tenant key was not wiped');
  assert.equal(ks.size, 0);
});

test('rotating a PSK wipes the old bytes and records the rotation', () => {
  const ks = store();
  const old = ks.createWorkloadPsk('t1', 'w1');
  const oldBytes = old.secret;
  const before = ks.inventory()[0];
  const fresh = ks.rotateWorkloadPsk('w1');
  assert.ok(allZero(oldBytes), 'the old PSK was not wiped');
  assert.equal(fresh.id, old.id);
  assert.ok(!allZero(fresh.secret));
  const after = ks.inventory()[0];
  assert.notEqual(after.fingerprint, before.fingerprint);
  assert.ok(after.lastRotated !== null && after.lastRotated > after.created);
  assert.throws(() => ks.rotateWorkloadPsk('nope'), { code: 'TG_ERR_NOT_FOUND' });
});

test('wipeAll wipes every key', () => {
  const ks = store();
  const all = [
    ks.createIdentityKey(),
    ks.createSealKey(),
    ks.createOnHostKey(),
    ks.createTenantKey('a'),
    ks.createWorkloadPsk('a', 'w'),
  ];
  ks.wipeAll();
  assert.equal(ks.size, 0);
  for (const k of all) assert.ok(allZero(k.secret), `${k.id} not wiped`);
});
