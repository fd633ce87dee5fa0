// The engine keeps its key material in the secret store it is given (src/protocol/secrets.ts):
// the static private key, each peer's PSK, static-static DH and handshake state, and every
// transport session key; removing peers and identities wipes all of it and returns it to the
// store (never while a batch may still read it).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SecretPool } from '../../src/native/secret-pool.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import type { SecretStore } from '../../src/protocol/secrets.js';
import { ipv4Packet, Net, prefix } from '../helpers/protocol-harness.js';

class RecordingStore implements SecretStore {
  readonly pool = new SecretPool();
  readonly live = new Set<Buffer>();
  readonly freed: Buffer[] = [];
  alloc(size: number): Buffer {
    const b = this.pool.alloc(size);
    this.live.add(b);
    return b;
  }
  free(b: Buffer): void {
    assert.ok(this.live.delete(b), 'freed once, and only what was allocated');
    this.pool.free(b);
    this.freed.push(b);
  }
  holds(bytes: Uint8Array): boolean {
    return [...this.live].some((b) => b.equals(bytes));
  }
}

test('identity key, PSK, handshake state and session keys live in the store; removal returns all of it wiped', () => {
  const store = new RecordingStore();
  const net = new Net();
  const a = net.node(51820, { secrets: store });
  const b = net.node(51821);
  const aKey = generatePrivateKey();
  const bKey = generatePrivateKey();
  const psk = Buffer.alloc(32, 0x5a);
  const aId = a.engine.addIdentity(aKey);
  const bId = b.engine.addIdentity(bKey);
  assert.equal(store.live.size, 1, 'the identity key');
  assert.ok(store.pool.owns([...store.live][0]));
  const aPeer = a.engine.addPeer(aId, {
    publicKey: publicKeyOf(bKey),
    presharedKey: psk,
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
  });
  b.engine.addPeer(bId, {
    publicKey: publicKeyOf(aKey),
    presharedKey: psk,
    allowedIps: [prefix('10.0.0.1/32')],
  });
  // Peer: PSK, static-static DH, handshake hash, chaining key, ephemeral private key.
  assert.equal(store.live.size, 6);
  assert.ok(store.holds(psk), 'the PSK is a store Buffer');

  a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 64)]);
  net.flush();
  b.send(bId, [ipv4Packet('10.0.0.2', '10.0.0.1', 64)]);
  net.flush();
  assert.equal(a.received.length, 1, 'the session works with store keys');
  assert.equal(a.engine.sessionInfo(aPeer).hasCurrent, true);
  // Plus the two transport keys of the session.
  assert.equal(store.live.size, 8);
  for (const buf of store.live) assert.ok(store.pool.owns(buf), 'every secret is in locked memory');

  // A control-plane removal returns everything at once (no batch is in progress; an engine
  // whose last identity goes may never be called again).
  a.engine.removePeer(aPeer);
  assert.equal(store.live.size, 1, 'the peer and its session are returned');
  a.engine.removeIdentity(aId);
  assert.equal(store.live.size, 0, 'and the identity key, without another engine call');
  assert.equal(store.freed.length, 8);
  for (const buf of store.freed)
    assert.ok(
      buf.every((x) => x === 0),
      'wiped',
    );
  assert.equal(store.pool.stats().inUse, 0);
});

test('a rekey frees the keypair it pushes out', () => {
  const store = new RecordingStore();
  const net = new Net();
  const a = net.node(51820, { secrets: store });
  const b = net.node(51821);
  const aKey = generatePrivateKey();
  const bKey = generatePrivateKey();
  const aId = a.engine.addIdentity(aKey);
  const bId = b.engine.addIdentity(bKey);
  const aPeer = a.engine.addPeer(aId, {
    publicKey: publicKeyOf(bKey),
    endpoint: b.endpoint,
    allowedIps: [prefix('10.0.0.2/32')],
  });
  b.engine.addPeer(bId, { publicKey: publicKeyOf(aKey), allowedIps: [prefix('10.0.0.1/32')] });
  // Many sessions in a row: A's three keypair slots hold at most 6 keys; the rest came back.
  for (let round = 0; round < 6; round++) {
    a.engine.updatePeer(aPeer, {}, net.clock.now);
    a.send(aId, [ipv4Packet('10.0.0.1', '10.0.0.2', 64)]);
    net.flush();
    b.send(bId, [ipv4Packet('10.0.0.2', '10.0.0.1', 64)]);
    net.flush();
    net.clock.advance(130_000);
    a.tick();
    net.flush();
  }
  assert.ok(a.engine.counters.handshakeInitiationsSent >= 3, 'several handshakes');
  assert.ok(store.live.size <= 1 + 5 + 6, `live secrets bounded: ${store.live.size}`);
  assert.ok(store.freed.length >= 2, 'dropped keypairs were returned');
});
