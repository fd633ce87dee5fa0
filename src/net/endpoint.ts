// UDP endpoints in the fixed 36-byte form in which the native socket, the driver and the
// engine exchange them (per datagram in a batch, per peer in the engine), so a batch carries
// one endpoint per packet in a single Buffer and no object is made per packet:
//
//   [0] family 4 | 6, [1] flags, [2..3] port big-endian, [4..19] address (IPv4 in bytes 4..7,
//   rest 0), [20..35] local address of the same family when flags has ENDPOINT_HAS_SOURCE
//
// The local address is the "sticky" source, as WireGuard keeps it: the native socket records
// the address each datagram was sent to (IP_PKTINFO / IPV6_PKTINFO), and sends to a record
// with a source from that address (native/udp.c). A peer's record is replaced whole by the
// source of its latest authenticated datagram, as wireguard-go's SetEndpointFromPacket does;
// a record set by the UAPI has no source, and the engine forgets the source when it retries a
// handshake (wireguard-go's markEndpointSrcForClearing). Text forms, roaming and the UAPI name
// the remote part only.
//
// IPv4-mapped IPv6 addresses (::ffff:a.b.c.d) are always stored as family 4, as the socket
// reports them. Text forms: '192.0.2.1:51820' and '[fd00::1]:51820' (RFC 5952). IPv6 zone ids
// ('%eth0') are not representable and are rejected. Addresses are parsed by ip.ts.

import { TgError } from '../util/errors.js';
import { formatIp, parseIPv4, parseIPv6 } from './ip.js';

export const ENDPOINT_SIZE = 36;
export const ENDPOINT_OFFSET_FAMILY = 0;
export const ENDPOINT_OFFSET_FLAGS = 1;
export const ENDPOINT_OFFSET_PORT = 2;
export const ENDPOINT_OFFSET_ADDRESS = 4;
export const ENDPOINT_OFFSET_SOURCE = 20;
/** Flags bit: the record carries a local (source) address. */
export const ENDPOINT_HAS_SOURCE = 0x01;

function invalid(what: string, why: string): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', `bad endpoint '${what}': ${why}`);
}

/** A record for a 4- or 16-byte address and a port; throws TG_ERR_INVALID_ARGUMENT otherwise. */
export function makeEndpoint(address: Uint8Array, port: number): Buffer {
  if (
    (address.length !== 4 && address.length !== 16) ||
    !Number.isInteger(port) ||
    port < 1 ||
    port > 65535
  ) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      'an endpoint is a 4- or 16-byte address and a port 1..65535',
    );
  }
  const ep = Buffer.alloc(ENDPOINT_SIZE);
  ep[ENDPOINT_OFFSET_FAMILY] = address.length === 4 ? 4 : 6;
  ep.writeUInt16BE(port, ENDPOINT_OFFSET_PORT);
  ep.set(address, ENDPOINT_OFFSET_ADDRESS);
  return ep;
}

/** The record at buf[off] is well-formed: family 4 or 6, known flags only, non-zero port. */
export function isValidEndpoint(buf: Uint8Array, off: number): boolean {
  const family = buf[off + ENDPOINT_OFFSET_FAMILY];
  return (
    (family === 4 || family === 6) &&
    (buf[off + ENDPOINT_OFFSET_FLAGS] & ~ENDPOINT_HAS_SOURCE) === 0 &&
    (buf[off + ENDPOINT_OFFSET_PORT] | buf[off + ENDPOINT_OFFSET_PORT + 1]) !== 0
  );
}

/** Validates a record given by the control plane; throws TG_ERR_INVALID_ARGUMENT. */
export function checkEndpoint(ep: Uint8Array): void {
  if (ep.length !== ENDPOINT_SIZE || !isValidEndpoint(ep, 0)) {
    throw new TgError(
      'TG_ERR_INVALID_ARGUMENT',
      `an endpoint record is ${ENDPOINT_SIZE} bytes: family 4|6, flags, port, address, source`,
    );
  }
}

/** The family of a record already known to be valid (anything but 6 reads as 4; never throws). */
export function endpointFamily(ep: Uint8Array, off = 0): 4 | 6 {
  return ep[off + ENDPOINT_OFFSET_FAMILY] === 6 ? 6 : 4;
}

export function endpointPort(ep: Uint8Array, off = 0): number {
  return (ep[off + ENDPOINT_OFFSET_PORT] << 8) | ep[off + ENDPOINT_OFFSET_PORT + 1];
}

/** Equality of the records at a[aOff] and b[bOff], sources included. */
export function endpointEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 0; i < ENDPOINT_SIZE; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** Equality of the remote parts (family, port, address) only: whether a peer has roamed. */
export function endpointRemoteEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  if (a[aOff] !== b[bOff]) return false;
  for (let i = ENDPOINT_OFFSET_PORT; i < ENDPOINT_OFFSET_SOURCE; i++)
    if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** Forgets the record's source address: the kernel chooses one again. */
export function clearEndpointSource(ep: Uint8Array, off = 0): void {
  ep[off + ENDPOINT_OFFSET_FLAGS] &= ~ENDPOINT_HAS_SOURCE;
  ep.fill(0, off + ENDPOINT_OFFSET_SOURCE, off + ENDPOINT_SIZE);
}

