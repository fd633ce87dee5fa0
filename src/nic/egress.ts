// Egress at the NIC: traffic from a local workload to an address outside the fabric, decided
// by the tenant's egress policy (CIDR and FQDN peers, src/policy) and source-NATed to the NIC's
// uplink address, the one place where tenant plaintext leaves. Three tables, all bounded, all
// pure (time is passed in, no I/O; the data plane moves the packets, README "Egress"):
//
//   NameCache   per tenant: outside address -> DNS names the NIC's DNS server gave for it,
//               each with its TTL (at least MIN_TTL_S, at most MAX_TTL_S), as Cilium's DNS
//               proxy keeps them. Live names decide new connections; expired ones are kept for
//               KEEP_EXPIRED_MS more to name flow records. MAX_CACHED_ADDRESSES addresses per
//               tenant, MAX_NAMES_PER_ADDRESS names each; the oldest address goes first.
//   SnatTable   IPv4 TCP, UDP and ICMP echo: (session, protocol, workload address and port,
//               remote address and port) -> a port of the uplink address (per protocol from
//               SNAT_PORT_MIN to SNAT_PORT_MAX); replies to that port are translated back to
//               the workload. Idle entries expire (TCP SNAT_TCP_MS, or SNAT_CLOSING_MS after a
//               FIN or RST; UDP SNAT_UDP_MS; ICMP SNAT_ICMP_MS).
//   UpstreamDns queries the NIC's DNS server forwards upstream for allowed names: a fresh
//               message id each, the asker remembered until the answer or UPSTREAM_TIMEOUT_MS;
//               answers are decoded with dns-packet and checked (id, question, size, record
//               count); bad ones are counted drops.
//
// Limits: IPv6 egress is decided by policy but not translated (dropped, counted `ipv6`);
// ICMP errors from outside about a translated flow are dropped (counted `untracked`).
import dnsPacket from 'dns-packet';
import { parseIp } from '../net/ip.js';
import { canonicalName } from '../policy/fqdn.js';

// --- Names ------------------------------------------------------------------------------

export const MIN_TTL_S = 5;
export const MAX_TTL_S = 86_400;
export const KEEP_EXPIRED_MS = 10 * 60_000;
export const MAX_CACHED_ADDRESSES = 4096;
export const MAX_NAMES_PER_ADDRESS = 16;

/** The cache key of an outside address given as the engine's words. */
export function addressKey(family: 4 | 6, a0: number, a1: number, a2: number, a3: number): string {
  return family === 4 ? `4:${a0 >>> 0}` : `6:${a0 >>> 0},${a1 >>> 0},${a2 >>> 0},${a3 >>> 0}`;
}

/** The cache key of an address given as 4 or 16 bytes. */
export function addressKeyOf(bytes: Uint8Array): string {
  const b = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (b.length === 4) return addressKey(4, b.readUInt32BE(0), 0, 0, 0);
  return addressKey(6, b.readUInt32BE(0), b.readUInt32BE(4), b.readUInt32BE(8), b.readUInt32BE(12));
}

export class NameCacheCounters {
  /** Address records taken from answers. */
  learned = 0;
  /** Addresses pushed out by the bound. */
  evicted = 0;
}

/** One tenant's outside names. */
export class NameCache {
  readonly counters = new NameCacheCounters();
  /** address key -> name -> expiry (ms). Map order is insertion order: the oldest first. */
  private readonly byAddress = new Map<string, Map<string, number>>();

  constructor(
    readonly maxAddresses = MAX_CACHED_ADDRESSES,
    readonly minTtlS = MIN_TTL_S,
  ) {}

  get size(): number {
    return this.byAddress.size;
  }

  /** Remembers that `name` (canonical) has address `key` for `ttlS` seconds from `now`. */
  learn(name: string, key: string, ttlS: number, now: number): void {
    const ttl = Math.min(MAX_TTL_S, Math.max(this.minTtlS, Number.isFinite(ttlS) ? ttlS : 0));
    let names = this.byAddress.get(key);
    if (names === undefined) {
      if (this.byAddress.size >= this.maxAddresses) {
        const oldest = this.byAddress.keys().next().value as string;
        this.byAddress.delete(oldest);
        this.counters.evicted++;
      }
      names = new Map();
      this.byAddress.set(key, names);
    } else {
      // Fresh again: to the back of the eviction order.
      this.byAddress.delete(key);
      this.byAddress.set(key, names);
    }
    if (!names.has(name) && names.size >= MAX_NAMES_PER_ADDRESS) {
      let first: string | undefined;
      let soonest = Number.POSITIVE_INFINITY;
      for (const [n, t] of names)
        if (t < soonest) {
          soonest = t;
          first = n;
        }
      if (first !== undefined) names.delete(first);
    }
    names.set(name, Math.max(names.get(name) ?? 0, now + ttl * 1000));
    this.counters.learned++;
  }

  /** Names of the address whose answers are within their TTL at `now`; null when none. */
  live(key: string, now: number): string[] | null {
    const names = this.byAddress.get(key);
    if (names === undefined) return null;
    return this.pick(names, now);
  }

