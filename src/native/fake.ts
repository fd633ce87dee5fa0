// In-memory fakes of TunDevice and PacketSocket with the batch semantics, argument checks,
// counters and readiness of the native ones, so that protocol tests run two peers in one
// process without root.
//
// Readiness is level-triggered like uv_poll: while a started fake has queued packets, its
// callback runs once per event-loop turn (setImmediate) until they are drained.
// FakeNetwork delivers synchronously into the destination's queue when sendBatch runs (as
// loopback does), and can drop, duplicate and reorder datagrams with a seeded generator so
// that a failing test replays exactly.

import {
  decodeEndpoint,
  ENDPOINT_OFFSET_FAMILY,
  ENDPOINT_SIZE,
  encodeAddressPort,
  endpointAddress,
  endpointPort,
} from '../net/endpoint.js';
import { TgError } from '../util/errors.js';
import type { IoStats, PacketSocket, ReadableCallback, TunDevice } from './types.js';
import { checkEndpointFamilies, checkEndpoints, checkExtents, checkSlots, errnoError } from './validate.js';

function emptyStats(): IoStats {
  return { rxTruncated: 0, rxErrors: 0, rxStale: 0, txDropped: 0, txRejected: 0, lastError: null };
}

function countDrop(
  stats: IoStats,
  counter: 'rxTruncated' | 'rxErrors' | 'txDropped' | 'txRejected',
  errno: string,
) {
  stats[counter]++;
  stats.lastError = errno;
}

/** FIFO with O(1) shift, for the fakes' packet queues. */
class Queue<T> {
  private items: T[] = [];
  private head = 0;

  get length(): number {
    return this.items.length - this.head;
  }

  push(item: T): void {
    this.items.push(item);
  }

  /** Inserts before the newest item (used to simulate reordering). */
  pushBeforeLast(item: T): void {
    this.items.splice(this.items.length - 1, 0, item);
  }

  shift(): T | undefined {
    if (this.head >= this.items.length) return undefined;
    const item = this.items[this.head++];
    if (this.head > 1024 && this.head * 2 > this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }

  peek(): T | undefined {
    return this.head < this.items.length ? this.items[this.head] : undefined;
  }

  clear(): void {
    this.items = [];
    this.head = 0;
  }
}

/** uv_poll-like readiness: level-triggered, one callback per event-loop turn. */
class Readiness {
  private cb: ReadableCallback | null = null;
  private active = false;
  private scheduled = false;
  private pendingError: Error | null = null;
  private readonly hasData: () => boolean;

  constructor(hasData: () => boolean) {
    this.hasData = hasData;
  }

  start(cb: ReadableCallback): void {
    this.cb = cb;
    this.active = true;
    this.kick();
  }

  stop(): void {
    this.active = false;
  }

  /** Reports err once to a started watcher, which then stops (as libuv does on POLLERR). */
  fail(err: Error): void {
    this.pendingError = err;
    this.kick();
  }

  /** Schedules a callback if the watcher is started and there is something to report. */
  kick(): void {
    if (!this.active || this.scheduled || (this.pendingError === null && !this.hasData())) return;
    this.scheduled = true;
    setImmediate(this.fire);
  }

  private readonly fire = (): void => {
    this.scheduled = false;
    const cb = this.cb;
    if (!this.active || cb === null) return;
    if (this.pendingError !== null) {
      const err = this.pendingError;
      this.pendingError = null;
      this.active = false;
      cb(err);
      return;
    }
    if (!this.hasData()) return;
    cb(null);
    this.kick();
  };
}

export interface FakeTunOptions {
  name?: string;
  /** Packets queued towards the reader before inject() drops (the kernel's txqueuelen). */
  queueLimit?: number;
}

/** A TUN device whose "kernel side" is the test: inject() packets to be read, collect what was written. */
export class FakeTun implements TunDevice {
  readonly name: string;
  /** Packets taken by writeBatch (copies), oldest first, unless onWrite is set. */
  readonly written: Buffer[] = [];
  /** When set, receives each written packet (a copy) instead of `written`. */
  onWrite: ((packet: Buffer) => void) | null = null;
  /** inject() calls refused because the queue was full. */
  injectDropped = 0;
  private readonly queueLimit: number;
  private readonly queue = new Queue<Buffer>();
  private readonly readiness = new Readiness(() => this.queue.length > 0);
  private readonly counters = emptyStats();
  private closed = false;
  private failure: string | null = null;

