// The device pump: the one I/O loop behind every tenguard tunnel device, both the
// per-workload `tenguard device` process (device.ts) and each instance of the vSwitch's shared
// mode (vswitch/shared-device.ts). It feeds the protocol engine from a TUN device and a UDP
// socket in batches, sends what the engine returns, steps the engine's timers when its owner
// ticks it, rebinds the socket for the UAPI, and counts its I/O drops.
//
// Hot path per readiness event: readBatch/recvBatch (one N-API call per batch), one engine
// call per batch (routing, headers, replay, cryptokey routing in JS; one native AEAD call),
// one sendmmsg / TUN write batch. At most DRAIN_ROUNDS batches per event, then it yields to the
// other direction and the timers (readiness is level-triggered: what is left comes back on
// the next loop turn). After writing to the TUN it reads the TUN once in the same turn: the
// local stack answers synchronously (echo replies, TCP ACKs), and waiting for the next poll
// would add a loop turn to every round trip.
//
// Packet sizes: every slot holds a whole WireGuard message (DEVICE_SLOT > 65,535 bytes), so
// any inner packet the TUN hands over up to MAX_PACKET and any datagram a peer sends fits,
// whatever the MTU on either side (see DeviceIo for what that costs in memory).
//
// After an event that sent to peers or delivered to the TUN, a pump with busy polling
// (busy-poll.ts; the process-mode device) polls both for the window its policy has learned and
// handles what arrives at once, up to BUSY_CHAIN events in a row, before it returns to the
// event loop (serveEvents). The first event after QUIET_WAKE_MS without one runs with wake
// placement armed (native/wake.c; the process-mode device): its sends wake a local peer on
// this CPU instead of on a halted one (serve).
//
// Handshake messages the engine queued under load are worked off one slice per event-loop
// turn (setImmediate), after the turn's I/O callbacks.
//
// Policy on errors (the same for the NIC data plane, nic/dataplane.ts, through IoGuard):
//   - Per-packet problems never throw: the native layer and the engine count them
//     (io.* and dropped.* counters of the UAPI's tenguard-stats).
//   - An I/O call that throws an errno in TRANSIENT_ERRNOS (ENOBUFS, ENOMEM: the kernel is
//     short of memory; EIO on a TUN write: the interface is administratively down, its
//     packets are lost) is counted (io.transientErrors, the packets as io.tunTxDropped when a
//     write fails), logged at warn at most once per LOG_EVERY_MS with the count, and retried
//     on the next readiness event or tick. FATAL_STREAK transient failures of reads in a row
//     without a success count as fatal (readiness is level-triggered: a handle that stays
//     broken must not spin the loop); a failed write or send has consumed its packets, so
//     it never becomes fatal by repetition.
//   - Any other exception from an I/O call or a readiness callback (EBADFD: the interface was
//     deleted; EBADF, ENOTSOCK, ENODEV: the handle is gone; a TypeError/RangeError: a bug in
//     what we passed) is fatal: it is logged at error with its errno name and the call, and
//     the device closes (keys wiped, TUN and socket closed) with that reason, as a crashed
//     process would; the owner reports it (Device.stopped, SharedDevice.exited).
//   - Nothing thrown ever escapes a poll or timer callback.

import { PacketBatch, WG_HEADROOM } from '../native/batch.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { receiveOffloadDefault } from '../native/udp.js';
import type { DatagramBatch, OutgoingDatagrams, PacketBatch as PacketView } from '../protocol/batch.js';
import { type Engine, MAX_PADDED_SIZE } from '../protocol/engine.js';
import { RECEIVE_MAX_AGE } from '../protocol/tuning.js';
import { UAPI_ERRNO, UapiError } from '../uapi/protocol.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  type BusyPollPolicy,
  type BusyWait,
  DID_DELIVER,
  DID_SEND,
  QUIET_WAKE_MS,
  READY_SOCKET,
  READY_TUN,
  WakeCheckBackoff,
} from './busy-poll.js';

/** Packets per batch: large enough to amortise each call, small enough to stay in cache. */
export const DEVICE_BATCH = 128;
/**
 * Bytes per slot: a whole WireGuard message (65,535 bytes) plus the 16-byte headroom. The
 * stride is 64 KiB plus one page, so that slot starts spread over the L2 cache's sets
 * instead of all landing in one (a 64 KiB stride would), and every packet starts on the
 * same offset in its page, so a 1,500-byte packet touches one page. The slab is an
 * anonymous mapping (native/slab.c): only the pages packets touch become resident.
 */