  /** Names of the address, also expired ones still kept; null when none. */
  known(key: string, now: number): string[] | null {
    const names = this.byAddress.get(key);
    if (names === undefined) return null;
    return this.pick(names, now - KEEP_EXPIRED_MS);
  }

  /** The names that expire after `after`; null when none. */
  private pick(names: Map<string, number>, after: number): string[] | null {
    const out: string[] = [];
    for (const [n, t] of names) if (t > after) out.push(n);
    return out.length === 0 ? null : out;
  }

  /** Forgets what expired more than KEEP_EXPIRED_MS ago. */
  sweep(now: number): void {
    for (const [k, names] of this.byAddress) {
      for (const [n, t] of names) if (t + KEEP_EXPIRED_MS <= now) names.delete(n);
      if (names.size === 0) this.byAddress.delete(k);
    }
  }
}

// --- Source NAT -------------------------------------------------------------------------

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

// --- Upstream DNS -----------------------------------------------------------------------

export const UPSTREAM_TIMEOUT_MS = 5000;
export const MAX_PENDING_QUERIES = 1024;
/** Largest upstream answer accepted (bytes); larger ones are counted drops. */
export const MAX_UPSTREAM_ANSWER = 4096;
/** Most answer records accepted in one upstream answer. */
export const MAX_UPSTREAM_RECORDS = 64;
/** Largest answer given to a workload over UDP (no EDNS here): larger ones go out truncated. */
const MAX_UDP_ANSWER = 512;

/** A query forwarded upstream: who asked, how to answer them. */
export interface PendingQuery {
  tenant: string;
  peerId: number;
  /** The workload's query packet's IP and UDP header, to build the answer packet from. */
  header: Buffer;
  version: number;
  id: number;
  name: string;
  type: string;
  expires: number;
}

export class UpstreamCounters {
  forwarded = 0;
  answered = 0;
  /** Answers that do not decode, answer no pending query or another question (dropped). */
  malformed = 0;
  /** Answers over MAX_UPSTREAM_ANSWER bytes or MAX_UPSTREAM_RECORDS records (dropped). */
  oversized = 0;
  /** Queries not forwarded: MAX_PENDING_QUERIES are waiting. */
  full = 0;
  /** Queries that got no answer within UPSTREAM_TIMEOUT_MS. */
  timeouts = 0;
}

/** What an accepted upstream answer gives: the asker, the reply for them and the addresses learned. */
export interface UpstreamAnswer {
  query: PendingQuery;
  /** DNS message for the workload (its own message id). */
  reply: Buffer;
  /** A and AAAA records of the asked name (followed through CNAMEs): address bytes and TTL. */
  addresses: { bytes: Uint8Array; ttl: number }[];
}

export class UpstreamDns {
  readonly counters = new UpstreamCounters();
  private readonly pending = new Map<number, PendingQuery>();
  private nextId = (Math.random() * 0x10000) | 0;

  get size(): number {
    return this.pending.size;
  }

  /**
   * Remembers a query and returns the message to send upstream (a fresh id, the same
   * question, recursion desired), or null when too many are waiting (counted).
   */
  forward(q: Omit<PendingQuery, 'expires'>, now: number): Buffer | null {
    if (this.pending.size >= MAX_PENDING_QUERIES) {
      this.expire(now);
      if (this.pending.size >= MAX_PENDING_QUERIES) {
        this.counters.full++;
        return null;
      }
    }
    let id = this.nextId;
    for (let i = 0; i < 0x10000 && this.pending.has(id); i++) id = (id + 1) & 0xffff;
    this.nextId = (id + 1) & 0xffff;
    this.pending.set(id, { ...q, expires: now + UPSTREAM_TIMEOUT_MS });
    this.counters.forwarded++;
    return dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
    });
  }

  /** Checks an upstream answer; null when it is dropped (counted). Never throws. */
  answer(msg: Buffer, now: number): UpstreamAnswer | null {
    if (msg.length > MAX_UPSTREAM_ANSWER) {
      this.counters.oversized++;
      return null;
    }
    let a: dnsPacket.DecodedPacket;
    try {
      a = dnsPacket.decode(msg);
    } catch {
      this.counters.malformed++;
      return null;
    }
    const q = typeof a.id === 'number' ? this.pending.get(a.id) : undefined;
    const question = a.questions?.[0];
    if (
      a.type !== 'response' ||
      q === undefined ||
      q.expires <= now ||
      a.questions?.length !== 1 ||
      question === undefined ||
      canonicalName(question.name) !== q.name ||
      question.type !== q.type
    ) {
      this.counters.malformed++;
      return null;
    }
    const records = [...(a.answers ?? []), ...(a.authorities ?? []), ...(a.additionals ?? [])];
    if (records.length > MAX_UPSTREAM_RECORDS) {
      this.pending.delete(a.id as number);
      this.counters.oversized++;
      return null;
    }
    this.pending.delete(a.id as number);
    // The asked name and the CNAME chain from it (bounded by the record count).
    const names = new Set([q.name]);
    const answers: dnsPacket.Answer[] = [];
    for (let round = 0; round < 8; round++) {
      let grew = false;
      for (const r of a.answers ?? []) {
        const owner = canonicalName(r.name);
        if (r.type !== 'CNAME' || owner === null || !names.has(owner)) continue;
        const target = canonicalName(String(r.data));
        if (target !== null && !names.has(target)) {
          names.add(target);
          grew = true;
        }
      }
      if (!grew) break;
    }
    const addresses: { bytes: Uint8Array; ttl: number }[] = [];
    for (const r of a.answers ?? []) {
      const owner = canonicalName(r.name);
      if (owner === null || !names.has(owner)) continue;
      if (r.type === 'A' || r.type === 'AAAA' || r.type === 'CNAME') answers.push(r);
      if (r.type !== 'A' && r.type !== 'AAAA') continue;
      const bytes = ipBytes(String(r.data), r.type === 'A' ? 4 : 16);
      if (bytes === null) {
        this.counters.malformed++;
        return null;
      }
      addresses.push({ bytes, ttl: typeof r.ttl === 'number' ? r.ttl : 0 });
    }
    // The upstream's flags and RCODE, without its TC bit (the size here decides that).
    const flags = ((a.flags ?? 0) & ~dnsPacket.TRUNCATED_RESPONSE) | dnsPacket.RECURSION_AVAILABLE;
    let reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags,
      questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
      answers,
    });
    if (reply.length > MAX_UDP_ANSWER)
      reply = dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: flags | dnsPacket.TRUNCATED_RESPONSE,
        questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
        answers: [],
      });
    this.counters.answered++;
    return { query: q, reply, addresses };
  }

  /** Forgets queries whose answer did not come in time. */
  expire(now: number): void {
    for (const [id, q] of this.pending)
      if (q.expires <= now) {
        this.pending.delete(id);
        this.counters.timeouts++;
      }
  }
}

