// Addresses as the policy engine holds them: four 32-bit words, big-endian order, an IPv4
// address in word 0 with words 1..3 zero and family 4. CIDR prefixes for outside peers.
import { formatIp, parseIp } from '../net/ip.js';

export type Family = 4 | 6;

export interface Cidr {
  family: Family;
  /** Network address words (host bits zero). */
  words: Uint32Array;
  /** Mask words for the prefix length. */
  mask: Uint32Array;
  bits: number;
  text: string;
}

/** Parses an address into words; null when it is no IPv4 or IPv6 address. */
export function parseAddressWords(text: string): { family: Family; words: Uint32Array } | null {
  const bytes = parseIp(text);
  if (bytes === null) return null;
  return { family: bytes.length === 4 ? 4 : 6, words: bytesToWords(bytes) };
}

export function bytesToWords(bytes: Uint8Array): Uint32Array {
  const w = new Uint32Array(4);
  for (let i = 0; i < bytes.length; i += 4)
    w[i >> 2] = ((bytes[i] << 24) | (bytes[i + 1] << 16) | (bytes[i + 2] << 8) | bytes[i + 3]) >>> 0;
  return w;
}

/** Text of an address held as words (a0..a3). */
export function formatWords(family: Family, a0: number, a1: number, a2: number, a3: number): string {
  if (family === 4) return `${a0 >>> 24}.${(a0 >>> 16) & 255}.${(a0 >>> 8) & 255}.${a0 & 255}`;
  const b = new Uint8Array(16);
  const w = [a0, a1, a2, a3];
  for (let i = 0; i < 4; i++) {
    b[4 * i] = w[i] >>> 24;
    b[4 * i + 1] = (w[i] >>> 16) & 255;
    b[4 * i + 2] = (w[i] >>> 8) & 255;
    b[4 * i + 3] = w[i] & 255;
  }
  return formatIp(b);
}

/**
 * Parses "address/bits" strictly: the error names what is wrong, including host bits set
 * ("10.0.0.1/24": did you mean 10.0.0.0/24?), since a silently widened or narrowed peer
 * is a policy bug.
 */
export function parseCidrStrict(text: string): Cidr | string {
  const slash = text.indexOf('/');
  if (slash < 0 || slash !== text.lastIndexOf('/')) return `'${text}' is not a CIDR prefix (address/bits)`;
  const addrText = text.slice(0, slash);
  const bitsText = text.slice(slash + 1);
  const parsed = parseAddressWords(addrText);
  if (parsed === null) return `'${addrText}' is not an IPv4 or IPv6 address`;
  const max = parsed.family === 4 ? 32 : 128;
  if (!/^(?:0|[1-9][0-9]{0,2})$/.test(bitsText) || Number(bitsText) > max)
    return `prefix length '${bitsText}' is not 0..${max}`;
  const bits = Number(bitsText);
  const mask = maskWords(parsed.family, bits);
  const net = new Uint32Array(4);
  let hostBits = false;
  for (let i = 0; i < 4; i++) {
    net[i] = (parsed.words[i] & mask[i]) >>> 0;
    if (net[i] !== parsed.words[i]) hostBits = true;
  }
  const netText = `${formatWords(parsed.family, net[0], net[1], net[2], net[3])}/${bits}`;
  if (hostBits) return `'${text}' has host bits set (did you mean ${netText}?)`;
  return { family: parsed.family, words: net, mask, bits, text: netText };
}

function maskWords(family: Family, bits: number): Uint32Array {
  const m = new Uint32Array(4);
  const words = family === 4 ? 1 : 4;
  for (let i = 0; i < words; i++) {
    const b = Math.max(0, Math.min(32, bits - 32 * i));
    m[i] = b === 0 ? 0 : (0xffffffff << (32 - b)) >>> 0;
  }
  return m;
}

export function cidrContains(
  c: Cidr,
  family: Family,
  a0: number,
  a1: number,
  a2: number,
  a3: number,
): boolean {
  if (c.family !== family) return false;
  const m = c.mask;
  const w = c.words;
  return (
    (a0 & m[0]) >>> 0 === w[0] &&
    (a1 & m[1]) >>> 0 === w[1] &&
    (a2 & m[2]) >>> 0 === w[2] &&
    (a3 & m[3]) >>> 0 === w[3]
  );
}

/** True when every address of `inner` is in `outer`. */
export function cidrCovers(outer: Cidr, inner: Cidr): boolean {
  return (
    outer.family === inner.family &&
    outer.bits <= inner.bits &&
    cidrContains(outer, inner.family, inner.words[0], inner.words[1], inner.words[2], inner.words[3])
  );
}

/** True when the two prefixes share an address. */
export function cidrOverlaps(a: Cidr, b: Cidr): boolean {
  return cidrCovers(a, b) || cidrCovers(b, a);
}
