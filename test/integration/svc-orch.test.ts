// Services and names through the orchestrator, with real traffic in lab namespaces (issue 15):
// a service spreads 100 TCP connections over three workloads on two hosts, answers on its IPv6
// address too (DNS AAAA, TCP, replies translated back) and keeps working through the migration
// of one; the tenant's DNS server at the NIC answers the tenant's own
// names (A, PTR of a workload and of a service address), gives NXDOMAIN for another tenant's
// workload and refuses names outside tg.; malformed queries are counted drops.
//
//   tenant acme: client (h1), web-1 (h1, app=web), web-2 (h2, app=web), web-3 (h2, app=web)
//   tenant blue: other (h2)
import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { after, before, test } from 'node:test';
import dnsPacket from 'dns-packet';
import type { ServiceRecord, WorkloadRecord } from '../../src/orchestrator/model.js';
import { ALLOW_WITHIN, type OrchLab, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { connectMany, resolvConfIn, resolveIn, startNameServer, stopServer, udpRaw } from '../helpers/svc.js';

const prefix = `tgs${[...randomBytes(4)].map((b) => 'abcdefghijklmnopqrstuvwxyz0123456789'[b % 36]).join('')}`;
let L: OrchLab | undefined;
const W = new Map<string, WorkloadRecord>();
const servers = new Map<string, ChildProcess>();
let svc: ServiceRecord | undefined;
const PORT = 80;

before(async () => {
  L = await startOrchLab(prefix);
  const c = L.client;
  await c.createTenant({ name: 'acme', pool: '100.64.50.0/24' });
  await c.createTenant({ name: 'blue', pool: '100.64.60.0/24' });
  await c.setPolicy('acme', ALLOW_WITHIN('acme'));
  await c.setPolicy('blue', ALLOW_WITHIN('blue'));
  for (const [name, tenant, host, labels] of [
    ['client', 'acme', 'h1', { app: 'client' }],
    ['web-1', 'acme', 'h1', { app: 'web' }],
    ['web-2', 'acme', 'h2', { app: 'web' }],
    ['web-3', 'acme', 'h2', { app: 'web' }],
    ['other', 'blue', 'h2', { app: 'other' }],
  ] as const)
    W.set(name, await c.createWorkload({ tenant, name, host, labels: { ...labels } }));
  for (const n of ['web-1', 'web-2', 'web-3'])
    servers.set(n, await startNameServer(W.get(n)!.netns, PORT, n));
  svc = await c.createService({ tenant: 'acme', name: 'web', selector: { app: 'web' }, ports: ['80/tcp'] });
});

after(async () => {
  for (const p of servers.values()) await stopServer(p).catch(() => undefined);
  await stopOrchLab(L, prefix);
  // The resolver configurations written for the workloads' namespaces go with the lab.
  const left = existsSync('/etc/netns') ? readdirSync('/etc/netns').filter((n) => n.startsWith(prefix)) : [];
  assert.deepEqual(left, [], 'resolver configurations left under /etc/netns');
});

test('a service gets an address from the pool and endpoints on every NIC holding the tenant', async () => {
  assert.ok(svc);
  assert.match(svc.address, /^100\.64\.50\.\d+$/);
  assert.deepEqual(svc.ports, [{ port: 80, protocol: 'tcp' }]);
  const shown = await L!.client.showService('acme', 'web');
  for (const h of ['h1', 'h2']) {
    const n = shown.nics[h] as { endpoints: { workload: string }[] };
    assert.deepEqual(
      n.endpoints.map((e) => e.workload),
      ['web-1', 'web-2', 'web-3'],
      `endpoints on ${h}`,
    );
  }
  const again = await L!.client
    .createService({ tenant: 'acme', name: 'web', selector: { app: 'web' }, ports: ['80/tcp'] })
    .then(
      () => null,
      (e: Error & { code?: string }) => e.code,
    );
  assert.equal(again, 'TG_ERR_CONFLICT');
});

test('a service spreads 100 TCP connections over three workloads across hosts', {
  timeout: 120_000,
}, async (t) => {
  const r = await connectMany(W.get('client')!.netns, svc!.address, PORT, 100, { timeoutMs: 3000 });
  t.diagnostic(`100 connections to ${svc!.address}:${PORT}: ${JSON.stringify(r.counts)}, failed ${r.failed}`);
  assert.equal(r.failed, 0, `failed connections: ${r.errors.join('; ')}`);
  assert.deepEqual(Object.keys(r.counts).sort(), ['web-1', 'web-2', 'web-3']);
  for (const [n, c] of Object.entries(r.counts)) assert.ok(c >= 10, `${n} got only ${c} of 100`);
  const net = await L!.agents.nic('h1').getTenantNetwork('acme');
  const counters = net.counters.services as { translated: number; reversed: number };
  assert.ok(counters.translated > 0 && counters.reversed > 0, JSON.stringify(counters));
  // The flow log names the endpoints (the firewall sees translated connections).
  const flows = (await L!.client.flows({ tenant: 'acme', limit: 5000 })).flows;
  for (const n of ['web-1', 'web-2', 'web-3'])
    assert.ok(
      flows.some((f) => f.srcWorkload === 'client' && f.dstWorkload === n && f.dstPort === PORT),
      `no flow record client -> ${n}:${PORT}`,
    );
});

test("the service's IPv6 address: DNS AAAA and PTR, TCP to an endpoint, replies from the service address", {
  timeout: 120_000,
}, async (t) => {
  assert.ok(svc?.address6, 'the service record has an IPv6 address');
  assert.match(svc.address6, /^fd64:6440:/);
  const client = W.get('client')!;
  const res = await resolveIn(client.netns, client.dns!, [
    { type: 'AAAA', name: 'web.acme.tg' },
    { type: 'A', name: 'web.acme.tg' },
    { type: 'PTR', name: svc.address6 },
  ]);
  assert.deepEqual(res[0].answers, [svc.address6]);
  assert.deepEqual(res[1].answers, [svc.address]);
  assert.deepEqual(res[2].answers, ['web.acme.tg']);
  const before = (await L!.agents.nic('h1').getTenantNetwork('acme')).counters.services as {
    reversed: number;
  };
  // A TCP connection completes only when the endpoint's replies come from the service address.
  const r = await connectMany(client.netns, svc.address6, PORT, 30, { timeoutMs: 3000 });
  t.diagnostic(
    `30 connections to [${svc.address6}]:${PORT}: ${JSON.stringify(r.counts)}, failed ${r.failed}`,
  );
  assert.equal(r.failed, 0, `failed connections: ${r.errors.join('; ')}`);
  assert.deepEqual(Object.keys(r.counts).sort(), ['web-1', 'web-2', 'web-3']);
  const net = await L!.agents.nic('h1').getTenantNetwork('acme');
  assert.equal(net.services[0].address6, svc.address6);
  const after = net.counters.services as { reversed: number };
  assert.ok(
    after.reversed - before.reversed >= 30,
    `replies translated back: ${after.reversed - before.reversed}`,
  );
  // The flow log names the endpoints at their IPv6 addresses.
  const flows = (await L!.client.flows({ tenant: 'acme', limit: 5000 })).flows;
  assert.ok(
    flows.some(
      (f) =>
        f.srcWorkload === 'client' && String(f.dstWorkload).startsWith('web-') && String(f.dst).includes(':'),
    ),
    'no IPv6 flow record client -> web-*',
  );
});

test('the service keeps working through the migration of one endpoint', { timeout: 240_000 }, async (t) => {
  const c = W.get('client')!.netns;
  // Connections during the migration (one every 50 ms): the other endpoints keep answering.
  const during = connectMany(c, svc!.address, PORT, 120, { timeoutMs: 1500, gapMs: 50 });
  const moved = await L!.client.migrateWorkload('web-2', 'h1');
  W.set('web-2', moved);
  await stopServer(servers.get('web-2'));
  servers.set('web-2', await startNameServer(moved.netns, PORT, 'web-2'));
  const d = await during;
  t.diagnostic(`during the migration: ${JSON.stringify(d.counts)}, failed ${d.failed}`);
  const answered = Object.values(d.counts).reduce((a, b) => a + b, 0);
  assert.ok(answered >= 60, `only ${answered} of 120 connections answered during the migration`);
  assert.ok((d.counts['web-1'] ?? 0) > 0 && (d.counts['web-3'] ?? 0) > 0, JSON.stringify(d.counts));
  // Afterwards: every connection answered, over all three again (web-2 now on h1).
  const r = await connectMany(c, svc!.address, PORT, 100, { timeoutMs: 3000 });
  t.diagnostic(`after the migration: ${JSON.stringify(r.counts)}, failed ${r.failed}`);
  assert.equal(r.failed, 0, r.errors.join('; '));
  assert.deepEqual(Object.keys(r.counts).sort(), ['web-1', 'web-2', 'web-3']);
  const net = await L!.agents.nic('h1').getTenantNetwork('acme');
  assert.deepEqual(
    net.services[0].endpoints.map((e) => e.workload),
    ['web-1', 'web-2', 'web-3'],
  );
});

test("the tenant's DNS server answers its own names, NXDOMAIN for others', PTR", {
  timeout: 60_000,
}, async () => {
  const client = W.get('client')!;
  assert.ok(client.dns, 'the workload record names its DNS server');
  const conf = await resolvConfIn(client.netns);
  assert.match(conf, new RegExp(`nameserver ${client.dns!.replace(/\./g, '\\.')}`));
  assert.match(conf, /search acme\.tg/);
  const ptr = (a: string): string => `${a}`;
  const res = await resolveIn(client.netns, client.dns!, [
    { type: 'A', name: 'web-1.acme.tg' },
    { type: 'A', name: 'web.acme.tg' },
    { type: 'A', name: 'other.blue.tg' },
    { type: 'A', name: 'web-1.blue.tg' },
    { type: 'A', name: 'nobody.acme.tg' },
    { type: 'A', name: 'example.com' },
    { type: 'PTR', name: ptr(W.get('web-3')!.address) },
    { type: 'PTR', name: ptr(svc!.address) },
    { type: 'PTR', name: ptr(W.get('other')!.address) },
  ]);
  const by = (type: string, name: string) => res.find((r) => r.type === type && r.name === name)!;
  assert.deepEqual(by('A', 'web-1.acme.tg').answers, [W.get('web-1')!.address]);
  assert.deepEqual(by('A', 'web.acme.tg').answers, [svc!.address]);
  assert.equal(by('A', 'other.blue.tg').error, 'ENOTFOUND', "another tenant's workload must be NXDOMAIN");
  assert.equal(by('A', 'web-1.blue.tg').error, 'ENOTFOUND');
  assert.equal(by('A', 'nobody.acme.tg').error, 'ENOTFOUND');
  assert.equal(by('A', 'example.com').error, 'EREFUSED');
  assert.deepEqual(by('PTR', W.get('web-3')!.address).answers, ['web-3.acme.tg']);
  assert.deepEqual(by('PTR', svc!.address).answers, ['web.acme.tg']);
  assert.equal(by('PTR', W.get('other')!.address).error, 'ENOTFOUND');

  // blue's own server knows blue's names only.
  const other = W.get('other')!;
  const b = await resolveIn(other.netns, other.dns!, [
    { type: 'A', name: 'other.blue.tg' },
    { type: 'A', name: 'web-1.acme.tg' },
  ]);
  assert.deepEqual(b[0].answers, [other.address]);
  assert.equal(b[1].error, 'ENOTFOUND');
});

test('malformed DNS queries are counted drops', { timeout: 60_000 }, async () => {
  const client = W.get('client')!;
  const before = (await L!.agents.nic('h1').getTenantNetwork('acme')).counters.dns as Record<string, number>;
  assert.equal(await udpRaw(client.netns, client.dns!, 53, 'deadbeef'), null);
  const response = dnsPacket.encode({
    type: 'response',
    id: 7,
    questions: [{ type: 'A', name: 'x.acme.tg' }],
  });
  assert.equal(await udpRaw(client.netns, client.dns!, 53, response.toString('hex')), null);
  const q = dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'web-1.acme.tg' }] });
  const reply = await udpRaw(client.netns, client.dns!, 53, q.toString('hex'));
  assert.ok(reply !== null, 'a well-formed query got no answer');
  const decoded = dnsPacket.decode(Buffer.from(reply, 'hex'));
  assert.equal(decoded.id, 9);
  assert.equal((decoded.answers![0] as { data: string }).data, W.get('web-1')!.address);
  const after = (await L!.agents.nic('h1').getTenantNetwork('acme')).counters.dns as Record<string, number>;
  assert.equal(after.malformed - before.malformed, 2);
});

