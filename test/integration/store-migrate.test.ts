// `tenguard orchestrator store migrate --from sqlite:DIR --to etcd:URL`: a SQLite store with
// tenants, hosts, a policy and workload records is copied into a real etcd (started by this
// test on loopback ports, ended by pid) through the CLI; the etcd store then holds exactly the
// same entries, an orchestrator started on it serves them, and a second migration into the
// now non-empty store is refused and changes nothing.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { OrchestratorClient } from '../../src/orchestrator/client.js';
import { EtcdStore } from '../../src/orchestrator/etcd-store.js';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { run } from '../../src/util/exec.js';
import { OrchProcess } from '../helpers/orch.js';

const BIN = fileURLToPath(new URL('../../../bin/tenguard.js', import.meta.url));

const strip = (d: Awaited<ReturnType<SqliteStore['dump']>>) =>
  d.entries.map((e) => ({ kind: e.kind, key: e.key, value: e.value }));

test('store migrate: SQLite to etcd through the CLI, the copy is exact, an orchestrator serves it, a second run is refused', async () => {
  const dir = mkdtempSync(join(tmpdir(), 'tge-migrate-'));
  let cluster: EtcdCluster | null = null;
  let orch: OrchProcess | null = null;
  try {
    const sq = SqliteStore.open(join(dir, 'sqlite'));
    const svc = new OrchestratorService(sq);
    for (let i = 1; i <= 3; i++) await svc.createTenant({ name: `t${i}`, pool: `100.64.${i}.0/24` });
    for (let i = 1; i <= 2; i++)
      await svc.registerHost({
        name: `h${i}`,
        nicApi: `/run/tge-n${i}.sock`,
        vswitchApi: `/run/tge-v${i}.sock`,
        netnsPrefix: `tge-h${i}-`,
      });
    // Workload records with their allocations (no agents here: reserved, then marked running).
    for (let i = 0; i < 150; i++) {
      const { workload } = await svc.reserveWorkload({
        tenant: `t${(i % 3) + 1}`,
        name: `w${i}`,
        host: `h${(i % 2) + 1}`,
      });
      await svc.markRunning(workload.name, { total: 1 });
    }
    const source = await sq.dump();
    await sq.close();
    cluster = await EtcdCluster.start('tge-migrate', 1);
    const url = cluster.endpoints[0];
    const r = await run(
      process.execPath,
      [
        BIN,
        'orchestrator',
        'store',
        'migrate',
        '--from',
        `sqlite:${join(dir, 'sqlite')}`,
        '--to',
        `etcd:${url}`,
        '--json',
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as {
      entries: number;
      transactions: number;
      byKind: Record<string, number>;
    };
    assert.equal(report.entries, source.entries.length);
    assert.ok(report.transactions >= 3, 'more entries than one etcd transaction takes: several batches');
    assert.equal(report.byKind.workload, 150);
    const et = await EtcdStore.open({ endpoints: cluster.endpoints });
    const copied = await et.dump();
    assert.deepEqual(strip(copied), strip(source));
    // A second migration into the now non-empty store is refused and changes nothing.
    const again = await run(
      process.execPath,
      [
        BIN,
        'orchestrator',
        'store',
        'migrate',
        '--from',
        `sqlite:${join(dir, 'sqlite')}`,
        '--to',
        `etcd:${url}`,
      ],
      { timeoutMs: 60_000 },
    );
    assert.notEqual(again.code, 0);
    assert.match(again.stderr, /TG_ERR_CONFLICT|not empty/);
    assert.equal((await et.dump()).revision, copied.revision);
    await et.close();
    // An orchestrator on the etcd store serves what was migrated.
    orch = new OrchProcess('', join(dir, 'orch.sock'), ['--store', `etcd:${url}`, '--reconcile-ms', '0']);
    await orch.start();
    const c = new OrchestratorClient(orch.socket);
    assert.deepEqual(
      (await c.listTenants()).map((t) => t.name),
      ['t1', 't2', 't3'],
    );
    assert.equal((await c.listWorkloads()).length, 150);
    assert.equal((await c.showWorkload('w7')).state, 'running');
  } finally {
    await orch?.stop();
    await cluster?.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
