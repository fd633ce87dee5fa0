// IPv4/IPv6 packets with TCP, UDP, ICMP or ICMPv6 and correct checksums, and a full
// verification of them: the reference the incremental (RFC 1624) rewrites are checked against.
import { parseHostAddress } from '../../src/nic/addresses.js';

export type L4 = 'tcp' | 'udp' | 'icmp';

/** One's complement sum of b[from, to) added to acc, folded to 16 bits. */
export function sum16(b: Buffer, from: number, to: number, acc = 0): number {
  let s = acc;
  let i = from;
  for (; i + 1 < to; i += 2) s += (b[i] << 8) | b[i + 1];
  if (i < to) s += b[i] << 8;
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

function protoOf(l4: L4, v6: boolean): number {
  return l4 === 'tcp' ? 6 : l4 === 'udp' ? 17 : v6 ? 58 : 1;
}

/** Offset of the L4 checksum field within the L4 header. */
function sumAt(proto: number): number {
  return proto === 6 ? 16 : proto === 17 ? 6 : 2;
}

/** The pseudo-header sum of the packet's current addresses (0 for ICMP v4, which has none). */
function pseudo(p: Buffer, v6: boolean, proto: number, l4len: number): number {
  if (proto === 1) return 0;
  return v6 ? sum16(p, 8, 40) + proto + l4len : sum16(p, 12, 20) + proto + l4len;
}

/**
 * A packet from src to dst (IPv4 or IPv6 text) with `payload`, every checksum right. ICMP is
 * an echo request (id = sport). `udpNoChecksum`: an IPv4 UDP checksum of 0 (none).
 */
export function checkedPacket(
  l4: L4,
  src: string,
  dst: string,
  sport: number,
  dport: number,
  payload: Buffer,
  opts: { tcpFlags?: number; udpNoChecksum?: boolean } = {},
): Buffer {
  const s = parseHostAddress(src).bytes;
  const d = parseHostAddress(dst).bytes;
  const v6 = s.length === 16;
  const proto = protoOf(l4, v6);
  const ip = v6 ? 40 : 20;
  const hdr = proto === 6 ? 20 : 8;
  const l4len = hdr + payload.length;
  const p = Buffer.alloc(ip + l4len);
  if (v6) {
    p[0] = 0x60;
    p.writeUInt16BE(l4len, 4);
    p[6] = proto;
    p[7] = 64;
    Buffer.from(s).copy(p, 8);
    Buffer.from(d).copy(p, 24);
  } else {
    p[0] = 0x45;
    p.writeUInt16BE(p.length, 2);
    p[8] = 64;
    p[9] = proto;
    Buffer.from(s).copy(p, 12);
    Buffer.from(d).copy(p, 16);
    p.writeUInt16BE(~sum16(p, 0, 20) & 0xffff, 10);
  }
  if (proto === 6 || proto === 17) {
    p.writeUInt16BE(sport, ip);
    p.writeUInt16BE(dport, ip + 2);
  } else {
    p[ip] = v6 ? 128 : 8;
    p.writeUInt16BE(sport, ip + 4);
    p.writeUInt16BE(dport, ip + 6);
  }
  if (proto === 6) {
    p[ip + 12] = 0x50;
    p[ip + 13] = opts.tcpFlags ?? 0x02;
    p.writeUInt16BE(65535, ip + 14);
  } else if (proto === 17) p.writeUInt16BE(l4len, ip + 4);
  payload.copy(p, ip + hdr);
  if (proto === 17 && !v6 && opts.udpNoChecksum) return p;
  const c = ~sum16(p, ip, p.length, pseudo(p, v6, proto, l4len)) & 0xffff;
  p.writeUInt16BE(proto === 17 && c === 0 ? 0xffff : c, ip + sumAt(proto));
  return p;
}

/** Whether every checksum of a checkedPacket-shaped packet verifies (an IPv4 UDP 0 counts as none). */
export function checksumsOk(p: Buffer): boolean {
  const v6 = p[0] >> 4 === 6;
  const ip = v6 ? 40 : 20;
  const proto = v6 ? p[6] : p[9];
  if (!v6 && sum16(p, 0, 20) !== 0xffff) return false;
  if (proto === 17 && !v6 && p.readUInt16BE(ip + 6) === 0) return true;
  return sum16(p, ip, p.length, pseudo(p, v6, proto, p.length - ip)) === 0xffff;
}

/** The packet's source or destination address as text. */
export function addressAt(p: Buffer, which: 'src' | 'dst'): string {
  const v6 = p[0] >> 4 === 6;
  const at = v6 ? (which === 'src' ? 8 : 24) : which === 'src' ? 12 : 16;
  return parseHostAddress(
    v6
      ? [...Array(8)].map((_, i) => p.readUInt16BE(at + 2 * i).toString(16)).join(':')
      : [...p.subarray(at, at + 4)].join('.'),
  ).text;
}
