// WireGuard's per-peer timers (whitepaper section 6, the kernel's timers.c, wireguard-go's
// timers.go) as plain state driven by events and `now`, plus one coarse timer wheel for all
// peers of an engine.
//
// Each of the five timers is a deadline (engine clock, ms) or NOT_PENDING. Event methods set or
// clear deadlines exactly where the reference implementations call mod_timer/del_timer;
// expire(now) reports which timers are due as action bits and applies their bookkeeping; the
// engine performs the actions (sending handshakes and keepalives, wiping keys).
//
// The wheel holds each peer at most once, in the slot of the first tick at or after its
// earliest deadline. When a deadline moves later the peer is left where it is: it comes up
// early, expire() finds nothing due, and the engine reschedules it. So events cost O(1) with no
// allocation, and tick(now) only visits peers that are (or were) due.

import {
  KEEPALIVE_TIMEOUT,
  MAX_TIMER_HANDSHAKES,
  REJECT_AFTER_TIME,
  REKEY_TIMEOUT,
  REKEY_TIMEOUT_JITTER_MAX_MS,
} from './constants.js';
import { TIMER_WHEEL_GRANULARITY, TIMER_WHEEL_SLOTS } from './tuning.js';

export const NOT_PENDING = Number.POSITIVE_INFINITY;

/** Actions reported by PeerTimers.expire(), in the order the engine performs them. */
export const TIMER_RETRANSMIT_HANDSHAKE = 1;
export const TIMER_GIVE_UP_HANDSHAKE = 2;
export const TIMER_SEND_KEEPALIVE = 4;
export const TIMER_NEW_HANDSHAKE = 8;
export const TIMER_ZERO_KEY_MATERIAL = 16;
export const TIMER_PERSISTENT_KEEPALIVE = 32;

/** Uniform jitter in [0, REKEY_TIMEOUT_JITTER_MAX_MS) ms, whole milliseconds (wireguard-go fastrandn). */
export function defaultJitter(): number {
  return Math.floor(Math.random() * REKEY_TIMEOUT_JITTER_MAX_MS);
}

export interface WheelEntry {
  /** Time the entry is filed under in the wheel, NOT_PENDING when not in the wheel. */
  wheelAt: number;
  wheelSlot: number;
}

export class PeerTimers<O = unknown> implements WheelEntry {
  retransmitHandshake = NOT_PENDING;
  sendKeepalive = NOT_PENDING;
  newHandshake = NOT_PENDING;
  zeroKeyMaterial = NOT_PENDING;
  persistentKeepalive = NOT_PENDING;
  handshakeAttempts = 0;
  needAnotherKeepalive = false;
  sentLastMinuteHandshake = false;
  /** Set by expire() when a keepalive must be re-armed after the expired one is sent. */
  rearmKeepalive = false;
  wheelAt = NOT_PENDING;
  wheelSlot = -1;

  constructor(
    readonly owner: O,
    private readonly wheel: TimerWheel<PeerTimers<O>> | null,
    private readonly jitter: () => number = defaultJitter,
  ) {}

  /** Earliest pending deadline, NOT_PENDING when none. */
  earliest(): number {
    return Math.min(
      this.retransmitHandshake,
      this.sendKeepalive,
      this.newHandshake,
      this.zeroKeyMaterial,
      this.persistentKeepalive,
    );
  }

  /** After an authenticated data packet is sent. */
  dataSent(now: number): void {
    if (this.newHandshake === NOT_PENDING) {
      this.newHandshake = now + KEEPALIVE_TIMEOUT + REKEY_TIMEOUT + this.jitter();
      this.schedule();
    }
  }

  /** After an authenticated data packet is received. */
  dataReceived(now: number): void {
    if (this.sendKeepalive === NOT_PENDING) {
      this.sendKeepalive = now + KEEPALIVE_TIMEOUT;
      this.schedule();
    } else {
      this.needAnotherKeepalive = true;
    }
  }

  /** After any authenticated packet (keepalive, data, handshake) is sent. */
  anyAuthenticatedPacketSent(): void {
    this.sendKeepalive = NOT_PENDING;
  }

