// Several NICs per host: the placement rule (nics.ts), the site keys, the host and workload
// records in the store, and the lab's plan of a host's NICs.
import assert from 'node:assert/strict';
import { isIPv4 } from 'node:net';
import { test } from 'node:test';
import {
  hostNics as labHostNics,
  planInterfaces,
  planLab,
  planNodes,
  validateSize,
} from '../../src/lab/plan.js';
import type { HostRecord, WorkloadRecord } from '../../src/orchestrator/model.js';
import { registerHostSchema } from '../../src/orchestrator/model.js';
import {
  hostNics,
  nicLoads,
  placeOnNic,
  siteKey,
  sitesOf,
  withNicState,
  workloadSite,
  workloadSiteKey,
} from '../../src/orchestrator/nics.js';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { TgError } from '../../src/util/errors.js';

function host(states: Record<string, 'ok' | 'failed' | 'draining'>): HostRecord {
  const nics = Object.entries(states).map(([name, state]) => ({ name, api: `/run/x/${name}.sock`, state }));
  return {
    name: 'h1',
    nicApi: nics[0].api,
    vswitchApi: '/run/x/vs.sock',
    netnsPrefix: 'tg-h1-',
    registeredAt: '2026-01-01T00:00:00.000Z',
    nics,
  };
}

function wl(
  name: string,
  nic: string | undefined,
  state: WorkloadRecord['state'] = 'running',
): WorkloadRecord {
  return {
    name,
    tenant: 't1',
    host: 'h1',
    address: '100.64.1.2',
    netns: `tg-h1-${name}`,
    labels: {},
    state,
    migratingTo: null,
    createdAt: '',
    timings: {},
    lastError: null,
    ...(nic !== undefined ? { nic } : {}),
  };
}

test('placement: the ok NIC with the fewest workloads, ties by name; failed and draining take none', () => {
  const cases: [
    Record<string, 'ok' | 'failed' | 'draining'>,
    WorkloadRecord[],
    string | undefined,
    string | null,
  ][] = [
    [{ nic1: 'ok', nic2: 'ok' }, [], undefined, 'nic1'],
    [{ nic1: 'ok', nic2: 'ok' }, [wl('a', 'nic1')], undefined, 'nic2'],
    [{ nic1: 'ok', nic2: 'ok' }, [wl('a', 'nic1'), wl('b', 'nic2')], undefined, 'nic1'],
    // A record without a NIC is on the host's first.
    [{ nic1: 'ok', nic2: 'ok' }, [wl('a', undefined)], undefined, 'nic2'],
    // Workloads being deleted do not count.
    [{ nic1: 'ok', nic2: 'ok' }, [wl('a', 'nic1', 'deleting')], undefined, 'nic1'],
    [{ nic1: 'failed', nic2: 'ok' }, [wl('a', 'nic2'), wl('b', 'nic2')], undefined, 'nic2'],
    [{ nic1: 'ok', nic2: 'draining', nic3: 'ok' }, [wl('a', 'nic1')], undefined, 'nic3'],
    [{ nic1: 'ok', nic2: 'ok' }, [], 'nic1', 'nic2'],
    [{ nic1: 'ok', nic2: 'failed' }, [], 'nic1', null],
    [{ nic1: 'draining' }, [], undefined, null],
  ];
  for (const [states, workloads, except, want] of cases)
    assert.equal(placeOnNic(host(states), workloads, except), want, JSON.stringify({ states, except }));
  assert.deepEqual(
    [...nicLoads(host({ nic1: 'ok', nic2: 'ok' }), [wl('a', 'nic2'), wl('b', undefined), wl('c', 'nic2')])],
    [
      ['nic1', 1],
      ['nic2', 2],
    ],
  );
});

test('sites: the first NIC keyed by the host name, the others HOST/NIC; a host without a list has nic1', () => {
  const h = host({ nic1: 'ok', nic2: 'failed' });
  assert.deepEqual(
    sitesOf(h).map((s) => [s.name, s.host, s.nic, s.nicApi, s.nicState]),
    [
      ['h1', 'h1', 'nic1', '/run/x/nic1.sock', 'ok'],
      ['h1/nic2', 'h1', 'nic2', '/run/x/nic2.sock', 'failed'],
    ],
  );
  assert.equal(siteKey(h, 'nic2'), 'h1/nic2');
  assert.equal(workloadSite(wl('a', 'nic2'), h).nicApi, '/run/x/nic2.sock');
  assert.equal(workloadSiteKey(wl('a', undefined), new Map([['h1', h]])), 'h1');
  assert.equal(workloadSiteKey(wl('a', 'nic2'), new Map([['h1', h]])), 'h1/nic2');
  const { nics: _n, ...one } = h;
  assert.deepEqual(hostNics(one), [{ name: 'nic1', api: one.nicApi, state: 'ok' }]);
  assert.throws(
    () => workloadSite(wl('a', 'nic9'), h),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_NOT_FOUND',
  );
  assert.equal(withNicState(h, 'nic2', 'ok', 'now').nics?.[1].state, 'ok');
  assert.throws(
    () => withNicState(h, 'nic9', 'ok', 'now'),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_NOT_FOUND',
  );
});

