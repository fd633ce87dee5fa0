import assert from 'node:assert/strict';
import { isIPv4, isIPv6 } from 'node:net';
import { test } from 'node:test';
import {
  belongsToLab,
  IFNAME_MAX,
  LAB_LIMITS,
  LAB_RANGES,
  type LabPlan,
  planInterfaces,
  planLab,
  planNamespaces,
  planNodes,
  validatePrefix,
  validateSize,
} from '../../src/lab/plan.js';
import { inRange } from '../../src/lab/probe.js';
import { TgError } from '../../src/util/errors.js';

function ip4(a: string): number {
  assert.ok(isIPv4(a), `${a} is IPv4`);
  return a.split('.').reduce((n, o) => n * 256 + Number(o), 0);
}

function in4(addr: string, cidr: string): boolean {
  const [net, len] = cidr.split('/');
  const size = 2 ** (32 - Number(len));
  const base = ip4(net);
  const a = ip4(addr);
  return a >= base && a < base + size;
}

function assertCode(fn: () => unknown, code: string): void {
  assert.throws(fn, (err: unknown) => err instanceof TgError && err.code === code);
}

test('prefix: tg plus up to five of a-z0-9', () => {
  for (const p of ['tg', 'tg0', 'tglab', 'tgabcde', 'tgt1x9a']) assert.equal(validatePrefix(p), p);
  for (const p of ['', 't', 'tgabcdef', 'TG', 'Tglab', 'xylab', 'tg-a', 'tg_a', 'tg a', 'tglab\n', 'tgé']) {
    assertCode(() => validatePrefix(p), 'TG_ERR_INVALID_ARGUMENT');
  }
  assertCode(() => validatePrefix(undefined), 'TG_ERR_INVALID_ARGUMENT');
  assertCode(() => validatePrefix(7), 'TG_ERR_INVALID_ARGUMENT');
});

test('size: whole numbers within the limits, total bounded', () => {
  assert.deepEqual(validateSize({ hosts: 2, tenants: 2, workloads: 2 }), {
    hosts: 2,
    tenants: 2,
    workloads: 2,
  });
  assert.deepEqual(validateSize({ hosts: 16, tenants: 2, workloads: 8 }), {
    hosts: 16,
    tenants: 2,
    workloads: 8,
  });
  // No workload namespaces: the orchestrator makes them.
  const empty = planLab('tglab', validateSize({ hosts: 2, tenants: 1, workloads: 0 }));
  assert.equal(empty.workloads.length, 0);
  assert.equal(empty.hosts.length, 2);
  const bad: Record<string, unknown>[] = [
    { hosts: 0, tenants: 1, workloads: 1 },
    { hosts: 1, tenants: 1, workloads: -1 },
    { hosts: -1, tenants: 1, workloads: 1 },
    { hosts: 1.5, tenants: 1, workloads: 1 },
    { hosts: Number.NaN, tenants: 1, workloads: 1 },
    { hosts: '2', tenants: 1, workloads: 1 },
    { hosts: undefined, tenants: 1, workloads: 1 },
    { hosts: LAB_LIMITS.hosts + 1, tenants: 1, workloads: 1 },
    { hosts: 1, tenants: LAB_LIMITS.tenants + 1, workloads: 1 },
    { hosts: 1, tenants: 1, workloads: LAB_LIMITS.workloads + 1 },
    { hosts: 16, tenants: 8, workloads: 8 }, // 1024 workloads, above the total limit
  ];
  for (const s of bad) {
    assertCode(
      () => validateSize(s as { hosts: unknown; tenants: unknown; workloads: unknown }),
      'TG_ERR_INVALID_ARGUMENT',
    );
  }
  assertCode(() => planLab('tglab', { hosts: 0, tenants: 1, workloads: 1 }), 'TG_ERR_INVALID_ARGUMENT');
  assertCode(() => planLab('bad', { hosts: 1, tenants: 1, workloads: 1 }), 'TG_ERR_INVALID_ARGUMENT');
});

test('2/2/2 plan: names as documented', () => {
  const p = planLab('tglab', { hosts: 2, tenants: 2, workloads: 2 });
  assert.equal(p.workloads.length, 8);
  assert.deepEqual(
    p.workloads.map((w) => w.name),
    ['h1-t1-w1', 'h1-t1-w2', 'h1-t2-w1', 'h1-t2-w2', 'h2-t1-w1', 'h2-t1-w2', 'h2-t2-w1', 'h2-t2-w2'],
  );
  assert.deepEqual(
    p.tenants.map((t) => t.name),
    ['t1', 't2'],
  );
  assert.equal(planNamespaces(p).length, 1 + 2 * 2 + 8);
  assert.equal(p.fabric.ns, 'tglab-fabric');
  assert.equal(p.hosts[0].hostNs, 'tglab-h1');
  assert.equal(p.hosts[0].nicNs, 'tglab-h1-nic');
  assert.equal(p.hosts[1].fabric.nicV4, '198.18.0.12');
  assert.equal(p.hosts[1].pcie.subnetV4, '198.19.2.0/30');
  const w = p.workloads.find((x) => x.name === 'h2-t1-w2')!;
  assert.deepEqual(
    [w.ns, w.host, w.tenant, w.overlayV4, w.overlayV6],
    ['tglab-h2-t1-w2', 'h2', 't1', '100.64.1.22', 'fd64:6440:100::6440:116'],
  );
  const nodes = planNodes(p);
  assert.equal(nodes.size, planNamespaces(p).length);
  for (const [node, ns] of nodes) assert.equal(ns, `tglab-${node}`);
});

