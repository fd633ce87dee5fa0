import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { x25519 } from '@noble/curves/ed25519.js';
import { MemoryUapiBackend } from '../../src/uapi/memory.js';
import { parseSetRequest, UAPI_ERRNO, type UapiDeviceSnapshot, UapiError } from '../../src/uapi/protocol.js';

const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const key = (): Buffer => randomBytes(32);

function set(backend: MemoryUapiBackend, ...lines: string[]): void {
  backend.apply(parseSetRequest(Buffer.from(lines.map((l) => `${l}\n`).join(''))));
}

/** publicKeyHex -> sorted allowed IPs, for compact assertions. */
function table(snap: UapiDeviceSnapshot): Record<string, string[]> {
  const out: Record<string, string[]> = {};
  for (const p of snap.peers) out[hex(p.publicKey)] = [...p.allowedIps].sort();
  return out;
}

test('a new peer starts empty and takes what its section sets', () => {
  const b = new MemoryUapiBackend();
  const pk = key();
  const psk = key();
  set(
    b,
    `public_key=${hex(pk)}`,
    `preshared_key=${hex(psk)}`,
    'endpoint=127.0.0.1:51820',
    'persistent_keepalive_interval=25',
    'allowed_ip=100.64.1.9/24',
  );
  const s = b.snapshot();
  assert.equal(s.peers.length, 1);
  assert.deepEqual(Buffer.from(s.peers[0].publicKey), pk);
  assert.deepEqual(Buffer.from(s.peers[0].presharedKey as Uint8Array), psk);
  assert.equal(s.peers[0].endpoint, '127.0.0.1:51820');
  assert.equal(s.peers[0].persistentKeepalive, 25);
  assert.deepEqual(s.peers[0].allowedIps, ['100.64.1.0/24']);
  // A second section for the same key updates, never duplicates.
  set(b, `public_key=${hex(pk)}`, 'persistent_keepalive_interval=0', `preshared_key=${'0'.repeat(64)}`);
  const s2 = b.snapshot();
  assert.equal(s2.peers.length, 1);
  assert.equal(s2.peers[0].persistentKeepalive, 0);
  assert.equal(s2.peers[0].presharedKey, null);
  assert.equal(s2.peers[0].endpoint, '127.0.0.1:51820');
});

test('private_key: set, then all-zero removes it', () => {
  const b = new MemoryUapiBackend();
  set(b, `private_key=${hex(key())}`, 'listen_port=51999', 'fwmark=3');
  const s = b.snapshot();
  assert.equal(s.privateKey?.length, 32);
  assert.equal(s.listenPort, 51999);
  assert.equal(s.fwmark, 3);
  set(b, `private_key=${'0'.repeat(64)}`, 'fwmark=0');
  assert.equal(b.snapshot().privateKey, null);
  assert.equal(b.snapshot().fwmark, 0);
});

test('replace_peers removes every peer before the sections apply', () => {
  const b = new MemoryUapiBackend();
  const [a, c, d] = [key(), key(), key()];
  set(b, `public_key=${hex(a)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(c)}`);
  set(b, 'replace_peers=true', `public_key=${hex(d)}`, 'allowed_ip=10.0.0.0/8');
  assert.deepEqual(table(b.snapshot()), { [hex(d)]: ['10.0.0.0/8'] });
  set(b, 'replace_peers=true');
  assert.deepEqual(b.snapshot().peers, []);
});

test('update_only: skips an unknown peer, updates a known one', () => {
  const b = new MemoryUapiBackend();
  const [a, c] = [key(), key()];
  set(b, `public_key=${hex(a)}`);
  set(
    b,
    `public_key=${hex(a)}`,
    'update_only=true',
    'persistent_keepalive_interval=9',
    `public_key=${hex(c)}`,
    'update_only=true',
    'allowed_ip=10.0.0.0/8',
  );
  const s = b.snapshot();
  assert.equal(s.peers.length, 1);
  assert.equal(s.peers[0].persistentKeepalive, 9);
  // The skipped section took no prefix either.
  set(b, `public_key=${hex(a)}`, 'allowed_ip=10.0.0.0/8');
  assert.deepEqual(table(b.snapshot()), { [hex(a)]: ['10.0.0.0/8'] });
});

test('remove: removes an existing peer, ignores an unknown one', () => {
  const b = new MemoryUapiBackend();
  const [a, c] = [key(), key()];
  set(b, `public_key=${hex(a)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(c)}`);
  set(b, `public_key=${hex(a)}`, 'remove=true', `public_key=${hex(key())}`, 'remove=true');
  assert.deepEqual(table(b.snapshot()), { [hex(c)]: [] });
  // The removed peer's prefix is free again.
  set(b, `public_key=${hex(c)}`, 'allowed_ip=10.0.0.0/8');
  assert.deepEqual(table(b.snapshot()), { [hex(c)]: ['10.0.0.0/8'] });
});