/** An IPv4 or IPv6 address as bytes, or null when it is not one of that length. */
function ipBytes(text: string, size: 4 | 16): Uint8Array | null {
  const b = parseIp(text);
  return b === null || b.length !== size ? null : b;
}

// --- The NIC's egress state -------------------------------------------------------------

/** Overlay ranges that never leave as egress (tenant pools): 100.64.0.0/10 and fd64::/16. */
export function isOverlayAddress(buf: Buffer, at: number, version: number): boolean {
  if (version === 4) return (buf[at] === 100 && (buf[at + 1] & 0xc0) === 64) || buf[at] === 0;
  return buf[at] === 0xfd && buf[at + 1] === 0x64;
}

export class EgressCounters {
  /** Packets from workloads sent to the uplink (translated). */
  toUplink = 0;
  /** Packets from the uplink delivered to workloads (translated back). */
  fromUplink = 0;
  /** Packets to outside addresses the egress policy denied. */
  denied = 0;
  /** DNS queries for outside names forwarded upstream / refused by the egress policy. */
  dnsForwarded = 0;
  dnsRefused = 0;
}

export interface EgressConfig {
  /** The address flows are source-NATed to (IPv4). */
  uplinkAddress: Uint8Array;
  /** Smallest TTL kept for an answer (s): default MIN_TTL_S. */
  minTtlS?: number;
  /** Bound on remembered outside addresses per tenant: default MAX_CACHED_ADDRESSES. */
  maxCachedAddresses?: number;
}

/** Names per tenant, the NAT and the upstream queries of one NIC. */
export class Egress {
  readonly counters = new EgressCounters();
  readonly snat: SnatTable;
  readonly upstream = new UpstreamDns();
  private readonly caches = new Map<string, NameCache>();

  constructor(readonly config: EgressConfig) {
    this.snat = new SnatTable(config.uplinkAddress);
  }

  /** The name cache of a tenant (made on first use). */
  cacheOf(tenant: string): NameCache {
    let c = this.caches.get(tenant);
    if (c === undefined) {
      c = new NameCache(this.config.maxCachedAddresses, this.config.minTtlS);
      this.caches.set(tenant, c);
    }
    return c;
  }

  /** Live names of an outside address for a tenant (the policy engine's `live`). */
  readonly live = (tenant: string, family: 4 | 6, a0: number, a1: number, a2: number, a3: number) =>
    this.caches.get(tenant)?.live(addressKey(family, a0, a1, a2, a3), Date.now()) ?? null;

  /** Names still remembered (the policy engine's `known`). */
  readonly known = (tenant: string, family: 4 | 6, a0: number, a1: number, a2: number, a3: number) =>
    this.caches.get(tenant)?.known(addressKey(family, a0, a1, a2, a3), Date.now()) ?? null;

  /** Outside addresses remembered for a tenant (diagnostics). */
  cachedAddresses(tenant: string): number {
    return this.caches.get(tenant)?.size ?? 0;
  }

  forgetTenant(tenant: string): void {
    this.caches.delete(tenant);
  }

  tick(now: number): void {
    this.snat.expire(now);
    this.upstream.expire(now);
    for (const c of this.caches.values()) c.sweep(now);
  }
}
