// IPv4/IPv6 + TCP/UDP/ICMP/ICMPv6 header parsing from a Buffer at an offset, into a reused
// ParsedPacket: numbers only, no allocation. Checksums are not verified (the packet has just
// been authenticated by the tunnel's AEAD; the kernel at the destination checks them).
//
// Limits (written down because they decide verdicts):
// - A fragment other than the first carries no L4 header and is reported as FRAGMENT (the
//   engine drops and counts it: there is no reassembly here, unlike Linux conntrack).
// - IPv6 extension headers walked: hop-by-hop, routing, destination options, fragment, AH;
//   at most MAX_EXT_HEADERS of them. ESP and unknown next headers end the walk (protocol = it).
// - ICMP echo request/reply get conntrack ports: request (id, ECHO_MARK), reply (ECHO_MARK,
//   id), so a reply matches its request's flow in the reply direction and a request from the
//   other side does not. Other informational ICMP messages are one-way flows keyed by type
//   and code. ICMP errors point at their embedded packet (innerOff, innerLen) for a
//   "related" lookup of the flow they report on.

// IP protocol numbers (IANA).
export const IPPROTO_ICMP = 1;
export const IPPROTO_TCP = 6;
export const IPPROTO_UDP = 17;
export const IPPROTO_ICMPV6 = 58;
const IPPROTO_HOPOPTS = 0;
const IPPROTO_ROUTING = 43;
const IPPROTO_FRAGMENT = 44;
const IPPROTO_AH = 51;
const IPPROTO_DSTOPTS = 60;

// Wire offsets.
const IPV4_HEADER_MIN = 20;
const IPV4_TOTAL_LEN = 2;
const IPV4_FRAG = 6;
const IPV4_PROTO = 9;
const IPV4_SRC = 12;
const IPV4_DST = 16;
const IPV6_HEADER = 40;
const IPV6_PAYLOAD_LEN = 4;
const IPV6_NEXT = 6;
const IPV6_SRC = 8;
const IPV6_DST = 24;
const TCP_HEADER_MIN = 20;
const TCP_DATA_OFFSET = 12;
const TCP_FLAGS = 13;
const UDP_HEADER = 8;
const ICMP_HEADER = 8;
/** An ICMP error carries at least the first 8 bytes of the offending packet's L4 header. */
const INNER_L4_MIN = 8;
const MAX_EXT_HEADERS = 8;

// TCP flags.
export const TCP_FIN = 0x01;
export const TCP_SYN = 0x02;
export const TCP_RST = 0x04;
export const TCP_ACK = 0x10;

// ICMP message kinds as the engine uses them.
export const ICMP_NONE = 0;
export const ICMP_ECHO_REQUEST = 1;
export const ICMP_ECHO_REPLY = 2;
export const ICMP_ERROR = 3;
export const ICMP_OTHER = 4;
/** Port value beyond 16 bits marking the echo side of an ICMP flow key. */
export const ECHO_MARK = 0x10000;
/** Other ICMP messages (not echo, not error) are flows of their own, keyed by type and code. */
export const ICMP_OTHER_MARK = 0x20000;

export const PARSE_OK = 0;
export const PARSE_MALFORMED = 1;
export const PARSE_FRAGMENT = 2;

/**
 * Word offsets of `ParsedPacket.words`, the same as the conntrack key's (conntrack.ts), so
 * the engine hashes and compares the parsed words in place. Addresses are big-endian words,
 * an IPv4 address in the first word of its four with the others zero.
 */
export const K_META = 1; // proto | family << 8
export const K_SWL = 2; // filled by the engine
export const K_DWL = 3; // filled by the engine
export const K_S0 = 4;
export const K_D0 = 8;
export const K_SPORT = 12;
export const K_DPORT = 13;
export const K_WORDS = 14;

export class ParsedPacket {
  family: 4 | 6 = 4;
  proto = 0;
  /** Key words (see K_*): addresses, and ports as they enter the conntrack key (ECHO_MARK for ICMP echo). */
  readonly words = new Uint32Array(K_WORDS);
  /** Destination port for policy: TCP/UDP only, else 0. */
  dport = 0;
  tcpFlags = 0;
  icmpKind = ICMP_NONE;
  icmpType = 0;
  icmpCode = 0;
  /** Offset of an ICMP error's embedded packet, and its length. */
  innerOff = 0;
  innerLen = 0;
  /** Offset of the L4 header and the end of the packet (by its IP length), in the buffer. */
  l4 = 0;
  end = 0;
}

function word(buf: Buffer, at: number): number {
  return (buf[at] << 24) | (buf[at + 1] << 16) | (buf[at + 2] << 8) | buf[at + 3];
}

/** ICMP (v4) and ICMPv6 types that are errors carrying the offending packet. */
function isIcmpError(family: 4 | 6, type: number): boolean {
  if (family === 4) return type === 3 || type === 4 || type === 5 || type === 11 || type === 12;
  return type >= 1 && type <= 4;
}

/**
 * Parses the packet at buf[off, off + len). `inner` is true for the packet embedded in an
 * ICMP error: it may be truncated, only its first 8 L4 bytes are needed, and it may not be
 * an ICMP error itself.
 */
