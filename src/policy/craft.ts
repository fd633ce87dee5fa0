// Hand-built IPv4/IPv6 packets with TCP, UDP or ICMP headers, for tests and benchmarks of
// the engine (the engine reads headers only, so the payload is left as zeros). Checksums are
// left zero except the IPv4 header checksum.
import { TgError } from '../util/errors.js';
import { parseAddressWords } from './address.js';
import { IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP } from './packet.js';

export interface CraftSpec {
  src: string;
  dst: string;
  proto: 'tcp' | 'udp' | 'icmp' | number;
  sport?: number;
  dport?: number;
  /** TCP flags byte (see packet.ts TCP_*). */
  flags?: number;
  /** ICMP type and code (ICMPv6 numbering for IPv6), echo id. */
  icmpType?: number;
  icmpCode?: number;
  icmpId?: number;
  /** Bytes of the embedded packet for ICMP errors. */
  inner?: Buffer;
  /** Total length (default: headers only, or headers + inner). */
  length?: number;
  /** IPv4 fragment offset in 8-byte units (non-zero: a non-first fragment). */
  fragmentOffset?: number;
}

const L4_LEN = { tcp: 20, udp: 8, icmp: 8 } as const;

function words(text: string): { family: 4 | 6; w: Uint32Array } {
  const a = parseAddressWords(text);
  if (a === null) throw new TgError('TG_ERR_INVALID_ARGUMENT', `'${text}' is not an IP address`);
  return { family: a.family, w: a.words };
}

function ipv4Checksum(buf: Buffer, at: number): number {
  let sum = 0;
  for (let i = 0; i < 20; i += 2) sum += (buf[at + i] << 8) | buf[at + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

/** Writes the packet at buf[at ...]; returns its length. */
export function writePacket(buf: Buffer, at: number, s: CraftSpec): number {
  const src = words(s.src);
  const dst = words(s.dst);
  if (src.family !== dst.family)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'source and destination families differ');
  const v6 = src.family === 6;
  const ipLen = v6 ? 40 : 20;
  const proto =
    s.proto === 'tcp'
      ? IPPROTO_TCP
      : s.proto === 'udp'
        ? IPPROTO_UDP
        : s.proto === 'icmp'
          ? v6
            ? IPPROTO_ICMPV6
            : IPPROTO_ICMP
          : s.proto;
  const l4Len = typeof s.proto === 'string' ? L4_LEN[s.proto] : 0;
  const inner = s.inner ?? Buffer.alloc(0);
  const headers = ipLen + l4Len + inner.length;
  const total = s.length ?? headers;
  if (total < headers)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', `length ${total} is shorter than the headers`);
  if (at + total > buf.length)
    throw new TgError('TG_ERR_INVALID_ARGUMENT', 'buffer too small for the packet');
  buf.fill(0, at, at + headers);
  if (v6) {
    buf[at] = 0x60;
    buf.writeUInt16BE(total - 40, at + 4);
    buf[at + 6] = proto;
    buf[at + 7] = 64;
    for (let i = 0; i < 4; i++) {
      buf.writeUInt32BE(src.w[i], at + 8 + 4 * i);
      buf.writeUInt32BE(dst.w[i], at + 24 + 4 * i);
    }
  } else {
    buf[at] = 0x45;
    buf.writeUInt16BE(total, at + 2);
    buf.writeUInt16BE((s.fragmentOffset ?? 0) & 0x1fff, at + 6);
    buf[at + 8] = 64;
    buf[at + 9] = proto;
    buf.writeUInt32BE(src.w[0], at + 12);
    buf.writeUInt32BE(dst.w[0], at + 16);
    buf.writeUInt16BE(ipv4Checksum(buf, at), at + 10);
  }
  const l4 = at + ipLen;
  if (proto === IPPROTO_TCP || proto === IPPROTO_UDP) {
    buf.writeUInt16BE(s.sport ?? 0, l4);
    buf.writeUInt16BE(s.dport ?? 0, l4 + 2);
    if (proto === IPPROTO_TCP) {
      buf[l4 + 12] = 5 << 4;
      buf[l4 + 13] = s.flags ?? 0;
      buf.writeUInt16BE(65535, l4 + 14);
    } else buf.writeUInt16BE(total - ipLen, l4 + 4);
  } else if (proto === IPPROTO_ICMP || proto === IPPROTO_ICMPV6) {
    buf[l4] = s.icmpType ?? (v6 ? 128 : 8);
    buf[l4 + 1] = s.icmpCode ?? 0;
    buf.writeUInt16BE(s.icmpId ?? 0, l4 + 4);
    inner.copy(buf, l4 + 8);
  }
  return total;
}

/** A new Buffer holding just the packet. */
export function craftPacket(s: CraftSpec): Buffer {
  const v6 = s.src.includes(':');
  const len =
    s.length ?? (v6 ? 40 : 20) + (typeof s.proto === 'string' ? L4_LEN[s.proto] : 0) + (s.inner?.length ?? 0);
  const buf = Buffer.alloc(len);
  writePacket(buf, 0, s);
  return buf;
}
