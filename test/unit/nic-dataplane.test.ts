// The NIC service on in-memory sockets: two NICs, and vSwitches emulated by protocol engines
// on the same fake network. Packets go vSwitch -> NIC -> (NIC ->) vSwitch through real
// WireGuard sessions, tenants are kept apart by session, forged sources are dropped, removal
// ends a session at once, and nothing a NIC sends carries plaintext.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { encodeEndpoint } from '../../src/native/endpoint.js';
import { FakeNetwork, FakeUdpSocket } from '../../src/native/fake.js';
import { NicClient } from '../../src/nic/client.js';
import { NicService } from '../../src/nic/service.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import type { DatagramBatch } from '../../src/protocol/batch.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { Engine } from '../../src/protocol/engine.js';
import { logger } from '../../src/util/log.js';
import { ipv4Packet, prefix } from './protocol-harness.js';

const dir = mkdtempSync(join(tmpdir(), 'tg-nic-dp-'));
const net = new FakeNetwork();
/** Every datagram a NIC sent, copied. */
const nicSent: Buffer[] = [];

class TapSocket extends FakeUdpSocket {
  override sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number {
    for (let i = 0; i < count; i++)
      nicSent.push(Buffer.from(slab.subarray(offsets[i], offsets[i] + lengths[i])));
    return super.sendBatch(slab, offsets, lengths, endpoints, count);
  }
}

const services: NicService[] = [];
after(async () => {
  for (const s of services) await s.close();
  rmSync(dir, { recursive: true, force: true });
});

async function nic(name: string, host: string, fabric: string): Promise<{ svc: NicService; api: NicClient }> {
  const apiSocket = join(dir, `${name}.sock`);
  const svc = await NicService.start({
    apiSocket,
    hostAddress: host,
    fabricAddress: fabric,
    openSocket: (address, port) => new TapSocket(net, { address, port }),
    aead: new JsTransportAead(),
    log: logger('test-nic').child({ nic: name }),
  });
  services.push(svc);
  return { svc, api: new NicClient(apiSocket) };
}

/** A workload's vSwitch: an engine with the NIC as its only peer (allowed IPs 0.0.0.0/0). */
class FakeVSwitch {
  readonly engine = new Engine({ aead: new JsTransportAead() });
  readonly privateKey = generatePrivateKey();
  readonly publicKey = publicKeyOf(this.privateKey);
  readonly socket: FakeUdpSocket;
  readonly received: Buffer[] = [];
  private readonly id: number;
  private readonly slab = Buffer.alloc(4096);
  private readonly rx = Buffer.alloc(64 * 2048);
  private readonly rxLengths = new Uint32Array(64);
  private readonly rxEndpoints = Buffer.alloc(64 * 20);
  private readonly rxOffsets = new Uint32Array(64);

  constructor(hostAddress: string) {
    this.socket = net.createSocket({ address: hostAddress });
    this.id = this.engine.addIdentity(this.privateKey);
    this.socket.start(() => this.pump());
  }

  configure(nicPublicKey: string, psk: string, nicEndpoint: string): void {
    this.engine.addPeer(this.id, {
      publicKey: Buffer.from(nicPublicKey, 'base64'),
      presharedKey: Buffer.from(psk, 'base64'),
      endpoint: encodeEndpoint(nicEndpoint),
      allowedIps: [prefix('0.0.0.0/0')],
      // As the real vSwitch does: opens the session at once, so the NIC learns its endpoint.
      persistentKeepalive: 25,
    });
    const ticker = setInterval(() => this.emit(this.engine.tick(performance.now())), 20);
    ticker.unref();
  }

  send(packet: Buffer): void {
    packet.copy(this.slab, 16);
    const out = this.engine.outbound(
      this.id,
      { buf: this.slab, offsets: Uint32Array.of(16), lengths: Uint32Array.of(packet.length), count: 1 },
      performance.now(),
    );
    this.emit(out.data);
    this.emit(out.control);
  }

  private emit(d: DatagramBatch): void {
    if (d.count > 0) this.socket.sendBatch(d.buf, d.offsets, d.lengths, d.endpoints, d.count);
  }

  private pump(): void {
    const n = this.socket.recvBatch(this.rx, 2048, 0, 64, this.rxLengths, this.rxEndpoints);
    for (let i = 0; i < n; i++) this.rxOffsets[i] = i * 2048;
    const res = this.engine.inbound(
      {
        buf: this.rx,
        offsets: this.rxOffsets,
        lengths: this.rxLengths,
        endpoints: this.rxEndpoints,
        count: n,
      },
      performance.now(),
    );
    for (let i = 0; i < res.tun.count; i++)
      this.received.push(
        Buffer.from(res.tun.buf.subarray(res.tun.offsets[i], res.tun.offsets[i] + res.tun.lengths[i])),
      );
    this.emit(res.control);
  }
}

const settle = (ms = 30): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function place(
  n: { api: NicClient },
  hostAddress: string,
  tenant: string,
  workload: string,
  address: string,
): Promise<FakeVSwitch> {
  const vs = new FakeVSwitch(hostAddress);
  const c = await n.api.registerWorkload({
    tenant,
    workload,
    address,
    vswitchPublicKey: vs.publicKey.toString('base64'),
  });
  vs.configure(c.nicPublicKey, c.psk, c.nicEndpoint);
  return vs;
}

