// The enforcement entry point: PolicyEngine.check() decides one packet with connection
// tracking, on the sending NIC (direction "egress": the source is a local workload), on the
// receiving NIC ("ingress": the destination is) or for a hairpin ("both").
//
// Per packet: resolve the two workloads (two Map lookups), parse the headers, hash the key,
// look it up in the zone's table. A packet of a known connection updates state, counters and
// last-seen and is allowed without any rule lookup (a reply too: no reverse rule needed);
// only when the policy or the workloads changed since the connection was decided (a
// generation number, checked lazily) is the connection decided again, and dropped if the new
// policy denies it. A packet of a new connection is decided by the compiled policy (decide.ts)
// and the connection entered into the allowed table, or into the denied-flow table (so that a
// denied flow makes one record, not one per packet, and cannot push allowed ones out).
//
// Zones: one pair of tables per tenant. A connection lives in the zone of its initiator's
// tenant (of its workload end when the initiator is an outside peer); a packet between two
// tenants looks in both zones, so the reply to a granted cross-tenant connection finds it.
//
// Time is passed in (`now`, ms on the Date.now() scale); the engine has no timers. tick(now)
// must be called periodically (every 100 ms to 1 s): it expires idle connections a slice of
// the table at a time, writes interim records of long connections and flushes the flow log.
//
// Destination NAT (nat.ts): a connection the caller translated to a service's endpoint can be
// bound to its translation (bindNat); checkNat() then finds its later packets by their original
// tuple and rewrites them from the entry, and check() gives its replies the service address
// back, so a translated connection costs one parse and one lookup per packet like any other.
//
// Nothing thrown escapes check() or checkNat(): bad packets are verdicts (malformed, fragment,
// invalid), counted per zone or in `drops`.
import { randomInt } from 'node:crypto';
import { z } from 'zod';
import { type Family, formatWords } from './address.js';
import { bucketOf, type RuleNames } from './compile.js';
import {
  C_RULE_E,
  C_RULE_I,
  CF_REPORTED,
  CF_START,
  CLOSER_REPLY,
  COLD_STRIDE,
  ConntrackTable,
  F_BYTES_O,
  F_BYTES_R,
  F_LAST,
  F_PKTS_O,
  F_PKTS_R,
  hashKey,
  KEY_WORDS,
  MAX_TABLE_ENTRIES,
  STATE_MASK,
  STRIDE,
  W_D0,
  W_DPORT,
  W_DWL,
  W_FLAGS,
  W_GEN,
  W_META,
  W_NAT,
  W_NAT_DELTA,
  W_NAT_EP,
  W_RULE,
  W_S0,
  W_SPORT,
  W_STATE,
  W_SWL,
} from './conntrack.js';
import { Decision, decide, SCOPE_BOTH, SCOPE_EGRESS, SCOPE_INGRESS } from './decide.js';
import type { WorkloadDirectory, WorkloadInfo } from './directory.js';
import type { FlowLog, FlowQuery, FlowRecord } from './flowlog.js';
import { matches } from './flowlog.js';
import { addressDelta, NatRegistry, natRewrite } from './nat.js';
import {
  ECHO_MARK,
  ICMP_ECHO_REPLY,
  ICMP_ERROR,
  ICMP_OTHER_MARK,
  IPPROTO_ICMP,
  IPPROTO_ICMPV6,
  IPPROTO_TCP,
  IPPROTO_UDP,
  PARSE_FRAGMENT,
  PARSE_OK,
  ParsedPacket,
  parsePacket,
} from './packet.js';
import {
  ST_CLOSED,
  ST_DENIED,
  ST_FIN_WAIT,
  ST_ICMP_NEW,
  ST_ICMP_REPLIED,
  ST_OTHER_ESTABLISHED,
  ST_OTHER_NEW,
  ST_TIME_WAIT,
  ST_UDP_ESTABLISHED,
  ST_UDP_NEW,
  STATE_NAMES,
  timeoutsSchema,
  timeoutTable,
} from './states.js';
import type { PolicyStore } from './store.js';
import { closingState, TCP_INVALID, TCP_REOPEN, tcpEvent, tcpFirst, tcpNext } from './tcp.js';

export const engineOptionsSchema = z.strictObject({
  /** Bound on tracked (allowed) connections per tenant zone. */
  maxFlowsPerZone: z.number().int().min(1).max(MAX_TABLE_ENTRIES).default(262_144),
  /** Bound on remembered denied flows per zone. */
  maxDeniedPerZone: z.number().int().min(1).max(MAX_TABLE_ENTRIES).default(16_384),
  /** Entries allocated when a zone is created; tables double as they fill. */
  initialFlowsPerZone: z.number().int().min(1).max(MAX_TABLE_ENTRIES).default(1024),
  /** Pick up TCP connections already under way (after a migration or restart). */
  tcpLoose: z.boolean().default(true),
  /** Interval of interim records for long connections; 0 disables them. */
  interimSeconds: z.number().min(0).max(86_400).default(60),
  /** Entries per table examined by one tick(). */
  sweepPerTick: z
    .number()
    .int()
    .min(1)
    .max(1 << 24)
    .default(8192),
  timeouts: timeoutsSchema.prefault({}),
});

