// The replicated store: the same contract as the SQLite store (store.ts) on an etcd cluster,
// through the etcd3 client. Layout under one key prefix (default `tenguard/`):
//
//   s/rev                 the store's revision key: rewritten by every store transaction
//   s/d/<kind>/<key>      one entry, JSON; its etcd create/mod revision are the entry's
//   leader/<lease id>     one key per campaigning replica, on its lease (leadership below)
//
// A view or transaction reads `s/` in one range request (a consistent snapshot at one etcd
// revision) and runs its function on that snapshot. A transaction's writes then commit in one
// etcd transaction guarded by "s/rev still has the mod revision of the snapshot" (and, while
// this replica campaigns, "my leader key still exists"): a concurrent writer makes it fail and
// it is run again on a fresh snapshot (etcd's software transactional memory), so every store
// transaction is serialisable and its writes share one etcd revision. Store revisions are etcd
// revisions: increasing with every committed transaction, not dense.
//
// Reads on the leader's lease: while this replica leads, no other process can commit to s/
// (every replica's transactions carry the fence, and only the one leader's fence holds; no
// two replicas lead at once, see EtcdLeadership), so the store can only change by this
// process's own commits, which it applies to its cached snapshot. A snapshot validated by a
// linearizable read made while holding the current leader key, and kept up to date by this
// process's commits since, is therefore still the store: a transaction's read, or a view
// asked with `leaderLease` (the lifecycle's; API reads stay linearizable, so that a failed
// cluster shows at once), then needs no etcd round trip at all (the lease read of the Raft
// paper, section 6.4, one level up). Writes keep their guards (s/rev's mod revision and the fence), so even a wrong cache
// could not commit anything; any doubt (a commit refused by its guards, a commit whose answer
// was lost, an own commit the cache could not follow, a new lease) drops the validation and
// the next read goes to etcd again. Not leading (a follower, the migrate command, a test),
// every read goes to etcd. Contract this relies on: nothing writes the store beside the
// replicas (store migrate writes only into an empty store, before any replica runs on it).
//
// Limits: a view or transaction reads the whole store when another process wrote since this
// one last read or wrote it (else one read of s/rev, or none on the leader; fine for a
// control plane's thousands of entries, not for millions); etcd's --max-txn-ops (128 by default) bounds the
// writes of one transaction. Watches are etcd watches on `s/d/`: every replica sees every
// committed change, in revision order, one call per revision.
//
// Failures: every etcd call has a deadline (`timeoutMs`); a member that cannot be reached or
// a cluster without quorum is TG_ERR_STORE_UNAVAILABLE (503), a cluster over its space quota
// (NOSPACE alarm) is TG_ERR_STORE_FULL (507), and health() says so with the
// cause until a call succeeds again. A commit whose answer was lost is resolved through s/rev,
// which holds the id of the transaction that wrote it last (applied()); when that cannot tell,
// the write answers 503 saying its outcome is unknown.
import { randomBytes } from 'node:crypto';
import { ConsecutiveBreaker, circuitBreaker, handleWhen, retry } from 'cockatiel';
import { Etcd3, type IKeyValue, isRecoverableError, type Lease, type Namespace, type Watcher } from 'etcd3';
import { TgError } from '../util/errors.js';
import type {
  Collections,
  Entry,
  Expect,
  Kind,
  Leadership,
  Store,
  StoreDump,
  StoreHealth,
  StoreTx,
  StoreView,
  ViewOptions,
  WatchEvent,
} from './store.js';
import { checkWrite, isKind } from './store.js';

export const DEFAULT_ETCD_PREFIX = 'tenguard/';
export const DEFAULT_ETCD_TIMEOUT_MS = 3000;
/** Runs of one transaction that may meet a concurrent writer before it gives up. */
const TXN_ATTEMPTS = 32;
const REV_KEY = 's/rev';
const DATA = 's/d/';
const LEADER = 'leader/';

