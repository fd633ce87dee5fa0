// Forwarding decisions of the NIC (DESIGN.md section 4), a pure function of batches: it takes
// the decrypted packets of one engine.inbound() call, each tagged with the session (peer) it
// came from, and builds one batch for engine.outboundToPeers(), each packet tagged with the
// session it must leave on. No I/O and no crypto here.
//
// The tenant and the source workload come from the session, never from addresses alone:
//   - a workload's vSwitch session      -> that workload, hence its tenant;
//   - a remote NIC's off-host session   -> that tenant (the session belongs to the tenant's
//     off-host identity); the source workload is the remote workload the inner source address
//     names in this tenant, and it must sit behind that same remote NIC.
// The destination is looked up only in that tenant's table, so tenants may share addresses:
//   - a local workload  -> its on-host session (same host, hairpinned through the NIC);
//   - a remote workload -> the off-host session to the NIC it sits behind (only for packets
//     from local workloads: a NIC never relays between two remote NICs);
//   - another tenant's workload imported into this tenant's table by a cross-tenant grant
//     (setImports; see api.ts for how the NIC learns them) -> its on-host session, or the
//     off-host session that carries the grant to its NIC;
//   - anything else (another tenant's address, an unknown one) -> dropped and counted.
// Every routed packet then passes the firewall: the policy engine (src/policy, stateful,
// default deny; the NIC agent always attaches one) or, without one, the `policy` hook. Nothing
// is ever sent in plaintext: the NIC has no TUN device, every output goes through the engine.
//
// Path MTU (mtu.ts, pmtu.ts; README "MTUs of the legs"): with leg limits set, TCP SYNs get
// their MSS clamped to the tenant MTU, and a packet from a local workload larger than it that
// must not be fragmented is dropped and answered with ICMP on the workload's own session
// (rate-limited per session). Later IPv4/IPv6 fragments follow a first fragment the firewall
// passed (the firewall sees only first fragments' L4 headers).
//
// Hot path: one Map lookup per packet for the source (cached across runs of one session), one
// trie lookup for the destination, one engine.check() (its own cost: src/policy/engine.ts), and
// no copy: in place (the NIC data plane) the packet stays in its receive slot for the engine to
// re-encrypt. No allocation except for fragments (rare). The clock is read once per batch.

import type { PolicyEngine } from '../policy/engine.js';
import { AllowedIps } from '../protocol/allowedips.js';
import type { PacketBatch, TunBatch } from '../protocol/batch.js';
import { MESSAGE_TRANSPORT_HEADER_SIZE } from '../protocol/constants.js';
import { TgError } from '../util/errors.js';
import { type HostAddress, hostPrefix } from './addresses.js';
import { dnsQueryPayload, type NameBook, TenantDns, writeDnsAnswer } from './dns.js';
import { IPV6_MIN_MTU } from './mtu.js';
import {
  clampMss,
  dontFragment4,
  IPPROTO_TCP,
  MAX_TOO_BIG_ANSWER,
  writeFragNeeded,
  writePacketTooBig,
} from './pmtu.js';
import { IPPROTO_UDP, type ServiceEntry, type ServiceSpec, serviceKey, TenantServices } from './services.js';

/** A workload as the policy hook sees it. */
export interface WorkloadRef {
  readonly tenant: string;
  readonly workload: string;
  /** True for a workload on this NIC's host, false for one behind a remote NIC. */
  readonly local: boolean;
}

/** A packet during the policy call: buf[offset, offset + length). Valid during the call only. */
export interface PacketView {
  buf: Buffer;
  offset: number;
  length: number;
}

/**
 * Decides whether a packet from src to dst (same tenant) may pass; true allows. Called once per
 * packet with a reused PacketView; it must not keep the view or throw (a throw denies).
 */
export type PolicyHook = (tenant: string, src: WorkloadRef, dst: WorkloadRef, packet: PacketView) => boolean;

/** The hook's default, for a forwarder without a policy engine (unit tests): everything routed passes. */
export const allowWithinTenant: PolicyHook = () => true;

/** A workload of another tenant made reachable from a tenant's workloads by a grant. */
export interface ImportedWorkload {
  tenant: string;
  workload: string;
  address: HostAddress;
  /** The workload's IPv6 address beside an IPv4 `address` (dual stack). */
  address6?: HostAddress;
  /** On this NIC's host (then peerId is its vSwitch session). */
  local: boolean;
  /** Engine peer id: the workload's vSwitch, or the off-host session that carries the grant. */
  peerId: number;
}

