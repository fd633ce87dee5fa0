// The per-tenant DNS server at the NIC (split DNS): one address in the tenant's pool, reached
// by the tenant's local workloads over UDP port 53 through their own sessions; the forwarder
// hands it each query and sends the answer back on the same session. It answers, with
// authority, only the tenant's own names:
//
//   <workload>.<tenant>.tg.   A (and AAAA for a workload or service with an IPv6 address)
//   <service>.<tenant>.tg.    the service's virtual address
//   reverse names (in-addr.arpa, ip6.arpa) of those addresses   PTR
//
// Any other name under tg. (another tenant's workload, an unknown one) is NXDOMAIN, so a
// tenant learns nothing of other tenants' names. A name outside tg. is forwarded upstream when
// the caller's `upstream` check says the tenant's egress policy allows it for the asking
// workload (respond() returns FORWARD_UPSTREAM and `forwarded` names the question; the
// forwarder sends it, egress.ts checks the answer); every other one is REFUSED. Messages are read and written with the dns-packet library
// (no hand-written wire parsing); a query that does not decode, or a response sent to the
// server, is dropped and counted (`malformed`). Queries with other than one question get
// FORMERR, classes other than IN REFUSED.
//
// Limits: UDP only (TCP to the server address is dropped); answers are small (one name, at
// most a few addresses) and always fit 512 bytes; no SOA in negative answers.
import dnsPacket from 'dns-packet';
import { canonicalName } from '../policy/fqdn.js';
import type { HostAddress } from './addresses.js';

/** What respond() returns for a query to forward upstream (compared by identity). */
export const FORWARD_UPSTREAM: Buffer = Buffer.alloc(0);

/** Whether a canonical name outside tg. may be resolved upstream for the asker. */
export type UpstreamCheck = (name: string) => boolean;

/** The zone every tenant's names live under. */
export const TENANT_ZONE = 'tg';
/** TTL of answers (s): names follow workloads, so caches must not hold them long. */
export const DNS_TTL_S = 5;
export const DNS_PORT = 53;
/** Largest answer sent over UDP without EDNS. */
const MAX_UDP_ANSWER = 512;

const RCODE_FORMERR = 1;
const RCODE_NXDOMAIN = 3;
const RCODE_REFUSED = 5;

/** What the server knows: the tenant's own names and addresses. */
export interface NameBook {
  /** Addresses of the tenant's workload or service called `name` (lower case), or undefined. */
  addressesOf(name: string): readonly HostAddress[] | undefined;
  /** The name of the tenant's workload or service with this address (4 or 16 bytes), or undefined. */
  nameAt(address: Uint8Array): string | undefined;
}

export class DnsCounters {
  queries = 0;
  answered = 0;
  nxdomain = 0;
  refused = 0;
  /** Names outside tg. handed upstream (the egress policy allows them). */
  forwarded = 0;
  formerr = 0;
  /** Dropped: not a DNS query (does not decode, or a response). */
  malformed = 0;
  /** Dropped: the source session was over its query rate. */
  rateLimited = 0;
  /** Dropped: not UDP to port 53 (TCP, other ports, fragments). */
  notServed = 0;
}

/** The DNS server of one tenant. Pure: a query in, an answer out. */
export class TenantDns {
  readonly counters = new DnsCounters();
  /** The question of the last query respond() returned FORWARD_UPSTREAM for. */
  forwarded: { id: number; name: string; type: string } | null = null;
  private readonly suffix: string;

  constructor(
    readonly tenant: string,
    readonly address: HostAddress,
    private readonly book: NameBook,
  ) {
    this.suffix = `.${tenant.toLowerCase()}.${TENANT_ZONE}`;
  }

