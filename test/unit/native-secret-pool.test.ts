// Secrets in locked memory: the pool's arenas are mlock'd and marked MADV_DONTDUMP (seen in
// /proc/self/smaps as VmFlags lo and dd), slots are wiped when freed and reused, and the NIC's
// key store keeps its keys there.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import { SecretPool, SLOT_SIZE, secretPool } from '../../src/native/secret-pool.js';
import { KeyStore } from '../../src/nic/keystore.js';

/** Locked memory of this process in kB (VmLck). */
function lockedKb(): number {
  const m = /^VmLck:\s+(\d+) kB$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return Number(m?.[1] ?? -1);
}

/** How many mappings are both locked (lo) and left out of core dumps (dd). */
function lockedDontDump(): number {
  return readFileSync('/proc/self/smaps', 'utf8')
    .split('\n')
    .filter((l) => l.startsWith('VmFlags:'))
    .filter((l) => {
      const f = l.slice(8).trim().split(' ');
      return f.includes('lo') && f.includes('dd');
    }).length;
}

test('arenas are locked (VmLck grows by one arena) and left out of core dumps (dd)', () => {
  const pool = new SecretPool();
  const before = lockedKb();
  const k = pool.alloc(32);
  assert.equal(pool.stats().arenas, 1);
  assert.equal(pool.stats().unlocked, 0, 'mlock refused');
  assert.equal(lockedKb() - before, 64, 'the arena is not locked');
  assert.ok(lockedDontDump() >= 1, 'no mapping is both locked (lo) and DONTDUMP (dd)');
  pool.free(k);
});

test('a freed slot is wiped and reused; sizes are bounded', () => {
  const pool = new SecretPool();
  const a = pool.alloc(32);
  a.fill(0xab);
  const view = Buffer.from(a.buffer, a.byteOffset, SLOT_SIZE);
  pool.free(a);
  assert.ok(
    view.every((x) => x === 0),
    'the slot was not wiped',
  );
  const b = pool.alloc(32);
  assert.equal(b.byteOffset, a.byteOffset, 'the slot was not reused');
  assert.ok(b.every((x) => x === 0));
  assert.equal(pool.stats().inUse, 1);
  assert.throws(() => pool.alloc(SLOT_SIZE + 1), RangeError);
  assert.throws(() => pool.alloc(0), RangeError);
  const outside = Buffer.alloc(32, 1);
  pool.free(outside);
  assert.ok(
    outside.every((x) => x === 0),
    'a foreign buffer is wiped',
  );
  assert.equal(pool.stats().inUse, 1, 'a foreign buffer does not enter the pool');
});

test("the NIC's key store keeps its secrets in the pool and returns them when removed", () => {
  const pool = secretPool();
  const ks = new KeyStore();
  const before = pool.stats().inUse;
  const id = ks.createIdentityKey();
  const psk = ks.createWorkloadPsk('t', 'w');
  assert.ok(pool.owns(id.secret) && pool.owns(psk.secret));
  assert.equal(pool.stats().inUse, before + 2);
  const rotated = ks.rotateWorkloadPsk('w');
  assert.ok(pool.owns(rotated.secret));
  assert.ok(
    psk.secret.every((x) => x === 0),
    'the old PSK was not wiped',
  );
  assert.equal(pool.stats().inUse, before + 2);
  ks.wipeAll();
  assert.equal(pool.stats().inUse, before);
});