  constructor(opts: FakeTunOptions = {}) {
    this.name = opts.name ?? 'tgfake0';
    this.queueLimit = opts.queueLimit ?? 500;
  }

  /** Queues a packet (copied) for readBatch, as if the stack routed it into the TUN. */
  inject(packet: Uint8Array): boolean {
    if (this.closed || this.failure !== null || this.queue.length >= this.queueLimit) {
      this.injectDropped++;
      return false;
    }
    this.queue.push(Buffer.from(packet));
    this.readiness.kick();
    return true;
  }

  /** Returns and forgets the packets written so far. */
  takeWritten(): Buffer[] {
    return this.written.splice(0, this.written.length);
  }

  /** Simulates the interface going away (`ip link del`): readiness reports `code` once, I/O throws it. */
  fail(code = 'EBADFD'): void {
    this.failure = code;
    this.queue.clear();
    this.readiness.fail(errnoError(code, 'poll'));
  }

  readBatch(slab: Buffer, slotSize: number, headroom: number, max: number, lengths: Uint32Array): number {
    checkSlots(slab, slotSize, headroom, max, lengths);
    this.checkUsable('read');
    const room = slotSize - headroom;
    let n = 0;
    while (n < max) {
      const p = this.queue.shift();
      if (p === undefined) break;
      if (p.length > room) {
        countDrop(this.counters, 'rxTruncated', 'EMSGSIZE');
        continue;
      }
      p.copy(slab, n * slotSize + headroom);
      lengths[n++] = p.length;
    }
    return n;
  }

  writeBatch(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    checkExtents(slab, offsets, lengths, count);
    this.checkUsable('write');
    let written = 0;
    for (let i = 0; i < count; i++) {
      const version = lengths[i] > 0 ? slab[offsets[i]] >> 4 : 0;
      if (version !== 4 && version !== 6) {
        countDrop(this.counters, 'txRejected', 'EINVAL'); // what the kernel answers for a non-IP packet
        continue;
      }
      const copy = Buffer.from(slab.subarray(offsets[i], offsets[i] + lengths[i]));
      if (this.onWrite !== null) this.onWrite(copy);
      else this.written.push(copy);
      written++;
    }
    return written;
  }

  start(onReadable: ReadableCallback): void {
    this.checkUsable('poll');
    this.readiness.start(onReadable);
  }

  stop(): void {
    this.readiness.stop();
  }

  close(): void {
    this.closed = true;
    this.readiness.stop();
    this.queue.clear();
  }

  stats(): IoStats {
    return { ...this.counters };
  }

  private checkUsable(syscall: string): void {
    if (this.closed) throw errnoError('EBADF', syscall);
    if (this.failure !== null) throw errnoError(this.failure, syscall);
  }
}

/** Probabilities in [0, 1], applied to each datagram independently. */
export interface Impairment {
  drop?: number;
  duplicate?: number;
  /** Delivered ahead of the datagram queued just before it at the destination. */
  reorder?: number;
}

export interface FakeNetworkOptions extends Impairment {
  /** Seed of the impairment generator; the same seed replays the same drops. */
  seed?: number;
}

export interface FakeUdpOptions {
  /** Bound address; none, '::' or '0.0.0.0' receive on any address (see FakeUdpSocket). */
  address?: string;
  /** 0 (the default) picks a free port from 40000 up. */
  port?: number;
  v6Only?: boolean;
  /** Datagrams queued before further ones are dropped (the socket receive buffer). */
  queueLimit?: number;
}

interface Datagram {
  data: Buffer;
  source: Buffer;
}

/** Largest UDP payload over IPv4; bigger datagrams are refused with EMSGSIZE. */
const MAX_DATAGRAM = 65507;

/** A network that carries datagrams between FakeUdpSockets by endpoint. */
export class FakeNetwork {
  readonly counters = {
    sent: 0,
    delivered: 0,
    dropped: 0,
    duplicated: 0,
    reordered: 0,
    undeliverable: 0,
    overflow: 0,
  };
  private readonly sockets = new Map<string, FakeUdpSocket>();
  private impairment: Required<Impairment>;
  private rngState: number;
  private nextPort = 40000;

