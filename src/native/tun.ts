// TUN device over the addon: opened by name with IFF_TUN | IFF_NO_PI, non-blocking, read
// and written in batches. MTU, addresses and link state are set with `ip` by the caller.
import { closeSync } from 'node:fs';
import { TgError } from '../util/errors.js';
import { loadNative, type RawTun } from './binding.js';
import type { IoStats, ReadableCallback, TunDevice } from './types.js';

export interface TunOptions {
  /** IFF_MULTI_QUEUE: open the same name again for more queues (one fd each). */
  multiQueue?: boolean;
  /**
   * IFF_VNET_HDR: the kernel's virtio_net_hdr travels with every packet; the addon reads and
   * writes it, so callers still see bare IP packets of at most the MTU. It turns on
   * segmentation offload towards this process (TCP super-packets are read whole and cut into
   * segments here) and lets writeBatch coalesce the TCP segments of a flow into one large
   * packet per write (see coalescing).
   */
  vnetHdr?: boolean;
}

/** Set TENGUARD_TUN_GRO=off to open devices without the header (every packet written alone). */
export const TUN_GRO_ENV = 'TENGUARD_TUN_GRO';

/** Whether devices open their TUN with vnetHdr and coalesce writes by default. */
export function tunCoalescingDefault(): boolean {
  return process.env[TUN_GRO_ENV] !== 'off';
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

  /**
   * Two connected ends of an in-process packet channel (an AF_UNIX SOCK_SEQPACKET pair) with
   * this class's interface: what one end writes, the other reads, one packet per read, as
   * from a TUN device opened without vnetHdr. Named ''. The warm-up runs devices over them
   * (src/device/warmup.ts), so that the data path meets the handles it will meet live.
   */
  static pair(): [NativeTunDevice, NativeTunDevice] {
    const { TunHandle, seqpacketPair } = loadNative();
    const [a, b] = seqpacketPair();
    let first: RawTun | null = null;
    try {
      first = new TunHandle(a, false, false);
      return [new NativeTunDevice(first), new NativeTunDevice(new TunHandle(b, false, false))];
    } catch (err) {
      // A handle owns its fd once made; the fds no handle took are closed here.
      if (first === null) closeFd(a);
      else first.close();
      closeFd(b);
      throw new TgError('TG_ERR_NATIVE', `cannot make a packet channel: ${(err as Error).message}`, {
        cause: err,
      });
    }
  }

  get name(): string {
    return this.raw.name;
  }

  /** Whether writeBatch coalesces TCP segments (only with vnetHdr). */
  get coalescing(): boolean {
    return this.raw.coalescing();
  }

  set coalescing(on: boolean) {
    this.raw.coalescing(on);
  }

  /**
   * Segments written inside coalesced packets and the number of those packets; segments cut
   * from TCP super-packets read and the number of those reads.
   */
  mergeStats(): { packets: number; writes: number; splitPackets: number; splitReads: number } {
    return this.raw.mergeStats();
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

function closeFd(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed by its handle
  }
}
