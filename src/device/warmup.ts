// Warm-up of the data path's JavaScript. V8 runs a function in its interpreter or its baseline
// code until the function has executed enough bytecode (its interrupt budget), and only then
// compiles it optimised. A device that carries a few packets a second (a ping every 200 ms, a
// trickle of RPCs) ran its packets through unoptimised code for minutes: 45 µs to encrypt one
// packet instead of 12, a round trip over one tunnel 0.27 ms instead of 0.11 (ftrace, ping
// every 5 ms, right after start and after 3,000 round trips). So a process that carries
// packets first sends round trips through a throwaway pair of engines in memory, with the
// classes, the native AEAD and the batch shapes of the device pump, and then discards them
// (keys wiped). The pump's own few lines tier up through runtime.ts's lower interrupt budget.
// Known limit: the live engine's peers and keypairs, configured through the UAPI, do not all get
// the hidden classes of the warm-up's, so the first live packets still throw away part of the
// optimised code (--trace-deopt: "wrong map" in canReceive, openTransports, lookup4, outbound);
// it is then re-optimised after a few hundred packets (runtime.ts's lower interrupt budget).
// A process runs it in the background (warmDataPathInBackground), a slice of round trips per
// event-loop turn, so that it delays neither the start nor, by more than a slice, a packet.
import { NativeAead } from '../native/aead.js';
import { PacketBatch, WG_HEADROOM } from '../native/batch.js';
import { ENDPOINT_SIZE, makeEndpoint } from '../net/endpoint.js';
import type { DatagramBatch, OutgoingDatagrams, PacketBatch as PacketView } from '../protocol/batch.js';
import { generatePrivateKey, publicKeyOf } from '../protocol/crypto.js';
import { Engine } from '../protocol/engine.js';
import type { Logger } from '../util/log.js';
import { DEVICE_SLOT } from './pump.js';

/** Round trips of one packet each way; a few batches of BATCH packets are mixed in. */
export const WARMUP_ROUND_TRIPS = 1000;
/**
 * Round trips per event-loop turn in the background: one (tens of µs), so that a packet that
 * arrives meanwhile waits at most that long. On a loaded host the warm-up can take seconds
 * of wall time, and a slice preempted halfway delays every packet behind it (slices of 8 put
 * tens of ms into the 99th percentile of a ping every 5 ms right after start).
 */
export const WARMUP_SLICE = 1;
const BATCH = 16;
/** One batch round trip per this many single-packet ones. */
const BATCH_EVERY = 8;
/** Engine time per round trip (ms), so the timer wheel turns as it does in a live device. */
const STEP_MS = 1;
const TICK_MS = 100;
/**
 * The pump's slot size, so that the slabs are mapped by the addon as the pump's are: a Buffer
 * made in C has another hidden class than one from Buffer.alloc, and code optimised for one
 * only is thrown away ("wrong map") when the other comes (the control slab is a Buffer.alloc
 * one in both).
 */
const SLOT = DEVICE_SLOT;
const PACKET = 84;

export interface WarmupResult {
  /** Packets delivered end to end (both directions). */
  delivered: number;
  ms: number;
}

class Side {
  readonly engine: Engine;
  readonly aead = new NativeAead();
  readonly id: number;
  readonly key = generatePrivateKey();
  readonly tun = new PacketBatch(BATCH, SLOT, WG_HEADROOM);
  readonly udp = new PacketBatch(BATCH, SLOT, 0);
  readonly view: PacketView = {
    buf: this.tun.slab,
    offsets: this.tun.offsets,
    lengths: this.tun.lengths,
    count: 0,
  };
  readonly dview: DatagramBatch;

  constructor(
    readonly address: number,
    readonly endpoint: Buffer,
    log: Logger,
  ) {
    this.engine = new Engine({ aead: this.aead, log });
    this.id = this.engine.addIdentity(this.key);
    this.dview = {
      buf: this.udp.slab,
      offsets: this.udp.offsets,
      lengths: this.udp.lengths,
      endpoints: this.udp.endpoints,
      count: 0,
    };
  }

  /** Puts `count` IPv4 packets from this side to `to` into the TUN batch. */
  fill(to: Side, count: number): void {
    const b = this.tun;
    for (let i = 0; i < count; i++) {
      const off = b.offsets[i];
      const s = b.slab;
      s.fill(0, off, off + PACKET);
      s[off] = 0x45;
      s.writeUInt16BE(PACKET, off + 2);
      s[off + 8] = 64;
      s[off + 9] = 1; // ICMP
      s.writeUInt32BE(this.address, off + 12);
      s.writeUInt32BE(to.address, off + 16);
      b.lengths[i] = PACKET;
    }
    this.view.count = count;
  }

  close(): void {
    try {
      this.engine.removeIdentity(this.id);
    } finally {
      this.key.fill(0);
      this.aead.close();
    }
  }
}