  /** The answer to a DNS message, or null when it is dropped (counted). Never throws. */
  respond(query: Buffer, upstream: UpstreamCheck | null = null): Buffer | null {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(query);
    } catch {
      this.counters.malformed++;
      return null;
    }
    if (q.type !== 'query' || typeof q.id !== 'number') {
      this.counters.malformed++;
      return null;
    }
    this.counters.queries++;
    const rd = (q.flags ?? 0) & dnsPacket.RECURSION_DESIRED;
    const questions = q.questions ?? [];
    if (questions.length !== 1) {
      this.counters.formerr++;
      return this.encode(q.id, rd, RCODE_FORMERR, questions.slice(0, 1), []);
    }
    const question = questions[0];
    if (question.class !== undefined && question.class !== 'IN') {
      this.counters.refused++;
      return this.encode(q.id, rd, RCODE_REFUSED, questions, []);
    }
    const name = question.name.toLowerCase().replace(/\.$/, '');
    let answers: dnsPacket.Answer[] | null;
    if (name.endsWith('.in-addr.arpa') || name.endsWith('.ip6.arpa')) answers = this.reverse(name, question);
    else if (name === TENANT_ZONE || name.endsWith(`.${TENANT_ZONE}`)) answers = this.forward(name, question);
    else {
      const canon = canonicalName(name);
      if (canon !== null && upstream?.(canon) === true) {
        this.counters.forwarded++;
        this.forwarded = { id: q.id, name: canon, type: question.type };
        return FORWARD_UPSTREAM;
      }
      this.counters.refused++;
      return this.encode(q.id, rd, RCODE_REFUSED, questions, []);
    }
    if (answers === null) {
      this.counters.nxdomain++;
      return this.encode(q.id, rd | dnsPacket.AUTHORITATIVE_ANSWER, RCODE_NXDOMAIN, questions, []);
    }
    this.counters.answered++;
    return this.encode(q.id, rd | dnsPacket.AUTHORITATIVE_ANSWER, 0, questions, answers);
  }

  /** Answers for a name under tg.; null for NXDOMAIN. */
  private forward(name: string, q: dnsPacket.Question): dnsPacket.Answer[] | null {
    if (name === this.suffix.slice(1)) return [];
    if (!name.endsWith(this.suffix)) return null;
    const label = name.slice(0, -this.suffix.length);
    if (label.length === 0 || label.includes('.')) return null;
    const addrs = this.book.addressesOf(label);
    if (addrs === undefined) return null;
    const out: dnsPacket.Answer[] = [];
    for (const a of addrs) {
      const type = a.family === 4 ? 'A' : 'AAAA';
      if (q.type === type || isAny(q))
        out.push({ type, name: q.name, ttl: DNS_TTL_S, class: 'IN', data: a.text });
    }
    return out;
  }

  /** PTR answers for a reverse name; null for NXDOMAIN (not one of the tenant's addresses). */
  private reverse(name: string, q: dnsPacket.Question): dnsPacket.Answer[] | null {
    const bytes = reverseNameAddress(name);
    if (bytes === null) return null;
    const owner = this.book.nameAt(bytes);
    if (owner === undefined) return null;
    if (q.type !== 'PTR' && !isAny(q)) return [];
    return [{ type: 'PTR', name: q.name, ttl: DNS_TTL_S, class: 'IN', data: `${owner}${this.suffix}` }];
  }

  private encode(
    id: number,
    flags: number,
    rcode: number,
    questions: dnsPacket.Question[],
    answers: dnsPacket.Answer[],
  ): Buffer {
    const msg = { type: 'response' as const, id, flags: flags | rcode, questions, answers };
    const out = dnsPacket.encode(msg);
    if (out.length <= MAX_UDP_ANSWER) return out;
    return dnsPacket.encode({ ...msg, answers: [], flags: msg.flags | dnsPacket.TRUNCATED_RESPONSE });
  }
}

/** QTYPE 255 (dns-packet decodes it as 'ANY', which its typings leave out). */
function isAny(q: dnsPacket.Question): boolean {
  return (q.type as string) === 'ANY';
}

/** The address a reverse name names (a.b.c.d.in-addr.arpa, 32 nibbles.ip6.arpa), or null. */
export function reverseNameAddress(name: string): Uint8Array | null {
  const labels = name.split('.');
  if (name.endsWith('.in-addr.arpa')) {
    if (labels.length !== 6) return null;
    const out = new Uint8Array(4);
    for (let i = 0; i < 4; i++) {
      const l = labels[3 - i];
      if (!/^(?:0|[1-9][0-9]{0,2})$/.test(l) || Number(l) > 255) return null;
      out[i] = Number(l);
    }
    return out;
  }
  if (labels.length !== 34) return null;
  const out = new Uint8Array(16);
  for (let i = 0; i < 32; i++) {
    const l = labels[31 - i];
    if (!/^[0-9a-f]$/.test(l)) return null;
    const v = Number.parseInt(l, 16);
    out[i >> 1] |= i % 2 === 0 ? v << 4 : v;
  }
  return out;
}

