// Policy documents: what is refused, with which reason, and that a refused document leaves
// the policy in force unchanged.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { PolicyRejectedError, PolicyStore } from '../../src/policy/store.js';
import { TgError } from '../../src/util/errors.js';
import { allowPair, send, verdict, world } from '../helpers/policy-harness.js';

const GOOD = {
  version: 1,
  tenant: 'acme',
  rules: allowPair('web-db', { app: 'web' }, { app: 'db' }, 'tcp', [5432]),
  tests: [
    { src: { workload: 'web-1' }, dst: { workload: 'db-1' }, protocol: 'tcp', port: 5432, expect: 'allow' },
    { src: { workload: 'db-1' }, dst: { workload: 'web-1' }, protocol: 'tcp', port: 5432, expect: 'deny' },
  ],
};

function doc(rules: object[], extra: object = {}): object {
  return { version: 1, tenant: 'acme', rules, ...extra };
}

const egress = (over: object): object => ({
  id: 'r',
  direction: 'egress',
  workloads: { labels: { app: 'web' } },
  peers: [{ labels: { app: 'db' } }],
  protocol: 'tcp',
  ports: [5432],
  ...over,
});

// [name, document, issue code, path, message fragment]
const REFUSED: [string, unknown, string, string, RegExp][] = [
  ['not JSON', '{"version": 1,', 'json', '(document)', /not JSON/],
  ['unknown top-level key', { ...GOOD, owner: 'x' }, 'schema', '(document)', /owner/],
  ['unknown rule key', doc([egress({ prio: 1 })]), 'schema', 'rules[0]', /prio/],
  ['wrong version', { ...GOOD, version: 2 }, 'schema', 'version', /1/],
  ['bad direction', doc([egress({ direction: 'both' })]), 'schema', 'rules[0].direction', /ingress|egress/],
  ['bad protocol', doc([egress({ protocol: 'sctp' })]), 'schema', 'rules[0].protocol', /tcp/],
  [
    'selector with both forms',
    doc([egress({ workloads: { workload: 'web-1', labels: {} } })]),
    'schema',
    'rules[0].workloads',
    /exactly one/,
  ],
  [
    'cidr peer with labels',
    doc([egress({ peers: [{ cidr: '10.0.0.0/8', labels: {} }] })]),
    'schema',
    'rules[0].peers[0]',
    /cidr/,
  ],
  ['no peers', doc([egress({ peers: [] })]), 'schema', 'rules[0].peers', /1/],
  ['bad tenant name', { ...GOOD, tenant: 'Acme!' }, 'schema', 'tenant', /a-z/],
  [
    'bad CIDR text',
    doc([egress({ peers: [{ cidr: '10.0.0/8' }] })]),
    'bad-cidr',
    'rules[0].peers[0].cidr',
    /not an IPv4 or IPv6/,
  ],
  [
    'CIDR prefix too long',
    doc([egress({ peers: [{ cidr: '10.0.0.0/33' }] })]),
    'bad-cidr',
    'rules[0].peers[0].cidr',
    /0\.\.32/,
  ],
  [
    'CIDR with host bits',
    doc([egress({ peers: [{ cidr: '10.1.2.3/16' }] })]),
    'bad-cidr',
    'rules[0].peers[0].cidr',
    /did you mean 10\.1\.0\.0\/16/,
  ],
  [
    'IPv6 CIDR with host bits',
    doc([egress({ peers: [{ cidr: 'fd00::1/64' }] })]),
    'bad-cidr',
    'rules[0].peers[0].cidr',
    /fd00::\/64/,
  ],
  ['port 0', doc([egress({ ports: [0] })]), 'port-range', 'rules[0].ports[0]', /out of range 1\.\.65535/],
  [
    'port 65536',
    doc([egress({ ports: [65536] })]),
    'port-range',
    'rules[0].ports[0]',
    /65536 is out of range/,
  ],
  [
    'range end out of range',
    doc([egress({ ports: ['8000-70000'] })]),
    'port-range',
    'rules[0].ports[0]',
    /70000/,
  ],
  ['empty range', doc([egress({ ports: ['9000-8000'] })]), 'port-range', 'rules[0].ports[0]', /empty/],
  ['port garbage', doc([egress({ ports: ['http'] })]), 'port-range', 'rules[0].ports[0]', /not a port/],
  [
    'ports with icmp',
    doc([egress({ protocol: 'icmp' })]),
    'ports-need-protocol',
    'rules[0].ports',
    /tcp.*udp/,
  ],
  ['ports with any', doc([egress({ protocol: 'any' })]), 'ports-need-protocol', 'rules[0].ports', /"any"/],
  [
    'duplicate rule id',
    doc([egress({}), egress({ ports: [1] })]),
    'duplicate-id',
    'rules[1].id',
    /rules\[0\]/,
  ],
  ['reserved rule id', doc([egress({ id: 'default-deny' })]), 'duplicate-id', 'rules[0].id', /reserved/],
  [
    'own tenant named as foreign',
    doc([egress({ peers: [{ tenant: 'acme', labels: {} }] })]),
    'own-tenant',
    'rules[0].peers[0].tenant',
    /own tenant/,
  ],
  [
    'unknown workload selected',
    doc([egress({ workloads: { workload: 'web-9' } })]),
    'unknown-workload',
    'rules[0].workloads.workload',
    /no workload 'web-9'/,
  ],
  [
    'unknown workload as peer',
    doc([egress({ peers: [{ workload: 'db-7' }] })]),
    'unknown-workload',
    'rules[0].peers[0].workload',
    /db-7/,
  ],
  [
    'unknown workload of a known tenant',
    doc([egress({ peers: [{ tenant: 'blue', workload: 'nope' }] })]),
    'unknown-workload',
    'rules[0].peers[0].workload',
    /tenant 'blue'/,
  ],
  [
    'shadowed by an identical rule',
    doc([egress({ id: 'a' }), egress({ id: 'b' })]),
    'shadowed',
    'rules[1]',
    /'b' is unreachable.*'a'/,
  ],
  [
    'shadowed by a broader deny',
    doc([
      egress({ id: 'a', action: 'deny', workloads: { labels: {} }, ports: ['1-65535'] }),
      egress({ id: 'b' }),
    ]),
    'shadowed',
    'rules[1]',
    /'b' is unreachable/,
  ],
  [
    'shadowed by two rules together (port union)',
    doc([
      egress({ id: 'a', ports: ['5000-5432'] }),
      egress({ id: 'b', ports: ['5433-6000'] }),
      egress({ id: 'c', ports: ['5400-5500'] }),
    ]),
    'shadowed',
    'rules[2]',
    /'a', 'b'/,
  ],
  [
    'shadowed workload selector under a label selector',
    doc([egress({ id: 'a' }), egress({ id: 'b', workloads: { workload: 'web-1' } })]),
    'shadowed',
    'rules[1]',
    /'b' is unreachable/,
  ],
  [
    'shadowed CIDR inside an earlier CIDR',
    doc([
      egress({ id: 'a', peers: [{ cidr: '10.0.0.0/8' }] }),
      egress({ id: 'b', peers: [{ cidr: '10.2.0.0/16' }] }),
    ]),
    'shadowed',
    'rules[1]',
    /'a'/,
  ],
  [
    'failing built-in test',
    {
      ...GOOD,
      tests: [
        {
          src: { workload: 'db-1' },
          dst: { workload: 'web-1' },
          protocol: 'tcp',
          port: 5432,
          expect: 'allow',
        },
      ],
    },
    'test-failed',
    'tests[0]',
    /expected allow, got deny by rule 'acme\/default-deny'/,
  ],
  [
    'failing named test names the deciding rule',
    {
      ...GOOD,
      rules: [
        {
          id: 'no-db',
          action: 'deny',
          direction: 'ingress',
          workloads: { labels: { app: 'db' } },
          peers: [{ labels: { tier: 'front' } }],
          protocol: 'any',
        },
        ...GOOD.rules,
      ],
      tests: [
        {
          id: 'web-reaches-db',
          src: { workload: 'web-1' },
          dst: { workload: 'db-1' },
          protocol: 'tcp',
          port: 5432,
          expect: 'allow',
        },
      ],
    },
    'test-failed',
    'tests[0]',
    /test 'web-reaches-db'.*got deny by rule 'acme\/no-db'/,
  ],
  [
    'test naming an unknown workload',
    {
      ...GOOD,
      tests: [
        { src: { workload: 'ghost' }, dst: { workload: 'db-1' }, protocol: 'tcp', port: 1, expect: 'deny' },
      ],
    },
    'test-invalid',
    'tests[0].src.workload',
    /no workload 'ghost'/,
  ],
  [
    'test without a port',
    {
      ...GOOD,
      tests: [{ src: { workload: 'web-1' }, dst: { workload: 'db-1' }, protocol: 'tcp', expect: 'deny' }],
    },
    'test-invalid',
    'tests[0].port',
    /needs a port/,
  ],
  [
    'test with no end in the tenant',
    {
      ...GOOD,
      tests: [
        {
          src: { tenant: 'blue', workload: 'svc-1' },
          dst: { address: '192.0.2.1' },
          protocol: 'udp',
          port: 1,
          expect: 'deny',
        },
      ],
    },
    'test-invalid',
    'tests[0]',
    /no end in tenant 'acme'/,
  ],
];

