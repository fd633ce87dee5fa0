// The UAPI backend of a device: turning a peer's persistent keepalive on asks the driver for a
// keepalive at once (which opens the session), as wireguard-go does; setting it again, or
// to 0, or before the device has a key, does not.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EngineUapiBackend } from '../../src/device/engine-backend.js';
import { parseEndpoint } from '../../src/net/ip.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { Engine } from '../../src/protocol/engine.js';
import type { UapiPeerChange } from '../../src/uapi/protocol.js';

function backend(): { b: EngineUapiBackend; engine: Engine; asked: number[] } {
  const engine = new Engine({ aead: new JsTransportAead() });
  const asked: number[] = [];
  const b = new EngineUapiBackend(
    engine,
    {
      rebind: () => undefined,
      listenPort: () => 0,
      ioCounters: () => ({}),
      keepaliveNow: (p) => asked.push(p),
    },
    () => 1000,
  );
  return { b, engine, asked };
}

const peer = (publicKey: Buffer, persistentKeepalive?: number): UapiPeerChange => ({
  publicKey,
  remove: false,
  updateOnly: false,
  endpoint: parseEndpoint('198.18.0.1:51820')!,
  ...(persistentKeepalive !== undefined ? { persistentKeepalive } : {}),
  replaceAllowedIps: false,
  allowedIps: [],
});

test('a keepalive at once when a persistent keepalive is turned on, and only then', () => {
  const { b, engine, asked } = backend();
  const remote = publicKeyOf(generatePrivateKey());
  // No key yet: the driver is not asked (it has nothing to send with).
  b.apply({ replacePeers: false, peers: [peer(remote, 25)] });
  assert.deepEqual(asked, []);
  b.apply({ privateKey: generatePrivateKey(), replacePeers: true, peers: [peer(remote, 25)] });
  const id = engine.findPeer(b.identityId, remote)!;
  assert.deepEqual(asked, [id], 'turned on with the key set');
  b.apply({ replacePeers: false, peers: [peer(remote, 25)] });
  b.apply({ replacePeers: false, peers: [peer(remote)] });
  assert.deepEqual(asked, [id], 'already on: not again');
  b.apply({ replacePeers: false, peers: [peer(remote, 0)] });
  b.apply({ replacePeers: false, peers: [peer(remote, 10)] });
  assert.deepEqual(asked, [id, id], 'off, then on again');
});