test('policy can name a service: the rule peer becomes its endpoints', { timeout: 60_000 }, async () => {
  const rec = await L!.client.setPolicy('acme', {
    version: 1,
    tenant: 'acme',
    rules: [
      {
        id: 'client-to-web',
        direction: 'egress',
        workloads: { labels: { app: 'client' } },
        peers: [{ service: 'web' }],
        protocol: 'tcp',
        ports: [PORT],
      },
      { id: 'web-in', direction: 'ingress', workloads: { labels: { app: 'web' } }, peers: [{ labels: {} }] },
    ],
  });
  const doc = rec.document as { rules: { peers: unknown[] }[] };
  assert.deepEqual(doc.rules[0].peers, [{ labels: { app: 'web' } }]);
  const r = await connectMany(W.get('client')!.netns, svc!.address, PORT, 20, { timeoutMs: 3000 });
  assert.equal(r.failed, 0, r.errors.join('; '));
  const refused = await L!.client
    .setPolicy('acme', {
      ...ALLOW_WITHIN('acme'),
      rules: [{ ...ALLOW_WITHIN('acme').rules[0], peers: [{ service: 'nope' }] }],
    })
    .then(
      () => null,
      (e: Error & { code?: string }) => e.code,
    );
  assert.equal(refused, 'TG_ERR_POLICY_REJECTED');
});
