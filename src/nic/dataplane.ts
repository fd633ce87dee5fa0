// The NIC's I/O driver (the model is device/device.ts): two UDP sockets feed one protocol
// engine in batches; what the engine decrypts goes through the forwarder and straight back
// into the engine for re-encryption. No packet leaves the NIC unencrypted, except allowed
// egress: with an uplink (egress, README "Egress"), source-NATed packets to outside addresses
// are written to the uplink TUN device, replies read from it go back through the forwarder
// onto the workload's session, and DNS queries the tenant DNS servers forward go to the
// upstream server through `upstream` (answers come back through upstreamAnswer()).
//
//   host socket   (host link, on-host leg)   --+                         +--> host socket
//                                              +-> engine.inbound -> forwarder -> engine.outboundToPeers
//   fabric socket (fabric, off-host leg)     --+                         +--> fabric socket
//
// Every datagram the engine hands back is tagged with the identity it belongs to: the on-host
// identity's leave on the host socket, every tenant identity's on the fabric socket.
// Per readiness event: up to DRAIN_ROUNDS batches of up to BATCH datagrams, each one
// recvmmsg, one inbound call (one AEAD open call), one forward pass, one outboundToPeers call
// (one AEAD seal call, in place: each packet is re-encrypted in the datagram it was
// decrypted in), and a sendmmsg per socket; a second outboundToPeers call only when the
// forwarder answered packets with ICMP or had to copy one.
//
// Both sockets receive with UDP receive offload (UDP_GRO, unless TENGUARD_UDP_GRO=off): the
// devices and the other NICs send runs of equal datagrams as one UDP_SEGMENT (GSO) message,
// and a socket without GRO makes the kernel cut every such message into datagrams on
// delivery, a copy of every byte and a buffer per datagram (under `bench path`, 6 to 9% of the
// sender's CPU went to that alone). With GRO a run arrives whole, its datagrams back to back in
// one slot; each packet is re-encrypted within its own datagram (the engine cuts the padding
// to fit; forwarding.ts DatagramBounds). Timers tick every TICK_MS, the firewall's
// housekeeping (connection expiry, flow-log flush) with them. The firewall's clock (wall ms,
// for flow records) is read once per batch.
//
// Errors follow the device pump's policy (src/device/pump.ts, IoGuard): transient errnos are
// counted and retried, anything else a socket call or its readiness throws stops the data
// plane (logged at error, `failure` set, health reports it down). An exception from the
// engine or the forwarder inside a batch is a bug: counted (loopErrors) and logged, the
// batch is lost, the loop goes on.
import { performance } from 'node:perf_hooks';
import { DEVICE_SLOT, IoGuard } from '../device/pump.js';
import { PacketBatch } from '../native/batch.js';
import type { PacketSocket, TunDevice } from '../native/types.js';
import { receiveOffloadDefault } from '../native/udp.js';
import { ENDPOINT_SIZE } from '../net/endpoint.js';
import type { DatagramBatch, OutgoingDatagrams } from '../protocol/batch.js';
import type { Engine } from '../protocol/engine.js';
import { RECEIVE_MAX_AGE } from '../protocol/tuning.js';
import type { Logger } from '../util/log.js';
import type { DatagramBounds, Forwarder } from './forwarding.js';

export const NIC_BATCH = 128;
/**
 * Receive slots hold any WireGuard message (65,535 bytes), so tenant packets of any MTU pass;
 * the slab is virtual memory, resident only where datagrams landed (see DeviceIo).
 */
const SLOT = DEVICE_SLOT;
const DRAIN_ROUNDS = 8;
/**
 * Datagrams one received message may carry with receive offload (the kernel's GRO merges at
 * most 64): a receive ends early when fewer entries than this are left in the batch.
 */
const RECV_RUN = 64;
const TICK_MS = 100;
/** Uplink slots: packets from the uplink are at most its MTU (the lab's links: up to 9,000). */
const UPLINK_SLOT = 9216;

export interface DataPlaneOptions {
  engine: Engine;
  forwarder: Forwarder;
  /** Host-link socket (on-host leg) and fabric socket (off-host leg). */
  hostSocket: PacketSocket;
  fabricSocket: PacketSocket;
  /** The engine identity of the on-host leg; all others are tenant off-host identities. */
  onHostIdentity: number;
  log: Logger;
  /** Engine clock in ms (default performance.now). */
  now?: () => number;
  /** Called once when the data plane stops on a fatal socket error (after it closed). */
  onFatal?: (reason: string) => void;
  /** Egress: the uplink TUN (the forwarder must have egress set up). */
  uplinkTun?: TunDevice;
  /** Egress: sends a DNS query to the upstream server (must not throw). */
  upstream?: (msg: Buffer) => void;
}

