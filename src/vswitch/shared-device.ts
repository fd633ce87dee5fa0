// One workload's tunnel device inside the vSwitch daemon's own process (shared isolation):
// its own TUN, its own UDP socket, its own protocol engine with its own key pair, driven from
// the daemon's event loop by the same device pump as a `tenguard device` process
// (src/device/pump.ts), with what would be per-process memory shared between all instances:
//
//   - the I/O batches (DeviceIo) belong to the platform and are lent to every instance: each
//     readiness callback runs to completion (read, engine, send) before another can start,
//     so no two instances ever hold them;
//   - one timer interval for all instances (SharedPlatform's ticker), not one per instance;
//   - one AEAD context for all engines.
//
// Containment: the pump's error policy (pump.ts) decides what is fatal; a fatal error ends
// this instance only (keys wiped, TUN and socket closed) and is reported through `exited`
// with the reason, as a crashed process is in process mode. What it cannot contain is a
// fault of the native addon itself (a segfault ends the daemon with every instance): that is
// the price of sharing one address space.

import { EngineUapiBackend } from '../device/engine-backend.js';
import { checkTunMtu, DeviceIo, DevicePump } from '../device/pump.js';
import { secretPool } from '../native/secret-pool.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import type { TransportAead } from '../protocol/aead.js';
import { Engine } from '../protocol/engine.js';
import type { Logger } from '../util/log.js';
import type { DeviceExit } from './platform.js';

/** The I/O buffers every shared instance borrows for the length of one callback. */
export { DeviceIo as SharedIo };

export interface SharedDeviceOptions {
  ifname: string;
  mtu: number;
  tun: TunDevice;
  openSocket: (port: number) => PacketSocket;
  aead: TransportAead;
  io: DeviceIo;
  log: Logger;
  now: () => number;
}

export class SharedDevice {
  readonly ifname: string;
  readonly engine: Engine;
  readonly backend: EngineUapiBackend;
  readonly pump: DevicePump;
  /** Settles once: {code: 0} when stopped on request, {code: null, reason} when it failed. */
  readonly exited: Promise<DeviceExit>;
  private readonly log: Logger;
  private closed = false;
  private resolveExit!: (e: DeviceExit) => void;

  constructor(opts: SharedDeviceOptions) {
    checkTunMtu(opts.mtu);
    this.ifname = opts.ifname;
    this.log = opts.log;
    this.exited = new Promise((r) => {
      this.resolveExit = r;
    });
    this.engine = new Engine({ aead: opts.aead, mtu: opts.mtu, log: opts.log, secrets: secretPool() });
    this.pump = new DevicePump({
      engine: this.engine,
      tun: opts.tun,
      openSocket: opts.openSocket,
      io: opts.io,
      log: opts.log,
      now: opts.now,
      onFatal: (reason) => this.fail(reason),
    });
    try {
      this.backend = new EngineUapiBackend(
        this.engine,
        {
          rebind: (port) => this.pump.rebind(port),
          listenPort: () => this.pump.localPort,
          ioCounters: () => this.pump.ioCounters(),
          keepaliveNow: (peerId) => this.pump.keepaliveNow(peerId),
        },
        opts.now,
      );
    } catch (err) {
      this.pump.close();
      throw err;
    }
    this.pump.identity = this.backend;
  }

  get running(): boolean {
    return !this.closed;
  }

  /** Packets longer than MAX_PACKET read from the TUN: dropped. */
  get tunOversized(): number {
    return this.pump.tunOversized;
  }

  /** Starts reading the TUN and the socket. */
  start(): void {
    this.pump.start();
  }

  /** The timer step; called by the platform's one ticker. */
  tick(): void {
    if (!this.closed) this.pump.tick();
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

  private shutdown(exit: DeviceExit): void {
    if (this.closed) return;
    this.closed = true;
    this.pump.close();
    try {
      // Removing the identity wipes the private key, every peer's PSK and session keys.
      this.engine.removeIdentity(this.backend.identityId);
    } catch {
      // already gone
    }
    this.resolveExit(exit);
  }
}
