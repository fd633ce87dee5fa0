// Flow records: one per connection (allowed or denied), written when the connection ends or
// is evicted, and every `interimMs` for long ones (kind "interim", counters so far). They go
// to three places:
//   - a JSON-lines file, rotated by size: <path> is current, <path>.1 the previous, up to
//     <path>.<maxFiles>; a line is never split across files. Writes are buffered and made
//     synchronously in flush() (called by the engine's tick(), or when the buffer is full),
//     so the packet path never waits on the disk and never sees a write error: those are
//     counted and logged.
//   - a ring of the most recent records in memory, for query(): columns allocated whole at
//     construction (typed arrays for numbers and addresses, arrays of references for names
//     that the directory and the rule table already hold), so a full ring costs what an empty
//     one does and a process's heap does not creep up as it fills (a ring of record objects
//     grew by about 440 bytes a record, 4.4 MB for 10,000); records are made again on query;
//   - live subscribers: the 'record' event, and stream() as an async iterator with a bounded
//     queue (a slow reader loses the oldest records, counted in `streamDropped`).
import { EventEmitter } from 'node:events';
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
import { formatIp, parseIp } from '../net/ip.js';
import { logger } from '../util/log.js';

const log = logger('flowlog');

export interface FlowRecord {
  /** "end": the connection is over; "interim": still open; "active": a snapshot, not logged. */
  kind: 'end' | 'interim' | 'active';
  start: string;
  end: string;
  startMs: number;
  endMs: number;
  /** Conntrack zone: the tenant of the connection's initiator (or of its workload end). */
  tenant: string;
  srcTenant: string | null;
  srcWorkload: string | null;
  dstTenant: string | null;
  dstWorkload: string | null;
  family: 4 | 6;
  protocol: string;
  src: string;
  dst: string;
  /** TCP/UDP ports; null for other protocols. */
  srcPort: number | null;
  dstPort: number | null;
  /** ICMP echo id, or for other ICMP messages the type; null otherwise. */
  icmpId: number | null;
  icmpType: number | null;
  packetsToDst: number;
  bytesToDst: number;
  packetsToSrc: number;
  bytesToSrc: number;
  verdict: 'allow' | 'deny';
  /** The rule that decided, as "tenant/rule-id" ("tenant/default-deny" when none matched). */
  rule: string;
  egressRule: string | null;
  ingressRule: string | null;
  /** Connection state when the record was made. */
  state: string;
  /** Why the connection ended: expired, closed, evicted, revoked (policy changed), flushed; "" if open. */
  reason: string;
  /** Which sides this NIC evaluated: egress (sending NIC), ingress (receiving NIC), both. */
  observed: 'egress' | 'ingress' | 'both';
  /**
   * The DNS name of the outside end (egress): the name its FQDN rule allowed it by, else a
   * name the NIC's DNS server gave for the address; absent when none is known.
   */
  outsideName?: string;
}

export interface FlowQuery {
  tenant?: string;
  verdict?: 'allow' | 'deny';
  /** Records whose connection was seen at or after this time (ms since the epoch). */
  since?: number;
  /** At most this many, newest first (default 100). */
  limit?: number;
}

export interface FlowLogOptions {
  /** JSON-lines file; none: memory and subscribers only. */
  path?: string;
  /** Rotate before the file would exceed this many bytes. */
  maxBytes?: number;
  /** Rotated files kept besides the current one. */
  maxFiles?: number;
  /** Records kept in memory for query(). */
  ringSize?: number;
  /** Buffered bytes that trigger a write. */
  flushBytes?: number;
  /** Queue bound per stream() reader. */
  streamQueue?: number;
}

export function matches(r: FlowRecord, q: FlowQuery): boolean {
  return (
    (q.tenant === undefined ||
      r.tenant === q.tenant ||
      r.srcTenant === q.tenant ||
      r.dstTenant === q.tenant) &&
    (q.verdict === undefined || r.verdict === q.verdict) &&
    (q.since === undefined || r.endMs >= q.since)
  );
}

/** "5m", "30s", "2h", "1d" before `now`, or an ISO time / epoch ms; the epoch ms it means. */
export function parseSince(text: string, now: number): number {
  const m = /^([0-9]+)(ms|s|m|h|d)$/.exec(text);
  if (m !== null) {
    const unit = { ms: 1, s: 1e3, m: 60e3, h: 3600e3, d: 86400e3 }[m[2] as 'ms' | 's' | 'm' | 'h' | 'd'];
    return now - Number(m[1]) * unit;
  }
  if (/^[0-9]+$/.test(text)) return Number(text);
  const t = Date.parse(text);
  if (Number.isNaN(t)) throw new RangeError(`'${text}' is not a duration (5m, 1h) or a time`);
  return t;
}