export interface IoCounters {
  hostRxTruncated: number;
  hostRxErrors: number;
  hostRxStale: number;
  hostTxDropped: number;
  hostTxRejected: number;
  fabricRxTruncated: number;
  fabricRxErrors: number;
  fabricRxStale: number;
  fabricTxDropped: number;
  fabricTxRejected: number;
}

/** Datagrams picked out of an OutgoingDatagrams for one socket. */
class SendList {
  offsets = new Uint32Array(NIC_BATCH);
  lengths = new Uint32Array(NIC_BATCH);
  endpoints = Buffer.alloc(NIC_BATCH * ENDPOINT_SIZE);
  count = 0;

  add(out: OutgoingDatagrams, i: number): void {
    const n = this.count;
    if (n === this.offsets.length) {
      const cap = n * 2;
      const o = new Uint32Array(cap);
      o.set(this.offsets);
      this.offsets = o;
      const l = new Uint32Array(cap);
      l.set(this.lengths);
      this.lengths = l;
      const e = Buffer.alloc(cap * ENDPOINT_SIZE);
      this.endpoints.copy(e);
      this.endpoints = e;
    }
    this.offsets[n] = out.offsets[i];
    this.lengths[n] = out.lengths[i];
    out.endpoints.copy(this.endpoints, n * ENDPOINT_SIZE, i * ENDPOINT_SIZE, (i + 1) * ENDPOINT_SIZE);
    this.count = n + 1;
  }
}

export class NicDataPlane {
  private readonly engine: Engine;
  private readonly forwarder: Forwarder;
  private readonly host: PacketSocket;
  private readonly fabric: PacketSocket;
  private readonly onHost: number;
  private readonly log: Logger;
  private readonly now: () => number;
  private readonly rx = new PacketBatch(NIC_BATCH, SLOT, 0);
  private readonly rview: DatagramBatch;
  /** The received datagrams of the batch in process(), with receive offload. */
  private readonly bounds: DatagramBounds = {
    starts: new Uint32Array(NIC_BATCH),
    ends: new Uint32Array(NIC_BATCH),
    count: 0,
  };
  private readonly hostGro: boolean;
  private readonly fabricGro: boolean;
  private readonly hostList = new SendList();
  private readonly fabricList = new SendList();
  private ticker: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly guard: IoGuard;
  private readonly onFatal: (reason: string) => void;
  private readonly uplink: TunDevice | null;
  private readonly upstream: (msg: Buffer) => void;
  private readonly uplinkRx: PacketBatch | null;
  /** Egress packets the uplink TUN did not take (its queue full). */
  uplinkTxDropped = 0;
  /** A turn of handshake work is scheduled (setImmediate). */
  private draining = false;
  /** Exceptions caught at the loop boundary (should stay 0). */
  loopErrors = 0;
  /** Why the data plane stopped on its own, null while it runs or after close(). */
  failure: string | null = null;

  constructor(opts: DataPlaneOptions) {
    this.engine = opts.engine;
    this.forwarder = opts.forwarder;
    this.host = opts.hostSocket;
    this.fabric = opts.fabricSocket;
    // Datagrams that waited out a stall of this process are dropped, not forwarded late.
    this.host.receiveMaxAge?.(RECEIVE_MAX_AGE);
    this.fabric.receiveMaxAge?.(RECEIVE_MAX_AGE);
    const gro = receiveOffloadDefault();
    this.hostGro = gro && (this.host.receiveOffload?.(true) ?? false);
    this.fabricGro = gro && (this.fabric.receiveOffload?.(true) ?? false);
    this.onHost = opts.onHostIdentity;
    this.log = opts.log;
    this.now = opts.now ?? (() => performance.now());
    this.guard = new IoGuard(opts.log);
    this.onFatal = opts.onFatal ?? (() => undefined);
    this.uplink = opts.uplinkTun ?? null;
    this.upstream = opts.upstream ?? (() => undefined);
    this.uplinkRx = this.uplink === null ? null : new PacketBatch(NIC_BATCH, UPLINK_SLOT, 0);
    this.rview = {
      buf: this.rx.slab,
      offsets: this.rx.offsets,
      lengths: this.rx.lengths,
      endpoints: this.rx.endpoints,
      count: 0,
    };
  }