  /** After any authenticated packet (keepalive, data, handshake) is received. */
  anyAuthenticatedPacketReceived(): void {
    this.newHandshake = NOT_PENDING;
  }

  /** After a handshake initiation is sent. */
  handshakeInitiated(now: number): void {
    this.retransmitHandshake = now + REKEY_TIMEOUT + this.jitter();
    this.schedule();
  }

  /** After a handshake response is consumed, or the first data under a responder's keypair arrives. */
  handshakeComplete(): void {
    this.retransmitHandshake = NOT_PENDING;
    this.handshakeAttempts = 0;
    this.sentLastMinuteHandshake = false;
  }

  /** After a session is derived (response sent or consumed). */
  sessionDerived(now: number): void {
    this.zeroKeyMaterial = now + 3 * REJECT_AFTER_TIME;
    this.schedule();
  }

  /** Before an authenticated packet is sent or after one is received. */
  anyAuthenticatedPacketTraversal(now: number, persistentKeepaliveSeconds: number): void {
    if (persistentKeepaliveSeconds > 0) {
      this.persistentKeepalive = now + persistentKeepaliveSeconds * 1000;
      this.schedule();
    }
  }

  /** Makes the persistent keepalive due at `at` (used when the interval is first configured). */
  persistentKeepaliveAt(at: number): void {
    this.persistentKeepalive = at;
    this.schedule();
  }

  /** Stops every timer (peer removed or all keys zeroed with nothing pending). */
  stopAll(): void {
    this.retransmitHandshake = NOT_PENDING;
    this.sendKeepalive = NOT_PENDING;
    this.newHandshake = NOT_PENDING;
    this.zeroKeyMaterial = NOT_PENDING;
    this.persistentKeepalive = NOT_PENDING;
    this.wheel?.unschedule(this);
  }

  /**
   * The timers due at `now`, as TIMER_* bits; their deadlines are cleared and their own
   * bookkeeping applied (attempt counter, give-up rules). The engine then performs the actions
   * in bit order and calls reschedule().
   */
  expire(now: number): number {
    let actions = 0;
    if (this.retransmitHandshake <= now) {
      this.retransmitHandshake = NOT_PENDING;
      if (this.handshakeAttempts > MAX_TIMER_HANDSHAKES) {
        actions |= TIMER_GIVE_UP_HANDSHAKE;
        this.sendKeepalive = NOT_PENDING;
        if (this.zeroKeyMaterial === NOT_PENDING) this.zeroKeyMaterial = now + 3 * REJECT_AFTER_TIME;
      } else {
        this.handshakeAttempts++;
        actions |= TIMER_RETRANSMIT_HANDSHAKE;
      }
    }
    if (this.sendKeepalive <= now) {
      this.sendKeepalive = NOT_PENDING;
      actions |= TIMER_SEND_KEEPALIVE;
      this.rearmKeepalive = this.needAnotherKeepalive;
      this.needAnotherKeepalive = false;
    }
    if (this.newHandshake <= now) {
      this.newHandshake = NOT_PENDING;
      actions |= TIMER_NEW_HANDSHAKE;
    }
    if (this.zeroKeyMaterial <= now) {
      this.zeroKeyMaterial = NOT_PENDING;
      actions |= TIMER_ZERO_KEY_MATERIAL;
    }
    if (this.persistentKeepalive <= now) {
      this.persistentKeepalive = NOT_PENDING;
      actions |= TIMER_PERSISTENT_KEEPALIVE;
    }
    return actions;
  }

  /** After the keepalive of an expired sendKeepalive timer was sent: re-arm when data came meanwhile. */
  afterExpiredKeepalive(now: number): void {
    if (!this.rearmKeepalive) return;
    this.rearmKeepalive = false;
    this.sendKeepalive = now + KEEPALIVE_TIMEOUT;
    this.schedule();
  }

  /** Files the peer under its earliest deadline if that is earlier than where it is filed. */
  schedule(): void {
    const at = this.earliest();
    if (at < this.wheelAt) this.wheel?.schedule(this, at);
  }
}