export interface EtcdStoreOptions {
  /** Client URLs of the members (http://127.0.0.1:2379 or https://...). */
  endpoints: readonly string[];
  /** PEM: the CA that signed the members' certificates, and this client's own pair. */
  tls?: { ca: Buffer; cert?: Buffer; key?: Buffer };
  prefix?: string;
  /** Deadline of each etcd call. */
  timeoutMs?: number;
}

interface Snapshot {
  /** The etcd revision the snapshot was read at. */
  header: number;
  /** Mod revision of s/rev (0: no transaction yet). */
  rev: number;
  entries: Map<string, IKeyValue>;
}

const dataKey = (kind: Kind, key: string): string => `${DATA}${kind}/${key}`;

function entryOf<K extends Kind>(key: string, kv: IKeyValue): Entry<K> {
  return {
    key,
    value: JSON.parse(kv.value.toString('utf8')) as Collections[K],
    createRevision: Number(kv.create_revision),
    modRevision: Number(kv.mod_revision),
  };
}

export class EtcdStore implements Store {
  readonly kind = 'etcd';
  private readonly client: Etcd3;
  private readonly ns: Namespace;
  private readonly timeoutMs: number;
  private readonly where: string;
  private readonly listeners = new Set<(events: WatchEvent[]) => void>();
  private watcher: Watcher | null = null;
  private watchStart = 0;
  private lastHeader = 0;
  /** The last snapshot read or written by this process (see snapshot()). */
  private cache: Snapshot | null = null;
  /**
   * The leader key (`key@createRevision`) under which `cache` is known to be the store (the
   * header's lease reads); null when it must be checked against etcd.
   */
  private cacheValidUnder: string | null = null;
  /** etcd round trips made by views and transactions (reads and commits), for tests and metrics. */
  roundTrips = 0;
  private state: StoreHealth = { kind: 'etcd', state: 'ok', since: new Date().toISOString() };
  private leadership: EtcdLeadership | null = null;
  private closed = false;

