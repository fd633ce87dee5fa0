// Zero-trust policy through the orchestrator (issue 7's "Done when", driven only through the
// orchestrator's API; the NIC API is read for assertions only): allowed flows pass, denied ones
// fail, replies work without reverse rules, a cross-tenant grant works one way only, a
// migrated workload keeps exactly its policy, and the flow log (merged by the orchestrator)
// shows each decision with its rule.
//
//   tenant acme: web (h1, app=web), other (h1, app=other), db (h2, app=db; migrated to h1)
//   tenant blue: svc (h2, app=svc)
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import type { WorkloadRecord } from '../../src/orchestrator/model.js';
import { tcpProbe } from '../helpers/nic.js';
import { type OrchLab, orchPrefix, startOrchLab, stopOrchLab } from '../helpers/orch.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const prefix = orchPrefix();
let L: OrchLab | undefined;
const W = new Map<string, WorkloadRecord>();

const ACME = {
  version: 1,
  tenant: 'acme',
  rules: [
    {
      id: 'web-to-db',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ labels: { app: 'db' } }],
      protocol: 'tcp',
      ports: [7000],
    },
    {
      id: 'db-from-web',
      direction: 'ingress',
      workloads: { labels: { app: 'db' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: [7000],
    },
    {
      id: 'web-ping-db',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ labels: { app: 'db' } }],
      protocol: 'icmp',
    },
    {
      id: 'db-pinged-by-web',
      direction: 'ingress',
      workloads: { labels: { app: 'db' } },
      peers: [{ labels: { app: 'web' } }],
      protocol: 'icmp',
    },
    {
      id: 'web-to-blue',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ tenant: 'blue', labels: { app: 'svc' } }],
      protocol: 'tcp',
      ports: [7100],
    },
  ],
};

