// A tenant's rules compiled into the structure new connections are decided with, without
// scanning the rule list per packet:
//
//   workload -> class      Every distinct selector of the policy gets an index; a workload's
//                          class is the set of selectors it matches (interned), computed once
//                          per workload and policy (workloads with the same labels share one).
//   outside peer -> class  The set of the policy's CIDRs that contain the address (a short
//                          scan of the CIDR list, not of the rules) and of its FQDN names and
//                          patterns that match a live DNS name of the address (fqdn.ts; the
//                          names come from the caller), interned the same way.
//   workload peer at an    A workload peer whose address (IPv4 or IPv6, as in the packet) lies
//   address -> class       in some of the policy's CIDRs: the pair (its workload class, that
//                          CIDR set), interned apart; a rule matches it by selector or by CIDR.
//                          A policy without CIDRs never makes one (no cost).
//   (side, class of the selected workload, class of the peer) -> pair table, built on first
//                          use from the rules that can match that pair, then cached.
//   pair table             per protocol bucket (tcp, udp, icmp, other) the winning rule of
//                          every destination port interval, first match in document order
//                          already resolved; a lookup is a binary search over a few intervals.
//
// Rule handles (RuleNames) are small integers standing for "tenant/rule-id", stable across
// policy versions, so conntrack entries and flow records carry a number, not a string.
import { type Cidr, cidrContains, type Family } from './address.js';
import type { WorkloadInfo } from './directory.js';
import { type FqdnMatcher, fqdnMatches } from './fqdn.js';
import {
  type NormalRule,
  type NormalSelector,
  PROTO_ICMP,
  PROTO_OTHER,
  PROTO_TCP,
  PROTO_UDP,
} from './normalize.js';

export const SIDE_EGRESS = 0;
export const SIDE_INGRESS = 1;
export type Side = typeof SIDE_EGRESS | typeof SIDE_INGRESS;

export const BUCKET_TCP = 0;
export const BUCKET_UDP = 1;
export const BUCKET_ICMP = 2;
export const BUCKET_OTHER = 3;

const BUCKET_MASKS = [PROTO_TCP, PROTO_UDP, PROTO_ICMP, PROTO_OTHER];
/** Outside classes are numbered apart from workload classes. */
const OUTSIDE = 1 << 21;
/** So are workload-at-an-address classes (workload class + CIDR set). */
const ADDRESSED = 1 << 20;
/** Bound on the cache of workload addresses' CIDR sets: beyond it the cache starts over. */
const MAX_ADDRESS_CACHE = 16_384;
/** Bound on cached pair tables per policy: beyond it the cache starts over. */
const MAX_PAIRS = 1 << 18;

export function bucketOf(ipProto: number): number {
  return ipProto === 6
    ? BUCKET_TCP
    : ipProto === 17
      ? BUCKET_UDP
      : ipProto === 1 || ipProto === 58
        ? BUCKET_ICMP
        : BUCKET_OTHER;
}

/** Interned names of rules as `tenant/rule-id`; handle 0 is "no rule". */
export class RuleNames {
  private readonly names: string[] = [''];
  private readonly handles = new Map<string, number>();

  intern(tenant: string, id: string): number {
    const name = `${tenant}/${id}`;
    let h = this.handles.get(name);
    if (h === undefined) {
      h = this.names.length;
      this.names.push(name);
      this.handles.set(name, h);
    }
    return h;
  }

  name(handle: number): string {
    return this.names[handle] ?? '';
  }
}

/** Winning rule index per destination-port interval for one protocol bucket. */
class PortMap {
  constructor(
    readonly starts: Int32Array,
    readonly winners: Int32Array,
  ) {}

  lookup(port: number): number {
    const s = this.starts;
    let lo = 0;
    let hi = s.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (s[mid] <= port) lo = mid;
      else hi = mid - 1;
    }
    return this.winners[lo];
  }
}

const NO_MATCH = new PortMap(Int32Array.of(0), Int32Array.of(-1));

class PairTable {
  constructor(readonly buckets: readonly PortMap[]) {}
}

const EMPTY_PAIR = new PairTable([NO_MATCH, NO_MATCH, NO_MATCH, NO_MATCH]);

