// Run as a child process with --allow-natives-syntax, --expose-gc and the data plane's V8
// flags (see device-warmup.test.ts): runs both phases of the warm-up as a device process does
// (warmup.ts, then warmup-io.ts over loopback), a full garbage collection, then starts two
// devices on the live handle classes (packet channels in place of TUNs, UDP sockets on
// loopback), configures them through their UAPI sockets as `wg` does, sends packets both ways
// through the channels, and prints which pump and handle functions were optimised before the
// first live packet and which still are after the live packets, as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from '../../src/device/device.js';
import { DevicePump } from '../../src/device/pump.js';
import { warmDataPath } from '../../src/device/warmup.js';
import { warmDeviceIo } from '../../src/device/warmup-io.js';
import { PacketBatch } from '../../src/native/batch.js';
import { NativeTunDevice } from '../../src/native/tun.js';
import { NativeUdpSocket } from '../../src/native/udp.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { uapiSet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet } from './protocol-harness.js';
import { optimised, proto } from './v8-natives.js';

const HOT: Record<string, unknown> = {
  'DevicePump.serve': proto(DevicePump).serve,
  'DevicePump.serveEvents': proto(DevicePump).serveEvents,
  'DevicePump.socketReadable': proto(DevicePump).socketReadable,
  'DevicePump.onSocketReadable': proto(DevicePump).onSocketReadable,
  'DevicePump.onTunReadable': proto(DevicePump).onTunReadable,
  'DevicePump.send': proto(DevicePump).send,
  'NativeTunDevice.readBatch': proto(NativeTunDevice).readBatch,
  'NativeTunDevice.writeBatch': proto(NativeTunDevice).writeBatch,
  'NativeUdpSocket.recvBatch': proto(NativeUdpSocket).recvBatch,
  'NativeUdpSocket.sendBatch': proto(NativeUdpSocket).sendBatch,
};

const log = logger('warmup-io-probe');
const dir = mkdtempSync(join(tmpdir(), 'tg-warm-io-probe-'));
const devices: Device[] = [];
const apps: NativeTunDevice[] = [];
try {
  warmDataPath(log);
  const io = await warmDeviceIo(log);
  // A full collection before any live peer exists: the warmed code must survive it.
  (globalThis as unknown as { gc: () => void }).gc();
  const before = optimised(HOT);
  // A marker for --trace-deopt output: what follows comes from the live devices.
  process.stdout.write('live devices start\n');
  const sides = [];
  for (const [i, address] of ['100.127.254.1', '100.127.254.2'].entries()) {
    const [tun, app] = NativeTunDevice.pair();
    apps.push(app);
    const dev = await Device.start({
      ifname: `tgwio${process.pid % 10_000}${i}`,
      tun,
      log,
      uapiSocketDir: dir,
    });
    devices.push(dev);
    sides.push({ dev, app, address, key: generatePrivateKey() });
  }
  const [a, b] = sides;
  // Listen ports first, as `wg set listen-port` before the peers: each side's endpoint for
  // the other is then where the other stays (no roaming, which is left out of the warm-up).
  for (const s of sides)
    await uapiSet(uapiSocketPath(s.dev.ifname, dir), { listenPort: 0, replacePeers: false, peers: [] });
  for (const [s, peer] of [
    [a, b],
    [b, a],
  ]) {
    await uapiSet(uapiSocketPath(s.dev.ifname, dir), {
      privateKey: s.key,
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
  const batch = new PacketBatch(4, 2048, 0);
  let delivered = 0;
  for (let i = 0; i < 50; i++) {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const p = ipv4Packet(from.address, to.address, 56, i & 0xff);
      p.copy(batch.slab, 0);
      batch.lengths[0] = p.length;
      from.app.writeBatch(batch.slab, batch.offsets, batch.lengths, 1);
      let n = 0;
      for (let t = 0; t < 200 && n === 0; t++) {
        await new Promise((r) => setTimeout(r, 2));
        n = to.app.readBatch(batch.slab, batch.slotSize, 0, batch.capacity, batch.lengths);
      }
      delivered += n;
    }
  }
  const after = optimised(HOT);
  process.stdout.write(`${JSON.stringify({ io, before, after, delivered })}\n`);
} finally {
  for (const d of devices) await d.close('probe over');
  for (const a of apps) a.close();
  rmSync(dir, { recursive: true, force: true });
}