test('replace_allowed_ips clears only this peer', () => {
  const b = new MemoryUapiBackend();
  const [a, c] = [key(), key()];
  set(
    b,
    `public_key=${hex(a)}`,
    'allowed_ip=10.0.0.0/8',
    'allowed_ip=fd00::/8',
    `public_key=${hex(c)}`,
    'allowed_ip=192.168.0.0/16',
  );
  set(b, `public_key=${hex(a)}`, 'replace_allowed_ips=true', 'allowed_ip=10.1.0.0/16');
  assert.deepEqual(table(b.snapshot()), { [hex(a)]: ['10.1.0.0/16'], [hex(c)]: ['192.168.0.0/16'] });
});

test('an allowed IP moves from one peer to another, as wg does', () => {
  const b = new MemoryUapiBackend();
  const [a, c] = [key(), key()];
  set(
    b,
    `public_key=${hex(a)}`,
    'allowed_ip=100.64.1.0/24',
    'allowed_ip=100.64.2.0/24',
    `public_key=${hex(c)}`,
  );
  set(b, `public_key=${hex(c)}`, 'allowed_ip=100.64.1.77/24');
  assert.deepEqual(table(b.snapshot()), { [hex(a)]: ['100.64.2.0/24'], [hex(c)]: ['100.64.1.0/24'] });
  // A more specific prefix is a different entry and does not move the shorter one.
  set(b, `public_key=${hex(a)}`, 'allowed_ip=100.64.1.128/25');
  assert.deepEqual(table(b.snapshot()), {
    [hex(a)]: ['100.64.1.128/25', '100.64.2.0/24'],
    [hex(c)]: ['100.64.1.0/24'],
  });
});

test('allowed_ip=-prefix removes it only from its owner', () => {
  const b = new MemoryUapiBackend();
  const [a, c] = [key(), key()];
  set(b, `public_key=${hex(a)}`, 'allowed_ip=10.0.0.0/8', `public_key=${hex(c)}`, 'allowed_ip=fd00::/8');
  set(b, `public_key=${hex(c)}`, 'allowed_ip=-10.0.0.0/8', `public_key=${hex(a)}`, 'allowed_ip=-10.0.0.0/8');
  assert.deepEqual(table(b.snapshot()), { [hex(a)]: [], [hex(c)]: ['fd00::/8'] });
});

test("the device's own public key is never a peer", () => {
  const b = new MemoryUapiBackend();
  const sk = key();
  sk[0] &= 248;
  sk[31] = (sk[31] & 127) | 64;
  const own = x25519.getPublicKey(sk);
  const other = key();
  // A peer with the key the device will get is removed when the private key is set.
  set(b, `public_key=${hex(own)}`, `public_key=${hex(other)}`);
  assert.equal(b.snapshot().peers.length, 2);
  set(b, `private_key=${hex(sk)}`);
  assert.deepEqual(
    b.snapshot().peers.map((p) => hex(p.publicKey)),
    [hex(other)],
  );
  // And a section for the own key is ignored.
  set(b, `public_key=${hex(own)}`, 'allowed_ip=10.0.0.0/8');
  assert.equal(b.snapshot().peers.length, 1);
});

test('a refused listen port (EADDRINUSE) changes nothing', () => {
  const b = new MemoryUapiBackend({ portAvailable: (p) => p !== 51998 });
  set(b, 'listen_port=51999', `public_key=${hex(key())}`);
  const before = b.snapshot();
  assert.throws(
    () => set(b, `private_key=${hex(key())}`, 'listen_port=51998', 'replace_peers=true'),
    (e: unknown) => e instanceof UapiError && e.errno === UAPI_ERRNO.EADDRINUSE,
  );
  const after = b.snapshot();
  assert.equal(after.privateKey, null);
  assert.equal(after.listenPort, 51999);
  assert.equal(after.peers.length, before.peers.length);
  assert.equal(b.applied, 1);
});

test('the backend copies keys: wiping the change set leaves its state intact', () => {
  const b = new MemoryUapiBackend();
  const sk = key();
  const psk = key();
  const change = parseSetRequest(
    Buffer.from(`private_key=${hex(sk)}\npublic_key=${hex(key())}\npreshared_key=${hex(psk)}\n`),
  );
  b.apply(change);
  change.privateKey?.fill(0);
  change.peers[0].presharedKey?.fill(0);
  const s = b.snapshot();
  assert.notDeepEqual(Buffer.from(s.privateKey as Uint8Array), Buffer.alloc(32));
  assert.deepEqual(Buffer.from(s.peers[0].presharedKey as Uint8Array), psk);
});

test('recordTraffic sets counters and the handshake time', () => {
  const b = new MemoryUapiBackend();
  const pk = key();
  set(b, `public_key=${hex(pk)}`);
  assert.equal(b.recordTraffic(pk, { txBytes: 7n, rxBytes: 9n, lastHandshake: { sec: 100, nsec: 5 } }), true);
  assert.equal(b.recordTraffic(key(), { txBytes: 1n }), false);
  const p = b.snapshot().peers[0];
  assert.equal(p.txBytes, 7n);
  assert.equal(p.rxBytes, 9n);
  assert.deepEqual(p.lastHandshake, { sec: 100, nsec: 5 });
});
