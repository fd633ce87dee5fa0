// Dual stack: the tenant's IPv6 prefix and a workload's IPv6 address follow from the IPv4
// pool by the rule in orchestrator/pool.ts; the store records both; the NIC takes both
// addresses of a workload (on-host allowed IPs, routes, remote peers, grants) and refuses a
// second address of the wrong family or one another workload holds, changing nothing.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseAddress6, parseHostAddress } from '../../src/nic/addresses.js';
import { NicAgent } from '../../src/nic/agent.js';
import { Forwarder } from '../../src/nic/forwarding.js';
import { address6Of, parsePool, pool6Of } from '../../src/orchestrator/pool.js';
import { OrchestratorService } from '../../src/orchestrator/service.js';
import { SqliteStore } from '../../src/orchestrator/sqlite-store.js';
import { JsTransportAead } from '../../src/protocol/aead.js';
import type { TunBatch } from '../../src/protocol/batch.js';
import { generatePrivateKey, publicKeyOf } from '../../src/protocol/crypto.js';
import { logger } from '../../src/util/log.js';

test('the IPv6 prefix and addresses derive from the IPv4 pool (table)', () => {
  const cases: [pool: string, pool6: string, v4: string, v6: string][] = [
    ['100.64.1.0/24', 'fd64:6440:100::/64', '100.64.1.3', 'fd64:6440:100::6440:103'],
    ['100.64.0.0/10', 'fd64:6440::/64', '100.127.255.254', 'fd64:6440::647f:fffe'],
    ['100.100.7.8/30', 'fd64:6464:708::/64', '100.100.7.9', 'fd64:6464:708::6464:709'],
  ];
  for (const [pool, pool6, v4, v6] of cases) {
    assert.equal(pool6Of(parsePool(pool)), pool6, pool);
    assert.equal(address6Of(pool6, v4), v6, v4);
    assert.equal(parseHostAddress(v6).family, 6);
    assert.ok(v6.startsWith('fd'), 'inside fd00::/8');
  }
  // Pools that do not overlap give different prefixes, even two /30s in one /24.
  assert.notEqual(pool6Of(parsePool('100.64.1.0/30')), pool6Of(parsePool('100.64.1.4/30')));
  assert.throws(() => address6Of('fd64:6440:100::/64', 'x'), { code: 'TG_ERR_INVALID_ARGUMENT' });
});

test('the store gives each tenant its prefix and each workload both addresses', async () => {
  const store = SqliteStore.memory();
  const svc = new OrchestratorService(store);
  const t = await svc.createTenant({ name: 'acme', pool: '100.64.1.0/24' });
  assert.equal(t.pool6, 'fd64:6440:100::/64');
  await svc.registerHost({
    name: 'h1',
    nicApi: '/tmp/tgd-n1.sock',
    vswitchApi: '/tmp/tgd-v1.sock',
    netnsPrefix: 'tgd-h1-',
  });
  const a = await svc.reserveWorkload({ tenant: 'acme', name: 'a', host: 'h1' });
  const b = await svc.reserveWorkload({ tenant: 'acme', name: 'b', host: 'h1' });
  assert.deepEqual([a.workload.address, a.workload.address6], ['100.64.1.1', 'fd64:6440:100::6440:101']);
  assert.deepEqual([b.workload.address, b.workload.address6], ['100.64.1.2', 'fd64:6440:100::6440:102']);
  assert.equal((await svc.getTenant('acme')).pool6, 'fd64:6440:100::/64');
  assert.equal((await svc.getWorkload('b')).address6, 'fd64:6440:100::6440:102');
  store.close();
});

test('address6 must be IPv6 beside an IPv4 address', () => {
  const v4 = parseHostAddress('100.64.1.1');
  assert.equal(parseAddress6(v4, undefined), null);
  assert.equal(parseAddress6(v4, 'fd64:6440:100::6440:101')?.text, 'fd64:6440:100::6440:101');
  assert.throws(() => parseAddress6(v4, '100.64.1.2'), /not an IPv6 address/);
  assert.throws(() => parseAddress6(v4, 'fe80::1'), /link-local/);
  assert.throws(() => parseAddress6(parseHostAddress('fd00::1'), 'fd00::2'), /must be IPv4/);
});

function ipv6Udp(src: string, dst: string): Buffer {
  const p = Buffer.alloc(48);
  p[0] = 0x60;
  p.writeUInt16BE(8, 4);
  p[6] = 17;
  p[7] = 64;
  Buffer.from(parseHostAddress(src).bytes).copy(p, 8);
  Buffer.from(parseHostAddress(dst).bytes).copy(p, 24);
  p.writeUInt16BE(8, 44);
  return p;
}

