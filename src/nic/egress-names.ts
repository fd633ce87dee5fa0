// The FQDN name cache of egress (egress.ts): per tenant, outside address -> the DNS names the
// NIC's DNS server gave for it, each with its TTL (at least MIN_TTL_S, at most MAX_TTL_S), as
// Cilium's DNS proxy keeps them. Live names decide new connections; expired ones are kept for
// KEEP_EXPIRED_MS more to name flow records. MAX_CACHED_ADDRESSES addresses per tenant,
// MAX_NAMES_PER_ADDRESS names each; the oldest address goes first. Pure: time is passed in.

export const MIN_TTL_S = 5;
export const MAX_TTL_S = 86_400;
export const KEEP_EXPIRED_MS = 10 * 60_000;
export const MAX_CACHED_ADDRESSES = 4096;
export const MAX_NAMES_PER_ADDRESS = 16;

/** The cache key of an outside address given as the engine's words. */
export function addressKey(family: 4 | 6, a0: number, a1: number, a2: number, a3: number): string {
  return family === 4 ? `4:${a0 >>> 0}` : `6:${a0 >>> 0},${a1 >>> 0},${a2 >>> 0},${a3 >>> 0}`;
}

/** The cache key of an address given as 4 or 16 bytes. */
export function addressKeyOf(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length === 4) return addressKey(4, b.readUInt32BE(0), 0, 0, 0);
  return addressKey(6, b.readUInt32BE(0), b.readUInt32BE(4), b.readUInt32BE(8), b.readUInt32BE(12));
}

export class NameCacheCounters {
  /** Address records taken from answers. */
  learned = 0;
  /** Addresses pushed out by the bound. */
  evicted = 0;
}

/** One tenant's outside names. */
export class NameCache {
  readonly counters = new NameCacheCounters();
  /** address key -> name -> expiry (ms). Map order is insertion order: the oldest first. */
  private readonly byAddress = new Map<string, Map<string, number>>();

  constructor(
    readonly maxAddresses = MAX_CACHED_ADDRESSES,
    readonly minTtlS = MIN_TTL_S,
  ) {}

  get size(): number {
    return this.byAddress.size;
  }

  /** Remembers that `name` (canonical) has address `key` for `ttlS` seconds from `now`. */
  learn(name: string, key: string, ttlS: number, now: number): void {
    const ttl = Math.min(MAX_TTL_S, Math.max(this.minTtlS, Number.isFinite(ttlS) ? ttlS : 0));
    let names = this.byAddress.get(key);
    if (names === undefined) {
      if (this.byAddress.size >= this.maxAddresses) {
        const oldest = this.byAddress.keys().next().value as string;
        this.byAddress.delete(oldest);
        this.counters.evicted++;
      }
      names = new Map();
      this.byAddress.set(key, names);
    } else {
      // Fresh again: to the back of the eviction order.
      this.byAddress.delete(key);
      this.byAddress.set(key, names);
    }
    if (!names.has(name) && names.size >= MAX_NAMES_PER_ADDRESS) {
      let first: string | undefined;
      let soonest = Number.POSITIVE_INFINITY;
      for (const [n, t] of names)
        if (t < soonest) {
          soonest = t;
          first = n;
        }
      if (first !== undefined) names.delete(first);
    }
    names.set(name, Math.max(names.get(name) ?? 0, now + ttl * 1000));
    this.counters.learned++;
  }

  /** Names of the address whose answers are within their TTL at `now`; null when none. */
  live(key: string, now: number): string[] | null {
    const names = this.byAddress.get(key);
    if (names === undefined) return null;
    return this.pick(names, now);
  }

  /** Names of the address, also expired ones still kept; null when none. */
  known(key: string, now: number): string[] | null {
    const names = this.byAddress.get(key);
    if (names === undefined) return null;
    return this.pick(names, now - KEEP_EXPIRED_MS);
  }

  /** The names that expire after `after`; null when none. */
  private pick(names: Map<string, number>, after: number): string[] | null {
    const out: string[] = [];
    for (const [n, t] of names) if (t > after) out.push(n);
    return out.length === 0 ? null : out;
  }

  /** Forgets what expired more than KEEP_EXPIRED_MS ago. */
  sweep(now: number): void {
    for (const [k, names] of this.byAddress) {
      for (const [n, t] of names) if (t + KEEP_EXPIRED_MS <= now) names.delete(n);
      if (names.size === 0) this.byAddress.delete(k);
    }
  }
}
