// Source NAT of egress (egress.ts), IPv4 TCP, UDP and ICMP echo: (session, protocol, workload
// address and port, remote address and port) -> a port of the uplink address (per protocol from
// SNAT_PORT_MIN to SNAT_PORT_MAX); replies to that port from the same remote end are translated
// back to the workload. Checksums are adjusted incrementally (RFC 1624). Idle entries expire
// (TCP SNAT_TCP_MS, or SNAT_CLOSING_MS after a FIN or RST; UDP SNAT_UDP_MS; ICMP SNAT_ICMP_MS).
// Pure: time is passed in. Not translated (counted drops): IPv6, ICMP other than echo, ICMP
// errors from outside, fragments.

export const SNAT_PORT_MIN = 20_000;
export const SNAT_PORT_MAX = 59_999;
export const SNAT_TCP_MS = 300_000;
export const SNAT_CLOSING_MS = 10_000;
export const SNAT_UDP_MS = 30_000;
export const SNAT_ICMP_MS = 30_000;

const IPPROTO_ICMP = 1;
const IPPROTO_TCP = 6;
const IPPROTO_UDP = 17;
const ICMP_ECHO_REQUEST = 8;
const ICMP_ECHO_REPLY = 0;
const TCP_FIN = 0x01;
const TCP_RST = 0x04;

/** What a translation belongs to: the workload's session and reference. */
export interface SnatOwner {
  readonly tenant: string;
  readonly peerId: number;
  readonly ref: { readonly tenant: string; readonly workload: string };
}

export class SnatEntry {
  closing = false;
  constructor(
    readonly owner: SnatOwner,
    readonly proto: number,
    readonly inner: number,
    readonly innerPort: number,
    readonly remote: number,
    readonly remotePort: number,
    readonly natPort: number,
    readonly key: string,
    public lastSeen: number,
  ) {}
}

export class SnatCounters {
  translated = 0;
  reversed = 0;
  opened = 0;
  expired = 0;
  readonly dropped = {
    /** No free uplink port for the protocol. */
    full: 0,
    /** Not TCP, UDP or ICMP echo, or headers too short. */
    unsupported: 0,
    /** IPv6: decided by policy but not translated. */
    ipv6: 0,
    /** From the uplink to no translation (or from the wrong remote end). */
    untracked: 0,
  };
}

/** Internet checksum adjustment (RFC 1624): `sum` with 16-bit word `old` replaced by `now`. */
function adjust(sum: number, old: number, now: number): number {
  let s = (~sum & 0xffff) + (~old & 0xffff) + now;
  s = (s & 0xffff) + (s >>> 16);
  s = (s & 0xffff) + (s >>> 16);
  return ~s & 0xffff;
}

/** Adjusts the 16-bit checksum at buf[at] for a 32-bit value changing from `old` to `now`. */
function adjust32(buf: Buffer, at: number, old: number, now: number): void {
  let c = buf.readUInt16BE(at);
  c = adjust(c, old >>> 16, now >>> 16);
  c = adjust(c, old & 0xffff, now & 0xffff);
  buf.writeUInt16BE(c, at);
}

function adjust16(buf: Buffer, at: number, old: number, now: number): void {
  buf.writeUInt16BE(adjust(buf.readUInt16BE(at), old, now), at);
}

/**
 * Where the L4 checksum of an IPv4 packet lies, or -1 when it has none to fix (UDP with
 * checksum 0).
 */
function checksumAt(buf: Buffer, l4: number, proto: number): number {
  if (proto === IPPROTO_TCP) return l4 + 16;
  if (proto === IPPROTO_UDP) return buf.readUInt16BE(l4 + 6) === 0 ? -1 : l4 + 6;
  return l4 + 2;
}

/** IPv4 source NAT to one uplink address. */
export class SnatTable {
  readonly counters = new SnatCounters();
  private readonly forward = new Map<string, SnatEntry>();
  /** proto << 16 | natPort -> entry. */
  private readonly reverse = new Map<number, SnatEntry>();
  private readonly cursor = new Map<number, number>();
  readonly uplink: number;

  constructor(
    uplinkAddress: Uint8Array,
    readonly portMin = SNAT_PORT_MIN,
    readonly portMax = SNAT_PORT_MAX,
  ) {
    if (uplinkAddress.length !== 4) throw new RangeError('the uplink address must be IPv4');
    this.uplink = Buffer.from(uplinkAddress).readUInt32BE(0);
  }

  get size(): number {
    return this.forward.size;
  }