for (const [name, input, code, path, message] of REFUSED) {
  test(`refused: ${name}`, () => {
    const w = world();
    w.store.replace(GOOD);
    const before = w.store.generation;
    assert.throws(
      () => w.store.replace(input),
      (err: unknown) => {
        assert.ok(err instanceof PolicyRejectedError);
        assert.ok(err instanceof TgError);
        assert.equal(err.code, 'TG_ERR_POLICY_REJECTED');
        assert.equal(err.httpStatus, 422);
        const hit = err.issues.find((i) => i.code === code && i.path === path);
        assert.ok(hit, `no ${code} at ${path} in ${JSON.stringify(err.issues)}`);
        assert.match(hit.message, message);
        assert.match(err.message, new RegExp(path.replace(/[[\].()]/g, '\\$&')));
        return true;
      },
    );
    // The old policy stays in force: same generation, same document, same decisions.
    assert.equal(w.store.generation, before);
    assert.deepEqual(
      w.store.document('acme')?.rules.map((r) => r.id),
      ['web-db-out', 'web-db-in'],
    );
    assert.equal(
      send(w, { from: 'web-1', to: 'db-1', proto: 'tcp', sport: 40000, dport: 5432, flags: 2 }).allowed,
      true,
    );
    assert.equal(
      send(w, { from: 'db-1', to: 'web-1', proto: 'tcp', sport: 40000, dport: 5432, flags: 2 }).allowed,
      false,
    );
  });
}

