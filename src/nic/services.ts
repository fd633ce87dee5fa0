// Services at the NIC: a virtual address per service, load-balanced per connection across the
// service's endpoints (the tenant's workloads its selector matches), on the NIC of the client.
//
// A packet from a local workload to a service address and port is translated (destination
// NAT): its destination address becomes an endpoint's, chosen for a new connection by the
// service's Maglev table (maglev.ts) from a hash of the client's address, port and protocol,
// and pinned from then on by this table of service connections, so a connection stays on its
// endpoint while endpoints come and go; the firewall then sees the endpoint as the destination
// (policy names workloads, and its conntrack tracks the translated connection). Replies from
// the endpoint to the client get the service address back as their source (reverse NAT) before
// they reach the client's session. The endpoint's NIC sees an ordinary connection.
//
// Limits (written down on purpose): TCP and UDP only (ICMP to a service address is dropped);
// the service port is the endpoint port (no port mapping); no extension headers on IPv6 and no
// fragments to a service address (both dropped and counted). One table per tenant, bounded by
// MAX_SERVICE_CONNECTIONS: expired entries are evicted when full, else a new connection is
// dropped and counted.
//
// Hot path: a tenant without services has no TenantServices (the forwarder checks one null).
// With the policy engine in the path (as the NIC agent runs it), this file translates only a
// connection's first packet (and the first after its conntrack entry ended or its endpoint
// left): the forwarder then binds the translation to the connection's conntrack entry
// (src/policy/nat.ts: the endpoint, its index here and the precomputed checksum deltas), and
// every later packet and every reply is translated by the engine from that entry, in the one
// parse and table lookup it makes anyway, for IPv4 and IPv6 alike. The pins here stay the
// record of which endpoint a client's connection went to (new packets of a connection whose
// entry ended go back to it while the pin lasts: pins are not refreshed by packets translated
// from the entry, so a pin may expire before its entry does; the entry is what keeps the
// connection on its endpoint). Without an engine (and for replies of connections the engine
// could not bind, TenantServices.unbound), every packet comes here: IPv4 takes a path of byte
// reads and one lookup in a typed-array table keyed by client address and port (pin4.ts) per
// packet in each direction, with incremental checksum updates (RFC 1624) and no allocation;
// IPv6 a Map keyed by text (slower, same behaviour).
import type { HostAddress } from './addresses.js';
import { buildMaglevTable, MAGLEV_TABLE_SIZE, mix32 } from './maglev.js';
import { P_BACKEND, P_EP, P_EXPIRES, P_VIP, P_VPORT, Pin4Table, REBASE_AFTER_MS } from './pin4.js';

export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
/** Service connections per tenant table. */
export const MAX_SERVICE_CONNECTIONS = 65_536;
/** Idle time after which a pinned connection is forgotten, per protocol, and after FIN/RST. */
export const SERVICE_TCP_IDLE_MS = 600_000;
export const SERVICE_UDP_IDLE_MS = 60_000;
export const SERVICE_CLOSING_MS = 10_000;
/** How often the whole table is swept for expired entries (tick). */
const SWEEP_MS = 5_000;

const TCP_FIN = 0x01;
const TCP_SYN = 0x02;
const TCP_RST = 0x04;
const TCP_ACK = 0x10;
const IPV4_MF_OFFSET = 0x3fff;

export type ServiceProtocol = 'tcp' | 'udp';

export interface ServicePort {
  port: number;
  protocol: ServiceProtocol;
}

export interface ServiceEndpoint {
  workload: string;
  address: HostAddress;
}

export interface ServiceSpec {
  name: string;
  address: HostAddress;
  ports: readonly ServicePort[];
  endpoints: readonly ServiceEndpoint[];
}