function buildPortMap(candidates: readonly NormalRule[], bucket: number): PortMap {
  const mask = BUCKET_MASKS[bucket];
  const rules = candidates.filter((r) => (r.protoMask & mask) !== 0);
  if (rules.length === 0) return NO_MATCH;
  if (bucket === BUCKET_ICMP || bucket === BUCKET_OTHER)
    return new PortMap(Int32Array.of(0), Int32Array.of(rules[0].index));
  const bounds = new Set<number>([0]);
  for (const r of rules) {
    if (r.ports === null) continue;
    for (const [lo, hi] of r.ports) {
      bounds.add(lo);
      if (hi < 65535) bounds.add(hi + 1);
    }
  }
  const starts = [...bounds].sort((a, b) => a - b);
  const outStarts: number[] = [];
  const outWinners: number[] = [];
  for (const s of starts) {
    let w = -1;
    for (const r of rules) {
      if (r.ports === null || r.ports.some(([lo, hi]) => s >= lo && s <= hi)) {
        w = r.index;
        break;
      }
    }
    if (outWinners.length > 0 && outWinners[outWinners.length - 1] === w) continue;
    outStarts.push(s);
    outWinners.push(w);
  }
  return new PortMap(Int32Array.from(outStarts), Int32Array.from(outWinners));
}

export function selectorMatches(
  s: NormalSelector,
  w: { tenant: string; name: string; labels: Readonly<Record<string, string>> },
): boolean {
  if (s.tenant !== w.tenant) return false;
  if (s.workload !== null) return s.workload === w.name;
  for (const [k, v] of s.labels) if (w.labels[k] !== v) return false;
  return true;
}

export class CompiledPolicy {
  readonly tenant: string;
  readonly rules: readonly NormalRule[];
  /** Handle of each rule, by rule index. */
  readonly handles: Int32Array;
  /** Handle of this tenant's default deny. */
  readonly defaultDeny: number;
  readonly actions: Uint8Array;
  private readonly selectors: NormalSelector[] = [];
  private readonly cidrs: Cidr[] = [];
  /** FQDN names and patterns; in an outside set they follow the CIDRs (index cidrs.length + i). */
  private readonly fqdns: FqdnMatcher[] = [];
  /** Per rule: index of its selected selector, of its peer selectors, CIDRs and FQDNs. */
  private readonly ruleSel: Int32Array;
  private readonly rulePeers: Int32Array[];
  private readonly ruleCidrs: Int32Array[];
  private readonly ruleFqdns: Int32Array[];
  private readonly classIds = new Map<string, number>();
  private readonly classSets: Uint8Array[] = [];
  private readonly outsideIds = new Map<string, number>();
  private readonly outsideSets: Uint8Array[] = [];
  /**
   * Class per registered workload, keyed by its (frozen, replaced on any label change) entry:
   * weak, so a workload removed from the directory leaves this cache with it. Keyed by id, a
   * cache kept every workload a long-lived policy ever saw (a churning NIC grew without end).
   */
  private readonly workloadClass = new WeakMap<WorkloadInfo, number>();
  /** Workload-at-an-address classes: key cls * 2^21 + outside id -> index into addressedParts. */
  private readonly addressedIds = new Map<number, number>();
  private addressedParts: [cls: number, outside: number][] = [];
  /** The outside class of workload addresses seen (IPv4 by number, IPv6 by text of its words). */
  private readonly addressOutside4 = new Map<number, number>();
  private readonly addressOutside6 = new Map<string, number>();
  /** Whether the policy has CIDRs of each family (none: addresses of that family never matter). */
  private hasCidr4 = false;
  private hasCidr6 = false;
  private readonly pairs = new Map<number, PairTable>();