  private constructor(opts: EtcdStoreOptions) {
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_ETCD_TIMEOUT_MS;
    this.where = opts.endpoints.join(',');
    this.client = new Etcd3({
      hosts: [...opts.endpoints],
      dialTimeout: this.timeoutMs,
      credentials:
        opts.tls === undefined
          ? undefined
          : { rootCertificate: opts.tls.ca, certChain: opts.tls.cert, privateKey: opts.tls.key },
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + this.timeoutMs }),
      // The client's own policies (retry, then hold a member back after 3 failures), except
      // that a refusal for want of space (gRPC RESOURCE_EXHAUSTED, which the client counts as
      // a member failure) is neither retried nor held against the member: reads must go on
      // while the cluster is full.
      faultHandling: {
        host: () =>
          circuitBreaker(handleWhen(memberFailure), {
            halfOpenAfter: 5000,
            breaker: new ConsecutiveBreaker(3),
          }),
        global: retry(handleWhen(memberFailure), { maxAttempts: 3 }),
      },
    });
    this.ns = this.client.namespace(opts.prefix ?? DEFAULT_ETCD_PREFIX);
  }

  /** Connects and reads the store once (TG_ERR_STORE_UNAVAILABLE when no member answers). */
  static async open(opts: EtcdStoreOptions): Promise<EtcdStore> {
    if (opts.endpoints.length === 0) throw new TgError('TG_ERR_CONFIG', 'no etcd endpoint given');
    const s = new EtcdStore(opts);
    try {
      await s.snapshot();
    } catch (err) {
      s.client.close();
      throw err;
    }
    return s;
  }

  async revision(): Promise<number> {
    return (await this.snapshot()).rev;
  }

  async view<T>(fn: (v: StoreView) => T, opts: ViewOptions = {}): Promise<T> {
    const snap = await this.snapshot(opts.leaderLease === true);
    return fn(this.reader(snap, new Map()));
  }

  async txn<T>(fn: (tx: StoreTx) => T): Promise<T> {
    for (let attempt = 0; attempt < TXN_ATTEMPTS; attempt++) {
      const fence = this.leadership?.fence();
      if (fence === null)
        throw new TgError(
          'TG_ERR_NOT_LEADER',
          'this replica does not hold the leadership; nothing was written',
        );
      // The commit is guarded by s/rev: a read on the lease is as good as a round trip.
      const snap = await this.snapshot(true);
      const writes = new Map<string, { kind: Kind; key: string; value: unknown | null }>();
      const result = fn(this.writer(snap, writes));
      if (writes.size === 0) return result;
      let cmp = this.ns.if(REV_KEY, 'Mod', '==', snap.rev);
      if (fence !== undefined) cmp = cmp.and(fence.key, 'Create', '==', fence.createRevision);
      const id = randomBytes(8).toString('hex');
      const ops: (ReturnType<Namespace['put']> | ReturnType<Namespace['delete']>)[] = [
        this.ns.put(REV_KEY).value(id),
      ];
      for (const [k, w] of writes)
        ops.push(w.value === null ? this.ns.delete().key(k) : this.ns.put(k).value(JSON.stringify(w.value)));
      let r: Awaited<ReturnType<typeof cmp.commit>>;
      try {
        this.roundTrips++;
        r = await this.call('commit a transaction', () => cmp.then(...ops).commit(), false);
      } catch (err) {
        // Whatever happened, the cache is no longer known to be the store.
        this.cacheValidUnder = null;
        // Refused for want of space: etcd applied nothing.
        if (err instanceof TgError && err.code === 'TG_ERR_STORE_FULL') throw err;
        // The answer was lost (a member died, an election ran): find out what happened.
        const done = await this.applied(id, snap.rev).catch(() => null);
        if (done === true) return result;
        if (done === false) continue;
        throw new TgError(
          'TG_ERR_STORE_UNAVAILABLE',
          `${(err as Error).message}; whether this change was written is unknown: read before retrying`,
          { cause: err },
        );
      }
      this.seen(Number(r.header.revision));
      if (r.succeeded) {
        this.committed(snap, writes, Number(r.header.revision));
        return result;
      }
      // Refused by its guards. When the cache has not moved on by an own commit since the
      // snapshot, something unknown changed the store (or the fence failed): read it again.
      if (this.cache === null || this.cache.rev === snap.rev) this.cacheValidUnder = null;
      if (fence !== undefined && !(await this.leadership!.stillHeld()))
        throw new TgError('TG_ERR_NOT_LEADER', 'this replica lost the leadership; nothing was written');
    }
    throw new TgError(
      'TG_ERR_CONFLICT',
      `the store kept changing under this transaction (${TXN_ATTEMPTS} runs); nothing was written`,
    );
  }

  watch(listener: (events: WatchEvent[]) => void): () => void {
    this.listeners.add(listener);
    if (this.watcher === null && this.watchStart === 0) this.startWatch();
    return () => {
      this.listeners.delete(listener);
      if (this.listeners.size > 0 || this.watcher === null) return;
      // The last listener gone: end the etcd watch (a watch left open would keep reconnecting).
      const w = this.watcher;
      this.watcher = null;
      this.watchStart = 0;
      w.cancel().catch(() => undefined);
    };
  }

  async dump(): Promise<StoreDump> {
    const snap = await this.snapshot();
    const entries: StoreDump['entries'] = [];
    for (const [k, kv] of snap.entries) {
      const [kind, key] = splitKey(k);
      if (kind === null) continue;
      const e = entryOf(key, kv);
      entries.push({
        kind,
        key,
        value: e.value,
        createRevision: e.createRevision,
        modRevision: e.modRevision,
      });
    }
    // SQLite's order: by kind, then key.
    entries.sort((a, b) =>
      a.kind < b.kind ? -1 : a.kind > b.kind ? 1 : a.key < b.key ? -1 : a.key > b.key ? 1 : 0,
    );
    return { revision: snap.rev, entries };
  }

  health(): StoreHealth {
    return { ...this.state };
  }

  campaign(address: string, ttlMs: number): Leadership {
    if (this.leadership !== null) throw new TgError('TG_ERR_CONFLICT', 'this store already campaigns');
    this.leadership = new EtcdLeadership(this, this.ns, address, ttlMs);
    return this.leadership;
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.listeners.clear();
    await this.leadership?.resign().catch(() => undefined);
    await this.watcher?.cancel().catch(() => undefined);
    this.client.close();
  }

  /** Runs one etcd call; its failure becomes TG_ERR_STORE_UNAVAILABLE and health says so. */
  /**
   * Runs one etcd call; its failure becomes TG_ERR_STORE_UNAVAILABLE and health says so. An
   * idempotent call (a read) is tried again until the deadline, so that an etcd leader
   * election (a member lost) passes unnoticed; a write is tried once.
   */
  async call<T>(what: string, fn: () => Promise<T>, idempotent = true): Promise<T> {
    if (this.closed) throw new TgError('TG_ERR_STORE_UNAVAILABLE', 'the store is closed');
    const end = Date.now() + this.timeoutMs;
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      try {
        const r = await Promise.race([
          fn(),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`no answer within ${this.timeoutMs} ms (quorum lost?)`)),
              Math.max(100, end - Date.now()) + 500,
            );
          }),
        ]);
        // A read passes on a full cluster too: only a write shows the space is back.
        if (!idempotent || this.state.state !== 'full') this.setState('ok');
        return r;
      } catch (err) {
        if (err instanceof TgError) throw err;
        // Over --quota-backend-bytes etcd raises its NOSPACE alarm and refuses every write
        // (reads and deletes still pass) until space is freed and the alarm disarmed.
        if (NO_SPACE.test((err as Error).message)) {
          const cause = `etcd's database is over its space quota (NOSPACE alarm): ${(err as Error).message}`;
          this.setState('full', cause);
          throw new TgError(
            'TG_ERR_STORE_FULL',
            `etcd at ${this.where}: cannot ${what}: the cluster's database is over its space quota ` +
              '(--quota-backend-bytes; etcd raised its NOSPACE alarm), nothing of this change was written; ' +
              'free space (compact and defragment etcd) and disarm the alarm (etcdctl alarm disarm)',
            { cause: err },
          );
        }
        if (idempotent && !this.closed && Date.now() + 100 < end) {
          await new Promise((r) => setTimeout(r, 100));
          continue;
        }
        const cause = causeOf(err as Error);
        this.setState('unavailable', cause);
        throw new TgError('TG_ERR_STORE_UNAVAILABLE', `etcd at ${this.where}: cannot ${what}: ${cause}`, {
          cause: err,
        });
      } finally {
        clearTimeout(timer);
      }
    }
  }

  /**
   * After a commit whose answer was lost: whether it was applied. s/rev holds the id of the
   * transaction that wrote it last; still at the snapshot's revision, it was not applied.
   * (Only the leader writes, one transaction at a time, so no later one hides it.)
   */
  private async applied(id: string, snapRev: number): Promise<boolean | null> {
    const r = await this.call('read the revision key', () => this.ns.get(REV_KEY).exec());
    const kv = r.kvs[0];
    if (kv !== undefined && kv.value.toString('utf8') === id) return true;
    if ((kv === undefined ? 0 : Number(kv.mod_revision)) === snapRev) return false;
    return null;
  }

  private setState(state: StoreHealth['state'], cause?: string): void {
    if (state === this.state.state && cause === this.state.cause) return;
    if (state === 'ok' && this.state.state === 'ok') return;
    this.state = {
      kind: 'etcd',
      state,
      ...(cause === undefined ? {} : { cause }),
      since: new Date().toISOString(),
    };
  }

  private seen(header: number): void {
    if (header > this.lastHeader) this.lastHeader = header;
  }

  /**
   * A consistent snapshot of the store. Every store transaction rewrites s/rev, so when a
   * linearizable read of s/rev finds the revision of the last snapshot this process read or
   * wrote, that snapshot is still the store: one small read instead of the whole store.
   */
  private async snapshot(onLease = false): Promise<Snapshot> {
    const lead = this.leaderKey();
    const cached = this.cache;
    // On the leader's lease (header): the cache is the store, no round trip.
    if (onLease && cached !== null && lead !== null && this.cacheValidUnder === lead) return cached;
    if (cached !== null) {
      this.roundTrips++;
      const g = await this.call('read the store', () => this.ns.get(REV_KEY).exec());
      const header = Number(g.header.revision);
      this.seen(header);
      const rev = g.kvs.length === 0 ? 0 : Number(g.kvs[0].mod_revision);
      if (rev === cached.rev) {
        // Still the cache (not replaced meanwhile): it was the store after this read began.
        if (this.cache === cached) this.validate(lead);
        return { header, rev, entries: cached.entries };
      }
    }
    this.roundTrips++;
    const r = await this.call('read the store', () => this.ns.getAll().prefix('s/').exec());
    const header = Number(r.header.revision);
    this.seen(header);
    let rev = 0;
    const entries = new Map<string, IKeyValue>();
    for (const kv of r.kvs) {
      // Keys come back without the namespace prefix.
      const k = kv.key.toString('utf8');
      if (k === REV_KEY) rev = Number(kv.mod_revision);
      else entries.set(k, kv);
    }
    const snap = { header, rev, entries };
    // Reads may answer out of order: an older one never replaces a newer cache.
    if (this.cache === null || header >= this.cache.header) {
      this.cache = snap;
      this.validate(lead);
    }
    return snap;
  }

  /** The current leader key as `key@createRevision` while this replica leads, else null. */
  private leaderKey(): string | null {
    const f = this.leadership?.fence();
    return f === undefined || f === null ? null : `${f.key}@${f.createRevision}`;
  }

  /**
   * After a linearizable read that began while holding leader key `lead` (and found the cache
   * to be the store): the cache stays the store while that key leads. The key must still be
   * the current one: a read begun under an older lease proves nothing about the new one.
   */
  private validate(lead: string | null): void {
    this.cacheValidUnder = lead !== null && lead === this.leaderKey() ? lead : null;
  }

  /** The snapshot after this process's own commit at `revision` (entries never mutated in place). */
  private committed(
    snap: Snapshot,
    writes: Map<string, { kind: Kind; key: string; value: unknown | null }>,
    revision: number,
  ): void {
    if (this.cache !== snap && this.cache?.rev !== snap.rev) {
      // The cache cannot follow this commit: it is no longer the store.
      this.cacheValidUnder = null;
      return;
    }
    const entries = new Map(snap.entries);
    for (const [k, w] of writes) {
      if (w.value === null) {
        entries.delete(k);
        continue;
      }
      const old = entries.get(k);
      entries.set(k, {
        key: Buffer.from(k),
        value: Buffer.from(JSON.stringify(w.value)),
        create_revision: old === undefined ? String(revision) : old.create_revision,
        mod_revision: String(revision),
        version: String(Number(old?.version ?? 0) + 1),
        lease: '0',
      });
    }
    this.cache = { header: revision, rev: revision, entries };
  }

  private reader(
    snap: Snapshot,
    writes: Map<string, { kind: Kind; key: string; value: unknown | null }>,
  ): StoreView {
    const pending = snap.header + 1;
    const get = <K extends Kind>(kind: K, key: string): Entry<K> | undefined => {
      const k = dataKey(kind, key);
      const w = writes.get(k);
      const kv = snap.entries.get(k);
      if (w !== undefined) {
        if (w.value === null) return undefined;
        return {
          key,
          value: w.value as Collections[K],
          createRevision: kv === undefined ? pending : Number(kv.create_revision),
          modRevision: pending,
        };
      }
      return kv === undefined ? undefined : entryOf<K>(key, kv);
    };
    return {
      get,
      list: <K extends Kind>(kind: K, prefix = '') => {
        const start = dataKey(kind, prefix);
        const keys = new Set<string>();
        for (const k of snap.entries.keys()) if (k.startsWith(start)) keys.add(k);
        for (const k of writes.keys()) if (k.startsWith(start)) keys.add(k);
        const out: Entry<K>[] = [];
        // Byte order of UTF-8 keys, as etcd and SQLite's BINARY collation sort them.
        for (const k of [...keys].sort(compareBytes)) {
          const e = get(kind, k.slice(DATA.length + kind.length + 1));
          if (e !== undefined) out.push(e);
        }
        return out;
      },
    };
  }

  private writer(
    snap: Snapshot,
    writes: Map<string, { kind: Kind; key: string; value: unknown | null }>,
  ): StoreTx {
    const view = this.reader(snap, writes);
    const check = (kind: Kind, key: string, expect: Expect | undefined): Entry<Kind> | undefined => {
      const cur = isKind(kind) ? view.get(kind, key) : undefined;
      checkWrite(kind, key, cur?.modRevision, expect);
      return cur;
    };
    return {
      ...view,
      put: (kind, key, value, expect) => {
        check(kind, key, expect);
        writes.set(dataKey(kind, key), { kind, key, value: structuredClone(value) });
      },
      delete: (kind, key, expect) => {
        const cur = check(kind, key, expect);
        if (cur === undefined) throw new TgError('TG_ERR_NOT_FOUND', `${kind} '${key}' does not exist`);
        writes.set(dataKey(kind, key), { kind, key, value: null });
      },
    };
  }

  private startWatch(): void {
    this.watchStart = this.lastHeader + 1;
    const w = this.ns.watch().prefix(DATA).startRevision(String(this.watchStart)).create();
    w.then(
      (watcher) => {
        if (this.closed) {
          watcher.cancel().catch(() => undefined);
          return;
        }
        this.watcher = watcher;
        watcher.on('data', (res) => {
          const byRev = new Map<number, WatchEvent[]>();
          for (const ev of res.events) {
            const [kind, key] = splitKey(ev.kv.key.toString('utf8'));
            if (kind === null) continue;
            const revision = Number(ev.kv.mod_revision);
            const list = byRev.get(revision) ?? [];
            list.push({ revision, type: ev.type === 'Put' ? 'put' : 'delete', kind, key });
            byRev.set(revision, list);
          }
          for (const rev of [...byRev.keys()].sort((a, b) => a - b))
            for (const l of this.listeners) l(byRev.get(rev)!);
        });
        watcher.on('error', (err) => this.setState('unavailable', `watch: ${err.message}`));
      },
      (err: Error) => {
        this.watchStart = 0;
        this.setState('unavailable', `watch: ${err.message}`);
      },
    );
  }
}

