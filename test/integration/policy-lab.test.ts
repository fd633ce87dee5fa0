// Zero-trust policy in a real lab (issue 7), driven by the orchestrator in this process
// (src/lab/control.ts; policy-orch.test.ts runs it as its own process): 2 hosts,
// 2 tenants, one workload per tenant per host, labels on every workload, grants routed,
// no default policy (the NICs' default deny).
//
//   h1-t1-w1 app=web    h2-t1-w1 app=db      (tenant t1)
//   h1-t2-w1 app=svc    h2-t2-w1 app=cli     (tenant t2)
//
// Allowed flows pass, denied ones fail, replies (TCP echo, ping) work without reverse rules,
// a cross-tenant grant works one way only (same host and across hosts), and the flow log of
// each NIC shows each decision with the rule that made it.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { type PlacedWorkload, plannedWorkloads } from '../../src/lab/control.js';
import type { FlowRecord } from '../../src/policy/flowlog.js';
import { type NicLab, nicPrefix, startNicLab, stopNicLab, tcpProbe } from '../helpers/nic.js';
import { ping, pingUntilReply } from '../helpers/ping.js';

const prefix = nicPrefix();
let L: NicLab;
let specs: PlacedWorkload[];

const LABELS: Record<string, Record<string, string>> = {
  'h1-t1-w1': { app: 'web' },
  'h2-t1-w1': { app: 'db' },
  'h1-t2-w1': { app: 'svc' },
  'h2-t2-w1': { app: 'cli' },
};

const T1 = {
  version: 1,
  tenant: 't1',
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
      id: 'web-to-t2',
      direction: 'egress',
      workloads: { labels: { app: 'web' } },
      peers: [{ tenant: 't2', labels: {} }],
      protocol: 'tcp',
      ports: [7100],
    },
  ],
  tests: [
    {
      src: { workload: 'h1-t1-w1' },
      dst: { workload: 'h2-t1-w1' },
      protocol: 'tcp',
      port: 7000,
      expect: 'allow',
    },
    {
      src: { workload: 'h2-t1-w1' },
      dst: { workload: 'h1-t1-w1' },
      protocol: 'tcp',
      port: 7000,
      expect: 'deny',
    },
  ],
};

const T2 = {
  version: 1,
  tenant: 't2',
  rules: [
    {
      id: 'from-t1-web',
      direction: 'ingress',
      workloads: { labels: {} },
      peers: [{ tenant: 't1', labels: { app: 'web' } }],
      protocol: 'tcp',
      ports: [7100],
    },
  ],
};

function W(name: string): PlacedWorkload {
  const w = specs.find((s) => s.name === name);
  assert.ok(w, `no workload ${name}`);
  return w;
}

async function tcp(from: string, to: string, port: number, timeoutMs: number): Promise<string | null> {
  const payload = Buffer.from(`${from}>${to}:${port}`).toString('hex');
  const r = await tcpProbe(W(from).ns, W(to).ns, W(to).address, payload, { port, timeoutMs });
  return r.echoed === payload ? r.echoed : null;
}

async function flows(host: string, tenant: string): Promise<FlowRecord[]> {
  return L.agents.nic(host).flows({ tenant, limit: 1000 });
}

before(async () => {
  L = await startNicLab(prefix, { hosts: 2, tenants: 2, workloads: 1 }, { defaultPolicy: 'none' });
  specs = await L.control.place(plannedWorkloads(L.lab).map((s) => ({ ...s, labels: LABELS[s.name] })));
});

after(async () => {
  await stopNicLab(L, prefix);
});

test('without a policy nothing passes (default deny), and the flow log says so', {
  timeout: 60_000,
}, async () => {
  const p = await ping(W('h1-t1-w1').ns, W('h2-t1-w1').address, { count: 3 });
  assert.equal(p.received, 0, 'a tenant without a policy passed traffic');
  const denied = (await flows('h1', 't1')).filter((f) => f.verdict === 'deny' && f.protocol === 'icmp');
  assert.ok(denied.length > 0, 'no deny record');
  assert.equal(denied[0].rule, 't1/default-deny');
});

