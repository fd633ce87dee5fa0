// Batch shapes exchanged between the driver and the engine, and the engine's reusable output
// batches. A batch is a slab plus per-item offsets and lengths (and endpoint records, endpoint.ts, for
// datagrams), so the driver can hand it to recvmmsg/sendmmsg and TUN reads/writes unchanged.

import { ENDPOINT_SIZE } from '../net/endpoint.js';
import type { TransportAead } from './aead.js';
import { AEAD_TAG_SIZE, MESSAGE_TRANSPORT_HEADER_SIZE } from './constants.js';
import { counterHigh, counterLow, writeTransportHeader } from './messages.js';
import { INITIAL_BATCH_CAPACITY, INITIAL_CONTROL_SLAB_SIZE } from './tuning.js';

/** IP packets in a slab: packet i is buf[offsets[i], offsets[i] + lengths[i]). */
export interface PacketBatch {
  buf: Buffer;
  offsets: Uint32Array;
  lengths: Uint32Array;
  count: number;
}

/** UDP datagrams in a slab, with one endpoint record each (source on receive, destination on send). */
export interface DatagramBatch extends PacketBatch {
  /** Record i at endpoints[ENDPOINT_SIZE * i, ENDPOINT_SIZE * (i + 1)). */
  endpoints: Buffer;
}

/** Datagrams to send, each tagged with the identity it belongs to (the driver sends it on that identity's socket). */
export interface OutgoingDatagrams extends DatagramBatch {
  identityIds: Uint32Array;
}

/** Packets for the TUN, each tagged with the id of the peer (hence identity) it came from. */
export interface TunBatch extends PacketBatch {
  peerIds: Uint32Array;
}

/**
 * An array of `n` copies of `fill`, made with the elements kind it keeps (objects, packed):
 * an empty literal starts as small integers and changes kind on its first store, after the
 * code that uses it may already have been optimised for the other kind.
 */
export function slots<T>(n: number, fill: T): T[] {
  return Array.from({ length: n }, () => fill);
}

function grow32(a: Uint32Array, n: number): Uint32Array {
  if (a.length >= n) return a;
  const b = new Uint32Array(Math.max(n, a.length * 2));
  b.set(a);
  return b;
}

function growBuf(a: Buffer, n: number): Buffer {
  if (a.length >= n) return a;
  const b = Buffer.alloc(Math.max(n, a.length * 2));
  a.copy(b);
  return b;
}

const EMPTY_KEY = Buffer.alloc(0);

/** Output of outbound(): transport messages encrypted in place in the caller's slab. */
export class DataOut implements OutgoingDatagrams {
  buf: Buffer = Buffer.alloc(0);
  offsets: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  lengths: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  endpoints: Buffer = Buffer.alloc(INITIAL_BATCH_CAPACITY * ENDPOINT_SIZE);
  identityIds: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  count = 0;
  /** Plaintext (padded) lengths and keys for sealBatch, parallel to offsets. */
  plainLengths: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  keys: Buffer[] = slots(INITIAL_BATCH_CAPACITY, EMPTY_KEY);

  reset(buf: Buffer, capacity: number): void {
    this.buf = buf;
    this.count = 0;
    if (this.offsets.length < capacity) {
      this.offsets = grow32(this.offsets, capacity);
      this.lengths = grow32(this.lengths, capacity);
      this.plainLengths = grow32(this.plainLengths, capacity);
      this.identityIds = grow32(this.identityIds, capacity);
      this.endpoints = growBuf(this.endpoints, this.offsets.length * ENDPOINT_SIZE);
    }
  }

  seal(aead: TransportAead): void {
    if (this.count > 0) aead.sealBatch(this.buf, this.offsets, this.plainLengths, this.keys, this.count);
    // Drop the key references so a later wipe is not defeated by this array.
    for (let i = 0; i < this.count; i++) this.keys[i] = EMPTY_KEY;
  }
}

/** Output of inbound(): decrypted IP packets in the caller's slab. */
export class TunOut implements TunBatch {
  buf: Buffer = Buffer.alloc(0);
  offsets: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  lengths: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  peerIds: Uint32Array = new Uint32Array(INITIAL_BATCH_CAPACITY);
  count = 0;