export class FlowLog extends EventEmitter {
  readonly path: string | null;
  private readonly maxBytes: number;
  private readonly maxFiles: number;
  private readonly ring: FlowRing;
  private readonly flushBytes: number;
  private readonly streamQueue: number;
  private pending: string[] = [];
  private pendingBytes = 0;
  private fd: number | null = null;
  private fileBytes = 0;
  /** Records added. */
  records = 0;
  rotations = 0;
  writeErrors = 0;
  streamDropped = 0;

  constructor(opts: FlowLogOptions = {}) {
    super();
    this.path = opts.path ?? null;
    this.maxBytes = opts.maxBytes ?? 16 * 1024 * 1024;
    this.maxFiles = opts.maxFiles ?? 5;
    const ringSize = opts.ringSize ?? 10_000;
    if (!Number.isInteger(ringSize) || ringSize < 1) throw new RangeError('ringSize must be >= 1');
    this.ring = new FlowRing(ringSize);
    this.flushBytes = opts.flushBytes ?? 64 * 1024;
    this.streamQueue = opts.streamQueue ?? 10_000;
    if (this.maxBytes < 1024) throw new RangeError('maxBytes must be at least 1024');
    if (!Number.isInteger(this.maxFiles) || this.maxFiles < 1) throw new RangeError('maxFiles must be >= 1');
  }

  add(r: FlowRecord): void {
    this.records++;
    if (r.kind !== 'active') {
      this.ring.push(r);
      if (this.path !== null) {
        const line = `${JSON.stringify(r)}\n`;
        this.pending.push(line);
        this.pendingBytes += Buffer.byteLength(line);
        if (this.pendingBytes >= this.flushBytes) this.flush();
      }
    }
    if (this.listenerCount('record') > 0) this.emit('record', r);
  }

  /** Recent records matching `q`, newest first. */
  query(q: FlowQuery = {}): FlowRecord[] {
    return this.ring.query(q, q.limit ?? 100);
  }

  /** Live records matching `q` until `signal` aborts (then the iterator ends). */
  async *stream(q: FlowQuery = {}, signal?: AbortSignal): AsyncGenerator<FlowRecord> {
    const queue: FlowRecord[] = [];
    let wake: (() => void) | null = null;
    const onRecord = (r: FlowRecord) => {
      if (!matches(r, q)) return;
      if (queue.length >= this.streamQueue) {
        queue.shift();
        this.streamDropped++;
      }
      queue.push(r);
      wake?.();
    };
    const onAbort = () => wake?.();
    this.on('record', onRecord);
    signal?.addEventListener('abort', onAbort);
    try {
      while (signal?.aborted !== true) {
        const r = queue.shift();
        if (r !== undefined) {
          yield r;
          continue;
        }
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
        wake = null;
      }
    } finally {
      this.off('record', onRecord);
      signal?.removeEventListener('abort', onAbort);
    }
  }

  /** Writes buffered lines, rotating as needed. Never throws. */
  flush(): void {
    if (this.path === null || this.pending.length === 0) return;
    const lines = this.pending;
    this.pending = [];
    this.pendingBytes = 0;
    try {
      if (this.fd === null) this.open();
      let chunk = '';
      let chunkBytes = 0;
      for (const line of lines) {
        const n = Buffer.byteLength(line);
        if (this.fileBytes + chunkBytes + n > this.maxBytes && this.fileBytes + chunkBytes > 0) {
          if (chunkBytes > 0) this.write(chunk, chunkBytes);
          chunk = '';
          chunkBytes = 0;
          this.rotate();
        }
        chunk += line;
        chunkBytes += n;
      }
      if (chunkBytes > 0) this.write(chunk, chunkBytes);
    } catch (err) {
      this.writeErrors++;
      if (this.writeErrors === 1 || this.writeErrors % 1000 === 0)
        log.warn(
          { err: (err as Error).message, path: this.path, errors: this.writeErrors },
          'flow log write failed',
        );
      this.closeFd();
    }
  }

  close(): void {
    this.flush();
    this.closeFd();
  }

