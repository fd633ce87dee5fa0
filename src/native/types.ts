// The data plane's I/O contracts: a TUN device and a UDP packet socket. Native
// implementations: tun.ts, udp.ts (over the addon in native/); aead.ts implements the
// batched transport AEAD whose contract is src/protocol/aead.ts. In-memory fakes with the
// same behaviour: fake.ts.
//
// Slot layout (batched reads): packet i is placed at slab offset i*slotSize + headroom and
// lengths[i] is its length. The headroom lets the data plane write the 16-byte WireGuard
// transport header in front of a TUN packet, and the tag after it, without copying.
//
// Errors: bad arguments throw TypeError/RangeError (code ERR_INVALID_ARG_TYPE /
// ERR_OUT_OF_RANGE) before any memory is touched. Per-packet problems are counted drops
// (stats()), never thrown. A device or socket that has become unusable throws an Error
// whose `code` is the errno name (Node's system-error shape: code, errno, syscall):
//   TUN: EBADFD (interface deleted), EIO (write while the interface is down),
//   EBADF (handle closed). UDP: EBADF (closed) and anything else the kernel reports as fatal.

/**
 * Readiness callback. `null`: the fd is readable. Level-triggered: while unread packets
 * remain it is called again on the next event-loop turn, so drain with readBatch/recvBatch
 * until it returns 0. An Error (code = errno name, e.g. 'EBADFD' after `ip link del`) is
 * passed once when readiness fails; polling is stopped then.
 */
export type ReadableCallback = (err: Error | null) => void;

/** Counted drops since the handle was opened. */
export interface IoStats {
  /** Packets longer than a slot's room (slotSize - headroom): dropped. */
  rxTruncated: number;
  /** Transient receive errors reported on a socket (ICMP unreachable and the like): skipped. */
  rxErrors: number;
  /** Datagrams that waited in a socket's receive queue longer than its receiveMaxAge: dropped. */
  rxStale: number;
  /** EAGAIN/ENOBUFS: no room in a kernel queue; the packet was dropped. */
  txDropped: number;
  /** The kernel refused this packet alone (EINVAL, EMSGSIZE, unreachable, firewall): dropped. */
  txRejected: number;
  /** errno name behind the most recent counted drop, null if none yet. */
  lastError: string | null;
}

/** Readiness and lifetime, shared by TUN devices and packet sockets. */
export interface PacketIo {
  /** Calls onReadable as described for ReadableCallback. Calling it again replaces the callback. */
  start(onReadable: ReadableCallback): void;
  /** No more callbacks until start() again. Safe on a stopped or closed handle. */
  stop(): void;
  /** Stops readiness and releases the fd and watcher. Idempotent; later I/O throws EBADF. */
  close(): void;
  stats(): IoStats;
  /** The OS file descriptor, -1 once closed; absent for in-memory fakes (no busy polling). */
  readonly fd?: number;
}

export interface TunDevice extends PacketIo {
  /** The kernel's name for the interface (resolves patterns like 'tg%d'). */
  readonly name: string;
  /**
   * Reads packets until none are pending or `max` were read; packet i goes to
   * slab[i*slotSize + headroom ...], its length to lengths[i]. Returns the count (0 when
   * nothing was pending). Needs max*slotSize <= slab.length, max <= lengths.length.
   */
  readBatch(slab: Buffer, slotSize: number, headroom: number, max: number, lengths: Uint32Array): number;
  /**
   * Writes packet i = slab[offsets[i] .. offsets[i]+lengths[i]) for i < count. Returns
   * how many the kernel took; the others are counted drops (txDropped/txRejected).
   */
  writeBatch(slab: Buffer, offsets: Uint32Array, lengths: Uint32Array, count: number): number;
}

export interface PacketSocket extends PacketIo {
  /** The bound endpoint as text ('127.0.0.1:40000', '[::]:51820'); port 0 is resolved. */
  localEndpoint(): string;
  readonly localPort: number;
  /**
   * Like TunDevice.readBatch, plus the source of datagram i as an endpoint record at
   * endpoints[i*ENDPOINT_SIZE ...], with the local address it was sent to as the record's
   * source where the socket can tell (see src/net/endpoint.ts). Needs endpoints.length >=
   * max*ENDPOINT_SIZE.
   *
   * With `offsets` (at least max entries), datagram i is at slab[offsets[i] ...] instead:
   * each received message has a slot of its own, and on a socket with receive offload
   * (receiveOffload) one message may carry a run of datagrams, reported one by one at their
   * places inside the slot. A socket with receive offload needs `offsets`.
   */
  recvBatch(
    slab: Buffer,
    slotSize: number,
    headroom: number,
    max: number,
    lengths: Uint32Array,
    endpoints: Buffer,
    offsets?: Uint32Array,
  ): number;
  /**
   * UDP generic receive offload (UDP_GRO): with an argument turns it on or off; returns
   * whether it is on (a kernel that refuses leaves it off). Sockets without it leave this out.
   */
  receiveOffload?(enable?: boolean): boolean;
  /**
   * Receive age limit in ms (0: none): with an argument sets it first. Datagrams that waited
   * longer in the kernel's receive queue (the process was stopped, say) are dropped and
   * counted (rxStale) instead of handed over late. Sockets without it leave this out.
   */
  receiveMaxAge?(ms?: number): number;
  /**
   * Sends datagram i = slab[offsets[i] .. +lengths[i]) to the endpoint record at
   * endpoints[i*ENDPOINT_SIZE ...], from the record's source address when it has one and
   * the address is still usable (else from the address the kernel chooses).
   * Returns how many were sent; the others are counted drops.
   */
  sendBatch(
    slab: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): number;
}
