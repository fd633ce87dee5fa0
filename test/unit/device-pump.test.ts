// The device pump on fakes: two `Device`s (the code behind `tenguard device`) over in-memory
// TUNs and UDP sockets. What an I/O call throws is handled by the pump's one policy
// (pump.ts): fatal errnos close the device with the reason instead of escaping the poll
// callback, transient ones are counted and retried; the NIC data plane follows it too.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { wakePlacementDefault } from '../../src/device/busy-poll.js';
import { Device, type DeviceOptions } from '../../src/device/device.js';
import { FATAL_STREAK, MAX_PACKET } from '../../src/device/pump.js';
import { FakeNetwork, FakeTun, FakeUdpSocket } from '../../src/native/fake.js';
import { errnoError } from '../../src/native/validate.js';
import { parseCidr, parseEndpoint } from '../../src/net/ip.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet } from '../helpers/protocol-harness.js';

const log = logger('test-device-pump');
const dir = mkdtempSync(join(tmpdir(), 'tg-pump-'));
const devices: Device[] = [];
after(async () => {
  for (const d of devices) await d.close('test over');
  rmSync(dir, { recursive: true, force: true });
});

/** A socket whose calls throw `code` (once, or `times` times in a row) when armed. */
class FailingSocket extends FakeUdpSocket {
  recvFail: { code: string; times: number } | null = null;
  sendFail: { code: string; times: number } | null = null;

  override recvBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
    endpoints: Buffer,
  ): number {
    const f = this.recvFail;
    if (f !== null && f.times > 0) {
      f.times--;
      throw errnoError(f.code, 'recvmmsg');
    }
    return super.recvBatch(slab, slotSize, headroom, max, lengths, endpoints);
  }

  override sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number {
    const f = this.sendFail;
    if (f !== null && f.times > 0) {
      f.times--;
      throw errnoError(f.code, 'sendmmsg');
    }
    return super.sendBatch(slab, offsets, lengths, endpoints, count);
  }
}

/** A TUN whose writes throw `code` while armed. */
class FailingTun extends FakeTun {
  writeFail: string | null = null;

  override writeBatch(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    if (this.writeFail !== null) throw errnoError(this.writeFail, 'writev');
    return super.writeBatch(slab, offsets, lengths, count);
  }
}

interface Side {
  dev: Device;
  tun: FailingTun;
  socket: () => FailingSocket;
  address: string;
}

let serial = 0;

async function side(
  net: FakeNetwork,
  address: string,
  mtu?: number,
  extra: Partial<DeviceOptions> = {},
): Promise<Side> {
  const tun = new FailingTun({ name: `tgpu${serial++}`, queueLimit: 4096 });
  let sock: FailingSocket | null = null;
  const dev = await Device.start({
    ...extra,
    ifname: tun.name,
    tun,
    mtu,
    openSocket: (port) => {
      sock = new FailingSocket(net, { address: '127.0.0.1', port, queueLimit: 4096 });
      return sock;
    },
    aead: new JsTransportAead(),
    log,
    uapiSocketDir: dir,
  });
  devices.push(dev);
  return { dev, tun, socket: () => sock as unknown as FailingSocket, address };
}

/** Two devices that are each other's peer (10.9.0.1/32 and 10.9.0.2/32). */
async function pair(
  mtu?: number,
  extraA: Partial<DeviceOptions> = {},
  extraB: Partial<DeviceOptions> = {},
): Promise<[Side, Side]> {
  const net = new FakeNetwork();
  const a = await side(net, '10.9.0.1', mtu, extraA);
  const b = await side(net, '10.9.0.2', mtu, extraB);
  const ka = generatePrivateKey();
  const kb = generatePrivateKey();
  const configure = (s: Side, key: Buffer, peer: Side, peerKey: Buffer) =>
    s.dev.backend.apply({
      privateKey: key,
      replacePeers: true,
      peers: [
        {
          publicKey: publicKeyOf(peerKey),
          remove: false,
          updateOnly: false,
          endpoint: parseEndpoint(`127.0.0.1:${peer.dev.pump.localPort}`)!,
          replaceAllowedIps: true,
          allowedIps: [{ cidr: parseCidr(`${peer.address}/32`)!, remove: false }],
        },
      ],
    });
  configure(a, ka, b, kb);
  configure(b, kb, a, ka);
  return [a, b];
}

const settle = (ms = 30): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function deliver(from: Side, to: Side, payload: number, count = 1): Promise<Buffer[]> {
  for (let i = 0; i < count; i++) from.tun.inject(ipv4Packet(from.address, to.address, payload, i & 0xff));
  for (let t = 0; t < 100 && to.tun.written.length < count; t++) await settle(10);
  return to.tun.takeWritten();
}

test('a fatal errno from recvBatch closes the device instead of escaping the poll callback', async () => {
  const [a, b] = await pair();
  assert.equal((await deliver(a, b, 100)).length, 1);
  b.socket().recvFail = { code: 'EBADF', times: 1 };
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  const why = await b.dev.stopped;
  assert.match(why, /^UDP receive: EBADF/);
  // Closed as a crashed process would be: the identity (and its keys) is gone.
  assert.throws(() => b.dev.engine.privateKeyOf(b.dev.backend.identityId));
});

