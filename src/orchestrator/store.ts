// The orchestrator's store: desired state as typed records in six collections, behind one
// interface shaped after etcd's model so that an etcd implementation fits without changing
// callers:
// - every committed transaction advances one store-wide revision; each entry carries the
//   revision that created it and the one that last changed it (etcd's create/mod revision);
// - writes may be conditional (compare-and-set on an entry's modRevision, or "must be absent"),
//   failing with TG_ERR_CONFLICT and changing nothing;
// - a transaction is a function over a read/write view that runs atomically and may be run
//   again (etcd's software transactional memory retries on conflict), so it must not have side
//   effects outside the view;
// - watchers see every committed change, in revision order;
// - leadership: replicas campaign on one lease; at most one holds it, and one that cannot renew
//   it in time stops being leader before the lease can run out in the store (see Leadership);
// - a store that cannot be reached or written answers TG_ERR_STORE_UNAVAILABLE (503) or, for
//   a full disk, TG_ERR_STORE_FULL (507), never an internal error, and health() says so.
// Contract: only public data enters the store (names, addresses, labels, policy documents,
// timings); never a private key or PSK.
import { TgError } from '../util/errors.js';
import type {
  AllocationRecord,
  HostRecord,
  NamespaceRecord,
  PolicyRecord,
  ServiceRecord,
  TenantRecord,
  WorkloadRecord,
} from './model.js';

export interface Collections {
  tenant: TenantRecord;
  host: HostRecord;
  workload: WorkloadRecord;
  policy: PolicyRecord;
  /** Keyed `<tenant>/<address>`. */
  allocation: AllocationRecord;
  /** Namespaces the orchestrator created, keyed by name. */
  namespace: NamespaceRecord;
  /** Keyed `<tenant>/<name>`. */
  service: ServiceRecord;
}

export type Kind = keyof Collections;
export const KINDS: readonly Kind[] = [
  'tenant',
  'host',
  'workload',
  'policy',
  'allocation',
  'namespace',
  'service',
];

export interface Entry<K extends Kind> {
  key: string;
  value: Collections[K];
  createRevision: number;
  modRevision: number;
}

/** A condition on a write: the entry's current modRevision, or that there is no entry. */
export type Expect = { modRevision: number } | 'absent';

export function isKind(k: string): k is Kind {
  return (KINDS as readonly string[]).includes(k);
}

/**
 * The contract's checks of one write, for every store: a known collection, and `expect` met by
 * the entry's current modRevision (`current`, undefined when there is no entry).
 */
export function checkWrite(
  kind: Kind,
  key: string,
  current: number | undefined,
  expect: Expect | undefined,
): void {
  if (!isKind(kind)) throw new TgError('TG_ERR_INTERNAL', `unknown collection '${String(kind)}'`);
  if (expect === 'absent' && current !== undefined)
    throw new TgError('TG_ERR_CONFLICT', `${kind} '${key}' already exists`);
  if (expect !== undefined && expect !== 'absent') {
    if (current === undefined) throw new TgError('TG_ERR_NOT_FOUND', `${kind} '${key}' does not exist`);
    if (current !== expect.modRevision)
      throw new TgError(
        'TG_ERR_CONFLICT',
        `${kind} '${key}' changed (revision ${current}, expected ${expect.modRevision})`,
      );
  }
}

export interface StoreView {
  get<K extends Kind>(kind: K, key: string): Entry<K> | undefined;
  /** Entries of a collection whose key starts with `prefix`, in key order. */
  list<K extends Kind>(kind: K, prefix?: string): Entry<K>[];
}

export interface StoreTx extends StoreView {
  put<K extends Kind>(kind: K, key: string, value: Collections[K], expect?: Expect): void;
  /** Deletes an entry; TG_ERR_NOT_FOUND when absent, TG_ERR_CONFLICT when `expect` fails. */
  delete<K extends Kind>(kind: K, key: string, expect?: { modRevision: number }): void;
}

export interface WatchEvent {
  revision: number;
  type: 'put' | 'delete';
  kind: Kind;
  key: string;
}

/** Every entry of every collection, and the revision: what tests compare before and after. */
export interface StoreDump {
  revision: number;
  entries: { kind: Kind; key: string; value: unknown; createRevision: number; modRevision: number }[];
}

/** What the store's last operations showed: ok, or why it failed (kept until one succeeds). */
export interface StoreHealth {
  kind: 'sqlite' | 'etcd';
  state: 'ok' | 'unavailable' | 'full';
  /** The failure's cause as the store reported it (e.g. "database or disk is full"). */
  cause?: string;
  /** When the current state began (ISO time). */
  since: string;
}

/**
 * A replica's campaign for leadership. The holder is the one replica that reconciles and
 * drives agents. isLeader() turns false at once when the lease cannot be renewed in time,
 * before any other replica can be elected; the campaign then starts again.
 */
export interface Leadership {
  isLeader(): boolean;
  /** The address the current leader campaigned with; undefined while there is none. */
  leader(): string | undefined;
  /** Called on every change of this replica's leadership or of the known leader. */
  onChange(listener: () => void): void;
  /** Gives the lease up (another replica may be elected at once) and stops campaigning. */
  resign(): Promise<void>;
}

export interface ViewOptions {
  leaderLease?: boolean;
}

export interface Store {
  readonly kind: 'sqlite' | 'etcd';
  /** The revision of the last committed transaction (0 for an empty store). */
  revision(): Promise<number>;
  /**
   * A consistent read: linearizable (it sees every transaction committed before it began,
   * and a store that cannot be reached fails it). With `leaderLease`, a replica that leads
   * may answer from what it knows under its lease (etcd: the snapshot its own commits keep,
   * no round trip; see etcd-store.ts): the same data, since only the leader writes, but a
   * store that just failed is noticed only at the next write or when the lease runs out. For
   * the leader's own work (the lifecycle), not for API reads.
   */
  view<T>(fn: (v: StoreView) => T, opts?: ViewOptions): Promise<T>;
  /**
   * Runs `fn` atomically: all its writes commit under one new revision, or (when it throws)
   * none do and the error is passed on. A transaction without writes commits nothing. (Its
   * reads may come from the leader's lease as `view` with `leaderLease`: its commit is
   * guarded, so a transaction is serialisable either way.)
   */
  txn<T>(fn: (tx: StoreTx) => T): Promise<T>;
  /** Calls `listener` after each committed change; returns the function that stops it. */
  watch(listener: (events: WatchEvent[]) => void): () => void;
  dump(): Promise<StoreDump>;
  /** The state the store's last operations showed. */
  health(): StoreHealth;
  /**
   * Campaigns for leadership as `address` (how other replicas reach this one) on a lease of
   * `ttlMs`. While a campaign runs, this store's transactions commit only while it leads
   * (TG_ERR_NOT_LEADER otherwise): a replica that lost its lease writes nothing more.
   */
  campaign(address: string, ttlMs: number): Leadership;
  close(): Promise<void>;
}
