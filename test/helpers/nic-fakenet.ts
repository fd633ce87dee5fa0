// The NIC service on in-memory sockets for unit tests: NICs on a FakeNetwork (every datagram
// they send recorded), vSwitches emulated by protocol engines, and helpers to place workloads,
// link a tenant's NICs and push an allow-all policy.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FakeNetwork, FakeUdpSocket } from '../../src/native/fake.js';
import { ENDPOINT_SIZE, encodeEndpoint } from '../../src/net/endpoint.js';
import { NicClient } from '../../src/nic/client.js';
import { openPsk, type PskBox } from '../../src/nic/psk-box.js';
import { NicService } from '../../src/nic/service.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import type { DatagramBatch } from '../../src/protocol/batch.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { Engine } from '../../src/protocol/engine.js';
import { logger } from '../../src/util/log.js';
import { prefix } from './protocol-harness.js';

export interface FakeNic {
  svc: NicService;
  api: NicClient;
}

export class FakeNicNet {
  readonly net = new FakeNetwork();
  /** Every datagram a NIC sent, copied. */
  readonly nicSent: Buffer[] = [];
  readonly services: NicService[] = [];
  readonly dir = mkdtempSync(join(tmpdir(), 'tg-nic-fake-'));

  async nic(name: string, host: string, fabric: string): Promise<FakeNic> {
    const apiSocket = join(this.dir, `${name}.sock`);
    const sent = this.nicSent;
    const net = this.net;
    class TapSocket extends FakeUdpSocket {
      override sendBatch(
        slab: Buffer,
        offsets: Uint32Array,
        lengths: Uint32Array,
        endpoints: Buffer,
        count: number,
      ): number {
        for (let i = 0; i < count; i++)
          sent.push(Buffer.from(slab.subarray(offsets[i], offsets[i] + lengths[i])));
        return super.sendBatch(slab, offsets, lengths, endpoints, count);
      }
    }
    const svc = await NicService.start({
      apiSocket,
      hostAddress: host,
      fabricAddress: fabric,
      openSocket: (address, port) => new TapSocket(net, { address, port }),
      aead: new JsTransportAead(),
      log: logger('test-nic').child({ nic: name }),
    });
    this.services.push(svc);
    return { svc, api: new NicClient(apiSocket) };
  }

  async place(
    n: FakeNic,
    hostAddress: string,
    tenant: string,
    workload: string,
    address: string,
    labels?: Record<string, string>,
  ): Promise<FakeVSwitch> {
    const vs = new FakeVSwitch(this.net, hostAddress);
    const c = await n.api.registerWorkload({
      tenant,
      workload,
      address,
      vswitchPublicKey: vs.publicKey.toString('base64'),
      labels,
    });
    vs.configure(workload, c.nicPublicKey, c.sealedPsk, c.nicEndpoint);
    return vs;
  }

  async close(): Promise<void> {
    for (const s of this.services) await s.close();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** Gives two NICs holding `tenant` each other's signed tenant key and workloads. */
export async function link(
  a: FakeNic,
  b: FakeNic,
  tenant: string,
  aWl: [string, string, Record<string, string>?][],
  bWl: [string, string, Record<string, string>?][],
): Promise<void> {
  const ka = await a.api.tenantKey(tenant);
  const kb = await b.api.tenantKey(tenant);
  const peer = (k: typeof ka, wl: [string, string, Record<string, string>?][]) => ({
    nicIdentityKey: k.nicIdentityKey,
    endpoint: k.endpoint,
    publicKey: k.publicKey,
    signature: k.signature,
    workloads: wl.map(([workload, address, labels]) => ({ workload, address, labels })),
  });
  await a.api.setTenantPeers(tenant, [peer(kb, bWl)]);
  await b.api.setTenantPeers(tenant, [peer(ka, aWl)]);
}

/** A policy letting every workload of `tenant` talk to every other one of it, any protocol. */
export function allowWithinTenant(tenant: string): unknown {
  return {
    version: 1,
    tenant,
    rules: [
      { id: 'tenant-out', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
      { id: 'tenant-in', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    ],
  };
}

const SLOT = 65_536;

export const settle = (ms = 30): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A workload's vSwitch: an engine with the NIC as its only peer (allowed IPs 0.0.0.0/0). */
export class FakeVSwitch {
  readonly engine = new Engine({ aead: new JsTransportAead() });
  readonly privateKey = generatePrivateKey();
  readonly publicKey = publicKeyOf(this.privateKey);
  readonly socket: FakeUdpSocket;
  readonly received: Buffer[] = [];
  private readonly id: number;
  // Room for any WireGuard message: 64 KiB slots (resident only where packets land).
  private readonly slab = Buffer.alloc(SLOT);
  private readonly rx = Buffer.alloc(64 * SLOT);
  private readonly rxLengths = new Uint32Array(64);
  private readonly rxEndpoints = Buffer.alloc(64 * ENDPOINT_SIZE);
  private readonly rxOffsets = new Uint32Array(64);

  constructor(net: FakeNetwork, hostAddress: string) {
    this.socket = net.createSocket({ address: hostAddress });
    this.id = this.engine.addIdentity(this.privateKey);
    this.socket.start(() => this.pump());
  }

  /** As the vSwitch does: the PSK opened from the NIC's box with this instance's private key. */
  configure(workload: string, nicPublicKey: string, sealedPsk: PskBox, nicEndpoint: string): void {
    const nic = Buffer.from(nicPublicKey, 'base64');
    const psk = Buffer.alloc(32);
    openPsk(sealedPsk, { workload, instancePrivateKey: this.privateKey, nicPublicKey: nic }, psk);
    this.engine.addPeer(this.id, {
      publicKey: nic,
      presharedKey: psk,
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
    const n = this.socket.recvBatch(this.rx, SLOT, 0, 64, this.rxLengths, this.rxEndpoints);
    for (let i = 0; i < n; i++) this.rxOffsets[i] = i * SLOT;
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