/** The local (source) address of the record at `off` as text, or null when it has none. */
export function endpointSource(ep: Uint8Array, off = 0): string | null {
  if ((ep[off + ENDPOINT_OFFSET_FLAGS] & ENDPOINT_HAS_SOURCE) === 0) return null;
  const a = off + ENDPOINT_OFFSET_SOURCE;
  return formatIp(ep.subarray(a, a + (endpointFamily(ep, off) === 4 ? 4 : 16)));
}

/** What a cookie is bound to: the source address bytes followed by the source port (big-endian). */
export function cookieSource(ep: Uint8Array, off: number): Buffer {
  const len = endpointFamily(ep, off) === 4 ? 4 : 16;
  const out = Buffer.alloc(len + 2);
  out.set(ep.subarray(off + ENDPOINT_OFFSET_ADDRESS, off + ENDPOINT_OFFSET_ADDRESS + len), 0);
  out[len] = ep[off + ENDPOINT_OFFSET_PORT];
  out[len + 1] = ep[off + ENDPOINT_OFFSET_PORT + 1];
  return out;
}

/** A map key for the source address (without port), for per-address rate limiting. */
export function addressKey(ep: Uint8Array, off: number): string {
  const len = endpointFamily(ep, off) === 4 ? 4 : 16;
  return Buffer.from(ep.buffer, ep.byteOffset + off + ENDPOINT_OFFSET_ADDRESS, len).toString('hex');
}

function isV4Mapped(b: Uint8Array): boolean {
  for (let i = 0; i < 10; i++) if (b[i] !== 0) return false;
  return b[10] === 0xff && b[11] === 0xff;
}

/**
 * Writes address + port as an endpoint (no source) into out[offset .. offset+ENDPOINT_SIZE) and
 * returns `out`.
 * `address` is an IPv4 or IPv6 literal without brackets; port 0 is allowed (a bind address).
 */
export function encodeAddressPort(
  address: string,
  port: number,
  out: Buffer = Buffer.alloc(ENDPOINT_SIZE),
  offset = 0,
): Buffer {
  if (!Number.isInteger(port) || port < 0 || port > 65535)
    throw invalid(`${address}:${port}`, 'port must be an integer in [0, 65535]');
  if (offset < 0 || offset + ENDPOINT_SIZE > out.length)
    throw new RangeError(`endpoint at offset ${offset} does not fit in ${out.length} bytes`);
  let bytes: Uint8Array | null;
  if (address.includes(':')) {
    if (address.includes('%')) throw invalid(address, 'IPv6 zone ids are not supported');
    bytes = parseIPv6(address);
    if (bytes !== null && isV4Mapped(bytes)) bytes = bytes.subarray(12, 16);
  } else {
    bytes = parseIPv4(address);
  }
  if (bytes === null) throw invalid(address, 'not an IPv4 or IPv6 address');
  out.fill(0, offset, offset + ENDPOINT_SIZE);
  out[offset + ENDPOINT_OFFSET_FAMILY] = bytes.length === 4 ? 4 : 6;
  out.writeUInt16BE(port, offset + ENDPOINT_OFFSET_PORT);
  out.set(bytes, offset + ENDPOINT_OFFSET_ADDRESS);
  return out;
}

/** Splits '1.2.3.4:51820' / '[fd00::1]:51820' into address and port. */
export function splitEndpoint(text: string): { address: string; port: number } {
  let address: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') throw invalid(text, "expected '[ipv6]:port'");
    address = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0 || text.indexOf(':') !== colon)
      throw invalid(text, "expected 'a.b.c.d:port' or '[ipv6]:port'");
    address = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (!/^\d{1,5}$/.test(portText)) throw invalid(text, 'port must be a decimal number');
  return { address, port: Number(portText) };
}

/** Encodes '1.2.3.4:51820' or '[fd00::1]:51820' into out[offset .. offset+ENDPOINT_SIZE) (no source). */
export function encodeEndpoint(text: string, out: Buffer = Buffer.alloc(ENDPOINT_SIZE), offset = 0): Buffer {
  const { address, port } = splitEndpoint(text);
  return encodeAddressPort(address, port, out, offset);
}

/** The address part of the endpoint at `offset` as text (no brackets); TG_ERR_INVALID_ARGUMENT for a bad family. */
export function endpointAddress(buf: Uint8Array, offset = 0): string {
  const family = buf[offset + ENDPOINT_OFFSET_FAMILY];
  const a = offset + ENDPOINT_OFFSET_ADDRESS;
  if (family === 4) return formatIp(buf.subarray(a, a + 4));
  if (family === 6) return formatIp(buf.subarray(a, a + 16));
  throw invalid(`family ${family}`, 'family must be 4 or 6');
}

/** The endpoint at `offset` as '1.2.3.4:51820' or '[fd00::1]:51820'; throws for a bad family. */
export function decodeEndpoint(buf: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + ENDPOINT_SIZE > buf.length)
    throw new RangeError(`endpoint at offset ${offset} does not fit in ${buf.length} bytes`);
  const address = endpointAddress(buf, offset);
  const port = endpointPort(buf, offset);
  return buf[offset + ENDPOINT_OFFSET_FAMILY] === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}
