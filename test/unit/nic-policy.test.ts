// The firewall in the NIC's forwarding path, two NICs on a fake network (real WireGuard
// sessions, in-memory sockets): default deny without a policy; allowed flows pass and replies
// pass without reverse rules; new connections the other way are denied; cross-tenant grants
// work one way only, on one host and across hosts; bad documents are refused with the reason
// and the old policy stays in force; a policy change drops an open connection on its next
// packet; the flow log names the rule of every decision; drops are on /metrics.
//
//   NIC A: acme web-1 (app=web) 100.64.1.1, acme db-1 (app=db) 100.64.1.4, blue svc-1 (app=svc) 100.64.2.1
//   NIC B: acme api-1 (app=api) 100.64.1.3, blue cli-1 (app=cli) 100.64.2.2
import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { metricValue } from '../../src/nic/client.js';
import { craftPacket } from '../../src/policy/craft.js';
import { TgError } from '../../src/util/errors.js';
import { type FakeNic, FakeNicNet, type FakeVSwitch, link, settle } from '../helpers/nic-fakenet.js';

const fake = new FakeNicNet();
after(() => fake.close());

const ADDR = {
  'web-1': '100.64.1.1',
  'db-1': '100.64.1.4',
  'api-1': '100.64.1.3',
  'svc-1': '100.64.2.1',
  'cli-1': '100.64.2.2',
} as const;
type Name = keyof typeof ADDR;

