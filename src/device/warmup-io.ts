// The second phase of the warm-up (after warmup.ts): two real devices in this process, each
// over one end of an in-process packet channel in place of its TUN (NativeTunDevice.pair:
// the addon's TUN handle class on an AF_UNIX SOCK_SEQPACKET pair) and a real UDP socket on
// loopback, with round trips between them driven from the channels' other ends, one per
// timer turn. The first phase runs the engines in memory; this one runs what lies around
// them the way a live device does, so that V8 optimises it before the first packet instead of
// during traffic:
//   - the pump (pump.ts) and the device's timer re-arming, with the live handle classes;
//   - the addon's readiness callbacks, which enter JavaScript through node's MakeCallback;
//   - node's timer lists (each round trip starts from a timer, as a device's steps do).
// Without it those tiered up during the first minute of a quiet tunnel, 2 to 14 ms of
// compilation each, with a ping every 200 ms waiting behind several of them (--trace-opt
// against ping timestamps: onSocketReadable, onTunReadable, listOnTimeout, processTimers),
// which made the slowest 1% of round trips 2-4 ms against 0.5-0.7 ms for wireguard-go.
// The devices are closed afterwards (their keys wiped with their identities) and kept, idle,
// for the life of the process: optimised code holds the hidden classes it was built for
// weakly (see warmup.ts's `kept`).
//
// Optimised code is only as good as what it saw: V8 throws it away ("deoptimises", then
// compiles again during traffic) when it meets a path, a field change or a call target it had
// not seen. Each of the following did that to the pump's code after an earlier version of
// this phase (--trace-deopt with ping timestamps), and is now run or avoided here:
//   - closing a device: fields never written since construction are taken as constants, and
//     the close at the end of the phase flipped them (startAndClose, before anything else);
//   - a handshake through the pump (the phase reconfigures both devices every
//     RECONFIGURE_EVERY round trips);
//   - a busy-poll window learnt from a quick answer (exerciseBusyPolicy);
//   - a closure per device as the wake switch or the busy-poll clock (device.ts has one each).
//
// It needs loopback: where 127.0.0.1 is not usable (a namespace whose lo is down) no round
// trip completes, and the phase ends after STALL_MS, having warmed less.
import { performance } from 'node:perf_hooks';
import { PacketBatch } from '../native/batch.js';
import { NativeTunDevice } from '../native/tun.js';
import { formatIPv4Number } from '../net/ip.js';
import { generatePrivateKey } from '../protocol/crypto.js';
import type { Logger } from '../util/log.js';
import {
  BusyPollPolicy,
  DEFAULT_BUSY_POLL_US,
  DID_DELIVER,
  DID_SEND,
  WakeCheckBackoff,
} from './busy-poll.js';
import { Device } from './device.js';
import { configureAsWgSet, WARMUP_PACKET, writeWarmupIPv4 } from './warmup.js';

/** Round trips through the two devices; every BATCH_EVERY-th carries BATCH packets each way. */
export const IO_WARMUP_ROUND_TRIPS = 600;
/** The phase ends when a round trip has not completed for this long (ms). */
export const STALL_MS = 2000;
/** And in any case after this long (ms): on a loaded host the phase only warms less. */
export const IO_WARMUP_DEADLINE_MS = 20_000;
const BATCH = 16;
const BATCH_EVERY = 8;
/** One round trip in this many is IPv6 inside. */
const V6_EVERY = 4;
/**
 * One in this many is a request without a reply, so that a device receives data twice
 * without sending between (the keepalive timer's other branch).
 */
const ONE_WAY_EVERY = 16;
/**
 * Both devices are configured afresh (`wg set ... replace-peers`, new keys) every
 * RECONFIGURE_EVERY round trips until RECONFIGURE_UNTIL, so that a handshake runs through the
 * pump several times: with only the first one, before anything was optimised, a live device's
 * first handshake threw the pump's optimised code away ("Insufficient type feedback",
 * --trace-deopt). The round trips after the last one optimise the settled path again.
 * A peer that roams (its endpoint changes) is left out: its first live occurrence costs one
 * deoptimisation, and it is rare.
 */
