// Which workloads a NIC must route for another tenant: links come from either tenant's policy
// naming the other; a workload on another host carries that host NIC's identity key.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  type GrantSource,
  grantList,
  grantsDigest,
  tenantLinks,
  tenantsNamed,
} from '../../src/orchestrator/grants.js';

const rule = (peers: unknown[]) => ({ id: 'r', direction: 'egress', workloads: { labels: {} }, peers });

test('tenants named in rule peers, own tenant and malformed documents ignored', () => {
  assert.deepEqual(
    [
      ...tenantsNamed({
        tenant: 'a',
        rules: [rule([{ tenant: 'b', labels: {} }, { tenant: 'a', labels: {} }, { labels: {} }])],
      }),
    ],
    ['b'],
  );
  assert.deepEqual([...tenantsNamed({ tenant: 'a' })], []);
  assert.deepEqual([...tenantsNamed(null)], []);
});

test('links are symmetric; grant lists hold the linked tenants workloads with their NIC', () => {
  const links = tenantLinks(
    new Map<string, unknown>([
      ['red', { tenant: 'red', rules: [rule([{ tenant: 'blue', labels: {} }])] }],
      ['green', { tenant: 'green', rules: [rule([{ labels: {} }])] }],
    ]),
  );
  assert.deepEqual([...(links.get('blue') ?? [])], ['red']);
  assert.equal(links.get('green'), undefined);
  const placed: GrantSource[] = [
    { tenant: 'blue', workload: 'b2', address: '100.64.20.2', labels: {}, host: 'h2' },
    { tenant: 'blue', workload: 'b1', address: '100.64.20.1', labels: { app: 'x' }, host: 'h1' },
    { tenant: 'red', workload: 'a1', address: '100.64.10.1', labels: {}, host: 'h1' },
    { tenant: 'green', workload: 'g1', address: '100.64.30.1', labels: {}, host: 'h1' },
  ];
  const ids = (h: string) => (h === 'h2' ? 'KEY2' : h === 'h1' ? 'KEY1' : null);
  assert.deepEqual(grantList('red', 'h1', links, placed, ids), [
    { tenant: 'blue', workload: 'b1', address: '100.64.20.1', labels: { app: 'x' } },
    { tenant: 'blue', workload: 'b2', address: '100.64.20.2', labels: {}, nicIdentityKey: 'KEY2' },
  ]);
  assert.deepEqual(grantList('blue', 'h2', links, placed, ids), [
    { tenant: 'red', workload: 'a1', address: '100.64.10.1', labels: {}, nicIdentityKey: 'KEY1' },
  ]);
  assert.deepEqual(grantList('green', 'h1', links, placed, ids), []);
  // A host whose NIC identity is unknown yet is left out.
  assert.equal(grantList('red', 'h1', links, placed, (h) => (h === 'h1' ? 'KEY1' : null)).length, 1);
  assert.equal(
    grantsDigest([
      { tenant: 'b', workload: 'x', address: '1', nicIdentityKey: 'K' },
      { tenant: 'a', workload: 'y', address: '2' },
    ]),
    'a/y=2@;b/x=1@K',
  );
});
