// Services and the tenant DNS server address in the orchestrator's store: addresses from the
// top of the pool, conflicts and bad input refused without a change, deletion frees the
// address, policy peers naming a service become its selector.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { TgError } from '../../src/util/errors.js';

async function fresh(): Promise<{ store: SqliteStore; svc: OrchestratorService }> {
  const store = SqliteStore.memory();
  const svc = new OrchestratorService(store);
  await svc.createTenant({ name: 'acme', pool: '100.64.1.0/24' });
  await svc.createTenant({ name: 'tiny', pool: '100.64.9.0/30' });
  await svc.registerHost({
    name: 'h1',
    nicApi: '/tmp/tg-n1.sock',
    vswitchApi: '/tmp/tg-v1.sock',
    netnsPrefix: 'tgs-h1-',
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

test('the DNS server takes the top address of the pool; workloads start at the bottom', async () => {
  const { svc } = await fresh();
  assert.equal(await svc.tenantDns('acme'), '100.64.1.254');
  const w = await svc.reserveWorkload({ tenant: 'acme', name: 'w1', host: 'h1' });
  assert.equal(w.workload.address, '100.64.1.1');
  assert.equal(w.workload.dns, '100.64.1.254');
  // A /30 keeps both addresses for workloads: no DNS server.
  assert.equal(await svc.tenantDns('tiny'), undefined);
  const t = await svc.reserveWorkload({ tenant: 'tiny', name: 't1', host: 'h1' });
  assert.equal(t.workload.dns, undefined);
  assert.deepEqual(await svc.tenantNetwork('tiny'), { services: [] });
});

test('services: address from the top, ports parsed, conflicts and bad input refused, delete frees', async () => {
  const { store, svc } = await fresh();
  const s = await svc.createService({
    tenant: 'acme',
    name: 'web',
    selector: { app: 'web' },
    ports: ['80/tcp', { port: 53, protocol: 'udp' }],
  });
  assert.equal(s.address, '100.64.1.253');
  // The IPv6 address: the IPv4 one in the tenant's IPv6 prefix, as for workloads.
  assert.equal(s.address6, 'fd64:6440:100::6440:1fd');
  assert.deepEqual(s.ports, [
    { port: 80, protocol: 'tcp' },
    { port: 53, protocol: 'udp' },
  ]);
  await refused(store, 'TG_ERR_CONFLICT', () =>
    svc.createService({ tenant: 'acme', name: 'web', selector: { app: 'x' }, ports: ['81/tcp'] }),
  );
  await svc.reserveWorkload({ tenant: 'acme', name: 'w1', host: 'h1' });
  await refused(
    store,
    'TG_ERR_CONFLICT',
    () => svc.createService({ tenant: 'acme', name: 'w1', selector: { app: 'x' }, ports: ['81/tcp'] }),
    /workload/,
  );
  for (const bad of [
    { tenant: 'acme', name: 'a', selector: {}, ports: ['80/tcp'] },
    { tenant: 'acme', name: 'a', selector: { app: 'x' }, ports: [] },
    { tenant: 'acme', name: 'a', selector: { app: 'x' }, ports: ['80/sctp'] },
    { tenant: 'acme', name: 'a', selector: { app: 'x' }, ports: ['70000/tcp'] },
    { tenant: 'acme', name: 'a', selector: { app: 'x' }, ports: ['80/tcp', '80/tcp'] },
    { tenant: 'acme', name: 'a', selector: { app: 'x' }, ports: ['80/tcp'], extra: 1 },
  ])
    await refused(store, 'TG_ERR_INVALID_ARGUMENT', () => svc.createService(bad));
  await refused(store, 'TG_ERR_NOT_FOUND', () =>
    svc.createService({ tenant: 'nobody', name: 'a', selector: { app: 'x' }, ports: ['80/tcp'] }),
  );
  assert.deepEqual(await svc.tenantNetwork('acme'), {
    dns: '100.64.1.254',
    services: [
      {
        name: 'web',
        address: '100.64.1.253',
        address6: 'fd64:6440:100::6440:1fd',
        selector: { app: 'web' },
        ports: s.ports,
      },
    ],
  });
  await svc.deleteService('acme', 'web');
  await refused(store, 'TG_ERR_NOT_FOUND', () => svc.deleteService('acme', 'web'));
  const again = await svc.createService({
    tenant: 'acme',
    name: 'api',
    selector: { app: 'api' },
    ports: ['8080/tcp'],
  });
  assert.equal(again.address, '100.64.1.253', 'the freed address is taken again');
});

test('policy peers naming a service become its selector; unknown services are refused', async () => {
  const { svc } = await fresh();
  await svc.createService({ tenant: 'acme', name: 'web', selector: { app: 'web' }, ports: ['80/tcp'] });
  const doc = {
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'to-web',
        direction: 'egress',
        workloads: { labels: {} },
        peers: [{ service: 'web' }],
        protocol: 'tcp',
        ports: [80],
      },
      { id: 'web-in', direction: 'ingress', workloads: { labels: { app: 'web' } }, peers: [{ labels: {} }] },
    ],
  };
  const out = (await svc.expandServicePeers('acme', doc)) as typeof doc;
  assert.deepEqual(out.rules[0].peers, [{ labels: { app: 'web' } }]);
  assert.deepEqual(out.rules[1], doc.rules[1]);
  assert.equal(svc.checkPolicy('acme', out).rules.length, 2);
  await assert.rejects(
    svc.expandServicePeers('acme', { ...doc, rules: [{ ...doc.rules[0], peers: [{ service: 'nope' }] }] }),
    /rules\[0\]\.peers\[0\]: no service 'nope'/,
  );
  await assert.rejects(
    svc.expandServicePeers('acme', {
      ...doc,
      rules: [{ ...doc.rules[0], peers: [{ service: 'web', labels: {} }] }],
    }),
    /takes no other key/,
  );
});
