// The embedded store: SQLite through better-sqlite3, in WAL mode, in a data directory.
// One table of entries (kind, key, JSON value, create and mod revision) and a meta row with
// the store revision; schema changes are versioned steps recorded in schema_migrations and
// applied in order at open. Transactions are SQLite transactions: a thrown error rolls back
// every write and the revision. Watchers are in-process (this store has one writer), and so
// is leadership: the first campaign of this process leads until it resigns (one replica).
// A write the disk cannot take (SQLITE_FULL) is TG_ERR_STORE_FULL, other I/O failures are
// TG_ERR_STORE_UNAVAILABLE; health() keeps the failure until a write succeeds again.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
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
  WatchEvent,
} from './store.js';
import { checkWrite, isKind } from './store.js';

export const STORE_FILE = 'orchestrator.db';

/** Versioned schema steps; a step never changes once released, new ones are appended. */
export const MIGRATIONS: readonly { version: number; name: string; sql: string }[] = [
  {
    version: 1,
    name: 'entries and revision',
    sql: `CREATE TABLE entries (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value TEXT NOT NULL,
            create_revision INTEGER NOT NULL,
            mod_revision INTEGER NOT NULL,
            PRIMARY KEY (kind, key)
          ) WITHOUT ROWID;
          CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
          INSERT INTO meta (name, value) VALUES ('revision', 0);`,
  },
  {
    version: 2,
    name: 'index by mod revision (watch resume)',
    sql: 'CREATE INDEX entries_mod_revision ON entries (mod_revision);',
  },
];

interface Row {
  kind: string;
  key: string;
  value: string;
  create_revision: number;
  mod_revision: number;
}

/** SQLite's failure as the store's code: a full disk, or a store that cannot be used. */
export function storeFailure(err: unknown): TgError | null {
  const code = (err as { code?: unknown }).code;
  if (typeof code !== 'string' || !code.startsWith('SQLITE_')) return null;
  const cause = (err as Error).message;
  if (code === 'SQLITE_FULL')
    return new TgError(
      'TG_ERR_STORE_FULL',
      `the store's disk is full (${cause}); nothing of this change was written`,
      { cause: err },
    );
  if (/^SQLITE_(IOERR|READONLY|CANTOPEN|BUSY|LOCKED|CORRUPT|NOTADB|PROTOCOL)/.test(code))
    return new TgError(
      'TG_ERR_STORE_UNAVAILABLE',
      `the store cannot be written (${code}: ${cause}); nothing of this change was written`,
      { cause: err },
    );
  return null;
}

/** In-process leadership: candidates in campaign order, the first leads. */
class LocalLeadership implements Leadership {
  private readonly listeners: (() => void)[] = [];
  constructor(
    readonly address: string,
    private readonly queue: LocalLeadership[],
  ) {
    queue.push(this);
  }
  isLeader(): boolean {
    return this.queue[0] === this;
  }
  leader(): string | undefined {
    return this.queue[0]?.address;
  }
  onChange(listener: () => void): void {
    this.listeners.push(listener);
  }
  notify(): void {
    for (const l of this.listeners) l();
  }
  async resign(): Promise<void> {
    const i = this.queue.indexOf(this);
    if (i < 0) return;
    this.queue.splice(i, 1);
    for (const c of [this, ...this.queue]) c.notify();
  }
}

export class SqliteStore implements Store {
  readonly kind = 'sqlite';
  private readonly listeners = new Set<(events: WatchEvent[]) => void>();
  private readonly stmts;
  private state: StoreHealth = { kind: 'sqlite', state: 'ok', since: new Date().toISOString() };
  private readonly candidates: LocalLeadership[] = [];
  private campaigning = false;

  private constructor(private readonly db: Database.Database) {
    this.stmts = {
      get: db.prepare<[string, string], Row>('SELECT * FROM entries WHERE kind = ? AND key = ?'),
      list: db.prepare<[string, string, string], Row>(
        'SELECT * FROM entries WHERE kind = ? AND key >= ? AND key < ? || char(1114111) ORDER BY key',
      ),
      upsert: db.prepare(
        'INSERT INTO entries (kind, key, value, create_revision, mod_revision) VALUES (?, ?, ?, ?, ?) ' +
          'ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision',
      ),
      del: db.prepare('DELETE FROM entries WHERE kind = ? AND key = ?'),
      revision: db.prepare<[], { value: number }>("SELECT value FROM meta WHERE name = 'revision'"),
      setRevision: db.prepare("UPDATE meta SET value = ? WHERE name = 'revision'"),
      all: db.prepare<[], Row>('SELECT * FROM entries ORDER BY kind, key'),
    };
  }

