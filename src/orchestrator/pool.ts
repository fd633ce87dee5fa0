// Per-tenant IPv4 address pools inside the shared overlay range 100.64.0.0/10: parsing,
// overlap, and lowest-free allocation. Pure functions, no store.
import { formatIPv4Number, parseIPv4Number } from '../net/ip.js';
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
