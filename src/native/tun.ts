// TUN device over the addon: opened by name with IFF_TUN | IFF_NO_PI, non-blocking, read
// and written in batches. MTU, addresses and link state are set with `ip` by the caller.
import { TgError } from '../util/errors.js';
import { loadNative, type RawTun } from './binding.js';
import type { IoStats, ReadableCallback, TunDevice } from './types.js';

export interface TunOptions {
  /** IFF_MULTI_QUEUE: open the same name again for more queues (one fd each). */
  multiQueue?: boolean;
  /** IFF_VNET_HDR: every packet read or written is preceded by a virtio_net_hdr (10 bytes). */
  vnetHdr?: boolean;
}

/** Interface names are at most IFNAMSIZ - 1 bytes. */
export const MAX_IFNAME_LEN = 15;

export class NativeTunDevice implements TunDevice {
  private readonly raw: RawTun;

  private constructor(raw: RawTun) {
    this.raw = raw;
  }

  /**
   * Opens (creating if needed) the TUN interface `name`; '' or a pattern such as 'tg%d'
   * lets the kernel choose (see .name). Needs CAP_NET_ADMIN. The interface disappears when
   * the device is closed, unless it was made persistent elsewhere.
   */
  static open(name: string, opts: TunOptions = {}): NativeTunDevice {
    if (typeof name !== 'string' || Buffer.byteLength(name) > MAX_IFNAME_LEN)
      throw new TgError(
        'TG_ERR_INVALID_ARGUMENT',
        `TUN name must be a string of at most ${MAX_IFNAME_LEN} bytes`,
      );
    const { TunHandle } = loadNative();
    try {
      return new NativeTunDevice(new TunHandle(name, opts.multiQueue ?? false, opts.vnetHdr ?? false));
    } catch (err) {
      throw new TgError('TG_ERR_NATIVE', `cannot open TUN device '${name}': ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  get name(): string {
    return this.raw.name;
  }

  /** The device's fd, -1 once closed. */
  get fd(): number {
    return this.raw.fd;
  }

  readBatch(slab: Buffer, slotSize: number, headroom: number, max: number, lengths: Uint32Array): number {
    return this.raw.readBatch(slab, slotSize, headroom, max, lengths);
  }

  writeBatch(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number {
    return this.raw.writeBatch(slab, offsets, lengths, count);
  }

  start(onReadable: ReadableCallback): void {
    this.raw.start(onReadable);
  }

  stop(): void {
    this.raw.stop();
  }

  close(): void {
    this.raw.close();
  }

  stats(): IoStats {
    return this.raw.stats();
  }
}
