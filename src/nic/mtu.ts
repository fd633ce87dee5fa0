// MTUs of the nested legs (README, "MTUs of the legs"). A tenant packet crosses two encrypted
// legs on its way between two hosts:
//
//   workload tg0 --on-host leg (host link)--> NIC --off-host leg (fabric)--> NIC --on-host leg--> tg0
//
// and every leg wraps it in the same way: outer IP header (20 or 40 bytes), UDP (8), the
// WireGuard transport header (16) and tag (16). The legs nest one after the other, never inside
// each other, so the overhead is paid once per leg, not summed.
//
// tg0's MTU (what the vSwitch gives a workload) is derived from the smaller of the host link and
// fabric MTUs minus the worst-case leg overhead (IPv6 outer, 80 bytes, as wg-quick does), and
// never below 1,280 (the IPv6 minimum; below it the kernel takes IPv6 off tg0). The NIC knows
// what its legs carry (nicTenantMtu): it clamps TCP's MSS to fit and answers larger packets
// that must not be fragmented with ICMP (pmtu.ts), so a tg0 larger than the legs (links under
// 1,360 bytes, a mistaken MTU, hosts with different links) costs no black hole; what still has
// to pass (IPv4 without DF, IPv6 up to 1,280 bytes) leaves in outer datagrams the kernel
// fragments.
import { TgError } from '../util/errors.js';

/** The WireGuard transport header (type, receiver, counter) and the Poly1305 tag. */
export const WG_TRANSPORT_OVERHEAD = 16 + 16;
export const UDP_HEADER = 8;
export const IPV4_HEADER = 20;
export const IPV6_HEADER = 40;
/** The IPv6 minimum link MTU (RFC 8200): every link must carry 1,280-byte packets. */
export const IPV6_MIN_MTU = 1280;
/** Link MTUs a NIC and a lab accept. */
export const MIN_LINK_MTU = 1280;
export const MAX_LINK_MTU = 65_535;
/** The largest tg0 MTU: a WireGuard message carries at most 65,535 bytes. */
export const MAX_TUNNEL_MTU = 65_535 - WG_TRANSPORT_OVERHEAD;

/** Bytes one leg adds to a tenant packet, for an outer header of this family. */
export function legOverhead(outerFamily: 4 | 6): number {
  return (outerFamily === 4 ? IPV4_HEADER : IPV6_HEADER) + UDP_HEADER + WG_TRANSPORT_OVERHEAD;
}

/** The largest tenant packet one leg carries in a single outer datagram over a link of `linkMtu`. */
export function legCarry(linkMtu: number, outerFamily: 4 | 6): number {
  return linkMtu - legOverhead(outerFamily);
}

/** WireGuard pads a packet to a multiple of this (up to the sender's MTU). */
export const PADDING_MULTIPLE = 16;

/**
 * The largest tenant packet a NIC passes without fragmenting an outer datagram: what the smaller
 * of its two legs carries, rounded down to a multiple of 16 so that the padding either end adds
 * never pushes a packet that fits past its link. The NIC clamps TCP's MSS to it and answers
 * larger packets that must not be fragmented with ICMP telling it.
 */
export function nicTenantMtu(
  hostLink: { mtu: number; outerFamily: 4 | 6 },
  fabric: { mtu: number; outerFamily: 4 | 6 },
): number {
  const carry = Math.min(
    legCarry(validateLinkMtu(hostLink.mtu, 'host link MTU'), hostLink.outerFamily),
    legCarry(validateLinkMtu(fabric.mtu, 'fabric MTU'), fabric.outerFamily),
  );
  return Math.min(MAX_TUNNEL_MTU, carry - (carry % PADDING_MULTIPLE));
}

export function validateLinkMtu(mtu: number, what: string): number {
  if (!Number.isInteger(mtu) || mtu < MIN_LINK_MTU || mtu > MAX_LINK_MTU)
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `${what} ${mtu} must be an integer from ${MIN_LINK_MTU} to ${MAX_LINK_MTU}`,
    );
  return mtu;
}

/**
 * tg0's MTU for a host whose host link and fabric have these MTUs: the smaller one minus the
 * IPv6-outer leg overhead (80), at least 1,280.
 */
export function tunnelMtu(links: { hostLink: number; fabric: number }): number {
  const link = Math.min(
    validateLinkMtu(links.hostLink, 'host link MTU'),
    validateLinkMtu(links.fabric, 'fabric MTU'),
  );
  return Math.min(MAX_TUNNEL_MTU, Math.max(IPV6_MIN_MTU, link - legOverhead(6)));
}
