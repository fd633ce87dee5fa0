// The orchestrator's store and domain rules: every bad input is a clear TgError and leaves the
// store exactly as it was (full dump compared before and after).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { lowestFree, overlaps, parseIpv4Cidr, parsePool } from '../../src/orchestrator/pool.js';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { MIGRATIONS, SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { TgError } from '../../src/util/errors.js';

async function fresh(): Promise<{ store: SqliteStore; svc: OrchestratorService }> {
  const store = SqliteStore.memory();
  const svc = new OrchestratorService(store);
  await svc.createTenant({ name: 'acme', pool: '100.64.1.0/30' });
  await svc.createTenant({ name: 'blue', pool: '100.64.2.0/24' });
  await svc.registerHost({
    name: 'h1',
    nicApi: '/tmp/tg-n1.sock',
    vswitchApi: '/tmp/tg-v1.sock',
    netnsPrefix: 'tgu-h1-',
  });
  await svc.registerHost({
    name: 'h2',
    nicApi: '/tmp/tg-n2.sock',
    vswitchApi: '/tmp/tg-v2.sock',
    netnsPrefix: 'tgu-h2-',
  });
  return { store, svc };
}

async function refused(
  store: SqliteStore,
  code: string,
  fn: () => Promise<unknown>,
  match?: RegExp,
): Promise<void> {
  const before = await store.dump();
  await assert.rejects(fn, (err: unknown) => {
    assert.ok(err instanceof TgError, `expected a TgError, got ${String(err)}`);
    assert.equal(err.code, code, err.message);
    if (match) assert.match(err.message, match);
    return true;
  });
  assert.deepEqual(await store.dump(), before, 'the store changed');
}