export type EngineOptions = z.input<typeof engineOptionsSchema>;

export type Direction = 'egress' | 'ingress' | 'both';

/** A workload: its name in the `tenant` passed to check(), a {tenant, workload} reference, or null for an outside peer. */
export type WorkloadArg = string | { readonly tenant: string; readonly workload: string } | null;

/**
 * Why a packet got its verdict:
 *   new              first packet of a connection the policy allows
 *   established      a packet of a tracked connection in its original direction
 *   reply            a packet of a tracked connection in the reply direction
 *   related          an ICMP error about a tracked connection
 *   policy           the policy denies the connection (rule says which rule, or default-deny)
 *   revoked          the connection was allowed but the policy in force now denies it
 *   invalid          not valid for the connection's TCP state, an ICMP error or echo reply
 *                    about no tracked connection
 *   malformed        headers cannot be parsed
 *   fragment         a non-first fragment (no reassembly here)
 *   unknown-workload a workload not registered, or no workload on the side `direction` says is local
 */
export type CheckReason =
  | 'new'
  | 'established'
  | 'reply'
  | 'related'
  | 'policy'
  | 'revoked'
  | 'invalid'
  | 'malformed'
  | 'fragment'
  | 'unknown-workload';

/** The verdict of check(): one object reused by every call, valid until the next one. */
export class CheckResult {
  allowed = false;
  /** The deciding rule as "tenant/rule-id"; "" when no rule was involved (malformed and the like). */
  rule = '';
  reason: CheckReason = 'policy';
  /** The connection's entry in its zone's allowed table, -1 when none. */
  entry = -1;
  /**
   * The endpoint index of a NAT-bound connection (-1 otherwise): checkNat() translated the
   * packet to it, or check() gave a reply of it the service address back.
   */
  natEndpoint = -1;
}

export class ZoneCounters {
  packetsAllowed = 0;
  packetsDenied = 0;
  bytesAllowed = 0;
  bytesDenied = 0;
  flowsAllowed = 0;
  flowsDenied = 0;
  invalid = 0;
  related = 0;
  /** Connections ended by idle timeout (or after TCP close). */
  expired = 0;
  /** Connections pushed out of a full table (allowed table). */
  evicted = 0;
  /** Denied flows pushed out of the full denied-flow table. */
  deniedEvicted = 0;
  /** Connections dropped because the policy in force no longer allows them. */
  revoked = 0;
}

export class Zone {
  readonly counters = new ZoneCounters();
  constructor(
    readonly tenant: string,
    readonly allowed: ConntrackTable,
    readonly denied: ConntrackTable,
  ) {}
}

const NO_TIMEOUTS = new Float64Array(16);
const NO_ZONE = new Zone(
  '',
  new ConntrackTable({ maxEntries: 1, initialEntries: 1, timeouts: NO_TIMEOUTS }),
  new ConntrackTable({ maxEntries: 1, initialEntries: 1, timeouts: NO_TIMEOUTS }),
);

/** Packets dropped before a zone was known. */
export class EngineDrops {
  malformed = 0;
  fragment = 0;
  unknownWorkload = 0;
}

/** Bound on remembered workload reference objects. */
const MAX_REF_CACHE = 65_536;

type EndReason = 'expired' | 'closed' | 'evicted' | 'revoked' | 'flushed';

const PROTO_NAMES: Record<number, string> = {
  [IPPROTO_TCP]: 'tcp',
  [IPPROTO_UDP]: 'udp',
  [IPPROTO_ICMP]: 'icmp',
  [IPPROTO_ICMPV6]: 'icmpv6',
};

export interface PolicyEngineDeps {
  directory: WorkloadDirectory;
  store: PolicyStore;
  flowLog?: FlowLog | null;
  options?: EngineOptions;
}

export class PolicyEngine {
  readonly directory: WorkloadDirectory;
  readonly store: PolicyStore;
  readonly flowLog: FlowLog | null;
  readonly options: z.output<typeof engineOptionsSchema>;
  readonly drops = new EngineDrops();
  private readonly names: RuleNames;
  private readonly zones = new Map<string, Zone>();
  private readonly timeouts: Float64Array;
  private readonly interimMs: number;
  private readonly seed = randomInt(0x7fffffff);
  private readonly result = new CheckResult();
  private readonly pkt = new ParsedPacket();
  private readonly inner = new ParsedPacket();
  private readonly key = new Uint32Array(KEY_WORDS);
  private readonly decision = new Decision();
  /** Service addresses by NAT id (nat.ts). */
  readonly nat = new NatRegistry();
  /** The table of result.entry (for bindNat). */
  private entryTable: ConntrackTable = NO_ZONE.allowed;
  private cacheGen = -1;
  private readonly refCache = new Map<object, WorkloadInfo>();
  private lastTenant: string | null = null;
  private lastTable: Map<string, WorkloadInfo> | undefined = undefined;
  private lastZone: Zone = NO_ZONE;

