// The I/O driver of a tenguard device: feeds the protocol engine from a TUN device and a UDP
// socket in batches and sends what it returns, drives its timers from one coarse interval,
// and serves the WireGuard UAPI. One identity, as a wireguard-go interface has.
//
// Hot path per readiness event: readBatch/recvBatch (one syscall per packet inside the
// addon, one N-API call per batch), one engine call per batch (routing, headers, replay,
// cryptokey routing in JS), one native AEAD call per batch, one sendmmsg / TUN write batch.
import { performance } from 'node:perf_hooks';
import { NativeAead } from '../native/aead.js';
import { PacketBatch, WG_HEADROOM } from '../native/batch.js';
import { setDumpable } from '../native/dumpable.js';
import { NativeTunDevice, tunCoalescingDefault } from '../native/tun.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { NativeUdpSocket } from '../native/udp.js';
import type { TransportAead } from '../protocol/aead.js';
import type { DatagramBatch, OutgoingDatagrams, PacketBatch as PacketView } from '../protocol/batch.js';
import { Engine } from '../protocol/engine.js';
import { UAPI_ERRNO, UapiError } from '../uapi/protocol.js';
import { UapiServer } from '../uapi/server.js';
import { runOk } from '../util/exec.js';
import { type Logger, logger } from '../util/log.js';
import { EngineUapiBackend } from './engine-backend.js';

/** Packets per batch: large enough to amortise each call, small enough to stay in cache. */
export const DEVICE_BATCH = 128;
/** Bytes per slot: headroom, a packet of up to MAX_PACKET bytes, padding and the tag. */
export const DEVICE_SLOT = 2048;
/** The largest inner packet the device carries (the TUN MTU must not exceed it). */
export const MAX_PACKET = DEVICE_SLOT - WG_HEADROOM - 32;
/** Batches drained per readiness event before yielding to the other direction and timers. */
const DRAIN_ROUNDS = 8;
/** Timer granularity (the engine's wheel is 100 ms). */
const TICK_MS = 100;
export const DEFAULT_TUN_MTU = 1420;

export interface DeviceOptions {
  ifname: string;
  mtu?: number;
  /** Tests: replace the TUN and the socket factory with fakes. */
  tun?: TunDevice;
  openSocket?: (port: number) => PacketSocket;
  aead?: TransportAead;
  log?: Logger;
}

export class Device {
  readonly ifname: string;
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  private readonly log: Logger;
  private readonly tun: TunDevice;
  private socket: PacketSocket;
  private readonly openSocket: (port: number) => PacketSocket;
  private readonly tunBatch = new PacketBatch(DEVICE_BATCH, DEVICE_SLOT, WG_HEADROOM);
  private readonly udpBatch = new PacketBatch(DEVICE_BATCH, DEVICE_SLOT, 0);
  private readonly view: PacketView = {
    buf: this.tunBatch.slab,
    offsets: this.tunBatch.offsets,
    lengths: this.tunBatch.lengths,
    count: 0,
  };
  private readonly dview: DatagramBatch = {
    buf: this.udpBatch.slab,
    offsets: this.udpBatch.offsets,
    lengths: this.udpBatch.lengths,
    endpoints: this.udpBatch.endpoints,
    count: 0,
  };
  private ticker: NodeJS.Timeout | null = null;
  /** A turn of handshake work is scheduled (setImmediate). */
  private draining = false;
  private uapi: UapiServer | null = null;
  private closed = false;
  private closedSockets = { txDropped: 0, txRejected: 0, rxTruncated: 0, rxErrors: 0 };
  private readonly done: Promise<string>;
  private resolveDone!: (why: string) => void;
  /** Packets longer than MAX_PACKET read from the TUN: dropped. */
  tunOversized = 0;

  private constructor(opts: DeviceOptions, tun: TunDevice) {
    this.ifname = opts.ifname;
    this.log = opts.log ?? logger('device').child({ ifname: opts.ifname });
    this.tun = tun;
    this.openSocket = opts.openSocket ?? ((port) => NativeUdpSocket.open({ port }));
    this.engine = new Engine({
      aead: opts.aead ?? new NativeAead(),
      mtu: opts.mtu ?? DEFAULT_TUN_MTU,
      log: this.log,
    });
    this.socket = this.openSocket(0);
    this.backend = new EngineUapiBackend(
      this.engine,
      {
        rebind: (port) => this.rebind(port),
        listenPort: () => this.socket.localPort,
        ioCounters: () => this.ioCounters(),
      },
      now,
    );
    this.done = new Promise((r) => {
      this.resolveDone = r;
    });
  }

  /** Creates the TUN (unless given), binds the socket, starts the UAPI and the loops. */
  static async start(opts: DeviceOptions): Promise<Device> {
    // Keys live in this process: keep them out of core dumps and ptrace.
    if (opts.tun === undefined) setDumpable(false);
    const tun = opts.tun ?? NativeTunDevice.open(opts.ifname, { vnetHdr: tunCoalescingDefault() });
    let dev: Device | undefined;
    try {
      if (opts.tun === undefined)
        await runOk('ip', ['link', 'set', 'dev', tun.name, 'mtu', String(opts.mtu ?? DEFAULT_TUN_MTU)]);
      dev = new Device({ ...opts, ifname: tun.name }, tun);
      dev.uapi = await UapiServer.start({
        ifname: tun.name,
        backend: dev.backend,
        onSocketRemoved: () => void dev?.close('UAPI socket removed'),
      });
      dev.run();
      return dev;
    } catch (err) {
      if (dev) await dev.close('start failed');
      else tun.close();
      throw err;
    }
  }