async function link(
  a: { api: NicClient },
  b: { api: NicClient },
  tenant: string,
  aWl: [string, string][],
  bWl: [string, string][],
) {
  const ka = await a.api.tenantKey(tenant);
  const kb = await b.api.tenantKey(tenant);
  const peer = (k: typeof ka, wl: [string, string][]) => ({
    nicIdentityKey: k.nicIdentityKey,
    endpoint: k.endpoint,
    publicKey: k.publicKey,
    signature: k.signature,
    workloads: wl.map(([workload, address]) => ({ workload, address })),
  });
  await a.api.setTenantPeers(tenant, [peer(kb, bWl)]);
  await b.api.setTenantPeers(tenant, [peer(ka, aWl)]);
}

test('two NICs on a fake network: tenants apart by session, forged sources dropped, removal immediate, no plaintext', async () => {
  const A = await nic('a', '198.19.1.2', '198.18.0.11');
  const B = await nic('b', '198.19.2.2', '198.18.0.12');
  // t1: w1, w2 on A, r1 on B. t2 uses the SAME addresses: x1 (= w1's) on A, y1 (= r1's) on B.
  const w1 = await place(A, '198.19.1.1', 't1', 'w1', '100.64.1.11');
  const w2 = await place(A, '198.19.1.1', 't1', 'w2', '100.64.1.12');
  const x1 = await place(A, '198.19.1.1', 't2', 'x1', '100.64.1.11');
  const r1 = await place(B, '198.19.2.1', 't1', 'r1', '100.64.1.21');
  const y1 = await place(B, '198.19.2.1', 't2', 'y1', '100.64.1.21');
  await settle(200);
  await link(
    A,
    B,
    't1',
    [
      ['w1', '100.64.1.11'],
      ['w2', '100.64.1.12'],
    ],
    [['r1', '100.64.1.21']],
  );
  await link(A, B, 't2', [['x1', '100.64.1.11']], [['y1', '100.64.1.21']]);

  const marker = Buffer.from('tenguard-plaintext-marker-0123456789');
  const packet = (src: string, dst: string): Buffer => {
    const p = ipv4Packet(src, dst, 200);
    marker.copy(p, 40);
    return p;
  };
  // Same host, same tenant (the first packet waits for the on-host handshake).
  w1.send(packet('100.64.1.11', '100.64.1.12'));
  await settle(80);
  assert.equal(w2.received.length, 1, 'same-host packet not delivered');
  assert.ok(w2.received[0].includes(marker));
  // Cross host, same tenant: t1's r1 gets it, t2's y1 (same address) does not.
  w1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(120);
  w1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(80);
  assert.equal(r1.received.length, 2, 'cross-host packets not delivered');
  assert.equal(y1.received.length, 0, "t1's packet reached t2");
  // And back.
  r1.send(packet('100.64.1.21', '100.64.1.11'));
  await settle(80);
  assert.equal(w1.received.length, 1);
  assert.equal(x1.received.length, 0, "t1's reply reached t2's workload with the same address");
  // t2 reaches only its own: y1 at the shared address.
  x1.send(packet('100.64.1.11', '100.64.1.21'));
  await settle(120);
  assert.equal(y1.received.length, 1);
  assert.equal(r1.received.length, 2);
  // t2 has no 100.64.1.12: dropped at the NIC, counted.
  x1.send(packet('100.64.1.11', '100.64.1.12'));
  await settle();
  assert.equal(w2.received.length, 1);
  assert.equal(A.svc.agent.forwarder.counters.dropped.noRoute, 1);
  // A forged source (w2's address from w1) is dropped by cryptokey routing.
  const forgedBefore = A.svc.agent.engine.counters.dropped.badInnerSource;
  w1.send(packet('100.64.1.12', '100.64.1.21'));
  await settle();
  assert.equal(A.svc.agent.engine.counters.dropped.badInnerSource, forgedBefore + 1);
  assert.equal(r1.received.length, 2);

  // Removal: w2's keys go at once; its old session is refused.
  const psk = A.svc.agent.keys.get('workload-psk', { workload: 'w2' });
  assert.ok(psk);
  const pskBytes = psk.secret;
  await A.api.removeWorkload('w2');
  assert.ok(
    pskBytes.every((b) => b === 0),
    "w2's PSK was not wiped",
  );
  const unknownBefore = A.svc.agent.engine.counters.dropped.unknownIndex;
  w2.send(packet('100.64.1.12', '100.64.1.11'));
  await settle();
  assert.equal(A.svc.agent.engine.counters.dropped.unknownIndex, unknownBefore + 1);
  assert.equal(w1.received.length, 1);

  // Nothing either NIC sent carries the plaintext.
  assert.ok(nicSent.length > 10);
  assert.equal(nicSent.filter((d) => d.includes(marker)).length, 0, 'a NIC sent plaintext');

  // t2's last workload on A leaves: t2's off-host key is wiped and B's t2 traffic to A stops.
  const t2Key = A.svc.agent.keys.get('tenant-off-host', { tenant: 't2' });
  assert.ok(t2Key);
  const t2Bytes = t2Key.secret;
  await A.api.removeWorkload('x1');
  assert.ok(
    t2Bytes.every((b) => b === 0),
    "t2's off-host key was not wiped",
  );
  assert.equal((await A.api.keys()).filter((k) => k.tenant === 't2').length, 0);
  y1.send(packet('100.64.1.21', '100.64.1.11'));
  await settle(80);
  assert.equal(x1.received.length, 0);

  // Closing the NIC wipes everything it holds.
  const t1Key = A.svc.agent.keys.get('tenant-off-host', { tenant: 't1' });
  assert.ok(t1Key);
  await A.svc.close();
  assert.equal(A.svc.agent.keys.size, 0);
  assert.ok(t1Key.secret.every((b) => b === 0));
});
