// Workload addresses as the NIC accepts them: one unicast host address (IPv4 or IPv6) per
// workload, or a dual-stack pair (IPv4 `address` and IPv6 `address6`). Their prefixes (/32,
// /128) are the workload's only allowed IPs on its on-host session, which is what makes a
// forged source address a cryptokey-routing drop.
import { formatIp, parseIp } from '../net/ip.js';
import type { IpPrefix } from '../protocol/allowedips.js';
import { TgError } from '../util/errors.js';

export interface HostAddress {
  family: 4 | 6;
  bytes: Uint8Array;
  /** Canonical text. */
  text: string;
}

function inV4(b: Uint8Array, net: number, bits: number): boolean {
  const a = ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
  const mask = bits === 0 ? 0 : (0xffffffff << (32 - bits)) >>> 0;
  return (a & mask) >>> 0 === (net & mask) >>> 0;
}

/** Why a parsed address cannot be a workload's, or null when it can. */
function unusable(bytes: Uint8Array): string | null {
  if (bytes.length === 4) {
    if (inV4(bytes, 0x00000000, 8)) return 'in 0.0.0.0/8';
    if (inV4(bytes, 0x7f000000, 8)) return 'a loopback address';
    if (inV4(bytes, 0xa9fe0000, 16)) return 'a link-local address';
    if (inV4(bytes, 0xe0000000, 4)) return 'a multicast address';
    if (inV4(bytes, 0xf0000000, 4)) return 'a reserved or broadcast address';
    return null;
  }
  if (bytes.every((x) => x === 0)) return 'the unspecified address';
  if (bytes.slice(0, 15).every((x) => x === 0) && bytes[15] === 1) return 'the loopback address';
  if (bytes[0] === 0xff) return 'a multicast address';
  if (bytes[0] === 0xfe && (bytes[1] & 0xc0) === 0x80) return 'a link-local address';
  if (bytes.slice(0, 10).every((x) => x === 0) && bytes[10] === 0xff && bytes[11] === 0xff)
    return 'an IPv4-mapped address';
  return null;
}

/** Parses a workload address; TG_ERR_INVALID_ARGUMENT naming the problem otherwise. */
export function parseHostAddress(text: string, what = 'address'): HostAddress {
  const bytes = parseIp(text);
  if (bytes === null)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${what} '${text.slice(0, 64)}' is not an IPv4 or IPv6 address`,
    );
  const why = unusable(bytes);
  if (why !== null) throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} ${formatIp(bytes)} is ${why}`);
  return { family: bytes.length === 4 ? 4 : 6, bytes, text: formatIp(bytes) };
}

/** The host prefix of an address (/32 or /128). */
export function hostPrefix(a: HostAddress): IpPrefix {
  return { address: a.bytes, bits: a.bytes.length * 8 };
}

/**
 * A dual-stack workload's second address: `address6` must be IPv6 and `primary` IPv4 (a
 * workload has at most one address per family). null when `address6` is absent.
 */
export function parseAddress6(
  primary: HostAddress,
  address6: string | undefined,
  what = 'address6',
): HostAddress | null {
  if (address6 === undefined) return null;
  const a = parseHostAddress(address6, what);
  if (a.family !== 6)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `${what} ${a.text} is not an IPv6 address`);
  if (primary.family !== 4)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${what} is given, so the address must be IPv4 (got ${primary.text})`,
    );
  return a;
}