const RECONFIGURE_EVERY = 60;
const RECONFIGURE_UNTIL = 360;
const PACKET = WARMUP_PACKET;
/** The driver's slots (its packets are PACKET bytes). */
const DRIVER_SLOT = 256;
/**
 * The warm-up devices' busy-poll window (µs): small, but not 0, so that the pump's busy path
 * runs as a live device's does. A reply cannot come during the window (the other device is
 * this thread), and the default window spent 0.7 s of CPU on the phase.
 */
const WARMUP_BUSY_POLL_US = 20;
/**
 * Their quiet time before wake placement (ms): round trips come a timer turn (1 ms) apart, so
 * that the placed path (pump.ts's serve) runs too, as it does for a live device's sparse
 * packets; with the default no warm-up event would be quiet enough.
 */
const WARMUP_QUIET_WAKE_MS = 1;
/** Tunnel addresses inside the channels (never on an interface): 100.127.255.1 and .2. */
const V4_A = 0x647fff01;
const V4_B = 0x647fff02;

export interface IoWarmupResult {
  /** Round trips completed. */
  roundTrips: number;
  ms: number;
  /** Why the phase ended: 'done', 'stalled' (no loopback?), 'deadline' or 'failed'. */
  ended: 'done' | 'stalled' | 'deadline' | 'failed';
}

/** One side: a device over a channel end, and the other end, where the driver stands. */
interface End {
  device: Device;
  app: NativeTunDevice;
  batch: PacketBatch;
  out: PacketBatch;
}

/** The devices of the last phase that finished, closed and kept for the life of the process. */
let kept: End[] = [];

/**
 * Runs the phase; never rejects (a failure means colder first packets, logged at warn).
 * `log` is the process's device logger; the warm-up devices log at warn and above only.
 */
export async function warmDeviceIo(
  log: Logger,
  roundTrips = IO_WARMUP_ROUND_TRIPS,
  deadlineMs = IO_WARMUP_DEADLINE_MS,
): Promise<IoWarmupResult> {
  const t0 = performance.now();
  const quiet = log.child({ warmup: 'io' }, { level: 'warn' });
  const ends: End[] = [];
  try {
    exerciseBusyPolicy();
    await startAndClose(quiet);
    for (let i = 0; i < 2; i++) {
      const [tun, app] = NativeTunDevice.pair();
      let device: Device;
      try {
        device = await Device.start({
          ifname: `warmup${i}`,
          tun,
          uapi: false,
          log: quiet,
          busyPollUs: WARMUP_BUSY_POLL_US,
          quietWakeMs: WARMUP_QUIET_WAKE_MS,
        });
      } catch (err) {
        app.close();
        throw err;
      }
      ends.push({
        device,
        app,
        batch: new PacketBatch(BATCH, DRIVER_SLOT, 0),
        out: new PacketBatch(BATCH, DRIVER_SLOT, 0),
      });
    }
    const [a, b] = ends;
    configurePair(a, b);
    const r = await drive(a, b, roundTrips, deadlineMs);
    return { roundTrips: r.roundTrips, ended: r.ended, ms: performance.now() - t0 };
  } catch (err) {
    log.warn({ err }, 'data path warm-up (devices) failed; the first packets run less optimised');
    return { roundTrips: 0, ended: 'failed', ms: performance.now() - t0 };
  } finally {
    for (const e of ends) {
      e.app.close();
      await e.device.close('warm-up done');
    }
    if (ends.length === 2) kept = ends;
  }
}

/**
 * Runs a busy-poll policy through every branch of its learning (busy-poll.ts) on a made-up
 * timeline: a window grown to cover a gap, halved after a longer one, dropped to none, polls
 * that catch and polls that do not, the budget spent and refilled. The devices below cannot
 * show it (their windows wait for a reply from this same thread, so none ever catches one),
 * and a live device's first learnt window otherwise threw away the pump's optimised code
 * ("Insufficient type feedback", --trace-deopt). No polling happens here.
 */
