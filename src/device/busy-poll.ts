// Busy polling of a device after activity. A device that has just sent a packet to a peer
// often gets the answer a few hundred microseconds later (a request's reply, a TCP ACK), and
// one that has just delivered a packet to the TUN often gets the local application's answer
// soon after. Sleeping in the event loop meanwhile costs a wake-up (an inter-processor
// interrupt; on a VM whose idle vCPUs halt, an exit to the hypervisor) and a cold run of the
// whole packet path; polling the TUN and the socket for a short window instead catches the
// answer on a warm CPU. Measured on the lab's VM, 200 ms pings over one leg: the wake-up of
// an idle process costs 130-250 us, and the asking device's half of a round trip went from
// about 460 to 260 us (the note of the data-plane issue has the figures).
//
// The window is learned per trigger, as the guest cpuidle driver haltpoll learns its poll
// time: after an event that sent to peers, and after one that delivered to the TUN, the time
// to the next event is measured; a gap within the maximum grows the trigger's window to cover
// it, a longer gap (nothing to catch: the next request of a slow client) halves it, down to
// no polling at all. So a device whose traffic never answers quickly (a request every 200 ms
// on the answering side) stops polling after a few events, and a busy device's polls end at
// once because the next batch is already there. Polling time is capped at SHARE of wall time
// (a token bucket of BURST us), so polling never costs more than that share of one CPU.
//
// TENGUARD_BUSY_POLL_US sets the largest window (0 turns polling off; default 1,000 us).
import { TgError } from '../util/errors.js';

export const BUSY_POLL_ENV = 'TENGUARD_BUSY_POLL_US';
/** The largest poll window by default: covers a round trip within a data centre. */
export const DEFAULT_BUSY_POLL_US = 1000;
/** The largest window a setting may ask for. */
export const MAX_BUSY_POLL_US = 10_000;
/** The share of wall-clock time polling may take, at most. */
export const BUSY_POLL_SHARE = 0.25;
/** Polling time that may be spent at once after a quiet stretch (us). */
export const BUSY_POLL_BURST_US = 25_000;
/** Windows shorter than this are not worth a poll (us). */
const MIN_POLL_US = 20;
/** A window grows to this multiple of the gap it missed, plus MIN_POLL_US. */
const GROW = 1.25;

/** Readiness while polling: bit 0 the TUN, bit 1 the socket (native busyWait). */
export type BusyWait = (tunFd: number, socketFd: number, maxMicros: number) => number;
export const READY_TUN = 1;
export const READY_SOCKET = 2;

/** What an event did: sent datagrams to peers, and/or delivered packets to the TUN. */
export const DID_SEND = 1;
export const DID_DELIVER = 2;

export const WAKE_PLACEMENT_ENV = 'TENGUARD_WAKE_PLACEMENT';
/**
 * Wake placement (native/wake.c) applies to the first event after the device was quiet this
 * long (ms): by then an idle CPU has halted and waking it costs more than sharing this one.
 * Measured on the lab's VM (pings over one leg, answering side from capture to reply): every
 * 5 ms the other CPU still wakes fast (25 us) and sharing one CPU loses (52 us); every 50 and
 * 200 ms it wins (205 -> 69 us, 220 -> 90 us); at 20 ms the runs disagreed.
 */
export const QUIET_WAKE_MS = 30;

/** Whether wake placement is on: TENGUARD_WAKE_PLACEMENT=on|off (default on); throws when invalid. */
export function wakePlacementDefault(env: NodeJS.ProcessEnv = process.env): boolean {
  const raw = env[WAKE_PLACEMENT_ENV];
  if (raw === undefined || raw === '' || raw === 'on') return true;
  if (raw === 'off') return false;
  throw new TgError('TG_ERR_INVALID_ARGUMENT', `${WAKE_PLACEMENT_ENV}=${raw} is not valid: on or off`);
}

