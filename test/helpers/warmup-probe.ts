// Run as a child process with --allow-natives-syntax, --expose-gc and the data plane's V8
// flags (see device-warmup.test.ts): warms the data path as a device process does, runs a
// full garbage collection (as may come before any live peer exists), then starts two
// devices (the code behind `tenguard device`, on in-memory TUNs and sockets, with the native
// AEAD and the locked secret pool), configures them through their UAPI sockets as `wg` does,
// sends packets both ways, and prints which hot engine functions were optimised before the
// first live packet and which still are after the live packets, as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from '../../src/device/device.js';
import { warmDataPath } from '../../src/device/warmup.js';
import { FakeNetwork, FakeTun, FakeUdpSocket } from '../../src/native/fake.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { AllowedIps } from '../../src/protocol/allowedips.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { Engine } from '../../src/protocol/engine.js';
import { Keypair } from '../../src/protocol/keypair.js';
import { uapiSet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet } from './protocol-harness.js';
import { optimised, proto } from './v8-natives.js';

const HOT: Record<string, unknown> = {
  'Engine.outbound': proto(Engine).outbound,
  'Engine.outboundRouted': proto(Engine).outboundRouted,
  'Engine.sendData': proto(Engine).sendData,
  'Engine.finishOutbound': proto(Engine).finishOutbound,
  'Engine.inbound': proto(Engine).inbound,
  'Engine.classify': proto(Engine).classify,
  'Engine.openTransports': proto(Engine).openTransports,
  'Engine.touch': proto(Engine).touch,
  'Keypair.canSend': proto(Keypair).canSend,
  'Keypair.canReceive': proto(Keypair).canReceive,
  'AllowedIps.lookup4': proto(AllowedIps).lookup4,
};

const log = logger('warmup-probe');
const dir = mkdtempSync(join(tmpdir(), 'tg-warm-probe-'));
const devices: Device[] = [];
try {
  warmDataPath(log);
  // A full collection before any live peer exists (the device's first seconds, or a device
  // configured but quiet): the warmed code must survive it.
  (globalThis as unknown as { gc: () => void }).gc();
  const before = optimised(HOT);
  const net = new FakeNetwork();
  const sides = [];
  for (const [i, address] of ['10.9.1.1', '10.9.1.2'].entries()) {
    const tun = new FakeTun({ name: `tgwp${process.pid % 10_000}${i}`, queueLimit: 4096 });
    const dev = await Device.start({
      ifname: tun.name,
      tun,
      openSocket: (port) => new FakeUdpSocket(net, { address: '127.0.0.1', port, queueLimit: 4096 }),
      log,
      uapiSocketDir: dir,
    });
    devices.push(dev);
    sides.push({ dev, tun, address, key: generatePrivateKey() });
  }
  const [a, b] = sides;
  for (const [s, peer] of [
    [a, b],
    [b, a],
  ]) {
    await uapiSet(uapiSocketPath(s.dev.ifname, dir), {
      privateKey: s.key,
      listenPort: 0,
      replacePeers: false,
      peers: [
        {
          publicKey: publicKeyOf(peer.key),
          remove: false,
          updateOnly: false,
          endpoint: parseEndpoint(`127.0.0.1:${peer.dev.pump.localPort}`)!,
          replaceAllowedIps: true,
          allowedIps: [{ cidr: parseCidr(`${peer.address}/32`)!, remove: false }],
        },
      ],
    });
  }
  let delivered = 0;
  for (let i = 0; i < 50; i++) {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      from.tun.inject(ipv4Packet(from.address, to.address, 56, i & 0xff));
      for (let t = 0; t < 200 && to.tun.written.length === 0; t++) await new Promise((r) => setTimeout(r, 5));
      delivered += to.tun.takeWritten().length;
    }
  }
  const after = optimised(HOT);
  process.stdout.write(`${JSON.stringify({ before, after, delivered })}\n`);
} finally {
  for (const d of devices) await d.close('probe over');
  rmSync(dir, { recursive: true, force: true });
}