  private open(): void {
    const path = this.path as string;
    this.fd = openSync(path, 'a', 0o640);
    this.fileBytes = fstatSync(this.fd).size;
  }

  private write(chunk: string, bytes: number): void {
    writeSync(this.fd as number, chunk);
    this.fileBytes += bytes;
  }

  private rotate(): void {
    const path = this.path as string;
    this.closeFd();
    rmSync(`${path}.${this.maxFiles}`, { force: true });
    for (let k = this.maxFiles - 1; k >= 1; k--) {
      try {
        renameSync(`${path}.${k}`, `${path}.${k + 1}`);
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
      }
    }
    renameSync(path, `${path}.1`);
    this.rotations++;
    this.open();
  }

  private closeFd(): void {
    if (this.fd !== null) {
      try {
        closeSync(this.fd);
      } catch {
        // Already gone: nothing to release.
      }
      this.fd = null;
    }
  }
}

const KINDS = ['end', 'interim'] as const;
const VERDICTS = ['allow', 'deny'] as const;
const OBSERVED = ['egress', 'ingress', 'both'] as const;
const NONE = -1;

/** Fields of a record that its columns do not give back exactly (kept as they came). */
type Verbatim = Partial<Pick<FlowRecord, 'start' | 'end' | 'src' | 'dst' | 'kind' | 'verdict' | 'observed'>>;

/**
 * The in-memory ring of flow records, as columns allocated at construction. Names (tenants,
 * workloads, rules, protocol, state, reason) are references to strings the engine already
 * holds; times are the epoch ms (the ISO texts are made on query); addresses are 16 bytes.
 * A field that would not come back exactly (an address or time text in another form) is kept
 * verbatim for that record.
 */
class FlowRing {
  private next = 0;
  private count = 0;
  private readonly kind: Uint8Array;
  private readonly family: Uint8Array;
  private readonly verdict: Uint8Array;
  private readonly observed: Uint8Array;
  private readonly ms: Float64Array; // start, end
  private readonly counters: Float64Array; // packetsToDst, bytesToDst, packetsToSrc, bytesToSrc
  private readonly ports: Int32Array; // srcPort, dstPort, icmpId, icmpType (NONE: null)
  private readonly addrs: Uint8Array; // src 16, dst 16
  private readonly names: (string | null)[]; // NAME_FIELDS.length per record
  private readonly verbatim: (Verbatim | null)[];

  constructor(readonly size: number) {
    this.kind = new Uint8Array(size);
    this.family = new Uint8Array(size);
    this.verdict = new Uint8Array(size);
    this.observed = new Uint8Array(size);
    this.ms = new Float64Array(size * 2);
    this.counters = new Float64Array(size * 4);
    this.ports = new Int32Array(size * 4);
    this.addrs = new Uint8Array(size * 32);
    this.names = new Array<string | null>(size * NAME_FIELDS.length).fill(null);
    this.verbatim = new Array<Verbatim | null>(size).fill(null);
  }

  push(r: FlowRecord): void {
    const i = this.next;
    this.next = (i + 1) % this.size;
    if (this.count < this.size) this.count++;
    let v: Verbatim | null = null;
    const keep = <K extends keyof Verbatim>(k: K, value: Verbatim[K]): void => {
      v ??= {};
      v[k] = value;
    };
    const kind = KINDS.indexOf(r.kind as 'end' | 'interim');
    this.kind[i] = Math.max(0, kind);
    if (kind < 0) keep('kind', r.kind);
    const verdict = VERDICTS.indexOf(r.verdict);
    this.verdict[i] = Math.max(0, verdict);
    if (verdict < 0) keep('verdict', r.verdict);
    const observed = OBSERVED.indexOf(r.observed);
    this.observed[i] = Math.max(0, observed);
    if (observed < 0) keep('observed', r.observed);
    this.family[i] = r.family;
    this.ms[i * 2] = r.startMs;
    this.ms[i * 2 + 1] = r.endMs;
    if (!isoOf(r.startMs, r.start)) keep('start', r.start);
    if (!isoOf(r.endMs, r.end)) keep('end', r.end);
    const c = i * 4;
    this.counters[c] = r.packetsToDst;
    this.counters[c + 1] = r.bytesToDst;
    this.counters[c + 2] = r.packetsToSrc;
    this.counters[c + 3] = r.bytesToSrc;
    this.ports[c] = r.srcPort ?? NONE;
    this.ports[c + 1] = r.dstPort ?? NONE;
    this.ports[c + 2] = r.icmpId ?? NONE;
    this.ports[c + 3] = r.icmpType ?? NONE;
    if (!this.putAddress(i * 32, r.family, r.src)) keep('src', r.src);
    if (!this.putAddress(i * 32 + 16, r.family, r.dst)) keep('dst', r.dst);
    const n = i * NAME_FIELDS.length;
    for (let k = 0; k < NAME_FIELDS.length; k++)
      this.names[n + k] = (r[NAME_FIELDS[k]] ?? null) as string | null;
    this.verbatim[i] = v;
  }