function checkPlan(p: LabPlan): void {
  const { prefix } = p;
  const namespaces = planNamespaces(p);
  assert.equal(new Set(namespaces).size, namespaces.length, 'namespaces unique');
  for (const ns of namespaces) assert.ok(belongsToLab(prefix, ns), `${ns} carries the prefix`);

  const ifs = planInterfaces(p);
  const ifnames = ifs.map((i) => i.name);
  assert.equal(new Set(ifnames).size, ifnames.length, 'interface names unique across the lab');
  for (const name of ifnames) {
    assert.ok(name.length <= IFNAME_MAX, `${name} fits IFNAMSIZ`);
    assert.ok(belongsToLab(prefix, name), `${name} carries the prefix`);
    assert.match(name, /^[a-z0-9-]+$/);
  }
  for (const i of ifs) assert.ok(namespaces.includes(i.ns));

  const v4 = ifs.flatMap((i) => i.addrs).filter((a) => !a.includes(':'));
  const v6 = ifs.flatMap((i) => i.addrs).filter((a) => a.includes(':'));
  assert.equal(new Set(v4.map((a) => a.split('/')[0])).size, v4.length, 'link IPv4 addresses unique');
  assert.equal(new Set(v6.map((a) => a.split('/')[0])).size, v6.length, 'link IPv6 addresses unique');
  for (const a of v4) assert.ok(in4(a.split('/')[0], '198.18.0.0/15'), `${a} in 198.18.0.0/15`);
  for (const a of v6) {
    assert.ok(isIPv6(a.split('/')[0]), `${a} is IPv6`);
    assert.match(a, /^fd/, `${a} is a ULA`);
  }

  for (const h of p.hosts) {
    for (const a of [h.pcie.hostV4, h.pcie.nicV4]) {
      assert.ok(in4(a, h.pcie.subnetV4), `${a} in ${h.pcie.subnetV4}`);
      const offset = ip4(a) - ip4(h.pcie.subnetV4.split('/')[0]);
      assert.ok(offset > 0 && offset < 3, `${a} is a host address of its /30`);
    }
    assert.ok(in4(h.fabric.nicV4, p.fabric.subnetV4));
    assert.ok(h.nicApiSocket.startsWith(`${p.runDir}/`));
  }
  const subnets = p.hosts.map((h) => h.pcie.subnetV4);
  assert.equal(new Set(subnets).size, subnets.length, 'PCIe subnets unique');
  for (const s of subnets)
    assert.ok(!in4(s.split('/')[0], p.fabric.subnetV4), 'PCIe subnets apart from the fabric');

  for (const t of p.tenants) assert.ok(in4(t.overlayV4.split('/')[0], '100.64.0.0/10'));
  const overlays = p.workloads.map((w) => w.overlayV4);
  assert.equal(new Set(overlays).size, overlays.length, 'overlay IPv4 addresses unique');
  assert.equal(new Set(p.workloads.map((w) => w.overlayV6)).size, p.workloads.length, 'overlay IPv6 unique');
  for (const w of p.workloads) {
    const t = p.tenants.find((x) => x.name === w.tenant)!;
    assert.ok(in4(w.overlayV4, t.overlayV4), `${w.overlayV4} in the pool of ${t.name}`);
    assert.ok(in4(w.overlayV4, '100.64.0.0/10'));
    const last = Number(w.overlayV4.split('.')[3]);
    assert.ok(last > 0 && last < 255, 'not a network or broadcast address');
    assert.ok(isIPv6(w.overlayV6) && w.overlayV6.startsWith(t.overlayV6.replace('::/64', '::')));
    assert.ok(p.hosts.some((h) => h.name === w.host));
  }
}

test('plans at the limits: unique, short names, addresses in their ranges', () => {
  const sizes = [
    { hosts: 1, tenants: 1, workloads: 1 },
    { hosts: 2, tenants: 2, workloads: 2 },
    { hosts: LAB_LIMITS.hosts, tenants: 2, workloads: LAB_LIMITS.workloads },
    { hosts: LAB_LIMITS.hosts, tenants: LAB_LIMITS.tenants, workloads: 2 },
    { hosts: 4, tenants: LAB_LIMITS.tenants, workloads: LAB_LIMITS.workloads },
  ];
  for (const prefix of ['tg', 'tglab', 'tgabcde']) {
    for (const size of sizes) checkPlan(planLab(prefix, size));
  }
});