const ACME = {
  version: 1,
  tenant: 'acme',
  rules: [
    {
      id: 'web-to-db',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ labels: { app: 'db' } }],
      protocol: 'udp',
      ports: [5432],
    },
    {
      id: 'db-from-web',
      direction: 'ingress',
      workloads: { labels: { app: 'db' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'udp',
      ports: [5432],
    },
    {
      id: 'web-to-api',
      direction: 'egress',
      workloads: { workload: 'web-1' },
      peers: [{ labels: { app: 'api' } }],
      protocol: 'udp',
      ports: ['8080-8081'],
    },
    {
      id: 'api-from-web',
      direction: 'ingress',
      workloads: { labels: { app: 'api' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'udp',
      ports: [8080],
    },
    {
      id: 'web-to-blue',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [
        { tenant: 'blue', labels: { app: 'svc' } },
        { tenant: 'blue', labels: { app: 'cli' } },
      ],
      protocol: 'udp',
      ports: [9000],
    },
  ],
  tests: [
    { src: { workload: 'web-1' }, dst: { workload: 'db-1' }, protocol: 'udp', port: 5432, expect: 'allow' },
    { src: { workload: 'db-1' }, dst: { workload: 'web-1' }, protocol: 'udp', port: 5432, expect: 'deny' },
  ],
};

const BLUE = {
  version: 1,
  tenant: 'blue',
  rules: [
    {
      id: 'from-acme-web',
      direction: 'ingress',
      workloads: { labels: {} },
      peers: [{ tenant: 'acme', labels: { app: 'web' } }],
      protocol: 'udp',
      ports: [9000],
    },
  ],
};

let A: FakeNic;
let B: FakeNic;
const vs = new Map<Name, FakeVSwitch>();

function udp(from: Name, to: Name, sport: number, dport: number): Buffer {
  return craftPacket({ src: ADDR[from], dst: ADDR[to], proto: 'udp', sport, dport, length: 100 });
}

/** Sends until `to` got one more packet (sessions may still be opening), false after ~1.5 s. */
async function delivered(from: Name, to: Name, sport: number, dport: number): Promise<boolean> {
  const dst = vs.get(to)!;
  const before = dst.received.length;
  for (let i = 0; i < 10; i++) {
    vs.get(from)!.send(udp(from, to, sport, dport));
    for (let k = 0; k < 3; k++) {
      await settle(50);
      if (dst.received.length > before) return true;
    }
  }
  return false;
}

/** Sends once on established sessions and reports whether it arrived. */
async function passes(from: Name, to: Name, sport: number, dport: number): Promise<boolean> {
  const dst = vs.get(to)!;
  const before = dst.received.length;
  vs.get(from)!.send(udp(from, to, sport, dport));
  await settle(150);
  return dst.received.length > before;
}

async function refused(nic: FakeNic, doc: unknown, reason: RegExp): Promise<void> {
  await assert.rejects(nic.api.setPolicy('acme', doc), (err: unknown) => {
    assert.ok(err instanceof TgError);
    assert.equal(err.code, 'TG_ERR_POLICY_REJECTED');
    assert.match(err.message, reason);
    return true;
  });
}

test('set-up: two NICs, two tenants, labels, peers and grants', async () => {
  A = await fake.nic('pa', '198.19.1.2', '198.18.0.11');
  B = await fake.nic('pb', '198.19.2.2', '198.18.0.12');
  vs.set('web-1', await fake.place(A, '198.19.1.1', 'acme', 'web-1', ADDR['web-1'], { app: 'web' }));
  vs.set('db-1', await fake.place(A, '198.19.1.1', 'acme', 'db-1', ADDR['db-1'], { app: 'db' }));
  vs.set('svc-1', await fake.place(A, '198.19.1.1', 'blue', 'svc-1', ADDR['svc-1'], { app: 'svc' }));
  vs.set('api-1', await fake.place(B, '198.19.2.1', 'acme', 'api-1', ADDR['api-1'], { app: 'api' }));
  vs.set('cli-1', await fake.place(B, '198.19.2.1', 'blue', 'cli-1', ADDR['cli-1'], { app: 'cli' }));
  await settle(200);
  await link(
    A,
    B,
    'acme',
    [
      ['web-1', ADDR['web-1'], { app: 'web' }],
      ['db-1', ADDR['db-1'], { app: 'db' }],
    ],
    [['api-1', ADDR['api-1'], { app: 'api' }]],
  );
  await link(
    A,
    B,
    'blue',
    [['svc-1', ADDR['svc-1'], { app: 'svc' }]],
    [['cli-1', ADDR['cli-1'], { app: 'cli' }]],
  );
  const idA = (await A.api.identity()).identityKey;
  const idB = (await B.api.identity()).identityKey;
  const g = (tenant: string, workload: Name, app: string, nic?: string) => ({
    tenant,
    workload,
    address: ADDR[workload],
    labels: { app },
    ...(nic === undefined ? {} : { nicIdentityKey: nic }),
  });
  // Each NIC learns, per tenant present, the other tenant's workloads (this host: no key).
  assert.deepEqual(
    await A.api.setGrants('acme', [g('blue', 'svc-1', 'svc'), g('blue', 'cli-1', 'cli', idB)]),
    {
      tenant: 'acme',
      workloads: 2,
      routed: 2,
    },
  );
  await A.api.setGrants('blue', [
    g('acme', 'web-1', 'web', idA),
    g('acme', 'db-1', 'db'),
    g('acme', 'api-1', 'api', idB),
  ]);
  await B.api.setGrants('acme', [g('blue', 'svc-1', 'svc', idA), g('blue', 'cli-1', 'cli', idB)]);
  await B.api.setGrants('blue', [
    g('acme', 'web-1', 'web', idA),
    g('acme', 'db-1', 'db', idA),
    g('acme', 'api-1', 'api'),
  ]);
  assert.ok((await B.api.grants('blue')).every((w) => w.routed));
  // A grant may not reuse one of the tenant's own addresses.
  await assert.rejects(
    A.api.setGrants('acme', [{ tenant: 'blue', workload: 'svc-1', address: ADDR['db-1'] }]),
    /TG_ERR_CONFLICT|is workload 'db-1'/,
  );
  assert.equal((await A.api.grants('acme')).length, 2, 'a refused grant list changed the old one');
});

test('default deny: a tenant without a policy passes nothing, counted and logged', async () => {
  await assert.rejects(A.api.getPolicy('acme'), /TG_ERR_NOT_FOUND|no policy/);
  assert.equal(await delivered('web-1', 'db-1', 40000, 5432), false);
  assert.ok(A.svc.agent.forwarder.counters.dropped.policy >= 1);
  const m = await A.api.metrics();
  assert.ok(metricValue(m, 'tenguard_policy_packets_total', { tenant: 'acme', verdict: 'deny' }) >= 1);
  assert.ok(metricValue(m, 'tenguard_nic_forward_dropped_total', { reason: 'policy' }) >= 1);
  const flows = await A.api.flows({ tenant: 'acme', verdict: 'deny' });
  const f = flows.find((r) => r.srcWorkload === 'web-1' && r.dstWorkload === 'db-1');
  assert.ok(f, 'no flow record of the denied flow');
  assert.equal(f.rule, 'acme/default-deny');
});

test('allowed flows pass, replies pass without reverse rules, the other direction is denied', async () => {
  for (const n of [A, B]) {
    const r = await n.api.setPolicy('acme', ACME);
    assert.equal(r.rules, ACME.rules.length);
    await n.api.setPolicy('blue', BLUE);
  }
  assert.equal((await A.api.getPolicy('acme')).rules.length, ACME.rules.length);
  // Same host.
  assert.equal(await delivered('web-1', 'db-1', 40001, 5432), true);
  assert.equal(await passes('db-1', 'web-1', 5432, 40001), true, 'reply dropped');
  assert.equal(await passes('db-1', 'web-1', 40002, 5432), false, 'db opened a connection to web');
  assert.equal(await passes('web-1', 'db-1', 40003, 5433), false, 'port outside the rule passed');
  // Across hosts: egress checked on A, ingress on B (api-1 accepts 8080 only, web may send 8081).
  assert.equal(await delivered('web-1', 'api-1', 40004, 8080), true);
  assert.equal(await passes('api-1', 'web-1', 8080, 40004), true, 'cross-host reply dropped');
  assert.equal(await passes('api-1', 'web-1', 40005, 8080), false, 'api opened a connection to web');
  const deniedAtB = B.svc.agent.forwarder.counters.dropped.policy;
  assert.equal(await passes('web-1', 'api-1', 40006, 8081), false, "B's ingress side let 8081 in");
  assert.ok(B.svc.agent.forwarder.counters.dropped.policy > deniedAtB, 'not denied by the receiving NIC');
});

test('cross-tenant grants work one way only, on one host and across hosts', async () => {
  assert.equal(await delivered('web-1', 'svc-1', 40010, 9000), true, 'same-host grant');
  assert.equal(await passes('svc-1', 'web-1', 9000, 40010), true, 'same-host grant reply');
  assert.equal(await passes('svc-1', 'web-1', 40011, 9000), false, 'blue opened a connection to acme');
  assert.equal(await delivered('web-1', 'cli-1', 40012, 9000), true, 'cross-host grant');
  assert.equal(await passes('cli-1', 'web-1', 9000, 40012), true, 'cross-host grant reply');
  assert.equal(await passes('cli-1', 'web-1', 40013, 9000), false, 'blue opened a connection across hosts');
  // Only acme's side granted: blue's policy without its ingress rule refuses it.
  await B.api.setPolicy('blue', { version: 1, tenant: 'blue', rules: [] });
  assert.equal(await passes('web-1', 'cli-1', 40014, 9000), false, "blue's ingress side was not checked");
  await B.api.setPolicy('blue', BLUE);
  const flows = await B.api.flows({ tenant: 'blue' });
  const f = flows.find(
    (r) => r.srcWorkload === 'web-1' && r.dstWorkload === 'cli-1' && r.verdict === 'allow',
  );
  assert.ok(f, 'no record of the granted flow');
  assert.equal(f.ingressRule, 'blue/from-acme-web');
  assert.equal(f.srcTenant, 'acme');
  assert.equal(f.dstTenant, 'blue');
});

test('bad documents are refused with the reason; the old policy stays in force', async () => {
  const bad = (patch: (d: typeof ACME) => unknown) => patch(structuredClone(ACME));
  await refused(
    A,
    bad((d) => ({ ...d, rules: [{ ...d.rules[0], peers: [{ workload: 'ghost' }] }] })),
    /no workload 'ghost'/,
  );
  await refused(
    A,
    bad((d) => ({ ...d, rules: [{ ...d.rules[0], peers: [{ cidr: '300.1.2.0/24' }] }] })),
    /cidr/i,
  );
  await refused(
    A,
    bad((d) => ({ ...d, rules: [{ ...d.rules[0], ports: [70000] }] })),
    /port/i,
  );
  await refused(
    A,
    bad((d) => ({
      ...d,
      tests: [
        {
          src: { workload: 'db-1' },
          dst: { workload: 'web-1' },
          protocol: 'udp',
          port: 5432,
          expect: 'allow',
        },
      ],
    })),
    /test|expected/i,
  );
  await refused(A, { ...ACME, tenant: 'blue' }, /not 'acme'/);
  assert.deepEqual(await A.api.getPolicy('acme'), await B.api.getPolicy('acme'));
  assert.equal((await A.api.getPolicy('acme')).rules.length, ACME.rules.length);
  assert.equal(await delivered('web-1', 'db-1', 40020, 5432), true, 'the old policy is no longer in force');
});

test('a policy change drops an open connection on its next packet, logged as revoked', async () => {
  assert.equal(await delivered('web-1', 'db-1', 40030, 5432), true);
  assert.equal(await passes('db-1', 'web-1', 5432, 40030), true);
  const without = { ...ACME, rules: ACME.rules.filter((r) => r.id !== 'web-to-db'), tests: [] };
  await A.api.setPolicy('acme', without);
  assert.equal(await passes('web-1', 'db-1', 40030, 5432), false, 'the open connection outlived its rule');
  assert.equal(await passes('db-1', 'web-1', 5432, 40030), false, 'its replies outlived it');
  const flows = await A.api.flows({ tenant: 'acme', since: '5m' });
  const revoked = flows.find((r) => r.srcPort === 40030 && r.reason === 'revoked');
  assert.ok(revoked, 'no revoked record');
  // A hairpin decides both sides; the record names each side's rule.
  assert.equal(revoked.egressRule, 'acme/web-to-db');
  assert.equal(revoked.ingressRule, 'acme/db-from-web');
  // db-1's late packet is a new connection now, and db-1 may open none.
  const denied = flows.find((r) => r.dstPort === 40030 && r.verdict === 'deny');
  assert.ok(denied, 'the late reply has no deny record');
  assert.equal(denied.rule, 'acme/default-deny');
  await A.api.setPolicy('acme', ACME);
  assert.equal(await passes('web-1', 'db-1', 40031, 5432), true);
});

test('the flow API checks its query', async () => {
  await assert.rejects(A.api.flows({ since: 'yesterday' }), /TG_ERR_INVALID_ARGUMENT|since/);
  await assert.rejects(A.api.flows({ limit: 0 }), /TG_ERR_INVALID_ARGUMENT|limit/);
  const two = await A.api.flows({ limit: 2 });
  assert.equal(two.length, 2);
  assert.ok(two[0].endMs >= two[1].endMs);
  for (const r of await A.api.flows({ tenant: 'acme' })) assert.match(r.rule, /^(acme|blue)\//);
});