  constructor(tenant: string, rules: readonly NormalRule[], names: RuleNames) {
    this.tenant = tenant;
    this.rules = rules;
    this.handles = Int32Array.from(rules.map((r) => names.intern(tenant, r.id)));
    this.actions = Uint8Array.from(rules.map((r) => (r.action === 'allow' ? 1 : 0)));
    this.defaultDeny = names.intern(tenant, 'default-deny');
    const selIndex = new Map<string, number>();
    const sel = (s: NormalSelector): number => {
      let i = selIndex.get(s.key);
      if (i === undefined) {
        i = this.selectors.length;
        this.selectors.push(s);
        selIndex.set(s.key, i);
      }
      return i;
    };
    const cidrIndex = new Map<string, number>();
    const cidr = (c: Cidr): number => {
      let i = cidrIndex.get(c.text);
      if (i === undefined) {
        i = this.cidrs.length;
        this.cidrs.push(c);
        cidrIndex.set(c.text, i);
      }
      return i;
    };
    this.ruleSel = Int32Array.from(rules.map((r) => sel(r.selected)));
    this.rulePeers = rules.map((r) => Int32Array.from(r.peers.map(sel)));
    this.ruleCidrs = rules.map((r) => Int32Array.from(r.cidrs.map(cidr)));
    const fqdnIndex = new Map<string, number>();
    const fqdn = (m: FqdnMatcher): number => {
      let i = fqdnIndex.get(m.text);
      if (i === undefined) {
        i = this.fqdns.length;
        this.fqdns.push(m);
        fqdnIndex.set(m.text, i);
      }
      return i;
    };
    const fqdnBase = this.cidrs.length;
    this.ruleFqdns = rules.map((r) => Int32Array.from(r.fqdns.map((m) => fqdnBase + fqdn(m))));
    this.hasCidr4 = this.cidrs.some((c) => c.family === 4);
    this.hasCidr6 = this.cidrs.some((c) => c.family === 6);
    // Class 0 is "matches no selector": every lookup with it is a default deny.
    this.intern(this.classIds, this.classSets, new Uint8Array(this.selectors.length));
    this.intern(this.outsideIds, this.outsideSets, new Uint8Array(this.cidrs.length + this.fqdns.length));
  }

  /** Whether the policy names outside peers by DNS name (else names never matter). */
  get hasFqdns(): boolean {
    return this.fqdns.length > 0;
  }

  /**
   * Whether the policy lets a workload of class `cls` resolve `name` (canonical) through the
   * NIC's DNS server: the first egress rule selecting it with an FQDN peer matching the name
   * decides (allow or deny); none: refused.
   */
  fqdnAllows(cls: number, name: string): { allowed: boolean; rule: number } {
    if (cls === 0 || this.fqdns.length === 0) return { allowed: false, rule: -1 };
    const selSet = this.classSets[cls];
    const base = this.cidrs.length;
    for (const r of this.rules) {
      if (r.direction !== 'egress' || selSet[this.ruleSel[r.index]] !== 1) continue;
      for (const i of this.ruleFqdns[r.index])
        if (fqdnMatches(this.fqdns[i - base], name)) return { allowed: r.action === 'allow', rule: r.index };
    }
    return { allowed: false, rule: -1 };
  }

  /** The first of `names` that one of rule `index`'s FQDN peers matches, else null. */
  fqdnOfRule(index: number, names: readonly string[]): string | null {
    const base = this.cidrs.length;
    const own = this.ruleFqdns[index];
    if (own === undefined) return null;
    for (const n of names) for (const i of own) if (fqdnMatches(this.fqdns[i - base], n)) return n;
    return null;
  }

  private intern(ids: Map<string, number>, sets: Uint8Array[], set: Uint8Array): number {
    const key = set.join('');
    let id = ids.get(key);
    if (id === undefined) {
      id = sets.length;
      sets.push(set);
      ids.set(key, id);
    }
    return id;
  }

  /** Class of a workload (of any tenant) in this policy. */
  classOf(w: WorkloadInfo): number {
    const c = this.workloadClass.get(w);
    if (c !== undefined) return c;
    const cls = this.classOfLabels(w);
    this.workloadClass.set(w, cls);
    return cls;
  }

  /** Class of a workload given by tenant, name and labels (also hypothetical ones, for policy tests). */
  classOfLabels(w: { tenant: string; name: string; labels: Readonly<Record<string, string>> }): number {
    const set = new Uint8Array(this.selectors.length);
    let any = false;
    for (let i = 0; i < this.selectors.length; i++)
      if (selectorMatches(this.selectors[i], w)) {
        set[i] = 1;
        any = true;
      }
    return any ? this.intern(this.classIds, this.classSets, set) : 0;
  }

  /** Class of an outside peer's address, known by the DNS names `names` (canonical) or none. */
  outsideClass(
    family: Family,
    a0: number,
    a1: number,
    a2: number,
    a3: number,
    names: readonly string[] | null = null,
  ): number {
    const n = this.cidrs.length;
    const m = this.fqdns.length;
    if (n + m === 0) return OUTSIDE;
    let set: Uint8Array | null = null;
    for (let i = 0; i < n; i++) {
      if (!cidrContains(this.cidrs[i], family, a0, a1, a2, a3)) continue;
      if (set === null) set = new Uint8Array(n + m);
      set[i] = 1;
    }
    if (names !== null && m > 0)
      for (let i = 0; i < m; i++) {
        const f = this.fqdns[i];
        if (!names.some((name) => fqdnMatches(f, name))) continue;
        if (set === null) set = new Uint8Array(n + m);
        set[n + i] = 1;
      }
    return set === null ? OUTSIDE : OUTSIDE | this.intern(this.outsideIds, this.outsideSets, set);
  }