  constructor(deps: PolicyEngineDeps) {
    this.directory = deps.directory;
    this.store = deps.store;
    this.flowLog = deps.flowLog ?? null;
    this.options = engineOptionsSchema.parse(deps.options ?? {});
    this.names = this.store.names;
    this.timeouts = timeoutTable(this.options.timeouts);
    this.interimMs = this.options.interimSeconds * 1000;
  }

  /** Current decision generation: moves when a policy or a workload changes. */
  get generation(): number {
    return this.store.generation + this.directory.generation;
  }

  zone(tenant: string): Zone | undefined {
    return this.zones.get(tenant);
  }

  zoneList(): Zone[] {
    return [...this.zones.values()];
  }

  /**
   * Decides the packet buf[off, off + len) from srcWl to dstWl. `tenant` names the tenant
   * of string workload arguments (and is otherwise ignored). Never throws.
   */
  check(
    tenant: string,
    srcWl: WorkloadArg,
    dstWl: WorkloadArg,
    buf: Buffer,
    off: number,
    len: number,
    now: number,
    direction: Direction,
  ): CheckResult {
    const r = this.result;
    r.entry = -1;
    r.natEndpoint = -1;
    const scope =
      direction === 'egress' ? SCOPE_EGRESS : direction === 'ingress' ? SCOPE_INGRESS : SCOPE_BOTH;
    const src = srcWl === null ? null : this.resolve(tenant, srcWl);
    const dst = dstWl === null ? null : this.resolve(tenant, dstWl);
    if (
      src === undefined ||
      dst === undefined ||
      (src === null && dst === null) ||
      (scope === SCOPE_EGRESS && src === null) ||
      (scope === SCOPE_INGRESS && dst === null)
    ) {
      this.drops.unknownWorkload++;
      return this.verdict(false, 0, 'unknown-workload');
    }
    const pkt = this.pkt;
    const parsed = parsePacket(buf, off, len, pkt);
    if (parsed !== PARSE_OK) {
      if (parsed === PARSE_FRAGMENT) {
        this.drops.fragment++;
        return this.verdict(false, 0, 'fragment');
      }
      this.drops.malformed++;
      return this.verdict(false, 0, 'malformed');
    }
    const zone = this.zoneOf((src ?? (dst as WorkloadInfo)).tenant);
    const other = src !== null && dst !== null && src.tenant !== dst.tenant ? this.zoneOf(dst.tenant) : null;
    // The parsed words are the lookup key (same layout); only the workload ids are added.
    const key = pkt.words;
    key[W_SWL] = src === null ? 0 : src.id;
    key[W_DWL] = dst === null ? 0 : dst.id;
    if (pkt.icmpKind === ICMP_ERROR) return this.related(zone, other, src, dst, buf, len, now);

    const hash = hashKey(key, this.seed);
    const gen = this.store.generation + this.directory.generation;
    let found = zone.allowed.find(hash, key, false);
    if (found >= 0) {
      if (this.existing(zone, found, len, now, gen))
        return (found & 1) === 0 ? r : this.reverseNat(zone.allowed, found >> 1, buf, off);
    } else if (other !== null) {
      found = other.allowed.find(hash, key, false);
      if (found >= 0 && this.existing(other, found, len, now, gen))
        return (found & 1) === 0 ? r : this.reverseNat(other.allowed, found >> 1, buf, off);
    }
    return this.newFlow(zone, src, dst, hash, len, now, gen, scope);
  }

