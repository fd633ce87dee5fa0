// The one IP address parser: strict parsing and canonical formatting of IP addresses, CIDR
// prefixes and numeric endpoints as text (the forms the WireGuard UAPI carries as allowed_ip
// and endpoint, the APIs as workload addresses and pools). The accepted
// syntax follows Go's net/netip, which wireguard-go uses: IPv4 is a dotted quad without
// leading zeros, IPv6 is RFC 4291 text (embedded IPv4 allowed), output is RFC 5952 with
// IPv4-mapped addresses printed as ::ffff:a.b.c.d. Hostnames are never accepted.
//
// Departures from wireguard-go, both stricter:
// - an endpoint with port 0 is refused (wireguard-go stores it; nothing can be sent to it);
// - an IPv6 zone must look like an interface name or a scope number ([A-Za-z0-9_.-]{1,15}).

export type IpFamily = 4 | 6;

export interface IpCidr {
  family: IpFamily;
  /** Network address with the host bits cleared: 4 or 16 bytes. */
  address: Uint8Array;
  /** Prefix length: 0..32 for IPv4, 0..128 for IPv6. */
  bits: number;
  /** Canonical text, e.g. "100.64.1.0/24", "fd00:1::/64". */
  text: string;
}

export interface IpEndpoint {
  family: IpFamily;
  /** Canonical address without brackets; an IPv6 zone is kept as "fe80::1%eth0". */
  host: string;
  /** 1..65535 */
  port: number;
  /** Canonical text as the UAPI carries it: "192.0.2.1:51820" or "[2001:db8::1]:51820". */
  text: string;
}

const DEC_OCTET = /^(?:0|[1-9][0-9]{0,2})$/;
const HEX_GROUP = /^[0-9A-Fa-f]{1,4}$/;
const PREFIX_LEN = /^(?:0|[1-9][0-9]{0,2})$/;
const PORT = /^[0-9]{1,5}$/;
const ZONE = /^[A-Za-z0-9_.-]{1,15}$/;
const MAX_IPV6_TEXT = 45; // "ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255".length

/** Parses a dotted-quad IPv4 address; null when it is not one. */
export function parseIPv4(text: string): Uint8Array | null {
  if (text.length > 15) return null;
  const parts = text.split('.');
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const part = parts[i];
    if (!DEC_OCTET.test(part)) return null;
    const v = Number(part);
    if (v > 255) return null;
    out[i] = v;
  }
  return out;
}

/** Parses an IPv6 address without zone; null when it is not one. */
export function parseIPv6(text: string): Uint8Array | null {
  if (text.length < 2 || text.length > MAX_IPV6_TEXT) return null;
  const lastColon = text.lastIndexOf(':');
  if (lastColon < 0) return null;
  let body = text;
  let tail: Uint8Array | null = null;
  if (text.indexOf('.', lastColon) !== -1) {
    // Embedded IPv4 takes the place of the last two groups.
    tail = parseIPv4(text.slice(lastColon + 1));
    if (tail === null) return null;
    body = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const halves = body.split('::');
  if (halves.length > 2) return null;
  const head = parseGroups(halves[0]);
  if (head === null) return null;
  let groups: number[];
  if (halves.length === 2) {
    const rest = parseGroups(halves[1]);
    if (rest === null || head.length + rest.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - rest.length).fill(0), ...rest];
  } else {
    if (head.length !== 8) return null;
    groups = head;
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i] >> 8;
    out[2 * i + 1] = groups[i] & 0xff;
  }
  if (tail !== null) out.set(tail, 12);
  return out;
}

function parseGroups(text: string): number[] | null {
  if (text === '') return [];
  const parts = text.split(':');
  const out: number[] = [];
  for (const part of parts) {
    if (!HEX_GROUP.test(part)) return null;
    out.push(Number.parseInt(part, 16));
  }
  return out;
}

/** Parses an IPv4 or IPv6 address (no zone); null when it is neither. */
export function parseIp(text: string): Uint8Array | null {
  return text.includes(':') ? parseIPv6(text) : parseIPv4(text);
}

/** Parses a dotted-quad IPv4 address as an unsigned 32-bit integer; null when it is not one. */
export function parseIPv4Number(text: string): number | null {
  const b = parseIPv4(text);
  return b === null ? null : ((b[0] << 24) | (b[1] << 16) | (b[2] << 8) | b[3]) >>> 0;
}