export class ForwardCounters {
  /** Local workload to local workload (hairpin on-host). */
  local = 0;
  /** Local workload to a remote workload (off-host leg out). */
  egress = 0;
  /** Remote workload to a local workload (off-host leg in). */
  ingress = 0;
  readonly dropped = {
    /** The session belongs to no workload or tenant known here (or the remote source is unknown). */
    noSource: 0,
    /** The destination is not a workload of the source's tenant (another tenant, or unknown). */
    noRoute: 0,
    /** From a remote NIC to a remote workload: NICs do not relay. */
    transit: 0,
    /** Denied by the firewall (policy, conntrack state, malformed for the engine). */
    policy: 0,
    /** Not an IPv4/IPv6 packet. */
    malformed: 0,
    /** A non-first fragment of a packet whose first fragment did not pass (or not yet). */
    fragment: 0,
    /**
     * From a local workload, larger than the legs carry and not to be fragmented (IPv4 with DF,
     * IPv6 above 1,280 bytes): answered with ICMP (counters.icmpTooBig) unless rate-limited.
     */
    tooBig: 0,
    /** To a service address: not served, no endpoint, table full (services.ts counts why). */
    service: 0,
    /** To the tenant's DNS server address: not a UDP query, malformed, over rate (dns.ts counts why). */
    dns: 0,
  };
  /** DNS answers sent by the tenant DNS servers. */
  dnsAnswers = 0;
  /** ICMP "fragmentation needed" / "packet too big" answers sent to local workloads. */
  icmpTooBig = 0;
  /** Answers not sent: the source session was over TOO_BIG_PER_S, or the packet was an ICMP error. */
  icmpTooBigSuppressed = 0;
  /** TCP SYNs whose MSS option was lowered to what the legs carry. */
  mssClamped = 0;
  /** Packets forwarded larger than the legs carry in one datagram (the outer is fragmented). */
  fragmented = 0;
  /** Non-first fragments let through after their first fragment passed the firewall. */
  fragmentsFollowed = 0;
}

/** What an address of a tenant's table is: a workload, a service address, the DNS server. */
const KIND_WORKLOAD = 0;
const KIND_SERVICE = 1;
const KIND_DNS = 2;

class Destination {
  constructor(
    readonly ref: WorkloadRef,
    /** Engine peer id: the workload's vSwitch (local) or the remote NIC's off-host peer. */
    readonly peerId: number,
    readonly address: HostAddress,
    /** The IPv6 address of a dual-stack workload, routed like `address`. */
    readonly address6: HostAddress | null = null,
    readonly kind = KIND_WORKLOAD,
    /** The service at this address (KIND_SERVICE). */
    readonly service: ServiceEntry | null = null,
  ) {}

  /** KIND_SERVICE: the destination of each endpoint (service.endpoints order), as of `endpointsVersion`. */
  endpointDests: (Destination | null)[] = [];
  endpointsVersion = -1;

  /** Whether `a` is one of this destination's addresses. */
  has(a: HostAddress): boolean {
    return sameAddress(this.address, a) || (this.address6 !== null && sameAddress(this.address6, a));
  }

  /** Installs this destination's host prefixes in `routes`. */
  route(routes: AllowedIps<Destination>): void {
    routes.insert(hostPrefix(this.address), this);
    if (this.address6 !== null) routes.insert(hostPrefix(this.address6), this);
  }
}

function sameAddress(a: HostAddress, b: HostAddress): boolean {
  return Buffer.from(a.bytes).equals(Buffer.from(b.bytes));
}

class TenantTable implements NameBook {
  readonly routes = new AllowedIps<Destination>();
  /** Workload name -> destination, for both local and remote workloads. */
  readonly byName = new Map<string, Destination>();
  /** Other tenants' workloads reachable by grants (not in byName: names are per tenant). */
  imports: Destination[] = [];
  /** Services (null: none, and nothing on the path costs more than this check). */
  services: TenantServices | null = null;
  /** The tenant's DNS server (null: none). */
  dns: TenantDns | null = null;
  /** The service and DNS server destinations in `routes`. */
  network: Destination[] = [];
  constructor(readonly name: string) {}

  addressesOf(name: string): readonly HostAddress[] | undefined {
    const service = this.network.filter((d) => d.kind === KIND_SERVICE && d.service!.spec.name === name);
    if (service.length > 0) return service.map((d) => d.address);
    const w = this.byName.get(name);
    return w === undefined ? undefined : w.address6 === null ? [w.address] : [w.address, w.address6];
  }

  nameAt(address: Uint8Array): string | undefined {
    const d =
      address.length === 4
        ? this.routes.lookup4(
            ((address[0] << 24) | (address[1] << 16) | (address[2] << 8) | address[3]) >>> 0,
          )
        : this.routes.lookup6At(Buffer.from(address), 0);
    if (d === null || d.ref.tenant !== this.name || d.kind === KIND_DNS) return undefined;
    return d.kind === KIND_SERVICE ? d.service!.spec.name : d.ref.workload;
  }
}

class Source {
  /** ICMP "too big" answers this session may still get now (token bucket, TOO_BIG_PER_S). */
  tooBigTokens = TOO_BIG_PER_S;
  tooBigRefilled = 0;
  /** DNS queries this session may still make now (token bucket, DNS_QUERIES_PER_S). */
  dnsTokens = DNS_QUERIES_PER_S;
  dnsRefilled = 0;
  constructor(
    readonly tenant: TenantTable,
    /** The local workload of a vSwitch session; null for a remote NIC's session. */
    readonly workload: WorkloadRef | null,
    readonly peerId: number,
  ) {}