/**
 * One coarse hashed timer wheel for all peers: SLOTS slots of GRANULARITY ms. An entry is filed in
 * the slot of the first tick boundary at or after its time; due(now) walks the slots from the
 * last tick up to now and collects entries whose time has come (entries for later turns of
 * the wheel stay). Entries come up at most one granularity (plus the driver's tick period) late.
 */
export class TimerWheel<T extends WheelEntry> {
  /** Made on first use: an engine with a few peers touches a few slots (memory per engine). */
  private readonly slots: (Set<T> | undefined)[];
  private cursor = Number.NaN;
  /** At or before the earliest time filed (see lowWater). */
  private low = NOT_PENDING;
  /** due() took entries out since `low` was last exact. */
  private lowStale = false;

  constructor(
    private readonly granularity = TIMER_WHEEL_GRANULARITY,
    private readonly slotCount = TIMER_WHEEL_SLOTS,
  ) {
    this.slots = new Array<Set<T> | undefined>(slotCount).fill(undefined);
  }

  schedule(entry: T, at: number): void {
    this.unschedule(entry);
    if (at === NOT_PENDING) return;
    let tick = Math.ceil(at / this.granularity);
    if (!Number.isNaN(this.cursor) && tick <= this.cursor) tick = this.cursor + 1;
    const slot = this.slotOf(tick);
    entry.wheelAt = at;
    entry.wheelSlot = slot;
    if (at < this.low) this.low = at;
    let set = this.slots[slot];
    if (set === undefined) {
      set = new Set();
      this.slots[slot] = set;
    }
    set.add(entry);
  }

  unschedule(entry: T): void {
    if (entry.wheelSlot >= 0) this.slots[entry.wheelSlot]?.delete(entry);
    entry.wheelAt = NOT_PENDING;
    entry.wheelSlot = -1;
  }

  /** Removes and appends to `out` every entry due at `now`; returns how many were appended. */
  due(now: number, out: T[]): number {
    const nowTick = Math.floor(now / this.granularity);
    if (Number.isNaN(this.cursor)) this.cursor = nowTick - this.slotCount;
    if (nowTick <= this.cursor) return 0;
    const first = Math.max(this.cursor + 1, nowTick - this.slotCount + 1);
    let n = 0;
    for (let tick = first; tick <= nowTick; tick++) {
      const set = this.slots[this.slotOf(tick)];
      if (set === undefined || set.size === 0) continue;
      for (const entry of set) {
        if (entry.wheelAt <= now) {
          set.delete(entry);
          entry.wheelAt = NOT_PENDING;
          entry.wheelSlot = -1;
          out[n++] = entry;
        }
      }
    }
    this.cursor = nowTick;
    // Entries went out, or the mark is in the past (its entry was unscheduled or moved later).
    if (n > 0 || this.low <= now) this.lowStale = true;
    return n;
  }

  /**
   * A time at or before the earliest entry filed: schedule() lowers it and unschedule() leaves
   * it (so it may be early, never late); after a due() that took entries out or passed it, the
   * first read walks the slots to make it exact again (once per tick that had work, and only
   * for a driver that reads it). A driver that sleeps needs no tick before then.
   */
  get lowWater(): number {
    return this.lowStale ? this.recomputeLowWater() : this.low;
  }

  /** Sets lowWater to the earliest entry's time (a walk over the slots); returns it. */
  private recomputeLowWater(): number {
    let low = NOT_PENDING;
    for (const set of this.slots) {
      if (set === undefined || set.size === 0) continue;
      for (const entry of set) if (entry.wheelAt < low) low = entry.wheelAt;
    }
    this.low = low;
    this.lowStale = false;
    return low;
  }

  /** Slot of a tick; ticks may be negative when the clock starts near 0. */
  private slotOf(tick: number): number {
    const s = tick % this.slotCount;
    return s < 0 ? s + this.slotCount : s;
  }

  /** Entries currently filed (for tests and stats). */
  get size(): number {
    let n = 0;
    for (const s of this.slots) n += s?.size ?? 0;
    return n;
  }
}
