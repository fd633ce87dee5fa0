// The policy engine's decisions for new connections, table-driven: selectors, ports,
// protocols, direction (which side a NIC evaluates), cross-tenant grants one way only,
// outside peers by CIDR, default deny and the deciding rule's id.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { createPolicyHook, directionOf } from '../../src/policy/hook.js';
import { type Pkt, SYN, send, verdict, WORKLOADS, type World, world } from '../helpers/policy-harness.js';

const ACME = {
  version: 1,
  tenant: 'acme',
  rules: [
    {
      id: 'no-ssh',
      action: 'deny',
      direction: 'egress',
      workloads: { labels: { tier: 'front' } },
      peers: [{ labels: {} }, { cidr: '0.0.0.0/0' }],
      protocol: 'tcp',
      ports: [22],
    },
    {
      id: 'web-api-out',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ labels: { app: 'api' } }],
      protocol: 'tcp',
      ports: ['8000-8080'],
    },
    {
      id: 'web-api-in',
      direction: 'ingress',
      workloads: { labels: { app: 'api' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: ['8000-8080'],
    },
    {
      id: 'web-db-out',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ labels: { app: 'db' } }],
      protocol: 'tcp',
      ports: [5432],
    },
    {
      id: 'web-db-in',
      direction: 'ingress',
      workloads: { labels: { app: 'db' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: [5432],
    },
    {
      id: 'api-db-out',
      direction: 'egress',
      workloads: { workload: 'api-1' },
      peers: [{ workload: 'db-1' }],
      protocol: 'any',
    },
    {
      id: 'db-from-web2',
      direction: 'ingress',
      workloads: { labels: { app: 'db' } },
      peers: [{ workload: 'web-2' }],
      protocol: 'any',
    },
    {
      id: 'ping-out',
      direction: 'egress',
      workloads: { labels: {} },
      peers: [{ labels: {} }],
      protocol: 'icmp',
    },
    {
      id: 'ping-in',
      direction: 'ingress',
      workloads: { labels: {} },
      peers: [{ labels: {} }],
      protocol: 'icmp',
    },
    {
      id: 'gre-out',
      direction: 'egress',
      workloads: { workload: 'web-1' },
      peers: [{ workload: 'web-2' }],
      protocol: 'any',
    },
    {
      id: 'gre-in',
      direction: 'ingress',
      workloads: { workload: 'web-2' },
      peers: [{ workload: 'web-1' }],
      protocol: 'any',
    },
    {
      id: 'dns',
      direction: 'egress',
      workloads: { labels: {} },
      peers: [{ cidr: '198.51.100.0/24' }, { cidr: '2001:db8:53::/48' }],
      protocol: 'udp',
      ports: [53],
    },
    {
      id: 'lb-in',
      direction: 'ingress',
      workloads: { labels: { app: 'web' } },
      peers: [{ cidr: '203.0.113.0/24' }, { cidr: '2001:db8::/32' }],
      protocol: 'tcp',
      ports: [443],
    },
    {
      id: 'to-blue-svc',
      direction: 'egress',
      workloads: { labels: { app: 'api' } },
      peers: [{ tenant: 'blue', labels: { app: 'svc' } }],
      protocol: 'tcp',
      ports: [443],
    },
    {
      id: 'from-blue-cli',
      direction: 'ingress',
      workloads: { labels: { app: 'api' } },
      peers: [{ tenant: 'blue', workload: 'cli-1' }],
      protocol: 'tcp',
      ports: [9443],
    },
  ],
};

