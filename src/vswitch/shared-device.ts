// One workload's tunnel device inside the vSwitch daemon's own process (shared isolation):
// its own TUN, its own UDP socket, its own protocol engine with its own key pair, driven from
// the daemon's event loop. It does what src/device/device.ts does for a `tenguard device`
// process, with what would be per-process memory shared between all instances instead:
//
//   - the I/O batches (slabs of 128 slots x 2 KiB, both directions) belong to the platform
//     (SharedIo) and are reused by every instance: each readiness callback runs to completion
//     (read, engine, send) before another can start, so no two instances ever hold them;
//   - one timer interval for all instances (SharedPlatform's ticker), not one per instance;
//   - one AEAD context for all engines.
//
// Containment: every entry point from the event loop (TUN readable, socket readable, tick)
// catches what it throws; a throw ends this instance only (keys wiped, TUN and socket closed)
// and is reported through `exited` with the reason, as a crashed process is in process mode.
// What it cannot contain is a fault of the native addon itself (a segfault ends the daemon
// with every instance): that is the price of sharing one address space.

import { DEVICE_BATCH, DEVICE_SLOT, MAX_PACKET } from '../device/device.js';
import { EngineUapiBackend } from '../device/engine-backend.js';
import { PacketBatch, WG_HEADROOM } from '../native/batch.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import type { TransportAead } from '../protocol/aead.js';
import type { DatagramBatch, OutgoingDatagrams, PacketBatch as PacketView } from '../protocol/batch.js';
import { Engine } from '../protocol/engine.js';
import { UAPI_ERRNO, UapiError } from '../uapi/protocol.js';
import type { Logger } from '../util/log.js';
import type { DeviceExit } from './platform.js';

/** Batches drained per readiness event before yielding to other instances and timers. */
const DRAIN_ROUNDS = 8;

/** The I/O buffers every shared instance borrows for the length of one callback. */
export class SharedIo {
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

export interface SharedDeviceOptions {
  ifname: string;
  mtu: number;
  tun: TunDevice;
  openSocket: (port: number) => PacketSocket;
  aead: TransportAead;
  io: SharedIo;
  log: Logger;
  now: () => number;
}

export class SharedDevice {
  readonly ifname: string;
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  /** Settles once: {code: 0} when stopped on request, {code: null, reason} when it failed. */
  readonly exited: Promise<DeviceExit>;
  /** Packets longer than MAX_PACKET read from the TUN: dropped. */
  tunOversized = 0;
  private readonly tun: TunDevice;
  private socket: PacketSocket;
  private readonly openSocket: (port: number) => PacketSocket;
  private readonly io: SharedIo;
  private readonly log: Logger;
  private readonly now: () => number;
  private closed = false;
  private resolveExit!: (e: DeviceExit) => void;

  constructor(opts: SharedDeviceOptions) {
    this.ifname = opts.ifname;
    this.tun = opts.tun;
    this.io = opts.io;
    this.log = opts.log;
    this.now = opts.now;
    this.openSocket = opts.openSocket;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
    this.engine = new Engine({ aead: opts.aead, mtu: opts.mtu, log: opts.log });
    this.socket = this.openSocket(0);
    try {
      this.backend = new EngineUapiBackend(
        this.engine,
        {
          rebind: (port) => this.rebind(port),
          listenPort: () => this.socket.localPort,
          ioCounters: () => this.ioCounters(),
        },
        this.now,
      );
    } catch (err) {
      this.socket.close();
      throw err;
    }
  }

  get running(): boolean {
    return !this.closed;
  }

  /** Starts reading the TUN and the socket. */
  start(): void {
    this.tun.start((err) => {
      if (err) {
        // The interface was deleted (EBADFD) or broke: the device ends, as a process would.
        this.fail(`TUN: ${err.message}`);
        return;
      }
      this.guard(this.onTunReadable);
    });
    this.socket.start((err) => {
      if (err) {
        this.fail(`UDP socket: ${err.message}`);
        return;
      }
      this.guard(this.onSocketReadable);
    });
  }

  /** The timer step; called by the platform's one ticker. */
  tick(): void {
    if (this.closed || !this.backend.hasPrivateKey) return;
    this.guard(this.onTick);
  }

  /** Ends the device on request: keys wiped, TUN and socket closed. */
  stop(): void {
    this.shutdown({ code: 0, signal: null, reason: 'stopped' });
  }

  /** Ends the device because something failed; reported through `exited`. */
  fail(reason: string): void {
    if (this.closed) return;
    this.log.warn({ reason }, 'shared tunnel device failed');
    this.shutdown({ code: null, signal: null, reason });
  }

  private guard(step: (this: SharedDevice) => void): void {
    if (this.closed) return;
    try {
      step.call(this);
    } catch (err) {
      this.fail(`${(err as Error).name}: ${(err as Error).message}`);
    }
  }

  private onTunReadable(this: SharedDevice): void {
    const b = this.io.tunBatch;
    const v = this.io.view;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      const n = this.tun.readBatch(b.slab, b.slotSize, b.headroom, b.capacity, b.lengths);
      if (n === 0) return;
      if (!this.backend.hasPrivateKey) continue;
      for (let i = 0; i < n; i++) {
        if (b.lengths[i] > MAX_PACKET) {
          b.lengths[i] = 0; // the engine drops an empty packet as malformed
          this.tunOversized++;
        }
      }
      v.count = n;
      const out = this.engine.outbound(this.backend.identityId, v, this.now());
      this.send(out.data);
      this.send(out.control);
      if (n < b.capacity) return;
    }
  }

  private onSocketReadable(this: SharedDevice): void {
    const b = this.io.udpBatch;
    const v = this.io.dview;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      const n = this.socket.recvBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths, b.endpoints);
      if (n === 0) return;
      if (!this.backend.hasPrivateKey) continue;
      // The engine decrypts in place and hands back offsets of its own: restore ours each time.
      for (let i = 0; i < n; i++) b.offsets[i] = i * b.slotSize;
      v.count = n;
      const res = this.engine.inbound(v, this.now());
      if (res.tun.count > 0)
        this.tun.writeBatch(res.tun.buf, res.tun.offsets, res.tun.lengths, res.tun.count);
      this.send(res.control);
      if (n < b.capacity) return;
    }
  }

  private onTick(this: SharedDevice): void {
    this.send(this.engine.tick(this.now()));
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
    old.close();
    this.socket = next;
    if (!this.closed)
      next.start((err) => {
        if (err) this.fail(`UDP socket: ${err.message}`);
        else this.guard(this.onSocketReadable);
      });
  }

  private ioCounters(): Record<string, number> {
    const u = this.socket.stats();
    const t = this.tun.stats();
    return {
      'dropped.udpOversized': u.rxTruncated,
      'dropped.tunOversized': this.tunOversized + t.rxTruncated,
      'io.udpRxErrors': u.rxErrors,
      'io.udpTxDropped': u.txDropped,
      'io.udpTxRejected': u.txRejected,
      'io.tunTxDropped': t.txDropped,
      'io.tunTxRejected': t.txRejected,
    };
  }

  private shutdown(exit: DeviceExit): void {
    if (this.closed) return;
    this.closed = true;
    for (const close of [() => this.tun.close(), () => this.socket.close()]) {
      try {
        close();
      } catch {
        // already closed
      }
    }
    try {
      // Removing the identity wipes the private key, every peer's PSK and session keys.
      this.engine.removeIdentity(this.backend.identityId);
    } catch {
      // already gone
    }
    this.resolveExit(exit);
  }
}