function exerciseBusyPolicy(): void {
  const p = new BusyPollPolicy(DEFAULT_BUSY_POLL_US);
  const gaps = [60, 90, 400, 2500, 150, 30, 5000, 120];
  let t = 0;
  for (let i = 0; i < 4000; i++) {
    t += gaps[i & 7];
    p.arrived(t);
    const us = p.plan(i % 3 === 0 ? DID_SEND | DID_DELIVER : i & 1 ? DID_SEND : DID_DELIVER, t);
    if (us > 0) p.polled(us / 2, (i & 3) !== 0);
  }
  // Wake placement's check backoff, every branch: refusals in a row, skips, an arming.
  const w = new WakeCheckBackoff();
  for (let i = 0; i < 2000; i++) if (w.shouldAsk()) w.answered(i % 7 === 0);
}

/**
 * Starts a device and closes it at once, before anything is optimised. Closing sets fields
 * that stay unchanged while a device runs (DevicePump.closed, Device.closed, ...): V8 treats a
 * field never written since construction as a constant, and code optimised on that assumption
 * was thrown away when the warm-up closed its devices at the end ("code dependencies",
 * --trace-deopt), leaving the pump to tier up again during the first live packets. Once any
 * instance has changed them, they are ordinary fields for all.
 */
async function startAndClose(log: Logger): Promise<void> {
  const [tun, app] = NativeTunDevice.pair();
  try {
    const device = await Device.start({
      ifname: 'warmup',
      tun,
      uapi: false,
      log,
      busyPollUs: WARMUP_BUSY_POLL_US,
    });
    await device.close('warm-up');
  } finally {
    app.close();
  }
}

/**
 * Each side talks to the other only: its private key, the other's public key, the other's
 * tunnel addresses (100.127.255.N/32, fd00:fe::N/128) at its loopback port.
 */
function configurePair(a: End, b: End, replacePeers = false): void {
  // `wg set listen-port` first, as the lab and most set-ups do: it moves the pump to a new
  // socket, and code optimised while the pump had only ever had one socket (a field V8 saw
  // as constant) would be thrown away by a live device's first rebind.
  for (const e of [a, b]) e.device.backend.apply({ listenPort: 0, replacePeers: false, peers: [] });
  const keys = [generatePrivateKey(), generatePrivateKey()];
  try {
    const sides: [End, End, number, number][] = [
      [a, b, 0, 1],
      [b, a, 1, 0],
    ];
    for (const [e, peer, own, other] of sides)
      configureAsWgSet(e.device.backend, {
        key: keys[own],
        peerKey: keys[other],
        endpoint: `127.0.0.1:${peer.device.pump.localPort}`,
        v4: `${formatIPv4Number(other === 0 ? V4_A : V4_B)}/32`,
        v6: `fd00:fe::${other + 1}/128`,
        replacePeers,
      });
  } finally {
    for (const k of keys) k.fill(0);
  }
}

/**
 * Round trips: the driver writes requests into a's channel; b's channel gets them decrypted
 * and the driver answers each with a reply back to a. Resolves when a's channel has all the
 * replies of the last round trip, or the phase stalls or runs out of time.
 */
