// How many store operations one spin-up makes: the orchestrator over a store wrapper that
// counts views and transactions, in a two-host lab whose tenant is already on both hosts.
// On etcd every store operation of a replica that does not lead, and every commit, is a
// network round trip, so spin-up time on etcd grows with this count: a spin-up reads the
// hosts, NICs, workloads and policies once per peer list put and once for the grants, not once
// per helper that needs them. The bound fails the test if a change brings the reads back.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { LabAgents } from '../../src/lab/agents.js';
import { buildLab, destroyLab, type LabState } from '../../src/lab/index.js';
import { Orchestrator } from '../../src/orchestrator/orchestrator.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import type { Store } from '../../src/orchestrator/store.js';
import { logger } from '../../src/util/log.js';
import { ALLOW_WITHIN, orchPrefix } from '../helpers/orch.js';

/**
 * Store operations per spin-up: the reservation, the namespace record, the tenant's peers (one
 * read to find the NICs holding it, one per NIC put: 2 here), the grants, the policy, the
 * tenant network and the record of the finished spin-up. 9 today (5 views, 4
 * transactions); before the reads were shared it was 17 (13 views).
 */
const MAX_STORE_OPS_PER_SPINUP = 10;

class CountingStore {
  views = 0;
  txns = 0;
  constructor(readonly inner: Store) {}
  wrap(): Store {
    return new Proxy(this.inner, {
      get: (target, prop, receiver) => {
        if (prop === 'view')
          return <T>(fn: Parameters<Store['view']>[0]) => {
            this.views++;
            return target.view(fn) as Promise<T>;
          };
        if (prop === 'txn')
          return <T>(fn: Parameters<Store['txn']>[0]) => {
            this.txns++;
            return target.txn(fn) as Promise<T>;
          };
        const v = Reflect.get(target, prop, receiver);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    });
  }
}

const prefix = orchPrefix().replace(/^tgo/, 'tgr');
let lab: LabState | undefined;
let agents: LabAgents | undefined;
let orch: Orchestrator | undefined;
const counting = new CountingStore(SqliteStore.memory());

before(async () => {
  lab = await buildLab({ prefix, hosts: 2, tenants: 1, workloads: 0 });
  agents = await LabAgents.start(lab, { logLevel: 'warn' });
  orch = new Orchestrator(counting.wrap(), logger('test.store-reads'));
  for (const h of lab.hosts)
    await orch.registerHost({
      name: h.name,
      nicApi: h.nicApiSocket,
      vswitchApi: agents.vswitchds.get(h.name)!.socket,
      netnsPrefix: `${prefix}-${h.name}-o-`,
    });
  await orch.service.createTenant({ name: 'reads', pool: '100.64.60.0/24' });
  await orch.setPolicy('reads', ALLOW_WITHIN('reads'));
  // The tenant on both hosts, every NIC's registrations known.
  await orch.createWorkload({ tenant: 'reads', name: 'r0', host: 'h1' });
  await orch.createWorkload({ tenant: 'reads', name: 'r1', host: 'h2' });
});

after(async () => {
  for (const n of ['r0', 'r1', 'r2', 'r3']) await orch?.deleteWorkload(n).catch(() => undefined);
  await orch?.close().catch(() => undefined);
  await agents?.stop().catch(() => undefined);
  await destroyLab(prefix).catch(() => undefined);
});

test('a spin-up makes a bounded number of store operations (reads shared per peer put and for the grants)', async (t) => {
  for (const [name, host] of [
    ['r2', 'h2'],
    ['r3', 'h1'],
  ] as const) {
    const v0 = counting.views;
    const x0 = counting.txns;
    const w = await orch!.createWorkload({ tenant: 'reads', name, host });
    assert.equal(w.state, 'running');
    const views = counting.views - v0;
    const txns = counting.txns - x0;
    t.diagnostic(`spin-up of ${name} on ${host}: ${views} views, ${txns} transactions`);
    assert.ok(
      views + txns <= MAX_STORE_OPS_PER_SPINUP,
      `spin-up of ${name}: ${views} views + ${txns} transactions > ${MAX_STORE_OPS_PER_SPINUP}`,
    );
  }
});
