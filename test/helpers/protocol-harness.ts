// In-memory network for protocol engine tests: engines exchange datagrams through a queue, with
// a fake clock, so two (or more) peers talk without root, sockets or TUN devices.

import { ENDPOINT_SIZE, endpointRemoteEquals, makeEndpoint } from '../../src/net/endpoint.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import type { IpPrefix } from '../../src/protocol/allowedips.js';
import type { DatagramBatch } from '../../src/protocol/batch.js';
import { Engine, type EngineOptions } from '../../src/protocol/engine.js';

/** Bytes reserved in front of and behind every packet in a slab. */
export const HEADROOM = 16;
export const TAILROOM = 32;

export function v4(text: string): Uint8Array {
  return Uint8Array.from(text.split('.').map(Number));
}

export function v6(text: string): Uint8Array {
  const [head, tail] = text.split('::');
  const parse = (s: string | undefined): number[] =>
    s ? s.split(':').map((g) => Number.parseInt(g, 16)) : [];
  const h = parse(head);
  const t = parse(tail);
  const groups = tail === undefined ? h : [...h, ...new Array(8 - h.length - t.length).fill(0), ...t];
  const out = new Uint8Array(16);
  groups.forEach((g, i) => {
    out[2 * i] = g >> 8;
    out[2 * i + 1] = g & 0xff;
  });
  return out;
}

export function prefix(text: string): IpPrefix {
  const [addr, bits] = text.split('/');
  const address = addr.includes(':') ? v6(addr) : v4(addr);
  return { address, bits: Number(bits ?? address.length * 8) };
}

/** An IPv4 packet (no options, protocol UDP, checksum not computed) with `payload` bytes of data. */
export function ipv4Packet(src: string, dst: string, payload: number, fill = 0xab): Buffer {
  const p = Buffer.alloc(20 + payload, fill);
  p[0] = 0x45;
  p[1] = 0;
  p.writeUInt16BE(20 + payload, 2);
  p.writeUInt32BE(0, 4);
  p[8] = 64;
  p[9] = 17;
  p.writeUInt16BE(0, 10);
  Buffer.from(v4(src)).copy(p, 12);
  Buffer.from(v4(dst)).copy(p, 16);
  return p;
}

export function ipv6Packet(src: string, dst: string, payload: number, fill = 0xcd): Buffer {
  const p = Buffer.alloc(40 + payload, fill);
  p.writeUInt32BE(0x60000000, 0);
  p.writeUInt16BE(payload, 4);
  p[6] = 17;
  p[7] = 64;
  Buffer.from(v6(src)).copy(p, 8);
  Buffer.from(v6(dst)).copy(p, 24);
  return p;
}

/** Lays packets out in one slab with headroom and tailroom, as a TUN reader would. */
export function packetSlab(packets: Buffer[]): {
  buf: Buffer;
  offsets: Uint32Array;
  lengths: Uint32Array;
  count: number;
} {
  const stride = (p: Buffer) => HEADROOM + p.length + TAILROOM;
  const buf = Buffer.alloc(packets.reduce((n, p) => n + stride(p), 0));
  const offsets = new Uint32Array(packets.length);
  const lengths = new Uint32Array(packets.length);
  let at = 0;
  packets.forEach((p, i) => {
    offsets[i] = at + HEADROOM;
    lengths[i] = p.length;
    p.copy(buf, at + HEADROOM);
    at += stride(p);
  });
  return { buf, offsets, lengths, count: packets.length };
}

/** Lays datagrams out in one slab with their source endpoint records, as recvmmsg would. */
export function datagramSlab(datagrams: { data: Buffer; from: Buffer }[]): DatagramBatch {
  const buf = Buffer.concat(datagrams.map((d) => d.data));
  const offsets = new Uint32Array(datagrams.length);
  const lengths = new Uint32Array(datagrams.length);
  const endpoints = Buffer.alloc(datagrams.length * ENDPOINT_SIZE);
  let at = 0;
  datagrams.forEach((d, i) => {
    offsets[i] = at;
    lengths[i] = d.data.length;
    d.from.copy(endpoints, i * ENDPOINT_SIZE);
    at += d.data.length;
  });
  return { buf, offsets, lengths, endpoints, count: datagrams.length };
}