export const DEVICE_SLOT = 65_536 + 4096;
/** The largest UDP payload over IPv4 (65,535 - 20 - 8); IPv6 allows 20 bytes more. */
export const MAX_UDP_PAYLOAD_V4 = 65_507;
/**
 * The largest inner packet a device carries: its padded message (16-byte header, packet,
 * tag) must fit one IPv4 UDP datagram. 65,475 bytes. The TUN MTU must not exceed it.
 */
export const MAX_PACKET = MAX_PADDED_SIZE;
/** The smallest TUN MTU accepted (IPv4's minimum datagram size). */
export const MIN_TUN_MTU = 576;
export const DEFAULT_TUN_MTU = 1420;
/**
 * Datagrams one received message may carry with UDP receive offload (the kernel's GRO
 * merges at most 64): a receive batch ends early when fewer entries than this are left, so
 * a batch of more than DEVICE_BATCH - RECV_RUN datagrams may have left some in the queue.
 */
const RECV_RUN = 64;
/** Batches drained per readiness event before yielding to the other direction and timers. */
const DRAIN_ROUNDS = 8;
/** Events handled from busy polls in a row before the pump returns to the event loop. */
const BUSY_CHAIN = 4;
/** Errno names that are counted and retried instead of closing the device. */
export const TRANSIENT_ERRNOS: ReadonlySet<string> = new Set(['ENOBUFS', 'ENOMEM', 'EIO']);
/** Transient failures in a row (no success between) after which a handle counts as broken. */
export const FATAL_STREAK = 64;
/** Warnings about counted drops and transient errors: at most one per this many ms. */
const LOG_EVERY_MS = 10_000;

/** Refuses a TUN MTU the device cannot carry, with the reason. */
export function checkTunMtu(mtu: number): void {
  if (!Number.isInteger(mtu) || mtu < MIN_TUN_MTU || mtu > MAX_PACKET)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `MTU ${mtu} is not supported: a tenguard device carries inner packets of ${MIN_TUN_MTU} to ` +
        `${MAX_PACKET} bytes (a ${MAX_PACKET}-byte packet makes a ${MAX_UDP_PAYLOAD_V4}-byte ` +
        'WireGuard message, the largest IPv4 UDP payload)',
    );
}

/**
 * The I/O batches of a pump: TUN reads (with headroom for the transport header) and UDP
 * receives. Virtual size 2 x 128 x 69,632 bytes (17 MiB); resident: the pages packets have
 * touched, one page per slot at MTU 1420 (1 MiB in all, 0.5 MiB with 2 KiB slots before),
 * three at MTU 9000 (3 MiB), all of it only after 128 maximal packets in one batch.
 * A process-mode device owns one; the vSwitch's shared mode lends one to every instance
 * (each readiness callback runs to completion before another can start).
 */
export class DeviceIo {
  readonly tunBatch = new PacketBatch(DEVICE_BATCH, DEVICE_SLOT, WG_HEADROOM);
  readonly udpBatch = new PacketBatch(DEVICE_BATCH, DEVICE_SLOT, 0);
  readonly view: PacketView = {
    buf: this.tunBatch.slab,
    offsets: this.tunBatch.offsets,
    lengths: this.tunBatch.lengths,
    count: 0,
  };
  readonly dview: DatagramBatch = {
    buf: this.udpBatch.slab,
    offsets: this.udpBatch.offsets,
    lengths: this.udpBatch.lengths,
    endpoints: this.udpBatch.endpoints,
    count: 0,
  };
}

/** The engine identity a pump serves; packets are dropped until it has a private key. */
export interface PumpIdentity {
  readonly identityId: number;
  readonly hasPrivateKey: boolean;
}

/**
 * Classifies what an I/O call or a readiness callback threw and counts transient errors; the
 * policy above, shared by the device pump and the NIC data plane.
 */
export class IoGuard {
  /** Transient errors counted (and retried). */
  transientErrors = 0;
  private streak = 0;
  private lastWarn = Number.NEGATIVE_INFINITY;
  private unlogged = 0;

  constructor(
    private readonly log: Logger,
    private readonly now: () => number = Date.now,
  ) {}