  /**
   * The class of a workload peer (class `cls`) seen at an address: `cls` itself unless the
   * address lies in one of the policy's CIDRs, else the class that lets rules match it by
   * selector or by CIDR.
   */
  addressedClass(cls: number, family: Family, a0: number, a1: number, a2: number, a3: number): number {
    let out: number | undefined;
    if (family === 4) {
      if (!this.hasCidr4) return cls;
      out = this.addressOutside4.get(a0);
      if (out === undefined) {
        out = this.outsideClass(4, a0, 0, 0, 0);
        if (this.addressOutside4.size >= MAX_ADDRESS_CACHE) this.addressOutside4.clear();
        this.addressOutside4.set(a0, out);
      }
    } else {
      if (!this.hasCidr6) return cls;
      const k = `${a0},${a1},${a2},${a3}`;
      out = this.addressOutside6.get(k);
      if (out === undefined) {
        out = this.outsideClass(6, a0, a1, a2, a3);
        if (this.addressOutside6.size >= MAX_ADDRESS_CACHE) this.addressOutside6.clear();
        this.addressOutside6.set(k, out);
      }
    }
    if (out === OUTSIDE) return cls;
    const key = cls * OUTSIDE + (out & (OUTSIDE - 1));
    let id = this.addressedIds.get(key);
    if (id === undefined) {
      if (this.addressedParts.length >= ADDRESSED - 1) {
        // The ids are part of the pair cache's keys: both start over.
        this.addressedIds.clear();
        this.addressedParts = [];
        this.pairs.clear();
      }
      id = this.addressedParts.length;
      this.addressedParts.push([cls, out]);
      this.addressedIds.set(key, id);
    }
    return ADDRESSED | id;
  }

  /**
   * The index of the rule that decides `side` of the connection for the selected workload's
   * class and the peer's class, protocol bucket and destination port; -1 when no rule
   * matches (default deny).
   */
  lookup(side: Side, selCls: number, peerCls: number, bucket: number, port: number): number {
    if (selCls === 0) return -1;
    const key = (side * 2 ** 22 + selCls) * 2 ** 22 + peerCls;
    let t = this.pairs.get(key);
    if (t === undefined) {
      t = this.buildPair(side, selCls, peerCls);
      if (this.pairs.size >= MAX_PAIRS) this.pairs.clear();
      this.pairs.set(key, t);
    }
    return t.buckets[bucket].lookup(port);
  }

  private buildPair(side: Side, selCls: number, peerCls: number): PairTable {
    const selSet = this.classSets[selCls];
    let workloadSet: Uint8Array | null = null;
    let cidrSet: Uint8Array | null = null;
    if ((peerCls & OUTSIDE) !== 0) cidrSet = this.outsideSets[peerCls & (OUTSIDE - 1)];
    else if ((peerCls & ADDRESSED) !== 0) {
      const [cls, out] = this.addressedParts[peerCls & (ADDRESSED - 1)];
      workloadSet = this.classSets[cls];
      cidrSet = this.outsideSets[out & (OUTSIDE - 1)];
    } else workloadSet = this.classSets[peerCls];
    const dir = side === SIDE_EGRESS ? 'egress' : 'ingress';
    const candidates = this.rules.filter((r) => {
      if (r.direction !== dir || selSet[this.ruleSel[r.index]] !== 1) return false;
      if (workloadSet !== null)
        for (const i of this.rulePeers[r.index]) if (workloadSet[i] === 1) return true;
      if (cidrSet !== null) {
        for (const i of this.ruleCidrs[r.index]) if (cidrSet[i] === 1) return true;
        for (const i of this.ruleFqdns[r.index]) if (cidrSet[i] === 1) return true;
      }
      return false;
    });
    if (candidates.length === 0) return EMPTY_PAIR;
    return new PairTable([0, 1, 2, 3].map((b) => buildPortMap(candidates, b)));
  }

  /** Number of cached pair tables (for tests and metrics). */
  get pairCount(): number {
    return this.pairs.size;
  }
}