  /**
   * Translates an IPv4 packet buf[off, off + len) from a workload: source address to the
   * uplink address, source port (ICMP echo id) to the entry's port. Returns the entry, or
   * null when it is dropped (counted).
   */
  outbound(owner: SnatOwner, buf: Buffer, off: number, len: number, now: number): SnatEntry | null {
    const ihl = (buf[off] & 0x0f) * 4;
    const proto = buf[off + 9];
    const l4 = off + ihl;
    const need = proto === IPPROTO_TCP ? 20 : 8;
    if (
      ihl < 20 ||
      l4 + need > off + len ||
      (buf.readUInt16BE(off + 6) & 0x1fff) !== 0 ||
      (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP && proto !== IPPROTO_ICMP) ||
      (proto === IPPROTO_ICMP && buf[l4] !== ICMP_ECHO_REQUEST)
    ) {
      this.counters.dropped.unsupported++;
      return null;
    }
    const inner = buf.readUInt32BE(off + 12);
    const remote = buf.readUInt32BE(off + 16);
    const icmp = proto === IPPROTO_ICMP;
    const innerPort = icmp ? buf.readUInt16BE(l4 + 4) : buf.readUInt16BE(l4);
    const remotePort = icmp ? 0 : buf.readUInt16BE(l4 + 2);
    const key = `${owner.peerId}|${proto}|${inner}|${innerPort}|${remote}|${remotePort}`;
    let e = this.forward.get(key);
    if (e === undefined) {
      const port = this.allocate(proto);
      if (port < 0) {
        this.counters.dropped.full++;
        return null;
      }
      e = new SnatEntry(owner, proto, inner, innerPort, remote, remotePort, port, key, now);
      this.forward.set(key, e);
      this.reverse.set((proto << 16) | port, e);
      this.counters.opened++;
    }
    e.lastSeen = now;
    if (proto === IPPROTO_TCP && (buf[l4 + 13] & (TCP_FIN | TCP_RST)) !== 0) e.closing = true;
    // Source address (IP header and pseudo-header), then the port or echo id.
    buf.writeUInt32BE(this.uplink, off + 12);
    adjust32(buf, off + 10, inner, this.uplink);
    const ck = checksumAt(buf, l4, proto);
    if (icmp) {
      buf.writeUInt16BE(e.natPort, l4 + 4);
      adjust16(buf, ck, innerPort, e.natPort);
    } else {
      buf.writeUInt16BE(e.natPort, l4);
      if (ck >= 0) {
        adjust32(buf, ck, inner, this.uplink);
        adjust16(buf, ck, innerPort, e.natPort);
      }
    }
    this.counters.translated++;
    return e;
  }

  /**
   * Translates an IPv4 packet from the uplink to the uplink address back to the workload of
   * its entry. Returns the entry, or null when no translation matches (counted).
   */
  inbound(buf: Buffer, off: number, len: number, now: number): SnatEntry | null {
    const ihl = (buf[off] & 0x0f) * 4;
    const proto = buf[off + 9];
    const l4 = off + ihl;
    const need = proto === IPPROTO_TCP ? 20 : 8;
    if (
      buf[off] >> 4 !== 4 ||
      ihl < 20 ||
      l4 + need > off + len ||
      (buf.readUInt16BE(off + 6) & 0x1fff) !== 0 ||
      buf.readUInt32BE(off + 16) !== this.uplink ||
      (proto === IPPROTO_ICMP && buf[l4] !== ICMP_ECHO_REPLY)
    ) {
      this.counters.dropped.untracked++;
      return null;
    }
    const icmp = proto === IPPROTO_ICMP;
    const natPort = icmp ? buf.readUInt16BE(l4 + 4) : buf.readUInt16BE(l4 + 2);
    const e = this.reverse.get((proto << 16) | natPort);
    const remote = buf.readUInt32BE(off + 12);
    if (e === undefined || e.remote !== remote || (!icmp && buf.readUInt16BE(l4) !== e.remotePort)) {
      this.counters.dropped.untracked++;
      return null;
    }
    e.lastSeen = now;
    if (proto === IPPROTO_TCP && (buf[l4 + 13] & (TCP_FIN | TCP_RST)) !== 0) e.closing = true;
    buf.writeUInt32BE(e.inner, off + 16);
    adjust32(buf, off + 10, this.uplink, e.inner);
    const ck = checksumAt(buf, l4, proto);
    if (icmp) {
      buf.writeUInt16BE(e.innerPort, l4 + 4);
      adjust16(buf, ck, natPort, e.innerPort);
    } else {
      buf.writeUInt16BE(e.innerPort, l4 + 2);
      if (ck >= 0) {
        adjust32(buf, ck, this.uplink, e.inner);
        adjust16(buf, ck, natPort, e.innerPort);
      }
    }
    this.counters.reversed++;
    return e;
  }

  /** Ends idle translations. */
  expire(now: number): void {
    for (const e of this.forward.values()) {
      const idle =
        e.proto === IPPROTO_TCP
          ? e.closing
            ? SNAT_CLOSING_MS
            : SNAT_TCP_MS
          : e.proto === IPPROTO_UDP
            ? SNAT_UDP_MS
            : SNAT_ICMP_MS;
      if (now - e.lastSeen >= idle) this.remove(e);
    }
  }

  /** Ends every translation of a session (its workload left). */
  removeSession(peerId: number): void {
    for (const e of this.forward.values()) if (e.owner.peerId === peerId) this.remove(e);
  }

  /** Translations as { protocol, workload, remote, port } (diagnostics). */
  list(): { tenant: string; workload: string; protocol: number; natPort: number; remote: string }[] {
    return [...this.forward.values()].map((e) => ({
      tenant: e.owner.tenant,
      workload: e.owner.ref.workload,
      protocol: e.proto,
      natPort: e.natPort,
      remote: `${e.remote >>> 24}.${(e.remote >>> 16) & 255}.${(e.remote >>> 8) & 255}.${e.remote & 255}`,
    }));
  }

  private remove(e: SnatEntry): void {
    this.forward.delete(e.key);
    this.reverse.delete((e.proto << 16) | e.natPort);
    this.counters.expired++;
  }

  /** A free port for `proto`, or -1 when all are taken. */
  private allocate(proto: number): number {
    const span = this.portMax - this.portMin + 1;
    let p = this.cursor.get(proto) ?? 0;
    for (let i = 0; i < span; i++) {
      const port = this.portMin + ((p + i) % span);
      if (!this.reverse.has((proto << 16) | port)) {
        p = (p + i + 1) % span;
        this.cursor.set(proto, p);
        return port;
      }
    }
    return -1;
  }
}
