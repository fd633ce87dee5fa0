// UDP endpoints in the fixed 36-byte form the native socket reads and writes, so that a
// batch carries one endpoint per packet in a single Buffer with no objects per packet:
//   [0] family (4 or 6)   [1] flags   [2..3] port, big-endian   [4..19] remote address
//   [20..35] local address, same family, when flags has EP_HAS_SOURCE
// An IPv4 address occupies the first 4 bytes of its field (the rest is zero). IPv4-mapped
// IPv6 addresses (::ffff:a.b.c.d) are always stored as family 4, as the socket reports them.
// The local address is the "sticky" source: recvBatch records the address each datagram
// was sent to, and sendBatch sends from it (see native/udp.c). Text forms, equality for
// roaming and the UAPI name the remote part only.
// Text forms: '192.0.2.1:51820' and '[fd00::1]:51820'. IPv6 zone ids ('%eth0') are not
// representable and are rejected.
import { isIPv4, isIPv6 } from 'node:net';
import { TgError } from '../util/errors.js';

export const ENDPOINT_SIZE = 36;
export const EP_FAMILY = 0;
export const EP_FLAGS = 1;
export const EP_PORT = 2;
export const EP_ADDR = 4;
export const EP_SOURCE = 20;
/** EP_FLAGS bit: the record carries a local (source) address. */
export const EP_HAS_SOURCE = 0x01;
/** Bytes of the remote part (family, flags, port, address). */
export const EP_REMOTE_SIZE = EP_SOURCE;

function invalid(what: string, why: string): TgError {
  return new TgError('TG_ERR_INVALID_ARGUMENT', `bad endpoint '${what}': ${why}`);
}

function parseIPv4(text: string, out: Uint8Array, at: number): void {
  const parts = text.split('.');
  for (let i = 0; i < 4; i++) out[at + i] = Number(parts[i]);
}

/** Parses a valid IPv6 literal (as accepted by net.isIPv6, without zone) into 16 bytes at `at`. */
function parseIPv6(text: string, out: Uint8Array, at: number): void {
  const words: number[] = [];
  let tail = text;
  const tailV4 = /(\d+\.\d+\.\d+\.\d+)$/.exec(text);
  const v4 = new Uint8Array(4);
  if (tailV4) {
    parseIPv4(tailV4[1], v4, 0);
    tail = text.slice(0, text.length - tailV4[1].length) + '0:0';
  }
  const [head, rest] = tail.split('::') as [string, string | undefined];
  const headWords = head === '' ? [] : head.split(':');
  const restWords = rest === undefined || rest === '' ? [] : rest.split(':');
  const zeros = rest === undefined ? 0 : 8 - headWords.length - restWords.length;
  for (const w of headWords) words.push(Number.parseInt(w, 16));
  for (let i = 0; i < zeros; i++) words.push(0);
  for (const w of restWords) words.push(Number.parseInt(w, 16));
  for (let i = 0; i < 8; i++) {
    out[at + 2 * i] = words[i] >> 8;
    out[at + 2 * i + 1] = words[i] & 0xff;
  }
  if (tailV4) out.set(v4, at + 12);
}

function isV4Mapped(b: Uint8Array, at: number): boolean {
  for (let i = 0; i < 10; i++) if (b[at + i] !== 0) return false;
  return b[at + 10] === 0xff && b[at + 11] === 0xff;
}

/**
 * Writes address + port as an endpoint (no source) into out[offset .. offset+ENDPOINT_SIZE)
 * and returns `out`.
 * `address` is an IPv4 or IPv6 literal without brackets.
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
  out.fill(0, offset, offset + ENDPOINT_SIZE);
  out.writeUInt16BE(port, offset + EP_PORT);
  if (isIPv4(address)) {
    out[offset + EP_FAMILY] = 4;
    parseIPv4(address, out, offset + EP_ADDR);
    return out;
  }
  if (address.includes('%')) throw invalid(address, 'IPv6 zone ids are not supported');
  if (!isIPv6(address)) throw invalid(address, 'not an IPv4 or IPv6 address');
  parseIPv6(address, out, offset + EP_ADDR);
  if (isV4Mapped(out, offset + EP_ADDR)) {
    out.copyWithin(offset + EP_ADDR, offset + EP_ADDR + 12, offset + EP_ADDR + 16);
    out.fill(0, offset + EP_ADDR + 4, offset + EP_ADDR + 16);
    out[offset + EP_FAMILY] = 4;
  } else {
    out[offset + EP_FAMILY] = 6;
  }
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

function formatIPv6(b: Uint8Array, at: number): string {
  const words: number[] = [];
  for (let i = 0; i < 8; i++) words.push((b[at + 2 * i] << 8) | b[at + 2 * i + 1]);
  // RFC 5952: compress the longest run (>= 2) of zero words, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (ws: number[]) => ws.map((w) => w.toString(16)).join(':');
  if (bestStart < 0) return hex(words);
  return `${hex(words.slice(0, bestStart))}::${hex(words.slice(bestStart + bestLen))}`;
}

/** The address part of the endpoint at `offset` as text (no brackets). */
export function endpointAddress(buf: Uint8Array, offset = 0): string {
  const family = buf[offset + EP_FAMILY];
  const a = offset + EP_ADDR;
  if (family === 4) return `${buf[a]}.${buf[a + 1]}.${buf[a + 2]}.${buf[a + 3]}`;
  if (family === 6) return formatIPv6(buf, a);
  throw invalid(`family ${family}`, 'family must be 4 or 6');
}

export function endpointPort(buf: Uint8Array, offset = 0): number {
  return (buf[offset + EP_PORT] << 8) | buf[offset + EP_PORT + 1];
}

export function endpointFamily(buf: Uint8Array, offset = 0): 4 | 6 {
  const family = buf[offset + EP_FAMILY];
  if (family !== 4 && family !== 6) throw invalid(`family ${family}`, 'family must be 4 or 6');
  return family;
}

/** The endpoint at `offset` as '1.2.3.4:51820' or '[fd00::1]:51820'. */
export function decodeEndpoint(buf: Uint8Array, offset = 0): string {
  if (offset < 0 || offset + ENDPOINT_SIZE > buf.length)
    throw new RangeError(`endpoint at offset ${offset} does not fit in ${buf.length} bytes`);
  const address = endpointAddress(buf, offset);
  const port = endpointPort(buf, offset);
  return buf[offset + EP_FAMILY] === 6 ? `[${address}]:${port}` : `${address}:${port}`;
}

/** True when the endpoints at a[aOffset] and b[bOffset] are byte-for-byte equal (sources included). */
export function endpointsEqual(a: Uint8Array, aOffset: number, b: Uint8Array, bOffset: number): boolean {
  for (let i = 0; i < ENDPOINT_SIZE; i++) if (a[aOffset + i] !== b[bOffset + i]) return false;
  return true;
}

/** The local (source) address of the endpoint at `offset` as text, or null when it has none. */
export function endpointSource(buf: Uint8Array, offset = 0): string | null {
  if ((buf[offset + EP_FLAGS] & EP_HAS_SOURCE) === 0) return null;
  const a = offset + EP_SOURCE;
  if (buf[offset + EP_FAMILY] === 4) return `${buf[a]}.${buf[a + 1]}.${buf[a + 2]}.${buf[a + 3]}`;
  return formatIPv6(buf, a);
}