  constructor(opts: FakeNetworkOptions = {}) {
    this.impairment = { drop: 0, duplicate: 0, reorder: 0 };
    this.setImpairment(opts);
    this.rngState = (opts.seed ?? 1) >>> 0;
  }

  setImpairment(imp: Impairment): void {
    for (const key of ['drop', 'duplicate', 'reorder'] as const) {
      const p = imp[key];
      if (p === undefined) continue;
      if (!(p >= 0 && p <= 1))
        throw new TgError('TG_ERR_INVALID_ARGUMENT', `${key} must be a probability in [0, 1]`);
      this.impairment[key] = p;
    }
  }

  createSocket(opts: FakeUdpOptions = {}): FakeUdpSocket {
    return new FakeUdpSocket(this, opts);
  }

  /** mulberry32: small, fast, and good enough to decide drops. */
  private random(): number {
    this.rngState = (this.rngState + 0x6d2b79f5) >>> 0;
    let t = this.rngState;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Registers `socket` under its keys; returns the bound port. */
  attach(socket: FakeUdpSocket, keys: (port: number) => string[], port: number): number {
    const chosen = port !== 0 ? port : this.freePort(keys);
    const all = keys(chosen);
    if (all.some((k) => this.sockets.has(k)))
      throw new TgError('TG_ERR_NATIVE', `cannot open UDP socket on port ${chosen}: address already in use`, {
        cause: errnoError('EADDRINUSE', 'bind'),
      });
    for (const k of all) this.sockets.set(k, socket);
    return chosen;
  }

  detach(socket: FakeUdpSocket): void {
    for (const [k, s] of this.sockets) if (s === socket) this.sockets.delete(k);
  }

  private freePort(keys: (port: number) => string[]): number {
    for (let tries = 0; tries < 25536; tries++) {
      const p = this.nextPort;
      this.nextPort = this.nextPort >= 65535 ? 40000 : this.nextPort + 1;
      if (!keys(p).some((k) => this.sockets.has(k))) return p;
    }
    throw new TgError('TG_ERR_NATIVE', 'no free port on the fake network');
  }

  /** Carries one datagram (data is copied) from source to the endpoint at dest[destOffset]. */
  transmit(data: Uint8Array, source: Buffer, dest: Buffer, destOffset: number): void {
    this.counters.sent++;
    if (this.impairment.drop > 0 && this.random() < this.impairment.drop) {
      this.counters.dropped++;
      return;
    }
    const family = dest[destOffset + ENDPOINT_OFFSET_FAMILY];
    const port = endpointPort(dest, destOffset);
    const exact = `${endpointAddress(dest, destOffset)}|${port}`;
    const target = this.sockets.get(exact) ?? this.sockets.get(`*${family}|${port}`);
    if (target === undefined) {
      this.counters.undeliverable++;
      return;
    }
    const reorder = this.impairment.reorder > 0 && this.random() < this.impairment.reorder;
    const copies = this.impairment.duplicate > 0 && this.random() < this.impairment.duplicate ? 2 : 1;
    for (let c = 0; c < copies; c++) {
      const d: Datagram = { data: Buffer.from(data), source };
      if (!target.enqueue(d, reorder && c === 0)) {
        this.counters.overflow++;
        continue;
      }
      this.counters.delivered++;
      if (reorder && c === 0) this.counters.reordered++;
      if (c === 1) this.counters.duplicated++;
    }
  }
}

const UNSPECIFIED = new Set(['::', '0.0.0.0']);

/**
 * A UDP socket on a FakeNetwork. A socket bound to a specific address receives datagrams
 * sent to that address; one bound to no address, '::' or '0.0.0.0' receives on any address
 * of its families (IPv6 only if v6Only, IPv4 only for '0.0.0.0'), and its datagrams carry
 * 127.0.0.1 or ::1 as source address, after the destination's family.
 */
export class FakeUdpSocket implements PacketSocket {
  readonly family: 4 | 6;
  readonly localPort: number;
  private readonly network: FakeNetwork;
  private readonly bound: Buffer;
  private readonly sourceV4: Buffer;
  private readonly sourceV6: Buffer;
  private readonly v6Only: boolean;
  /** IPv4 socket, or dual-stack wildcard: an IPv6 socket bound to one address or v6Only cannot reach IPv4. */
  private readonly sendsV4: boolean;
  private readonly queueLimit: number;
  private readonly queue = new Queue<Datagram>();
  private readonly readiness = new Readiness(() => this.queue.length > 0);
  private readonly counters = emptyStats();
  private closed = false;