export function parsePacket(buf: Buffer, off: number, len: number, out: ParsedPacket, inner = false): number {
  if (len < 1 || off < 0 || off + len > buf.length) return PARSE_MALFORMED;
  const w = out.words;
  const version = buf[off] >> 4;
  let l4: number;
  let end: number;
  if (version === 4) {
    if (len < IPV4_HEADER_MIN) return PARSE_MALFORMED;
    const ihl = (buf[off] & 0x0f) << 2;
    if (ihl < IPV4_HEADER_MIN || ihl > len) return PARSE_MALFORMED;
    const total = (buf[off + IPV4_TOTAL_LEN] << 8) | buf[off + IPV4_TOTAL_LEN + 1];
    if (total < ihl) return PARSE_MALFORMED;
    if (total > len) {
      if (!inner) return PARSE_MALFORMED;
      end = off + len;
    } else end = off + total;
    out.family = 4;
    out.proto = buf[off + IPV4_PROTO];
    w[K_S0] = word(buf, off + IPV4_SRC);
    w[K_D0] = word(buf, off + IPV4_DST);
    w[K_S0 + 1] = w[K_S0 + 2] = w[K_S0 + 3] = 0;
    w[K_D0 + 1] = w[K_D0 + 2] = w[K_D0 + 3] = 0;
    if ((((buf[off + IPV4_FRAG] << 8) | buf[off + IPV4_FRAG + 1]) & 0x1fff) !== 0) return PARSE_FRAGMENT;
    l4 = off + ihl;
  } else if (version === 6) {
    if (len < IPV6_HEADER) return PARSE_MALFORMED;
    const payload = (buf[off + IPV6_PAYLOAD_LEN] << 8) | buf[off + IPV6_PAYLOAD_LEN + 1];
    if (IPV6_HEADER + payload > len) {
      if (!inner) return PARSE_MALFORMED;
      end = off + len;
    } else end = off + IPV6_HEADER + payload;
    out.family = 6;
    for (let k = 0; k < 4; k++) {
      w[K_S0 + k] = word(buf, off + IPV6_SRC + 4 * k);
      w[K_D0 + k] = word(buf, off + IPV6_DST + 4 * k);
    }
    let next = buf[off + IPV6_NEXT];
    l4 = off + IPV6_HEADER;
    for (let n = 0; ; n++) {
      if (next !== IPPROTO_HOPOPTS && next !== IPPROTO_ROUTING && next !== IPPROTO_DSTOPTS) {
        if (next !== IPPROTO_FRAGMENT && next !== IPPROTO_AH) break;
      }
      if (n === MAX_EXT_HEADERS || l4 + 8 > end) return PARSE_MALFORMED;
      const following = buf[l4];
      if (next === IPPROTO_FRAGMENT) {
        if (((buf[l4 + 2] << 8) | buf[l4 + 3]) >> 3 !== 0) {
          out.proto = following;
          return PARSE_FRAGMENT;
        }
        l4 += 8;
      } else if (next === IPPROTO_AH) l4 += (buf[l4 + 1] + 2) << 2;
      else l4 += (buf[l4 + 1] + 1) << 3;
      next = following;
    }
    out.proto = next;
  } else return PARSE_MALFORMED;
  w[K_META] = out.proto | (out.family << 8);
  out.l4 = l4;
  out.end = end;

  const avail = end - l4;
  const proto = out.proto;
  out.tcpFlags = 0;
  out.icmpKind = ICMP_NONE;
  out.icmpType = out.icmpCode = 0;
  out.innerOff = out.innerLen = 0;
  out.dport = 0;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    if (inner) {
      if (avail < INNER_L4_MIN) return PARSE_MALFORMED;
    } else if (proto === IPPROTO_TCP) {
      if (avail < TCP_HEADER_MIN) return PARSE_MALFORMED;
      const doff = (buf[l4 + TCP_DATA_OFFSET] >> 4) << 2;
      if (doff < TCP_HEADER_MIN || doff > avail) return PARSE_MALFORMED;
      out.tcpFlags = buf[l4 + TCP_FLAGS];
    } else if (avail < UDP_HEADER) return PARSE_MALFORMED;
    w[K_SPORT] = (buf[l4] << 8) | buf[l4 + 1];
    w[K_DPORT] = out.dport = (buf[l4 + 2] << 8) | buf[l4 + 3];
    return PARSE_OK;
  }
  if ((proto === IPPROTO_ICMP && out.family === 4) || (proto === IPPROTO_ICMPV6 && out.family === 6)) {
    if (avail < ICMP_HEADER) return PARSE_MALFORMED;
    const type = buf[l4];
    out.icmpType = type;
    out.icmpCode = buf[l4 + 1];
    const id = (buf[l4 + 4] << 8) | buf[l4 + 5];
    const request = out.family === 4 ? 8 : 128;
    const reply = out.family === 4 ? 0 : 129;
    if (type === request) {
      out.icmpKind = ICMP_ECHO_REQUEST;
      w[K_SPORT] = id;
      w[K_DPORT] = ECHO_MARK;
    } else if (type === reply) {
      out.icmpKind = ICMP_ECHO_REPLY;
      w[K_SPORT] = ECHO_MARK;
      w[K_DPORT] = id;
    } else if (isIcmpError(out.family, type)) {
      if (inner) return PARSE_MALFORMED;
      out.icmpKind = ICMP_ERROR;
      out.innerOff = l4 + ICMP_HEADER;
      out.innerLen = avail - ICMP_HEADER;
      w[K_SPORT] = w[K_DPORT] = 0;
    } else {
      out.icmpKind = ICMP_OTHER;
      w[K_SPORT] = ICMP_OTHER_MARK | (type << 8) | out.icmpCode;
      w[K_DPORT] = ICMP_OTHER_MARK;
    }
    return PARSE_OK;
  }
  if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) return PARSE_MALFORMED;
  w[K_SPORT] = w[K_DPORT] = 0;
  return PARSE_OK;
}
