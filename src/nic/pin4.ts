// The IPv4 table of connections pinned through services (services.ts): open addressing with
// linear probing, keyed by the client's address and (protocol, port), every entry one
// 32-byte record in one Uint32Array, so that the per-packet lookup hashes two integers, touches
// one cache line and allocates nothing (a Map keyed by a 48-bit number, and a record spread
// over one array per field, each cost several times more per packet, measured with the service
// row of src/bench/conntrack.ts when every packet took this table; with the policy engine only
// a connection's first packet does now, see services.ts). Deletion shifts later entries of the
// probe run back (no tombstones). The table doubles when half full, up to the capacity for
// `maxEntries`.
//
// Every field is a signed 32-bit integer (addresses too, as `| 0` gives them), so that the
// optimising compiler keeps them in registers without conversions. Times are milliseconds
// since the table's base (Date.now scale): the base moves forward (rebase) long before they
// could overflow.

/** Fields of an entry (i32 each), at slot * STRIDE. */
export const P_CLIENT = 0;
/** proto << 16 | client port; EMPTY for a free slot. */
export const P_KEY = 1;
export const P_BACKEND = 2;
export const P_VIP = 3;
/** Service port | closing (1 once a FIN or RST was seen) << 16. */
export const P_VPORT = 4;
/** Expiry, ms since `base`. */
export const P_EXPIRES = 5;
/** The endpoint's index in its service's endpoint list (kept right when endpoints change). */
export const P_EP = 6;
const STRIDE = 8;
const EMPTY = -1;
const INITIAL_SLOTS = 1024;
/** Rebase when times get this far past the base (well below 2^32 ms). */
export const REBASE_AFTER_MS = 2 ** 30;

export class Pin4Table {
  data: Int32Array;
  size = 0;
  /** Bumped whenever entries move (remove, grow): offsets held across calls are stale then. */
  moves = 0;
  /** Date.now() value that expiry times count from. */
  base = 0;
  private mask: number;
  private readonly maxSlots: number;

  constructor(readonly maxEntries: number) {
    let max = INITIAL_SLOTS;
    while (max < maxEntries * 2) max *= 2;
    this.maxSlots = max;
    const n = Math.min(INITIAL_SLOTS, max);
    this.mask = n - 1;
    this.data = new Int32Array(n * STRIDE).fill(EMPTY);
  }

  get slots(): number {
    return this.mask + 1;
  }

  /** The entry offset (slot * STRIDE) of (client, key), or -1. */
  find(client: number, key: number): number {
    const d = this.data;
    const mask = this.mask;
    let i = home(client, key, mask);
    for (;;) {
      const at = i * STRIDE;
      const k = d[at + P_KEY];
      if (k === EMPTY) return -1;
      if (k === key && d[at + P_CLIENT] === client) return at;
      i = (i + 1) & mask;
    }
  }

  /** A new entry for (client, key) (absent), its other fields to be filled; -1 when full. */
  insert(client: number, key: number): number {
    if (this.size >= this.maxEntries) return -1;
    if ((this.size + 1) * 2 > this.slots && this.slots < this.maxSlots) this.grow();
    const d = this.data;
    let i = home(client, key, this.mask);
    while (d[i * STRIDE + P_KEY] !== EMPTY) i = (i + 1) & this.mask;
    const at = i * STRIDE;
    d[at + P_KEY] = key;
    d[at + P_CLIENT] = client;
    d[at + P_VPORT] = 0;
    this.size++;
    return at;
  }

  /** Sets an entry's expiry to `now` + `ms`. */
  expireAt(at: number, now: number, ms: number): void {
    let rel = now - this.base + ms;
    if (rel >= REBASE_AFTER_MS || rel < 0) {
      this.rebase(now);
      rel = ms;
    }
    this.data[at + P_EXPIRES] = rel;
  }

  expired(at: number, now: number): boolean {
    return this.data[at + P_EXPIRES] + this.base <= now;
  }

  /** Frees an entry; entries later in its probe run move back (it may then hold another entry). */
  remove(at: number): void {
    const d = this.data;
    const mask = this.mask;
    let i = at / STRIDE;
    let j = i;
    for (;;) {
      j = (j + 1) & mask;
      const jt = j * STRIDE;
      if (d[jt + P_KEY] === EMPTY) break;
      const h = home(d[jt + P_CLIENT], d[jt + P_KEY], mask);
      // Entry j stays when its home lies cyclically in (i, j].
      if (i <= j ? i < h && h <= j : i < h || h <= j) continue;
      d.copyWithin(i * STRIDE, jt, jt + STRIDE);
      i = j;
    }
    d[i * STRIDE + P_KEY] = EMPTY;
    this.size--;
    this.moves++;
  }

  /** Removes every entry `drop` says to (a full pass). */
  removeWhere(drop: (at: number) => boolean): void {
    const d = this.data;
    for (let i = 0; i <= this.mask; ) {
      const at = i * STRIDE;
      if (d[at + P_KEY] !== EMPTY && drop(at)) this.remove(at);
      else i++;
    }
  }

  /** Entry offsets of every entry. */
  *entries(): Generator<number> {
    for (let i = 0; i <= this.mask; i++) if (this.data[i * STRIDE + P_KEY] !== EMPTY) yield i * STRIDE;
  }

  /** Moves the base to `now` (expiry times stay the same instants). */
  rebase(now: number): void {
    const d = this.data;
    const shift = now - this.base;
    for (let i = 0; i <= this.mask; i++) {
      const at = i * STRIDE;
      if (d[at + P_KEY] === EMPTY) continue;
      d[at + P_EXPIRES] = Math.max(0, d[at + P_EXPIRES] - shift);
    }
    this.base = now;
  }

  private grow(): void {
    const old = this.data;
    const n = this.slots * 2;
    this.mask = n - 1;
    const d = new Int32Array(n * STRIDE).fill(EMPTY);
    for (let s = 0; s < old.length; s += STRIDE) {
      if (old[s + P_KEY] === EMPTY) continue;
      let i = home(old[s + P_CLIENT], old[s + P_KEY], this.mask);
      while (d[i * STRIDE + P_KEY] !== EMPTY) i = (i + 1) & this.mask;
      d.set(old.subarray(s, s + STRIDE), i * STRIDE);
    }
    this.data = d;
    this.moves++;
  }
}

function home(client: number, key: number, mask: number): number {
  let h = Math.imul(client, 0x9e3779b1) ^ Math.imul(key, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h & mask;
}
