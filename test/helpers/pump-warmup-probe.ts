// Run as a child process with --allow-natives-syntax, --expose-gc and the data plane's V8
// flags (see device-warmup.test.ts): warms the data path as a device process does (the
// engines, then a pair of device pumps), runs a full garbage collection, then starts two
// devices on the native classes (TUN handles joined back to back, UDP sockets on loopback),
// configures them through their UAPI sockets as `wg` does, sends packets both ways through
// their TUNs, and prints which of the pump's readiness handlers were optimised before the
// first live packet and which still are after the live packets, as one JSON line.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Device } from '../../src/device/device.js';
import { DevicePump } from '../../src/device/pump.js';
import { warmDataPath, warmPumps } from '../../src/device/warmup.js';
import { PacketBatch } from '../../src/native/batch.js';
import { NativeTunDevice, tunCoalescingDefault } from '../../src/native/tun.js';
import { NativeUdpSocket } from '../../src/native/udp.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { uapiSet } from '../../src/uapi/client.js';
import { uapiSocketPath } from '../../src/uapi/server.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet } from './protocol-harness.js';

/** V8's OptimizationStatus bit "optimized" (runtime-test.cc). */
const OPTIMIZED = 1 << 4;
const status = new Function('f', 'return %GetOptimizationStatus(f);') as (f: unknown) => number;
const finishCompiles = new Function('%FinalizeOptimization();') as () => void;

// The entry points of the pump's readiness callbacks (what they call is inlined into them).
const pump = DevicePump.prototype as unknown as Record<string, unknown>;
const HOT: Record<string, unknown> = {
  'DevicePump.socketEvent': pump.socketEvent,
  'DevicePump.tunEvent': pump.tunEvent,
};

function optimised(): string[] {
  finishCompiles();
  return Object.entries(HOT)
    .filter(([, f]) => (status(f) & OPTIMIZED) !== 0)
    .map(([name]) => name);
}

const log = logger('pump-warmup-probe');
const dir = mkdtempSync(join(tmpdir(), 'tg-pump-probe-'));
const devices: Device[] = [];
const stacks: NativeTunDevice[] = [];
try {
  warmDataPath(log);
  const pumpRoundTrips = await warmPumps(log);
  (globalThis as unknown as { gc: () => void }).gc();
  const before = optimised();
  const sides = [];
  for (const [i, address] of ['10.9.2.1', '10.9.2.2'].entries()) {
    const [tun, stack] = NativeTunDevice.pair(`tgpp${i}`, { vnetHdr: tunCoalescingDefault() });
    stacks.push(stack);
    const dev = await Device.start({
      ifname: `tgpp${process.pid % 10_000}${i}`,
      tun,
      openSocket: (port) => NativeUdpSocket.open({ address: '::ffff:127.0.0.1', port }),
      log,
      uapiSocketDir: dir,
    });
    devices.push(dev);
    sides.push({ dev, stack, address, key: generatePrivateKey() });
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
  const batch = new PacketBatch(8, 65_536, 0);
  let delivered = 0;
  for (let i = 0; i < 100; i++) {
    for (const [from, to] of [
      [a, b],
      [b, a],
    ]) {
      const p = ipv4Packet(from.address, to.address, 56, i & 0xff);
      p.copy(batch.slab, 0);
      batch.offsets[0] = 0;
      batch.lengths[0] = p.length;
      from.stack.writeBatch(batch.slab, batch.offsets, batch.lengths, 1);
      let n = 0;
      // The first packet waits for the handshake.
      for (let t = 0; t < 1000 && n === 0; t++) {
        await new Promise((r) => setTimeout(r, 2));
        n = to.stack.readBatch(batch.slab, batch.slotSize, 0, batch.capacity, batch.lengths);
      }
      delivered += n;
    }
  }
  const after = optimised();
  process.stdout.write(`${JSON.stringify({ pumpRoundTrips, before, after, delivered })}\n`);
} finally {
  for (const d of devices) await d.close('probe over');
  for (const s of stacks) s.close();
  rmSync(dir, { recursive: true, force: true });
}