  /** Takes a token for one answer at `now` (ms); false when the session is over its rate. */
  takeTooBigToken(now: number): boolean {
    const elapsed = now - this.tooBigRefilled;
    if (elapsed > 0) {
      this.tooBigTokens = Math.min(TOO_BIG_PER_S, this.tooBigTokens + (elapsed * TOO_BIG_PER_S) / 1000);
      this.tooBigRefilled = now;
    }
    if (this.tooBigTokens < 1) return false;
    this.tooBigTokens -= 1;
    return true;
  }

  /** Takes a token for one DNS query at `now` (ms); false when the session is over its rate. */
  takeDnsToken(now: number): boolean {
    const elapsed = now - this.dnsRefilled;
    if (elapsed > 0) {
      this.dnsTokens = Math.min(DNS_QUERIES_PER_S, this.dnsTokens + (elapsed * DNS_QUERIES_PER_S) / 1000);
      this.dnsRefilled = now;
    }
    if (this.dnsTokens < 1) return false;
    this.dnsTokens -= 1;
    return true;
  }
}

/** Smallest slot of an output slab: headroom for the transport header, packet, padding and tag. */
export const FORWARD_SLOT = 2048;
/** Room the engine needs behind a packet it encrypts in place: padding (up to 15) and the tag (16). */
const TAIL_ROOM = 32;
const IPV4_HEADER = 20;
const EMPTY = Buffer.alloc(0);
const IPV6_HEADER = 40;
/** TCP header without options, the MSS clamp's subtrahend beside the IP header. */
const TCP_HEADER = 20;
/** ICMP "too big" answers per second per source session (and the burst allowed). */
export const TOO_BIG_PER_S = 10;
/** DNS queries per second per source session to its tenant's DNS server (and the burst allowed). */
export const DNS_QUERIES_PER_S = 500;

/** Packets for engine.outboundToPeers(): packet i for engine peer peerIds[i]. */
export interface ForwardBatch {
  batch: PacketBatch;
  peerIds: Uint32Array;
}

/** What forward() builds. Reused by every call: valid until the next one. */
export interface ForwardResult extends ForwardBatch {
  /**
   * ICMP answers from the NIC itself, and (in place) packets without room behind them, copied:
   * a second batch in a buffer of its own, for a second outboundToPeers() call.
   */
  extra: ForwardBatch;
}

/** A slab of slots, each with 16 bytes of headroom and TAIL_ROOM behind the largest packet. */
class CopySlab implements PacketBatch {
  buf = EMPTY;
  offsets = new Uint32Array(0);
  lengths = new Uint32Array(0);
  peerIds = new Uint32Array(0);
  count = 0;
  slot = FORWARD_SLOT;

  /** Room for n packets of up to maxLen bytes; keeps the buffers when they are large enough. */
  ensure(n: number, maxLen: number): void {
    const need = Math.max(FORWARD_SLOT, MESSAGE_TRANSPORT_HEADER_SIZE + maxLen + TAIL_ROOM);
    if (n > this.offsets.length) {
      this.offsets = new Uint32Array(n);
      this.lengths = new Uint32Array(n);
      this.peerIds = new Uint32Array(n);
    }
    if (need > this.slot || n * this.slot > this.buf.length) {
      this.slot = Math.max(this.slot, need);
      this.buf = Buffer.alloc(this.offsets.length * this.slot);
    }
  }

  /** Copies buf[off, off + len) into the next slot, for `peerId`. Returns where it lies. */
  add(buf: Buffer, off: number, len: number, peerId: number): number {
    const k = this.count++;
    const at = k * this.slot + MESSAGE_TRANSPORT_HEADER_SIZE;
    buf.copy(this.buf, at, off, off + len);
    this.offsets[k] = at;
    this.lengths[k] = len;
    this.peerIds[k] = peerId;
    return at;
  }
}

/** The in-place batch: offsets into the engine's own buffer. */
class InPlaceList implements PacketBatch {
  buf = EMPTY;
  offsets: Uint32Array;
  lengths: Uint32Array;
  peerIds: Uint32Array;
  count = 0;
  constructor(n: number) {
    this.offsets = new Uint32Array(n);
    this.lengths = new Uint32Array(n);
    this.peerIds = new Uint32Array(n);
  }
}

/** How long the non-first fragments of a packet whose first fragment passed may follow it. */
export const FRAGMENT_FOLLOW_MS = 2000;
/** Fragmented packets followed at once; beyond, new ones are not followed (counted). */
export const MAX_FOLLOWED_FRAGMENTS = 4096;
const IPPROTO_FRAGMENT = 44;
const IPV4_MF = 0x2000;
const IPV4_OFFSET_MASK = 0x1fff;

/**
 * The firewall decides on the first fragment of a packet (the only one with the L4 header); the
 * others are let through when the first one was, for FRAGMENT_FOLLOW_MS, keyed by tenant,
 * addresses, protocol and IP identification (IPv6: a fragment header right after the IPv6
 * header only). Fragments that arrive before their first are dropped (no reassembly here).
 */
class FragmentFollower {
  private readonly expiry = new Map<string, number>();
  /** New fragmented packets not followed because the table was full. */
  overflow = 0;

