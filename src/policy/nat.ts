// Destination NAT bound to connection tracking, as Linux's nf_nat and Cilium do it: a
// connection to a service address is translated once, at its first packet, by whoever picks
// the endpoint (the NIC's services, src/nic/services.ts); the engine then binds the translation
// to the connection's entry (conntrack.ts: the endpoint is the entry's destination, the original
// tuple a second slot of the entry) with the RFC 1624 checksum deltas of the address change
// precomputed. Later packets to the service address are found by their original tuple and
// rewritten from the entry, replies found as usual get the service address back as their
// source: one parse and one table lookup per packet, as for any other connection.
//
// This file: the registry of service addresses by NAT id (what the entries name), the deltas
// and the in-place rewrite. Pure functions and typed arrays; no I/O.
//
// Checksums (RFC 1624, eqn. 3: HC' = ~(~HC + ~m + m')): the delta of an address change is the
// one's complement sum of ~old + new over its 16-bit words; it applies to the IPv4 header
// checksum and to every L4 checksum whose pseudo-header holds the address: TCP, UDP (an IPv4
// UDP checksum of 0, none, stays 0; a computed 0 is sent as 0xffff) and ICMPv6. ICMP (v4) has
// no pseudo-header: only the IPv4 header checksum changes.

import { IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from './packet.js';

/** NAT ids have this bit set, so that they never equal a workload id in a key's W_DWL. */
export const NAT_ID_BIT = 0x80000000;
/** Services with a NAT id at once per engine. */
export const MAX_NAT_SERVICES = 65_536;

/** One's complement sum of 16-bit words, folded to 16 bits. */
function fold(s: number): number {
  s = (s & 0xffff) + (s >>> 16);
  return (s & 0xffff) + (s >>> 16);
}

/**
 * The checksum delta of changing address words `from` to `to` (4 words, big-endian; IPv4 in
 * the first): sum of ~old + new over the 2 (IPv4) or 8 (IPv6) 16-bit halves, folded.
 */
export function addressDelta(
  family: 4 | 6,
  f0: number,
  f1: number,
  f2: number,
  f3: number,
  t0: number,
  t1: number,
  t2: number,
  t3: number,
): number {
  const half = (w: number, t: number) =>
    (~(w >>> 16) & 0xffff) + (~w & 0xffff) + ((t >>> 16) & 0xffff) + (t & 0xffff);
  let s = half(f0, t0);
  if (family === 6) s += half(f1, t1) + half(f2, t2) + half(f3, t3);
  return fold(s);
}

/** Applies `delta` to the 16-bit checksum at buf[at]. */
function adjust(buf: Buffer, at: number, delta: number): number {
  const s = fold((~((buf[at] << 8) | buf[at + 1]) & 0xffff) + delta);
  return ~s & 0xffff;
}

/**
 * Rewrites the address at buf[addrAt] (4 or 16 bytes by `family`) to words w0..w3 and updates
 * the checksums by `delta` (addressDelta of the change): the IPv4 header's at off + 10, and the
 * L4 one of `proto` whose header starts at `l4` (within buf[.., end)); L4 checksums not wholly
 * inside the packet are left alone.
 */
export function natRewrite(
  buf: Buffer,
  off: number,
  l4: number,
  end: number,
  family: number,
  proto: number,
  addrAt: number,
  delta: number,
  w0: number,
  w1: number,
  w2: number,
  w3: number,
): void {
  buf[addrAt] = w0 >>> 24;
  buf[addrAt + 1] = (w0 >>> 16) & 0xff;
  buf[addrAt + 2] = (w0 >>> 8) & 0xff;
  buf[addrAt + 3] = w0 & 0xff;
  if (family === 4) {
    const h = adjust(buf, off + 10, delta);
    buf[off + 10] = h >>> 8;
    buf[off + 11] = h & 0xff;
  } else {
    buf.writeUInt32BE(w1 >>> 0, addrAt + 4);
    buf.writeUInt32BE(w2 >>> 0, addrAt + 8);
    buf.writeUInt32BE(w3 >>> 0, addrAt + 12);
  }
  let at: number;
  if (proto === IPPROTO_TCP) at = l4 + 16;
  else if (proto === IPPROTO_UDP) {
    at = l4 + 6;
    if (family === 4 && buf[at] === 0 && buf[at + 1] === 0) return;
  } else if (proto === IPPROTO_ICMPV6 && family === 6) at = l4 + 2;
  else return;
  if (at + 2 > end) return;
  let c = adjust(buf, at, delta);
  if (proto === IPPROTO_UDP && c === 0) c = 0xffff;
  buf[at] = c >>> 8;
  buf[at + 1] = c & 0xff;
}

/**
 * Service addresses by NAT id, per engine: the NIC registers each service address it
 * translates (its tenant and name keep the id stable while the service exists) and releases
 * it when the service goes (after the engine unbound its connections).
 */
export class NatRegistry {
  /** Address words of slot id & 0xffff at [4 * slot, 4 * slot + 4); grown as ids are handed out. */
  words = new Uint32Array(4 * 64);
  family = new Uint8Array(64);
  private readonly ids = new Map<string, number>();
  private readonly free: number[] = [];
  private next = 1;

  /** The NAT id of `key` (tenant/name), registered now if new; 0 when the registry is full. */
  acquire(key: string): number {
    const have = this.ids.get(key);
    if (have !== undefined) return have;
    const slot = this.free.pop() ?? (this.next < MAX_NAT_SERVICES ? this.next++ : 0);
    if (slot === 0) return 0;
    if (slot >= this.family.length) {
      const n = Math.min(MAX_NAT_SERVICES, this.family.length * 2);
      const words = new Uint32Array(4 * n);
      words.set(this.words);
      const family = new Uint8Array(n);
      family.set(this.family);
      this.words = words;
      this.family = family;
    }
    const id = (NAT_ID_BIT | slot) >>> 0;
    this.ids.set(key, id);
    return id;
  }

  /** The id of `key`, or 0. */
  idOf(key: string): number {
    return this.ids.get(key) ?? 0;
  }

  /** Sets the address of an id (16 bytes for IPv6, 4 for IPv4). */
  setAddress(id: number, bytes: Uint8Array): void {
    const slot = id & 0xffff;
    const w = this.words;
    const word = (i: number) =>
      i + 4 <= bytes.length
        ? ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0
        : 0;
    for (let k = 0; k < 4; k++) w[4 * slot + k] = word(4 * k);
    this.family[slot] = bytes.length === 4 ? 4 : 6;
  }

  /** Whether an id's address is `bytes`. */
  hasAddress(id: number, bytes: Uint8Array): boolean {
    const slot = id & 0xffff;
    const family = bytes.length === 4 ? 4 : 6;
    if (this.family[slot] !== family) return false;
    for (let i = 0; i < bytes.length; i += 4) {
      const v = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
      if (this.words[4 * slot + i / 4] !== v) return false;
    }
    return true;
  }

  /** Frees the id of `key` (no entry may be bound to it any more). */
  release(key: string): number {
    const id = this.ids.get(key);
    if (id === undefined) return 0;
    this.ids.delete(key);
    const slot = id & 0xffff;
    this.family[slot] = 0;
    this.words.fill(0, 4 * slot, 4 * slot + 4);
    this.free.push(slot);
    return id;
  }

  keys(): IterableIterator<string> {
    return this.ids.keys();
  }
}