  /**
   * A packet from local workload `srcWl` to the service address of NAT id `natId` (nat.ts):
   * when its connection is bound to an endpoint (bindNat), decides it as check() would and,
   * allowed, rewrites its destination to the endpoint (result.natEndpoint: the index bindNat
   * was given). null when the connection has no binding (a new one, one whose entry ended, a
   * packet check() would not track): nothing was changed or counted, the caller translates
   * it itself and calls check() and bindNat(). Never throws.
   */
  checkNat(
    tenant: string,
    srcWl: NonNullable<WorkloadArg>,
    natId: number,
    buf: Buffer,
    off: number,
    len: number,
    now: number,
  ): CheckResult | null {
    const src = this.resolve(tenant, srcWl);
    if (src === undefined) return null;
    const zone = this.zoneOf(src.tenant);
    const t = zone.allowed;
    if (t.natBound === 0) return null;
    const pkt = this.pkt;
    if (parsePacket(buf, off, len, pkt) !== PARSE_OK || pkt.icmpKind === ICMP_ERROR) return null;
    const key = pkt.words;
    key[W_SWL] = src.id;
    key[W_DWL] = natId;
    const e = t.findNat(hashKey(key, this.seed), key);
    if (e < 0) return null;
    const r = this.result;
    r.entry = -1;
    r.natEndpoint = -1;
    if (!this.existing(zone, e * 2, len, now, this.store.generation + this.directory.generation)) return null;
    if (r.allowed) {
      const b = e * STRIDE;
      const u = t.u32;
      natRewrite(
        buf,
        off,
        pkt.l4,
        pkt.end,
        pkt.family,
        pkt.proto,
        off + (pkt.family === 4 ? 16 : 24),
        u[b + W_NAT_DELTA] & 0xffff,
        u[b + W_D0],
        u[b + W_D0 + 1],
        u[b + W_D0 + 2],
        u[b + W_D0 + 3],
      );
      r.natEndpoint = u[b + W_NAT_EP];
    }
    return r;
  }

  /**
   * Binds the connection of the last check() (allowed, new or established, to an endpoint
   * the caller translated a packet to the service address of `natId` to) to that translation:
   * later packets to the service address go through checkNat(), replies get the service
   * address back from check(). `endpoint` is what checkNat() reports. False when not bound
   * (no entry, address family other than the service address's, slots too full).
   */
  bindNat(natId: number, endpoint: number): boolean {
    const r = this.result;
    if (!r.allowed || r.entry < 0 || (r.reason !== 'new' && r.reason !== 'established')) return false;
    const t = this.entryTable;
    const e = r.entry;
    const b = e * STRIDE;
    const u = t.u32;
    const slot = natId & 0xffff;
    const family = this.nat.family[slot];
    if (family === 0 || u[b + W_META] >> 8 !== family) return false;
    const w = this.nat.words;
    const v = 4 * slot;
    if (u[b + W_NAT] !== 0) {
      if (u[b + W_NAT] === natId) {
        u[b + W_NAT_EP] = endpoint;
        return true;
      }
      t.unbindNat(e);
    }
    const key = this.key;
    for (let k = W_META; k < KEY_WORDS; k++) key[k] = u[b + k];
    for (let k = 0; k < 4; k++) key[W_D0 + k] = w[v + k];
    key[W_DWL] = natId;
    const fwd = addressDelta(
      family as 4 | 6,
      w[v],
      w[v + 1],
      w[v + 2],
      w[v + 3],
      u[b + W_D0],
      u[b + W_D0 + 1],
      u[b + W_D0 + 2],
      u[b + W_D0 + 3],
    );
    const rev = addressDelta(
      family as 4 | 6,
      u[b + W_D0],
      u[b + W_D0 + 1],
      u[b + W_D0 + 2],
      u[b + W_D0 + 3],
      w[v],
      w[v + 1],
      w[v + 2],
      w[v + 3],
    );
    return t.bindNat(e, natId, hashKey(key, this.seed), (fwd | (rev << 16)) >>> 0, endpoint);
  }

  /**
   * After the endpoints of the service of `natId` changed: every connection of `tenant` bound
   * to it keeps its endpoint at the index `indexOf` gives for the endpoint's address words, or
   * loses its binding (-1: the endpoint left; its next packet is translated afresh).
   */
  retargetNat(
    tenant: string,
    natId: number,
    indexOf: (family: number, w0: number, w1: number, w2: number, w3: number) => number,
  ): void {
    const zone = this.zones.get(tenant);
    if (zone === undefined) return;
    const t = zone.allowed;
    if (t.natBound === 0) return;
    const u = t.u32;
    for (let e = 0; e < t.capacity; e++) {
      const b = e * STRIDE;
      if (u[b + W_NAT] !== natId || !t.live(e)) continue;
      const i = indexOf(u[b + W_META] >> 8, u[b + W_D0], u[b + W_D0 + 1], u[b + W_D0 + 2], u[b + W_D0 + 3]);
      if (i < 0) t.unbindNat(e);
      else u[b + W_NAT_EP] = i;
    }
  }

  /** Connections bound to a NAT id in a tenant's zone (tests and diagnostics). */
  natBound(tenant: string): number {
    return this.zones.get(tenant)?.allowed.natBound ?? 0;
  }

  /** A reply of a NAT-bound connection, allowed: its source becomes the service address again. */
  private reverseNat(t: ConntrackTable, e: number, buf: Buffer, off: number): CheckResult {
    const r = this.result;
    const b = e * STRIDE;
    const u = t.u32;
    const id = u[b + W_NAT];
    if (id === 0 || !r.allowed) return r;
    const pkt = this.pkt;
    const w = this.nat.words;
    const v = 4 * (id & 0xffff);
    natRewrite(
      buf,
      off,
      pkt.l4,
      pkt.end,
      pkt.family,
      pkt.proto,
      off + (pkt.family === 4 ? 12 : 8),
      u[b + W_NAT_DELTA] >>> 16,
      w[v],
      w[v + 1],
      w[v + 2],
      w[v + 3],
    );
    r.natEndpoint = u[b + W_NAT_EP];
    return r;
  }