/** The reverse name of an address (for clients and tests). */
export function reverseName(address: Uint8Array): string {
  if (address.length === 4) return `${[...address].reverse().join('.')}.in-addr.arpa`;
  const nibbles: string[] = [];
  for (const b of address) nibbles.push((b >> 4).toString(16), (b & 15).toString(16));
  return `${nibbles.reverse().join('.')}.ip6.arpa`;
}

// --- The answer's IP/UDP packet --------------------------------------------------------

const IPV4_HEADER = 20;
const IPV6_HEADER = 40;
const UDP_HEADER = 8;
const IPPROTO_UDP = 17;

/** Where a UDP query's payload lies in buf, or -1 when the packet is not UDP to port 53 (unfragmented). */
export function dnsQueryPayload(buf: Buffer, off: number, len: number, version: number): number {
  let l4: number;
  if (version === 4) {
    if (buf[off + 9] !== IPPROTO_UDP || (buf.readUInt16BE(off + 6) & 0x3fff) !== 0) return -1;
    l4 = off + (buf[off] & 0x0f) * 4;
  } else {
    if (buf[off + 6] !== IPPROTO_UDP) return -1;
    l4 = off + IPV6_HEADER;
  }
  if (l4 + UDP_HEADER > off + len || buf.readUInt16BE(l4 + 2) !== DNS_PORT) return -1;
  const udpLen = buf.readUInt16BE(l4 + 4);
  if (udpLen < UDP_HEADER || l4 + udpLen > off + len) return -1;
  return l4 + UDP_HEADER;
}

function sum16(buf: Buffer, from: number, to: number, acc: number): number {
  let s = acc;
  let i = from;
  for (; i + 1 < to; i += 2) s += (buf[i] << 8) | buf[i + 1];
  if (i < to) s += buf[i] << 8;
  return s;
}

function fold(s: number): number {
  while (s > 0xffff) s = (s & 0xffff) + (s >>> 16);
  return s;
}

/**
 * Writes the answer packet to the query at buf[off...] into out[at...]: addresses and ports
 * swapped, `payload` as UDP payload, checksums computed. Returns its length.
 */
export function writeDnsAnswer(
  buf: Buffer,
  off: number,
  version: number,
  payload: Buffer,
  out: Buffer,
  at: number,
): number {
  const ipLen = version === 4 ? IPV4_HEADER : IPV6_HEADER;
  const l4q = version === 4 ? off + (buf[off] & 0x0f) * 4 : off + IPV6_HEADER;
  const udpLen = UDP_HEADER + payload.length;
  const total = ipLen + udpLen;
  out.fill(0, at, at + ipLen + UDP_HEADER);
  if (version === 4) {
    out[at] = 0x45;
    out.writeUInt16BE(total, at + 2);
    out.writeUInt16BE(0x4000, at + 6); // DF
    out[at + 8] = 64;
    out[at + 9] = IPPROTO_UDP;
    buf.copy(out, at + 12, off + 16, off + 20);
    buf.copy(out, at + 16, off + 12, off + 16);
    out.writeUInt16BE(~fold(sum16(out, at, at + IPV4_HEADER, 0)) & 0xffff, at + 10);
  } else {
    out.writeUInt32BE(0x60000000, at);
    out.writeUInt16BE(udpLen, at + 4);
    out[at + 6] = IPPROTO_UDP;
    out[at + 7] = 64;
    buf.copy(out, at + 8, off + 24, off + 40);
    buf.copy(out, at + 24, off + 8, off + 24);
  }
  const u = at + ipLen;
  out.writeUInt16BE(DNS_PORT, u);
  out.writeUInt16BE(buf.readUInt16BE(l4q), u + 2);
  out.writeUInt16BE(udpLen, u + 4);
  payload.copy(out, u + UDP_HEADER);
  // Pseudo-header: source, destination, protocol, UDP length.
  const addrFrom = version === 4 ? at + 12 : at + 8;
  const addrTo = version === 4 ? at + 20 : at + 40;
  let s = sum16(out, addrFrom, addrTo, IPPROTO_UDP + udpLen);
  s = sum16(out, u, u + udpLen, s);
  let c = ~fold(s) & 0xffff;
  if (c === 0) c = 0xffff;
  out.writeUInt16BE(c, u + 6);
  return total;
}
