// A pool of started, idle tunnel devices in front of a process platform, so that creating a
// workload's instance does not wait for a process to start (about 200 ms of Node start-up
// on a busy host, most of a spin-up). A warm device holds no key: it has only created its
// TUN (down, in the daemon's namespace) and serves its UAPI. launch() takes one, renames its
// UAPI socket to the name the daemon chose, and starts another in the background; the key is
// set afterwards over UAPI, as for a cold device. Its TUN keeps its warm name (the handle's
// linkName) until plumbing moves it into the workload's namespace and renames it there, one
// `ip` call fewer per spin-up. When the pool is empty, launch() starts one itself, as without
// the pool.
import { renameSync, rmSync } from 'node:fs';
import { uapiSet } from '../uapi/client.js';
import type { UapiChangeSet } from '../uapi/protocol.js';
import { uapiSocketPath } from '../uapi/server.js';
import { TgError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import type { DeviceExit, DeviceHandle, Plumbing, VSwitchPlatform } from './platform.js';

/** Renames a started device's UAPI socket (its TUN is renamed when it is plumbed). */
export type RenameDevice = (from: string, to: string) => Promise<void>;

/**
 * The socket file: the device follows its socket to the new name (see UapiServer), so
 * `wg show <name>` and the vSwitch reach it under the instance's name.
 */
export const renameDevice: RenameDevice = async (from, to) => {
  renameSync(uapiSocketPath(from), uapiSocketPath(to));
};

/** How a handed-out device's UAPI is reached under its new name. */
export type UapiAt = (ifname: string, device: DeviceHandle) => (change: UapiChangeSet) => Promise<void>;

const uapiAtSocket: UapiAt = (ifname) => (change) => uapiSet(uapiSocketPath(ifname), change);

export interface WarmPoolOptions {
  /** Devices kept ready; 0 turns the pool off. */
  size: number;
  /** Names of warm devices: prefix + a counter; kept apart from the daemon's own names. */
  namePrefix: string;
  mtu: number;
  log: Logger;
  rename?: RenameDevice;
  uapiAt?: UapiAt;
}

/** A warm device handed out under the daemon's name (its UAPI socket renamed to it). */
class RenamedDevice implements DeviceHandle {
  private readonly uapi: (change: UapiChangeSet) => Promise<void>;

  constructor(
    readonly ifname: string,
    private readonly inner: DeviceHandle,
    uapiAt: UapiAt,
  ) {
    this.uapi = uapiAt(ifname, inner);
  }

  /** The TUN still has its warm name until it is plumbed. */
  get linkName(): string {
    return this.inner.ifname;
  }

  get pid(): number | undefined {
    return this.inner.pid;
  }

  get exited(): Promise<DeviceExit> {
    return this.inner.exited;
  }

  uapiSet(change: UapiChangeSet): Promise<void> {
    return this.uapi(change);
  }

  async stop(): Promise<void> {
    await this.inner.stop();
    rmSync(uapiSocketPath(this.ifname), { force: true });
  }
}

export class WarmPool implements VSwitchPlatform {
  private readonly ready: DeviceHandle[] = [];
  private starting = 0;
  private counter = 0;
  private closed = false;
  /** Launches served from the pool, and launches that found it empty. */
  hits = 0;
  misses = 0;

  constructor(
    private readonly inner: VSwitchPlatform,
    private readonly opts: WarmPoolOptions,
  ) {
    if (!Number.isInteger(opts.size) || opts.size < 0 || opts.size > 64)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', 'the warm pool size must be 0..64');
    if (`${opts.namePrefix}zzz`.length > 15)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `warm device prefix '${opts.namePrefix}' is too long`);
    this.refill();
  }

  /** Devices ready now. */
  get size(): number {
    return this.ready.length;
  }

  async launch(ifname: string, mtu: number): Promise<DeviceHandle> {
    if (mtu === this.opts.mtu) {
      for (let dev = this.ready.shift(); dev !== undefined; dev = this.ready.shift()) {
        this.refill();
        try {
          await (this.opts.rename ?? renameDevice)(dev.ifname, ifname);
          this.hits++;
          return new RenamedDevice(ifname, dev, this.opts.uapiAt ?? uapiAtSocket);
        } catch (err) {
          // Gone meanwhile (its process ended): try the next one.
          this.opts.log.warn({ warm: dev.ifname, err: (err as Error).message }, 'warm device unusable');
          await dev.stop().catch(() => undefined);
        }
      }
    }
    this.misses++;
    this.refill();
    return this.inner.launch(ifname, mtu);
  }

  netnsExists(netns: string): boolean {
    return this.inner.netnsExists(netns);
  }

  linkExists(netns: string, name: string): Promise<boolean> {
    return this.inner.linkExists(netns, name);
  }

  plumb(p: Plumbing): Promise<void> {
    return this.inner.plumb(p);
  }

  unplumb(netns: string, netnsIfname?: string): Promise<void> {
    return this.inner.unplumb(netns, netnsIfname);
  }

  /** Ends the idle devices; no new ones start. */
  async close(): Promise<void> {
    this.closed = true;
    const idle = this.ready.splice(0);
    await Promise.all(idle.map((d) => d.stop().catch(() => undefined)));
  }

  /** Starts devices in the background until ready + starting reaches the pool size. */
  private refill(): void {
    while (!this.closed && this.ready.length + this.starting < this.opts.size) {
      const name = `${this.opts.namePrefix}${(this.counter++ % 46656).toString(36)}`;
      this.starting++;
      this.inner.launch(name, this.opts.mtu).then(
        (dev) => {
          this.starting--;
          if (this.closed) {
            void dev.stop().catch(() => undefined);
            return;
          }
          this.ready.push(dev);
          // A warm device that ends while idle leaves the pool.
          void dev.exited.then(() => {
            const i = this.ready.indexOf(dev);
            if (i >= 0) this.ready.splice(i, 1);
          });
        },
        (err: unknown) => {
          this.starting--;
          // No retry loop: the next launch() tries again.
          this.opts.log.warn({ err: (err as Error).message }, 'warm device did not start');
        },
      );
    }
  }
}
