// Upstream DNS of egress (egress.ts): queries the NIC's DNS server forwards upstream for names
// the egress policy allows, each with a fresh message id, the asker remembered until the answer
// or UPSTREAM_TIMEOUT_MS; answers are decoded with dns-packet and checked (id, question, size,
// record count, addresses); bad ones are counted drops, never thrown.
import dnsPacket from 'dns-packet';
import { parseIp } from '../net/ip.js';
import { canonicalName } from '../policy/fqdn.js';

export const UPSTREAM_TIMEOUT_MS = 5000;
export const MAX_PENDING_QUERIES = 1024;
/** Largest upstream answer accepted (bytes); larger ones are counted drops. */
export const MAX_UPSTREAM_ANSWER = 4096;
/** Most answer records accepted in one upstream answer. */
export const MAX_UPSTREAM_RECORDS = 64;
/** Largest answer given to a workload over UDP (no EDNS here): larger ones go out truncated. */
const MAX_UDP_ANSWER = 512;

/** A query forwarded upstream: who asked, how to answer them. */
export interface PendingQuery {
  tenant: string;
  peerId: number;
  /** The workload's query packet's IP and UDP header, to build the answer packet from. */
  header: Buffer;
  version: number;
  id: number;
  name: string;
  type: string;
  expires: number;
}

export class UpstreamCounters {
  forwarded = 0;
  answered = 0;
  /** Answers that do not decode, answer no pending query or another question (dropped). */
  malformed = 0;
  /** Answers over MAX_UPSTREAM_ANSWER bytes or MAX_UPSTREAM_RECORDS records (dropped). */
  oversized = 0;
  /** Queries not forwarded: MAX_PENDING_QUERIES are waiting. */
  full = 0;
  /** Queries that got no answer within UPSTREAM_TIMEOUT_MS. */
  timeouts = 0;
}

/** What an accepted upstream answer gives: the asker, the reply for them and the addresses learned. */
export interface UpstreamAnswer {
  query: PendingQuery;
  /** DNS message for the workload (its own message id). */
  reply: Buffer;
  /** A and AAAA records of the asked name (followed through CNAMEs): address bytes and TTL. */
  addresses: { bytes: Uint8Array; ttl: number }[];
}

export class UpstreamDns {
  readonly counters = new UpstreamCounters();
  private readonly pending = new Map<number, PendingQuery>();
  private nextId = (Math.random() * 0x10000) | 0;

  get size(): number {
    return this.pending.size;
  }

  /**
   * Remembers a query and returns the message to send upstream (a fresh id, the same
   * question, recursion desired), or null when too many are waiting (counted).
   */
  forward(q: Omit<PendingQuery, 'expires'>, now: number): Buffer | null {
    if (this.pending.size >= MAX_PENDING_QUERIES) {
      this.expire(now);
      if (this.pending.size >= MAX_PENDING_QUERIES) {
        this.counters.full++;
        return null;
      }
    }
    let id = this.nextId;
    for (let i = 0; i < 0x10000 && this.pending.has(id); i++) id = (id + 1) & 0xffff;
    this.nextId = (id + 1) & 0xffff;
    this.pending.set(id, { ...q, expires: now + UPSTREAM_TIMEOUT_MS });
    this.counters.forwarded++;
    return dnsPacket.encode({
      type: 'query',
      id,
      flags: dnsPacket.RECURSION_DESIRED,
      questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
    });
  }

  /** Checks an upstream answer; null when it is dropped (counted). Never throws. */
  answer(msg: Buffer, now: number): UpstreamAnswer | null {
    if (msg.length > MAX_UPSTREAM_ANSWER) {
      this.counters.oversized++;
      return null;
    }
    let a: dnsPacket.DecodedPacket;
    try {
      a = dnsPacket.decode(msg);
    } catch {
      this.counters.malformed++;
      return null;
    }
    const q = typeof a.id === 'number' ? this.pending.get(a.id) : undefined;
    const question = a.questions?.[0];
    if (
      a.type !== 'response' ||
      q === undefined ||
      q.expires <= now ||
      a.questions?.length !== 1 ||
      question === undefined ||
      canonicalName(question.name) !== q.name ||
      question.type !== q.type
    ) {
      this.counters.malformed++;
      return null;
    }
    const records = [...(a.answers ?? []), ...(a.authorities ?? []), ...(a.additionals ?? [])];
    if (records.length > MAX_UPSTREAM_RECORDS) {
      this.pending.delete(a.id as number);
      this.counters.oversized++;
      return null;
    }
    this.pending.delete(a.id as number);
    // The asked name and the CNAME chain from it (bounded by the record count).
    const names = new Set([q.name]);
    const answers: dnsPacket.Answer[] = [];
    for (let round = 0; round < 8; round++) {
      let grew = false;
      for (const r of a.answers ?? []) {
        const owner = canonicalName(r.name);
        if (r.type !== 'CNAME' || owner === null || !names.has(owner)) continue;
        const target = canonicalName(String(r.data));
        if (target !== null && !names.has(target)) {
          names.add(target);
          grew = true;
        }
      }
      if (!grew) break;
    }
    const addresses: { bytes: Uint8Array; ttl: number }[] = [];
    for (const r of a.answers ?? []) {
      const owner = canonicalName(r.name);
      if (owner === null || !names.has(owner)) continue;
      if (r.type === 'A' || r.type === 'AAAA' || r.type === 'CNAME') answers.push(r);
      if (r.type !== 'A' && r.type !== 'AAAA') continue;
      const bytes = ipBytes(String(r.data), r.type === 'A' ? 4 : 16);
      if (bytes === null) {
        this.counters.malformed++;
        return null;
      }
      addresses.push({ bytes, ttl: typeof r.ttl === 'number' ? r.ttl : 0 });
    }
    // The upstream's flags and RCODE, without its TC bit (the size here decides that).
    const flags = ((a.flags ?? 0) & ~dnsPacket.TRUNCATED_RESPONSE) | dnsPacket.RECURSION_AVAILABLE;
    let reply = dnsPacket.encode({
      type: 'response',
      id: q.id,
      flags,
      questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
      answers,
    });
    if (reply.length > MAX_UDP_ANSWER)
      reply = dnsPacket.encode({
        type: 'response',
        id: q.id,
        flags: flags | dnsPacket.TRUNCATED_RESPONSE,
        questions: [{ type: q.type as dnsPacket.RecordType, name: q.name, class: 'IN' }],
        answers: [],
      });
    this.counters.answered++;
    return { query: q, reply, addresses };
  }

  /** Forgets queries whose answer did not come in time. */
  expire(now: number): void {
    for (const [id, q] of this.pending)
      if (q.expires <= now) {
        this.pending.delete(id);
        this.counters.timeouts++;
      }
  }
}

/** An IPv4 or IPv6 address as bytes, or null when it is not one of that length. */
function ipBytes(text: string, size: 4 | 16): Uint8Array | null {
  const b = parseIp(text);
  return b === null || b.length !== size ? null : b;
}