function batch(items: [number, Buffer][]): TunBatch {
  const buf = Buffer.alloc(items.length * 256 + 32);
  const offsets = new Uint32Array(items.length);
  const lengths = new Uint32Array(items.length);
  const peerIds = new Uint32Array(items.length);
  items.forEach(([peer, p], i) => {
    offsets[i] = i * 256 + 16;
    lengths[i] = p.length;
    peerIds[i] = peer;
    p.copy(buf, offsets[i]);
  });
  return { buf, offsets, lengths, peerIds, count: items.length };
}

test('the forwarder routes both addresses of a dual-stack workload, local and remote', () => {
  const A = parseHostAddress;
  const f = new Forwarder(4);
  f.addTenant('t1');
  f.addLocalWorkload('t1', 'w1', 1, A('100.64.1.1'), A('fd64:6440:100::6440:101'));
  f.addLocalWorkload('t1', 'w2', 2, A('100.64.1.2'), A('fd64:6440:100::6440:102'));
  f.setRemoteNic('t1', 10, [
    { workload: 'r1', address: A('100.64.1.9'), address6: A('fd64:6440:100::6440:109') },
  ]);
  const r = f.forward(
    batch([
      [1, ipv6Udp('fd64:6440:100::6440:101', 'fd64:6440:100::6440:102')],
      [1, ipv6Udp('fd64:6440:100::6440:101', 'fd64:6440:100::6440:109')],
      [10, ipv6Udp('fd64:6440:100::6440:109', 'fd64:6440:100::6440:101')],
      [1, ipv6Udp('fd64:6440:100::6440:101', 'fd64:6440:100::6440:199')],
    ]),
  );
  assert.deepEqual([...r.peerIds.subarray(0, r.batch.count)], [2, 10, 1]);
  assert.equal(f.counters.dropped.noRoute, 1);
  assert.deepEqual(f.workloadOf('t1', 'r1'), {
    local: false,
    address: '100.64.1.9',
    address6: 'fd64:6440:100::6440:109',
  });
  assert.equal(f.addressOwner('t1', A('fd64:6440:100::6440:102'))?.workload, 'w2');
  f.removeLocalWorkload('t1', 'w2');
  assert.equal(f.addressOwner('t1', A('fd64:6440:100::6440:102')), undefined);
});

test('the NIC registers both addresses and refuses a taken or wrong second address', () => {
  const agent = new NicAgent({
    hostEndpoint: '198.19.1.2:51820',
    fabricEndpoint: '[fd00:198:18::11]:51821',
    aead: new JsTransportAead(),
    log: logger('test-dualstack'),
    now: () => 1000,
  });
  try {
    const key = () => publicKeyOf(generatePrivateKey()).toString('base64');
    const c = agent.registerWorkload({
      tenant: 't1',
      workload: 'w1',
      address: '100.64.1.1',
      address6: 'fd64:6440:100::6440:101',
      vswitchPublicKey: key(),
    });
    assert.equal(c.address6, 'fd64:6440:100::6440:101');
    const listed = agent.listWorkloads() as { address: string; address6?: string }[];
    assert.deepEqual([listed[0].address, listed[0].address6], ['100.64.1.1', 'fd64:6440:100::6440:101']);
    const before = JSON.stringify([agent.listWorkloads(), agent.inventory()]);
    assert.throws(
      () =>
        agent.registerWorkload({
          tenant: 't1',
          workload: 'w2',
          address: '100.64.1.2',
          address6: 'fd64:6440:100::6440:101',
          vswitchPublicKey: key(),
        }),
      { code: 'TG_ERR_CONFLICT' },
    );
    assert.throws(
      () =>
        agent.registerWorkload({
          tenant: 't1',
          workload: 'w3',
          address: '100.64.1.3',
          address6: '100.64.1.4',
          vswitchPublicKey: key(),
        }),
      { code: 'TG_ERR_INVALID_ARGUMENT' },
    );
    assert.equal(JSON.stringify([agent.listWorkloads(), agent.inventory()]), before);
    // The fabric endpoint may be IPv6 (the outer of the off-host leg).
    assert.equal(agent.tenantKey('t1').endpoint, '[fd00:198:18::11]:51821');
  } finally {
    agent.close();
  }
});
