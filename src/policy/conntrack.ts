// The connection table of one tenant zone: a bounded open-addressing hash table over entries
// kept in typed arrays (no object, no string per connection). What a connection means
// (states, verdicts, records) is the engine's business; this file only stores, finds and
// frees entries and picks the one to evict.
//
// Key: (IP protocol, family, source workload id, destination workload id, source address,
// destination address, source port, destination port) of the connection's first packet. The
// hash is symmetric in the two ends, so a reply (ends swapped) hashes to the same slot chain
// and one entry serves both directions; find() reports which direction matched.
//
// Layout: entry i occupies words [i*STRIDE, (i+1)*STRIDE) of one ArrayBuffer, seen as u32
// and f64: 32 words, 128 bytes, two cache lines that the CPU's adjacent-line prefetcher
// fetches together. Everything a packet of an existing connection reads or writes (key,
// state, generation, rule, last-seen, counters) is there; what only creation and records
// need (start time, last report, the two sides' rules) is in a second, cold array. Slots are
// one u32 each: entry + 1 in the low 20 bits (0: empty), 12 bits of the hash above as a tag,
// so a probe rarely touches an entry that does not match. The slot array is kept at most 80%
// full (see SLOTS_PER_ENTRY); removal shifts later slots back (no tombstones).
//
// Home positions: a new connection gets the entry at its key's home position (from the hash's
// top 20 bits, spread over the capacity) when that entry is free, otherwise one from the free
// stack. find() loads the home entry's first word together with the slot, before either is
// looked at, so for a connection at home (about half of a full table, most of a sparser one)
// the entry's cache lines are on their way while the slot is read, instead of after: in a
// large table, where both are misses, the first packet of a burst waits for one miss instead of
// two in a row. A connection away from home costs one load more, which the cache usually has.
// Large tables are in transparent huge pages (native/huge.ts), so those misses are not also
// TLB misses.
//
// Destination NAT (nat.ts, kernel conntrack's two tuples): an entry's key is the translated
// connection (client to endpoint), which replies find as its mirror; a NAT-bound entry has a
// second slot, placed by the hash of its original tuple (client to the service address, the
// service's NAT id as destination workload id), which findNat() finds. The top bit of a slot
// tells which of an entry's two hashes placed it (find() never matches a NAT slot, findNat()
// only NAT slots); its tag is the next 11 bits of that hash.
//
// Eviction, when the table is full: the entry that would expire first (last-seen plus its
// state's timeout) among EVICT_SAMPLE entries taken in turn by a clock hand (all of them in a
// table that small). That prefers expired, then unanswered and closing connections over
// established ones (as Linux's early drop does) and costs nothing per packet: there is no
// recency list to maintain. In a large table it is approximate (the first to expire of a
// sample, not of the whole table).

import { allocTable } from '../native/huge.js';

export const STRIDE = 32;
export const COLD_STRIDE = 8;

// u32 word offsets within an entry.
export const W_HASH = 0;
export const W_META = 1; // proto | family << 8
export const W_SWL = 2;
export const W_DWL = 3;
export const W_S0 = 4; // .. W_S0 + 3
export const W_D0 = 8; // .. W_D0 + 3
export const W_SPORT = 12;
export const W_DPORT = 13;
export const W_STATE = 14; // state | closerReply << 8
export const W_GEN = 15;
export const W_RULE = 16;
export const W_FLAGS = 17; // check scope (1 egress, 2 ingress, 3 both)
/** NAT binding (nat.ts): the service's NAT id (0: none), the original tuple's hash, the checksum deltas, the endpoint index. */
export const W_NAT = 18;
export const W_NAT_HASH = 19;
export const W_NAT_DELTA = 22; // forward delta | reverse delta << 16 (RFC 1624 sums)
export const W_NAT_EP = 23;
// f64 indices within an entry (entry f64 base = i * STRIDE / 2).
export const F_LAST = 10;
export const F_PKTS_O = 12;
export const F_BYTES_O = 13;
export const F_PKTS_R = 14;
export const F_BYTES_R = 15;
// Cold words (u32 index i * COLD_STRIDE + C_*) and f64 (i * COLD_STRIDE / 2 + CF_*).
export const C_RULE_E = 0;
export const C_RULE_I = 1;
export const CF_START = 2;
export const CF_REPORTED = 3;

