// Handshake rate limit per source address while under load (wireguard-go ratelimiter): a token
// bucket per address allowing RATELIMIT_PACKETS_PER_SECOND with bursts of RATELIMIT_BURST.
// It is only consulted for handshake messages that already carried a valid MAC2, i.e. from
// addresses that proved they receive our traffic, so the table only grows with real sources;
// it is bounded anyway, and refuses new addresses while full.

import {
  RATELIMIT_BURST,
  RATELIMIT_GC_TIME,
  RATELIMIT_MAX_ENTRIES,
  RATELIMIT_PACKETS_PER_SECOND,
} from './tuning.js';

const PACKET_COST = 1000 / RATELIMIT_PACKETS_PER_SECOND; // ms of tokens per packet
const MAX_TOKENS = PACKET_COST * RATELIMIT_BURST;

interface Bucket {
  lastTime: number;
  tokens: number;
}

export class RateLimiter {
  private readonly table = new Map<string, Bucket>();

  constructor(private readonly maxEntries = RATELIMIT_MAX_ENTRIES) {}

  /** Whether one more handshake message from `key` (an address) is allowed at `now`. */
  allow(key: string, now: number): boolean {
    const entry = this.table.get(key);
    if (entry === undefined) {
      if (this.table.size >= this.maxEntries) return false;
      this.table.set(key, { lastTime: now, tokens: MAX_TOKENS - PACKET_COST });
      return true;
    }
    entry.tokens = Math.min(MAX_TOKENS, entry.tokens + Math.max(0, now - entry.lastTime));
    entry.lastTime = now;
    if (entry.tokens > PACKET_COST) {
      entry.tokens -= PACKET_COST;
      return true;
    }
    return false;
  }

  /** Drops entries idle for more than RATELIMIT_GC_TIME. */
  collect(now: number): void {
    if (this.table.size === 0) return;
    for (const [key, entry] of this.table)
      if (now - entry.lastTime > RATELIMIT_GC_TIME) this.table.delete(key);
  }

  get size(): number {
    return this.table.size;
  }
}
