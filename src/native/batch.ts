// Preallocated buffers for the batched I/O calls: one slab of fixed-size slots plus the
// lengths, offsets and endpoints arrays, allocated once and reused for every batch.
import { ENDPOINT_SIZE } from '../net/endpoint.js';
import { loadNative } from './binding.js';

/** Room for the 16-byte WireGuard transport header in front of a packet read from TUN. */
export const WG_HEADROOM = 16;
/** Fits a 1500-byte-MTU packet plus headroom, tag and padding. */
export const DEFAULT_SLOT_SIZE = 2048;
export const DEFAULT_BATCH = 128;
/** Slabs from this size up are mapped by the addon (allocSlab), so untouched pages stay virtual. */
export const MAPPED_SLAB_MIN = 1 << 20;

/** A zero-filled slab; large ones are anonymous mappings, resident only where packets land. */
export function allocSlab(bytes: number): Buffer {
  return bytes >= MAPPED_SLAB_MIN ? loadNative().allocSlab(bytes) : Buffer.alloc(bytes);
}

export class PacketBatch {
  readonly capacity: number;
  readonly slotSize: number;
  readonly headroom: number;
  readonly slab: Buffer;
  readonly lengths: Uint32Array;
  /** offsets[i] = i*slotSize + headroom, where a batched read puts packet i; writable. */
  readonly offsets: Uint32Array;
  /** One endpoint record per slot (sources after recvBatch, destinations for sendBatch). */
  readonly endpoints: Buffer;

  constructor(capacity = DEFAULT_BATCH, slotSize = DEFAULT_SLOT_SIZE, headroom = WG_HEADROOM) {
    if (!Number.isInteger(capacity) || capacity < 1)
      throw new RangeError('capacity must be a positive integer');
    if (!Number.isInteger(slotSize) || !Number.isInteger(headroom) || headroom < 0 || headroom >= slotSize)
      throw new RangeError('headroom must be an integer in [0, slotSize)');
    this.capacity = capacity;
    this.slotSize = slotSize;
    this.headroom = headroom;
    this.slab = allocSlab(capacity * slotSize);
    this.lengths = new Uint32Array(capacity);
    this.offsets = new Uint32Array(capacity);
    for (let i = 0; i < capacity; i++) this.offsets[i] = i * slotSize + headroom;
    this.endpoints = Buffer.alloc(capacity * ENDPOINT_SIZE);
  }

  /** Bytes a read can place in one slot. */
  get room(): number {
    return this.slotSize - this.headroom;
  }

  /** A view of packet i as placed by a batched read. Allocates a view: tests and slow paths only. */
  packet(i: number): Buffer {
    const at = i * this.slotSize + this.headroom;
    return this.slab.subarray(at, at + this.lengths[i]);
  }
}