  /** An I/O call succeeded: the transient streak ends. */
  ok(): void {
    this.streak = 0;
  }

  /**
   * An I/O call threw: returns null when the error is transient (counted, logged at most once
   * per LOG_EVERY_MS), else the reason to stop for (logged at error). `consumed`: the call's
   * packets are gone either way (a write or send), so retrying cannot spin and the streak
   * does not grow.
   */
  failed(what: string, err: unknown, consumed = false): string | null {
    const code = errnoCode(err);
    if (code !== null && TRANSIENT_ERRNOS.has(code) && (consumed || ++this.streak < FATAL_STREAK)) {
      this.transientErrors++;
      this.warn(`${what}: ${code}, retried`, { code, transientErrors: this.transientErrors });
      return null;
    }
    // errno errors name their code in the message; anything else (a bug) by its class.
    const message =
      err instanceof Error ? (code !== null ? err.message : `${err.name}: ${err.message}`) : String(err);
    const reason =
      this.streak >= FATAL_STREAK
        ? `${what}: ${message} (${this.streak} times in a row)`
        : `${what}: ${message}`;
    this.log.error({ err, code, call: what }, 'fatal I/O error');
    return reason;
  }

  /** A warning about counted drops, at most once per LOG_EVERY_MS (the skipped ones counted). */
  warn(msg: string, fields: Record<string, unknown>): void {
    const t = this.now();
    if (t - this.lastWarn < LOG_EVERY_MS) {
      this.unlogged++;
      return;
    }
    this.log.warn({ ...fields, suppressed: this.unlogged }, msg);
    this.lastWarn = t;
    this.unlogged = 0;
  }
}

function noop(): void {}

function errnoCode(err: unknown): string | null {
  if (!(err instanceof Error)) return null;
  const code = (err as { code?: unknown }).code;
  // Node-style system errors carry a negative errno; argument errors carry ERR_* codes only.
  return typeof code === 'string' && typeof (err as { errno?: unknown }).errno === 'number' ? code : null;
}

export interface PumpOptions {
  engine: Engine;
  tun: TunDevice;
  openSocket: (port: number) => PacketSocket;
  io: DeviceIo;
  log: Logger;
  /** Engine clock in ms. */
  now: () => number;
  /** Called once when the pump hits a fatal error; the owner closes the device. */
  onFatal: (reason: string) => void;
  /**
   * Called after every readiness callback and handshake slice (the engine may have set a
   * timer): a device that sleeps through quiet stretches re-arms its timer here.
   */
  afterIo?: () => void;
  /** Busy polling after activity (busy-poll.ts); needs handles with an fd. */
  busyPoll?: BusyPoll;
  /**
   * Wake placement (native/wake.c, setWakeHere): armed for the first event after QUIET_WAKE_MS
   * without one; returns whether it armed.
   */
  wakeHere?: (on: boolean) => boolean;
  /** The quiet time before wake placement, ms (default QUIET_WAKE_MS). */
  quietWakeMs?: number;
}

export interface BusyPoll {
  policy: BusyPollPolicy;
  wait: BusyWait;
  /** Monotonic clock in us. */
  clock: () => number;
}

export class DevicePump {
  /** Set by the owner once its UAPI backend exists; packets are dropped until then. */
  identity: PumpIdentity | null = null;
  /** Packets longer than MAX_PACKET read from the TUN: dropped. */
  tunOversized = 0;
  /** TUN packets lost because a write batch failed as a whole (EIO: interface down). */
  tunWriteLost = 0;
  /** Write batches handed to the TUN. */
  private tunWritten = 0;
  /** A turn of handshake work is scheduled (setImmediate). */
  private draining = false;
  readonly guard: IoGuard;
  private readonly engine: Engine;
  private readonly tun: TunDevice;
  private socket: PacketSocket;
  private readonly openSocket: (port: number) => PacketSocket;
  private readonly io: DeviceIo;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly onFatal: (reason: string) => void;
  private readonly afterIo: () => void;
  private closed = false;
  private started = false;
  /** Send batches handed to the socket (busy polling: did an event send?). */
  private sentBatches = 0;
  private readonly busy: BusyPoll | null;
  private readonly wakeHere: ((on: boolean) => boolean) | null;
  private readonly quietWakeMs: number;
  /** When the latest readiness event ended (ms, the pump's clock). */
  private lastEventEnd = Number.NEGATIVE_INFINITY;
  /** Events served with wake placement armed. */
  private wakePlaced = 0;
  /** When the wake placement check is worth asking (busy-poll.ts). */
  private readonly wakeChecks = new WakeCheckBackoff();
  /** The fds busy polling watches (read once: the native getters cross into C). */
  private readonly tunFd: number;
  private socketFd: number;
  private retired = { txDropped: 0, txRejected: 0, rxTruncated: 0, rxErrors: 0, rxStale: 0 };
  private readonly onTunEvent = (err: Error | null): void => this.tunEvent(err);
  private readonly onSocketEvent = (err: Error | null): void => this.socketEvent(err);