/** Words of a lookup key, at the same offsets as in an entry (W_META .. W_DPORT). */
export const KEY_WORDS = 14;

export const STATE_MASK = 0xff;
export const CLOSER_REPLY = 0x100;

/**
 * Slots per entry of capacity: the slot array is at most 80% full. Dense on purpose: at 4
 * bytes a slot it stays in the CPU's L2 cache and TLB even for 100,000 connections, while a
 * sparser one would not; the longer probe sequences stay within a cache line or two, and the
 * hash tags keep them from touching entries.
 */
const SLOTS_PER_ENTRY = 2;
/** Entries looked at for a victim. */
export const EVICT_SAMPLE = 32;
/** Entries are numbered in the low bits of a slot. */
const INDEX_BITS = 20;
/** home(hash) = ((hash >>> HOME_SHIFT) * capacity / 2^(32 - HOME_SHIFT)) | 0, in [0, capacity). */
const HOME_SHIFT = 12;
const HOME_RANGE = 2 ** (32 - HOME_SHIFT);
const INDEX_MASK = (1 << INDEX_BITS) - 1;
/** Tag bits of a slot: the hash's top 11 bits. */
const TAG_SHIFT = 21;
/** A slot placed by an entry's NAT hash (W_NAT_HASH) rather than its key's (W_HASH). */
const NAT_SLOT = 0x800;
/** NAT slots are added only while all slots stay at most this full (probes must end). */
const MAX_SLOT_LOAD = 0.8;
export const MAX_TABLE_ENTRIES = INDEX_MASK - 1;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

export interface ConntrackTableOptions {
  /** Hard bound on entries (at most MAX_TABLE_ENTRIES). */
  maxEntries: number;
  /** Entries allocated at first; the table doubles up to maxEntries as it fills. */
  initialEntries?: number;
  /** Idle timeout in ms per state (for eviction); index = state code. */
  timeouts: Float64Array;
}

export class ConntrackTable {
  readonly maxEntries: number;
  /** Allocated entries. */
  capacity = 0;
  size = 0;
  u32: Uint32Array = new Uint32Array(0);
  f64: Float64Array = new Float64Array(0);
  cold32: Uint32Array = new Uint32Array(0);
  cold64: Float64Array = new Float64Array(0);
  /** Next entry the engine's sweep looks at. */
  hand = 0;
  private readonly timeouts: Float64Array;
  private slots: Uint32Array = new Uint32Array(0);
  private slotMask = 0;
  /** Free entries, each exactly once; an entry taken at its home may linger until popped. */
  private free: Int32Array = new Int32Array(0);
  private freeTop = 0;
  /** 1: the entry is on the free stack. */
  private stacked: Uint8Array = new Uint8Array(0);
  /** capacity / HOME_RANGE. */
  private homeScale = 0;
  /** The home entry's first word, as find() last loaded it (stored so that the load stays). */
  touched = 0;
  private evictHand = 0;
  /** Entries with a NAT slot. */
  natBound = 0;

  constructor(opts: ConntrackTableOptions) {
    if (!Number.isInteger(opts.maxEntries) || opts.maxEntries < 1 || opts.maxEntries > MAX_TABLE_ENTRIES)
      throw new RangeError(`maxEntries must be an integer in 1..${MAX_TABLE_ENTRIES}`);
    this.maxEntries = opts.maxEntries;
    this.timeouts = opts.timeouts;
    this.resize(Math.min(opts.maxEntries, Math.max(1, opts.initialEntries ?? 1024)));
  }

  get full(): boolean {
    return this.size >= this.maxEntries;
  }