test('a refused document lists every problem, not just the first', () => {
  const w = world();
  try {
    w.store.replace(doc([egress({ peers: [{ cidr: '10.0.0.1/8' }], ports: [0, 'x'] }), egress({ id: 'r' })]));
    assert.fail('accepted');
  } catch (err) {
    assert.ok(err instanceof PolicyRejectedError);
    assert.deepEqual(
      err.issues.map((i) => `${i.code}@${i.path}`),
      [
        'bad-cidr@rules[0].peers[0].cidr',
        'port-range@rules[0].ports[0]',
        'port-range@rules[0].ports[1]',
        'duplicate-id@rules[1].id',
      ],
    );
    assert.match(err.message, /4 problems/);
  }
});

test('a good document is accepted: generation moves, warnings reported', () => {
  const w = world();
  const g0 = w.store.generation;
  const r = w.store.replace(JSON.stringify(GOOD));
  assert.equal(r.tenant, 'acme');
  assert.equal(r.rules, 2);
  assert.equal(r.tests, 2);
  assert.deepEqual(r.warnings, []);
  assert.equal(w.store.generation, g0 + 1);
  assert.equal(r.generation, w.store.generation);
});

test('warnings: conflict, unmatched selector, unknown foreign tenant; strict mode refuses them', () => {
  const input = doc([
    egress({ id: 'deny-some', action: 'deny', ports: ['5000-5432'] }),
    egress({ id: 'allow-more', ports: ['5400-6000'] }),
    egress({ id: 'ghosts', workloads: { labels: { app: 'ghost' } }, ports: [1] }),
    egress({ id: 'partner', peers: [{ tenant: 'green', labels: { app: 'x' } }], ports: [2] }),
  ]);
  const w = world();
  const r = w.store.replace(input);
  const codes = r.warnings.map((i) => `${i.code}@${i.path}`).sort();
  assert.deepEqual(codes, [
    'conflict@rules[1]',
    'unknown-tenant@rules[3].peers[0]',
    'unmatched-selector@rules[2].workloads.labels',
  ]);
  assert.match(
    r.warnings.find((i) => i.code === 'conflict')?.message ?? '',
    /'allow-more' \(allow\) overlaps earlier rule 'deny-some' \(deny\)/,
  );

  const strict = new PolicyStore(w.directory, { strict: true });
  assert.throws(() => strict.replace(input), /conflict|overlaps/);
  assert.equal(strict.document('acme'), undefined);
});