test('allowed flows pass with their replies; denied ones fail', { timeout: 120_000 }, async () => {
  await L.control.setPolicy('t1', T1);
  await L.control.setPolicy('t2', T2);
  assert.ok(await pingUntilReply(W('h1-t1-w1').ns, W('h2-t1-w1').address, 15_000), 'web cannot ping db');
  assert.notEqual(await tcp('h1-t1-w1', 'h2-t1-w1', 7000, 5000), null, 'web -> db:7000 (allowed) failed');
  assert.equal(await tcp('h1-t1-w1', 'h2-t1-w1', 7001, 2000), null, 'web -> db:7001 passed');
  assert.equal(await tcp('h2-t1-w1', 'h1-t1-w1', 7000, 2000), null, 'db -> web:7000 passed');
  const back = await ping(W('h2-t1-w1').ns, W('h1-t1-w1').address, { count: 2, waitS: 1 });
  assert.equal(back.received, 0, 'db pinged web without a rule');
});

test('a cross-tenant grant works one way only, same host and across hosts', {
  timeout: 120_000,
}, async () => {
  assert.notEqual(await tcp('h1-t1-w1', 'h1-t2-w1', 7100, 5000), null, 't1 web -> t2 svc (same host) failed');
  assert.notEqual(
    await tcp('h1-t1-w1', 'h2-t2-w1', 7100, 5000),
    null,
    't1 web -> t2 cli (cross host) failed',
  );
  assert.equal(await tcp('h1-t2-w1', 'h1-t1-w1', 7100, 2000), null, 't2 svc -> t1 web passed');
  assert.equal(await tcp('h2-t2-w1', 'h1-t1-w1', 7100, 2000), null, 't2 cli -> t1 web passed');
  assert.equal(await tcp('h2-t2-w1', 'h2-t1-w1', 7100, 2000), null, 't2 cli -> t1 db passed');
});

test('the flow log shows each decision with its rule', { timeout: 60_000 }, async () => {
  const h1 = await flows('h1', 't1');
  const h2 = await flows('h2', 't1');
  const find = (list: FlowRecord[], pred: (f: FlowRecord) => boolean, what: string): FlowRecord => {
    const f = list.find(pred);
    assert.ok(f, `no flow record: ${what}`);
    return f;
  };
  const web = 'h1-t1-w1';
  const db = 'h2-t1-w1';
  // Sending NIC: egress side; receiving NIC: ingress side.
  const out = find(
    h1,
    (f) => f.srcWorkload === web && f.dstPort === 7000 && f.verdict === 'allow',
    'web->db:7000 on h1',
  );
  assert.equal(out.egressRule, 't1/web-to-db');
  assert.equal(out.observed, 'egress');
  assert.ok(out.packetsToSrc > 0, 'the reply was not counted');
  const inn = find(
    h2,
    (f) => f.srcWorkload === web && f.dstPort === 7000 && f.verdict === 'allow',
    'web->db:7000 on h2',
  );
  assert.equal(inn.ingressRule, 't1/db-from-web');
  assert.equal(inn.observed, 'ingress');
  const wrongPort = find(h1, (f) => f.srcWorkload === web && f.dstPort === 7001, 'web->db:7001');
  assert.equal(wrongPort.verdict, 'deny');
  assert.equal(wrongPort.rule, 't1/default-deny');
  const reverse = find(h2, (f) => f.srcWorkload === db && f.dstPort === 7000, 'db->web:7000');
  assert.equal(reverse.verdict, 'deny');
  assert.equal(reverse.rule, 't1/default-deny');
  const grant = find(
    await flows('h2', 't2'),
    (f) => f.srcWorkload === web && f.dstWorkload === 'h2-t2-w1' && f.verdict === 'allow',
    'web->cli:7100 on h2',
  );
  assert.equal(grant.ingressRule, 't2/from-t1-web');
  const refused = find(
    await flows('h1', 't2'),
    (f) => f.srcWorkload === 'h1-t2-w1' && f.dstWorkload === web,
    'svc->web:7100 on h1',
  );
  assert.equal(refused.verdict, 'deny');
  assert.equal(refused.rule, 't2/default-deny');
});

test('a bad document is refused with its reason on a real NIC; the old one stays', {
  timeout: 30_000,
}, async () => {
  const nic = L.agents.nic('h1');
  const bad = { ...T1, rules: [{ ...T1.rules[0], ports: [0] }], tests: [] };
  await assert.rejects(nic.setPolicy('t1', bad), (err: Error & { code?: string }) => {
    assert.equal(err.code, 'TG_ERR_POLICY_REJECTED');
    assert.match(err.message, /rules\[0\]\.ports/);
    return true;
  });
  assert.deepEqual(
    (await nic.getPolicy('t1')).rules.map((r) => r.id),
    T1.rules.map((r) => r.id),
  );
  assert.notEqual(
    await tcp('h1-t1-w1', 'h2-t1-w1', 7000, 5000),
    null,
    'the old policy is no longer in force',
  );
});
