// UDP socket over the addon, for the encrypted (outer) transport: batched recvmmsg into
// slab slots and sendmmsg to per-packet endpoints, with large kernel buffers.

import { decodeEndpoint, ENDPOINT_SIZE, encodeAddressPort, endpointPort } from '../net/endpoint.js';
import { TgError } from '../util/errors.js';
import { loadNative, type RawUdp } from './binding.js';
import type { IoStats, PacketSocket, ReadableCallback } from './types.js';

/** wireguard-go's socket buffer size: enough for bursts between event-loop turns. */
export const DEFAULT_SOCKET_BUFFER = 7 << 20;

export interface UdpOptions {
  /**
   * Address to bind. None (the default) or an IPv6 literal gives an AF_INET6 socket that,
   * unless v6Only, also carries IPv4 (dual-stack); an IPv4 literal gives an IPv4-only socket.
   */
  address?: string;
  /** Port to bind; 0 (the default) lets the kernel choose (see localPort). */
  port?: number;
  /** IPV6_V6ONLY; default false. */
  v6Only?: boolean;
  /** SO_RCVBUF/SO_SNDBUF in bytes (forced past net.core.*mem_max when root); 0 keeps the default. */
  rcvBuf?: number;
  sndBuf?: number;
  /**
   * Send runs of same-size packets to one endpoint as one UDP_SEGMENT (GSO) message; default
   * true unless the environment has TENGUARD_UDP_GSO=off. Turned off by itself the first time
   * the kernel refuses a segmented send (the run is then sent packet by packet).
   */
  segmentation?: boolean;
}

/** Set TENGUARD_UDP_GSO=off to send every datagram on its own (for comparisons). */
export const UDP_GSO_ENV = 'TENGUARD_UDP_GSO';

function segmentationDefault(): boolean {
  return process.env[UDP_GSO_ENV] !== 'off';
}

/** Set TENGUARD_UDP_GRO=off to keep a device's socket from receiving coalesced runs. */
export const UDP_GRO_ENV = 'TENGUARD_UDP_GRO';

/** Whether a device turns on UDP receive offload (PacketSocket.receiveOffload). */
export function receiveOffloadDefault(): boolean {
  return process.env[UDP_GRO_ENV] !== 'off';
}

export class NativeUdpSocket implements PacketSocket {
  private readonly raw: RawUdp;
  private port = -1;

  private constructor(raw: RawUdp) {
    this.raw = raw;
  }

  static open(opts: UdpOptions = {}): NativeUdpSocket {
    const bind = encodeAddressPort(opts.address ?? '::', opts.port ?? 0);
    const { UdpHandle } = loadNative();
    let raw: RawUdp;
    try {
      raw = new UdpHandle(
        bind,
        opts.v6Only ?? false,
        opts.rcvBuf ?? DEFAULT_SOCKET_BUFFER,
        opts.sndBuf ?? DEFAULT_SOCKET_BUFFER,
      );
    } catch (err) {
      const where = `${opts.address ?? '::'} port ${opts.port ?? 0}`;
      throw new TgError('TG_ERR_NATIVE', `cannot open UDP socket on ${where}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    raw.segmentation(opts.segmentation ?? segmentationDefault());
    return new NativeUdpSocket(raw);
  }

  /** Whether sends currently use UDP_SEGMENT. */
  get segmentation(): boolean {
    return this.raw.segmentation();
  }

  /** 4 for an IPv4-only socket, 6 for AF_INET6. */
  get family(): 4 | 6 {
    return this.raw.family;
  }

  /** The socket's fd, -1 once closed. */
  get fd(): number {
    return this.raw.fd;
  }

  localEndpoint(): string {
    const ep = Buffer.alloc(ENDPOINT_SIZE);
    this.raw.localEndpoint(ep);
    return decodeEndpoint(ep);
  }

  get localPort(): number {
    if (this.port < 0) {
      const ep = Buffer.alloc(ENDPOINT_SIZE);
      this.raw.localEndpoint(ep);
      this.port = endpointPort(ep);
    }
    return this.port;
  }

  /** The kernel's actual buffer sizes (it reports twice what was requested). */
  bufferSizes(): { rcvBuf: number; sndBuf: number } {
    return this.raw.bufferSizes();
  }

  recvBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
    endpoints: Buffer,
    offsets?: Uint32Array,
  ): number {
    return this.raw.recvBatch(slab, slotSize, headroom, max, lengths, endpoints, offsets);
  }

  receiveOffload(enable?: boolean): boolean {
    return this.raw.receiveOffload(enable);
  }

  receiveMaxAge(ms?: number): number {
    return this.raw.receiveMaxAge(ms);
  }

  sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number {
    return this.raw.sendBatch(slab, offsets, lengths, endpoints, count);
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
