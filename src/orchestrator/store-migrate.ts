// Copies every entry of one store into another, empty one (SQLite to etcd, say): in
// transactions of at most MIGRATE_BATCH writes (etcd's --max-txn-ops is 128 by default), each
// entry put "absent", then the target is read back and compared entry by entry. Entries keep
// their kind, key and value; create and mod revisions are the target's own (revisions count
// per store). Run it with no orchestrator writing to either store.
import { TgError } from '../util/errors.js';
import type { Kind, Store } from './store.js';

export const MIGRATE_BATCH = 100;

export interface MigrateReport {
  entries: number;
  byKind: Record<string, number>;
  transactions: number;
  sourceRevision: number;
  targetRevision: number;
}

export async function migrateStore(from: Store, to: Store): Promise<MigrateReport> {
  const src = await from.dump();
  const existing = await to.dump();
  if (existing.entries.length > 0)
    throw new TgError(
      'TG_ERR_CONFLICT',
      `the target store is not empty (${existing.entries.length} entries); migrate into an empty store`,
    );
  let transactions = 0;
  for (let i = 0; i < src.entries.length; i += MIGRATE_BATCH) {
    const batch = src.entries.slice(i, i + MIGRATE_BATCH);
    await to.txn((tx) => {
      for (const e of batch) tx.put(e.kind, e.key, e.value as never, 'absent');
    });
    transactions++;
  }
  const out = await to.dump();
  const key = (e: { kind: Kind; key: string }): string => `${e.kind}/${e.key}`;
  const want = new Map(src.entries.map((e) => [key(e), JSON.stringify(e.value)]));
  const got = new Map(out.entries.map((e) => [key(e), JSON.stringify(e.value)]));
  const missing = [...want.keys()].filter((k) => got.get(k) !== want.get(k));
  const extra = [...got.keys()].filter((k) => !want.has(k));
  if (missing.length > 0 || extra.length > 0)
    throw new TgError(
      'TG_ERR_INTERNAL',
      `the target store differs after the copy: ${missing.length} missing or changed (${missing.slice(0, 5).join(', ')}), ${extra.length} extra`,
    );
  const byKind: Record<string, number> = {};
  for (const e of src.entries) byKind[e.kind] = (byKind[e.kind] ?? 0) + 1;
  return {
    entries: src.entries.length,
    byKind,
    transactions,
    sourceRevision: src.revision,
    targetRevision: out.revision,
  };
}