test('host registration: the first NIC is the one at nicApi, names and sockets distinct', () => {
  const base = { name: 'h1', nicApi: '/run/a.sock', vswitchApi: '/run/v.sock', netnsPrefix: 'tg-h1-' };
  assert.ok(registerHostSchema.safeParse(base).success);
  const two = [
    { name: 'nic1', api: '/run/a.sock' },
    { name: 'nic2', api: '/run/b.sock', fabricAddress: '198.18.0.27' },
  ];
  assert.ok(registerHostSchema.safeParse({ ...base, nics: two }).success);
  for (const nics of [
    [two[1], two[0]],
    [two[0], { ...two[1], name: 'nic1' }],
    [two[0], { ...two[1], api: '/run/a.sock' }],
    [],
    [{ ...two[0], extra: 1 }],
  ])
    assert.equal(registerHostSchema.safeParse({ ...base, nics }).success, false, JSON.stringify(nics));
});

test('store records: a host registers its NICs, each workload records its NIC, NIC states are kept', async () => {
  const svc = new OrchestratorService(SqliteStore.memory());
  await svc.createTenant({ name: 't1', pool: '100.64.1.0/24' });
  await svc.registerHost({
    name: 'h1',
    nicApi: '/run/a.sock',
    vswitchApi: '/run/v.sock',
    netnsPrefix: 'tg-h1-',
    nics: [
      { name: 'nic1', api: '/run/a.sock' },
      { name: 'nic2', api: '/run/b.sock' },
    ],
  });
  await svc.registerHost({
    name: 'h2',
    nicApi: '/run/c.sock',
    vswitchApi: '/run/w.sock',
    netnsPrefix: 'tg-h2-',
  });
  await assert.rejects(
    svc.registerHost({
      name: 'h3',
      nicApi: '/run/d.sock',
      vswitchApi: '/run/x.sock',
      netnsPrefix: 'tg-h3-',
      nics: [
        { name: 'nic1', api: '/run/d.sock' },
        { name: 'nic2', api: '/run/b.sock' },
      ],
    }),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_CONFLICT',
  );
  const placed: (string | undefined)[] = [];
  for (const name of ['a', 'b', 'c'])
    placed.push((await svc.reserveWorkload({ tenant: 't1', name, host: 'h1' })).workload.nic);
  assert.deepEqual(placed, ['nic1', 'nic2', 'nic1']);
  // A one-NIC host's records stay as they were (no NIC field).
  assert.equal((await svc.reserveWorkload({ tenant: 't1', name: 'd', host: 'h2' })).workload.nic, undefined);
  const h = await svc.setNicState('h1', 'nic1', 'draining');
  assert.deepEqual(
    h.nics?.map((n) => [n.name, n.state]),
    [
      ['nic1', 'draining'],
      ['nic2', 'ok'],
    ],
  );
  assert.equal((await svc.getHost('h1')).nics?.[0].state, 'draining');
  assert.equal((await svc.reserveWorkload({ tenant: 't1', name: 'e', host: 'h1' })).workload.nic, 'nic2');
  await svc.setNicState('h1', 'nic2', 'failed');
  await assert.rejects(
    svc.reserveWorkload({ tenant: 't1', name: 'f', host: 'h1' }),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_CONFLICT',
  );
  await assert.rejects(
    svc.setNicState('h1', 'nic9', 'ok'),
    (e: unknown) => e instanceof TgError && e.code === 'TG_ERR_NOT_FOUND',
  );
  // The move's switch names the new NIC; a move to a one-NIC host drops it.
  const moved = await svc.switchHost('a', await svc.getHost('h1'), 'nic2');
  assert.equal(moved.nic, 'nic2');
  assert.equal((await svc.switchHost('a', await svc.getHost('h2'), 'nic2')).nic, undefined);
});

test('lab plan: --nics N gives each host N NICs, NIC 1 as before, every address distinct and in range', () => {
  const one = planLab('tglab', { hosts: 2, tenants: 1, workloads: 1 });
  const same = planLab('tglab', validateSize({ hosts: 2, tenants: 1, workloads: 1, nics: 1 }));
  assert.deepEqual(same, one, '--nics 1 is the lab as before');
  const p = planLab('tgabcde', validateSize({ hosts: 16, tenants: 1, workloads: 1, nics: 4 }));
  assert.equal(p.size.nics, 4);
  const addrs = new Set<string>();
  const subnets = new Set<string>();
  for (const h of p.hosts) {
    const nics = labHostNics(h);
    assert.deepEqual(
      nics.map((n) => n.name),
      ['nic1', 'nic2', 'nic3', 'nic4'],
    );
    assert.equal(nics[0].ns, one.hosts[0].nicNs.replace('tglab', 'tgabcde').replace('h1', h.name));
    assert.equal(nics[1].node, `${h.name}-nic2`);
    for (const n of nics) {
      for (const a of [
        n.pcie.hostV4,
        n.pcie.nicV4,
        n.fabric.nicV4,
        n.fabric.nicV6,
        n.pcie.hostV6,
        n.pcie.nicV6,
      ]) {
        assert.ok(!addrs.has(a), `address ${a} twice`);
        addrs.add(a);
      }
      assert.ok(!subnets.has(n.pcie.subnetV4));
      subnets.add(n.pcie.subnetV4);
      assert.ok(isIPv4(n.fabric.nicV4) && n.fabric.nicV4.startsWith('198.18.0.'));
      assert.ok(n.pcie.subnetV4.startsWith('198.19.'));
    }
  }
  const names = planInterfaces(p).map((i) => `${i.ns}/${i.name}`);
  assert.equal(new Set(names).size, names.length);
  for (const i of planInterfaces(p)) assert.ok(i.name.length <= 15, i.name);
  assert.equal(planNodes(p).get('h3-nic4'), 'tgabcde-h3-nic4');
  for (const bad of [0, 5, 1.5])
    assert.throws(
      () => validateSize({ hosts: 1, tenants: 1, workloads: 1, nics: bad }),
      (e: unknown) => e instanceof TgError,
    );
});
