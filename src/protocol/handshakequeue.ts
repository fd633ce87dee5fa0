// Handshake messages waiting for work (wireguard-go: the handshake queue). The engine copies
// each initiation and response into a ring when it arrives and takes a bounded number out per
// call (engine.ts, HANDSHAKE_WORK_PER_CALL), so a flood can delay handshakes but never the
// data path. The ring is fixed-size: when it is full the newcomer is refused and the engine
// counts the drop. Two rings make the priority classes of the whitepaper's section 5.3: one
// for messages that proved their source address (a valid MAC2, or a response naming one of
// our pending initiations), served first, and one for the rest.

import { ENDPOINT_SIZE } from '../net/endpoint.js';

/** The largest handshake message (an initiation, 148 bytes). */
const SLOT = 148;

export class HandshakeRing {
  private readonly slab: Buffer;
  private readonly lengths: Uint8Array;
  private readonly endpoints: Buffer;
  /** Per message: the sender's cookie-reply allowance was already charged for it. */
  private readonly charged: Uint8Array;
  private head = 0;
  private count = 0;

  constructor(readonly capacity: number) {
    this.slab = Buffer.alloc(capacity * SLOT);
    this.lengths = new Uint8Array(capacity);
    this.endpoints = Buffer.alloc(capacity * ENDPOINT_SIZE);
    this.charged = new Uint8Array(capacity);
  }

  get length(): number {
    return this.count;
  }

  /** Copies a message and its source in; false (nothing copied) when the ring is full. */
  push(buf: Buffer, off: number, len: number, endpoints: Buffer, epOff: number, charged: boolean): boolean {
    if (this.count === this.capacity || len > SLOT) return false;
    const i = (this.head + this.count) % this.capacity;
    buf.copy(this.slab, i * SLOT, off, off + len);
    endpoints.copy(this.endpoints, i * ENDPOINT_SIZE, epOff, epOff + ENDPOINT_SIZE);
    this.lengths[i] = len;
    this.charged[i] = charged ? 1 : 0;
    this.count++;
    return true;
  }

  /**
   * Removes the oldest message and returns its slot (its bytes stay readable through the
   * accessors below until the next push), or -1 when the ring is empty.
   */
  shift(): number {
    if (this.count === 0) return -1;
    const i = this.head;
    this.head = (this.head + 1) % this.capacity;
    this.count--;
    return i;
  }

  /** The slab holding every slot: the message of slot i starts at offsetOf(i). */
  get buf(): Buffer {
    return this.slab;
  }

  offsetOf(slot: number): number {
    return slot * SLOT;
  }

  lengthOf(slot: number): number {
    return this.lengths[slot];
  }

  /** The endpoint records of every slot: slot i's at i * ENDPOINT_SIZE. */
  get sources(): Buffer {
    return this.endpoints;
  }

  wasCharged(slot: number): boolean {
    return this.charged[slot] === 1;
  }

  /** Forgets every message (and wipes their bytes). */
  clear(): void {
    this.slab.fill(0);
    this.head = 0;
    this.count = 0;
  }
}
