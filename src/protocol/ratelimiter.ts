// Token buckets per source address (wireguard-go ratelimiter): each address may spend
// `perSecond` messages a second with bursts of `burst`. The engine keeps two while under load:
// one for handshake messages that carried a valid MAC2 (wireguard-go's limiter, 20/s, burst 5),
// one for the cookie replies it sends (so a spoofed flood cannot turn it into a reflector at
// one victim). Entries idle for RATELIMIT_GC_TIME are collected on tick; the table is bounded
// and refuses new addresses while full (a full table means a flood from that many sources:
// refusing is the conservative answer, and the next collection makes room).

import {
  RATELIMIT_BURST,
  RATELIMIT_GC_TIME,
  RATELIMIT_MAX_ENTRIES,
  RATELIMIT_PACKETS_PER_SECOND,
} from './tuning.js';

interface Bucket {
  lastTime: number;
  /** Milliseconds of allowance, at most cost * burst. */
  tokens: number;
}

export interface RateLimiterOptions {
  perSecond?: number;
  burst?: number;
  maxEntries?: number;
  gcTime?: number;
}

export class RateLimiter {
  private readonly table = new Map<string, Bucket>();
  /** Milliseconds of allowance one message costs. */
  private readonly cost: number;
  private readonly maxTokens: number;
  private readonly maxEntries: number;
  private readonly gcTime: number;

  constructor(opts: RateLimiterOptions = {}) {
    const perSecond = opts.perSecond ?? RATELIMIT_PACKETS_PER_SECOND;
    const burst = opts.burst ?? RATELIMIT_BURST;
    if (!(perSecond > 0) || !Number.isInteger(burst) || burst < 1)
      throw new RangeError('rate limiter: bad rate');
    this.cost = 1000 / perSecond;
    this.maxTokens = this.cost * burst;
    this.maxEntries = opts.maxEntries ?? RATELIMIT_MAX_ENTRIES;
    this.gcTime = opts.gcTime ?? RATELIMIT_GC_TIME;
  }

  /** Whether one more message from `key` (an address) is allowed at `now`; spends it if so. */
  allow(key: string, now: number): boolean {
    const entry = this.table.get(key);
    if (entry === undefined) {
      if (this.table.size >= this.maxEntries) return false;
      this.table.set(key, { lastTime: now, tokens: this.maxTokens - this.cost });
      return true;
    }
    // Time only moves forwards here: an earlier `now` grants nothing and moves nothing back.
    if (now > entry.lastTime) {
      entry.tokens = Math.min(this.maxTokens, entry.tokens + (now - entry.lastTime));
      entry.lastTime = now;
    }
    if (entry.tokens >= this.cost) {
      entry.tokens -= this.cost;
      return true;
    }
    return false;
  }

  /** Drops entries idle for more than the GC time (their buckets would be full again anyway). */
  collect(now: number): void {
    if (this.table.size === 0) return;
    for (const [key, entry] of this.table) if (now - entry.lastTime > this.gcTime) this.table.delete(key);
  }

  get size(): number {
    return this.table.size;
  }
}