  reset(buf: Buffer, capacity: number): void {
    this.buf = buf;
    this.count = 0;
    this.offsets = grow32(this.offsets, capacity);
    this.lengths = grow32(this.lengths, capacity);
    this.peerIds = grow32(this.peerIds, capacity);
  }
}

/**
 * Datagrams the engine originates (handshake messages, cookie replies, keepalives, staged
 * packets) in a slab of its own that grows on demand. Transport messages are collected and
 * sealed with one sealBatch call in finish(); their keys are copied so that a keypair wiped
 * later in the same call cannot change what is sealed, and the copies are wiped after sealing.
 */
export class ControlOut implements OutgoingDatagrams {
  buf: Buffer = Buffer.alloc(INITIAL_CONTROL_SLAB_SIZE);
  offsets: Uint32Array = new Uint32Array(64);
  lengths: Uint32Array = new Uint32Array(64);
  endpoints: Buffer = Buffer.alloc(64 * ENDPOINT_SIZE);
  identityIds: Uint32Array = new Uint32Array(64);
  count = 0;
  private used = 0;
  private sealOffsets: Uint32Array = new Uint32Array(64);
  private sealLengths: Uint32Array = new Uint32Array(64);
  private readonly sealKeys: Buffer[] = slots(64, EMPTY_KEY);
  private sealCount = 0;

  reset(): void {
    this.count = 0;
    this.used = 0;
    this.sealCount = 0;
  }

  /** Reserves len bytes for a datagram of an identity to `endpoint`; returns its offset in buf. */
  reserve(len: number, endpoint: Buffer, identityId: number): number {
    const n = this.count;
    if (n === this.offsets.length) {
      this.offsets = grow32(this.offsets, n + 1);
      this.lengths = grow32(this.lengths, n + 1);
      this.identityIds = grow32(this.identityIds, n + 1);
      this.endpoints = growBuf(this.endpoints, this.offsets.length * ENDPOINT_SIZE);
    }
    // 16-byte alignment keeps every message start aligned like the driver's own slabs.
    const off = (this.used + 15) & ~15;
    this.buf = growBuf(this.buf, off + len);
    this.offsets[n] = off;
    this.lengths[n] = len;
    this.identityIds[n] = identityId;
    endpoint.copy(this.endpoints, n * ENDPOINT_SIZE, 0, ENDPOINT_SIZE);
    this.count = n + 1;
    this.used = off + len;
    return off;
  }

  /** Takes back the datagram reserved last. */
  unreserve(): void {
    this.count--;
    this.used = this.offsets[this.count];
  }

  /**
   * Adds a transport message carrying `payload` (empty: keepalive) padded to paddedLength, under
   * the given receiver/counter, to be sealed in finish(). Returns the datagram length.
   */
  addTransport(
    identityId: number,
    endpoint: Buffer,
    payload: Buffer,
    paddedLength: number,
    receiver: number,
    counter: number,
    sendKey: Buffer,
  ): number {
    const len = MESSAGE_TRANSPORT_HEADER_SIZE + paddedLength + AEAD_TAG_SIZE;
    const off = this.reserve(len, endpoint, identityId);
    const buf = this.buf;
    writeTransportHeader(buf, off, receiver, counterLow(counter), counterHigh(counter));
    const start = off + MESSAGE_TRANSPORT_HEADER_SIZE;
    payload.copy(buf, start);
    buf.fill(0, start + payload.length, start + paddedLength);
    const s = this.sealCount;
    if (s === this.sealOffsets.length) {
      this.sealOffsets = grow32(this.sealOffsets, s + 1);
      this.sealLengths = grow32(this.sealLengths, s + 1);
    }
    this.sealOffsets[s] = off;
    this.sealLengths[s] = paddedLength;
    this.sealKeys[s] = Buffer.from(sendKey);
    this.sealCount = s + 1;
    return len;
  }

  /** Seals the collected transport messages (one sealBatch call) and wipes the key copies. */
  finish(aead: TransportAead): void {
    const n = this.sealCount;
    if (n === 0) return;
    aead.sealBatch(this.buf, this.sealOffsets, this.sealLengths, this.sealKeys, n);
    for (let i = 0; i < n; i++) {
      this.sealKeys[i].fill(0);
      this.sealKeys[i] = EMPTY_KEY;
    }
    this.sealCount = 0;
  }
}