/** The largest window from TENGUARD_BUSY_POLL_US (default DEFAULT_BUSY_POLL_US); throws when invalid. */
export function busyPollDefault(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[BUSY_POLL_ENV];
  if (raw === undefined || raw === '') return DEFAULT_BUSY_POLL_US;
  const us = Number(raw);
  if (!/^\d+$/.test(raw.trim()) || !Number.isSafeInteger(us) || us > MAX_BUSY_POLL_US)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${BUSY_POLL_ENV}=${raw} is not valid: microseconds from 0 (no busy polling) to ${MAX_BUSY_POLL_US}`,
    );
  return us;
}

export interface BusyPollStats {
  /** Polls made. */
  polls: number;
  /** Polls that ended with a readable TUN or socket. */
  caught: number;
  /** Time spent polling, us. */
  micros: number;
}

/** The most quiet events in a row whose wake placement check is skipped after refusals. */
export const WAKE_BACKOFF_MAX = 16;

/**
 * When a quiet socket event asks for wake placement (native/wake.c). The check reads
 * /proc/loadavg on cold caches, on the way to the packet: on the lab's VM it cost the
 * answering device of a ping every 200 ms about 12 µs of its turnaround (`bench latency
 * --phases`, remote phase, 184 -> 172 µs, one run with the two settings alternating). And it
 * refuses for as long as the asking device busy-polls for the answer (that device is
 * runnable), which is the usual case for request and response. So after a refusal the next
 * 1, then 2, 4 ... up to WAKE_BACKOFF_MAX quiet events skip it; an event that arms starts
 * over, so a device whose peers sleep keeps asking every time.
 */
export class WakeCheckBackoff {
  /** Quiet events that skipped the check. */
  skipped = 0;
  /** Quiet events left to skip. */
  private skip = 0;
  /** Events skipped after the latest refusal: 0 after an arming, else 1, 2, 4 ... */
  private backoff = 0;

  /** For a quiet event: whether to ask; false counts the event as skipped. */
  shouldAsk(): boolean {
    if (this.skip === 0) return true;
    this.skip--;
    this.skipped++;
    return false;
  }

  /** The switch armed (true) or refused (false). */
  answered(armed: boolean): void {
    if (armed) {
      this.backoff = 0;
      return;
    }
    this.backoff = this.backoff === 0 ? 1 : Math.min(WAKE_BACKOFF_MAX, this.backoff * 2);
    this.skip = this.backoff;
  }
}

/** The poll windows and the polling budget of one device; times in us on one monotonic clock. */
export class BusyPollPolicy {
  readonly stats: BusyPollStats = { polls: 0, caught: 0, micros: 0 };
  // Typed arrays: a plain array changed its elements kind (small integers to doubles) on the
  // first window a live device learnt, throwing away code optimised during the warm-up.
  /** Current window per trigger: [after sending, after delivering]. */
  private readonly windows = new Float64Array(2);
  /** When the latest event with that trigger ended, if no event came since; NaN otherwise. */
  private readonly pendingSince = Float64Array.of(Number.NaN, Number.NaN);
  private budget = BUSY_POLL_BURST_US;
  private budgetAt = Number.NaN;

  constructor(readonly maxUs: number) {
    if (!Number.isInteger(maxUs) || maxUs < 0 || maxUs > MAX_BUSY_POLL_US)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `busy poll window ${maxUs} us is out of 0..${MAX_BUSY_POLL_US}`,
      );
  }

  /** The window after an event that did `what` (DID_* bits), in us; for tests and stats. */
  window(what: number): number {
    let w = 0;
    if (what & DID_SEND) w = Math.max(w, this.windows[0]);
    if (what & DID_DELIVER) w = Math.max(w, this.windows[1]);
    return w;
  }

  /** An event (a wake-up or a poll that caught one) at `t`: judges the windows waiting for it. */
  arrived(t: number): void {
    for (let k = 0; k < 2; k++) {
      const since = this.pendingSince[k];
      if (Number.isNaN(since)) continue;
      this.pendingSince[k] = Number.NaN;
      const gap = t - since;
      const w = this.windows[k];
      if (gap <= w) continue;
      if (gap <= this.maxUs) this.windows[k] = Math.min(this.maxUs, Math.ceil(gap * GROW) + MIN_POLL_US);
      else this.windows[k] = w >= 2 * MIN_POLL_US ? Math.floor(w / 2) : 0;
    }
  }

  /** After an event that did `what`, ending at `t`: how long to poll, in us (0: do not). */
  plan(what: number, t: number): number {
    if (this.maxUs === 0) return 0;
    if (what & DID_SEND) this.pendingSince[0] = t;
    if (what & DID_DELIVER) this.pendingSince[1] = t;
    const w = this.window(what);
    if (w < MIN_POLL_US) return 0;
    if (!Number.isNaN(this.budgetAt))
      this.budget = Math.min(BUSY_POLL_BURST_US, this.budget + (t - this.budgetAt) * BUSY_POLL_SHARE);
    this.budgetAt = t;
    const us = Math.floor(Math.min(w, this.budget));
    return us < MIN_POLL_US ? 0 : us;
  }

  /** A poll took `us` and caught an event or not. */
  polled(us: number, caught: boolean): void {
    this.budget -= us;
    this.stats.polls++;
    if (caught) this.stats.caught++;
    this.stats.micros += us;
  }
}