const BLUE = {
  version: 1,
  tenant: 'blue',
  rules: [
    {
      id: 'svc-from-acme-api',
      direction: 'ingress',
      workloads: { labels: { app: 'svc' } },
      peers: [{ tenant: 'acme', labels: { app: 'api' } }],
      protocol: 'tcp',
      ports: [443],
    },
    {
      id: 'svc-from-acme-web',
      direction: 'ingress',
      workloads: { labels: { app: 'svc' } },
      peers: [{ tenant: 'acme', labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: [443],
    },
  ],
};

function policied(): World {
  const w = world();
  w.store.replace(ACME);
  w.store.replace(BLUE);
  return w;
}

type Case = [name: string, p: Pkt, direction: 'both' | 'egress' | 'ingress', allowed: boolean, rule: string];

let port = 30000;
const tcp = (from: string, to: string, dport: number, extra: Partial<Pkt> = {}): Pkt => ({
  from,
  to,
  proto: 'tcp',
  sport: port++,
  dport,
  flags: SYN,
  ...extra,
});
const udp = (from: string, to: string, dport: number, extra: Partial<Pkt> = {}): Pkt => ({
  from,
  to,
  proto: 'udp',
  sport: port++,
  dport,
  ...extra,
});

const CASES: Case[] = [
  // selectors, ports, default deny
  ['labels select both ends', tcp('web-1', 'db-1', 5432), 'both', true, 'acme/web-db-in'],
  ['other workload with the same labels', tcp('web-2', 'db-1', 5432), 'both', true, 'acme/web-db-in'],
  ['port not in the rule', tcp('web-1', 'db-1', 5433), 'both', false, 'acme/default-deny'],
  ['protocol not in the rule', udp('web-1', 'db-1', 5432), 'both', false, 'acme/default-deny'],
  ['reverse direction needs its own rules', tcp('db-1', 'web-1', 5432), 'both', false, 'acme/default-deny'],
  ['range low edge', tcp('web-1', 'api-1', 8000), 'both', true, 'acme/web-api-in'],
  ['range high edge', tcp('web-1', 'api-1', 8080), 'both', true, 'acme/web-api-in'],
  ['below the range', tcp('web-1', 'api-1', 7999), 'both', false, 'acme/default-deny'],
  ['above the range', tcp('web-1', 'api-1', 8081), 'both', false, 'acme/default-deny'],
  ['deny rule first: it decides', tcp('web-1', 'api-1', 22), 'both', false, 'acme/no-ssh'],
  ['deny rule does not select this workload', tcp('api-1', 'db-1', 22), 'egress', true, 'acme/api-db-out'],
  // direction: which sides are evaluated
  [
    'egress allows, ingress default deny: both sides',
    tcp('api-1', 'db-1', 22),
    'both',
    false,
    'acme/default-deny',
  ],
  [
    'egress allows, ingress default deny: ingress NIC',
    tcp('api-1', 'db-1', 22),
    'ingress',
    false,
    'acme/default-deny',
  ],
  [
    'ingress allows, egress default deny: both sides',
    udp('web-2', 'db-1', 9999),
    'both',
    false,
    'acme/default-deny',
  ],
  [
    'ingress allows, egress default deny: egress NIC',
    udp('web-2', 'db-1', 9999),
    'egress',
    false,
    'acme/default-deny',
  ],
  [
    'ingress allows, egress default deny: ingress NIC',
    udp('web-2', 'db-1', 9999),
    'ingress',
    true,
    'acme/db-from-web2',
  ],
  // protocols
  ['icmp echo', { from: 'web-1', to: 'db-1', proto: 'icmp', icmpId: 7 }, 'both', true, 'acme/ping-in'],
  [
    'icmpv6 echo',
    { from: 'web-1', to: 'db-1', proto: 'icmp', icmpId: 7, v6: true },
    'both',
    true,
    'acme/ping-in',
  ],
  ['protocol any covers GRE', { from: 'web-1', to: 'web-2', proto: 47 }, 'both', true, 'acme/gre-in'],
  [
    'GRE not allowed the other way',
    { from: 'web-2', to: 'web-1', proto: 47 },
    'both',
    false,
    'acme/default-deny',
  ],
  ['IPv6 tcp', tcp('web-1', 'db-1', 5432, { v6: true }), 'both', true, 'acme/web-db-in'],
  // outside peers by CIDR
  [
    'egress to an outside CIDR',
    udp('web-1', 'outside', 53, { dst: '198.51.100.53' }),
    'egress',
    true,
    'acme/dns',
  ],
  [
    'egress outside the CIDR',
    udp('web-1', 'outside', 53, { dst: '198.51.101.53' }),
    'egress',
    false,
    'acme/default-deny',
  ],
  [
    'egress to an outside IPv6 CIDR',
    udp('web-1', 'outside', 53, { dst: '2001:db8:53::1', v6: true }),
    'egress',
    true,
    'acme/dns',
  ],
  [
    'ingress from an outside CIDR',
    tcp('outside', 'web-1', 443, { src: '203.0.113.9' }),
    'ingress',
    true,
    'acme/lb-in',
  ],
  [
    'ingress from outside, wrong workload',
    tcp('outside', 'db-1', 443, { src: '203.0.113.9' }),
    'ingress',
    false,
    'acme/default-deny',
  ],
  [
    'ingress from an outside IPv6 CIDR',
    tcp('outside', 'web-2', 443, { src: '2001:db8::9', v6: true }),
    'ingress',
    true,
    'acme/lb-in',
  ],
  [
    'a CIDR never matches a workload',
    tcp('web-1', 'outside', 22, { dst: '100.64.1.4' }),
    'egress',
    false,
    'acme/no-ssh',
  ],
  // cross-tenant grants, one way only
  ['granted both ways of consent', tcp('api-1', 'svc-1', 443), 'both', true, 'blue/svc-from-acme-api'],
  [
    'grant does not open the reverse direction',
    tcp('svc-1', 'api-1', 443),
    'both',
    false,
    'blue/default-deny',
  ],
  [
    'blue grants acme web, acme does not consent',
    tcp('web-1', 'svc-1', 443),
    'both',
    false,
    'acme/default-deny',
  ],
  [
    'acme grants blue cli, blue does not consent',
    tcp('cli-1', 'api-1', 9443),
    'both',
    false,
    'blue/default-deny',
  ],
  [
    'acme side of that grant alone (ingress NIC)',
    tcp('cli-1', 'api-1', 9443),
    'ingress',
    true,
    'acme/from-blue-cli',
  ],
  ['grant names other workloads', tcp('api-1', 'cli-1', 443), 'both', false, 'acme/default-deny'],
];

for (const [name, p, direction, allowed, rule] of CASES) {
  test(`decision: ${name}`, () => {
    const w = policied();
    const r = verdict(send(w, p, direction));
    assert.deepEqual(r, { allowed, reason: allowed ? 'new' : 'policy', rule });
  });
}

test('a tenant without a policy is default deny', () => {
  const w = world();
  const r = verdict(send(w, tcp('web-1', 'db-1', 5432)));
  assert.deepEqual(r, { allowed: false, reason: 'policy', rule: 'acme/default-deny' });
});

test('workloads the directory does not know are denied, and so is a direction without its workload', () => {
  const w = policied();
  const buf = Buffer.alloc(40);
  let r = w.engine.check('acme', 'web-1', 'nobody', buf, 0, 40, w.clock.ms, 'both');
  assert.deepEqual(verdict(r), { allowed: false, reason: 'unknown-workload', rule: '' });
  r = w.engine.check('acme', null, 'db-1', buf, 0, 40, w.clock.ms, 'egress');
  assert.equal(r.reason, 'unknown-workload');
  r = w.engine.check('acme', 'web-1', null, buf, 0, 40, w.clock.ms, 'ingress');
  assert.equal(r.reason, 'unknown-workload');
  r = w.engine.check('acme', null, null, buf, 0, 40, w.clock.ms, 'both');
  assert.equal(r.reason, 'unknown-workload');
  assert.equal(w.engine.drops.unknownWorkload, 4);
});

test('workload names and {tenant, workload} references decide alike', () => {
  const w = policied();
  const p = tcp('web-1', 'db-1', 5432);
  const a = w.engine.check('acme', 'web-1', 'db-1', packetBytes(p), 0, 40, w.clock.ms, 'both');
  assert.equal(a.reason, 'new');
  const b = w.engine.check(
    'ignored',
    { tenant: 'acme', workload: 'web-1' },
    { tenant: 'acme', workload: 'db-1' },
    packetBytes(p),
    0,
    40,
    w.clock.ms,
    'both',
  );
  assert.equal(b.reason, 'established');
});

/** An IPv4/TCP packet of `p` built by hand (independently of craft.ts). */
function packetBytes(p: Pkt): Buffer {
  const a = WORKLOADS.find((x) => x.name === p.from);
  const b = WORKLOADS.find((x) => x.name === p.to);
  const buf = Buffer.alloc(40);
  buf[0] = 0x45;
  buf.writeUInt16BE(40, 2);
  buf[9] = 6;
  for (const [at, text] of [
    [12, a?.v4],
    [16, b?.v4],
  ] as const)
    (text ?? '0.0.0.0').split('.').forEach((x, i) => {
      buf[at + i] = Number(x);
    });
  buf.writeUInt16BE(p.sport ?? 0, 20);
  buf.writeUInt16BE(p.dport ?? 0, 22);
  buf[32] = 5 << 4;
  buf[33] = p.flags ?? 0;
  return buf;
}

test('policy follows the workload identity, not its address (migration)', () => {
  // NIC 1 knows web-1 at its old address; NIC 2 after the move, with a new address.
  const moved = WORKLOADS.map((x) => (x.name === 'web-1' ? { ...x, v4: '100.64.9.9', v6: 'fd00:9::9' } : x));
  for (const ws of [WORKLOADS, moved]) {
    const w = world({}, ws);
    w.store.replace(ACME);
    w.store.replace(BLUE);
    const src = ws.find((x) => x.name === 'web-1')?.v4;
    assert.deepEqual(verdict(send(w, tcp('web-1', 'db-1', 5432, { src }))), {
      allowed: true,
      reason: 'new',
      rule: 'acme/web-db-in',
    });
    assert.equal(send(w, tcp('web-1', 'db-1', 22, { src })).rule, 'acme/no-ssh');
    assert.equal(send(w, tcp('web-1', 'api-1', 8000, { src })).allowed, true);
  }
});

test('new flows are decided by compiled pair tables, not a rule scan per packet', () => {
  const w = policied();
  const acme = w.store.policyOf('acme');
  assert.ok(acme);
  for (let i = 0; i < 500; i++) send(w, tcp('web-1', 'db-1', 5432));
  // One table per side for the (web-1, db-1) class pair, built once, used 500 times.
  assert.equal(acme.pairCount, 2);
  for (let i = 0; i < 500; i++) send(w, tcp('web-2', 'db-1', 5000 + i));
  // web-2 is named by a rule of its own, so it has a class of its own: two more tables.
  assert.equal(acme.pairCount, 4);
  assert.equal(w.engine.zone('acme')?.counters.flowsAllowed, 501);
  assert.equal(w.engine.zone('acme')?.counters.flowsDenied, 499);
});

test('a thousand rules: first match in document order still decides', () => {
  const w = world();
  const rules: object[] = [];
  for (let i = 0; i < 1000; i++)
    rules.push({
      id: `r${i}`,
      action: i % 2 === 0 ? 'allow' : 'deny',
      direction: i % 4 < 2 ? 'egress' : 'ingress',
      workloads: { labels: i % 4 < 2 ? { app: 'web' } : { app: 'db' } },
      peers: [{ labels: i % 4 < 2 ? { app: 'db' } : { app: 'web' } }],
      protocol: 'tcp',
      ports: [10000 + i],
    });
  w.store.replace({ version: 1, tenant: 'acme', rules });
  // Port 10000+i is only in rule i: even rules allow, odd deny; egress i%4 in {0,1}.
  assert.equal(send(w, tcp('web-1', 'db-1', 10000), 'egress').rule, 'acme/r0');
  assert.equal(send(w, tcp('web-1', 'db-1', 10001), 'egress').rule, 'acme/r1');
  assert.equal(send(w, tcp('web-1', 'db-1', 10002), 'ingress').rule, 'acme/r2');
  assert.equal(send(w, tcp('web-1', 'db-1', 10998), 'ingress').rule, 'acme/r998');
  assert.equal(send(w, tcp('web-1', 'db-1', 10998), 'egress').rule, 'acme/default-deny');
  assert.equal(send(w, tcp('web-1', 'db-1', 10999), 'egress').allowed, false);
});

test('the hook adapter: direction from where the workloads are', () => {
  assert.equal(directionOf(true, false), 'egress');
  assert.equal(directionOf(false, true), 'ingress');
  assert.equal(directionOf(true, true), 'both');
  const w = policied();
  const hook = createPolicyHook(w.engine, () => w.clock.ms);
  const buf = packetBytes(tcp('api-1', 'db-1', 22));
  const view = { buf, offset: 0, length: buf.length };
  const api = { tenant: 'acme', workload: 'api-1', local: true };
  // Sending NIC (db-1 remote): api-1's egress allows.
  assert.equal(hook('acme', api, { tenant: 'acme', workload: 'db-1', local: false }, view), true);
  // Receiving NIC (api-1 remote): db-1's ingress has no rule for it.
  const buf2 = packetBytes(tcp('api-1', 'db-1', 22));
  assert.equal(
    hook(
      'acme',
      { ...api, local: false },
      { tenant: 'acme', workload: 'db-1', local: true },
      { buf: buf2, offset: 0, length: 40 },
    ),
    false,
  );
});

test('a CIDR rule matches a workload end at the address it uses: an IPv6 /128 denies only its IPv6 traffic', () => {
  const w = world();
  const doc = {
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'no-db-v6',
        action: 'deny',
        direction: 'egress',
        workloads: { labels: {} },
        peers: [{ cidr: 'fd00:1::4/128' }],
      },
      {
        id: 'no-v6-from-api',
        action: 'deny',
        direction: 'ingress',
        workloads: { labels: {} },
        peers: [{ cidr: 'fd00:1::3/128' }],
      },
      { id: 'out', direction: 'egress', workloads: { labels: {} }, peers: [{ labels: {} }] },
      { id: 'in', direction: 'ingress', workloads: { labels: {} }, peers: [{ labels: {} }] },
    ],
  };
  w.store.replace(doc);
  const cases: [name: string, p: Pkt, allowed: boolean, rule: string][] = [
    ['web-1 -> db-1 IPv4', { from: 'web-1', to: 'db-1', proto: 'icmp', icmpId: 1 }, true, 'acme/in'],
    [
      'web-1 -> db-1 IPv6',
      { from: 'web-1', to: 'db-1', proto: 'icmp', icmpId: 2, v6: true },
      false,
      'acme/no-db-v6',
    ],
    [
      'web-1 -> web-2 IPv6',
      { from: 'web-1', to: 'web-2', proto: 'tcp', dport: 80, flags: SYN, v6: true },
      true,
      'acme/in',
    ],
    [
      'api-1 -> web-1 IPv6 (ingress side)',
      { from: 'api-1', to: 'web-1', proto: 'udp', dport: 53, v6: true },
      false,
      'acme/no-v6-from-api',
    ],
    ['api-1 -> web-1 IPv4', { from: 'api-1', to: 'web-1', proto: 'udp', dport: 53 }, true, 'acme/in'],
  ];
  for (const [name, p, allowed, rule] of cases) {
    const v = verdict(send(w, p));
    assert.equal(v.allowed, allowed, name);
    assert.equal(v.rule, rule, name);
  }
  // A policy without CIDRs is unaffected by addresses: every workload pair decided by selectors.
  w.store.replace({ ...doc, rules: doc.rules.slice(2) });
  assert.equal(send(w, { from: 'web-1', to: 'db-1', proto: 'icmp', icmpId: 3, v6: true }).allowed, true);
});