  /**
   * Expires idle connections (a slice of every table per call), writes interim records of
   * long ones and flushes the flow log. Call every 100 ms to 1 s.
   */
  tick(now: number): void {
    for (const zone of this.zones.values()) {
      this.sweep(zone, zone.allowed, now);
      this.sweep(zone, zone.denied, now);
    }
    this.flowLog?.flush();
  }

  /** Ends every connection (records with reason "flushed"), of one tenant's zone or all. */
  flush(tenant?: string): void {
    for (const zone of this.zones.values()) {
      if (tenant !== undefined && zone.tenant !== tenant) continue;
      for (const t of [zone.allowed, zone.denied])
        for (let e = 0; e < t.capacity; e++) if (t.live(e)) this.endFlow(zone, t, e, 'flushed');
    }
    this.flowLog?.flush();
  }

  /** Drops a tenant's zone after flushing it (its last workload left this NIC). */
  dropZone(tenant: string): void {
    this.flush(tenant);
    this.zones.delete(tenant);
    if (this.lastZone.tenant === tenant) this.lastZone = NO_ZONE;
  }

  /** Open connections as records of kind "active" (newest first is not guaranteed). */
  snapshot(q: FlowQuery = {}, now = Date.now()): FlowRecord[] {
    const limit = q.limit ?? 100;
    const out: FlowRecord[] = [];
    for (const zone of this.zones.values())
      for (const t of [zone.allowed, zone.denied])
        for (let e = 0; e < t.capacity && out.length < limit; e++) {
          if (!t.live(e)) continue;
          const rec = this.record(zone, t, e, 'active', '', now);
          if (matches(rec, q)) out.push(rec);
        }
    return out;
  }

  /** The flow record of an entry (tests and diagnostics). */
  describe(tenant: string, entry: number): FlowRecord | null {
    const zone = this.zones.get(tenant);
    if (zone === undefined || entry < 0 || entry >= zone.allowed.capacity || !zone.allowed.live(entry))
      return null;
    return this.record(zone, zone.allowed, entry, 'active', '', 0);
  }

  // ------------------------------------------------------------------------------------

  /**
   * The workload a check() argument names. Hot path: reference objects (what the NIC passes,
   * the same object for a workload every time) are remembered by identity, names in the
   * last tenant seen are looked up in that tenant's table directly; both caches are dropped
   * when the directory changes.
   */
  private resolve(
    tenant: string,
    w: string | { readonly tenant: string; readonly workload: string },
  ): WorkloadInfo | undefined {
    const gen = this.directory.generation;
    if (gen !== this.cacheGen) {
      this.cacheGen = gen;
      this.refCache.clear();
      this.lastTenant = null;
    }
    if (typeof w === 'string') {
      if (tenant !== this.lastTenant) {
        this.lastTenant = tenant;
        this.lastTable = this.directory.tenant(tenant)?.workloads;
      }
      return this.lastTable?.get(w);
    }
    let info = this.refCache.get(w);
    if (info === undefined) {
      info = this.directory.tenant(w.tenant)?.workloads.get(w.workload);
      if (info === undefined) return undefined;
      if (this.refCache.size >= MAX_REF_CACHE) this.refCache.clear();
      this.refCache.set(w, info);
    }
    return info;
  }

  private zoneOf(tenant: string): Zone {
    if (tenant === this.lastZone.tenant) return this.lastZone;
    let z = this.zones.get(tenant);
    if (z === undefined) {
      const o = this.options;
      z = new Zone(
        tenant,
        new ConntrackTable({
          maxEntries: o.maxFlowsPerZone,
          initialEntries: o.initialFlowsPerZone,
          timeouts: this.timeouts,
        }),
        new ConntrackTable({
          maxEntries: o.maxDeniedPerZone,
          initialEntries: Math.min(o.initialFlowsPerZone, o.maxDeniedPerZone),
          timeouts: this.timeouts,
        }),
      );
      this.zones.set(tenant, z);
    }
    this.lastZone = z;
    return z;
  }

  private verdict(allowed: boolean, rule: number, reason: CheckReason): CheckResult {
    const r = this.result;
    r.allowed = allowed;
    r.rule = rule === 0 ? '' : this.names.name(rule);
    r.reason = reason;
    return r;
  }

