// Receiver-index table: random, unique 32-bit indices that the peer puts in the receiver field
// of every message to us, mapping to a handshake in progress (value: its peer) or to a transport
// keypair. One table per engine, shared by all identities, so one UDP port serves them all.
// Index 0 is never handed out (it means "none" in the handshake state).

import { randomFillSync } from 'node:crypto';
import type { Keypair } from './keypair.js';

export class IndexTable<P> {
  /** index -> peer with a handshake in progress under that index. */
  readonly handshakes = new Map<number, P>();
  /** index -> keypair (its peer is keypair.peer). */
  readonly keypairs = new Map<number, Keypair<P>>();
  private readonly pool = new Uint32Array(64);
  private poolPos = 64;

  /** A new index for peer's handshake. */
  newIndexForHandshake(peer: P): number {
    for (;;) {
      if (this.poolPos === this.pool.length) {
        randomFillSync(this.pool);
        this.poolPos = 0;
      }
      const index = this.pool[this.poolPos++];
      if (index === 0 || this.handshakes.has(index) || this.keypairs.has(index)) continue;
      this.handshakes.set(index, peer);
      return index;
    }
  }

  /** The handshake index becomes the keypair's index (wireguard-go SwapIndexForKeypair). */
  swapForKeypair(index: number, keypair: Keypair<P>): void {
    if (!this.handshakes.delete(index)) return;
    this.keypairs.set(index, keypair);
  }

  delete(index: number): void {
    if (index === 0) return;
    this.handshakes.delete(index);
    this.keypairs.delete(index);
  }

  /** The peer an index belongs to, whether handshake or keypair (for cookie replies). */
  peerOf(index: number): P | undefined {
    return this.handshakes.get(index) ?? this.keypairs.get(index)?.peer;
  }

  get size(): number {
    return this.handshakes.size + this.keypairs.size;
  }
}