  allow(key: string, now: number): void {
    if (this.expiry.size >= MAX_FOLLOWED_FRAGMENTS && !this.expiry.has(key)) {
      for (const [k, t] of this.expiry) if (t <= now) this.expiry.delete(k);
      if (this.expiry.size >= MAX_FOLLOWED_FRAGMENTS) {
        this.overflow++;
        return;
      }
    }
    this.expiry.set(key, now + FRAGMENT_FOLLOW_MS);
  }

  allowed(key: string, now: number): boolean {
    const t = this.expiry.get(key);
    if (t === undefined) return false;
    if (t > now) return true;
    this.expiry.delete(key);
    return false;
  }

  /** Drops what has expired (housekeeping, from tick()). */
  expire(now: number): void {
    for (const [k, t] of this.expiry) if (t <= now) this.expiry.delete(k);
  }
}

/**
 * The fragment key of an IPv4 or IPv6 packet, and whether it is a first fragment (returned key
 * prefixed '1') or a later one ('0'); null when the packet is not a fragment. Fragments are
 * rare, so the string built here costs nothing on the common path.
 */
function fragmentKey(tenant: string, buf: Buffer, off: number, len: number, version: number): string | null {
  if (version === 4) {
    const fo = buf.readUInt16BE(off + 6);
    if ((fo & (IPV4_MF | IPV4_OFFSET_MASK)) === 0) return null;
    const first = (fo & IPV4_OFFSET_MASK) === 0 ? '1' : '0';
    return `${first}${tenant}|4|${buf.readUInt32BE(off + 12)}|${buf.readUInt32BE(off + 16)}|${buf[off + 9]}|${buf.readUInt16BE(off + 4)}`;
  }
  if (buf[off + 6] !== IPPROTO_FRAGMENT || len < IPV6_HEADER + 8) return null;
  const offM = buf.readUInt16BE(off + 42);
  const first = offM >> 3 === 0 ? '1' : '0';
  return `${first}${tenant}|6|${buf.toString('hex', off + 8, off + 40)}|${buf.readUInt32BE(off + 44)}`;
}

/** Leg limits of this NIC (mtu.ts): what the forwarder checks sizes and clamps the MSS against. */
export interface LegLimits {
  /** The largest tenant packet both legs carry in one outer datagram (legCarry of each, the smaller). */
  tenantMtu: number;
}

export class Forwarder {
  readonly counters = new ForwardCounters();
  policy: PolicyHook = allowWithinTenant;
  /** The stateful firewall; when set it decides every packet and `policy` is not called. */
  private engine: PolicyEngine | null = null;
  private readonly tenants = new Map<string, TenantTable>();
  private readonly sources = new Map<number, Source>();
  private readonly fragments = new FragmentFollower();
  private readonly copies = new CopySlab();
  private readonly extras = new CopySlab();
  private inPlace: InPlaceList;
  private readonly result: ForwardResult;
  private readonly view: PacketView = { buf: Buffer.alloc(0), offset: 0, length: 0 };
  /** Leg limits (setLegLimits); 0: no limit known, nothing checked or clamped. */
  private tenantMtu = 0;
  /** Bumped by every change of any routing table (services re-resolve their endpoints then). */
  private routesVersion = 0;
  private mss4 = 0;
  private mss6 = 0;

  constructor(capacity = 128) {
    this.copies.ensure(capacity, 0);
    this.extras.ensure(capacity, 0);
    this.inPlace = new InPlaceList(capacity);
    this.result = {
      batch: this.copies,
      peerIds: this.copies.peerIds,
      extra: { batch: this.extras, peerIds: this.extras.peerIds },
    };
  }

  /**
   * Sets what this NIC's legs carry (mtu.ts): from then on TCP SYNs get their MSS clamped to
   * fit, and larger packets from local workloads that must not be fragmented are answered with
   * ICMP instead of being forwarded.
   */
  setLegLimits(limits: LegLimits): void {
    const m = limits.tenantMtu;
    if (!Number.isInteger(m) || m < IPV6_HEADER + TCP_HEADER + 8 || m > 0xffff)
      throw new TgError('TG_ERR_INVALID_ARGUMENT', `tenant MTU ${m} is out of range`);
    this.tenantMtu = m;
    this.mss4 = m - IPV4_HEADER - TCP_HEADER;
    this.mss6 = m - IPV6_HEADER - TCP_HEADER;
  }

  /** The leg limits in force (0: none). */
  get legLimits(): LegLimits {
    return { tenantMtu: this.tenantMtu };
  }

  // ------------------------------------------------------------------------------------
  // Tables (control plane)

  /** Puts the policy engine in the path (default deny from then on). */
  attachEngine(engine: PolicyEngine): void {
    this.engine = engine;
    for (const t of this.tenants.values()) this.bindServices(t, t.services);
  }