  /**
   * A packet of a tracked connection (found = entry * 2 + reply). Returns false when the
   * entry turned out to be over (expired, or reopened by a new SYN) and was removed: the
   * packet is then a new connection.
   */
  private existing(zone: Zone, found: number, len: number, now: number, gen: number): boolean {
    const t = zone.allowed;
    const e = found >> 1;
    const reply = found & 1;
    const b = e * STRIDE;
    const f = b >> 1;
    const u = t.u32;
    const d = t.f64;
    const c = zone.counters;
    let sw = u[b + W_STATE];
    const st = sw & STATE_MASK;
    if (now - d[f + F_LAST] > this.timeouts[st]) {
      this.endFlow(zone, t, e, 'expired');
      return false;
    }
    if (u[b + W_GEN] !== gen && !this.reevaluate(e, t, gen)) {
      const rule = u[b + W_RULE];
      this.endFlow(zone, t, e, 'revoked');
      c.packetsDenied++;
      c.bytesDenied += len;
      this.verdict(false, rule, 'revoked');
      return true;
    }
    const pkt = this.pkt;
    if (pkt.proto === IPPROTO_TCP) {
      const ns = tcpNext(st, (sw & CLOSER_REPLY) === 0 ? 0 : 1, tcpEvent(pkt.tcpFlags), reply);
      if (ns === TCP_INVALID) {
        c.invalid++;
        c.packetsDenied++;
        c.bytesDenied += len;
        this.verdict(false, u[b + W_RULE], 'invalid');
        return true;
      }
      if (ns === TCP_REOPEN) {
        this.endFlow(zone, t, e, 'closed');
        return false;
      }
      if (ns === ST_FIN_WAIT && !closingState(st)) sw = ns | (reply === 1 ? CLOSER_REPLY : 0);
      else sw = ns | (sw & CLOSER_REPLY);
      u[b + W_STATE] = sw;
    } else if (reply === 1) {
      if (st === ST_UDP_NEW) u[b + W_STATE] = ST_UDP_ESTABLISHED;
      else if (st === ST_ICMP_NEW) u[b + W_STATE] = ST_ICMP_REPLIED;
      else if (st === ST_OTHER_NEW) u[b + W_STATE] = ST_OTHER_ESTABLISHED;
    }
    if (reply === 1) {
      d[f + F_PKTS_R]++;
      d[f + F_BYTES_R] += len;
    } else {
      d[f + F_PKTS_O]++;
      d[f + F_BYTES_O] += len;
    }
    d[f + F_LAST] = now;
    c.packetsAllowed++;
    c.bytesAllowed += len;
    const r = this.verdict(true, u[b + W_RULE], reply === 1 ? 'reply' : 'established');
    r.entry = e;
    this.entryTable = t;
    return true;
  }

  private newFlow(
    zone: Zone,
    src: WorkloadInfo | null,
    dst: WorkloadInfo | null,
    hash: number,
    len: number,
    now: number,
    gen: number,
    scope: number,
  ): CheckResult {
    const c = zone.counters;
    const pkt = this.pkt;
    const key = pkt.words;
    const dt = zone.denied;
    const di = dt.find(hash, key, true);
    if (di >= 0) {
      const e = di >> 1;
      const b = e * STRIDE;
      const f = b >> 1;
      if (dt.u32[b + W_GEN] === gen && now - dt.f64[f + F_LAST] <= this.timeouts[ST_DENIED]) {
        dt.f64[f + F_PKTS_O]++;
        dt.f64[f + F_BYTES_O] += len;
        dt.f64[f + F_LAST] = now;
        c.packetsDenied++;
        c.bytesDenied += len;
        return this.verdict(false, dt.u32[b + W_RULE], 'policy');
      }
      this.endFlow(zone, dt, e, dt.u32[b + W_GEN] === gen ? 'expired' : 'revoked');
    }

    let state: number;
    const proto = pkt.proto;
    if (proto === IPPROTO_TCP) {
      state = tcpFirst(tcpEvent(pkt.tcpFlags), this.options.tcpLoose);
    } else if (proto === IPPROTO_UDP) state = ST_UDP_NEW;
    else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6)
      state = pkt.icmpKind === ICMP_ECHO_REPLY ? TCP_INVALID : ST_ICMP_NEW;
    else state = ST_OTHER_NEW;
    if (state === TCP_INVALID) {
      c.invalid++;
      c.packetsDenied++;
      c.bytesDenied += len;
      return this.verdict(false, 0, 'invalid');
    }