test('a fatal errno from sendBatch closes the device instead of escaping the poll callback', async () => {
  const [a, b] = await pair();
  assert.equal((await deliver(a, b, 100)).length, 1);
  a.socket().sendFail = { code: 'ENOTSOCK', times: 1 };
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  assert.match(await a.dev.stopped, /^UDP send: ENOTSOCK/);
});

test('transient errnos are counted and retried; a streak of them is fatal', async () => {
  const [a, b] = await pair();
  assert.equal((await deliver(a, b, 100)).length, 1);
  b.socket().recvFail = { code: 'ENOBUFS', times: 3 };
  const got = await deliver(a, b, 100, 5);
  assert.equal(got.length, 5, 'packets behind a transient receive error were lost');
  assert.equal(b.dev.pump.ioCounters()['io.transientErrors'], 3);
  assert.equal(b.dev.pump.running, true);
  // A send that fails transiently loses its packets but never closes the device.
  a.socket().sendFail = { code: 'ENOMEM', times: FATAL_STREAK + 5 };
  for (let i = 0; i < FATAL_STREAK + 5; i++) {
    a.tun.inject(ipv4Packet(a.address, b.address, 100));
    await settle(1);
  }
  assert.equal(a.dev.pump.running, true);
  assert.equal((await deliver(a, b, 100)).length, 1);
  // A receive that keeps failing (readiness stays level) ends the device after the streak.
  b.socket().recvFail = { code: 'ENOMEM', times: FATAL_STREAK + 10 };
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  assert.match(await b.dev.stopped, /^UDP receive: ENOMEM.*\(64 times in a row\)/);
});

test('a TUN write refused with EIO (interface down) is counted, the device carries on', async () => {
  const [a, b] = await pair();
  assert.equal((await deliver(a, b, 100)).length, 1);
  b.tun.writeFail = 'EIO';
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  await settle(50);
  const c = b.dev.pump.ioCounters();
  assert.equal(c['io.tunTxDropped'], 2);
  assert.equal(c['io.transientErrors'] >= 1, true);
  b.tun.writeFail = null;
  assert.equal((await deliver(a, b, 100)).length, 1);
  // Any other write errno is fatal.
  b.tun.writeFail = 'EBADFD';
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  assert.match(await b.dev.stopped, /^TUN write: EBADFD/);
});

test('wake placement: armed for the first socket event after a quiet stretch, disarmed after every event; TUN events never ask', async () => {
  const QUIET = 150;
  // Records the switch's calls; a's switch refuses to arm (another task runnable), b's arms.
  const calls: Record<'a' | 'b', boolean[]> = { a: [], b: [] };
  const recorder = (k: 'a' | 'b', arms: boolean) => (on: boolean) => {
    calls[k].push(on);
    return on && arms;
  };
  const [a, b] = await pair(
    undefined,
    { wakePlacement: true, wakeHere: recorder('a', false), quietWakeMs: QUIET },
    { wakePlacement: true, wakeHere: recorder('b', true), quietWakeMs: QUIET },
  );
  assert.equal((await deliver(a, b, 100)).length, 1, 'first packet (the handshake) delivered');
  await settle(QUIET + 50);
  calls.a.length = 0;
  calls.b.length = 0;
  const placed = b.dev.pump.ioCounters()['io.wakePlaced'];
  // After a quiet stretch: the event that receives the packet (b) arms and disarms; the one
  // that reads it from the TUN (a) does not ask (its application is still runnable).
  assert.equal((await deliver(a, b, 100)).length, 1);
  assert.deepEqual(calls.a, [], 'a: a TUN event does not ask');
  assert.deepEqual(calls.b, [true, false], 'b: armed, then disarmed');
  // Events within the quiet time do not ask.
  assert.equal((await deliver(a, b, 100, 3)).length, 3);
  assert.deepEqual(calls.b, [true, false]);
  assert.equal(b.dev.pump.ioCounters()['io.wakePlaced'], placed + 1);
  // A socket event on a after a quiet stretch asks; a's switch refuses, so nothing to disarm or count.
  await settle(QUIET + 50);
  assert.equal((await deliver(b, a, 100)).length, 1);
  assert.deepEqual(calls.a, [true], 'a: asked; it did not arm, so there is nothing to disarm');
  assert.equal(a.dev.pump.ioCounters()['io.wakePlaced'], 0, 'a switch that did not arm is not counted');
  // An armed event that ends in a fatal error still disarms.
  await settle(QUIET + 50);
  calls.b.length = 0;
  b.tun.writeFail = 'EBADFD';
  a.tun.inject(ipv4Packet(a.address, b.address, 100));
  assert.match(await b.dev.stopped, /^TUN write: EBADFD/);
  assert.deepEqual(calls.b, [true, false]);
});