test('ownership: a prefix owns its name and names after a dash, nothing else', () => {
  assert.ok(belongsToLab('tglab', 'tglab'));
  assert.ok(belongsToLab('tglab', 'tglab-h1-nic'));
  assert.ok(!belongsToLab('tglab', 'tglab2-h1'));
  assert.ok(!belongsToLab('tglab', 'tglabh1'));
  assert.ok(!belongsToLab('tg', 'tglab-h1'));
  assert.ok(!belongsToLab('tglab', 'xtglab-h1'));
  // No two valid prefixes own the same object name.
  const a = planLab('tg', { hosts: 2, tenants: 1, workloads: 1 });
  for (const n of [...planNamespaces(a), ...planInterfaces(a).map((i) => i.name)]) {
    assert.ok(!belongsToLab('tgh1', n) && !belongsToLab('tgf1', n), n);
  }
});

test('ranges: every planned address lies in LAB_RANGES; common host networks do not', () => {
  assert.ok(inRange('198.19.16.2', '198.18.0.0/15'));
  assert.ok(!inRange('198.20.0.1', '198.18.0.0/15'));
  assert.ok(inRange('100.127.255.254', '100.64.0.0/10'));
  assert.ok(!inRange('100.128.0.1', '100.64.0.0/10'));
  assert.ok(inRange('fd00:198:18::11', 'fd00:198:18::/48'));
  assert.ok(inRange('fd00:100:64:8::16:8', 'fd00:100:64::/48'));
  assert.ok(!inRange('fd00::2', 'fd00:198:18::/48'));
  assert.ok(!inRange('::1', 'fd00:100:64::/48'));
  assert.ok(!inRange('not-an-address', '198.18.0.0/15'));
  assert.ok(!inRange('198.18.0.1', 'fd00:198:18::/48'));
  for (const a of ['fd00::2', '192.0.2.2', '127.0.0.1', '10.0.0.1', 'fe80::1']) {
    assert.ok(!LAB_RANGES.some((r) => inRange(a, r)), a);
  }
  const p = planLab('tgabcde', { hosts: LAB_LIMITS.hosts, tenants: LAB_LIMITS.tenants, workloads: 2 });
  const all = [
    ...planInterfaces(p).flatMap((i) => i.addrs.map((a) => a.split('/')[0])),
    ...p.workloads.flatMap((w) => [w.overlayV4, w.overlayV6]),
    ...p.tenants.flatMap((t) => [t.overlayV4.split('/')[0], t.overlayV6.split('/')[0]]),
  ];
  for (const a of all)
    assert.ok(
      LAB_RANGES.some((r) => inRange(a, r)),
      `${a} in a lab range`,
    );
});

test('link MTU: 1,500 unless asked, 1,280 to 9,000 accepted, anything else refused', () => {
  const size = { hosts: 1, tenants: 1, workloads: 1 };
  assert.equal(planLab('tgm', size).mtu, 1500);
  assert.equal(planLab('tgm', size, 1280).mtu, 1280);
  assert.equal(planLab('tgm', size, 9000).mtu, 9000);
  for (const bad of [1279, 9001, 1500.5])
    assert.throws(
      () => planLab('tgm', size, bad),
      (e: unknown) => e instanceof TgError && /lab MTU/.test(e.message),
    );
});

test('the outside plan: an uplink, TUN and source-NAT address per NIC, short names, all in 198.18.0.0/15', () => {
  assert.equal(
    planLab('tglab', { hosts: 2, tenants: 1, workloads: 0 }).outside,
    undefined,
    'only when asked',
  );
  const p = planLab('tgabcde', { hosts: LAB_LIMITS.hosts, tenants: 1, workloads: 0 }, 1500, true);
  const o = p.outside!;
  assert.equal(o.ns, 'tgabcde-outside');
  assert.equal(planNodes(p).get('outside'), o.ns);
  assert.ok(planNamespaces(p).includes(o.ns));
  assert.equal(o.uplinks.length, LAB_LIMITS.hosts);
  const names = [o.bridge, ...o.uplinks.flatMap((u) => [u.nicIf, u.outsideIf, u.tun])];
  for (const n of names) assert.ok(n.length <= 15 && belongsToLab('tgabcde', n), n);
  assert.equal(new Set(names).size, names.length);
  const addrs = [o.bridgeV4, o.webA, o.webB, o.dns, ...o.uplinks.flatMap((u) => [u.nicV4, u.snatV4])];
  for (const a of addrs) assert.match(a, /^198\.1[89]\./);
  assert.equal(new Set(addrs).size, addrs.length);
  assert.deepEqual(
    o.zone.map((z) => [z.name, z.address]),
    [
      ['allowed.example', o.webA],
      ['other.example', o.webB],
    ],
  );
  // The uplink interfaces are part of what the build waits for; the TUN devices are not (no carrier).
  const ifs = planInterfaces(p).map((i) => i.name);
  for (const u of o.uplinks) assert.ok(ifs.includes(u.nicIf) && !ifs.includes(u.tun));
});