  constructor(network: FakeNetwork, opts: FakeUdpOptions = {}) {
    this.network = network;
    const address = opts.address ?? '::';
    const requested = encodeAddressPort(address, opts.port ?? 0);
    this.family = requested[ENDPOINT_OFFSET_FAMILY] === 4 ? 4 : 6;
    this.v6Only = opts.v6Only ?? false;
    this.queueLimit = opts.queueLimit ?? 4096;
    const text = endpointAddress(requested);
    const wildcard = UNSPECIFIED.has(text);
    const keys = (port: number): string[] => {
      if (!wildcard) return [`${text}|${port}`];
      if (this.family === 4) return [`*4|${port}`];
      return this.v6Only ? [`*6|${port}`] : [`*4|${port}`, `*6|${port}`];
    };
    this.sendsV4 = this.family === 4 || (wildcard && !this.v6Only);
    this.localPort = network.attach(this, keys, endpointPort(requested));
    this.bound = encodeAddressPort(address, this.localPort);
    this.sourceV4 = wildcard ? encodeAddressPort('127.0.0.1', this.localPort) : this.bound;
    this.sourceV6 = wildcard ? encodeAddressPort('::1', this.localPort) : this.bound;
  }

  localEndpoint(): string {
    return decodeEndpoint(this.bound);
  }

  /** Datagrams waiting to be received. */
  get pending(): number {
    return this.queue.length;
  }

  /** Called by the network; false when the receive queue is full. */
  enqueue(d: Datagram, reorder: boolean): boolean {
    if (this.closed || this.queue.length >= this.queueLimit) return false;
    if (reorder && this.queue.length > 0) this.queue.pushBeforeLast(d);
    else this.queue.push(d);
    this.readiness.kick();
    return true;
  }

  recvBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
    endpoints: Buffer,
    offsets?: Uint32Array,
  ): number {
    checkSlots(slab, slotSize, headroom, max, lengths);
    checkEndpoints(endpoints, max, 'max');
    if (offsets !== undefined && offsets.length < max)
      throw new RangeError(`offsets must hold max (${max}) entries, has ${offsets.length}`);
    if (this.closed) throw errnoError('EBADF', 'recvmmsg');
    const room = slotSize - headroom;
    let n = 0;
    while (n < max) {
      const d = this.queue.shift();
      if (d === undefined) break;
      if (d.data.length > room) {
        countDrop(this.counters, 'rxTruncated', 'EMSGSIZE');
        continue;
      }
      d.data.copy(slab, n * slotSize + headroom);
      lengths[n] = d.data.length;
      if (offsets !== undefined) offsets[n] = n * slotSize + headroom;
      d.source.copy(endpoints, n * ENDPOINT_SIZE);
      n++;
    }
    return n;
  }

  sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number {
    checkExtents(slab, offsets, lengths, count);
    checkEndpoints(endpoints, count, 'count');
    checkEndpointFamilies(endpoints, count);
    if (this.closed) throw errnoError('EBADF', 'sendmmsg');
    let sent = 0;
    for (let i = 0; i < count; i++) {
      const at = i * ENDPOINT_SIZE;
      const family = endpoints[at + ENDPOINT_OFFSET_FAMILY];
      if (family === 6 ? this.family === 4 : !this.sendsV4) {
        countDrop(this.counters, 'txRejected', family === 6 ? 'EAFNOSUPPORT' : 'ENETUNREACH');
        continue;
      }
      if (lengths[i] > MAX_DATAGRAM) {
        countDrop(this.counters, 'txRejected', 'EMSGSIZE');
        continue;
      }
      const source = family === 4 ? this.sourceV4 : this.sourceV6;
      this.network.transmit(slab.subarray(offsets[i], offsets[i] + lengths[i]), source, endpoints, at);
      sent++;
    }
    return sent;
  }

  start(onReadable: ReadableCallback): void {
    if (this.closed) throw errnoError('EBADF', 'poll');
    this.readiness.start(onReadable);
  }

  stop(): void {
    this.readiness.stop();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.readiness.stop();
    this.queue.clear();
    this.network.detach(this);
  }

  stats(): IoStats {
    return { ...this.counters };
  }
}
