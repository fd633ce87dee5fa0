// Shared-mode devices (one DeviceIo lent to every instance) carry inner packets of any size
// up to MAX_PACKET, both ways, through the one set of 64 KiB-slot batches.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DeviceIo, MAX_PACKET } from '../../src/device/pump.js';
import { FakeNetwork, FakeTun, FakeUdpSocket } from '../../src/native/fake.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { logger } from '../../src/util/log.js';
import { SharedDevice } from '../../src/vswitch/shared-device.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

test('two shared devices on one DeviceIo carry packets from 1,420 to MAX_PACKET bytes whole', async () => {
  const net = new FakeNetwork();
  const io = new DeviceIo();
  const aead = new JsTransportAead();
  const mk = (name: string) => {
    const tun = new FakeTun({ name });
    const dev = new SharedDevice({
      ifname: name,
      mtu: 9000,
      tun,
      openSocket: (port) => new FakeUdpSocket(net, { address: '127.0.0.1', port }),
      aead,
      io,
      log: logger('test-shared-mtu'),
      now: () => performance.now(),
    });
    return { dev, tun, key: generatePrivateKey() };
  };
  const a = mk('tgpusa');
  const b = mk('tgpusb');
  const peer = (x: typeof a, y: typeof a, address: string) =>
    x.dev.backend.apply({
      privateKey: x.key,
      replacePeers: true,
      peers: [
        {
          publicKey: publicKeyOf(y.key),
          remove: false,
          updateOnly: false,
          endpoint: parseEndpoint(`127.0.0.1:${y.dev.pump.localPort}`)!,
          replaceAllowedIps: true,
          allowedIps: [{ cidr: parseCidr(`${address}/32`)!, remove: false }],
        },
      ],
    });
  peer(a, b, '10.9.1.2');
  peer(b, a, '10.9.1.1');
  a.dev.start();
  b.dev.start();
  try {
    for (const size of [1420, 2000, 9000, 30_000, MAX_PACKET]) {
      for (const [from, to, src, dst] of [
        [a, b, '10.9.1.1', '10.9.1.2'],
        [b, a, '10.9.1.2', '10.9.1.1'],
      ] as const) {
        const p = ipv4Packet(src, dst, size - 20, size & 0xff);
        from.tun.inject(p);
        for (let t = 0; t < 100 && to.tun.written.length === 0; t++)
          await new Promise((r) => setTimeout(r, 5));
        const got = to.tun.takeWritten();
        assert.equal(got.length, 1, `a ${size}-byte packet was lost`);
        assert.deepEqual(got[0], p);
      }
    }
  } finally {
    a.dev.stop();
    b.dev.stop();
  }
});
