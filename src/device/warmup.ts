// Warm-up of the data path's JavaScript. V8 runs a function in its interpreter or its baseline
// code until the function has executed enough bytecode (its interrupt budget), and only then
// compiles it optimised. A device that carries a few packets a second (a ping every 200 ms, a
// trickle of RPCs) ran its packets through unoptimised code for minutes: 45 µs to encrypt one
// packet instead of 12, a round trip over one tunnel 0.27 ms instead of 0.11 (ftrace, ping
// every 5 ms, right after start and after 3,000 round trips). So a process that carries
// packets first sends round trips through a throwaway pair of engines in memory, with the
// classes, the native AEAD and the batch shapes of the device pump, and keeps them, idle, for
// the life of the process (see `kept` below for why). The pump (pump.ts), the handles and the
// event loop around them are not run here: the second phase, warmup-io.ts, runs them with the
// live classes (in-memory fakes would have optimised their call sites for the fakes' classes).
// The warm-up's engines are made and configured exactly as a device's are (device.ts's engine
// options, the secret pool, EngineUapiBackend fed a `wg set` request through the UAPI's
// parser), so that its peers, keypairs, identities, endpoints and keys get the hidden classes
// and field representations of the live ones: configured by hand (heap secrets, addPeer with
// literal prefixes) they got others, and the first live packets threw away the optimised code
// of canReceive, openTransports, sendData, touch and lookup4 ("wrong map", --trace-deopt),
// leaving them in baseline code for the next several hundred packets.
// A process runs it in the background (warmDataPathInBackground), a slice of round trips per
// event-loop turn, so that it delays neither the start nor, by more than a slice, a packet.
import { NativeAead } from '../native/aead.js';
import { PacketBatch, WG_HEADROOM } from '../native/batch.js';
import { secretPool } from '../native/secret-pool.js';
import {
  ENDPOINT_HAS_SOURCE,
  ENDPOINT_OFFSET_FLAGS,
  ENDPOINT_OFFSET_SOURCE,
  ENDPOINT_SIZE,
  makeEndpoint,
} from '../net/endpoint.js';
import { formatIPv4Number, parseCidr, parseEndpoint } from '../net/ip.js';
import type { DatagramBatch, OutgoingDatagrams, PacketBatch as PacketView } from '../protocol/batch.js';
import { generatePrivateKey, publicKeyOf } from '../protocol/crypto.js';
import { Engine } from '../protocol/engine.js';
import { parseSetRequest, serializeSetRequest, type UapiChangeSet, wipeChangeSet } from '../uapi/protocol.js';
import type { Logger } from '../util/log.js';
import { EngineUapiBackend } from './engine-backend.js';
import { DEFAULT_TUN_MTU, DEVICE_SLOT } from './pump.js';

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
/**
 * Both sides are configured afresh (`wg setconf`: replace_peers) every RECONFIGURE_EVERY
 * round trips during the first RECONFIGURE_UNTIL, so that the warm-up runs ten handshakes,
 * not one: the handshake's paths stay in the type feedback of the functions they share with
 * the data path (a live device's first handshake otherwise deoptimised them: "Insufficient
 * type feedback"), and the keypairs see receiver indices of both representations (a random
 * 32-bit index is a small integer one time in four and a heap number otherwise; a keypair
 * whose index changed the representation of its field invalidated the code built for the
 * other: "wrong map" in canSend and canReceive). The rest of the round trips run on the last
 * configuration, so that what a change deoptimised is optimised again before the end.
 */
const RECONFIGURE_EVERY = 50;
const RECONFIGURE_UNTIL = 500;
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
/** The warm-ups' packets (IPv4 or IPv6 with an ICMP header's worth of zeros), in bytes. */
export const WARMUP_PACKET = 84;
const LOOPBACK = Uint8Array.of(127, 0, 0, 1);

