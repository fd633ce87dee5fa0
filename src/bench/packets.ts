// Hand-built IPv4/UDP packets, for writing straight into a TUN device (benchmarks and
// tests) and for recognising the ones read from it. IPv4 only; the UDP checksum is left
// 0 ("none"), which IPv4 allows.
import { parseIPv4 } from '../net/ip.js';
import { TgError } from '../util/errors.js';

export const IPV4_HEADER_LEN = 20;
export const UDP_HEADER_LEN = 8;
const PROTO_UDP = 17;

function addr(text: string): number[] {
  const bytes = parseIPv4(text);
  if (bytes === null) throw new TgError('TG_ERR_INVALID_ARGUMENT', `'${text}' is not an IPv4 address`);
  return [...bytes];
}

function headerChecksum(p: Uint8Array, at: number): number {
  let sum = 0;
  for (let i = 0; i < IPV4_HEADER_LEN; i += 2) sum += (p[at + i] << 8) | p[at + i + 1];
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  return ~sum & 0xffff;
}

export interface UdpFlow {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  ttl?: number;
}

/** Writes an IPv4/UDP packet with `payload` at buf[at ...]; returns its total length. */
export function writeIPv4Udp(buf: Buffer, at: number, flow: UdpFlow, payload: Uint8Array): number {
  const total = IPV4_HEADER_LEN + UDP_HEADER_LEN + payload.length;
  buf.fill(0, at, at + IPV4_HEADER_LEN + UDP_HEADER_LEN);
  buf[at] = 0x45; // version 4, 5-word header
  buf.writeUInt16BE(total, at + 2);
  buf[at + 8] = flow.ttl ?? 64;
  buf[at + 9] = PROTO_UDP;
  buf.set(addr(flow.src), at + 12);
  buf.set(addr(flow.dst), at + 16);
  buf.writeUInt16BE(headerChecksum(buf, at), at + 10);
  buf.writeUInt16BE(flow.sport, at + 20);
  buf.writeUInt16BE(flow.dport, at + 22);
  buf.writeUInt16BE(UDP_HEADER_LEN + payload.length, at + 24);
  buf.set(payload, at + IPV4_HEADER_LEN + UDP_HEADER_LEN);
  return total;
}

export interface ParsedUdp {
  src: string;
  dst: string;
  sport: number;
  dport: number;
  /** Offset of the UDP payload in the buffer the packet was parsed from. */
  payloadAt: number;
  payloadLength: number;
}

/** Parses an IPv4/UDP packet of `len` bytes at buf[at ...]; null for anything else. */
export function parseIPv4Udp(buf: Uint8Array, at: number, len: number): ParsedUdp | null {
  if (len < IPV4_HEADER_LEN + UDP_HEADER_LEN || buf[at] >> 4 !== 4 || buf[at + 9] !== PROTO_UDP) return null;
  const ihl = (buf[at] & 0x0f) * 4;
  if (ihl < IPV4_HEADER_LEN || len < ihl + UDP_HEADER_LEN) return null;
  const u = at + ihl;
  return {
    src: `${buf[at + 12]}.${buf[at + 13]}.${buf[at + 14]}.${buf[at + 15]}`,
    dst: `${buf[at + 16]}.${buf[at + 17]}.${buf[at + 18]}.${buf[at + 19]}`,
    sport: (buf[u] << 8) | buf[u + 1],
    dport: (buf[u + 2] << 8) | buf[u + 3],
    payloadAt: u + UDP_HEADER_LEN,
    payloadLength: len - ihl - UDP_HEADER_LEN,
  };
}
