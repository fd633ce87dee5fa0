// Endpoint records: the 36-byte form in which the driver and the engine exchange UDP addresses
// (per datagram in a batch, per peer in the engine), so no object is made per packet.
//
//   [0] family 4 | 6, [1] flags, [2..3] port big-endian, [4..19] address (IPv4 in bytes 4..7,
//   rest 0), [20..35] local address of the same family when flags has EP_HAS_SOURCE
//
// The local address is the sticky source (src/native/endpoint.ts): the address a peer's
// datagram was sent to, which the reply is sent from. A peer's record is replaced whole by
// the source of its latest authenticated datagram, as wireguard-go's SetEndpointFromPacket
// does; a record set by the UAPI has no source, and the source is forgotten when a handshake
// is retried (wireguard-go's markEndpointSrcForClearing), so a stale one cannot keep a peer
// unreachable.

import { TgError } from '../util/errors.js';

export const ENDPOINT_SIZE = 36;
export const ENDPOINT_OFFSET_FAMILY = 0;
export const ENDPOINT_OFFSET_FLAGS = 1;
export const ENDPOINT_OFFSET_PORT = 2;
export const ENDPOINT_OFFSET_ADDRESS = 4;
export const ENDPOINT_OFFSET_SOURCE = 20;
/** Flags bit: the record carries a local (source) address. */
export const ENDPOINT_HAS_SOURCE = 0x01;
/** The remote part: family, flags, port, address. */
const ENDPOINT_REMOTE_SIZE = ENDPOINT_OFFSET_SOURCE;

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

export function endpointFamily(ep: Uint8Array, off = 0): 4 | 6 {
  return ep[off + ENDPOINT_OFFSET_FAMILY] === 6 ? 6 : 4;
}

export function endpointPort(ep: Uint8Array, off = 0): number {
  return (ep[off + ENDPOINT_OFFSET_PORT] << 8) | ep[off + ENDPOINT_OFFSET_PORT + 1];
}

/** The address bytes (4 or 16), copied. */
export function endpointAddress(ep: Uint8Array, off = 0): Uint8Array {
  const len = endpointFamily(ep, off) === 4 ? 4 : 16;
  return Uint8Array.from(ep.subarray(off + ENDPOINT_OFFSET_ADDRESS, off + ENDPOINT_OFFSET_ADDRESS + len));
}

/** Equality of the records at a[aOff] and b[bOff], sources included. */
export function endpointEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  for (let i = 0; i < ENDPOINT_SIZE; i++) if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** Equality of the remote parts (family, port, address) only: whether a peer has roamed. */
export function endpointRemoteEquals(a: Uint8Array, aOff: number, b: Uint8Array, bOff: number): boolean {
  if (a[aOff] !== b[bOff]) return false;
  for (let i = ENDPOINT_OFFSET_PORT; i < ENDPOINT_REMOTE_SIZE; i++)
    if (a[aOff + i] !== b[bOff + i]) return false;
  return true;
}

/** Forgets the record's source address: the kernel chooses one again. */
export function clearEndpointSource(ep: Uint8Array, off = 0): void {
  ep[off + ENDPOINT_OFFSET_FLAGS] &= ~ENDPOINT_HAS_SOURCE;
  ep.fill(0, off + ENDPOINT_OFFSET_SOURCE, off + ENDPOINT_SIZE);
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

/** "192.0.2.1:51820" or "[2001:db8::1]:51820" (IPv6 uncompressed hex groups), for logs and tests. */
export function endpointToString(ep: Uint8Array, off = 0): string {
  const port = endpointPort(ep, off);
  const a = ep.subarray(off + ENDPOINT_OFFSET_ADDRESS);
  if (endpointFamily(ep, off) === 4) return `${a[0]}.${a[1]}.${a[2]}.${a[3]}:${port}`;
  const groups: string[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((a[i] << 8) | a[i + 1]).toString(16));
  return `[${groups.join(':')}]:${port}`;
}