  start(): void {
    this.ticker = setInterval(() => this.onTick(), TICK_MS);
    try {
      this.host.start((err) => this.onReadable(this.host, 'host', err));
      this.fabric.start((err) => this.onReadable(this.fabric, 'fabric', err));
      this.uplink?.start((err) => this.onUplinkReadable(err));
    } catch (err) {
      this.fatal('start', err);
    }
  }

  /** Started and not stopped (by close() or a fatal error). */
  get running(): boolean {
    return this.ticker !== null && !this.closed;
  }

  /** Transient socket errors counted and retried. */
  get transientErrors(): number {
    return this.guard.transientErrors;
  }

  private fatal(what: string, err: unknown, consumed = false): void {
    if (this.closed) return;
    const reason = this.guard.failed(what, err, consumed);
    if (reason === null) return;
    this.close();
    this.failure = reason;
    this.onFatal(reason);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.ticker) clearInterval(this.ticker);
    this.host.close();
    this.fabric.close();
    this.uplink?.close();
  }

  ioCounters(): IoCounters {
    const h = this.host.stats();
    const f = this.fabric.stats();
    return {
      hostRxTruncated: h.rxTruncated,
      hostRxErrors: h.rxErrors,
      hostRxStale: h.rxStale,
      hostTxDropped: h.txDropped,
      hostTxRejected: h.txRejected,
      fabricRxTruncated: f.rxTruncated,
      fabricRxErrors: f.rxErrors,
      fabricRxStale: f.rxStale,
      fabricTxDropped: f.txDropped,
      fabricTxRejected: f.txRejected,
    };
  }

  private onReadable(sock: PacketSocket, which: string, err: Error | null): void {
    if (this.closed) return;
    if (err) {
      this.fatal(`${which} socket`, err);
      return;
    }
    const b = this.rx;
    const gro = sock === this.host ? this.hostGro : this.fabricGro;
    // Without offload a full batch may leave more queued; with it, one with fewer than a run's
    // entries left may have.
    const more = gro ? b.capacity - RECV_RUN : b.capacity - 1;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      let n: number;
      try {
        n = gro
          ? sock.recvBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths, b.endpoints, b.offsets)
          : sock.recvBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths, b.endpoints);
        this.guard.ok();
      } catch (e) {
        this.fatal(`${which} receive`, e);
        return;
      }
      if (n === 0) return;
      try {
        this.process(n, gro);
      } catch (e) {
        this.loopErrors++;
        this.log.error({ err: e }, 'NIC data plane: unexpected exception in a batch');
      }
      this.scheduleHandshakes();
      if (this.closed || n <= more) return;
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
    if (this.closed) return;
    try {
      this.send(this.engine.handshakes(this.now()));
    } catch (e) {
      this.loopErrors++;
      this.log.error({ err: e }, 'NIC data plane: unexpected exception in handshake work');
    }
    this.scheduleHandshakes();
  };

  /**
   * One received batch: decrypt, forward, re-encrypt, send. Packets are re-encrypted where they
   * were decrypted (in their datagram, over their old header and tag), so a forwarded packet
   * is rarely copied; the forwarder's own ICMP answers go in a second engine call. With
   * receive offload (`gro`) the socket wrote the datagrams' offsets; else datagram i is in slot i.
   */
  private process(n: number, gro: boolean): void {
    const b = this.rx;
    const v = this.rview;
    let bounds: DatagramBounds | null = null;
    if (gro) {
      // The engine decrypts in place and reports offsets of its own: keep the datagrams'.
      bounds = this.bounds;
      for (let i = 0; i < n; i++) {
        bounds.starts[i] = b.offsets[i];
        bounds.ends[i] = b.offsets[i] + b.lengths[i];
      }
      bounds.count = n;
    } else {
      for (let i = 0; i < n; i++) b.offsets[i] = i * b.slotSize;
    }
    v.count = n;
    const now = this.now();
    const res = this.engine.inbound(v, now);
    // The control batch is only valid until the next engine call: send it first.
    this.send(res.control);
    if (res.tun.count === 0) return;
    const fwd = this.forwarder.forward(res.tun, Date.now(), b.slotSize, bounds);
    if (fwd.uplink.count > 0 && this.uplink !== null) {
      const u = fwd.uplink;
      try {
        this.uplinkTxDropped += u.count - this.uplink.writeBatch(u.buf, u.offsets, u.lengths, u.count);
      } catch (e) {
        this.fatal('uplink write', e, true);
      }
    }
    for (const msg of fwd.upstream) this.upstream(msg);
    if (fwd.batch.count > 0) {
      const out = this.engine.outboundToPeers(fwd.batch, fwd.peerIds, now, fwd.ends);
      this.send(out.data);
      this.send(out.control);
    }
    if (fwd.extra.batch.count > 0) {
      const out = this.engine.outboundToPeers(fwd.extra.batch, fwd.extra.peerIds, now);
      this.send(out.data);
      this.send(out.control);
    }
  }

  /** Replies from outside, read from the uplink TUN: translated back and sent on the workloads' sessions. */
  private onUplinkReadable(err: Error | null): void {
    if (this.closed || this.uplink === null || this.uplinkRx === null) return;
    if (err) {
      this.fatal('uplink', err);
      return;
    }
    const b = this.uplinkRx;
    for (let round = 0; round < DRAIN_ROUNDS; round++) {
      let n: number;
      try {
        n = this.uplink.readBatch(b.slab, b.slotSize, 0, b.capacity, b.lengths);
      } catch (e) {
        this.fatal('uplink read', e);
        return;
      }
      if (n === 0) return;
      try {
        const fwd = this.forwarder.fromUplink({
          buf: b.slab,
          offsets: b.offsets,
          lengths: b.lengths,
          count: n,
        });
        if (fwd.batch.count > 0) {
          const out = this.engine.outboundToPeers(fwd.batch, fwd.peerIds, this.now());
          this.send(out.data);
          this.send(out.control);
        }
      } catch (e) {
        this.loopErrors++;
        this.log.error({ err: e }, 'NIC data plane: unexpected exception in an uplink batch');
      }
      if (this.closed || n < b.capacity) return;
    }
  }

  /** An answer from the upstream DNS server: checked and sent to the asking workload. */
  upstreamAnswer(msg: Buffer): void {
    if (this.closed) return;
    try {
      const fwd = this.forwarder.upstreamAnswer(msg);
      if (fwd === null) return;
      const out = this.engine.outboundToPeers(fwd.batch, fwd.peerIds, this.now());
      this.send(out.data);
      this.send(out.control);
    } catch (e) {
      this.loopErrors++;
      this.log.error({ err: e }, 'NIC data plane: unexpected exception on an upstream DNS answer');
    }
  }

  private onTick(): void {
    if (this.closed) return;
    try {
      this.send(this.engine.tick(this.now()));
      this.forwarder.tick(Date.now());
      this.scheduleHandshakes();
    } catch (e) {
      this.loopErrors++;
      this.log.error({ err: e }, 'NIC data plane: unexpected exception in a tick');
    }
  }

  /** Sends each datagram on its identity's socket: on-host on the host link, the rest on the fabric. */
  private send(out: OutgoingDatagrams): void {
    const n = out.count;
    if (n === 0) return;
    const ids = out.identityIds;
    const onHost = this.onHost;
    let hostCount = 0;
    for (let i = 0; i < n; i++) if (ids[i] === onHost) hostCount++;
    if (hostCount === n) {
      this.sendOn(this.host, 'host', out.buf, out.offsets, out.lengths, out.endpoints, n);
      return;
    }
    if (hostCount === 0) {
      this.sendOn(this.fabric, 'fabric', out.buf, out.offsets, out.lengths, out.endpoints, n);
      return;
    }
    const h = this.hostList;
    const f = this.fabricList;
    h.count = 0;
    f.count = 0;
    for (let i = 0; i < n; i++) (ids[i] === onHost ? h : f).add(out, i);
    this.sendOn(this.host, 'host', out.buf, h.offsets, h.lengths, h.endpoints, h.count);
    this.sendOn(this.fabric, 'fabric', out.buf, f.offsets, f.lengths, f.endpoints, f.count);
  }

  private sendOn(
    sock: PacketSocket,
    which: string,
    buf: Buffer,
    offsets: Uint32Array,
    lengths: Uint32Array,
    endpoints: Buffer,
    count: number,
  ): void {
    if (this.closed || count === 0) return;
    try {
      sock.sendBatch(buf, offsets, lengths, endpoints, count);
      this.guard.ok();
    } catch (e) {
      this.fatal(`${which} send`, e, true);
    }
  }
}