test('pools: parsing, range, overlap, lowest free', () => {
  assert.equal(parsePool('100.64.1.0/24').text, '100.64.1.0/24');
  for (const bad of [
    '100.64.1.1/24',
    '10.0.0.0/24',
    '100.128.0.0/16',
    '100.64.0.0/9',
    '100.64.0.0/31',
    'x',
    '100.64.1.0',
    '100.64.256.0/24',
  ])
    assert.throws(
      () => parsePool(bad),
      (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_INVALID_ARGUMENT',
      bad,
    );
  assert.ok(overlaps(parseIpv4Cidr('100.64.0.0/16')!, parseIpv4Cidr('100.64.3.0/24')!));
  assert.ok(!overlaps(parseIpv4Cidr('100.64.2.0/24')!, parseIpv4Cidr('100.64.3.0/24')!));
  const p = parsePool('100.64.1.0/30');
  assert.equal(lowestFree(p, new Set(), 't'), '100.64.1.1');
  assert.equal(lowestFree(p, new Set(['100.64.1.1']), 't'), '100.64.1.2');
  assert.throws(
    () => lowestFree(p, new Set(['100.64.1.1', '100.64.1.2']), 't'),
    /TG_ERR_POOL_EXHAUSTED|every address/,
  );
});

test('store: migrations recorded, revision per transaction, compare-and-set, rollback', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tg-orch-'));
  try {
    const s = SqliteStore.open(dir);
    assert.deepEqual(
      s.schemaVersions(),
      MIGRATIONS.map((m) => m.version),
    );
    const events: number[] = [];
    s.watch((ev) => events.push(...ev.map((e) => e.revision)));
    await s.txn((tx) =>
      tx.put('tenant', 'a', { name: 'a', pool: '100.64.0.0/24', createdAt: 'x' }, 'absent'),
    );
    assert.equal(await s.revision(), 1);
    const e = await s.view((v) => v.get('tenant', 'a'));
    assert.equal(e?.modRevision, 1);
    await assert.rejects(
      s.txn((tx) =>
        tx.put('tenant', 'a', { name: 'a', pool: '100.64.0.0/24', createdAt: 'y' }, { modRevision: 7 }),
      ),
      /changed/,
    );
    await assert.rejects(
      s.txn((tx) => {
        tx.put('tenant', 'b', { name: 'b', pool: '100.64.1.0/24', createdAt: 'y' });
        throw new TgError('TG_ERR_CONFLICT', 'abort');
      }),
    );
    assert.equal(await s.revision(), 1);
    assert.equal((await s.dump()).entries.length, 1);
    assert.deepEqual(events, [1]);
    await s.close();
    const again = SqliteStore.open(dir);
    assert.equal(await again.revision(), 1);
    assert.deepEqual(
      again.schemaVersions(),
      MIGRATIONS.map((m) => m.version),
    );
    await again.close();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test('tenants: bad input refused, store unchanged', async () => {
  const { store, svc } = await fresh();
  await refused(
    store,
    'TG_ERR_CONFLICT',
    () => svc.createTenant({ name: 'acme', pool: '100.64.9.0/24' }),
    /already exists/,
  );
  await refused(
    store,
    'TG_ERR_CONFLICT',
    () => svc.createTenant({ name: 'red', pool: '100.64.0.0/16' }),
    /overlaps/,
  );
  await refused(
    store,
    'TG_ERR_INVALID_ARGUMENT',
    () => svc.createTenant({ name: 'red', pool: '100.64.9.1/24' }),
    /no host bits/,
  );
  await refused(
    store,
    'TG_ERR_INVALID_ARGUMENT',
    () => svc.createTenant({ name: 'red', pool: '192.168.0.0/24' }),
    /inside 100.64.0.0\/10/,
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.createTenant({ name: 'Bad Name', pool: '100.64.9.0/24' }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.createTenant({ name: 'red', pool: '100.64.9.0/24', extra: 1 }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () => svc.createTenant('not an object'));
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.getTenant('nobody'));
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.deleteTenant('nobody'));
  await svc.reserveWorkload({ tenant: 'acme', name: 'w1', host: 'h1' });
  await refused(store, 'TG_ERR_CONFLICT', () => svc.deleteTenant('acme'), /still has 1 workload/);
});

test('hosts: duplicates and deregistration with workloads refused', async () => {
  const { store, svc } = await fresh();
  await refused(store, 'TG_ERR_CONFLICT', () =>
    svc.registerHost({ name: 'h1', nicApi: '/tmp/x.sock', vswitchApi: '/tmp/y.sock', netnsPrefix: 'p-' }),
  );
  await refused(store, 'TG_ERR_CONFLICT', () =>
    svc.registerHost({ name: 'h3', nicApi: '/tmp/tg-n1.sock', vswitchApi: '/tmp/y.sock', netnsPrefix: 'p-' }),
  );
  await refused(store, 'TG_ERR_CONFLICT', () =>
    svc.registerHost({
      name: 'h3',
      nicApi: '/tmp/a.sock',
      vswitchApi: '/tmp/b.sock',
      netnsPrefix: 'tgu-h1-',
    }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.registerHost({ name: 'h3', nicApi: 'relative.sock', vswitchApi: '/tmp/b.sock', netnsPrefix: 'p-' }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.registerHost({
      name: 'h3',
      nicApi: '/tmp/a.sock',
      vswitchApi: '/tmp/b.sock',
      netnsPrefix: 'bad/prefix',
    }),
  );
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.deregisterHost('h9'));
  await svc.reserveWorkload({ tenant: 'acme', name: 'w1', host: 'h2' });
  await refused(store, 'TG_ERR_CONFLICT', () => svc.deregisterHost('h2'), /still has 1 workload/);
  await svc.deregisterHost('h1');
  assert.deepEqual(
    (await svc.listHosts()).map((h) => h.name),
    ['h2'],
  );
});

test('workloads: lowest free address, exhausted pool, release on delete, bad input', async () => {
  const { store, svc } = await fresh();
  const a = await svc.reserveWorkload({ tenant: 'acme', name: 'w1', host: 'h1', labels: { app: 'web' } });
  assert.equal(a.workload.address, '100.64.1.1');
  assert.equal(a.workload.netns, 'tgu-h1-w1');
  assert.equal(a.workload.state, 'creating');
  const b = await svc.reserveWorkload({ tenant: 'acme', name: 'w2', host: 'h2' });
  assert.equal(b.workload.address, '100.64.1.2');
  await refused(
    store,
    'TG_ERR_POOL_EXHAUSTED',
    () => svc.reserveWorkload({ tenant: 'acme', name: 'w3', host: 'h1' }),
    /100.64.1.0\/30/,
  );
  await refused(
    store,
    'TG_ERR_CONFLICT',
    () => svc.reserveWorkload({ tenant: 'blue', name: 'w1', host: 'h1' }),
    /already exists/,
  );
  await refused(
    store,
    'TG_ERR_NOT_FOUND',
    () => svc.reserveWorkload({ tenant: 'nobody', name: 'w9', host: 'h1' }),
    /tenant/,
  );
  await refused(
    store,
    'TG_ERR_NOT_FOUND',
    () => svc.reserveWorkload({ tenant: 'blue', name: 'w9', host: 'h9' }),
    /host/,
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.reserveWorkload({ tenant: 'blue', name: 'W 9', host: 'h1' }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () =>
    svc.reserveWorkload({ tenant: 'blue', name: 'w9', host: 'h1', labels: { 'bad key!': 'x' } }),
  );
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () => svc.reserveWorkload({ tenant: 'blue', name: 'w9' }));
  await svc.markRunning('w1', { total: 1 });
  await svc.markRunning('w2', { total: 1 });
  // Migration refusals: same host, unknown host, unknown workload.
  await refused(store, 'TG_ERR_INVALID_ARGUMENT', () => svc.beginMigrate('w1', 'h1'), /already on host/);
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.beginMigrate('w1', 'h9'), /no host/);
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.beginMigrate('w9', 'h2'), /no workload/);
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.beginDelete('w9'));
  // Delete releases the address; the next workload gets the lowest free one again.
  await svc.beginDelete('w1');
  await svc.finishDelete('w1');
  const c = await svc.reserveWorkload({ tenant: 'acme', name: 'w3', host: 'h1' });
  assert.equal(c.workload.address, '100.64.1.1');
  // abandon (a failed spin-up) leaves no trace
  const before = await store.dump();
  const d = await svc.reserveWorkload({ tenant: 'blue', name: 'w4', host: 'h1' });
  await svc.abandonWorkload(d.workload.name);
  const after = await store.dump();
  assert.deepEqual(after.entries, before.entries);
});

test('policy: structure checked, tenant named, stored per tenant', async () => {
  const { store, svc } = await fresh();
  const doc = { version: 1, tenant: 'acme', rules: [] };
  await refused(
    store,
    'TG_ERR_POLICY_REJECTED',
    () => svc.setPolicy('acme', { version: 1, tenant: 'blue', rules: [] }),
    /names tenant/,
  );
  await refused(store, 'TG_ERR_POLICY_REJECTED', () =>
    svc.setPolicy('acme', { version: 1, tenant: 'acme', rules: [], bogus: 1 }),
  );
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.setPolicy('nobody', { ...doc, tenant: 'nobody' }));
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.getPolicy('acme'), /no policy/);
  await svc.setPolicy('acme', doc);
  const stored = (await svc.getPolicy('acme')).document as typeof doc;
  assert.equal(stored.tenant, 'acme');
  assert.deepEqual(stored.rules, []);
  await svc.deleteTenant('acme');
  assert.equal((await store.dump()).entries.filter((e) => e.kind === 'policy').length, 0);
});