/** Copies datagrams into `to`'s receive batch as if they came from `from`; returns how many. */
function carry(out: OutgoingDatagrams, from: Side, to: Side): number {
  const n = Math.min(out.count, BATCH);
  const b = to.udp;
  for (let i = 0; i < n; i++) {
    const at = i * b.slotSize;
    out.buf.copy(b.slab, at, out.offsets[i], out.offsets[i] + out.lengths[i]);
    b.offsets[i] = at;
    b.lengths[i] = out.lengths[i];
    from.endpoint.copy(b.endpoints, i * ENDPOINT_SIZE);
  }
  to.dview.count = n;
  return n;
}

/** Two throwaway engines after their handshake, stepped a round trip at a time. */
class Warmup {
  delivered = 0;
  private readonly sides: Side[] = [];
  private now = performance.now();
  private lastTick = this.now;
  private k = 0;

  constructor(log: Logger) {
    try {
      const a = new Side(0x0afe0001, makeEndpoint(Uint8Array.of(127, 0, 0, 1), 1), log);
      this.sides.push(a);
      const b = new Side(0x0afe0002, makeEndpoint(Uint8Array.of(127, 0, 0, 2), 2), log);
      this.sides.push(b);
      a.engine.addPeer(a.id, {
        publicKey: publicKeyOf(b.key),
        endpoint: b.endpoint,
        allowedIps: host(b.address),
      });
      b.engine.addPeer(b.id, {
        publicKey: publicKeyOf(a.key),
        endpoint: a.endpoint,
        allowedIps: host(a.address),
      });
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** One round trip (the first one also carries the handshake). */
  step(): void {
    const [a, b] = this.sides;
    const count = this.k++ % BATCH_EVERY === BATCH_EVERY - 1 ? BATCH : 1;
    this.send(a, b, count);
    this.send(b, a, count);
    this.now += STEP_MS;
    if (this.now - this.lastTick >= TICK_MS) {
      this.lastTick = this.now;
      this.exchange(a.engine.tick(this.now), a, b);
      this.exchange(b.engine.tick(this.now), b, a);
    }
  }

  /** Wipes both identities and closes the AEAD contexts; never throws. */
  close(): void {
    for (const s of this.sides.splice(0)) {
      try {
        s.close();
      } catch {
        // already closed
      }
    }
  }

  /** `count` packets from `from` to `to`, with whatever the engines answer in between. */
  private send(from: Side, to: Side, count: number): void {
    from.fill(to, count);
    const out = from.engine.outbound(from.id, from.view, this.now);
    this.exchange(out.control, from, to);
    if (carry(out.data, from, to) === 0) return;
    const res = to.engine.inbound(to.dview, this.now);
    this.delivered += res.tun.count;
    this.exchange(res.control, to, from);
  }

  /** Control datagrams (handshake messages, staged packets, keepalives) until both are quiet. */
  private exchange(first: OutgoingDatagrams, from: Side, to: Side): void {
    let out = first;
    let src = from;
    let dst = to;
    for (let hops = 0; hops < 8 && out.count > 0; hops++) {
      carry(out, src, dst);
      const res = dst.engine.inbound(dst.dview, this.now);
      this.delivered += res.tun.count;
      out = res.control;
      const t = src;
      src = dst;
      dst = t;
    }
  }
}

function host(x: number): { address: Uint8Array; bits: number }[] {
  return [{ address: Uint8Array.of(x >>> 24, (x >>> 16) & 255, (x >>> 8) & 255, x & 255), bits: 32 }];
}

/** Runs `roundTrips` round trips at once; throws only if the engines cannot be set up. */
export function warmDataPath(log: Logger, roundTrips = WARMUP_ROUND_TRIPS): WarmupResult {
  const t0 = performance.now();
  const w = new Warmup(log);
  try {
    for (let k = 0; k < roundTrips; k++) w.step();
  } finally {
    w.close();
  }
  return { delivered: w.delivered, ms: performance.now() - t0 };
}

/**
 * Runs `roundTrips` round trips, `slice` per event-loop turn. The immediates are referenced on
 * purpose: Node polls without a timeout only while a referenced immediate is pending, so
 * unreferenced slices ran one per wake-up of an otherwise idle loop (every timer tick, every
 * packet), stretching the warm-up over tens of seconds and adding a slice to each packet's
 * way. It keeps the process alive for the second or so it takes. Never rejects: a failure only means colder first packets, logged
 * at warn; resolves with what was done.
 */
export function warmDataPathInBackground(
  log: Logger,
  roundTrips = WARMUP_ROUND_TRIPS,
  slice = WARMUP_SLICE,
): Promise<WarmupResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    let w: Warmup;
    try {
      w = new Warmup(log);
    } catch (err) {
      log.warn({ err }, 'data path warm-up failed; the first packets run unoptimised');
      resolve({ delivered: 0, ms: performance.now() - t0 });
      return;
    }
    let done = 0;
    const turn = (): void => {
      try {
        for (let i = 0; i < slice && done < roundTrips; i++, done++) w.step();
      } catch (err) {
        log.warn({ err }, 'data path warm-up failed; the first packets run unoptimised');
        done = roundTrips;
      }
      if (done < roundTrips) {
        setImmediate(turn);
        return;
      }
      w.close();
      resolve({ delivered: w.delivered, ms: performance.now() - t0 });
    };
    setImmediate(turn);
  });
}