/** etcd's answer to a write while its NOSPACE alarm is raised. */
const NO_SPACE = /database space exceeded|NOSPACE/i;

/** A failure the client may retry on another member: not etcd's refusal of a write for space. */
function memberFailure(err: Error): boolean {
  return isRecoverableError(err) && !NO_SPACE.test(err.message);
}

/** What a failed etcd call says about the cluster, in an operator's words, with the client's. */
function causeOf(err: Error): string {
  const m = err.message;
  if (/circuit breaker is open/i.test(m))
    return `no etcd member answers (the client holds calls back after failures: ${m})`;
  if (/DEADLINE_EXCEEDED|no answer within/i.test(m))
    return `etcd does not answer in time: quorum lost or members stalled (${m})`;
  if (/UNAVAILABLE|ECONNREFUSED/i.test(m)) return `no etcd member reachable (${m})`;
  return m;
}

/** `s/d/<kind>/<key>` -> [kind, key] (kind null for any other key). */
function splitKey(k: string): [Kind | null, string] {
  if (!k.startsWith(DATA)) return [null, ''];
  const rest = k.slice(DATA.length);
  const i = rest.indexOf('/');
  const kind = rest.slice(0, i);
  return i > 0 && isKind(kind) ? [kind, rest.slice(i + 1)] : [null, ''];
}

function compareBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

/** Margin kept between this replica's own end of leadership and the lease's end in etcd. */
const LEASE_MARGIN_FRACTION = 0.25;

/**
 * Leadership on an etcd lease: the candidate puts `leader/<lease>` on its lease and leads once
 * no candidate key with a smaller create revision remains (etcd's election recipe). It leads
 * only until `sent + TTL * 0.75`, where `sent` is when the last keepalive that etcd answered
 * was sent: the lease cannot end in etcd before that, so two replicas never both believe they
 * lead. When that time passes without a renewal (etcd unreachable, no quorum, this process
 * stalled) it stops leading at once and campaigns again on a new lease.
 */
class EtcdLeadership implements Leadership {
  private readonly listeners: (() => void)[] = [];
  private leading = false;
  private known: string | undefined;
  private lease: Lease | null = null;
  private key: { key: string; createRevision: number } | null = null;
  private validUntil = 0;
  private expiry: NodeJS.Timeout | null = null;
  private stopped = false;
  private generation = 0;
  private observer: Watcher | null = null;

  constructor(
    private readonly store: EtcdStore,
    private readonly ns: Namespace,
    readonly address: string,
    private readonly ttlMs: number,
  ) {
    this.run(0);
  }

  isLeader(): boolean {
    return this.leading && Date.now() < this.validUntil;
  }