export interface WarmupResult {
  /** Packets delivered end to end (both directions). */
  delivered: number;
  ms: number;
}

class Side {
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  readonly aead = new NativeAead();
  readonly key = generatePrivateKey();
  readonly endpoint: Buffer;
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
    readonly port: number,
    now: () => number,
    log: Logger,
  ) {
    // As device.ts makes its engine and backend.
    this.engine = new Engine({ aead: this.aead, mtu: DEFAULT_TUN_MTU, log, secrets: secretPool() });
    this.backend = new EngineUapiBackend(
      this.engine,
      {
        rebind: () => undefined,
        listenPort: () => port,
        ioCounters: () => ({}),
        keepaliveNow: () => undefined,
      },
      now,
    );
    this.endpoint = makeEndpoint(LOOPBACK, port);
    this.dview = {
      buf: this.udp.slab,
      offsets: this.udp.offsets,
      lengths: this.udp.lengths,
      endpoints: this.udp.endpoints,
      count: 0,
    };
  }

  get id(): number {
    return this.backend.identityId;
  }

  /**
   * Configures this side to talk to `peer` as `wg set <if> private-key K listen-port P peer
   * PUB allowed-ips A/32,B/128 endpoint E` does: the request through the UAPI's parser into
   * the backend, with the IPv4 and IPv6 prefixes of the bench testbeds' tunnels.
   */
  configure(peer: Side, replacePeers = false): void {
    configureAsWgSet(this.backend, {
      key: this.key,
      listenPort: this.port,
      peerKey: peer.key,
      endpoint: `127.0.0.1:${peer.port}`,
      v4: `${formatIPv4Number(peer.address)}/32`,
      v6: `fd00:fe::${peer.address & 0xffff}/128`,
      replacePeers,
    });
  }

  /** Puts `count` IPv4 packets from this side to `to` into the TUN batch. */
  fill(to: Side, count: number): void {
    const b = this.tun;
    for (let i = 0; i < count; i++) {
      writeWarmupIPv4(b.slab, b.offsets[i], this.address, to.address);
      b.lengths[i] = WARMUP_PACKET;
    }
    this.view.count = count;
  }

  close(): void {
    try {
      this.engine.removeIdentity(this.backend.identityId);
    } finally {
      this.key.fill(0);
      this.aead.close();
    }
  }
}

/** Writes a WARMUP_PACKET-byte IPv4 packet (ICMP, TTL 64) from `src` to `dst` at `off`. */
export function writeWarmupIPv4(s: Buffer, off: number, src: number, dst: number): void {
  s.fill(0, off, off + WARMUP_PACKET);
  s[off] = 0x45;
  s.writeUInt16BE(WARMUP_PACKET, off + 2);
  s[off + 8] = 64;
  s[off + 9] = 1; // ICMP
  s.writeUInt32BE(src, off + 12);
  s.writeUInt32BE(dst, off + 16);
}

/** What configureAsWgSet sets: `wg set` with one peer. */
export interface WarmupConfig {
  key: Uint8Array;
  /** Absent: the socket stays where it is. */
  listenPort?: number;
  peerKey: Uint8Array;
  endpoint: string;
  v4: string;
  v6: string;
  replacePeers: boolean;
}

/**
 * Configures `backend` as `wg set <if> private-key K [listen-port P] peer PUB allowed-ips
 * V4,V6 endpoint E` does: the request through the UAPI's parser into the backend (so that
 * peers, keys and endpoints get the representations of a live configuration); every copy of
 * the key made on the way is wiped.
 */