  /**
   * Gives the services of a tenant their NAT ids in the engine (nat.ts) after they were set:
   * connections bound to an endpoint that is still one keep it (at its index now), the others
   * lose their binding, and services that went release theirs.
   */
  private bindServices(t: TenantTable, services: TenantServices | null): void {
    const engine = this.engine;
    if (engine === null) return;
    const nat = engine.nat;
    const prefix = `${t.name}/`;
    const live = new Set<string>();
    for (const svc of services?.entries() ?? []) {
      const key = prefix + serviceKey(svc);
      live.add(key);
      const had = nat.idOf(key);
      const id = had !== 0 ? had : nat.acquire(key);
      if (id === 0) continue;
      if (had === 0 || !nat.hasAddress(id, svc.spec.address.bytes)) {
        engine.retargetNat(t.name, id, () => -1);
        nat.setAddress(id, svc.spec.address.bytes);
      } else
        engine.retargetNat(t.name, id, (family, w0, w1, w2, w3) => svc.endpointIndex(family, w0, w1, w2, w3));
      svc.natId = id;
    }
    for (const key of [...nat.keys()])
      if (key.startsWith(prefix) && !live.has(key)) {
        engine.retargetNat(t.name, nat.idOf(key), () => -1);
        nat.release(key);
      }
  }

  /** Expiry and flow-log housekeeping of the engine; the data plane calls it every ~100 ms. */
  tick(now: number): void {
    this.engine?.tick(now);
    this.fragments.expire(now);
    for (const t of this.tenants.values()) t.services?.tick(now);
  }

  /**
   * Replaces a tenant's network services: its DNS server address (null: none) and its services
   * with their endpoints now. Connections pinned to endpoints that are still endpoints stay.
   * An address that is one of the tenant's workloads is refused (TG_ERR_CONFLICT).
   */
  setTenantNetwork(tenant: string, net: { dns: HostAddress | null; services: readonly ServiceSpec[] }): void {
    this.routesVersion++;
    const t = this.tableOrThrow(tenant);
    for (const a of [...(net.dns === null ? [] : [net.dns]), ...net.services.map((s) => s.address)]) {
      const owner = this.addressOwner(tenant, a);
      if (owner !== undefined)
        throw new TgError(
          'TG_ERR_CONFLICT',
          `address ${a.text} is workload '${owner.workload}' of '${tenant}'`,
        );
    }
    for (const d of t.network) t.routes.removeByPeer(d);
    t.network = [];
    if (net.services.length === 0) t.services = null;
    else {
      t.services ??= new TenantServices();
      t.services.set(net.services);
    }
    this.bindServices(t, t.services);
    const ref: WorkloadRef = Object.freeze({ tenant, workload: '', local: true });
    for (const s of net.services) {
      const d = new Destination(
        ref,
        0,
        s.address,
        null,
        KIND_SERVICE,
        t.services!.serviceAt(s.address.bytes)!,
      );
      t.routes.insert(hostPrefix(s.address), d);
      t.network.push(d);
    }
    if (net.dns === null) t.dns = null;
    else {
      if (t.dns === null || t.dns.address.text !== net.dns.text) t.dns = new TenantDns(tenant, net.dns, t);
      const d = new Destination(ref, 0, net.dns, null, KIND_DNS);
      t.routes.insert(hostPrefix(net.dns), d);
      t.network.push(d);
    }
  }

  /** A tenant's DNS server and services as the data path has them (diagnostics, metrics). */
  tenantNetwork(tenant: string): { dns: TenantDns | null; services: TenantServices | null } | undefined {
    const t = this.tenants.get(tenant);
    return t === undefined ? undefined : { dns: t.dns, services: t.services };
  }

  /**
   * Replaces the grant imports of `tenant`: other tenants' workloads its workloads may reach
   * (whether a connection is allowed is the firewall's business, both ways).
   */
  setImports(tenant: string, imports: readonly ImportedWorkload[]): void {
    this.routesVersion++;
    const t = this.tableOrThrow(tenant);
    for (const d of t.imports) t.routes.removeByPeer(d);
    t.imports = [];
    for (const w of imports) {
      if (w.tenant === tenant) continue;
      const own = this.tenants.get(w.tenant)?.byName.get(w.workload);
      const ref: WorkloadRef =
        own !== undefined && own.ref.local === w.local
          ? own.ref
          : Object.freeze({ tenant: w.tenant, workload: w.workload, local: w.local });
      const d = new Destination(ref, w.peerId, w.address, w.address6 ?? null);
      d.route(t.routes);
      t.imports.push(d);
    }
  }

  /** The grant imports of a tenant (diagnostics). */
  importsOf(tenant: string): { tenant: string; workload: string; local: boolean; peerId: number }[] {
    return (this.tenants.get(tenant)?.imports ?? []).map((d) => ({ ...d.ref, peerId: d.peerId }));
  }

  hasTenant(tenant: string): boolean {
    return this.tenants.has(tenant);
  }

  addTenant(tenant: string): void {
    this.routesVersion++;
    if (this.tenants.has(tenant)) throw new TgError('TG_ERR_CONFLICT', `tenant '${tenant}' exists`);
    this.tenants.set(tenant, new TenantTable(tenant));
  }

  /** Forgets a tenant with all its routes and sessions. */
  removeTenant(tenant: string): void {
    this.routesVersion++;
    const t = this.tenants.get(tenant);
    if (t === undefined) return;
    this.bindServices(t, null);
    for (const [peerId, s] of this.sources) if (s.tenant === t) this.sources.delete(peerId);
    this.tenants.delete(tenant);
  }

