// Path MTU work on tenant packets at the NIC (README, "MTUs of the legs"): the TCP MSS clamp
// of SYNs and the ICMP answers for packets too big for the legs, written without allocation
// into buffers the caller owns. Pure functions of bytes: no I/O, no clock, never throw.
//
//   IPv4: "destination unreachable / fragmentation needed" (RFC 792, RFC 1191: type 3 code 4,
//         next-hop MTU in the low 16 bits of the second word), quoting as much of the packet as
//         keeps the answer within 576 bytes (RFC 1812 4.3.2.3).
//   IPv6: "packet too big" (RFC 4443 3.2: type 2 code 0, 32-bit MTU), quoting as much as keeps
//         the answer within 1,280 bytes.
// The answer's source is the original packet's destination and its destination the original
// source: the workload's kernel takes it as coming from the path towards that destination (it
// checks the quoted header against its own socket and sequence numbers, not who sent it), and
// the answer stays inside the tenant's own address space. No answer is ever made about an ICMP
// error, a non-first IPv4 fragment, or a packet from an unspecified or multicast source.

export const IPPROTO_TCP = 6;
const IPPROTO_ICMP = 1;
const IPPROTO_ICMPV6 = 58;
const ICMP_DEST_UNREACH = 3;
const ICMP_FRAG_NEEDED = 4;
const ICMPV6_PACKET_TOO_BIG = 2;
/** RFC 1812: an ICMPv4 error is at most 576 bytes; RFC 4443: an ICMPv6 error at most 1,280. */
const ICMPV4_ERROR_MAX = 576;
const ICMPV6_ERROR_MAX = 1280;
const ANSWER_TTL = 64;
/** The largest ICMP answer these functions write. */
export const MAX_TOO_BIG_ANSWER = ICMPV6_ERROR_MAX;
const TCP_OPT_END = 0;
const TCP_OPT_NOP = 1;
const TCP_OPT_MSS = 2;
const TCP_FLAG_SYN = 0x02;

/** Ones' complement sum of buf[start, end) as 16-bit big-endian words (odd tail padded). */
function sum16(buf: Buffer, start: number, end: number, acc: number): number {
  let s = acc;
  let i = start;
  for (; i + 1 < end; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i < end) s += buf[i] << 8;
  return s;
}

function fold(s: number): number {
  let x = s;
  while (x > 0xffff) x = (x & 0xffff) + (x >>> 16);
  return ~x & 0xffff;
}

/** True for an IPv4 packet with Don't Fragment set. */
export function dontFragment4(buf: Buffer, off: number): boolean {
  return (buf[off + 6] & 0x40) !== 0;
}

/** Whether an IPv4 packet may be answered with an ICMP error (RFC 1122 3.2.2). */
function answerable4(buf: Buffer, off: number, len: number): boolean {
  const ihl = (buf[off] & 0x0f) * 4;
  if (ihl < 20 || len < ihl) return false;
  if ((buf.readUInt16BE(off + 6) & 0x1fff) !== 0) return false; // not the first fragment
  const src = buf[off + 12];
  if (src === 0 || src >= 224) return false; // unspecified, multicast, reserved
  if (buf[off + 9] === IPPROTO_ICMP) {
    if (len < ihl + 1) return false;
    const type = buf[off + ihl];
    // only about queries (echo, timestamp, ...), never about errors
    if (type === 3 || type === 4 || type === 5 || type === 11 || type === 12) return false;
  }
  return true;
}

function answerable6(buf: Buffer, off: number, len: number): boolean {
  if (len < 40) return false;
  if (buf[off + 8] === 0xff) return false; // multicast source
  let unspecified = true;
  for (let i = 8; i < 24; i++) if (buf[off + i] !== 0) unspecified = false;
  if (unspecified) return false;
  // only a direct ICMPv6 error is recognised; errors have types below 128
  if (buf[off + 6] === IPPROTO_ICMPV6 && len > 40 && buf[off + 40] < 128) return false;
  return true;
}

/**
 * Writes the ICMPv4 "fragmentation needed" answer to the IPv4 packet buf[off, off + len) at
 * out[at...], telling `mtu` as the next-hop MTU. Returns its length, or 0 when the packet must
 * not be answered. out must have MAX_TOO_BIG_ANSWER bytes from `at`.
 */
