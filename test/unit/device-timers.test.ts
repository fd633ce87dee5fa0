// A quiet device sleeps: its timer steps come once a second at most, not every wheel tick,
// and a timer a packet sets earlier than the armed step still fires on time (the handshake
// retransmission 5 s after an unanswered initiation). Also the wheel's low-water mark and
// the engine's nextTimerAt the device sleeps on.
import assert from 'node:assert/strict';
import { randomFillSync } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { Device } from '../../src/device/device.js';
import { PacketBatch } from '../../src/native/batch.js';
import { FakeNetwork, FakeTun, FakeUdpSocket } from '../../src/native/fake.js';
import { ENDPOINT_SIZE, makeEndpoint } from '../../src/net/endpoint.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import {
  MESSAGE_INITIATION_SIZE,
  MESSAGE_INITIATION_TYPE,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX_MS,
} from '../../src/protocol/constants.js';
import { mac1KeyFor } from '../../src/protocol/cookie.js';
import { generatePrivateKey, mac, publicKeyOf } from '../../src/protocol/crypto.js';
import {
  INITIATION_OFFSET_EPHEMERAL,
  INITIATION_OFFSET_MAC1,
  INITIATION_OFFSET_SENDER,
} from '../../src/protocol/messages.js';
import { NOT_PENDING, TimerWheel, type WheelEntry } from '../../src/protocol/timers.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const log = logger('test-device-timers');
const dir = mkdtempSync(join(tmpdir(), 'tg-timers-'));
const devices: Device[] = [];
after(async () => {
  for (const d of devices) await d.close('test over');
  rmSync(dir, { recursive: true, force: true });
});

const entry = (): WheelEntry => ({ wheelAt: NOT_PENDING, wheelSlot: -1 });

/** A device on the in-memory network (its socket holding up to `queueLimit` datagrams). */
async function quietDevice(
  net: FakeNetwork,
  name: string,
  queueLimit?: number,
): Promise<{ dev: Device; tun: FakeTun }> {
  const tun = new FakeTun({ name, queueLimit: 64 });
  const dev = await Device.start({
    ifname: tun.name,
    tun,
    openSocket: (port) => new FakeUdpSocket(net, { address: '127.0.0.1', port, queueLimit }),
    aead: new JsTransportAead(),
    log,
    uapiSocketDir: dir,
  });
  devices.push(dev);
  return { dev, tun };
}

/** The times of `dev`'s timer steps from now on. */
function stepTimes(dev: Device): number[] {
  const steps: number[] = [];
  const tick = dev.pump.tick.bind(dev.pump);
  dev.pump.tick = () => {
    steps.push(performance.now());
    tick();
  };
  return steps;
}

test('the wheel low-water mark is never later than its earliest entry and exact again after a step past it', () => {
  const w = new TimerWheel<WheelEntry>();
  assert.equal(w.lowWater, NOT_PENDING);
  const a = entry();
  const b = entry();
  w.schedule(a, 5_000);
  w.schedule(b, 900);
  assert.equal(w.lowWater, 900);
  w.unschedule(b);
  assert.equal(w.lowWater, 900, 'unscheduling may leave it early');
  const out: WheelEntry[] = [];
  // A step past the early mark that finds nothing due makes it exact again.
  assert.equal(w.due(1_000, out), 0);
  assert.equal(w.lowWater, 5_000);
  assert.equal(w.due(5_100, out), 1);
  assert.equal(w.lowWater, NOT_PENDING);
  // Left early by an entry moved later (a deadline that moved later is left where it is).
  w.schedule(a, 7_000);
  w.schedule(b, 6_000);
  w.schedule(b, 9_000);
  assert.equal(w.lowWater, 6_000);
  assert.equal(w.due(6_050, out), 0);
  assert.equal(w.lowWater, 7_000);
});

test('a quiet device steps its timers about once a second, not every 100 ms', async () => {
  const { dev } = await quietDevice(new FakeNetwork(), 'tgtm0');
  dev.backend.apply({ privateKey: generatePrivateKey(), replacePeers: true, peers: [] });
  const steps = stepTimes(dev);
  await new Promise((r) => setTimeout(r, 2_600));
  assert.ok(steps.length >= 2 && steps.length <= 4, `${steps.length} timer steps in 2.6 s`);
});