export class FakeClock {
  now = 1_000_000;
  wall = 1_700_000_000_000;
  advance(ms: number): void {
    this.now += ms;
    this.wall += ms;
  }
}

export interface Delivered {
  peerId: number;
  packet: Buffer;
}

export class Node {
  readonly engine: Engine;
  readonly received: Delivered[] = [];
  /** Source address the network stamps on datagrams from this node (changes to simulate roaming/NAT). */
  source: Buffer;

  constructor(
    readonly net: Net,
    readonly endpoint: Buffer,
    options: Partial<EngineOptions> = {},
  ) {
    this.engine = new Engine({
      aead: new JsTransportAead(),
      wallClock: () => net.clock.wall,
      jitter: () => 0,
      ...options,
    });
    this.source = endpoint;
  }

  /** Outbound on identity `identityId` and hand all produced datagrams to the network. */
  send(identityId: number, packets: Buffer[]): void {
    const r = this.engine.outbound(identityId, packetSlab(packets), this.net.clock.now);
    this.net.collect(this, r.data);
    this.net.collect(this, r.control);
  }

  tick(): void {
    this.net.collect(this, this.engine.tick(this.net.clock.now));
  }
}

export class Net {
  readonly clock = new FakeClock();
  readonly nodes: Node[] = [];
  readonly queue: { to: Buffer; from: Buffer; data: Buffer }[] = [];
  /** All datagrams ever collected, for replay tests. */
  readonly log: { to: Buffer; from: Buffer; data: Buffer }[] = [];
  /** When false, datagrams are discarded (an unreachable network). */
  up = true;

  node(port: number, options: Partial<EngineOptions> = {}): Node {
    const n = new Node(this, makeEndpoint(v4('127.0.0.1'), port), options);
    this.nodes.push(n);
    return n;
  }

  collect(from: Node, batch: DatagramBatch): void {
    for (let i = 0; i < batch.count; i++) {
      const data = Buffer.from(batch.buf.subarray(batch.offsets[i], batch.offsets[i] + batch.lengths[i]));
      const to = Buffer.from(batch.endpoints.subarray(i * ENDPOINT_SIZE, (i + 1) * ENDPOINT_SIZE));
      const item = { to, from: Buffer.from(from.source), data };
      this.log.push(item);
      if (this.up) this.queue.push(item);
    }
  }

  /** Delivers queued datagrams (and what they cause) until the network is quiet. */
  flush(maxRounds = 20): void {
    for (let round = 0; round < maxRounds && this.queue.length > 0; round++) {
      const items = this.queue.splice(0);
      for (const node of this.nodes) {
        // By address and port: a record may also name the source it leaves from.
        const mine = items.filter((d) => endpointRemoteEquals(d.to, 0, node.endpoint, 0));
        if (mine.length > 0) this.deliver(node, mine);
      }
    }
  }

  deliver(node: Node, items: { from: Buffer; data: Buffer }[]): void {
    const batch = datagramSlab(items);
    const r = node.engine.inbound(batch, this.clock.now);
    for (let i = 0; i < r.tun.count; i++) {
      const off = r.tun.offsets[i];
      node.received.push({
        peerId: r.tun.peerIds[i],
        packet: Buffer.from(r.tun.buf.subarray(off, off + r.tun.lengths[i])),
      });
    }
    this.collect(node, r.control);
    // What a driver does once per event-loop turn: work off queued handshake messages.
    for (let turn = 0; turn < 1000 && node.engine.pendingHandshakes > 0; turn++)
      this.collect(node, node.engine.handshakes(this.clock.now));
  }

  /** Ticks every node every `step` ms for `duration` ms, flushing the network after each tick. */
  run(duration: number, step = 100): void {
    const end = this.clock.now + duration;
    while (this.clock.now < end) {
      this.clock.advance(Math.min(step, end - this.clock.now));
      for (const node of this.nodes) node.tick();
      this.flush();
    }
  }
}
