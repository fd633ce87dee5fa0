// Per-tenant IPv4 address pools inside the shared overlay range 100.64.0.0/10: parsing,
// overlap, and lowest-free allocation; and the IPv6 prefix derived from each pool (below).
// Pure functions, no store.
import { formatIPv4Number, formatIp, parseIPv4Number, parseIp } from '../net/ip.js';
import { TgError } from '../util/errors.js';

/** Every tenant pool lies inside this range (RFC 6598 shared address space). */
export const OVERLAY_RANGE = '100.64.0.0/10';
/** The smallest pool: /30 gives two usable addresses. */
export const MAX_POOL_PREFIX = 30;

export interface Ipv4Cidr {
  /** Network address as an unsigned 32-bit integer. */
  network: number;
  prefix: number;
  /** Canonical text 'a.b.c.d/n'. */
  text: string;
}

function mask(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

/** Parses 'a.b.c.d/n' exactly (no host bits set); null when it is not one. */
export function parseIpv4Cidr(text: string): Ipv4Cidr | null {
  const m = /^([0-9.]{7,15})\/([0-9]{1,2})$/.exec(text);
  if (m === null) return null;
  const addr = parseIPv4Number(m[1]);
  const prefix = Number(m[2]);
  if (addr === null || prefix > 32) return null;
  if ((addr & ~mask(prefix)) >>> 0 !== 0) return null;
  return { network: addr, prefix, text: `${formatIPv4Number(addr)}/${prefix}` };
}

const OVERLAY = parseIpv4Cidr(OVERLAY_RANGE)!;

export function contains(outer: Ipv4Cidr, addr: number): boolean {
  return (addr & mask(outer.prefix)) >>> 0 === outer.network;
}

export function overlaps(a: Ipv4Cidr, b: Ipv4Cidr): boolean {
  const p = Math.min(a.prefix, b.prefix);
  return (a.network & mask(p)) >>> 0 === (b.network & mask(p)) >>> 0;
}

/** A tenant pool: a CIDR inside 100.64.0.0/10, from /10 to /30. TG_ERR_INVALID_ARGUMENT otherwise. */
export function parsePool(text: string): Ipv4Cidr {
  const c = parseIpv4Cidr(text);
  if (c === null)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `pool '${text.slice(0, 64)}' is not an IPv4 CIDR a.b.c.d/n with no host bits set`,
    );
  if (c.prefix < OVERLAY.prefix || c.prefix > MAX_POOL_PREFIX || !contains(OVERLAY, c.network))
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `pool ${c.text} must lie inside ${OVERLAY_RANGE} with a prefix length from /${OVERLAY.prefix} to /${MAX_POOL_PREFIX}`,
    );
  return c;
}

/** Usable addresses of a pool: all but the network and broadcast addresses. */
export function poolSize(pool: Ipv4Cidr): number {
  return 2 ** (32 - pool.prefix) - 2;
}

/**
 * The lowest usable address of `pool` not in `taken`; TG_ERR_POOL_EXHAUSTED when none is left.
 */
export function lowestFree(pool: Ipv4Cidr, taken: ReadonlySet<string>, tenant: string): string {
  const first = pool.network + 1;
  const last = pool.network + 2 ** (32 - pool.prefix) - 2;
  for (let a = first; a <= last; a++) {
    const text = formatIPv4Number(a);
    if (!taken.has(text)) return text;
  }
  throw new TgError(
    'TG_ERR_POOL_EXHAUSTED',
    `tenant '${tenant}': every address of pool ${pool.text} (${poolSize(pool)}) is allocated`,
  );
}

// --- IPv6 (dual stack) -------------------------------------------------------------------
//
// Every tenant also has an IPv6 ULA prefix (RFC 4193, inside fd00::/8), a /64 derived from its
// IPv4 pool by one rule, so that no second allocation and no second overlap check is needed:
//
//   pool a.b.c.d/n (network N, 32 bits)  ->  fd64:NNNN:NNNN::/64   (fd64 | N | 16 zero bits)
//   workload address A in the pool       ->  fd64:NNNN:NNNN::AAAA:AAAA   (A in the low 32 bits)
//
// e.g. pool 100.64.1.0/24 -> fd64:6440:100::/64, workload 100.64.1.3 -> fd64:6440:100::6440:103.
// Pools never overlap, so their networks differ and so do the /64s; a workload's IPv6 address
// is a function of its IPv4 address, unique in its tenant as that one is. Departure from RFC
// 4193: the 40-bit global ID is not random (0x64 and the pool's 32-bit network; subnet ID 0),
// which is harmless for an overlay that is never routed beyond the tenant's sessions.

/** Every tenant's IPv6 prefix lies inside this range. */
export const OVERLAY6_RANGE = 'fd64::/16';
/** Length of a tenant's IPv6 prefix. */
export const POOL6_PREFIX = 64;

/** The IPv6 prefix of the tenant whose IPv4 pool is `pool` (canonical text 'fd64:...::/64'). */
export function pool6Of(pool: Ipv4Cidr): string {
  const b = new Uint8Array(16);
  b[0] = 0xfd;
  b[1] = 0x64;
  b[2] = pool.network >>> 24;
  b[3] = (pool.network >>> 16) & 255;
  b[4] = (pool.network >>> 8) & 255;
  b[5] = pool.network & 255;
  return `${formatIp(b)}/${POOL6_PREFIX}`;
}

/** The IPv6 address of the workload whose IPv4 address is `v4` in the tenant of `pool6`. */
export function address6Of(pool6: string, v4: string): string {
  const slash = pool6.indexOf('/');
  const net = parseIp(pool6.slice(0, slash));
  const a = parseIPv4Number(v4);
  if (net === null || net.length !== 16 || a === null)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `cannot derive an IPv6 address from ${pool6} and ${v4}`);
  const b = Uint8Array.from(net);
  b[12] = a >>> 24;
  b[13] = (a >>> 16) & 255;
  b[14] = (a >>> 8) & 255;
  b[15] = a & 255;
  return formatIp(b);
}

/**
 * The highest usable address of `pool` not in `taken` (services and the DNS server take
 * addresses from the top, workloads from the bottom); TG_ERR_POOL_EXHAUSTED when none is left.
 */
export function highestFree(pool: Ipv4Cidr, taken: ReadonlySet<string>, tenant: string): string {
  const first = pool.network + 1;
  const last = pool.network + 2 ** (32 - pool.prefix) - 2;
  for (let a = last; a >= first; a--) {
    const text = formatIPv4Number(a);
    if (!taken.has(text)) return text;
  }
  throw new TgError(
    'TG_ERR_POOL_EXHAUSTED',
    `tenant '${tenant}': every address of pool ${pool.text} (${poolSize(pool)}) is allocated`,
  );
}