  /** The workload (local or remote) of this tenant with this name, if any. */
  workloadOf(
    tenant: string,
    workload: string,
  ): { local: boolean; address: string; address6?: string } | undefined {
    const d = this.tenants.get(tenant)?.byName.get(workload);
    if (d === undefined) return undefined;
    return {
      local: d.ref.local,
      address: d.address.text,
      ...(d.address6 !== null ? { address6: d.address6.text } : {}),
    };
  }

  /** The workload of this tenant that has this address, if any. */
  addressOwner(tenant: string, address: HostAddress): { workload: string; local: boolean } | undefined {
    const t = this.tenants.get(tenant);
    if (t === undefined) return undefined;
    for (const d of t.byName.values())
      if (d.has(address)) return { workload: d.ref.workload, local: d.ref.local };
    return undefined;
  }

  /**
   * A local workload: its vSwitch session `peerId` carries packets from and to `address` (and
   * `address6`, the IPv6 address of a dual-stack workload).
   */
  addLocalWorkload(
    tenant: string,
    workload: string,
    peerId: number,
    address: HostAddress,
    address6: HostAddress | null = null,
  ): void {
    this.routesVersion++;
    const t = this.tableOrThrow(tenant);
    if (t.byName.has(workload))
      throw new TgError('TG_ERR_CONFLICT', `workload '${workload}' exists in '${tenant}'`);
    if (this.sources.has(peerId)) throw new TgError('TG_ERR_CONFLICT', `session ${peerId} is in use`);
    const ref: WorkloadRef = Object.freeze({ tenant, workload, local: true });
    const d = new Destination(ref, peerId, address, address6);
    d.route(t.routes);
    t.byName.set(workload, d);
    this.sources.set(peerId, new Source(t, ref, peerId));
  }

  removeLocalWorkload(tenant: string, workload: string): void {
    this.routesVersion++;
    const t = this.tenants.get(tenant);
    const d = t?.byName.get(workload);
    if (t === undefined || d === undefined || !d.ref.local) return;
    t.routes.removeByPeer(d);
    t.byName.delete(workload);
    this.sources.delete(d.peerId);
  }

  /**
   * The remote workloads of a tenant behind the remote NIC whose off-host session is `peerId`,
   * replacing what that session had.
   */
  setRemoteNic(
    tenant: string,
    peerId: number,
    workloads: readonly { workload: string; address: HostAddress; address6?: HostAddress }[],
  ): void {
    this.routesVersion++;
    const t = this.tableOrThrow(tenant);
    this.removeRemoteNic(tenant, peerId);
    this.sources.set(peerId, new Source(t, null, peerId));
    for (const w of workloads) {
      const ref: WorkloadRef = Object.freeze({ tenant, workload: w.workload, local: false });
      const d = new Destination(ref, peerId, w.address, w.address6 ?? null);
      d.route(t.routes);
      t.byName.set(w.workload, d);
    }
  }

  removeRemoteNic(tenant: string, peerId: number): void {
    this.routesVersion++;
    const t = this.tenants.get(tenant);
    if (t === undefined) return;
    for (const [name, d] of [...t.byName]) {
      if (d.ref.local || d.peerId !== peerId) continue;
      t.routes.removeByPeer(d);
      t.byName.delete(name);
    }
    const s = this.sources.get(peerId);
    if (s !== undefined && s.tenant === t) this.sources.delete(peerId);
  }

  // ------------------------------------------------------------------------------------
  // Data path