  /** Matching records, newest first, at most `limit`; only those returned are made. */
  query(q: FlowQuery, limit: number): FlowRecord[] {
    const out: FlowRecord[] = [];
    for (let k = 1; k <= this.count && out.length < limit; k++) {
      const i = (this.next - k + this.size) % this.size;
      const n = i * NAME_FIELDS.length;
      if (q.tenant !== undefined) {
        const t = q.tenant;
        if (
          this.names[n + NAME_TENANT] !== t &&
          this.names[n + NAME_SRC_TENANT] !== t &&
          this.names[n + NAME_DST_TENANT] !== t
        )
          continue;
      }
      if (q.verdict !== undefined && (this.verbatim[i]?.verdict ?? VERDICTS[this.verdict[i]]) !== q.verdict)
        continue;
      if (q.since !== undefined && this.ms[i * 2 + 1] < q.since) continue;
      out.push(this.record(i));
    }
    return out;
  }

  private record(i: number): FlowRecord {
    const n = i * NAME_FIELDS.length;
    const c = i * 4;
    const v = this.verbatim[i];
    const family = this.family[i] as 4 | 6;
    const startMs = this.ms[i * 2];
    const endMs = this.ms[i * 2 + 1];
    const port = (x: number): number | null => (x === NONE ? null : x);
    const name = (k: number): string | null => this.names[n + k];
    return {
      kind: v?.kind ?? KINDS[this.kind[i]],
      start: v?.start ?? new Date(startMs).toISOString(),
      end: v?.end ?? new Date(endMs).toISOString(),
      startMs,
      endMs,
      tenant: name(NAME_TENANT) as string,
      srcTenant: name(NAME_SRC_TENANT),
      srcWorkload: name(2),
      dstTenant: name(NAME_DST_TENANT),
      dstWorkload: name(4),
      family,
      protocol: name(5) as string,
      src: v?.src ?? this.getAddress(i * 32, family),
      dst: v?.dst ?? this.getAddress(i * 32 + 16, family),
      srcPort: port(this.ports[c]),
      dstPort: port(this.ports[c + 1]),
      icmpId: port(this.ports[c + 2]),
      icmpType: port(this.ports[c + 3]),
      packetsToDst: this.counters[c],
      bytesToDst: this.counters[c + 1],
      packetsToSrc: this.counters[c + 2],
      bytesToSrc: this.counters[c + 3],
      verdict: v?.verdict ?? VERDICTS[this.verdict[i]],
      rule: name(6) as string,
      egressRule: name(7),
      ingressRule: name(8),
      state: name(9) as string,
      reason: name(10) as string,
      observed: v?.observed ?? OBSERVED[this.observed[i]],
      ...(name(11) !== null ? { outsideName: name(11) as string } : {}),
    };
  }

  /** Stores an address when it parses to the family and formats back to the same text. */
  private putAddress(at: number, family: number, text: string): boolean {
    const a = parseIp(text);
    if (a === null || a.length !== (family === 4 ? 4 : 16) || formatIp(a) !== text) return false;
    this.addrs.set(a, at);
    return true;
  }

  private getAddress(at: number, family: 4 | 6): string {
    return formatIp(this.addrs.subarray(at, at + (family === 4 ? 4 : 16)));
  }
}

/** The string-valued fields kept by reference, in column order. */
const NAME_FIELDS = [
  'tenant',
  'srcTenant',
  'srcWorkload',
  'dstTenant',
  'dstWorkload',
  'protocol',
  'rule',
  'egressRule',
  'ingressRule',
  'state',
  'reason',
  'outsideName',
] as const satisfies readonly (keyof FlowRecord)[];
const NAME_TENANT = 0;
const NAME_SRC_TENANT = 1;
const NAME_DST_TENANT = 3;

function isoOf(ms: number, text: string): boolean {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15 && new Date(ms).toISOString() === text;
}