function drive(
  a: End,
  b: End,
  roundTrips: number,
  deadlineMs: number,
): Promise<{ roundTrips: number; ended: IoWarmupResult['ended'] }> {
  return new Promise((resolve) => {
    const start = performance.now();
    let done = 0;
    let expected = 0;
    let got = 0;
    let lastProgress = start;
    let finished = false;
    let timer: NodeJS.Timeout | null = null;
    let oneWay = false;
    const finish = (ended: IoWarmupResult['ended']): void => {
      if (finished) return;
      finished = true;
      if (timer !== null) clearTimeout(timer);
      clearInterval(watchdog);
      a.app.stop();
      b.app.stop();
      resolve({ roundTrips: done, ended });
    };
    const next = (): void => {
      timer = null;
      if (finished) return;
      if (done >= roundTrips) {
        finish('done');
        return;
      }
      if (done > 0 && done < RECONFIGURE_UNTIL && done % RECONFIGURE_EVERY === 0) configurePair(a, b, true);
      const n = done % BATCH_EVERY === BATCH_EVERY - 1 ? BATCH : 1;
      const v6 = n === 1 && done % V6_EVERY === 1;
      oneWay = n === 1 && done % ONE_WAY_EVERY === ONE_WAY_EVERY - 2;
      expected = n;
      got = 0;
      fill(a.out, n, v6);
      a.app.writeBatch(a.out.slab, a.out.offsets, a.out.lengths, n);
    };
    const watchdog = setInterval(() => {
      const t = performance.now();
      if (t - lastProgress > STALL_MS) finish('stalled');
      else if (t - start > deadlineMs) finish('deadline');
    }, STALL_MS / 4);
    const fail = (err: Error | null): boolean => {
      if (err === null) return false;
      finish('failed');
      return true;
    };
    // b's channel: requests in, replies out (none to a one-way request).
    b.app.start((err) => {
      if (fail(err) || finished) return;
      const n = b.app.readBatch(b.batch.slab, b.batch.slotSize, 0, BATCH, b.batch.lengths);
      if (n === 0) return;
      if (oneWay) {
        if (timer !== null) return;
        done++;
        lastProgress = performance.now();
        timer = setTimeout(next, 0);
        return;
      }
      for (let i = 0; i < n; i++) reply(b.batch, i, b.out);
      b.app.writeBatch(b.out.slab, b.out.offsets, b.batch.lengths, n);
    });
    // a's channel: replies in; the next round trip starts on a timer turn.
    a.app.start((err) => {
      if (fail(err) || finished) return;
      got += a.app.readBatch(a.batch.slab, a.batch.slotSize, 0, BATCH, a.batch.lengths);
      if (got < expected || timer !== null) return;
      done++;
      lastProgress = performance.now();
      timer = setTimeout(next, 0);
    });
    next();
  });
}

/** `n` request packets from a to b in `batch` (IPv6 if `v6`); offsets are the slots. */
function fill(batch: PacketBatch, n: number, v6: boolean): void {
  const s = batch.slab;
  for (let i = 0; i < n; i++) {
    const off = batch.offsets[i];
    if (v6) {
      s.fill(0, off, off + PACKET);
      s[off] = 0x60;
      s.writeUInt16BE(PACKET - 40, off + 4);
      s[off + 6] = 58; // ICMPv6
      s[off + 7] = 64;
      // fd00:fe::1 -> fd00:fe::2
      s.writeUInt16BE(0xfd00, off + 8);
      s.writeUInt16BE(0x00fe, off + 10);
      s[off + 23] = 1;
      s.writeUInt16BE(0xfd00, off + 24);
      s.writeUInt16BE(0x00fe, off + 26);
      s[off + 39] = 2;
    } else {
      writeWarmupIPv4(s, off, V4_A, V4_B);
    }
    batch.lengths[i] = PACKET;
  }
}

/** Copies packet `i` of `from` into slot `i` of `to` with source and destination swapped. */
function reply(from: PacketBatch, i: number, to: PacketBatch): void {
  const src = from.offsets[i];
  const dst = to.offsets[i];
  const len = from.lengths[i];
  from.slab.copy(to.slab, dst, src, src + len);
  const s = to.slab;
  if (s[dst] >> 4 === 6) {
    from.slab.copy(s, dst + 8, src + 24, src + 40);
    from.slab.copy(s, dst + 24, src + 8, src + 24);
  } else {
    from.slab.copy(s, dst + 12, src + 16, src + 20);
    from.slab.copy(s, dst + 16, src + 12, src + 16);
  }
}

/** The devices kept from the last phase (tests). */
export function keptWarmupDevices(): number {
  return kept.length;
}
