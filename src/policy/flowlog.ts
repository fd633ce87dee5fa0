// Flow records: one per connection (allowed or denied), written when the connection ends or
// is evicted, and every `interimMs` for long ones (kind "interim", counters so far). They go
// to three places:
//   - a JSON-lines file, rotated by size: <path> is current, <path>.1 the previous, up to
//     <path>.<maxFiles>; a line is never split across files. Writes are buffered and made
//     synchronously in flush() (called by the engine's tick(), or when the buffer is full),
//     so the packet path never waits on the disk and never sees a write error: those are
//     counted and logged.
//   - a ring of the most recent records in memory, for query();
//   - live subscribers: the 'record' event, and stream() as an async iterator with a bounded
//     queue (a slow reader loses the oldest records, counted in `streamDropped`).
import { EventEmitter } from 'node:events';
import { closeSync, fstatSync, openSync, renameSync, rmSync, writeSync } from 'node:fs';
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
  private readonly ring: (FlowRecord | undefined)[];
  private ringNext = 0;
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
    this.ring = new Array(opts.ringSize ?? 10_000);
    this.flushBytes = opts.flushBytes ?? 64 * 1024;
    this.streamQueue = opts.streamQueue ?? 10_000;
    if (this.maxBytes < 1024) throw new RangeError('maxBytes must be at least 1024');
    if (!Number.isInteger(this.maxFiles) || this.maxFiles < 1) throw new RangeError('maxFiles must be >= 1');
    if (this.ring.length < 1) throw new RangeError('ringSize must be >= 1');
  }

  add(r: FlowRecord): void {
    this.records++;
    if (r.kind !== 'active') {
      this.ring[this.ringNext] = r;
      this.ringNext = (this.ringNext + 1) % this.ring.length;
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
    const limit = q.limit ?? 100;
    const out: FlowRecord[] = [];
    const n = this.ring.length;
    for (let k = 1; k <= n && out.length < limit; k++) {
      const r = this.ring[(this.ringNext - k + n) % n];
      if (r === undefined) break;
      if (matches(r, q)) out.push(r);
    }
    return out;
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