test('an initiation nobody answers is sent again after REKEY_TIMEOUT while the device sleeps', async () => {
  const net = new FakeNetwork();
  // The peer's address: a socket that only counts what arrives.
  const sink = new FakeUdpSocket(net, { address: '127.0.0.1', port: 0 });
  const arrivals: number[] = [];
  const batch = new PacketBatch(8, 2048, 0);
  sink.start(() => {
    const n = sink.recvBatch(batch.slab, batch.slotSize, 0, batch.capacity, batch.lengths, batch.endpoints);
    for (let i = 0; i < n; i++) if (batch.slab[i * batch.slotSize] === 1) arrivals.push(performance.now());
  });
  const { dev, tun } = await quietDevice(net, 'tgtm1');
  dev.backend.apply({
    privateKey: generatePrivateKey(),
    replacePeers: true,
    peers: [
      {
        publicKey: publicKeyOf(generatePrivateKey()),
        remove: false,
        updateOnly: false,
        endpoint: parseEndpoint(`127.0.0.1:${sink.localPort}`)!,
        replaceAllowedIps: true,
        allowedIps: [{ cidr: parseCidr('10.9.7.2/32')!, remove: false }],
      },
    ],
  });
  // Let the device fall asleep (its step armed a second out), then send.
  await new Promise((r) => setTimeout(r, 1_500));
  tun.inject(ipv4Packet('10.9.7.1', '10.9.7.2', 40));
  for (let t = 0; t < 160 && arrivals.length < 2; t++) await new Promise((r) => setTimeout(r, 50));
  sink.close();
  assert.ok(arrivals.length >= 2, `${arrivals.length} initiations arrived`);
  const gap = arrivals[1] - arrivals[0];
  // The wheel's 100 ms granularity and a timer step's delay come on top of the jitter.
  assert.ok(
    gap >= REKEY_TIMEOUT && gap <= REKEY_TIMEOUT + REKEY_TIMEOUT_JITTER_MAX_MS + 250,
    `retransmission after ${Math.round(gap)} ms`,
  );
});

test('a flood wakes a sleeping device: its timer steps come every 100 ms again while its rate limiters hold sources', async () => {
  const net = new FakeNetwork();
  const { dev } = await quietDevice(net, 'tgtm2', 100_000);
  const key = generatePrivateKey();
  dev.backend.apply({ privateKey: key, replacePeers: true, peers: [] });
  const steps = stepTimes(dev);
  // Asleep: right after a step, the next one is armed a second out.
  await new Promise((r) => setTimeout(r, 1_500));
  const seen = steps.length;
  for (let t = 0; t < 300 && steps.length === seen; t++) await new Promise((r) => setTimeout(r, 5));
  await new Promise((r) => setTimeout(r, 50));
  const flooder = new FakeUdpSocket(net, { address: '127.0.0.1', port: 0 });
  const m = Buffer.alloc(MESSAGE_INITIATION_SIZE);
  const slab = Buffer.alloc(MESSAGE_INITIATION_SIZE * 500);
  const offsets = new Uint32Array(500);
  const lengths = new Uint32Array(500).fill(MESSAGE_INITIATION_SIZE);
  const endpoints = Buffer.alloc(500 * ENDPOINT_SIZE);
  const to = makeEndpoint(Uint8Array.of(127, 0, 0, 1), dev.pump.localPort);
  for (let i = 0; i < 500; i++) {
    randomFillSync(m, INITIATION_OFFSET_EPHEMERAL, INITIATION_OFFSET_MAC1 - INITIATION_OFFSET_EPHEMERAL);
    m.writeUInt32LE(MESSAGE_INITIATION_TYPE, 0);
    m.writeUInt32LE(i, INITIATION_OFFSET_SENDER);
    m.set(mac(mac1KeyFor(publicKeyOf(key)), m.subarray(0, INITIATION_OFFSET_MAC1)), INITIATION_OFFSET_MAC1);
    m.copy(slab, i * MESSAGE_INITIATION_SIZE);
    offsets[i] = i * MESSAGE_INITIATION_SIZE;
    to.copy(endpoints, i * ENDPOINT_SIZE);
  }
  const before = steps.length;
  const start = performance.now();
  for (let round = 0; round < 6; round++) {
    flooder.sendBatch(slab, offsets, lengths, endpoints, 500);
    await new Promise((r) => setTimeout(r, 100));
  }
  flooder.close();
  assert.ok(steps.length > before, 'no timer step during the flood');
  const first = steps[before] - start;
  assert.ok(first < 400, `the first timer step came ${Math.round(first)} ms into the flood`);
  assert.ok(steps.length - before >= 4, `${steps.length - before} timer steps in the 600 ms of the flood`);
});