  /**
   * Decides every packet of `tun` and builds the batches for engine.outboundToPeers(): `batch`
   * with the packets to forward, `extra` with the NIC's own ICMP answers. With `inPlaceSlot` 0
   * every forwarded packet is copied into the forwarder's slab (16 bytes of headroom in front,
   * room for padding and the tag behind). With `inPlaceSlot` > 0, tun.buf is taken to be slots
   * of that size (the packet at tun.offsets[i] lies in slot floor(offset / inPlaceSlot), with
   * 16 bytes of headroom in front as engine.inbound() leaves them): packets stay where they
   * are and `batch` points into tun.buf; one without room behind it is copied into `extra`.
   * MSS clamping writes into the packet. The result is valid until the next call.
   */
  forward(tun: TunBatch, now: number = Date.now(), inPlaceSlot = 0): ForwardResult {
    const engine = this.engine;
    const n = tun.count;
    const { buf, offsets, lengths, peerIds } = tun;
    let maxLen = 0;
    for (let i = 0; i < n; i++) if (lengths[i] > maxLen) maxLen = lengths[i];
    const copies = this.copies;
    const extras = this.extras;
    extras.ensure(n, Math.max(maxLen, MAX_TOO_BIG_ANSWER));
    extras.count = 0;
    let out: PacketBatch & { peerIds: Uint32Array };
    if (inPlaceSlot > 0) {
      if (n > this.inPlace.offsets.length) this.inPlace = new InPlaceList(n);
      out = this.inPlace;
      out.buf = buf;
    } else {
      copies.ensure(n, maxLen);
      copies.count = 0;
      out = copies;
    }
    const dropped = this.counters.dropped;
    const view = this.view;
    view.buf = buf;
    const tenantMtu = this.tenantMtu;
    let k = 0;
    let lastPeer = -1;
    let src: Source | undefined;
    for (let i = 0; i < n; i++) {
      const off = offsets[i];
      const len = lengths[i];
      const peerId = peerIds[i];
      if (peerId !== lastPeer) {
        src = this.sources.get(peerId);
        lastPeer = peerId;
      }
      if (src === undefined) {
        dropped.noSource++;
        continue;
      }
      const table = src.tenant.routes;
      const version = buf[off] >> 4;
      let dst: Destination | null;
      let fromAddr: Destination | null = null;
      /** To a service address: its NAT id, the endpoint, whether checkNat() decided already. */
      let natId = 0;
      let natEp = -1;
      let natDecided = false;
      /** A reply the engine gave the service address back. */
      let natReversed = false;
      if (version === 4 && len >= IPV4_HEADER) {
        dst = table.lookup4(buf.readUInt32BE(off + 16));
        if (src.workload === null && dst !== null) fromAddr = table.lookup4(buf.readUInt32BE(off + 12));
      } else if (version === 6 && len >= IPV6_HEADER) {
        dst = table.lookup6At(buf, off + 24);
        if (src.workload === null && dst !== null) fromAddr = table.lookup6At(buf, off + 8);
      } else {
        dropped.malformed++;
        continue;
      }
      if (dst === null) {
        dropped.noRoute++;
        continue;
      }
      if (dst.kind !== KIND_WORKLOAD) {
        // A service address or the DNS server: both serve the tenant's local workloads only.
        if (src.workload === null) {
          dropped.noRoute++;
          continue;
        }
        if (dst.kind === KIND_DNS) {
          this.answerDns(src, buf, off, len, version, now);
          continue;
        }
        const svc = dst.service!;
        const services = src.tenant.services!;
        let ep: number;
        natId = svc.natId;
        // Fragments and IPv6 extension headers take translate(), which drops them (counted).
        if (
          natId !== 0 &&
          engine !== null &&
          (version === 4
            ? ((buf[off + 6] & 0x3f) | buf[off + 7]) === 0
            : buf[off + 6] === IPPROTO_TCP || buf[off + 6] === IPPROTO_UDP)
        ) {
          // A connection already translated: its conntrack entry holds the endpoint (nat.ts).
          const r = engine.checkNat(src.tenant.name, src.workload, natId, buf, off, len, now);
          if (r !== null) {
            if (!r.allowed) {
              dropped.policy++;
              continue;
            }
            services.counters.translated++;
            ep = r.natEndpoint;
            natDecided = true;
          } else ep = services.translate(buf, off, len, version, svc, now);
        } else ep = services.translate(buf, off, len, version, svc, now);
        if (ep < 0) {
          dropped.service++;
          continue;
        }
        if (dst.endpointsVersion !== this.routesVersion) this.resolveEndpoints(table, dst);
        dst = dst.endpointDests[ep];
        if (dst === null || dst.kind !== KIND_WORKLOAD) {
          dropped.noRoute++;
          continue;
        }
        natEp = ep;
      }
      let from: WorkloadRef;
      if (src.workload !== null) from = src.workload;
      else {
        if (!dst.ref.local) {
          dropped.transit++;
          continue;
        }
        if (fromAddr === null || fromAddr.peerId !== src.peerId || fromAddr.ref.local) {
          dropped.noSource++;
          continue;
        }
        from = fromAddr.ref;
      }
      view.offset = off;
      view.length = len;
      let allowed: boolean;
      // Fragments: IPv4 MF or offset set, IPv6 a fragment header (both rare).
      const frag = (
        version === 4
          ? (buf.readUInt16BE(off + 6) & (IPV4_MF | IPV4_OFFSET_MASK)) !== 0
          : buf[off + 6] === IPPROTO_FRAGMENT
      )
        ? fragmentKey(src.tenant.name, buf, off, len, version)
        : null;
      if (frag !== null && frag.charCodeAt(0) === 0x30) {
        // A later fragment: no L4 header to decide on; it follows its first fragment.
        if (!this.fragments.allowed(frag.slice(1), now)) {
          dropped.fragment++;
          continue;
        }
        this.counters.fragmentsFollowed++;
        allowed = true;
      } else if (natDecided) allowed = true;
      else if (engine !== null) {
        const to = dst.ref;
        const r = engine.check(
          src.tenant.name,
          from,
          to,
          buf,
          off,
          len,
          now,
          from.local ? (to.local ? 'both' : 'egress') : 'ingress',
        );
        allowed = r.allowed;
        if (allowed && natId !== 0 && !engine.bindNat(natId, natEp)) src.tenant.services!.unbound++;
        natReversed = r.natEndpoint >= 0;
      } else {
        try {
          allowed = this.policy(src.tenant.name, from, dst.ref, view);
        } catch {
          allowed = false;
        }
      }
      if (!allowed) {
        dropped.policy++;
        continue;
      }
      if (frag !== null && frag.charCodeAt(0) === 0x31) this.fragments.allow(frag.slice(1), now);
      // A reply from a service's endpoint gets the service address back as its source: from
      // the engine when the connection is bound to its translation (natReversed), else here.
      const services = src.tenant.services;
      if (natReversed) {
        if (services !== null) services.counters.reversed++;
      } else if (dst.ref.local && services !== null && (engine === null || services.unbound > 0))
        services.reverse(buf, off, len, version, now);
      if (tenantMtu > 0) {
        if (len > tenantMtu) {
          // Too big for one outer datagram: answered from here when it must not be fragmented
          // and comes from a local workload (a remote one's NIC answers it), else fragmented.
          if (src.workload !== null && this.tooBig(src, buf, off, len, version, now)) continue;
          this.counters.fragmented++;
        }
        if (
          buf[off + (version === 4 ? 9 : 6)] === IPPROTO_TCP &&
          clampMss(buf, off, len, version === 4 ? this.mss4 : this.mss6)
        )
          this.counters.mssClamped++;
      }
      if (inPlaceSlot > 0) {
        const slotEnd = (Math.floor(off / inPlaceSlot) + 1) * inPlaceSlot;
        if (off < MESSAGE_TRANSPORT_HEADER_SIZE || off + len + TAIL_ROOM > slotEnd) {
          extras.add(buf, off, len, dst.peerId);
        } else {
          out.offsets[k] = off;
          out.lengths[k] = len;
          out.peerIds[k] = dst.peerId;
          k++;
        }
      } else {
        copies.add(buf, off, len, dst.peerId);
        k++;
      }
      if (!dst.ref.local) this.counters.egress++;
      else if (src.workload === null) this.counters.ingress++;
      else this.counters.local++;
    }
    view.buf = EMPTY;
    out.count = k;
    const r = this.result;
    r.batch = out;
    r.peerIds = out.peerIds;
    r.extra.peerIds = extras.peerIds;
    return r;
  }