export class ServiceCounters {
  /** Packets translated to an endpoint (client to service). */
  translated = 0;
  /** Replies given the service address back (endpoint to client). */
  reversed = 0;
  /** New connections picked by the Maglev table. */
  connections = 0;
  readonly dropped = {
    /** The service has no endpoint now. */
    noEndpoint: 0,
    /** Protocol or port the service does not serve, ICMP, IPv6 extension headers, fragments. */
    notServed: 0,
    /** The connection table was full of live connections. */
    tableFull: 0,
  };
}

/** One service as the data path uses it. */
export class ServiceEntry {
  /** proto << 16 | port of every port served. */
  readonly served: Set<number>;
  readonly table: Int32Array;
  readonly endpoints: readonly ServiceEndpoint[];
  /** Endpoint addresses as text, for dropping pinned connections to endpoints that left. */
  readonly endpointSet: Set<string>;
  /** IPv4: the service address, the ports served (proto << 16 | port), the endpoints' addresses. */
  readonly vip4: number;
  readonly ports4: Int32Array;
  readonly endpoints4: Int32Array;
  readonly endpointSet4: Set<number>;
  /** The service address's NAT id in the policy engine (0: none; the forwarder sets it). */
  natId = 0;
  constructor(readonly spec: ServiceSpec) {
    this.served = new Set(
      spec.ports.map((p) => ((p.protocol === 'tcp' ? IPPROTO_TCP : IPPROTO_UDP) << 16) | p.port),
    );
    this.ports4 = Int32Array.from(this.served);
    this.vip4 = spec.address.family === 4 ? (addressKey(spec.address.bytes) as number) : 0;
    // Sorted by name so that the table does not depend on the order endpoints were listed in.
    this.endpoints = [...spec.endpoints].sort((a, b) => (a.workload < b.workload ? -1 : 1));
    this.endpointSet = new Set(this.endpoints.map((e) => e.address.text));
    this.table = buildMaglevTable(this.endpoints.map((e) => e.workload));
    this.endpoints4 = Int32Array.from(this.endpoints, (e) =>
      e.address.family === 4 ? (addressKey(e.address.bytes) as number) : 0,
    );
    this.endpointSet4 = new Set([...this.endpoints4].filter((a) => a !== 0));
  }

  /** The index of the endpoint with address words w0..w3 (conntrack.ts layout) of `family`, or -1. */
  endpointIndex(family: number, w0: number, w1: number, w2: number, w3: number): number {
    return endpointIndexOf(this.endpoints, family, w0, w1, w2, w3);
  }
}

/** ServiceEntry.endpointIndex(): the index of the endpoint whose address is the words w0..w3. */
function endpointIndexOf(
  endpoints: readonly ServiceEndpoint[],
  family: number,
  w0: number,
  w1: number,
  w2: number,
  w3: number,
): number {
  const words = [w0, w1, w2, w3];
  return endpoints.findIndex((e) => {
    const b = e.address.bytes;
    if (e.address.family !== family) return false;
    for (let i = 0; i < b.length; i += 4)
      if (((b[i] << 24) | (b[i + 1] << 16) | (b[i + 2] << 8) | b[i + 3]) >>> 0 !== words[i / 4] >>> 0)
        return false;
    return true;
  });
}

/** A pinned connection: client (key) to service address and port, sent to an endpoint. */
class ServiceConn {
  expires = 0;
  closing = false;
  /** The endpoint's index in service.endpoints. */
  index = 0;
  constructor(
    /** Replaced by the new entry of the same service when services are set again. */
    public service: ServiceEntry,
    readonly proto: number,
    readonly vport: number,
    /** The endpoint's address bytes (4 or 16) and text. */
    readonly backend: Uint8Array,
    readonly backendText: string,
    /** IPv4 endpoint as a number (0 for IPv6). */
    readonly backend4: number,
  ) {}
}

/** A service entry's name and address family (a dual-stack service has one entry of each). */
export function serviceKey(e: ServiceEntry): string {
  return `${e.spec.name}/${e.spec.address.family}`;
}