export function writeFragNeeded(
  buf: Buffer,
  off: number,
  len: number,
  mtu: number,
  out: Buffer,
  at: number,
): number {
  if (!answerable4(buf, off, len)) return 0;
  const quoted = Math.min(len, ICMPV4_ERROR_MAX - 20 - 8);
  const total = 20 + 8 + quoted;
  // IPv4 header: version 4, IHL 5, no DF, TTL 64, ICMP; source and destination swapped.
  out[at] = 0x45;
  out[at + 1] = 0;
  out.writeUInt16BE(total, at + 2);
  out.writeUInt32BE(0, at + 4);
  out[at + 8] = ANSWER_TTL;
  out[at + 9] = IPPROTO_ICMP;
  out.writeUInt16BE(0, at + 10);
  buf.copy(out, at + 12, off + 16, off + 20);
  buf.copy(out, at + 16, off + 12, off + 16);
  out.writeUInt16BE(fold(sum16(out, at, at + 20, 0)), at + 10);
  const icmp = at + 20;
  out[icmp] = ICMP_DEST_UNREACH;
  out[icmp + 1] = ICMP_FRAG_NEEDED;
  out.writeUInt16BE(0, icmp + 2);
  out.writeUInt16BE(0, icmp + 4);
  out.writeUInt16BE(Math.min(mtu, 0xffff), icmp + 6);
  buf.copy(out, icmp + 8, off, off + quoted);
  out.writeUInt16BE(fold(sum16(out, icmp, icmp + 8 + quoted, 0)), icmp + 2);
  return total;
}

/**
 * Writes the ICMPv6 "packet too big" answer to the IPv6 packet buf[off, off + len) at
 * out[at...], telling `mtu`. Returns its length, or 0 when the packet must not be answered.
 */
export function writePacketTooBig(
  buf: Buffer,
  off: number,
  len: number,
  mtu: number,
  out: Buffer,
  at: number,
): number {
  if (!answerable6(buf, off, len)) return 0;
  const quoted = Math.min(len, ICMPV6_ERROR_MAX - 40 - 8);
  const payload = 8 + quoted;
  // IPv6 header: version 6, no traffic class or flow label, ICMPv6, hop limit 64.
  out.writeUInt32BE(0x60000000, at);
  out.writeUInt16BE(payload, at + 4);
  out[at + 6] = IPPROTO_ICMPV6;
  out[at + 7] = ANSWER_TTL;
  buf.copy(out, at + 8, off + 24, off + 40);
  buf.copy(out, at + 24, off + 8, off + 24);
  const icmp = at + 40;
  out[icmp] = ICMPV6_PACKET_TOO_BIG;
  out[icmp + 1] = 0;
  out.writeUInt16BE(0, icmp + 2);
  out.writeUInt32BE(mtu >>> 0, icmp + 4);
  buf.copy(out, icmp + 8, off, off + quoted);
  // Checksum over the pseudo-header (source, destination, length, next header) and the message.
  let s = sum16(out, at + 8, at + 40, 0);
  s += payload + IPPROTO_ICMPV6;
  s = sum16(out, icmp, icmp + payload, s);
  out.writeUInt16BE(fold(s), icmp + 2);
  return 40 + payload;
}

/**
 * Lowers the MSS option of a TCP SYN (or SYN-ACK) in buf[off, off + len) to at most `maxMss`,
 * fixing the TCP checksum incrementally (RFC 1624). Returns true when it changed the packet.
 * IPv4 (not a non-first fragment) and IPv6 with TCP as the first next header only.
 */
export function clampMss(buf: Buffer, off: number, len: number, maxMss: number): boolean {
  let tcp: number;
  const version = buf[off] >> 4;
  if (version === 4) {
    const ihl = (buf[off] & 0x0f) * 4;
    if (buf[off + 9] !== IPPROTO_TCP || ihl < 20 || (buf.readUInt16BE(off + 6) & 0x1fff) !== 0) return false;
    tcp = off + ihl;
  } else if (version === 6) {
    if (buf[off + 6] !== IPPROTO_TCP) return false;
    tcp = off + 40;
  } else return false;
  const end = off + len;
  if (tcp + 20 > end || (buf[tcp + 13] & TCP_FLAG_SYN) === 0) return false;
  const optEnd = Math.min(tcp + (buf[tcp + 12] >> 4) * 4, end);
  let i = tcp + 20;
  while (i < optEnd) {
    const kind = buf[i];
    if (kind === TCP_OPT_END) return false;
    if (kind === TCP_OPT_NOP) {
      i++;
      continue;
    }
    if (i + 1 >= optEnd) return false;
    const olen = buf[i + 1];
    if (olen < 2 || i + olen > optEnd) return false;
    if (kind === TCP_OPT_MSS && olen === 4) {
      const mss = buf.readUInt16BE(i + 2);
      if (mss <= maxMss) return false;
      buf.writeUInt16BE(maxMss, i + 2);
      // HC' = ~(~HC + ~m + m')
      let s = (~buf.readUInt16BE(tcp + 16) & 0xffff) + (~mss & 0xffff) + maxMss;
      s = (s & 0xffff) + (s >>> 16);
      s = (s & 0xffff) + (s >>> 16);
      buf.writeUInt16BE(~s & 0xffff, tcp + 16);
      return true;
    }
    i += olen;
  }
  return false;
}