  /**
   * Finds the entry whose key equals `key` (original direction) or its mirror (reply
   * direction, unless `origOnly`). Returns entry * 2 + (1 for reply), or -1.
   */
  find(hash: number, key: Uint32Array, origOnly: boolean): number {
    const slots = this.slots;
    const mask = this.slotMask;
    const u = this.u32;
    const tag = hash >>> TAG_SHIFT;
    const h32 = hash >>> 0;
    let i = hash & mask;
    let v = slots[i];
    // Both loads before anything depends on either (see "Home positions" above).
    this.touched = u[this.home(hash) * STRIDE];
    for (;;) {
      if (v === 0) return -1;
      if (v >>> INDEX_BITS === tag) {
        const e = (v & INDEX_MASK) - 1;
        const b = e * STRIDE;
        if (u[b + W_HASH] === h32 && u[b + W_META] === key[W_META]) {
          if (
            u[b + W_SWL] === key[W_SWL] &&
            u[b + W_DWL] === key[W_DWL] &&
            u[b + W_SPORT] === key[W_SPORT] &&
            u[b + W_DPORT] === key[W_DPORT] &&
            u[b + W_S0] === key[W_S0] &&
            u[b + W_D0] === key[W_D0] &&
            u[b + W_S0 + 1] === key[W_S0 + 1] &&
            u[b + W_S0 + 2] === key[W_S0 + 2] &&
            u[b + W_S0 + 3] === key[W_S0 + 3] &&
            u[b + W_D0 + 1] === key[W_D0 + 1] &&
            u[b + W_D0 + 2] === key[W_D0 + 2] &&
            u[b + W_D0 + 3] === key[W_D0 + 3]
          )
            return e * 2;
          if (
            !origOnly &&
            u[b + W_SWL] === key[W_DWL] &&
            u[b + W_DWL] === key[W_SWL] &&
            u[b + W_SPORT] === key[W_DPORT] &&
            u[b + W_DPORT] === key[W_SPORT] &&
            u[b + W_S0] === key[W_D0] &&
            u[b + W_D0] === key[W_S0] &&
            u[b + W_S0 + 1] === key[W_D0 + 1] &&
            u[b + W_S0 + 2] === key[W_D0 + 2] &&
            u[b + W_S0 + 3] === key[W_D0 + 3] &&
            u[b + W_D0 + 1] === key[W_S0 + 1] &&
            u[b + W_D0 + 2] === key[W_S0 + 2] &&
            u[b + W_D0 + 3] === key[W_S0 + 3]
          )
            return e * 2 + 1;
        }
      }
      i = (i + 1) & mask;
      v = slots[i];
    }
  }

  /**
   * Finds the NAT-bound entry whose original tuple is `key` (its W_DWL a service's NAT id,
   * its destination that service's address, which the NAT id implies). Returns the entry or -1.
   */
  findNat(hash: number, key: Uint32Array): number {
    const slots = this.slots;
    const mask = this.slotMask;
    const u = this.u32;
    const tag = NAT_SLOT | (hash >>> TAG_SHIFT);
    const h32 = hash >>> 0;
    let i = hash & mask;
    for (;;) {
      const v = slots[i];
      if (v === 0) return -1;
      if (v >>> INDEX_BITS === tag) {
        const b = ((v & INDEX_MASK) - 1) * STRIDE;
        if (
          u[b + W_NAT_HASH] === h32 &&
          u[b + W_NAT] === key[W_DWL] &&
          u[b + W_META] === key[W_META] &&
          u[b + W_SWL] === key[W_SWL] &&
          u[b + W_SPORT] === key[W_SPORT] &&
          u[b + W_DPORT] === key[W_DPORT] &&
          u[b + W_S0] === key[W_S0] &&
          u[b + W_S0 + 1] === key[W_S0 + 1] &&
          u[b + W_S0 + 2] === key[W_S0 + 2] &&
          u[b + W_S0 + 3] === key[W_S0 + 3]
        )
          return (v & INDEX_MASK) - 1;
      }
      i = (i + 1) & mask;
    }
  }

  /**
   * Binds entry `e` (live, not bound) to a NAT id: a second slot placed by `natHash`, the hash
   * of its original tuple. The table grows for it when the slots would be more than 80% full;
   * false (nothing changed) when it cannot (a full table holds at least 0.6 x maxEntries bindings).
   */
  bindNat(e: number, natId: number, natHash: number, delta: number, endpoint: number): boolean {
    if (this.size + this.natBound + 1 > this.slots.length * MAX_SLOT_LOAD) {
      if (this.capacity < this.maxEntries) this.resize(Math.min(this.maxEntries, this.capacity * 2));
      if (this.size + this.natBound + 1 > this.slots.length * MAX_SLOT_LOAD) return false;
    }
    const b = e * STRIDE;
    const u = this.u32;
    u[b + W_NAT] = natId;
    u[b + W_NAT_HASH] = natHash;
    u[b + W_NAT_DELTA] = delta;
    u[b + W_NAT_EP] = endpoint;
    this.place(e, natHash, NAT_SLOT);
    this.natBound++;
    return true;
  }