function addressKey(a: Uint8Array): number | string {
  return a.length === 4 ? (a[0] << 24) | (a[1] << 16) | (a[2] << 8) | a[3] : Buffer.from(a).toString('hex');
}

function clientKey(buf: Buffer, addrAt: number, version: number, port: number): number | string {
  if (version === 4) return buf.readUInt32BE(addrAt) * 65536 + port;
  return `${buf.toString('hex', addrAt, addrAt + 16)}:${port}`;
}

/**
 * Rewrites the IPv4 address at buf[at, at + 4) to `to`, updating the header checksum at ipSumAt
 * and the TCP/UDP checksum at l4SumAt incrementally (RFC 1624); an IPv4 UDP checksum of 0
 * (none) stays 0.
 */
function rewrite4(buf: Buffer, at: number, to: number, ipSumAt: number, l4SumAt: number, udp: boolean): void {
  const n0 = to >>> 16;
  const n1 = to & 0xffff;
  const delta =
    (~((buf[at] << 8) | buf[at + 1]) & 0xffff) + (~((buf[at + 2] << 8) | buf[at + 3]) & 0xffff) + n0 + n1;
  buf[at] = n0 >>> 8;
  buf[at + 1] = n0 & 0xff;
  buf[at + 2] = n1 >>> 8;
  buf[at + 3] = n1 & 0xff;
  let sum = (~((buf[ipSumAt] << 8) | buf[ipSumAt + 1]) & 0xffff) + delta;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = ~((sum & 0xffff) + (sum >>> 16)) & 0xffff;
  buf[ipSumAt] = sum >>> 8;
  buf[ipSumAt + 1] = sum & 0xff;
  const old = (buf[l4SumAt] << 8) | buf[l4SumAt + 1];
  if (udp && old === 0) return;
  sum = (~old & 0xffff) + delta;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = ~((sum & 0xffff) + (sum >>> 16)) & 0xffff;
  if (udp && sum === 0) sum = 0xffff;
  buf[l4SumAt] = sum >>> 8;
  buf[l4SumAt + 1] = sum & 0xff;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * Rewrites the address at buf[addrAt, addrAt + n) to `to`, updating the IPv4 header checksum
 * (when `ipSumAt` >= 0) and the TCP or UDP checksum at `l4SumAt` incrementally (RFC 1624).
 */
function rewriteAddress(
  buf: Buffer,
  addrAt: number,
  to: Uint8Array,
  ipSumAt: number,
  l4SumAt: number,
  udp4: boolean,
): void {
  let delta = 0;
  for (let i = 0; i < to.length; i += 2) {
    delta += (~((buf[addrAt + i] << 8) | buf[addrAt + i + 1]) & 0xffff) + ((to[i] << 8) | to[i + 1]);
  }
  for (let i = 0; i < to.length; i++) buf[addrAt + i] = to[i];
  if (ipSumAt >= 0) {
    const s = fold((~buf.readUInt16BE(ipSumAt) & 0xffff) + delta);
    buf.writeUInt16BE(~s & 0xffff, ipSumAt);
  }
  const old = buf.readUInt16BE(l4SumAt);
  // IPv4 UDP without a checksum stays without one.
  if (udp4 && old === 0) return;
  const s = fold((~old & 0xffff) + delta);
  let sum = ~s & 0xffff;
  if (udp4 && sum === 0) sum = 0xffff;
  buf.writeUInt16BE(sum, l4SumAt);
}

/** The L4 header offset of a TCP/UDP packet the service path handles, or -1. */
function l4Offset(buf: Buffer, off: number, len: number, version: number): number {
  let l4: number;
  let proto: number;
  if (version === 4) {
    if ((buf.readUInt16BE(off + 6) & IPV4_MF_OFFSET) !== 0) return -1;
    l4 = off + (buf[off] & 0x0f) * 4;
    proto = buf[off + 9];
  } else {
    l4 = off + 40;
    proto = buf[off + 6];
  }
  if (proto === IPPROTO_TCP) return l4 + 20 <= off + len ? l4 : -1;
  if (proto === IPPROTO_UDP) return l4 + 8 <= off + len ? l4 : -1;
  return -1;
}

/** The services of one tenant on this NIC and the connections pinned through them. */
export class TenantServices {
  readonly counters = new ServiceCounters();
  private byAddress = new Map<number | string, ServiceEntry>();
  /** IPv4 connections (the fast path); IPv6 ones in `conns`. */
  private readonly pins = new Pin4Table(MAX_SERVICE_CONNECTIONS);
  private readonly conns = new Map<number | string, ServiceConn>();
  private lastSweep = 0;
  /** The last IPv4 connection translated (client, key, entry offset, table moves then). */
  private lastClient = -1;
  private lastKey = -1;
  private lastAt = -1;
  private lastMoves = -1;
  /**
   * Connections translated here that the policy engine could not bind to their translation
   * (its table's slots too full): their replies are translated back here (reverse()).
   */
  unbound = 0;

  /** Replaces the services; pinned connections to services or endpoints that left are dropped. */
  set(specs: readonly ServiceSpec[]): void {
    const next = new Map<number | string, ServiceEntry>();
    for (const s of specs) next.set(addressKey(s.address.bytes), new ServiceEntry(s));
    this.byAddress = next;
    // A dual-stack service is two entries of one name: one per address family.
    const byName = new Map([...next.values()].map((e) => [serviceKey(e), e] as const));
    for (const [k, c] of this.conns) {
      const now = byName.get(serviceKey(c.service));
      const i = now === undefined ? -1 : now.endpoints.findIndex((e) => e.address.text === c.backendText);
      if (now === undefined || i < 0) this.conns.delete(k);
      else {
        c.service = now;
        c.index = i;
      }
    }
    const pins = this.pins;
    pins.removeWhere((at) => {
      const e = next.get(pins.data[at + P_VIP]);
      const i = e === undefined ? -1 : e.endpoints4.indexOf(pins.data[at + P_BACKEND]);
      if (i >= 0) pins.data[at + P_EP] = i;
      return i < 0;
    });
  }

  /** The services (the entries the data path uses). */
  entries(): IterableIterator<ServiceEntry> {
    return this.byAddress.values();
  }

  /** The service at an address, if any. */
  serviceAt(address: Uint8Array): ServiceEntry | undefined {
    return this.byAddress.get(addressKey(address));
  }

  get size(): number {
    return this.pins.size + this.conns.size;
  }

  /**
   * A packet from a local client to `svc`'s address: rewrites its destination to the
   * connection's endpoint (picking and pinning one for a new connection) and returns the
   * endpoint's index in svc.endpoints; -1: dropped (counted): not served, no endpoint, table full.
   */
  translate(buf: Buffer, off: number, len: number, version: number, svc: ServiceEntry, now: number): number {
    if (version === 4) return this.translate4(buf, off, len, svc, now);
    const l4 = l4Offset(buf, off, len, version);
    if (l4 < 0) {
      this.counters.dropped.notServed++;
      return -1;
    }
    const proto = buf[off + (version === 4 ? 9 : 6)];
    const sport = buf.readUInt16BE(l4);
    const dport = buf.readUInt16BE(l4 + 2);
    if (!svc.served.has((proto << 16) | dport)) {
      this.counters.dropped.notServed++;
      return -1;
    }
    const srcAt = off + (version === 4 ? 12 : 8);
    const key = clientKey(buf, srcAt, version, sport);
    let c = this.conns.get(key);
    const flags = proto === IPPROTO_TCP ? buf[l4 + 13] : 0;
    if (
      c !== undefined &&
      (c.service !== svc ||
        c.proto !== proto ||
        c.vport !== dport ||
        c.expires <= now ||
        (c.closing && (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN))
    ) {
      this.conns.delete(key);
      c = undefined;
    }
    if (c === undefined) {
      const n = svc.endpoints.length;
      if (n === 0) {
        this.counters.dropped.noEndpoint++;
        return -1;
      }
      if (this.conns.size >= MAX_SERVICE_CONNECTIONS) {
        this.sweep(now);
        if (this.conns.size >= MAX_SERVICE_CONNECTIONS) {
          this.counters.dropped.tableFull++;
          return -1;
        }
      }
      const ep =
        svc.endpoints[svc.table[this.flowHash(buf, srcAt, version, sport, proto) % MAGLEV_TABLE_SIZE]];
      const b = ep.address.bytes;
      if (b.length !== (version === 4 ? 4 : 16)) {
        this.counters.dropped.noEndpoint++;
        return -1;
      }
      const index = svc.endpoints.indexOf(ep);
      c = new ServiceConn(
        svc,
        proto,
        dport,
        b,
        ep.address.text,
        b.length === 4 ? (addressKey(b) as number) : 0,
      );
      c.index = index;
      this.conns.set(key, c);
      this.counters.connections++;
    }
    this.touch(c, proto, flags, now);
    rewriteAddress(
      buf,
      off + (version === 4 ? 16 : 24),
      c.backend,
      version === 4 ? off + 10 : -1,
      l4 + (proto === IPPROTO_TCP ? 16 : 6),
      version === 4 && proto === IPPROTO_UDP,
    );
    this.counters.translated++;
    return c.index;
  }

  /**
   * A packet to a local workload: when it is the reply of a pinned connection (from the
   * endpoint to the client), its source becomes the service address again. Never drops.
   */
  reverse(buf: Buffer, off: number, len: number, version: number, now: number): void {
    if (version === 4) {
      if (this.pins.size > 0) this.reverse4(buf, off, len, now);
      return;
    }
    if (this.conns.size === 0) return;
    const proto = buf[off + (version === 4 ? 9 : 6)];
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return;
    const l4 = l4Offset(buf, off, len, version);
    if (l4 < 0) return;
    const c = this.conns.get(
      clientKey(buf, off + (version === 4 ? 16 : 24), version, buf.readUInt16BE(l4 + 2)),
    );
    if (c === undefined || c.proto !== proto || buf.readUInt16BE(l4) !== c.vport) return;
    const srcAt = off + (version === 4 ? 12 : 8);
    if (!sameAt(buf, srcAt, c.backend)) return;
    this.touch(c, proto, proto === IPPROTO_TCP ? buf[l4 + 13] : 0, now);
    rewriteAddress(
      buf,
      srcAt,
      c.service.spec.address.bytes,
      version === 4 ? off + 10 : -1,
      l4 + (proto === IPPROTO_TCP ? 16 : 6),
      version === 4 && proto === IPPROTO_UDP,
    );
    this.counters.reversed++;
  }

  /**
   * translate() for IPv4: byte reads only, the typed-array table, no allocation. A packet of a
   * pinned connection skips the port check (made when it was pinned).
   */
  private translate4(buf: Buffer, off: number, len: number, svc: ServiceEntry, now: number): number {
    const proto = buf[off + 9];
    const l4 = off + ((buf[off] & 0x0f) << 2);
    if (
      ((buf[off + 6] & 0x3f) | buf[off + 7]) !== 0 ||
      (proto === IPPROTO_TCP ? l4 + 20 : proto === IPPROTO_UDP ? l4 + 8 : 0x7fffffff) > off + len
    ) {
      this.counters.dropped.notServed++;
      return -1;
    }
    const sport = (buf[l4] << 8) | buf[l4 + 1];
    const dport = (buf[l4 + 2] << 8) | buf[l4 + 3];
    const flags = proto === IPPROTO_TCP ? buf[l4 + 13] : 0;
    const client = (buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15];
    const key = (proto << 16) | sport;
    const t = this.pins;
    let rel = now - t.base;
    if (rel >= REBASE_AFTER_MS || rel < 0) {
      t.rebase(now);
      rel = 0;
    }
    // Packets of one connection come in trains: the last hit is tried before the table.
    let at =
      this.lastClient === client && this.lastKey === key && this.lastMoves === t.moves
        ? this.lastAt
        : t.find(client, key);
    let d = t.data;
    if (
      at >= 0 &&
      (d[at + P_VIP] !== svc.vip4 ||
        (d[at + P_VPORT] & 0xffff) !== dport ||
        d[at + P_EXPIRES] <= rel ||
        (d[at + P_VPORT] > 0xffff && (flags & (TCP_SYN | TCP_ACK)) === TCP_SYN))
    ) {
      t.remove(at);
      at = -1;
    }
    if (at < 0) {
      at = this.pin4(client, key, proto, dport, svc, now);
      if (at < 0) return -1;
      d = t.data;
    }
    this.lastClient = client;
    this.lastKey = key;
    this.lastAt = at;
    this.lastMoves = t.moves;
    if ((flags & (TCP_FIN | TCP_RST)) !== 0) d[at + P_VPORT] |= 0x10000;
    const expires =
      rel +
      (d[at + P_VPORT] > 0xffff
        ? SERVICE_CLOSING_MS
        : proto === IPPROTO_TCP
          ? SERVICE_TCP_IDLE_MS
          : SERVICE_UDP_IDLE_MS);
    if (d[at + P_EXPIRES] !== expires) d[at + P_EXPIRES] = expires;
    rewrite4(
      buf,
      off + 16,
      d[at + P_BACKEND],
      off + 10,
      l4 + (proto === IPPROTO_TCP ? 16 : 6),
      proto === IPPROTO_UDP,
    );
    const e = d;
    this.counters.translated++;
    return e[at + P_EP];
  }

  /** A new IPv4 connection: the port check, the Maglev pick, a new entry. Its offset, or -1 (counted). */
  private pin4(
    client: number,
    key: number,
    proto: number,
    dport: number,
    svc: ServiceEntry,
    now: number,
  ): number {
    const want = (proto << 16) | dport;
    const ports = svc.ports4;
    let served = false;
    for (let i = 0; i < ports.length; i++) if (ports[i] === want) served = true;
    if (!served) {
      this.counters.dropped.notServed++;
      return -1;
    }
    const n = svc.endpoints4.length;
    const index = n === 0 ? -1 : svc.table[this.flowHash4(client, key & 0xffff, proto) % MAGLEV_TABLE_SIZE];
    const backend = index < 0 ? 0 : svc.endpoints4[index];
    if (backend === 0) {
      this.counters.dropped.noEndpoint++;
      return -1;
    }
    const t = this.pins;
    if (t.size >= MAX_SERVICE_CONNECTIONS) this.sweep(now);
    const at = t.insert(client, key);
    if (at < 0) {
      this.counters.dropped.tableFull++;
      return -1;
    }
    t.data[at + P_BACKEND] = backend;
    t.data[at + P_VIP] = svc.vip4;
    t.data[at + P_VPORT] = dport;
    t.data[at + P_EP] = index;
    this.counters.connections++;
    return at;
  }

  /** reverse() for IPv4. */
  private reverse4(buf: Buffer, off: number, len: number, now: number): void {
    const proto = buf[off + 9];
    if (proto !== IPPROTO_TCP && proto !== IPPROTO_UDP) return;
    const l4 = off + ((buf[off] & 0x0f) << 2);
    if (((buf[off + 6] & 0x3f) | buf[off + 7]) !== 0 || l4 + (proto === IPPROTO_TCP ? 20 : 8) > off + len)
      return;
    const t = this.pins;
    const client = (buf[off + 16] << 24) | (buf[off + 17] << 16) | (buf[off + 18] << 8) | buf[off + 19];
    const at = t.find(client, (proto << 16) | (buf[l4 + 2] << 8) | buf[l4 + 3]);
    if (at < 0) return;
    const d = t.data;
    if ((d[at + P_VPORT] & 0xffff) !== ((buf[l4] << 8) | buf[l4 + 1])) return;
    const src = (buf[off + 12] << 24) | (buf[off + 13] << 16) | (buf[off + 14] << 8) | buf[off + 15];
    if (src !== d[at + P_BACKEND]) return;
    if (proto === IPPROTO_TCP && (buf[l4 + 13] & (TCP_FIN | TCP_RST)) !== 0) d[at + P_VPORT] |= 0x10000;
    t.expireAt(
      at,
      now,
      d[at + P_VPORT] > 0xffff
        ? SERVICE_CLOSING_MS
        : proto === IPPROTO_TCP
          ? SERVICE_TCP_IDLE_MS
          : SERVICE_UDP_IDLE_MS,
    );
    rewrite4(
      buf,
      off + 12,
      d[at + P_VIP],
      off + 10,
      l4 + (proto === IPPROTO_TCP ? 16 : 6),
      proto === IPPROTO_UDP,
    );
    this.counters.reversed++;
  }

  private flowHash4(client: number, sport: number, proto: number): number {
    return mix32(mix32(sport ^ (proto << 16)) ^ client);
  }

  /** Drops expired connections (at most every SWEEP_MS). */
  tick(now: number): void {
    if (now - this.lastSweep >= SWEEP_MS) this.sweep(now);
  }

  /** Pinned connections per endpoint of each service (diagnostics). */
  pinned(): Map<string, Map<string, number>> {
    const out = new Map<string, Map<string, number>>();
    const pins = this.pins;
    for (const at of pins.entries()) {
      const e = this.byAddress.get(pins.data[at + P_VIP]);
      if (e === undefined) continue;
      const i = e.endpoints4.indexOf(pins.data[at + P_BACKEND]);
      const ep = i < 0 ? String(pins.data[at + P_BACKEND]) : e.endpoints[i].workload;
      const m = out.get(e.spec.name) ?? new Map<string, number>();
      m.set(ep, (m.get(ep) ?? 0) + 1);
      out.set(e.spec.name, m);
    }
    for (const c of this.conns.values()) {
      const name = c.service.spec.name;
      const ep = c.service.endpoints.find((e) => e.address.text === c.backendText)?.workload ?? c.backendText;
      const m = out.get(name) ?? new Map<string, number>();
      m.set(ep, (m.get(ep) ?? 0) + 1);
      out.set(name, m);
    }
    return out;
  }

  private touch(c: ServiceConn, proto: number, flags: number, now: number): void {
    if ((flags & (TCP_FIN | TCP_RST)) !== 0) c.closing = true;
    c.expires =
      now +
      (c.closing ? SERVICE_CLOSING_MS : proto === IPPROTO_TCP ? SERVICE_TCP_IDLE_MS : SERVICE_UDP_IDLE_MS);
  }

  private sweep(now: number): void {
    this.lastSweep = now;
    for (const [k, c] of this.conns) if (c.expires <= now) this.conns.delete(k);
    const pins = this.pins;
    pins.removeWhere((at) => pins.expired(at, now));
  }

  private flowHash(buf: Buffer, srcAt: number, version: number, sport: number, proto: number): number {
    let h = mix32(sport ^ (proto << 16));
    const words = version === 4 ? 1 : 4;
    for (let i = 0; i < words; i++) h = mix32(h ^ buf.readUInt32BE(srcAt + 4 * i));
    return h;
  }
}

function sameAt(buf: Buffer, at: number, b: Uint8Array): boolean {
  for (let i = 0; i < b.length; i++) if (buf[at + i] !== b[i]) return false;
  return true;
}