  /** Looks up the destination of each endpoint of a service destination (after a table change). */
  private resolveEndpoints(table: AllowedIps<Destination>, d: Destination): void {
    d.endpointDests = d.service!.endpoints.map((e) => {
      const b = e.address.bytes;
      const r =
        b.length === 4
          ? table.lookup4(((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0)
          : table.lookup6At(Buffer.from(b), 0);
      return r !== null && r.kind === KIND_WORKLOAD ? r : null;
    });
    d.endpointsVersion = this.routesVersion;
  }

  /** A packet to the tenant's DNS server: the answer goes into `extras` on the source's session. */
  private answerDns(src: Source, buf: Buffer, off: number, len: number, version: number, now: number): void {
    const dns = src.tenant.dns!;
    const at = dnsQueryPayload(buf, off, len, version);
    if (at < 0) {
      dns.counters.notServed++;
      this.counters.dropped.dns++;
      return;
    }
    if (!src.takeDnsToken(now)) {
      dns.counters.rateLimited++;
      this.counters.dropped.dns++;
      return;
    }
    const answer = dns.respond(buf.subarray(at, off + len));
    if (answer === null) {
      this.counters.dropped.dns++;
      return;
    }
    const extras = this.extras;
    const k = extras.count;
    const slotAt = k * extras.slot + MESSAGE_TRANSPORT_HEADER_SIZE;
    if (slotAt + IPV6_HEADER + 8 + answer.length + TAIL_ROOM > (k + 1) * extras.slot) {
      this.counters.dropped.dns++;
      return;
    }
    const n = writeDnsAnswer(buf, off, version, answer, extras.buf, slotAt);
    extras.count = k + 1;
    extras.offsets[k] = slotAt;
    extras.lengths[k] = n;
    extras.peerIds[k] = src.peerId;
    this.counters.dnsAnswers++;
  }

  /**
   * A packet from a local workload larger than tenantMtu: true when it is dropped (answered
   * with ICMP, rate permitting), false when it may pass fragmented (IPv4 without DF, IPv6 up to
   * the IPv6 minimum MTU, which every link must carry).
   */
  private tooBig(src: Source, buf: Buffer, off: number, len: number, version: number, now: number): boolean {
    const extras = this.extras;
    const at = extras.count * extras.slot + MESSAGE_TRANSPORT_HEADER_SIZE;
    let answer: number;
    if (version === 4) {
      if (!dontFragment4(buf, off)) return false;
      this.counters.dropped.tooBig++;
      if (!src.takeTooBigToken(now)) {
        this.counters.icmpTooBigSuppressed++;
        return true;
      }
      answer = writeFragNeeded(buf, off, len, this.tenantMtu, extras.buf, at);
    } else {
      const mtu = Math.max(this.tenantMtu, IPV6_MIN_MTU);
      if (len <= mtu) return false;
      this.counters.dropped.tooBig++;
      if (!src.takeTooBigToken(now)) {
        this.counters.icmpTooBigSuppressed++;
        return true;
      }
      answer = writePacketTooBig(buf, off, len, mtu, extras.buf, at);
    }
    if (answer === 0) {
      this.counters.icmpTooBigSuppressed++;
      return true;
    }
    const k = extras.count++;
    extras.offsets[k] = at;
    extras.lengths[k] = answer;
    extras.peerIds[k] = src.peerId;
    this.counters.icmpTooBig++;
    return true;
  }

  private tableOrThrow(tenant: string): TenantTable {
    const t = this.tenants.get(tenant);
    if (t === undefined) throw new TgError('TG_ERR_NOT_FOUND', `no tenant '${tenant}'`);
    return t;
  }
}