  /** Removes entry `e`'s NAT binding (its NAT slot and words); the entry stays. */
  unbindNat(e: number): void {
    const b = e * STRIDE;
    const u = this.u32;
    if (u[b + W_NAT] === 0) return;
    this.removeSlot(e, u[b + W_NAT_HASH], NAT_SLOT);
    u[b + W_NAT] = u[b + W_NAT_HASH] = u[b + W_NAT_DELTA] = u[b + W_NAT_EP] = 0;
    this.natBound--;
  }

  /**
   * Stores a new entry for `key` (which must not be present) with its other words zeroed
   * and last-seen = start = now. The caller sets a non-zero state at once. Returns the
   * entry, or -1 when the table is full (evict first).
   */
  insert(hash: number, key: Uint32Array, now: number): number {
    if (this.size >= this.capacity) {
      if (this.capacity >= this.maxEntries) return -1;
      this.resize(Math.min(this.maxEntries, this.capacity * 2));
    }
    // An entry is in use while it holds a state (the caller sets one at once, see above).
    let e = this.home(hash);
    if (this.live(e)) {
      do {
        e = this.free[--this.freeTop];
        this.stacked[e] = 0;
      } while (this.live(e));
    }
    const b = e * STRIDE;
    const u = this.u32;
    u.fill(0, b, b + STRIDE);
    u[b + W_HASH] = hash;
    for (let k = W_META; k < KEY_WORDS; k++) u[b + k] = key[k];
    this.f64[(b >> 1) + F_LAST] = now;
    const c = e * COLD_STRIDE;
    this.cold32.fill(0, c, c + COLD_STRIDE);
    this.cold64[(c >> 1) + CF_START] = now;
    this.cold64[(c >> 1) + CF_REPORTED] = now;
    this.place(e, u[b + W_HASH], 0);
    this.size++;
    return e;
  }

  /** Frees an entry (and its NAT binding). */
  remove(e: number): void {
    const b = e * STRIDE;
    const u = this.u32;
    this.unbindNat(e);
    this.removeSlot(e, u[b + W_HASH], 0);
    u.fill(0, b, b + STRIDE);
    if (this.stacked[e] === 0) {
      this.stacked[e] = 1;
      this.free[this.freeTop++] = e;
    }
    this.size--;
  }