/** An unsigned 32-bit integer as a dotted quad. */
export function formatIPv4Number(v: number): string {
  return `${v >>> 24}.${(v >>> 16) & 255}.${(v >>> 8) & 255}.${v & 255}`;
}

export function formatIPv4(a: Uint8Array): string {
  return `${a[0]}.${a[1]}.${a[2]}.${a[3]}`;
}

/** RFC 5952 text; IPv4-mapped addresses as ::ffff:a.b.c.d (as Go and inet_ntop print them). */
export function formatIPv6(a: Uint8Array): string {
  let mapped = a[10] === 0xff && a[11] === 0xff;
  for (let i = 0; i < 10 && mapped; i++) if (a[i] !== 0) mapped = false;
  if (mapped) return `::ffff:${formatIPv4(a.subarray(12, 16))}`;

  const groups: number[] = [];
  for (let i = 0; i < 8; i++) groups.push((a[2 * i] << 8) | a[2 * i + 1]);
  // Longest run of zero groups, at least two long, the first one on a tie.
  let bestStart = -1;
  let bestLen = 1;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = (g: number): string => g.toString(16);
  if (bestStart < 0) return groups.map(hex).join(':');
  const left = groups.slice(0, bestStart).map(hex).join(':');
  const right = groups
    .slice(bestStart + bestLen)
    .map(hex)
    .join(':');
  return `${left}::${right}`;
}

export function formatIp(a: Uint8Array): string {
  return a.length === 4 ? formatIPv4(a) : formatIPv6(a);
}

/**
 * Parses "address/bits". Host bits are cleared, as the kernel and wireguard-go do when they
 * insert the prefix into their allowed-IPs trie ("10.0.0.7/24" becomes "10.0.0.0/24").
 * Null when the text is not a prefix (zones, missing or non-decimal length, length too long).
 */
export function parseCidr(text: string): IpCidr | null {
  const slash = text.indexOf('/');
  if (slash < 0 || slash !== text.lastIndexOf('/')) return null;
  const addrText = text.slice(0, slash);
  const bitsText = text.slice(slash + 1);
  if (!PREFIX_LEN.test(bitsText)) return null;
  const bits = Number(bitsText);
  const address = addrText.includes(':') ? parseIPv6(addrText) : parseIPv4(addrText);
  if (address === null) return null;
  const family: IpFamily = address.length === 4 ? 4 : 6;
  if (bits > address.length * 8) return null;
  maskInPlace(address, bits);
  return { family, address, bits, text: `${formatIp(address)}/${bits}` };
}

function maskInPlace(address: Uint8Array, bits: number): void {
  for (let i = 0; i < address.length; i++) {
    const keep = Math.min(8, Math.max(0, bits - 8 * i));
    address[i] &= (0xff00 >> keep) & 0xff;
  }
}

/**
 * Parses a numeric endpoint: "a.b.c.d:port" or "[ipv6]:port" / "[ipv6%zone]:port".
 * Null for hostnames, unbracketed IPv6, port 0 or a port above 65535.
 */
export function parseEndpoint(text: string): IpEndpoint | null {
  if (text.length > 64) return null;
  let hostText: string;
  let portText: string;
  if (text.startsWith('[')) {
    const close = text.indexOf(']');
    if (close < 0 || text[close + 1] !== ':') return null;
    hostText = text.slice(1, close);
    portText = text.slice(close + 2);
  } else {
    const colon = text.lastIndexOf(':');
    if (colon < 0) return null;
    hostText = text.slice(0, colon);
    portText = text.slice(colon + 1);
  }
  if (!PORT.test(portText)) return null;
  const port = Number(portText);
  if (port < 1 || port > 65535) return null;

  if (!text.startsWith('[')) {
    const v4 = parseIPv4(hostText);
    if (v4 === null) return null;
    const host = formatIPv4(v4);
    return { family: 4, host, port, text: `${host}:${port}` };
  }
  let zone = '';
  const pct = hostText.indexOf('%');
  if (pct >= 0) {
    zone = hostText.slice(pct + 1);
    hostText = hostText.slice(0, pct);
    if (!ZONE.test(zone)) return null;
  }
  const v6 = parseIPv6(hostText);
  if (v6 === null) return null;
  const host = zone === '' ? formatIPv6(v6) : `${formatIPv6(v6)}%${zone}`;
  return { family: 6, host, port, text: `[${host}]:${port}` };
}
