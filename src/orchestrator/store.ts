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
// - watchers see every committed change, in revision order.
// Contract: only public data enters the store (names, addresses, labels, policy documents,
// timings); never a private key or PSK.
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

export interface Store {
  /** The revision of the last committed transaction (0 for an empty store). */
  revision(): Promise<number>;
  /** A consistent read. */
  view<T>(fn: (v: StoreView) => T): Promise<T>;
  /**
   * Runs `fn` atomically: all its writes commit under one new revision, or (when it throws)
   * none do and the error is passed on. A transaction without writes commits nothing.
   */
  txn<T>(fn: (tx: StoreTx) => T): Promise<T>;
  /** Calls `listener` after each committed change; returns the function that stops it. */
  watch(listener: (events: WatchEvent[]) => void): () => void;
  dump(): Promise<StoreDump>;
  close(): Promise<void>;
}
