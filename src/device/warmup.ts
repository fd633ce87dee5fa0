// Warm-up of the data path's JavaScript. V8 runs a function in its interpreter or its baseline
// code until the function has executed enough bytecode (its interrupt budget), and only then
// compiles it optimised. A device that carries a few packets a second (a ping every 200 ms, a
// trickle of RPCs) ran its packets through unoptimised code for minutes: 45 µs to encrypt one
// packet instead of 12, a round trip over one tunnel 0.27 ms instead of 0.11 (ftrace, ping
// every 5 ms, right after start and after 3,000 round trips). So a process that carries
// packets first sends round trips through a throwaway pair of engines in memory, with the
// classes, the native AEAD and the batch shapes of the device pump, and keeps them, idle, for
// the life of the process (see `kept` below for why). Then (warmPumps) it runs round trips
// through a pair of real device pumps, so that the pump's own readiness handlers are
// optimised before the first live packet as well: their TUNs are TUN handles of the native
// class joined back to back over a socket pair (NativeTunDevice.pair), their sockets UDP
// sockets of the native class on loopback, so every call site sees the classes a live device
// has (in-memory fakes would have optimised them for the fakes' classes instead).
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
import { NativeTunDevice, tunCoalescingDefault } from '../native/tun.js';
import { NativeUdpSocket } from '../native/udp.js';
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
import { DEFAULT_TUN_MTU, DEVICE_SLOT, DeviceIo, DevicePump, deviceClock } from './pump.js';

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
const PACKET = 84;
const LOOPBACK = Uint8Array.of(127, 0, 0, 1);

export interface WarmupResult {
  /** Packets delivered end to end (both directions). */
  delivered: number;
  /** Round trips the device pumps carried (warmDataPathInBackground's second part). */
  pumpRoundTrips: number;
  ms: number;
}

/**
 * Round trips through a pair of real device pumps after the engines' warm-up: enough that
 * V8 optimises the pump's own readiness handlers (with the data plane's interrupt budget
 * they tier up after about 350 packets), so that their compilation (4 to 6 ms of a worker
 * thread in each device, on this 2-core host both cores at once) comes before the first
 * live packet instead of in the middle of a live round trip.
 */
export const PUMP_WARMUP_ROUND_TRIPS = 800;
/** The pump warm-up gives up after this long (a packet lost, a loaded host). */
const PUMP_WARMUP_TIMEOUT_MS = 10_000;
/** A timer step of both pumps every this many round trips. */
const PUMP_TICK_EVERY = 25;
/** The warm-up pumps' sockets: loopback only, IPv6 sockets as a device's are. */
const PUMP_BIND = '::ffff:127.0.0.1';

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

  /** Configures this side to talk to `peer` (see configurePeer). */
  configure(peer: Side, replacePeers = false): void {
    configurePeer(this.backend, this.key, this.port, peer.key, peer.address, peer.port, replacePeers);
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
      this.engine.removeIdentity(this.backend.identityId);
    } finally {
      this.key.fill(0);
      this.aead.close();
    }
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

/**
 * Configures `backend` (private key `key`, listen port `port`) to talk to the peer with key
 * `peerKey` at 127.0.0.1:`peerPort`, as `wg set <if> private-key K listen-port P peer PUB
 * allowed-ips A/32,B/128 endpoint E` does: the request through the UAPI's parser into the
 * backend, with the IPv4 and IPv6 prefixes of the bench testbeds' tunnels.
 */