  /** Clears the slot of entry `e` placed by `hash` (kind 0 or NAT_SLOT). */
  private removeSlot(e: number, hash: number, kind: number): void {
    const slots = this.slots;
    const mask = this.slotMask;
    const u = this.u32;
    const want = ((kind << INDEX_BITS) | (e + 1)) >>> 0;
    let i = hash & mask;
    while ((slots[i] & (INDEX_MASK | (NAT_SLOT << INDEX_BITS))) >>> 0 !== want) i = (i + 1) & mask;
    // Backward-shift deletion: pull later members of the probe chain into the hole.
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const v = slots[j];
      if (v === 0) break;
      const at = ((v & INDEX_MASK) - 1) * STRIDE;
      const home = u[at + ((v >>> INDEX_BITS) & NAT_SLOT ? W_NAT_HASH : W_HASH)] & mask;
      const between = i <= j ? i < home && home <= j : i < home || home <= j;
      if (between) continue;
      slots[i] = v;
      i = j;
    }
    slots[i] = 0;
  }

  /**
   * The entry to evict for a newcomer: the first to expire (last-seen + timeout of its
   * state) among the next EVICT_SAMPLE entries of the eviction hand. -1 when empty.
   */
  victim(): number {
    if (this.size === 0) return -1;
    const u = this.u32;
    const d = this.f64;
    let best = -1;
    let bestAt = Number.POSITIVE_INFINITY;
    let seen = 0;
    for (let n = 0; n < this.capacity && seen < EVICT_SAMPLE; n++) {
      const e = this.evictHand;
      this.evictHand = e + 1 >= this.capacity ? 0 : e + 1;
      const b = e * STRIDE;
      const st = u[b + W_STATE] & STATE_MASK;
      if (st === 0) continue;
      seen++;
      const at = d[(b >> 1) + F_LAST] + this.timeouts[st];
      if (at < bestAt) {
        bestAt = at;
        best = e;
      }
    }
    return best;
  }

  /** True when entry `e` holds a connection. */
  live(e: number): boolean {
    return (this.u32[e * STRIDE + W_STATE] & STATE_MASK) !== 0;
  }

  /** The entry a connection of `hash` gets when it is free. */
  home(hash: number): number {
    return ((hash >>> HOME_SHIFT) * this.homeScale) | 0;
  }

  private place(e: number, hash: number, kind: number): void {
    const slots = this.slots;
    const mask = this.slotMask;
    let i = hash & mask;
    while (slots[i] !== 0) i = (i + 1) & mask;
    slots[i] = (((kind | (hash >>> TAG_SHIFT)) << INDEX_BITS) | (e + 1)) >>> 0;
  }

  private resize(capacity: number): void {
    const buf = allocTable(capacity * STRIDE * 4);
    const u32 = new Uint32Array(buf);
    u32.set(this.u32);
    const old = this.capacity;
    this.u32 = u32;
    this.f64 = new Float64Array(buf);
    const cold = allocTable(capacity * COLD_STRIDE * 4);
    const cold32 = new Uint32Array(cold);
    cold32.set(this.cold32);
    this.cold32 = cold32;
    this.cold64 = new Float64Array(cold);
    const slotCount = nextPow2(Math.ceil(capacity * SLOTS_PER_ENTRY));
    this.slots = new Uint32Array(allocTable(slotCount * 4));
    this.slotMask = slotCount - 1;
    const stacked = new Uint8Array(capacity);
    const free = new Int32Array(capacity);
    let top = 0;
    // Highest first, so that entries not taken at a home are handed out lowest first.
    for (let e = capacity - 1; e >= 0; e--)
      if ((u32[e * STRIDE + W_STATE] & STATE_MASK) === 0) {
        free[top++] = e;
        stacked[e] = 1;
      }
    this.stacked = stacked;
    this.free = free;
    this.freeTop = top;
    this.capacity = capacity;
    // Entries already placed keep their index (callers hold it); only new ones use the new homes.
    this.homeScale = capacity / HOME_RANGE;
    for (let e = 0; e < old; e++)
      if (this.live(e)) {
        this.place(e, u32[e * STRIDE + W_HASH], 0);
        if (u32[e * STRIDE + W_NAT] !== 0) this.place(e, u32[e * STRIDE + W_NAT_HASH], NAT_SLOT);
      }
  }
}

/** Symmetric hash of a key: the same for a key and its mirror. `seed` varies per engine. */
export function hashKey(key: Uint32Array, seed: number): number {
  let a = Math.imul(key[W_SWL] ^ seed, 0x9e3779b1);
  a = Math.imul(a ^ key[W_S0], 0x85ebca6b);
  a = Math.imul(a ^ key[W_S0 + 1], 0xc2b2ae35);
  a = Math.imul(a ^ key[W_S0 + 2], 0x85ebca6b);
  a = Math.imul(a ^ key[W_S0 + 3], 0xc2b2ae35);
  a = Math.imul(a ^ key[W_SPORT], 0x27d4eb2f);
  a ^= a >>> 15;
  let b = Math.imul(key[W_DWL] ^ seed, 0x9e3779b1);
  b = Math.imul(b ^ key[W_D0], 0x85ebca6b);
  b = Math.imul(b ^ key[W_D0 + 1], 0xc2b2ae35);
  b = Math.imul(b ^ key[W_D0 + 2], 0x85ebca6b);
  b = Math.imul(b ^ key[W_D0 + 3], 0xc2b2ae35);
  b = Math.imul(b ^ key[W_DPORT], 0x27d4eb2f);
  b ^= b >>> 15;
  let h = (a + b) ^ Math.imul(key[W_META], 0x165667b1);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h | 0;
}