  leader(): string | undefined {
    return this.isLeader() ? this.address : this.known;
  }

  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }

  /** The fence for a store write: my key while leading, null while campaigning without lead. */
  fence(): { key: string; createRevision: number } | null {
    return this.isLeader() ? this.key : null;
  }

  /** Whether my leader key still exists (after a fenced write failed). */
  async stillHeld(): Promise<boolean> {
    if (this.key === null) return false;
    const k = this.key;
    const r = await this.store.call('read the leader key', () => this.ns.get(k.key).exec());
    const held = r.kvs.length > 0 && Number(r.kvs[0].create_revision) === k.createRevision;
    if (!held) this.stepDown('the leader key is gone');
    return held;
  }

  async resign(): Promise<void> {
    this.stopped = true;
    this.generation++;
    const lease = this.lease;
    this.stepDown('resigned');
    this.wake?.();
    await this.observer?.cancel().catch(() => undefined);
    if (lease !== null) await lease.revoke().catch(() => undefined);
  }

  private notify(): void {
    for (const l of this.listeners) l();
  }

  private stepDown(why: string): void {
    const was = this.leading;
    this.leading = false;
    this.validUntil = 0;
    if (this.expiry !== null) clearTimeout(this.expiry);
    this.expiry = null;
    if (was) {
      this.lastStepDown = why;
      this.notify();
    }
  }

  /** Why this replica last stopped leading. */
  lastStepDown = '';

  private run(delayMs: number): void {
    const gen = ++this.generation;
    setTimeout(() => {
      this.campaignOnce(gen).catch(() => {
        if (gen === this.generation && !this.stopped) this.restart(gen);
      });
    }, delayMs).unref();
  }

  /** Drops the current lease and campaigns again on a new one. */
  private restart(gen: number): void {
    if (gen !== this.generation || this.stopped) return;
    this.stepDown('lease lost');
    this.wake?.();
    const lease = this.lease;
    this.lease = null;
    this.key = null;
    lease?.revoke().catch(() => undefined);
    this.run(Math.min(500, this.ttlMs / 4));
  }

  private async campaignOnce(gen: number): Promise<void> {
    const ttlS = Math.max(1, Math.ceil(this.ttlMs / 1000));
    const lease = this.ns.lease(ttlS, { autoKeepAlive: true });
    this.lease = lease;
    // Send times of the keepalives not yet answered (answers come in order on the stream).
    const sent: number[] = [];
    this.validUntil = 0;
    lease.on('keepaliveFired', () => {
      sent.push(Date.now());
    });
    lease.on('keepaliveSucceeded', () => {
      const at = sent.shift();
      if (at !== undefined) this.renewed(gen, at, ttlS);
    });
    lease.on('keepaliveEstablished', () => {
      sent.length = 0;
    });
    lease.on('lost', () => this.restart(gen));
    const grantedAt = Date.now();
    const id = await this.store.call('grant a lease', () => lease.grant());
    if (gen !== this.generation) return;
    this.renewed(gen, grantedAt, ttlS);
    const key = `${LEADER}${id}`;
    const put = await this.store.call('put the leader key', () =>
      this.ns.put(key).value(this.address).lease(id).exec(),
    );
    const myRev = Number(put.header.revision);
    this.key = { key, createRevision: myRev };
    // Wait until no candidate before me remains, following the current leader.
    for (;;) {
      if (gen !== this.generation) return;
      const r = await this.store.call('read the candidates', () =>
        this.ns.getAll().prefix(LEADER).sort('Create', 'Ascend').exec(),
      );
      const first = r.kvs[0];
      this.setKnown(first?.value.toString('utf8'));
      const before = r.kvs.filter((kv) => Number(kv.create_revision) < myRev);
      if (r.kvs.every((kv) => kv.key.toString('utf8') !== key)) throw new Error('my leader key is gone');
      if (before.length === 0) break;
      // Any candidate leaving may change the leader (followers forward to it): read again.
      await this.waitDelete(LEADER, Number(r.header.revision), true);
    }
    if (gen !== this.generation) return;
    this.leading = true;
    this.setKnown(this.address);
    this.arm();
    this.notify();
    // While leading, watch my own key: its deletion (lease revoked by an operator) ends the lead.
    await this.waitDelete(key, Number(put.header.revision), false);
    if (gen === this.generation) this.restart(gen);
  }

  private setKnown(v: string | undefined): void {
    if (v === this.known) return;
    this.known = v;
    this.notify();
  }

  private renewed(gen: number, sentAt: number, ttlS: number): void {
    if (gen !== this.generation) return;
    this.validUntil = sentAt + ttlS * 1000 * (1 - LEASE_MARGIN_FRACTION);
    if (this.leading) this.arm();
  }

  private arm(): void {
    if (this.expiry !== null) clearTimeout(this.expiry);
    const gen = this.generation;
    this.expiry = setTimeout(() => this.restart(gen), Math.max(0, this.validUntil - Date.now()));
    this.expiry.unref();
  }

  /**
   * Resolves when `key` (or a key under it, with `prefix`) is deleted after `revision`, or when
   * the campaign restarts or stops.
   */
  private async waitDelete(key: string, revision: number, prefix: boolean): Promise<void> {
    const b = this.ns.watch();
    const watcher = await this.store.call('watch the leader keys', () =>
      (prefix ? b.prefix(key) : b.key(key)).startRevision(String(revision + 1)).create(),
    );
    this.observer = watcher;
    try {
      await new Promise<void>((resolve, reject) => {
        this.wake = resolve;
        watcher.on('delete', () => resolve());
        watcher.on('error', reject);
      });
    } finally {
      this.wake = null;
      await watcher.cancel().catch(() => undefined);
    }
  }

  private wake: (() => void) | null = null;
}