const BLUE = {
  version: 1,
  tenant: 'blue',
  rules: [
    {
      id: 'svc-in',
      direction: 'ingress',
      workloads: { labels: {} },
      peers: [{ labels: {} }],
    },
    {
      id: 'svc-from-acme-web',
      direction: 'ingress',
      workloads: { labels: { app: 'svc' } },
      peers: [{ tenant: 'acme', labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: [7100],
    },
  ],
};

async function tcp(from: string, to: string, port: number, timeoutMs: number): Promise<boolean> {
  const a = W.get(from)!;
  const b = W.get(to)!;
  const payload = Buffer.from(`${from}>${to}:${port}`).toString('hex');
  const r = await tcpProbe(a.netns, b.netns, b.address, payload, { port, timeoutMs });
  return r.echoed === payload;
}

interface Flow {
  host?: string;
  srcWorkload: string | null;
  dstWorkload: string | null;
  dstPort: number | null;
  verdict: string;
  rule: string;
  egressRule: string | null;
  ingressRule: string | null;
  observed: string;
  endMs: number;
}

async function flows(): Promise<Flow[]> {
  return (await L!.client.flows({ tenant: 'acme', limit: 5000 })).flows as unknown as Flow[];
}

/** The policy checks that must hold wherever db runs. */
async function checkPolicy(where: string): Promise<void> {
  assert.ok(
    await pingUntilReply(W.get('web')!.netns, W.get('db')!.address, 15_000),
    `${where}: web cannot ping db`,
  );
  assert.ok(await tcp('web', 'db', 7000, 5000), `${where}: web -> db:7000 (allowed) failed`);
  assert.equal(await tcp('web', 'db', 7001, 2000), false, `${where}: web -> db:7001 passed`);
  assert.equal(await tcp('db', 'web', 7000, 2000), false, `${where}: db -> web:7000 passed`);
  assert.equal(await tcp('other', 'db', 7000, 2000), false, `${where}: other -> db:7000 passed`);
  const back = await ping(W.get('db')!.netns, W.get('web')!.address, { count: 2, waitS: 1 });
  assert.equal(back.received, 0, `${where}: db pinged web without a rule`);
}

before(async () => {
  L = await startOrchLab(prefix);
  const c = L.client;
  await c.createTenant({ name: 'acme', pool: '100.64.30.0/24' });
  await c.createTenant({ name: 'blue', pool: '100.64.40.0/24' });
  await c.setPolicy('acme', ACME);
  await c.setPolicy('blue', BLUE);
  for (const [name, tenant, host, app] of [
    ['web', 'acme', 'h1', 'web'],
    ['other', 'acme', 'h1', 'other'],
    ['db', 'acme', 'h2', 'db'],
    ['svc', 'blue', 'h2', 'svc'],
  ])
    W.set(name, await c.createWorkload({ tenant, name, host, labels: { app } }));
});

after(async () => {
  await stopOrchLab(L, prefix);
});

test('through the orchestrator: allowed flows pass with replies, denied ones fail', {
  timeout: 180_000,
}, async () => {
  for (const h of ['h1', 'h2'])
    assert.deepEqual(await L!.agents.nic(h).getPolicy('acme'), await L!.agents.nic('h1').getPolicy('acme'));
  await checkPolicy('db on h2');
});

test('through the orchestrator: a cross-tenant grant works one way only', { timeout: 120_000 }, async () => {
  assert.ok(await tcp('web', 'svc', 7100, 5000), 'acme web -> blue svc:7100 (granted both sides) failed');
  assert.equal(await tcp('svc', 'web', 7100, 2000), false, 'blue svc opened a connection to acme web');
  assert.equal(await tcp('other', 'svc', 7100, 2000), false, 'acme other (no egress grant) reached blue');
  assert.equal(await tcp('web', 'svc', 7101, 2000), false, 'a port outside the grant passed');
  const f = (await L!.client.flows({ tenant: 'blue', limit: 5000 })).flows as unknown as Flow[];
  const granted = f.find(
    (r) => r.host === 'h2' && r.srcWorkload === 'web' && r.dstWorkload === 'svc' && r.verdict === 'allow',
  );
  assert.ok(granted, 'no record of the granted flow on the receiving NIC');
  assert.equal(granted.ingressRule, 'blue/svc-from-acme-web');
});

test('the merged flow log shows each decision with its rule', { timeout: 60_000 }, async () => {
  const all = await flows();
  const find = (pred: (f: Flow) => boolean, what: string): Flow => {
    const f = all.find(pred);
    assert.ok(f, `no flow record: ${what}`);
    return f;
  };
  const out = find(
    (f) => f.host === 'h1' && f.srcWorkload === 'web' && f.dstPort === 7000 && f.verdict === 'allow',
    'web->db:7000 on h1',
  );
  assert.equal(out.egressRule, 'acme/web-to-db');
  const inn = find(
    (f) => f.host === 'h2' && f.srcWorkload === 'web' && f.dstPort === 7000 && f.verdict === 'allow',
    'web->db:7000 on h2',
  );
  assert.equal(inn.ingressRule, 'acme/db-from-web');
  assert.equal(
    find((f) => f.srcWorkload === 'web' && f.dstPort === 7001, 'web->db:7001').rule,
    'acme/default-deny',
  );
  const other = find((f) => f.srcWorkload === 'other' && f.dstWorkload === 'db', 'other->db');
  assert.equal(other.verdict, 'deny');
  assert.equal(other.rule, 'acme/default-deny');
});

test('a migrated workload keeps exactly its policy', { timeout: 240_000 }, async () => {
  const before = await L!.agents.nic('h2').getPolicy('acme');
  const moved = await L!.client.migrateWorkload('db', 'h1');
  assert.equal(moved.host, 'h1');
  assert.deepEqual(moved.labels, { app: 'db' });
  W.set('db', moved);
  // The NIC it landed on enforces the same document, with db under the same labels.
  assert.deepEqual(await L!.agents.nic('h1').getPolicy('acme'), before);
  const onH1 = (await L!.agents.nic('h1').workloads()).find((w) => w.workload === 'db');
  assert.deepEqual(onH1?.labels, { app: 'db' });
  const since = Date.now();
  await checkPolicy('db migrated to h1');
  // Now a hairpin on h1: both sides decided there, by the same rules as before.
  const after = (await flows()).filter((f) => f.host === 'h1' && f.endMs >= since);
  const allowed = after.find(
    (f) =>
      f.srcWorkload === 'web' &&
      f.dstWorkload === 'db' &&
      f.dstPort === 7000 &&
      f.verdict === 'allow' &&
      f.observed === 'both',
  );
  assert.ok(allowed, 'no record of web->db:7000 after the migration');
  assert.equal(allowed.egressRule, 'acme/web-to-db');
  assert.equal(allowed.ingressRule, 'acme/db-from-web');
});