  /** Opens the socket on an ephemeral port (rebind() moves it); throws if it cannot. */
  constructor(opts: PumpOptions) {
    this.engine = opts.engine;
    this.tun = opts.tun;
    this.openSocket = opts.openSocket;
    this.io = opts.io;
    this.log = opts.log;
    this.now = opts.now;
    this.onFatal = opts.onFatal;
    this.afterIo = opts.afterIo ?? noop;
    this.guard = new IoGuard(opts.log);
    this.socket = this.open(0);
    this.busy = opts.busyPoll !== undefined && opts.tun.fd !== undefined ? opts.busyPoll : null;
    this.wakeHere = opts.wakeHere ?? null;
    this.quietWakeMs = opts.quietWakeMs ?? QUIET_WAKE_MS;
    this.tunFd = opts.tun.fd ?? -1;
    this.socketFd = this.socket.fd ?? -1;
  }

  /** Opens the socket on `port` with receive offload (unless TENGUARD_UDP_GRO=off). */
  private open(port: number): PacketSocket {
    const s = this.openSocket(port);
    if (receiveOffloadDefault()) s.receiveOffload?.(true);
    // Datagrams that waited out a stall (of this process or its NIC) are dropped, not delivered late.
    s.receiveMaxAge?.(RECEIVE_MAX_AGE);
    return s;
  }

  get localPort(): number {
    return this.socket.localPort;
  }

  get running(): boolean {
    return this.started && !this.closed;
  }

  /** Starts reading the TUN and the socket. */
  start(): void {
    if (this.closed || this.started) return;
    this.started = true;
    try {
      this.tun.start(this.onTunEvent);
      this.socket.start(this.onSocketEvent);
    } catch (err) {
      this.fatal('start', err);
    }
  }

  /**
   * A keepalive to a peer now, opening its session (Engine.keepaliveNow): the owner calls it
   * when a persistent keepalive is turned on, rather than leaving it to the next timer tick.
   */
  keepaliveNow(peerId: number): void {
    const id = this.identity;
    if (this.closed || id === null || !id.hasPrivateKey) return;
    this.send(this.engine.keepaliveNow(peerId, this.now()));
  }

  /** The timer step: every wheel tick, or, for a device that sleeps, when Engine.nextTimerAt is due. */
  tick(): void {
    const id = this.identity;
    if (this.closed || id === null || !id.hasPrivateKey) return;
    this.send(this.engine.tick(this.now()));
    this.scheduleHandshakes();
  }

  /**
   * Queued handshake messages are worked off one slice per event-loop turn (the engine bounds a
   * slice), after the I/O callbacks of that turn, so a handshake flood delays handshakes only.
   */
  private scheduleHandshakes(): void {
    if (this.draining || this.closed || this.engine.pendingHandshakes === 0) return;
    this.draining = true;
    setImmediate(this.drainHandshakes);
  }

  private readonly drainHandshakes = (): void => {
    this.draining = false;
    const id = this.identity;
    if (this.closed || id === null || !id.hasPrivateKey) return;
    this.send(this.engine.handshakes(this.now()));
    this.scheduleHandshakes();
    if (!this.closed) this.afterIo();
  };