export function configureAsWgSet(backend: EngineUapiBackend, c: WarmupConfig): void {
  const endpoint = parseEndpoint(c.endpoint);
  const v4 = parseCidr(c.v4);
  const v6 = parseCidr(c.v6);
  if (endpoint === null || v4 === null || v6 === null) throw new Error('warm-up addresses do not parse');
  const change: UapiChangeSet = {
    privateKey: Buffer.from(c.key),
    listenPort: c.listenPort,
    replacePeers: c.replacePeers,
    peers: [
      {
        publicKey: publicKeyOf(c.peerKey),
        remove: false,
        updateOnly: false,
        endpoint,
        replaceAllowedIps: true,
        allowedIps: [
          { cidr: v4, remove: false },
          { cidr: v6, remove: false },
        ],
      },
    ],
  };
  const request = serializeSetRequest(change);
  wipeChangeSet(change);
  let parsed: UapiChangeSet | null = null;
  try {
    // The UAPI server hands the parser the lines after "set=1".
    parsed = parseSetRequest(request.subarray(request.indexOf(0x0a) + 1));
    backend.apply(parsed);
  } finally {
    request.fill(0);
    if (parsed !== null) wipeChangeSet(parsed);
  }
}

/**
 * Copies datagrams into `to`'s receive batch as if they came from `from`, each with the local
 * address it arrived at (the sticky source, as the native socket reports it); returns how many.
 */
function carry(out: OutgoingDatagrams, from: Side, to: Side): number {
  const n = Math.min(out.count, BATCH);
  const b = to.udp;
  for (let i = 0; i < n; i++) {
    const at = i * b.slotSize;
    out.buf.copy(b.slab, at, out.offsets[i], out.offsets[i] + out.lengths[i]);
    b.offsets[i] = at;
    b.lengths[i] = out.lengths[i];
    const e = i * ENDPOINT_SIZE;
    from.endpoint.copy(b.endpoints, e);
    b.endpoints[e + ENDPOINT_OFFSET_FLAGS] |= ENDPOINT_HAS_SOURCE;
    b.endpoints.set(LOOPBACK, e + ENDPOINT_OFFSET_SOURCE);
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
    const clock = (): number => this.now;
    try {
      const a = new Side(0x0afe0001, 1, clock, log);
      this.sides.push(a);
      const b = new Side(0x0afe0002, 2, clock, log);
      this.sides.push(b);
      a.configure(b);
      b.configure(a);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** One round trip (the first one also carries the handshake). */
  step(): void {
    const [a, b] = this.sides;
    if (this.k > 0 && this.k < RECONFIGURE_UNTIL && this.k % RECONFIGURE_EVERY === 0) {
      a.configure(b, true);
      b.configure(a, true);
    }
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

/**
 * The engines of the last warm-up that finished, kept (idle) for the life of the process.
 * Optimised code holds the hidden classes it was built for weakly, and the classes of a
 * peer, a keypair, a trie node, a replay filter... are held only by their instances: closed,
 * the warm-up left none, and the first full garbage collection before a live peer's first
 * handshake (a device configured but quiet, or the seconds before `wg` configures it)
 * discarded all of the warmed code ("weak objects", --trace-deopt-verbose), back to baseline
 * code for the next several hundred packets. Their keys are the warm-up's own random ones,
 * used for nothing else, in the secret pool's locked memory; a newer warm-up replaces them.
 */
let kept: Warmup | null = null;

function keep(w: Warmup): void {
  const old = kept;
  kept = w;
  old?.close();
}

/** Runs `roundTrips` round trips at once; throws only if the engines cannot be set up. */
export function warmDataPath(log: Logger, roundTrips = WARMUP_ROUND_TRIPS): WarmupResult {
  const t0 = performance.now();
  const w = new Warmup(log);
  try {
    for (let k = 0; k < roundTrips; k++) w.step();
  } catch (err) {
    w.close();
    throw err;
  }
  keep(w);
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
        w.close();
        resolve({ delivered: w.delivered, ms: performance.now() - t0 });
        return;
      }
      if (done < roundTrips) {
        setImmediate(turn);
        return;
      }
      keep(w);
      resolve({ delivered: w.delivered, ms: performance.now() - t0 });
    };
    setImmediate(turn);
  });
}
