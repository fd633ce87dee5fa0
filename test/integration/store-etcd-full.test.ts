// A full etcd under the orchestrator: one etcd member this test starts with a small
// --quota-backend-bytes, filled by the test itself (keys outside the orchestrator's prefix,
// as the SQLite test fills the disk) until etcd raises its NOSPACE alarm. Every write then
// answers 507 TG_ERR_STORE_FULL with a message naming the quota and saying nothing was written,
// nothing of it is stored, /v1/health and /metrics say the store is full with etcd's cause
// (a read on the full cluster does not clear it); once the filler is deleted, etcd compacted,
// defragmented and its alarm disarmed, writes succeed and health is ok again.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AlarmAction, AlarmType, Etcd3 } from 'etcd3';
import { EtcdCluster } from '../../src/lab/etcd.js';
import { apiRequest } from '../../src/util/http-json.js';
import { OrchProcess } from '../helpers/orch.js';

const QUOTA = 4 * 1024 * 1024;
const FILLER = 'tge-filler/';

interface Health {
  status: string;
  store: { kind: string; state: string; cause?: string };
}

test('etcd over its space quota: 507 TG_ERR_STORE_FULL, health and metrics say so, writes resume once space is freed', {
  timeout: 120_000,
}, async (t) => {
  const base = mkdtempSync(join(tmpdir(), 'tge-etcdfull-'));
  const cluster = await EtcdCluster.start('tge-etcdfull', 1, { quotaBackendBytes: QUOTA });
  const socket = join(base, 'orch.sock');
  const orch = new OrchProcess('', socket, [
    '--store',
    `etcd:${cluster.endpoints[0]}`,
    '--reconcile-ms',
    '0',
  ]);
  const filler = new Etcd3({ hosts: cluster.endpoints });
  // The filler's client holds calls back after etcd's refusals (its circuit breaker): the
  // operator's steps go through another.
  const etcd = new Etcd3({ hosts: cluster.endpoints });
  try {
    await orch.start();
    const post = (name: string, n: number) =>
      apiRequest(socket, 'POST', '/v1/tenants', { name, pool: `100.64.${n}.0/24` }, { timeoutMs: 20_000 });
    const health = async (): Promise<Health> =>
      (await apiRequest(socket, 'GET', '/v1/health', undefined, { timeoutMs: 20_000 })).body as Health;
    assert.equal((await post('before', 1)).status, 201);

    // Fill etcd with 512 KiB values until it refuses one (its NOSPACE alarm is then raised).
    const chunk = Buffer.alloc(512 * 1024, 0x61);
    let fillError = '';
    for (let i = 0; i < 40 && fillError === ''; i++) {
      await filler
        .put(`${FILLER}${i}`)
        .value(chunk)
        .then(
          () => undefined,
          (err: Error) => {
            fillError = err.message;
          },
        );
    }
    assert.match(fillError, /database space exceeded/, 'etcd never refused the filler');
    const alarms = await etcd.maintenance.alarm({
      action: AlarmAction.Get,
      memberID: 0,
      alarm: AlarmType.None,
    });
    assert.ok(alarms.alarms.length > 0, 'no NOSPACE alarm raised');

    const full = await post('during', 2);
    t.diagnostic(`answer on a full etcd: ${full.status} ${full.raw}`);
    assert.equal(full.status, 507, full.raw);
    const body = full.body as { code: string; message: string };
    assert.equal(body.code, 'TG_ERR_STORE_FULL');
    assert.match(body.message, /over its space quota/);
    assert.match(body.message, /nothing of this change was written/);
    // Reads still answer, and do not clear the state.
    assert.equal((await apiRequest(socket, 'GET', '/v1/tenants/during')).status, 404);
    const h = await health();
    assert.equal(h.status, 'degraded');
    assert.equal(h.store.kind, 'etcd');
    assert.equal(h.store.state, 'full');
    assert.match(h.store.cause ?? '', /NOSPACE/);
    const m = await apiRequest(socket, 'GET', '/metrics');
    assert.match(m.raw, /tenguard_orchestrator_store_state\{store="etcd",state="full",cause="[^"]*"\} 1/);

    // Space freed as an operator would: delete, compact, defragment, disarm.
    const del = await etcd.delete().prefix(FILLER);
    await etcd.kv.compact({ revision: del.header.revision, physical: true });
    await etcd.maintenance.defragment();
    for (const a of alarms.alarms)
      await etcd.maintenance.alarm({ action: AlarmAction.Deactivate, memberID: a.memberID, alarm: a.alarm });
    const again = await post('after', 3);
    assert.equal(again.status, 201, again.raw);
    const h2 = await health();
    assert.equal(h2.status, 'ok');
    assert.equal(h2.store.state, 'ok');
    const names = (
      (await apiRequest(socket, 'GET', '/v1/tenants')).body as { tenants: { name: string }[] }
    ).tenants
      .map((x) => x.name)
      .sort();
    assert.deepEqual(names, ['after', 'before']);
  } finally {
    filler.close();
    etcd.close();
    await orch.stop();
    await cluster.stop();
    rmSync(base, { recursive: true, force: true });
  }
});