  /** Moves the socket to `port` (UAPI listen_port); the old one is closed once the new one is bound. */
  rebind(port: number): void {
    let next: PacketSocket;
    try {
      next = this.open(port);
    } catch (err) {
      throw new UapiError(UAPI_ERRNO.EADDRINUSE, `cannot bind UDP port ${port}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    this.retire(this.socket);
    this.socket = next;
    this.socketFd = next.fd ?? -1;
    if (this.started && !this.closed) {
      try {
        next.start(this.onSocketEvent);
      } catch (err) {
        this.fatal('UDP start', err);
      }
    }
  }

  /** The I/O counters for the UAPI's tenguard-stats. */
  ioCounters(): Record<string, number> {
    const u = this.socket.stats();
    const t = this.tun.stats();
    const c = this.retired;
    return {
      // An oversized datagram cannot be a WireGuard message: it counts as a drop.
      'dropped.udpOversized': u.rxTruncated + c.rxTruncated,
      'dropped.tunOversized': this.tunOversized + t.rxTruncated,
      'io.udpRxErrors': u.rxErrors + c.rxErrors,
      'dropped.udpStale': u.rxStale + c.rxStale,
      'io.udpTxDropped': u.txDropped + c.txDropped,
      'io.udpTxRejected': u.txRejected + c.txRejected,
      'io.tunTxDropped': t.txDropped + this.tunWriteLost,
      'io.tunTxRejected': t.txRejected,
      'io.transientErrors': this.guard.transientErrors,
      'io.busyPolls': this.busy?.policy.stats.polls ?? 0,
      'io.busyPollsCaught': this.busy?.policy.stats.caught ?? 0,
      'io.busyPollMicros': Math.round(this.busy?.policy.stats.micros ?? 0),
      'io.wakePlaced': this.wakePlaced,
      'io.wakeChecksSkipped': this.wakeChecks.skipped,
    };
  }

  /** Closes the TUN and the socket. Idempotent; never throws. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const h of [this.tun, this.socket]) {
      try {
        h.close();
      } catch {
        // already closed
      }
    }
  }

  private fatal(what: string, err: unknown, consumed = false): void {
    if (this.closed) return;
    const reason = this.guard.failed(what, err, consumed);
    if (reason === null) return;
    this.close();
    this.onFatal(reason);
  }

  private tunEvent(err: Error | null): void {
    if (this.closed) return;
    // A readiness error: the interface was deleted (EBADFD) or broke; polling has stopped.
    if (err) this.fatal('TUN', err);
    else this.serve(READY_TUN);
  }

  private socketEvent(err: Error | null): void {
    if (this.closed) return;
    if (err) this.fatal('UDP socket', err);
    else this.serve(READY_SOCKET);
  }

  /**
   * Handles a readiness event: the first socket event after a quiet stretch with wake
   * placement armed (the datagrams it sends wake a local peer on this CPU), each disarmed
   * before it returns. A TUN event never arms: the application that just wrote to the TUN is
   * still runnable (ping, a client waiting in its send), so the guard would refuse, and its
   * check (a /proc read, two N-API calls on cold caches) would only delay the request.
   */
  private serve(ready: number): void {
    const wakeHere = this.wakeHere;
    // Without wake placement (the vSwitch's shared mode, fakes) an event needs no clock reads.
    if (wakeHere === null) {
      this.serveEvents(ready);
      return;
    }
    if (ready === READY_TUN) {
      this.serveEvents(ready);
      this.lastEventEnd = this.now();
      return;
    }
    const wake = this.now() - this.lastEventEnd >= this.quietWakeMs && this.armWake(wakeHere);
    if (wake) this.wakePlaced++;
    try {
      this.serveEvents(ready);
    } finally {
      if (wake) wakeHere(false);
      this.lastEventEnd = this.now();
    }
  }

  /** Asks the switch to arm wake placement for a quiet socket event, unless backoff puts the check off. */
  private armWake(wakeHere: (on: boolean) => boolean): boolean {
    const checks = this.wakeChecks;
    if (!checks.shouldAsk()) return false;
    const armed = wakeHere(true);
    checks.answered(armed);
    return armed;
  }

  /**
   * Handles a readiness event (READY_* bits). With busy polling, while an event sent to peers
   * or delivered to the TUN and the policy grants a window, it then polls and handles what
   * arrives (at most BUSY_CHAIN events) before returning to the event loop.
   */
  private serveEvents(ready: number): void {
    const busy = this.busy;
    busy?.policy.arrived(busy.clock());
    for (let chain = 0; ; chain++) {
      const sent = this.sentBatches;
      const written = this.tunWritten;
      if (ready & READY_SOCKET) this.socketReadable();
      if (ready & READY_TUN && !this.closed) this.onTunReadable();
      if (this.closed) return;
      this.afterIo();
      if (busy === null || chain === BUSY_CHAIN) return;
      const did =
        (this.sentBatches !== sent ? DID_SEND : 0) | (this.tunWritten !== written ? DID_DELIVER : 0);
      if (did === 0) return;
      const t0 = busy.clock();
      const us = busy.policy.plan(did, t0);
      if (us === 0) return;
      try {
        ready = busy.wait(this.tunFd, this.socketFd, us);
      } catch (err) {
        this.fatal('busy poll', err);
        return;
      }
      const t1 = busy.clock();
      busy.policy.polled(t1 - t0, ready !== 0);
      if (ready === 0) return;
      busy.policy.arrived(t1);
    }
  }

  private socketReadable(): void {
    const written = this.tunWritten;
    this.onSocketReadable();
    // What the stack answers to packets just written to the TUN (an echo reply, a TCP ACK)
    // is usually ready to read now: read it in this turn instead of a poll round later.
    if (this.tunWritten !== written && !this.closed) this.onTunReadable();
  }

  private onTunReadable(): void {
    const b = this.io.tunBatch;
    const v = this.io.view;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      let n: number;
      try {
        n = this.tun.readBatch(b.slab, b.slotSize, b.headroom, b.capacity, b.lengths);
        this.guard.ok();
      } catch (err) {
        this.fatal('TUN read', err);
        return;
      }
      if (n === 0) return;
      const id = this.identity;
      if (id === null || !id.hasPrivateKey) continue;
      let oversized = 0;
      for (let i = 0; i < n; i++) {
        if (b.lengths[i] > MAX_PACKET) {
          b.lengths[i] = 0; // the engine drops an empty packet as malformed
          oversized++;
        }
      }
      if (oversized > 0) this.countOversized(oversized);
      v.count = n;
      const out = this.engine.outbound(id.identityId, v, this.now());
      if (!this.send(out.data) || !this.send(out.control)) return;
      if (n < b.capacity) return;
    }
  }

  private onSocketReadable(): void {
    const b = this.io.udpBatch;
    const v = this.io.dview;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      let n: number;
      try {
        // Datagram i is at b.offsets[i] (written by every call: the engine decrypts in place
        // and hands back offsets of its own); with receive offload several share a slot.
        n = this.socket.recvBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths, b.endpoints, b.offsets);
        this.guard.ok();
      } catch (err) {
        this.fatal('UDP receive', err);
        return;
      }
      if (n === 0) return;
      const id = this.identity;
      if (id === null || !id.hasPrivateKey) continue;
      v.count = n;
      const res = this.engine.inbound(v, this.now());
      const tun = res.tun;
      if (tun.count > 0) {
        this.tunWritten++;
        try {
          this.tun.writeBatch(tun.buf, tun.offsets, tun.lengths, tun.count);
          this.guard.ok();
        } catch (err) {
          if ((err as { code?: string }).code === 'EIO') this.tunWriteLost += tun.count;
          this.fatal('TUN write', err, true);
          if (this.closed) return;
        }
      }
      if (!this.send(res.control)) return;
      this.scheduleHandshakes();
      if (n <= b.capacity - RECV_RUN) return;
    }
  }

  private countOversized(n: number): void {
    this.tunOversized += n;
    this.guard.warn('TUN packets longer than the device carries dropped', {
      maxPacket: MAX_PACKET,
      tunOversized: this.tunOversized,
    });
  }

  /** Sends a batch; false when the device closed on a fatal error. */
  private send(out: OutgoingDatagrams): boolean {
    if (out.count === 0) return true;
    try {
      this.sentBatches++;
      this.socket.sendBatch(out.buf, out.offsets, out.lengths, out.endpoints, out.count);
      this.guard.ok();
    } catch (err) {
      this.fatal('UDP send', err, true);
    }
    return !this.closed;
  }

  private retire(s: PacketSocket): void {
    const st = s.stats();
    this.retired.txDropped += st.txDropped;
    this.retired.txRejected += st.txRejected;
    this.retired.rxTruncated += st.rxTruncated;
    this.retired.rxErrors += st.rxErrors;
    this.retired.rxStale += st.rxStale;
    try {
      s.close();
    } catch {
      // already closed
    }
  }
}