function configurePeer(
  backend: EngineUapiBackend,
  key: Buffer,
  port: number,
  peerKey: Buffer,
  peerAddress: number,
  peerPort: number,
  replacePeers: boolean,
): void {
  const endpoint = parseEndpoint(`127.0.0.1:${peerPort}`);
  const v4 = parseCidr(`${formatIPv4Number(peerAddress)}/32`);
  const v6 = parseCidr(`fd00:fe::${peerAddress & 0xffff}/128`);
  if (endpoint === null || v4 === null || v6 === null) throw new Error('warm-up addresses do not parse');
  const change: UapiChangeSet = {
    privateKey: Buffer.from(key),
    listenPort: port,
    replacePeers,
    peers: [
      {
        publicKey: publicKeyOf(peerKey),
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
  return { delivered: w.delivered, pumpRoundTrips: 0, ms: performance.now() - t0 };
}

/**
 * Runs `roundTrips` round trips, `slice` per event-loop turn, then `pumpRoundTrips` through a
 * pair of device pumps (warmPumps; 0 skips them: a process without device pumps). The
 * immediates are referenced on purpose: Node polls without a timeout only while a referenced
 * immediate is pending, so unreferenced slices ran one per wake-up of an otherwise idle loop
 * (every timer tick, every packet), stretching the warm-up over tens of seconds and adding a
 * slice to each packet's way. It keeps the process alive for the second or so it takes.
 * Never rejects: a failure only means colder first packets, logged at warn; resolves with
 * what was done.
 */
export function warmDataPathInBackground(
  log: Logger,
  roundTrips = WARMUP_ROUND_TRIPS,
  slice = WARMUP_SLICE,
  pumpRoundTrips = PUMP_WARMUP_ROUND_TRIPS,
): Promise<WarmupResult> {
  const t0 = performance.now();
  return new Promise((resolve) => {
    const finish = (delivered: number): void => {
      if (pumpRoundTrips <= 0) {
        resolve({ delivered, pumpRoundTrips: 0, ms: performance.now() - t0 });
        return;
      }
      void warmPumps(log, pumpRoundTrips).then((n) =>
        resolve({ delivered, pumpRoundTrips: n, ms: performance.now() - t0 }),
      );
    };
    let w: Warmup;
    try {
      w = new Warmup(log);
    } catch (err) {
      log.warn({ err }, 'data path warm-up failed; the first packets run unoptimised');
      resolve({ delivered: 0, pumpRoundTrips: 0, ms: performance.now() - t0 });
      return;
    }
    let done = 0;
    const turn = (): void => {
      try {
        for (let i = 0; i < slice && done < roundTrips; i++, done++) w.step();
      } catch (err) {
        log.warn({ err }, 'data path warm-up failed; the first packets run unoptimised');
        w.close();
        resolve({ delivered: w.delivered, pumpRoundTrips: 0, ms: performance.now() - t0 });
        return;
      }
      if (done < roundTrips) {
        setImmediate(turn);
        return;
      }
      keep(w);
      finish(w.delivered);
    };
    setImmediate(turn);
  });
}

/**
 * One end of the pump warm-up: an engine and a device pump made exactly as device.ts makes
 * them (the same classes, the same clock function, a TUN handle and a UDP socket of the
 * native classes), the pump's TUN joined back to back to `stack`, which plays the kernel's
 * side of the TUN.
 */
class PumpSide {
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  readonly pump: DevicePump;
  readonly stack: NativeTunDevice;
  /** The pump's TUN end and the sockets it opened, closed by close(). */
  private readonly handles: { close(): void }[] = [];
  readonly aead = new NativeAead();
  readonly key = generatePrivateKey();
  /** What the stack reads from and writes to the pump's TUN. */
  readonly batch = new PacketBatch(BATCH, SLOT, 0);

  constructor(
    readonly address: number,
    log: Logger,
    onFatal: (reason: string) => void,
  ) {
    this.engine = new Engine({ aead: this.aead, mtu: DEFAULT_TUN_MTU, log, secrets: secretPool() });
    const [tun, stack] = NativeTunDevice.pair('tgwarm', { vnetHdr: tunCoalescingDefault() });
    this.stack = stack;
    this.handles.push(tun, stack);
    const handles = this.handles;
    let pump: DevicePump;
    try {
      pump = new DevicePump({
        engine: this.engine,
        tun,
        openSocket: (port) => {
          const socket = NativeUdpSocket.open({ address: PUMP_BIND, port });
          handles.push(socket);
          return socket;
        },
        io: new DeviceIo(),
        log,
        now: deviceClock,
        onFatal,
      });
    } catch (err) {
      this.closeHandles();
      this.aead.close();
      this.key.fill(0);
      throw err;
    }
    this.pump = pump;
    this.backend = new EngineUapiBackend(
      this.engine,
      {
        rebind: (port) => pump.rebind(port),
        listenPort: () => pump.localPort,
        ioCounters: () => pump.ioCounters(),
        keepaliveNow: (peerId) => pump.keepaliveNow(peerId),
      },
      deviceClock,
    );
    pump.identity = this.backend;
  }

  configure(peer: PumpSide): void {
    configurePeer(
      this.backend,
      this.key,
      this.pump.localPort,
      peer.key,
      peer.address,
      peer.pump.localPort,
      false,
    );
  }

  /** Reads what the pump wrote to its TUN; returns how many packets. */
  read(): number {
    const b = this.batch;
    return this.stack.readBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths);
  }

  /** Writes `count` IPv4 packets to `to` into the pump's TUN, as a local sender would. */
  send(to: PumpSide, count: number): void {
    const b = this.batch;
    for (let i = 0; i < count; i++) {
      const off = i * b.slotSize;
      const s = b.slab;
      s.fill(0, off, off + PACKET);
      s[off] = 0x45;
      s.writeUInt16BE(PACKET, off + 2);
      s[off + 8] = 64;
      s[off + 9] = 1; // ICMP
      s.writeUInt32BE(this.address, off + 12);
      s.writeUInt32BE(to.address, off + 16);
      b.offsets[i] = off;
      b.lengths[i] = PACKET;
    }
    this.stack.writeBatch(b.slab, b.offsets, b.lengths, count);
  }

  /** Sends the `count` packets just read back to where they came from (an echo). */
  echo(count: number): void {
    const b = this.batch;
    const s = b.slab;
    for (let i = 0; i < count; i++) {
      const off = i * b.slotSize;
      const src = s.readUInt32BE(off + 12);
      s.writeUInt32BE(s.readUInt32BE(off + 16), off + 12);
      s.writeUInt32BE(src, off + 16);
      b.offsets[i] = off;
    }
    this.stack.writeBatch(b.slab, b.offsets, b.lengths, count);
  }

  /**
   * Closes the TUN pair and the sockets; never throws. The pump itself is left as it is, and
   * so is the engine with its identity, as the engines' warm-up leaves its own (`kept`): the
   * pump's optimised code relies on fields that only a device's shutdown writes (`closed`
   * above all: V8 deoptimises the code that read a field as constant once it is written), and
   * removing the identity would do the same to the engine's.
   */
  closeHandles(): void {
    for (const h of this.handles.splice(0)) {
      try {
        h.close();
      } catch {
        // already closed
      }
    }
  }
}

/**
 * The pumps of the last pump warm-up, closed (their keys wiped, their handles closed) but
 * kept for the life of the process, for the reason `kept` gives: their objects hold the
 * hidden classes the pump's optimised code was built for.
 */
let keptPumps: PumpSide[] = [];

/** How many warm-up pumps are kept (2 after a pump warm-up, 0 before). */
export function keptPumpCount(): number {
  return keptPumps.length;
}

/**
 * `roundTrips` round trips between two device pumps over loopback UDP, driven through their
 * readiness callbacks as live packets are (a packet written to A's TUN, sealed and sent by
 * A's pump, opened by B's, echoed by B's stack, back the same way), a batch of BATCH on every
 * BATCH_EVERY-th round trip, a timer step every PUMP_TICK_EVERY. Resolves with the round
 * trips done; never rejects (a namespace without loopback, for one, only means the pump's
 * handlers tier up on live packets, logged at debug).
 */
export function warmPumps(log: Logger, roundTrips = PUMP_WARMUP_ROUND_TRIPS): Promise<number> {
  return new Promise((resolve) => {
    const sides: PumpSide[] = [];
    let done = 0;
    let waiting = 0;
    let over = false;
    const end = (why: string | null): void => {
      if (over) return;
      over = true;
      clearTimeout(timer);
      for (const s of sides) s.closeHandles();
      keptPumps = sides;
      if (why !== null) log.debug({ why, roundTrips: done }, 'device pump warm-up stopped early');
      resolve(done);
    };
    const timer = setTimeout(() => end('timed out'), PUMP_WARMUP_TIMEOUT_MS);
    try {
      sides.push(new PumpSide(0x0afe0101, log, (reason) => end(reason)));
      sides.push(new PumpSide(0x0afe0102, log, (reason) => end(reason)));
      const [a, b] = sides;
      // A device's socket moves when `wg` sets its listen port; these move theirs as well, so
      // that the warm-up runs what a configured device has run.
      a.pump.rebind(0);
      b.pump.rebind(0);
      a.configure(b);
      b.configure(a);
      const next = (): void => {
        if (done > 0 && done % PUMP_TICK_EVERY === 0) {
          a.pump.tick();
          b.pump.tick();
        }
        waiting = done % BATCH_EVERY === BATCH_EVERY - 1 ? BATCH : 1;
        a.send(b, waiting);
      };
      b.stack.start((err) => {
        if (over) return;
        if (err) return end(`stack: ${err.message}`);
        try {
          for (let n = b.read(); n > 0; n = b.read()) b.echo(n);
        } catch (e) {
          end(`stack: ${(e as Error).message}`);
        }
      });
      a.stack.start((err) => {
        if (over) return;
        if (err) return end(`stack: ${err.message}`);
        try {
          for (let n = a.read(); n > 0; n = a.read()) waiting -= n;
          if (waiting > 0) return;
          if (++done >= roundTrips) return end(null);
          next();
        } catch (e) {
          end(`stack: ${(e as Error).message}`);
        }
      });
      a.pump.start();
      b.pump.start();
      next();
    } catch (err) {
      end((err as Error).message);
    }
  });
}