test('no conflict warning for disjoint ports, protocols or peers', () => {
  const w = world();
  const r = w.store.replace(
    doc([
      egress({ id: 'a', action: 'deny', ports: [22] }),
      egress({ id: 'b', ports: [5432] }),
      egress({ id: 'c', protocol: 'udp', ports: [22] }),
      egress({ id: 'd', peers: [{ labels: { app: 'api' } }], ports: [22] }),
    ]),
  );
  assert.deepEqual(r.warnings, []);
});

test('partial overlap is not shadowing', () => {
  const w = world();
  const r = w.store.replace(
    doc([egress({ id: 'a', ports: ['5000-5432'] }), egress({ id: 'b', ports: ['5400-6000'] })]),
  );
  assert.deepEqual(r.warnings, []);
});

test('the document must be for the expected tenant', () => {
  const w = world();
  assert.throws(() => w.store.replace(GOOD, 'blue'), /for tenant 'acme', not 'blue'/);
  assert.equal(w.store.document('acme'), undefined);
});

test('check() reports without changing anything', () => {
  const w = world();
  const g = w.store.generation;
  const bad = w.store.check(doc([egress({ ports: [70000] })]));
  assert.equal(bad.ok, false);
  assert.equal(bad.errors[0].code, 'port-range');
  const good = w.store.check(GOOD);
  assert.equal(good.ok, true);
  assert.equal(w.store.generation, g);
  assert.equal(w.store.document('acme'), undefined);
});

test('selectors of a tenant the directory does not know yet are accepted (not checkable)', () => {
  const w = world();
  const r = w.store.replace({
    version: 1,
    tenant: 'newco',
    rules: [
      {
        id: 'x',
        direction: 'egress',
        workloads: { workload: 'first' },
        peers: [{ workload: 'second' }],
        protocol: 'tcp',
        ports: [1],
      },
    ],
    tests: [{ src: { labels: {} }, dst: { address: '192.0.2.1' }, protocol: 'tcp', port: 1, expect: 'deny' }],
  });
  assert.equal(r.tenant, 'newco');
});

test('tests may use hypothetical workloads (labels) and outside addresses', () => {
  const w = world();
  w.store.replace({
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'dns',
        direction: 'egress',
        workloads: { labels: { app: 'web' } },
        peers: [{ cidr: '198.51.100.0/24' }],
        protocol: 'udp',
        ports: [53],
      },
      {
        id: 'lb',
        direction: 'ingress',
        workloads: { labels: { app: 'web' } },
        peers: [{ cidr: '203.0.113.0/24' }, { cidr: '2001:db8::/32' }],
        protocol: 'tcp',
        ports: [443],
      },
    ],
    tests: [
      {
        src: { labels: { app: 'web' } },
        dst: { address: '198.51.100.53' },
        protocol: 'udp',
        port: 53,
        expect: 'allow',
      },
      {
        src: { labels: { app: 'web' } },
        dst: { address: '198.51.101.53' },
        protocol: 'udp',
        port: 53,
        expect: 'deny',
      },
      {
        src: { address: '203.0.113.7' },
        dst: { labels: { app: 'web' } },
        protocol: 'tcp',
        port: 443,
        expect: 'allow',
      },
      {
        src: { address: '2001:db8::7' },
        dst: { labels: { app: 'web' } },
        protocol: 'tcp',
        port: 443,
        expect: 'allow',
      },
      {
        src: { address: '2001:db9::7' },
        dst: { labels: { app: 'web' } },
        protocol: 'tcp',
        port: 443,
        expect: 'deny',
      },
      {
        src: { address: '203.0.113.7' },
        dst: { labels: { app: 'db' } },
        protocol: 'tcp',
        port: 443,
        expect: 'deny',
      },
    ],
  });
  assert.equal(w.store.document('acme')?.tests.length, 6);
});

test('removing a policy brings default deny back', () => {
  const w = world();
  w.store.replace(GOOD);
  const p = { from: 'web-1', to: 'db-1', proto: 'tcp' as const, sport: 1, dport: 5432, flags: 2 };
  assert.equal(send(w, p).allowed, true);
  assert.equal(w.store.remove('acme'), true);
  w.clock.advance(1);
  const r = verdict(send(w, { ...p, sport: 2 }));
  assert.deepEqual(r, { allowed: false, reason: 'policy', rule: 'acme/default-deny' });
});
