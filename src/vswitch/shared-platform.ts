// The shared-isolation platform of the vSwitch daemon: every instance's tunnel device runs
// inside the daemon's own process and event loop (shared-device.ts) instead of as its own
// `tenguard device` process (platform.ts, ProcessPlatform).
//
// Why both: a process per instance is the stronger boundary (a fault or a memory-disclosure
// bug in one workload's packet path cannot reach another workload's keys, and the kernel
// cleans up after a crash), but each costs a whole Node runtime, about 50 MB resident, so a
// host runs a few hundred at most. In shared mode an instance costs its engine, its TUN, its
// socket and a UAPI listener: a thousand fit in a fraction of one process's budget. The
// daemon's API, the instances' states and the key handling are the same in both modes:
//
//   - a private key is made by the daemon (instance.ts), given to the device's engine, which
//     keeps its own copy, and the daemon's buffer is wiped; the engine's copy is wiped when
//     the device ends (removeIdentity), on request or after a failure;
//   - a PSK passes through in the same way; nothing is written to disk, argv, env or a log;
//   - each device still serves the WireGuard UAPI on /var/run/wireguard/<ifname>.sock, so
//     `wg show <ifname>` works as it does for a device process (serveUapi: false turns it off).
//
// Plumbing (moving the TUN into the workload's namespace as tg0) is ProcessPlatform's.

import { rmSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { NativeAead } from '../native/aead.js';
import { NativeTunDevice } from '../native/tun.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { NativeUdpSocket } from '../native/udp.js';
import type { TransportAead } from '../protocol/aead.js';
import { type UapiChangeSet, UapiError } from '../uapi/protocol.js';
import { UapiServer, uapiSocketPath } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import {
  type DeviceExit,
  type DeviceHandle,
  type Plumbing,
  ProcessPlatform,
  type VSwitchPlatform,
} from './platform.js';
import { SharedDevice, SharedIo } from './shared-device.js';

/** One timer step for every instance (the engines' timer wheels turn in 100 ms). */
const TICK_MS = 100;
/**
 * Socket buffers of a shared device. A device process asks for 7 MiB each way; a thousand
 * sockets at that size could pin 14 GB of kernel memory under load, and one workload's
 * tunnel does not need it.
 */
export const SHARED_SOCKET_BUFFER = 1 << 20;

/** The namespace plumbing a platform needs besides launching devices. */
export type Plumber = Omit<VSwitchPlatform, 'launch'>;

export interface SharedPlatformOptions {
  log: Logger;
  /** Tests: fakes in place of the TUN, the UDP socket, the AEAD and the `ip` plumbing. */
  openTun?: (ifname: string) => TunDevice;
  openSocket?: (port: number) => PacketSocket;
  aead?: TransportAead;
  plumbing?: Plumber;
  /** Serve the WireGuard UAPI per device (default true). */
  serveUapi?: boolean;
  uapiSocketDir?: string;
  now?: () => number;
}

export interface SharedPlatformStats {
  devices: number;
  /** Devices that ended because something failed, since start. */
  failures: number;
}

class SharedHandle implements DeviceHandle {
  readonly pid = undefined;

  constructor(
    private readonly dev: SharedDevice,
    private readonly uapi: UapiServer | null,
  ) {}

  get ifname(): string {
    return this.dev.ifname;
  }

  get exited(): Promise<DeviceExit> {
    return this.dev.exited;
  }

  async uapiSet(change: UapiChangeSet): Promise<void> {
    if (!this.dev.running) throw new TgError('TG_ERR_CONFLICT', `tunnel device ${this.dev.ifname} has ended`);
    try {
      // The engine copies every key it keeps: the caller wipes its buffers afterwards.
      this.dev.backend.apply(change);
    } catch (err) {
      if (err instanceof UapiError)
        throw new TgError('TG_ERR_UAPI', `tunnel device ${this.dev.ifname}: ${err.message}`, { cause: err });
      throw err;
    }
  }

  async stop(): Promise<void> {
    this.dev.stop();
    await this.uapi?.close();
  }
}

export class SharedPlatform implements VSwitchPlatform {
  private readonly log: Logger;
  private readonly io = new SharedIo();
  private readonly devices = new Map<string, SharedDevice>();
  /** The device whose TUN was plumbed into each namespace as tg0. */
  private readonly plumbed = new Map<string, SharedDevice>();
  private readonly openTun: (ifname: string) => TunDevice;
  private readonly openSocket: (port: number) => PacketSocket;
  private readonly aead: TransportAead;
  private readonly plumbing: Plumber;
  private readonly serveUapi: boolean;
  private readonly uapiSocketDir: string | undefined;
  private readonly now: () => number;
  private ticker: NodeJS.Timeout | null = null;
  private failures = 0;

  constructor(opts: SharedPlatformOptions) {
    this.log = opts.log;
    this.openTun = opts.openTun ?? ((name) => NativeTunDevice.open(name));
    this.openSocket =
      opts.openSocket ??
      ((port) => NativeUdpSocket.open({ port, rcvBuf: SHARED_SOCKET_BUFFER, sndBuf: SHARED_SOCKET_BUFFER }));
    this.aead = opts.aead ?? new NativeAead();
    this.plumbing = opts.plumbing ?? new ProcessPlatform(opts.log);
    this.serveUapi = opts.serveUapi ?? true;
    this.uapiSocketDir = opts.uapiSocketDir;
    this.now = opts.now ?? (() => performance.now());
  }

  async launch(ifname: string, mtu: number): Promise<DeviceHandle> {
    const tun = this.openTun(ifname);
    let dev: SharedDevice;
    try {
      dev = new SharedDevice({
        ifname: tun.name,
        mtu,
        tun,
        openSocket: this.openSocket,
        aead: this.aead,
        io: this.io,
        log: this.log.child({ ifname: tun.name }),
        now: this.now,
      });
    } catch (err) {
      tun.close();
      throw err;
    }
    let uapi: UapiServer | null = null;
    try {
      if (this.serveUapi) {
        // A socket left by a daemon that was killed: ours by name, nobody serves it.
        rmSync(uapiSocketPath(tun.name, this.uapiSocketDir), { force: true });
        uapi = await UapiServer.start({
          ifname: tun.name,
          backend: dev.backend,
          socketDir: this.uapiSocketDir,
        });
      }
      dev.start();
    } catch (err) {
      dev.stop();
      await uapi?.close();
      throw err;
    }
    this.devices.set(dev.ifname, dev);
    void dev.exited.then((exit) => {
      // A restarted instance reuses the name: forget only this device.
      if (this.devices.get(dev.ifname) === dev) this.devices.delete(dev.ifname);
      if (exit.code !== 0) {
        this.failures++;
        void uapi?.close();
      }
      if (this.devices.size === 0) this.stopTicker();
    });
    this.startTicker();
    this.log.debug({ ifname: tun.name }, 'shared tunnel device started');
    return new SharedHandle(dev, uapi);
  }

  /** The running device with this interface name (inspection: stats, tests). */
  device(ifname: string): SharedDevice | undefined {
    return this.devices.get(ifname);
  }

  stats(): SharedPlatformStats {
    return { devices: this.devices.size, failures: this.failures };
  }

  netnsExists(netns: string): boolean {
    return this.plumbing.netnsExists(netns);
  }

  linkExists(netns: string, name: string): Promise<boolean> {
    return this.plumbing.linkExists(netns, name);
  }

  async plumb(p: Plumbing): Promise<void> {
    await this.plumbing.plumb(p);
    const dev = this.device(p.ifname);
    if (dev !== undefined) this.plumbed.set(p.netns, dev);
  }

  /**
   * tg0 of a device of ours goes away with the device's TUN fd (the TUN is not persistent):
   * after that device has ended there is nothing to delete, and no `ip` call is made.
   */
  async unplumb(netns: string, netnsIfname?: string): Promise<void> {
    const dev = this.plumbed.get(netns);
    this.plumbed.delete(netns);
    if (dev !== undefined && !dev.running) return;
    await this.plumbing.unplumb(netns, netnsIfname);
  }

  private startTicker(): void {
    if (this.ticker !== null) return;
    this.ticker = setInterval(() => {
      // tick() contains its own failures: one device's throw ends that device only.
      for (const d of this.devices.values()) d.tick();
    }, TICK_MS);
    this.ticker.unref();
  }

  private stopTicker(): void {
    if (this.ticker !== null) clearInterval(this.ticker);
    this.ticker = null;
  }
}