  /** Opens (creating when absent) the store in `dataDir`, applying pending schema steps. */
  static open(dataDir: string): SqliteStore {
    mkdirSync(dataDir, { recursive: true, mode: 0o700 });
    let db: Database.Database;
    try {
      db = new Database(join(dataDir, STORE_FILE));
    } catch (err) {
      throw new TgError('TG_ERR_CONFIG', `cannot open the store in ${dataDir}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    db.pragma('journal_mode = WAL');
    db.pragma('synchronous = NORMAL');
    db.pragma('busy_timeout = 5000');
    migrate(db);
    return new SqliteStore(db);
  }

  /** In memory (unit tests). */
  static memory(): SqliteStore {
    const db = new Database(':memory:');
    migrate(db);
    return new SqliteStore(db);
  }

  /** The schema versions applied, in order. */
  schemaVersions(): number[] {
    return (
      this.db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as {
        version: number;
      }[]
    ).map((r) => r.version);
  }

  async revision(): Promise<number> {
    return this.currentRevision();
  }

  /** Always a read of the database (`leaderLease` changes nothing: one process). */
  async view<T>(fn: (v: StoreView) => T): Promise<T> {
    return this.db.transaction(() => fn(this.reader()))();
  }

  async txn<T>(fn: (tx: StoreTx) => T): Promise<T> {
    if (this.campaigning && this.candidates.length === 0)
      throw new TgError(
        'TG_ERR_NOT_LEADER',
        'this replica does not hold the leadership; nothing was written',
      );
    const events: WatchEvent[] = [];
    let result: T;
    try {
      result = this.db.transaction(() => {
        const revision = this.currentRevision() + 1;
        const tx = this.writer(revision, events);
        const r = fn(tx);
        if (events.length > 0) this.stmts.setRevision.run(revision);
        return r;
      })();
    } catch (err) {
      const failure = storeFailure(err);
      if (failure === null) throw err;
      this.setState(failure.code === 'TG_ERR_STORE_FULL' ? 'full' : 'unavailable', (err as Error).message);
      throw failure;
    }
    if (events.length > 0) {
      this.setState('ok');
      for (const l of this.listeners) l(events);
    }
    return result;
  }

  health(): StoreHealth {
    return { ...this.state };
  }

  campaign(address: string, _ttlMs: number): Leadership {
    this.campaigning = true;
    return new LocalLeadership(address, this.candidates);
  }

  private setState(state: StoreHealth['state'], cause?: string): void {
    if (state === this.state.state && cause === this.state.cause) return;
    this.state = {
      kind: 'sqlite',
      state,
      ...(cause === undefined ? {} : { cause }),
      since: new Date().toISOString(),
    };
  }

  watch(listener: (events: WatchEvent[]) => void): () => void {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }

  async dump(): Promise<StoreDump> {
    return this.db.transaction(() => ({
      revision: this.currentRevision(),
      entries: this.stmts.all.all().map((r) => ({
        kind: r.kind as Kind,
        key: r.key,
        value: JSON.parse(r.value) as unknown,
        createRevision: r.create_revision,
        modRevision: r.mod_revision,
      })),
    }))();
  }

  async close(): Promise<void> {
    this.listeners.clear();
    if (this.db.open) this.db.close();
  }

  private currentRevision(): number {
    return this.stmts.revision.get()?.value ?? 0;
  }

  private toEntry<K extends Kind>(r: Row): Entry<K> {
    return {
      key: r.key,
      value: JSON.parse(r.value) as Collections[K],
      createRevision: r.create_revision,
      modRevision: r.mod_revision,
    };
  }

  private reader(): StoreView {
    return {
      get: <K extends Kind>(kind: K, key: string) => {
        const r = this.stmts.get.get(kind, key);
        return r === undefined ? undefined : this.toEntry<K>(r);
      },
      list: <K extends Kind>(kind: K, prefix = '') =>
        this.stmts.list.all(kind, prefix, prefix).map((r) => this.toEntry<K>(r)),
    };
  }

  private writer(revision: number, events: WatchEvent[]): StoreTx {
    const view = this.reader();
    const check = (kind: Kind, key: string, expect: Expect | undefined): Row | undefined => {
      const cur = isKind(kind) ? this.stmts.get.get(kind, key) : undefined;
      checkWrite(kind, key, cur?.mod_revision, expect);
      return cur;
    };
    return {
      ...view,
      put: (kind, key, value, expect) => {
        const cur = check(kind, key, expect);
        this.stmts.upsert.run(kind, key, JSON.stringify(value), cur?.create_revision ?? revision, revision);
        events.push({ revision, type: 'put', kind, key });
      },
      delete: (kind, key, expect) => {
        const cur = check(kind, key, expect);
        if (cur === undefined) throw new TgError('TG_ERR_NOT_FOUND', `${kind} '${key}' does not exist`);
        this.stmts.del.run(kind, key);
        events.push({ revision, type: 'delete', kind, key });
      },
    };
  }
}

function migrate(db: Database.Database): void {
  db.exec(
    'CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)',
  );
  const applied = new Set(
    (db.prepare('SELECT version FROM schema_migrations').all() as { version: number }[]).map(
      (r) => r.version,
    ),
  );
  const known = Math.max(...MIGRATIONS.map((m) => m.version));
  for (const v of applied)
    if (v > known)
      throw new TgError(
        'TG_ERR_CONFIG',
        `the store has schema version ${v}, newer than this orchestrator knows (${known})`,
      );
  const record = db.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)');
  for (const m of MIGRATIONS) {
    if (applied.has(m.version)) continue;
    db.transaction(() => {
      db.exec(m.sql);
      record.run(m.version, m.name, new Date().toISOString());
    })();
  }
}