    const dec = this.decision;
    decide(
      this.store,
      src,
      dst,
      pkt.family,
      key[W_S0],
      key[W_S0 + 1],
      key[W_S0 + 2],
      key[W_S0 + 3],
      key[W_D0],
      key[W_D0 + 1],
      key[W_D0 + 2],
      key[W_D0 + 3],
      bucketOf(proto),
      pkt.dport,
      scope,
      dec,
    );
    const t = dec.allowed ? zone.allowed : dt;
    const e = this.insert(zone, t, hash, key, now);
    const b = e * STRIDE;
    const f = b >> 1;
    const u = t.u32;
    u[b + W_STATE] = dec.allowed ? state : ST_DENIED;
    u[b + W_GEN] = gen;
    u[b + W_RULE] = dec.rule;
    u[b + W_FLAGS] = scope;
    t.cold32[e * COLD_STRIDE + C_RULE_E] = dec.egress;
    t.cold32[e * COLD_STRIDE + C_RULE_I] = dec.ingress;
    t.f64[f + F_PKTS_O] = 1;
    t.f64[f + F_BYTES_O] = len;
    if (dec.allowed) {
      c.flowsAllowed++;
      c.packetsAllowed++;
      c.bytesAllowed += len;
      const r = this.verdict(true, dec.rule, 'new');
      r.entry = e;
      this.entryTable = t;
      return r;
    }
    c.flowsDenied++;
    c.packetsDenied++;
    c.bytesDenied += len;
    return this.verdict(false, dec.rule, 'policy');
  }

  /** Inserts the current key, evicting the table's victim when it is full. */
  private insert(zone: Zone, t: ConntrackTable, hash: number, key: Uint32Array, now: number): number {
    let e = t.insert(hash, key, now);
    if (e < 0) {
      const v = t.victim();
      if (t === zone.allowed) zone.counters.evicted++;
      else zone.counters.deniedEvicted++;
      this.endFlow(zone, t, v, 'evicted');
      e = t.insert(hash, key, now);
    }
    return e;
  }

  /** Decides a tracked connection again under the current policy; true when still allowed. */
  private reevaluate(e: number, t: ConntrackTable, gen: number): boolean {
    const b = e * STRIDE;
    const u = t.u32;
    const swl = u[b + W_SWL];
    const dwl = u[b + W_DWL];
    const src = swl === 0 ? null : this.directory.byId(swl);
    const dst = dwl === 0 ? null : this.directory.byId(dwl);
    if (src === undefined || dst === undefined) return false;
    const meta = u[b + W_META];
    const proto = meta & 0xff;
    const dec = this.decision;
    decide(
      this.store,
      src,
      dst,
      (meta >> 8) as Family,
      u[b + W_S0],
      u[b + W_S0 + 1],
      u[b + W_S0 + 2],
      u[b + W_S0 + 3],
      u[b + W_D0],
      u[b + W_D0 + 1],
      u[b + W_D0 + 2],
      u[b + W_D0 + 3],
      bucketOf(proto),
      proto === IPPROTO_TCP || proto === IPPROTO_UDP ? u[b + W_DPORT] : 0,
      u[b + W_FLAGS],
      dec,
    );
    if (!dec.allowed) return false;
    u[b + W_GEN] = gen;
    u[b + W_RULE] = dec.rule;
    t.cold32[e * COLD_STRIDE + C_RULE_E] = dec.egress;
    t.cold32[e * COLD_STRIDE + C_RULE_I] = dec.ingress;
    return true;
  }

  /** An ICMP error: allowed when it reports on a tracked connection (its embedded packet). */
  private related(
    zone: Zone,
    other: Zone | null,
    src: WorkloadInfo | null,
    dst: WorkloadInfo | null,
    buf: Buffer,
    len: number,
    now: number,
  ): CheckResult {
    const pkt = this.pkt;
    const inner = this.inner;
    const c = zone.counters;
    if (
      parsePacket(buf, pkt.innerOff, pkt.innerLen, inner, true) !== PARSE_OK ||
      inner.family !== pkt.family
    ) {
      c.invalid++;
      c.packetsDenied++;
      c.bytesDenied += len;
      return this.verdict(false, 0, 'invalid');
    }
    // The embedded packet went the other way: from this error's destination to its source.
    const key = this.key;
    const iw = inner.words;
    for (let k = W_META; k < KEY_WORDS; k++) key[k] = iw[k];
    key[W_SWL] = dst === null ? 0 : dst.id;
    key[W_DWL] = src === null ? 0 : src.id;
    const hash = hashKey(key, this.seed);
    let z = zone;
    let found = zone.allowed.find(hash, key, false);
    if (found < 0 && other !== null) {
      z = other;
      found = other.allowed.find(hash, key, false);
    }
    if (found >= 0) {
      const e = found >> 1;
      const b = e * STRIDE;
      const st = z.allowed.u32[b + W_STATE] & STATE_MASK;
      if (now - z.allowed.f64[(b >> 1) + F_LAST] <= this.timeouts[st]) {
        c.related++;
        c.packetsAllowed++;
        c.bytesAllowed += len;
        const r = this.verdict(true, z.allowed.u32[b + W_RULE], 'related');
        r.entry = e;
        return r;
      }
    }
    c.invalid++;
    c.packetsDenied++;
    c.bytesDenied += len;
    return this.verdict(false, 0, 'invalid');
  }

  private sweep(zone: Zone, t: ConntrackTable, now: number): void {
    const n = Math.min(this.options.sweepPerTick, t.capacity);
    const interim = this.interimMs > 0 && t === zone.allowed && this.flowLog !== null;
    for (let k = 0; k < n; k++) {
      const e = t.hand;
      t.hand = e + 1 >= t.capacity ? 0 : e + 1;
      if (!t.live(e)) continue;
      const b = e * STRIDE;
      const f = b >> 1;
      const st = t.u32[b + W_STATE] & STATE_MASK;
      if (now - t.f64[f + F_LAST] > this.timeouts[st]) this.endFlow(zone, t, e, 'expired');
      else if (interim && now - t.cold64[((e * COLD_STRIDE) >> 1) + CF_REPORTED] >= this.interimMs) {
        t.cold64[((e * COLD_STRIDE) >> 1) + CF_REPORTED] = now;
        this.flowLog?.add(this.record(zone, t, e, 'interim', '', now));
      }
    }
  }

  private endFlow(zone: Zone, t: ConntrackTable, e: number, reason: EndReason): void {
    const st = t.u32[e * STRIDE + W_STATE] & STATE_MASK;
    const why = reason === 'expired' && (st === ST_TIME_WAIT || st === ST_CLOSED) ? 'closed' : reason;
    if (t === zone.allowed) {
      if (why === 'expired' || why === 'closed') zone.counters.expired++;
      else if (why === 'revoked') zone.counters.revoked++;
    }
    if (this.flowLog !== null) this.flowLog.add(this.record(zone, t, e, 'end', why, 0));
    t.remove(e);
  }

  private record(
    zone: Zone,
    t: ConntrackTable,
    e: number,
    kind: FlowRecord['kind'],
    reason: string,
    now: number,
  ): FlowRecord {
    const u = t.u32;
    const d = t.f64;
    const b = e * STRIDE;
    const f = b >> 1;
    const meta = u[b + W_META];
    const proto = meta & 0xff;
    const family = (meta >> 8) as Family;
    const swl = u[b + W_SWL];
    const dwl = u[b + W_DWL];
    const sw = swl === 0 ? undefined : this.directory.describe(swl);
    const dw = dwl === 0 ? undefined : this.directory.describe(dwl);
    const st = u[b + W_STATE] & STATE_MASK;
    const ported = proto === IPPROTO_TCP || proto === IPPROTO_UDP;
    const icmp = proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6;
    const sport = u[b + W_SPORT];
    const cb = e * COLD_STRIDE;
    const startMs = t.cold64[(cb >> 1) + CF_START];
    const endMs = kind === 'end' ? d[f + F_LAST] : Math.max(now, d[f + F_LAST]);
    const scope = u[b + W_FLAGS];
    const ruleName = (h: number) => (h === 0 ? null : this.names.name(h));
    return {
      kind,
      start: new Date(startMs).toISOString(),
      end: new Date(endMs).toISOString(),
      startMs,
      endMs,
      tenant: zone.tenant,
      srcTenant: swl === 0 ? null : (sw?.tenant ?? null),
      srcWorkload: swl === 0 ? null : (sw?.name ?? `#${swl}`),
      dstTenant: dwl === 0 ? null : (dw?.tenant ?? null),
      dstWorkload: dwl === 0 ? null : (dw?.name ?? `#${dwl}`),
      family,
      protocol: PROTO_NAMES[proto] ?? String(proto),
      src: formatWords(family, u[b + W_S0], u[b + W_S0 + 1], u[b + W_S0 + 2], u[b + W_S0 + 3]),
      dst: formatWords(family, u[b + W_D0], u[b + W_D0 + 1], u[b + W_D0 + 2], u[b + W_D0 + 3]),
      srcPort: ported ? sport : null,
      dstPort: ported ? u[b + W_DPORT] : null,
      icmpId: icmp && sport < ECHO_MARK ? sport : null,
      icmpType: icmp && sport >= ICMP_OTHER_MARK ? (sport >> 8) & 0xff : null,
      packetsToDst: d[f + F_PKTS_O],
      bytesToDst: d[f + F_BYTES_O],
      packetsToSrc: d[f + F_PKTS_R],
      bytesToSrc: d[f + F_BYTES_R],
      verdict: st === ST_DENIED ? 'deny' : 'allow',
      rule: this.names.name(u[b + W_RULE]),
      egressRule: ruleName(t.cold32[cb + C_RULE_E]),
      ingressRule: ruleName(t.cold32[cb + C_RULE_I]),
      state: STATE_NAMES[st],
      reason,
      observed: scope === SCOPE_EGRESS ? 'egress' : scope === SCOPE_INGRESS ? 'ingress' : 'both',
    };
  }
}