test('wake placement: after refusals the check is skipped for 1, 2, 4 ... quiet events; an arming starts over', async () => {
  const QUIET = 60;
  let arms = true; // the handshake's event arms: no backoff to start with
  const asked: boolean[] = [];
  const [a, b] = await pair(
    undefined,
    { wakePlacement: true, quietWakeMs: QUIET },
    {
      wakePlacement: true,
      quietWakeMs: QUIET,
      wakeHere: (on) => {
        if (on) asked.push(arms);
        return on && arms;
      },
    },
  );
  assert.equal((await deliver(a, b, 100)).length, 1, 'first packet (the handshake) delivered');
  const quietEvent = async (): Promise<void> => {
    await settle(QUIET + 40);
    assert.equal((await deliver(a, b, 100)).length, 1);
  };
  arms = false;
  asked.length = 0;
  const skipped0 = b.dev.pump.ioCounters()['io.wakeChecksSkipped'];
  // Refusals: asks at the 1st quiet event, skips 1, asks at the 3rd, skips 2, asks at the 6th.
  for (let i = 0; i < 6; i++) await quietEvent();
  assert.deepEqual(
    asked,
    [false, false, false],
    `asked three times in six quiet events; skipped ${b.dev.pump.ioCounters()['io.wakeChecksSkipped'] - skipped0}`,
  );
  assert.equal(b.dev.pump.ioCounters()['io.wakeChecksSkipped'] - skipped0, 3);
  // Four skips follow; then the switch arms, and the check is made at every quiet event again.
  arms = true;
  for (let i = 0; i < 4; i++) await quietEvent();
  assert.equal(asked.length, 3, 'the four events after the third refusal are skipped');
  const placed = b.dev.pump.ioCounters()['io.wakePlaced'];
  for (let i = 0; i < 3; i++) await quietEvent();
  assert.deepEqual(asked, [false, false, false, true, true, true]);
  assert.equal(b.dev.pump.ioCounters()['io.wakePlaced'] - placed, 3);
});

test('wake placement: the setting', () => {
  assert.equal(wakePlacementDefault({}), true);
  assert.equal(wakePlacementDefault({ TENGUARD_WAKE_PLACEMENT: 'on' }), true);
  assert.equal(wakePlacementDefault({ TENGUARD_WAKE_PLACEMENT: 'off' }), false);
  for (const bad of ['0', 'no', 'OFF '])
    assert.throws(
      () => wakePlacementDefault({ TENGUARD_WAKE_PLACEMENT: bad }),
      (err: Error & { code?: string }) =>
        err.code === 'TG_ERR_INVALID_ARGUMENT' && err.message.includes(`TENGUARD_WAKE_PLACEMENT=${bad}`),
    );
});

test('a TUN MTU the device cannot carry is refused with a clear error', async () => {
  const tun = new FakeTun({ name: 'tgpubad' });
  await assert.rejects(
    Device.start({
      ifname: tun.name,
      tun,
      mtu: MAX_PACKET + 1,
      aead: new JsTransportAead(),
      log,
      uapiSocketDir: dir,
    }),
    (err: Error & { code?: string }) =>
      err.code === 'TG_ERR_INVALID_ARGUMENT' && /MTU 65476 is not supported.*576 to 65475/.test(err.message),
  );
});

/** Sends one packet of `size` bytes (IPv4) from a to b and returns what b's TUN got. */
async function roundTrip(a: Side, b: Side, size: number): Promise<Buffer | undefined> {
  const p = ipv4Packet(a.address, b.address, size - 20, size & 0xff);
  for (let i = 20; i < p.length; i += 997) p[i] = i & 0xff; // not one repeated byte
  a.tun.inject(p);
  for (let t = 0; t < 100 && b.tun.written.length === 0; t++) await settle(5);
  const got = b.tun.takeWritten();
  assert.ok(got.length <= 1);
  if (got.length === 1) assert.deepEqual(got[0], p, `the ${size}-byte packet arrived changed`);
  return got[0];
}

test('inner packets of any size up to MAX_PACKET cross two devices whole', async () => {
  const [a, b] = await pair(MAX_PACKET);
  for (const size of [1420, 1500, 1952, 2048, 8000, 8920, 9000, 16_000, 65_000, MAX_PACKET]) {
    assert.ok(await roundTrip(a, b, size), `a ${size}-byte packet was lost`);
    assert.ok(await roundTrip(b, a, size), `a ${size}-byte packet was lost on the way back`);
  }
  for (const s of [a, b]) {
    const c = s.dev.pump.ioCounters();
    assert.equal(c['dropped.tunOversized'] + c['dropped.udpOversized'] + c['io.udpTxRejected'], 0);
  }
});

test("the TUN MTU bounds only what a device reads: a peer's larger packets are delivered", async () => {
  const [a, b] = await pair(); // both at MTU 1420, as wireguard-go would be
  assert.ok(await roundTrip(a, b, 9000));
});

test('a TUN packet longer than MAX_PACKET is dropped, counted and logged, not sent', async () => {
  const [a, b] = await pair(MAX_PACKET);
  assert.equal(await roundTrip(a, b, MAX_PACKET + 1), undefined);
  assert.equal(a.dev.pump.ioCounters()['dropped.tunOversized'], 1);
  assert.ok(await roundTrip(a, b, MAX_PACKET));
});
