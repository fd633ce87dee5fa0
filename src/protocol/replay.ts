// Sliding-window anti-replay filter of RFC 6479 (as WireGuard uses it): a ring of bit blocks,
// where moving the window forward clears whole blocks instead of shifting bits.
//
// Blocks here are 32 bits (JS bitwise operators are 32-bit) and the ring has 256 of them, so
// the window covers (256 - 1) * 32 = 8160 counters behind the highest one seen; wireguard-go
// uses 128 blocks of 64 bits, 8128 counters. Counters are numbers below 2^53 (see
// REJECT_AFTER_MESSAGES in constants.ts); every arithmetic step below is exact in that range.
// Call validateCounter only for authenticated packets: it records the counter as seen.

const BLOCK_BITS = 32;
const RING_BLOCKS = 256;
/** Counters further than this behind the highest one accepted are rejected as too old. */
export const REPLAY_WINDOW_SIZE = (RING_BLOCKS - 1) * BLOCK_BITS;

export class ReplayFilter {
  private last = 0;
  private readonly ring = new Uint32Array(RING_BLOCKS);

  /** Back to the empty state (nothing seen). */
  reset(): void {
    this.last = 0;
    this.ring.fill(0);
  }

  /**
   * Accepts a counter once: false when it is at or above `limit`, too old for the window, or
   * already seen; otherwise records it and returns true.
   */
  validateCounter(counter: number, limit: number): boolean {
    if (!(counter < limit) || counter < 0) return false; // also rejects NaN and Infinity
    const ring = this.ring;
    const indexBlock = Math.floor(counter / BLOCK_BITS);
    if (counter > this.last) {
      // Move the window forward, clearing the blocks it passes over (at most the whole ring).
      const current = Math.floor(this.last / BLOCK_BITS);
      const diff = Math.min(indexBlock - current, RING_BLOCKS);
      for (let i = current + 1; i <= current + diff; i++) ring[i % RING_BLOCKS] = 0;
      this.last = counter;
    } else if (this.last - counter > REPLAY_WINDOW_SIZE) {
      return false;
    }
    const block = indexBlock % RING_BLOCKS;
    const bit = 1 << (counter - indexBlock * BLOCK_BITS);
    const old = ring[block];
    if ((old & bit) !== 0) return false;
    ring[block] = old | bit;
    return true;
  }
}
