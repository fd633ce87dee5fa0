// Egress at the NIC: traffic from a local workload to an address outside the fabric, decided
// by the tenant's egress policy (CIDR and FQDN peers, src/policy) and source-NATed to the NIC's
// uplink address, the one place where tenant plaintext leaves (README "Egress"). Egress holds
// the NIC's three tables, all bounded and pure (time is passed in, no I/O; the data plane
// moves the packets): the names per tenant (egress-names.ts), the source NAT (snat.ts) and the
// queries forwarded upstream (upstream-dns.ts).
import { addressKey, NameCache } from './egress-names.js';
import { SnatTable } from './snat.js';
import { UpstreamDns } from './upstream-dns.js';

export { addressKey, addressKeyOf, NameCache } from './egress-names.js';
export type { SnatOwner } from './snat.js';

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