  /** Resolves with the reason once the device has shut down. */
  get stopped(): Promise<string> {
    return this.done;
  }

  private run(): void {
    this.tun.start((err) => {
      if (err) {
        // The interface was deleted (EBADFD) or broke: a userspace device shuts down then.
        void this.close(`TUN: ${err.message}`);
        return;
      }
      this.onTunReadable();
    });
    this.socket.start((err) => this.onSocketReadable(err));
    this.ticker = setInterval(() => this.onTick(), TICK_MS);
  }

  private onTunReadable(): void {
    const b = this.tunBatch;
    const v = this.view;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      let n: number;
      try {
        n = this.tun.readBatch(b.slab, b.slotSize, b.headroom, b.capacity, b.lengths);
      } catch (err) {
        void this.close(`TUN read: ${(err as Error).message}`);
        return;
      }
      if (n === 0) return;
      if (!this.backend.hasPrivateKey) continue;
      for (let i = 0; i < n; i++) {
        if (b.lengths[i] > MAX_PACKET) {
          b.lengths[i] = 0; // the engine drops an empty packet as malformed
          this.tunOversized++;
        }
      }
      v.count = n;
      const out = this.engine.outbound(this.backend.identityId, v, now());
      this.send(out.data);
      this.send(out.control);
      if (n < b.capacity) return;
    }
  }

  private onSocketReadable(err: Error | null): void {
    if (err) {
      this.log.error({ err: err.message }, 'UDP socket failed');
      return;
    }
    const b = this.udpBatch;
    const v = this.dview;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      const n = this.socket.recvBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths, b.endpoints);
      if (n === 0) return;
      if (!this.backend.hasPrivateKey) continue;
      // The engine decrypts in place and hands back offsets of its own: restore ours each time.
      for (let i = 0; i < n; i++) b.offsets[i] = i * b.slotSize;
      v.count = n;
      const res = this.engine.inbound(v, now());
      if (res.tun.count > 0) {
        try {
          this.tun.writeBatch(res.tun.buf, res.tun.offsets, res.tun.lengths, res.tun.count);
        } catch (e) {
          void this.close(`TUN write: ${(e as Error).message}`);
          return;
        }
      }
      this.send(res.control);
      this.scheduleHandshakes();
      if (n < b.capacity) return;
    }
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
    if (this.closed || !this.backend.hasPrivateKey) return;
    this.send(this.engine.handshakes(now()));
    this.scheduleHandshakes();
  };

  private onTick(): void {
    if (!this.backend.hasPrivateKey) return;
    this.send(this.engine.tick(now()));
    this.scheduleHandshakes();
  }

  private send(out: OutgoingDatagrams): void {
    if (out.count > 0) this.socket.sendBatch(out.buf, out.offsets, out.lengths, out.endpoints, out.count);
  }

  private rebind(port: number): void {
    let next: PacketSocket;
    try {
      next = this.openSocket(port);
    } catch (err) {
      throw new UapiError(UAPI_ERRNO.EADDRINUSE, `cannot bind UDP port ${port}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    const old = this.socket;
    this.retire(old);
    this.socket = next;
    if (!this.closed) next.start((err) => this.onSocketReadable(err));
  }

  private retire(s: PacketSocket): void {
    const st = s.stats();
    this.closedSockets.txDropped += st.txDropped;
    this.closedSockets.txRejected += st.txRejected;
    this.closedSockets.rxTruncated += st.rxTruncated;
    this.closedSockets.rxErrors += st.rxErrors;
    s.close();
  }

  private ioCounters(): Record<string, number> {
    const u = this.socket.stats();
    const t = this.tun.stats();
    const c = this.closedSockets;
    return {
      // An oversized datagram cannot be a WireGuard message: it counts as a drop.
      'dropped.udpOversized': u.rxTruncated + c.rxTruncated,
      'dropped.tunOversized': this.tunOversized + t.rxTruncated,
      'io.udpRxErrors': u.rxErrors + c.rxErrors,
      'io.udpTxDropped': u.txDropped + c.txDropped,
      'io.udpTxRejected': u.txRejected + c.txRejected,
      'io.tunTxDropped': t.txDropped,
      'io.tunTxRejected': t.txRejected,
    };
  }

  /** Stops everything, wipes the keys (by removing the identity) and removes the UAPI socket. */
  async close(why: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.log.info({ why }, 'device shutting down');
    if (this.ticker) clearInterval(this.ticker);
    this.tun.close();
    this.socket.close();
    try {
      this.engine.removeIdentity(this.backend.identityId);
    } catch {
      // already gone
    }
    await this.uapi?.close();
    this.resolveDone(why);
  }
}

function now(): number {
  return performance.now();
}
